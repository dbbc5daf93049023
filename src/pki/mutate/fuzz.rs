//! Random DER mutations of the identity's TBSCertificate for `audit --fuzz`:
//! a length, a tag or the value bytes of one chosen field changed, or the
//! field duplicated or dropped, then re-signed by the issuing CA with the
//! identity's public key kept (the client key still signs the handshake).
//!
//! Unlike the catalogue ([`super::MUTATIONS`]) a case carries no verdict:
//! nobody knows what a validator should make of `extensions[2].value:
//! length +1`. What the audit judges is only what no service may do with
//! any certificate (close without an alert, reset, hang, crash).
//!
//! The generator is pure: no I/O, no clock, no global RNG. Candidate `j` of
//! case `i` is drawn from ChaCha8 (a stream cipher, so the same on every
//! platform and `rand` version) keyed with SHA-256(seed, i, j); a candidate
//! is skipped when it equals the identity, a catalogue mutation or an
//! earlier case. So case `i` of seed `S` is a function of the identity's TBS,
//! `S` and `i`, and `--fuzz N --seed S` reproduces the first N cases of any
//! longer run with the same seed.
//!
//! Never: signs (that is [`FuzzCase::certificate`], given the CA), presents
//! or judges anything (that is the audit).

use std::collections::HashSet;

use der::{Decode, Header, Reader, SliceReader};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

mod edit;
use edit::{edit, Op};
use rustls_pki_types::CertificateDer;
use sha2::{Digest, Sha256};

use super::super::issue::Authority;
use super::super::resign::{assemble, split_certificate};
use super::{PkiError, MUTATIONS};

/// What a TBSCertificate is, once the random serial numbers of re-issued
/// catalogue mutations are set aside: see [`fingerprint`].
pub type Fingerprint = [u8; 32];

/// One generated case: a TBSCertificate to sign and what was changed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FuzzCase {
    /// 0-based; `--seed S` and this number reproduce it.
    pub index: usize,
    /// One line: `extensions[2].value: length +1`.
    pub description: String,
    pub tbs: Vec<u8>,
}

impl FuzzCase {
    /// The case as a certificate: its TBS signed by `issuing` under
    /// `signature_algorithm` (the identity's outer AlgorithmIdentifier TLV,
    /// [`identity_signature_algorithm`]).
    pub fn certificate(
        &self,
        issuing: &Authority,
        signature_algorithm: &[u8],
    ) -> Result<CertificateDer<'static>, PkiError> {
        let signature = issuing.sign_bytes(&self.tbs)?;
        assemble(&self.tbs, signature_algorithm, &signature)
    }
}

/// The identity's outer signatureAlgorithm, to sign cases with.
pub fn identity_signature_algorithm(leaf: &[u8]) -> Result<Vec<u8>, PkiError> {
    Ok(split_certificate(leaf)?.signature_algorithm.to_vec())
}

/// The generator for one identity.
#[derive(Debug, Clone)]
pub struct Fuzzer {
    tbs: Vec<u8>,
    locations: Vec<Location>,
    /// Fingerprints of the catalogue mutations (never generated again).
    excluded: HashSet<Fingerprint>,
}

impl Fuzzer {
    /// A generator over `leaf`'s TBSCertificate that never yields a case
    /// whose [`fingerprint`] is in `excluded` ([`catalogue_fingerprints`]).
    pub fn new(leaf: &[u8], excluded: HashSet<Fingerprint>) -> Result<Self, PkiError> {
        let tbs = split_certificate(leaf)?.tbs.to_vec();
        let locations = locations(&tbs)?;
        Ok(Fuzzer {
            tbs,
            locations,
            excluded,
        })
    }

    /// The identity's TBSCertificate, the base of every case.
    pub fn base(&self) -> &[u8] {
        &self.tbs
    }

    /// The first `n` cases of `seed`, every one distinct from the identity,
    /// from the catalogue and from each other. An error only when the space
    /// of edits ran dry (a tiny certificate and a huge `n`).
    pub fn cases(&self, seed: u64, n: usize) -> Result<Vec<FuzzCase>, PkiError> {
        let mut seen: HashSet<[u8; 32]> = HashSet::new();
        seen.insert(Sha256::digest(&self.tbs).into());
        let mut out = Vec::with_capacity(n);
        for index in 0..n {
            let case = (0..MAX_TRIES)
                .filter_map(|attempt| self.candidate(seed, index, attempt))
                .find(|(_, tbs)| {
                    !self.excluded.contains(&fingerprint(tbs))
                        && seen.insert(Sha256::digest(tbs).into())
                })
                .ok_or_else(|| PkiError::Mutation {
                    name: "fuzz",
                    detail: format!(
                        "no new case #{index} of seed {seed} in {MAX_TRIES} tries: ask for fewer cases"
                    ),
                })?;
            out.push(FuzzCase {
                index,
                description: case.0,
                tbs: case.1,
            });
        }
        Ok(out)
    }

    /// Candidate `attempt` of case `index`: a location, an edit, the result.
    /// `None` when the edit does not apply there (e.g. truncating nothing).
    fn candidate(&self, seed: u64, index: usize, attempt: usize) -> Option<(String, Vec<u8>)> {
        let mut key = Sha256::new();
        key.update(b"certshift fuzz v1");
        key.update(seed.to_be_bytes());
        key.update((index as u64).to_be_bytes());
        key.update((attempt as u64).to_be_bytes());
        let mut rng = ChaCha8Rng::from_seed(key.finalize().into());
        let at = &self.locations[rng.random_range(0..self.locations.len())];
        let op = Op::draw(&mut rng, at);
        let tbs = edit(&self.tbs, &at.path, &op)?;
        (tbs != self.tbs).then(|| (format!("{}: {}", at.name, op), tbs))
    }
}

/// Tries per case before giving up: with hundreds of locations and edits, a
/// repeat is rare, so this only bounds a degenerate input.
const MAX_TRIES: usize = 256;

/// The fingerprints of every catalogue mutation derived from `leaf` (issued
/// by `issuing`). Left out: mutations that cannot be made for this identity
/// (a SPIFFE edit without a SPIFFE ID), and those whose TBS is the
/// identity's (a flipped signature bit, trailing bytes): what they change
/// lies outside the TBS, where no case reaches.
pub fn catalogue_fingerprints(
    leaf: &CertificateDer<'_>,
    issuing: &Authority,
    chain: &[CertificateDer<'static>],
) -> HashSet<Fingerprint> {
    let unchanged = split_certificate(leaf).ok().map(|p| fingerprint(p.tbs));
    MUTATIONS
        .iter()
        .filter_map(|m| {
            let derived = m.derive(leaf, issuing, chain).ok()?;
            let cert = derived.first()?;
            let tbs = split_certificate(cert).ok()?.tbs;
            Some(fingerprint_as(tbs, serial_kind(m.name)))
        })
        .filter(|f| Some(*f) != unchanged)
        .collect()
}

/// What a TBSCertificate is for "equals a catalogue mutation": SHA-256 over
/// its elements with the serial number reduced to its kind. Catalogue
/// mutations are re-issued under fresh random serials, so their serial
/// bytes say nothing; the serial mutations are defined by the kind of
/// serial (negative, 20 or 21 octets) whatever its bytes. A TBS that does
/// not parse is hashed whole.
pub fn fingerprint(tbs: &[u8]) -> Fingerprint {
    fingerprint_as(tbs, None)
}

/// `kind`: the catalogue's own word on what its serial is (see
/// [`serial_kind`]); else read from the bytes.
fn fingerprint_as(tbs: &[u8], kind: Option<&'static str>) -> Fingerprint {
    let mut h = Sha256::new();
    let Ok(parsed) = Tlv::parse(tbs).and_then(|t| t.children()) else {
        h.update(b"raw");
        h.update(tbs);
        return h.finalize().into();
    };
    let serial_at = usize::from(parsed.first().is_some_and(|e| e.first() == Some(&0xa0)));
    for (i, e) in parsed.iter().enumerate() {
        match (i == serial_at, kind.or_else(|| serial_kind_of(e))) {
            (true, Some(k)) => {
                h.update(b"serial:");
                h.update(k.as_bytes());
            }
            _ => h.update(e),
        }
        h.update(b"|");
    }
    h.finalize().into()
}

/// The kind of serial a catalogue mutation has: the serial mutations by
/// what they make, every other one an ordinary random serial.
fn serial_kind(mutation: &str) -> Option<&'static str> {
    Some(match mutation {
        "negative-serial" => "negative",
        "serial-20-bytes" => "positive-20",
        "serial-21-bytes" => "positive-21",
        _ => "ordinary",
    })
}

/// The kind of a well-formed INTEGER serial; `None` (hash the bytes) for
/// anything else.
fn serial_kind_of(tlv: &[u8]) -> Option<&'static str> {
    let t = Tlv::parse(tlv).ok()?;
    if t.identifier != 0x02 || t.content.is_empty() {
        return None;
    }
    let minimal = t.content.len() == 1
        || !matches!(
            (t.content[0], t.content[1] & 0x80),
            (0x00, 0) | (0xff, 0x80)
        );
    if !minimal {
        return None;
    }
    let negative = t.content[0] & 0x80 != 0;
    let octets = t.content.len() - usize::from(t.content[0] == 0);
    Some(match (negative, octets) {
        (true, _) => "negative",
        (false, 20) => "positive-20",
        (false, 21) => "positive-21",
        (false, 1..=19) => "ordinary",
        _ => return None,
    })
}

/// What a location holds, which decides the edits that make sense there.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// Any element: every edit.
    Any,
    /// An INTEGER: also boundary values.
    Integer,
    /// A BOOLEAN (an extension's critical flag): also boundary values.
    Boolean,
    /// The subject public key: only its framing changes (length, tag), so
    /// the key stays the identity's wherever it still parses.
    Key,
}

/// A field of the TBS: where it is (child indexes from the TBS down), its
/// name in descriptions, what it holds.
#[derive(Debug, Clone)]
struct Location {
    path: Vec<usize>,
    name: String,
    kind: Kind,
}

/// Every field the generator edits: the TBS's elements, validity times,
/// name attributes, the key's algorithm, each extension, its parts and the
/// first element inside its value.
fn locations(tbs: &[u8]) -> Result<Vec<Location>, PkiError> {
    let elements = Tlv::parse(tbs)?.children()?;
    let mut out = Vec::new();
    let mut add = |path: Vec<usize>, name: String, kind: Kind| {
        out.push(Location { path, name, kind });
    };
    let has_version = elements.first().is_some_and(|e| e.first() == Some(&0xa0));
    const ROLES: [&str; 7] = [
        "serial",
        "signature",
        "issuer",
        "validity",
        "subject",
        "spki",
        "extensions",
    ];
    for (i, e) in elements.iter().enumerate() {
        let t = Tlv::parse(e)?;
        let role = match (has_version, i) {
            (true, 0) => "version",
            (true, i) => ROLES.get(i - 1).copied().unwrap_or("tbs-element"),
            (false, i) => ROLES.get(i).copied().unwrap_or("tbs-element"),
        };
        // Unique IDs ([1], [2]) would shift the names; the PKI issues none.
        let role = match t.identifier {
            0xa3 => "extensions",
            0x81 | 0xa1 => "issuerUniqueID",
            0x82 | 0xa2 => "subjectUniqueID",
            _ => role,
        };
        let kind = match role {
            "serial" => Kind::Integer,
            // The key must keep its bytes: no value edits on the whole SPKI.
            "spki" => Kind::Key,
            _ => Kind::Any,
        };
        add(vec![i], role.to_string(), kind);
        let kids = t.children().unwrap_or_default();
        match role {
            "version" => add(vec![i, 0], "version.value".into(), Kind::Integer),
            "signature" => {
                for (k, _) in kids.iter().enumerate() {
                    let part = if k == 0 { "algorithm" } else { "parameters" };
                    add(vec![i, k], format!("signature.{part}"), Kind::Any);
                }
            }
            "validity" => {
                for (k, _) in kids.iter().enumerate().take(2) {
                    let part = if k == 0 { "notBefore" } else { "notAfter" };
                    add(vec![i, k], format!("validity.{part}"), Kind::Any);
                }
            }
            "issuer" | "subject" => {
                for (k, rdn) in kids.iter().enumerate() {
                    add(vec![i, k], format!("{role}.rdn[{k}]"), Kind::Any);
                    // SET { SEQUENCE { type, value } }: the attribute value.
                    if Tlv::parse(rdn)
                        .and_then(|r| r.children())
                        .is_ok_and(|a| !a.is_empty())
                    {
                        add(
                            vec![i, k, 0, 1],
                            format!("{role}.rdn[{k}].value"),
                            Kind::Any,
                        );
                    }
                }
            }
            "spki" => {
                if let Some(alg) = kids.first() {
                    add(vec![i, 0], "spki.algorithm".into(), Kind::Any);
                    let parts = Tlv::parse(alg)?.children().unwrap_or_default();
                    if parts.len() > 1 {
                        add(vec![i, 0, 1], "spki.algorithm.parameters".into(), Kind::Any);
                    }
                }
                if kids.len() > 1 {
                    add(vec![i, 1], "spki.key".into(), Kind::Key);
                }
            }
            "extensions" => {
                add(vec![i, 0], "extensions.list".into(), Kind::Any);
                let list = kids
                    .first()
                    .map(|l| Tlv::parse(l).and_then(|t| t.children()));
                for (k, ext) in list
                    .and_then(Result::ok)
                    .unwrap_or_default()
                    .iter()
                    .enumerate()
                {
                    let name = format!("extensions[{k}]");
                    add(vec![i, 0, k], name.clone(), Kind::Any);
                    let parts = Tlv::parse(ext)?.children()?;
                    add(vec![i, 0, k, 0], format!("{name}.oid"), Kind::Any);
                    let value_at = parts.len().saturating_sub(1);
                    if parts.len() == 3 {
                        add(vec![i, 0, k, 1], format!("{name}.critical"), Kind::Boolean);
                    }
                    add(vec![i, 0, k, value_at], format!("{name}.value"), Kind::Any);
                    // The OCTET STRING holds DER: its first element too.
                    if let Some(inner) = parts
                        .get(value_at)
                        .and_then(|v| Tlv::parse(v).ok())
                        .and_then(|v| v.children().ok())
                        .and_then(|c| c.first().and_then(|f| Tlv::parse(f).ok()))
                    {
                        let kind = if inner.identifier == 0x02 {
                            Kind::Integer
                        } else {
                            Kind::Any
                        };
                        add(
                            vec![i, 0, k, value_at, 0],
                            format!("{name}.value.inner"),
                            kind,
                        );
                    }
                }
            }
            _ => {}
        }
    }
    Ok(out)
}

/// One well-formed DER element of the identity, read with `der`'s reader:
/// its identifier octet and content. (The edits write their own headers;
/// reading is only ever of DER the PKI issued.)
struct Tlv<'a> {
    identifier: u8,
    content: &'a [u8],
}

impl<'a> Tlv<'a> {
    fn parse(tlv: &'a [u8]) -> Result<Self, PkiError> {
        let err = |e: der::Error| PkiError::Der {
            what: "fuzz base".into(),
            detail: e.to_string(),
        };
        let mut r = SliceReader::new(tlv).map_err(err)?;
        let header = Header::decode(&mut r).map_err(err)?;
        let content = r.read_slice(header.length).map_err(err)?;
        r.finish(()).map_err(err)?;
        let identifier = *tlv.first().ok_or_else(|| PkiError::Der {
            what: "fuzz base".into(),
            detail: "empty element".into(),
        })?;
        Ok(Tlv {
            identifier,
            content,
        })
    }

    /// The content read as a series of elements (a constructed element's
    /// children, or the DER inside an OCTET STRING).
    fn children(&self) -> Result<Vec<&'a [u8]>, PkiError> {
        let err = |e: der::Error| PkiError::Der {
            what: "fuzz base".into(),
            detail: e.to_string(),
        };
        let mut r = SliceReader::new(self.content).map_err(err)?;
        let mut out = Vec::new();
        while !r.is_finished() {
            out.push(r.tlv_bytes().map_err(err)?);
        }
        Ok(out)
    }
}

#[cfg(test)]
use edit::der_length;

#[cfg(test)]
mod tests;
