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

/// One edit of one element.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Op {
    /// The length field says `delta` more (or fewer) octets than follow.
    LengthDelta(i64),
    /// Indefinite length (0x80) and an end-of-contents after the content:
    /// BER, never DER.
    Indefinite,
    /// The right length in a longer form than DER allows.
    LongForm(usize),
    /// A length far beyond the certificate (0x84 0x7f 0xff 0xff 0xff).
    Huge,
    /// Another identifier octet.
    Tag(u8),
    /// Flip bit `bit` of content octet `at`.
    BitFlip { at: usize, bit: u8 },
    /// Drop the last `n` content octets (length fixed).
    Truncate(usize),
    /// Append these content octets (length fixed).
    Extend(Vec<u8>),
    /// No content at all.
    Empty,
    /// An INTEGER's content replaced by a boundary value.
    Integer(&'static [u8], &'static str),
    /// A BOOLEAN's content replaced.
    Boolean(&'static [u8], &'static str),
    /// The element twice in a row.
    Duplicate,
    /// The element left out.
    Drop,
}

/// Identifier octets a tag change draws from: the universal types a
/// certificate uses, context tags, and a high-tag-number form.
const TAGS: &[u8] = &[
    0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x0c, 0x13, 0x16, 0x17, 0x18, 0x1e, 0x30, 0x31, 0x80, 0x81,
    0x82, 0x86, 0xa0, 0xa3, 0x1f, 0x00,
];

const INTEGERS: &[(&[u8], &str)] = &[
    (&[0x00], "0"),
    (&[0xff], "-1"),
    (&[0x7f], "127"),
    (&[0x80], "-128"),
    (&[0x00, 0x80], "128"),
    (&[0x00, 0x01], "1 with a leading zero octet (not DER)"),
    (&[0xff, 0xff], "-1 with a leading 0xff octet (not DER)"),
    (&[0x7f, 0xff, 0xff, 0xff], "2^31-1"),
    (&[0x80, 0x00, 0x00, 0x00], "-2^31"),
    (&[0x7f, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff], "2^63-1"),
    (&[0x01, 0, 0, 0, 0, 0, 0, 0, 0], "2^64"),
    (&[0x7f; 40], "a 40-octet integer"),
];

const BOOLEANS: &[(&[u8], &str)] = &[
    (&[0x00], "FALSE"),
    (&[0x01], "TRUE as 0x01 (not DER)"),
    (&[0x7f], "TRUE as 0x7f (not DER)"),
    (&[0xff, 0xff], "two octets"),
];

impl Op {
    /// An edit that makes sense at `at`, drawn from `rng`.
    fn draw(rng: &mut ChaCha8Rng, at: &Location) -> Op {
        // The key's bytes stay: framing edits only (and leaving it out).
        let framing = at.kind == Kind::Key;
        let families = if framing { 3 } else { 5 };
        match rng.random_range(0..families) {
            0 => match rng.random_range(0..6) {
                0 => Op::LengthDelta(1),
                1 => Op::LengthDelta(-1),
                2 => Op::LengthDelta(rng.random_range(2..=16)),
                3 => Op::Indefinite,
                4 => Op::LongForm(rng.random_range(1..=4)),
                _ => Op::Huge,
            },
            1 => Op::Tag(TAGS[rng.random_range(0..TAGS.len())]),
            2 => {
                if rng.random_bool(0.5) {
                    Op::Duplicate
                } else {
                    Op::Drop
                }
            }
            3 => match (at.kind, rng.random_range(0..3)) {
                (Kind::Integer, 0 | 1) => {
                    let (v, d) = INTEGERS[rng.random_range(0..INTEGERS.len())];
                    Op::Integer(v, d)
                }
                (Kind::Boolean, 0 | 1) => {
                    let (v, d) = BOOLEANS[rng.random_range(0..BOOLEANS.len())];
                    Op::Boolean(v, d)
                }
                _ => Op::Empty,
            },
            _ => match rng.random_range(0..4) {
                0 | 1 => Op::BitFlip {
                    at: rng.random_range(0..4096),
                    bit: rng.random_range(0..8),
                },
                2 => Op::Truncate(rng.random_range(1..=4)),
                _ => {
                    let n = rng.random_range(1..=4);
                    Op::Extend((0..n).map(|_| rng.random()).collect())
                }
            },
        }
    }

    /// The element after the edit: zero, one or two TLVs. `None` when the
    /// edit does not apply (truncating an empty element).
    fn apply(&self, tlv: &[u8]) -> Option<Vec<Vec<u8>>> {
        let t = Tlv::parse(tlv).ok()?;
        let with = |content: &[u8]| {
            let mut v = vec![t.identifier];
            v.extend(der_length(content.len()));
            v.extend_from_slice(content);
            vec![v]
        };
        let framed = |length: Vec<u8>, trailer: &[u8]| {
            let mut v = vec![t.identifier];
            v.extend(length);
            v.extend_from_slice(t.content);
            v.extend_from_slice(trailer);
            vec![v]
        };
        Some(match self {
            Op::LengthDelta(d) => {
                let len = usize::try_from(t.content.len() as i64 + d).ok()?;
                framed(der_length(len), &[])
            }
            Op::Indefinite => framed(vec![0x80], &[0x00, 0x00]),
            Op::LongForm(extra) => {
                let len = t.content.len();
                let be = (len as u64).to_be_bytes();
                let minimal = be.iter().skip_while(|b| **b == 0).count().max(1);
                // Below 128 any long form is already one form too long.
                let octets = minimal + extra - usize::from(len < 0x80);
                let mut l = vec![0x80 | u8::try_from(octets).ok()?];
                l.extend((0..octets).rev().map(|k| if k < 8 { be[7 - k] } else { 0 }));
                framed(l, &[])
            }
            Op::Huge => framed(vec![0x84, 0x7f, 0xff, 0xff, 0xff], &[]),
            Op::Tag(tag) => {
                let mut v = tlv.to_vec();
                (v[0] != *tag).then_some(())?;
                v[0] = *tag;
                vec![v]
            }
            Op::BitFlip { at, bit } => {
                (!t.content.is_empty()).then_some(())?;
                let mut c = t.content.to_vec();
                c[at % t.content.len()] ^= 1 << bit;
                with(&c)
            }
            Op::Truncate(n) => with(t.content.get(..t.content.len().checked_sub(*n)?)?),
            Op::Extend(bytes) => with(&[t.content, bytes].concat()),
            Op::Empty => with(&[]),
            Op::Integer(v, _) | Op::Boolean(v, _) => with(v),
            Op::Duplicate => vec![tlv.to_vec(), tlv.to_vec()],
            Op::Drop => Vec::new(),
        })
    }
}

impl std::fmt::Display for Op {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Op::LengthDelta(d) => write!(f, "length {d:+}"),
            Op::Indefinite => f.write_str("indefinite length"),
            Op::LongForm(extra) => write!(f, "long-form length, {extra} octet(s) more than needed"),
            Op::Huge => f.write_str("length 2^31-1"),
            Op::Tag(t) => write!(f, "tag -> 0x{t:02x}"),
            Op::BitFlip { at, bit } => {
                write!(f, "bit {bit} of value octet {at} (mod length) flipped")
            }
            Op::Truncate(n) => write!(f, "value truncated by {n} octet(s)"),
            Op::Extend(b) => write!(f, "value extended by {} octet(s)", b.len()),
            Op::Empty => f.write_str("empty value"),
            Op::Integer(_, d) => write!(f, "integer {d}"),
            Op::Boolean(_, d) => write!(f, "boolean {d}"),
            Op::Duplicate => f.write_str("duplicated"),
            Op::Drop => f.write_str("dropped"),
        }
    }
}

/// `tlv` with the element at `path` (child indexes) replaced by what `op`
/// makes of it; every enclosing element gets its DER length again, so only
/// the edited element is off.
fn edit(tlv: &[u8], path: &[usize], op: &Op) -> Option<Vec<u8>> {
    let (&first, rest) = path.split_first()?;
    let t = Tlv::parse(tlv).ok()?;
    let kids = t.children().ok()?;
    let child = kids.get(first)?;
    let replacement = if rest.is_empty() {
        op.apply(child)?
    } else {
        vec![edit(child, rest, op)?]
    };
    let mut content = Vec::with_capacity(t.content.len() + 8);
    for (k, kid) in kids.iter().enumerate() {
        if k == first {
            replacement
                .iter()
                .for_each(|r| content.extend_from_slice(r));
        } else {
            content.extend_from_slice(kid);
        }
    }
    let mut out = vec![t.identifier];
    out.extend(der_length(content.len()));
    out.extend(content);
    Some(out)
}

/// DER's length octets for `len`: short form below 128, else the fewest
/// octets.
fn der_length(len: usize) -> Vec<u8> {
    if len < 0x80 {
        return vec![len as u8];
    }
    let bytes = len.to_be_bytes();
    let skip = bytes.iter().take_while(|b| **b == 0).count();
    let mut out = vec![0x80 | (bytes.len() - skip) as u8];
    out.extend_from_slice(&bytes[skip..]);
    out
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
mod tests;
