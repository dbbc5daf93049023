//! Certificate inspection for `certshift pki inspect FILE...`.
//!
//! This module owns turning a certificate file (a PEM chain or a single DER
//! certificate) into a [`FileReport`]: the facts an operator needs when an mTLS
//! handshake fails (names, SANs and SPIFFE ID, validity relative to "now", key and
//! usage constraints, fingerprint, and whether a bundle is ordered leaf-to-root).
//! The report types double as the stable `--json` output. The facts themselves
//! come from [`crate::x509`]; this module only adds what is about a file and a
//! moment: reading the file ([`read`]), judging validity against "now", the
//! chain order ([`chain`]) and the terminal rendering ([`render`]).
//! It does not verify signatures or trust; that belongs to the handshake code.

mod chain;
mod read;
mod render;

use std::path::Path;

use serde::Serialize;
use time::OffsetDateTime;

use crate::x509::{rfc3339, CertFacts, KeyInfo, Sans};

pub use chain::ChainReport;
pub use render::render_text;

/// Why a file could not be inspected. Every message names the file, because the
/// command takes several files and the operator must know which one is wrong.
#[derive(Debug, thiserror::Error)]
pub enum InspectError {
    #[error("{}: cannot read file: {source}", path.display())]
    Read {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
    #[error("{name}: {detail}")]
    NotACertificate { name: String, detail: String },
    #[error("{name}: certificate {index} cannot be parsed: {problem}")]
    Parse {
        name: String,
        /// 1-based position of the certificate within the file.
        index: usize,
        /// Shown in the message rather than chained as a source, so that
        /// printing the error chain does not say it twice.
        problem: crate::x509::FactsError,
    },
}

/// Everything learned from one file.
#[derive(Debug, Clone, Serialize)]
pub struct FileReport {
    pub file: String,
    /// In file order.
    pub certificates: Vec<CertReport>,
    /// Present only when the file holds more than one certificate.
    pub chain: Option<ChainReport>,
    /// What the certificate changes, when the file is a mutated certificate
    /// of a certshift PKI (`mutations/<name>/`, read from its manifest).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mutation: Option<MutationNote>,
}

/// A mutation's manifest entry, as `pki inspect` shows it.
#[derive(Debug, Clone, Serialize)]
pub struct MutationNote {
    pub name: String,
    /// What a conforming validator does with it.
    pub expect: crate::pki::Expect,
    pub changes: String,
    pub rule: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct CertReport {
    pub subject: String,
    pub issuer: String,
    /// Uppercase hex of the serial's unsigned value, as `openssl x509 -serial`
    /// prints it and `manifest.toml` records it.
    pub serial: String,
    /// RFC 3339, UTC.
    pub not_before: String,
    pub not_after: String,
    pub validity: Validity,
    pub sans: Sans,
    pub spiffe_id: Option<String>,
    pub is_ca: bool,
    /// basicConstraints pathLenConstraint; `None` means unconstrained or not a CA.
    pub path_len: Option<u32>,
    /// RFC 5280 names, e.g. "digitalSignature"; empty when the extension is absent.
    pub key_usage: Vec<String>,
    /// "serverAuth", "clientAuth", ... or the dotted OID for unnamed purposes.
    pub extended_key_usage: Vec<String>,
    pub key: KeyInfo,
    /// OpenSSL-style short name, e.g. "ecdsa-with-SHA256", or the dotted OID.
    pub signature_algorithm: String,
    /// Same format as `openssl x509 -fingerprint -sha256`.
    pub sha256_fingerprint: String,
    pub self_signed: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ValidityState {
    Valid,
    Expired,
    NotYetValid,
}

#[derive(Debug, Clone, Serialize)]
pub struct Validity {
    pub state: ValidityState,
    /// e.g. "valid for 29 days", "expired 3 days ago".
    pub hint: String,
}

/// Reads and inspects one file, judging validity against the current time.
pub fn inspect_file(path: &Path) -> Result<FileReport, InspectError> {
    let bytes = std::fs::read(path).map_err(|source| InspectError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    let note = mutation_note(path);
    let name = path.display().to_string();
    match inspect_bytes(&name, &bytes, OffsetDateTime::now_utc()) {
        Ok(report) => Ok(FileReport {
            mutation: note,
            ..report
        }),
        // Some mutations are certificates no parser reads (trailing bytes,
        // a duplicate extension): say which, so the error is expected.
        Err(InspectError::Parse { index, problem, .. }) if note.is_some() => {
            Err(InspectError::Parse {
                name: format!("{name} ({})", describe(note.as_ref())),
                index,
                problem,
            })
        }
        Err(e) => Err(e),
    }
}

/// The manifest's note on `path` when it is `PKI/mutations/<name>/<file>`.
fn mutation_note(path: &Path) -> Option<MutationNote> {
    let dir = path.parent()?;
    let name = dir.file_name()?.to_str()?;
    let mutations = dir.parent()?;
    if mutations.file_name()? != crate::pki::layout::MUTATIONS_DIR {
        return None;
    }
    let manifest = crate::pki::Manifest::load(mutations.parent()?).ok()?;
    let m = manifest.mutation(name)?;
    Some(MutationNote {
        name: m.name.clone(),
        expect: m.expect,
        changes: m.changes.clone(),
        rule: m.rule.clone(),
    })
}

fn describe(note: Option<&MutationNote>) -> String {
    note.map(|m| format!("mutation {}: {}", m.name, m.changes))
        .unwrap_or_default()
}

/// Inspects file contents; `name` is only used in the report and error messages.
pub fn inspect_bytes(
    name: &str,
    bytes: &[u8],
    now: OffsetDateTime,
) -> Result<FileReport, InspectError> {
    let ders =
        read::extract_certificates(bytes).map_err(|detail| InspectError::NotACertificate {
            name: name.to_string(),
            detail,
        })?;
    let facts = ders
        .iter()
        .enumerate()
        .map(|(i, der)| {
            CertFacts::from_der(der).map_err(|problem| InspectError::Parse {
                name: name.to_string(),
                index: i + 1,
                problem,
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    let chain = (facts.len() > 1).then(|| chain::chain_report(&facts));
    Ok(FileReport {
        file: name.to_string(),
        certificates: facts.into_iter().map(|f| cert_report(f, now)).collect(),
        chain,
        mutation: None,
    })
}

fn cert_report(f: CertFacts, now: OffsetDateTime) -> CertReport {
    CertReport {
        validity: validity(f.not_before, f.not_after, now),
        subject: f.subject,
        issuer: f.issuer,
        serial: f.serial,
        not_before: rfc3339(f.not_before),
        not_after: rfc3339(f.not_after),
        sans: f.sans,
        spiffe_id: f.spiffe_id.map(|id| id.to_string()),
        is_ca: f.is_ca,
        path_len: f.path_len,
        key_usage: f.key_usage,
        extended_key_usage: f.extended_key_usage,
        key: f.key,
        signature_algorithm: f.signature_algorithm,
        sha256_fingerprint: f.sha256,
        self_signed: f.self_signed,
    }
}

/// RFC 5280 validity is inclusive at both ends.
fn validity(
    not_before: OffsetDateTime,
    not_after: OffsetDateTime,
    now: OffsetDateTime,
) -> Validity {
    let (state, hint) = if now < not_before {
        let left = human_duration(not_before - now);
        (
            ValidityState::NotYetValid,
            format!("not valid for another {left}"),
        )
    } else if now > not_after {
        let ago = human_duration(now - not_after);
        (ValidityState::Expired, format!("expired {ago} ago"))
    } else {
        let left = human_duration(not_after - now);
        (ValidityState::Valid, format!("valid for {left}"))
    };
    Validity { state, hint }
}

/// Coarsest unit that still leaves at least 2 of it, so "1 day" never hides 23 hours.
fn human_duration(d: time::Duration) -> String {
    let secs = d.whole_seconds().unsigned_abs();
    let (n, unit) = match secs {
        s if s >= 2 * 86_400 => (s / 86_400, "day"),
        s if s >= 2 * 3_600 => (s / 3_600, "hour"),
        s if s >= 2 * 60 => (s / 60, "minute"),
        s => (s, "second"),
    };
    format!("{n} {unit}{}", if n == 1 { "" } else { "s" })
}

// The tests cover the whole command (facts, validity, chain, reading,
// rendering) on shared fixtures, so they live in one file beside this one.
#[cfg(test)]
mod tests;
