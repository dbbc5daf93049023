//! Whether a bundle is in the order TLS peers must send it: leaf first, each
//! certificate issued by the next. Judged on names and key identifiers only;
//! signatures are the handshake's business.

use serde::Serialize;

use crate::x509::CertFacts;

#[derive(Debug, Clone, Serialize)]
pub struct ChainReport {
    /// Each certificate is issued by the one after it, as TLS peers must send it.
    pub leaf_to_root: bool,
    pub detail: String,
}

pub(super) fn chain_report(certs: &[CertFacts]) -> ChainReport {
    let forward: Vec<&CertFacts> = certs.iter().collect();
    match first_order_break(&forward) {
        None => ChainReport {
            leaf_to_root: true,
            detail: "each certificate is issued by the next one".to_string(),
        },
        Some(why) => {
            let reversed: Vec<&CertFacts> = certs.iter().rev().collect();
            let advice = if first_order_break(&reversed).is_none() {
                "; the file is in root-to-leaf order, reverse it so the leaf comes first"
            } else {
                ""
            };
            ChainReport {
                leaf_to_root: false,
                detail: format!("{why}{advice}"),
            }
        }
    }
}

/// First place where `certs[i]` is not issued by `certs[i + 1]`, described 1-based.
fn first_order_break(certs: &[&CertFacts]) -> Option<String> {
    certs.windows(2).enumerate().find_map(|(i, pair)| {
        let (child, parent) = (&pair[0].link, &pair[1].link);
        let (c, p) = (i + 1, i + 2);
        if child.issuer_der != parent.subject_der {
            return Some(format!(
                "certificate {c}'s issuer is not certificate {p}'s subject"
            ));
        }
        // Same DN but a different key is what a half-finished CA rotation looks like.
        match (&child.authority_key_id, &parent.subject_key_id) {
            (Some(aki), Some(ski)) if aki != ski => Some(format!(
                "certificate {c}'s authority key identifier does not match \
                 certificate {p}'s subject key identifier (same issuer name, different key)"
            )),
            _ => None,
        }
    })
}
