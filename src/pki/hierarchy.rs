//! Who signs what in a test PKI: certshift's own root (and intermediate), or
//! the user's CA (and a certshift intermediate below it), plus the fresh
//! untrusted root. Everything after this — leaves, variants, the CRL — is
//! issued the same way whichever CA is on top, so `generate` asks only the
//! [`Hierarchy`].

use std::time::Duration;

use rustls_pki_types::CertificateDer;
use time::OffsetDateTime;

use super::issue::{key_pem, Authority};
use super::layout::{
    CA_DIR, CA_FILE, CA_KEY_FILE, INTERMEDIATE_FILE, INTERMEDIATE_KEY_FILE, UNTRUSTED_CA_DIR,
    USER_CA_FILE,
};
use super::manifest::{IssuedBy, Role, UserCaInfo};
use super::own_ca::UserCa;
use super::{PkiError, PkiOptions};
use crate::x509::{fingerprint, rfc3339};

/// The CAs of a PKI, built in memory.
pub(super) struct Hierarchy {
    /// What `ca/ca.crt` (and `ca.crt` beside every identity) holds.
    pub anchor: CertificateDer<'static>,
    /// The CAs whose key certshift holds, from the one issuing the leaves
    /// up. The first signs every leaf and the CRL that revokes; each other
    /// signs an empty CRL, so a verifier checking the whole path finds one.
    pub signers: Vec<Authority>,
    /// What the leaves' manifest entries say signed them.
    pub leaf_issuer: IssuedBy,
    /// What follows the leaf in `tls.crt`: every CA between it and the anchor.
    pub chain: Vec<CertificateDer<'static>>,
    pub untrusted: Authority,
    /// The CA entries of the manifest, in order. The issuing intermediate
    /// comes first among the intermediates: `PkiDir::issuing_ca` takes the
    /// first.
    pub cas: Vec<CaCert>,
    pub user_ca: Option<UserCaInfo>,
}

/// A CA certificate the PKI writes, and where its key is.
pub(super) struct CaCert {
    pub name: &'static str,
    pub role: Role,
    pub dir: &'static str,
    pub file: &'static str,
    pub cert: CertificateDer<'static>,
    pub key: CaKey,
    pub issuer: IssuedBy,
}

/// Where a CA's private key is.
pub(super) enum CaKey {
    /// A key certshift made: written, 0600, under this file name.
    Write { file: &'static str, pem: String },
    /// The user's key, recorded by its absolute path and never copied.
    Elsewhere(String),
    /// A root above the user's CA: certshift never saw its key.
    Unknown,
}

impl Hierarchy {
    pub fn build(opts: &PkiOptions, now: OffsetDateTime) -> Result<Self, PkiError> {
        let kt = opts.key_type;
        // CAs outlive every leaf they issue, the not-yet-valid one included.
        let ca_lifetime = (opts.validity + Duration::from_secs(365 * 86400))
            .max(Duration::from_secs(5 * 365 * 86400));
        // The user's CA is checked before any key is generated: a bad pair
        // fails at once and writes nothing.
        let user = match &opts.own_ca {
            Some(files) => Some(UserCa::load(files, opts.validity, opts.intermediate, now)?),
            None => None,
        };
        let untrusted = Authority::new_root("certshift untrusted CA", kt, now, ca_lifetime)?;
        let mut other_ca = CaCert::root("other-ca", Role::UntrustedCa, &untrusted.cert);
        other_ca.dir = UNTRUSTED_CA_DIR;
        other_ca.key = generated_key(CA_KEY_FILE, &untrusted);

        let (top, top_issuer, mut cas, anchor, above, user_ca) = match user {
            None => {
                // Unique per PKI: two PKIs trusted side by side must not
                // share a root name, or a CRL matched by issuer name (as
                // webpki and OpenSSL match them) is the other root's.
                let name = format!("certshift test root CA {:08x}", rand::random::<u32>());
                let root = Authority::new_root(&name, kt, now, ca_lifetime)?;
                let mut ca = CaCert::root("ca", Role::Ca, &root.cert);
                ca.key = generated_key(CA_KEY_FILE, &root);
                let anchor = root.cert.clone();
                (
                    root,
                    IssuedBy::GeneratedRoot,
                    vec![ca],
                    anchor,
                    Vec::new(),
                    None,
                )
            }
            Some(user) => {
                let info = user_ca_info(&user);
                let key = CaKey::Elsewhere(user.files.key.display().to_string());
                let own = |role, name, file, key| CaCert {
                    name,
                    role,
                    dir: CA_DIR,
                    file,
                    cert: user.authority.cert.clone(),
                    key,
                    issuer: IssuedBy::External,
                };
                let (cas, above) = match &user.root {
                    None => (vec![own(Role::Ca, "ca", CA_FILE, key)], Vec::new()),
                    Some(root) => {
                        let mut anchor = CaCert::root("ca", Role::Ca, root);
                        anchor.issuer = IssuedBy::External;
                        let mine = own(Role::IntermediateCa, "user-ca", USER_CA_FILE, key);
                        let mut above = vec![user.authority.cert.clone()];
                        above.extend(user.middles.iter().cloned());
                        (vec![anchor, mine], above)
                    }
                };
                let anchor = user.anchor().clone();
                (
                    user.authority,
                    IssuedBy::UserCa,
                    cas,
                    anchor,
                    above,
                    Some(info),
                )
            }
        };

        let mut signers = Vec::new();
        let mut chain = Vec::new();
        let mut leaf_issuer = top_issuer;
        if opts.intermediate {
            // Never outlive the CA above: a verifier would reject the path.
            let room = (top_not_after(&top)? - now).unsigned_abs();
            let lifetime = ca_lifetime.min(room);
            let i = top.new_intermediate("certshift test intermediate CA", kt, now, lifetime)?;
            // First among the intermediates: it issues the leaves.
            cas.insert(
                1,
                CaCert {
                    name: "intermediate-ca",
                    role: Role::IntermediateCa,
                    dir: CA_DIR,
                    file: INTERMEDIATE_FILE,
                    cert: i.cert.clone(),
                    key: generated_key(INTERMEDIATE_KEY_FILE, &i),
                    issuer: top_issuer,
                },
            );
            chain.push(i.cert.clone());
            signers.push(i);
            leaf_issuer = IssuedBy::GeneratedIntermediate;
        }
        chain.extend(above);
        signers.push(top);
        cas.push(other_ca);
        Ok(Hierarchy {
            anchor,
            signers,
            leaf_issuer,
            chain,
            untrusted,
            cas,
            user_ca,
        })
    }

    /// The CA that signs the leaves.
    pub fn issuing(&self) -> &Authority {
        &self.signers[0]
    }
}

impl CaCert {
    /// A self-signed root at `ca/ca.crt` whose key is not known yet.
    fn root(name: &'static str, role: Role, cert: &CertificateDer<'static>) -> Self {
        CaCert {
            name,
            role,
            dir: CA_DIR,
            file: CA_FILE,
            cert: cert.clone(),
            key: CaKey::Unknown,
            issuer: IssuedBy::Itself,
        }
    }
}

fn generated_key(file: &'static str, ca: &Authority) -> CaKey {
    CaKey::Write {
        file,
        pem: key_pem(ca.key()),
    }
}

fn top_not_after(ca: &Authority) -> Result<OffsetDateTime, PkiError> {
    crate::x509::CertFacts::from_der(&ca.cert)
        .map(|f| f.not_after)
        .map_err(|e| PkiError::Pem {
            what: "CA certificate".into(),
            detail: e.to_string(),
        })
}

fn user_ca_info(user: &UserCa) -> UserCaInfo {
    let anchor_subject = match &user.root {
        Some(root) => crate::x509::CertFacts::from_der(root)
            .map(|f| f.subject)
            .unwrap_or_default(),
        None => user.facts.subject.clone(),
    };
    UserCaInfo {
        cert: user.files.cert.display().to_string(),
        key: user.files.key.display().to_string(),
        subject: user.facts.subject.clone(),
        sha256: fingerprint(&user.authority.cert),
        not_after: rfc3339(user.facts.not_after),
        kind: match user.facts.self_signed {
            true => "root",
            false => "intermediate",
        }
        .into(),
        trust_anchor: anchor_subject,
    }
}
