//! The edits a fuzz case makes to one element of the TBS: what they are,
//! how one is drawn for a location, and how it is spliced into the TBS with
//! every enclosing length made right again (only the edited element is
//! off). Writes headers by hand on purpose: the point is encodings DER
//! forbids, which no DER encoder will produce.

use rand::Rng;
use rand_chacha::ChaCha8Rng;

use super::{Kind, Location, Tlv};

/// One edit of one element.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Op {
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
    pub(super) fn draw(rng: &mut ChaCha8Rng, at: &Location) -> Op {
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
pub(super) fn edit(tlv: &[u8], path: &[usize], op: &Op) -> Option<Vec<u8>> {
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
pub(super) fn der_length(len: usize) -> Vec<u8> {
    if len < 0x80 {
        return vec![len as u8];
    }
    let bytes = len.to_be_bytes();
    let skip = bytes.iter().take_while(|b| **b == 0).count();
    let mut out = vec![0x80 | (bytes.len() - skip) as u8];
    out.extend_from_slice(&bytes[skip..]);
    out
}
