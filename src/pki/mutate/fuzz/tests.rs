//! The generator is a pure function of (identity, seed, index), yields
//! exactly the cases asked for, none equal to the identity, to another case
//! or to a catalogue mutation, and each re-signs into a certificate whose
//! outer frame parses.

use std::time::Duration;

use time::OffsetDateTime;
use x509_parser::prelude::{FromDer, X509Certificate};

use super::*;
use crate::pki::{KeyType, LeafSpec, Usage};

struct Pki {
    issuing: Authority,
    leaf: CertificateDer<'static>,
}

fn pki() -> Pki {
    let now = OffsetDateTime::now_utc();
    let year = Duration::from_secs(365 * 86_400);
    let issuing = Authority::new_root("fuzz root", KeyType::EcdsaP256, now, year).unwrap();
    let mut spec = LeafSpec::new("order-service", Usage::Client, now, year);
    spec.spiffe_id = Some("spiffe://cluster.local/ns/production/sa/order-service".into());
    let leaf = issuing.issue(&spec, KeyType::EcdsaP256).unwrap().cert;
    Pki { issuing, leaf }
}

fn fuzzer(p: &Pki) -> Fuzzer {
    Fuzzer::new(&p.leaf, catalogue_fingerprints(&p.leaf, &p.issuing, &[])).unwrap()
}

#[test]
fn the_same_seed_gives_the_same_cases_and_a_longer_run_extends_a_shorter_one() {
    let p = pki();
    let f = fuzzer(&p);
    let a = f.cases(42, 200).unwrap();
    let b = fuzzer(&p).cases(42, 200).unwrap();
    assert_eq!(a, b, "seed 42 twice");
    assert_eq!(f.cases(42, 50).unwrap(), a[..50], "the first 50 of 200");
    let other = f.cases(43, 200).unwrap();
    assert_ne!(a, other, "another seed, other cases");
    for (i, c) in a.iter().enumerate() {
        assert_eq!(c.index, i);
    }
}

#[test]
fn the_count_is_exactly_n_and_every_case_is_new() {
    let p = pki();
    let f = fuzzer(&p);
    for n in [0, 1, 7, 300] {
        assert_eq!(f.cases(7, n).unwrap().len(), n);
    }
    let cases = f.cases(7, 300).unwrap();
    let mut seen = HashSet::new();
    for c in &cases {
        assert_ne!(c.tbs, f.base(), "case {} is the identity", c.index);
        assert!(seen.insert(c.tbs.clone()), "case {} repeats", c.index);
        assert!(!c.description.is_empty());
    }
}

#[test]
fn no_case_equals_a_catalogue_mutation() {
    let p = pki();
    let excluded = catalogue_fingerprints(&p.leaf, &p.issuing, &[]);
    // Every mutation the catalogue can make of a SPIFFE identity.
    assert!(excluded.len() >= 20, "{}", excluded.len());
    let cases = Fuzzer::new(&p.leaf, excluded.clone())
        .unwrap()
        .cases(1, 500)
        .unwrap();
    let catalogue_tbs: Vec<Vec<u8>> = MUTATIONS
        .iter()
        .filter_map(|m| m.derive(&p.leaf, &p.issuing, &[]).ok())
        // trailing-bytes: not one certificate, nothing to compare.
        .filter_map(|chain| Some(split_certificate(&chain[0]).ok()?.tbs.to_vec()))
        .collect();
    for c in &cases {
        assert!(
            !excluded.contains(&fingerprint(&c.tbs)),
            "{}",
            c.description
        );
        assert!(!catalogue_tbs.contains(&c.tbs), "{}", c.description);
    }
}

#[test]
fn an_excluded_fingerprint_is_never_generated() {
    // Exclude what seed 5 makes first: the generator moves on.
    let p = pki();
    let first = fuzzer(&p).cases(5, 1).unwrap().remove(0);
    let mut excluded = catalogue_fingerprints(&p.leaf, &p.issuing, &[]);
    excluded.insert(fingerprint(&first.tbs));
    let again = Fuzzer::new(&p.leaf, excluded).unwrap().cases(5, 1).unwrap();
    assert_ne!(again[0].tbs, first.tbs);
}

#[test]
fn serial_fingerprints_keep_the_kind_of_serial_only() {
    let kind = |content: &[u8]| {
        let mut v = vec![0x02, content.len() as u8];
        v.extend_from_slice(content);
        serial_kind_of(&v)
    };
    assert_eq!(kind(&[0x01, 0x02]), Some("ordinary"));
    assert_eq!(kind(&[0x80, 0x02]), Some("negative"));
    assert_eq!(kind(&[0x00, 0x80]), Some("ordinary"));
    assert_eq!(kind(&[0x11; 20]), Some("positive-20"));
    assert_eq!(kind(&[0x11; 21]), Some("positive-21"));
    assert_eq!(kind(&[0x00, 0x01]), None, "not DER: hashed as bytes");
}

#[test]
fn cases_sign_into_certificates_that_keep_the_identity_key_when_it_is_untouched() {
    let p = pki();
    let alg = identity_signature_algorithm(&p.leaf).unwrap();
    let (_, id) = X509Certificate::from_der(&p.leaf).unwrap();
    let key = id.public_key().raw.to_vec();
    let mut parsed = 0;
    for c in fuzzer(&p).cases(9, 200).unwrap() {
        let cert = c.certificate(&p.issuing, &alg).unwrap();
        let parts = split_certificate(&cert).unwrap();
        assert_eq!(parts.tbs, c.tbs.as_slice());
        if let Ok((_, x)) = X509Certificate::from_der(&cert) {
            parsed += 1;
            if !c.description.starts_with("spki") && !c.description.starts_with("tbs") {
                assert_eq!(x.public_key().raw, key.as_slice(), "{}", c.description);
            }
        }
    }
    // Some edits leave a certificate x509-parser still reads (values,
    // extension contents), so the service's validator gets to decide.
    assert!(parsed > 20, "only {parsed} of 200 parse");
}

#[test]
fn edits_change_one_element_and_fix_the_enclosing_lengths() {
    let p = pki();
    let f = fuzzer(&p);
    let tbs = f.base();
    let locs = locations(tbs).unwrap();
    let names: Vec<&str> = locs.iter().map(|l| l.name.as_str()).collect();
    for want in [
        "version",
        "serial",
        "validity.notAfter",
        "subject.rdn[0].value",
        "spki.key",
        "extensions[0].value",
    ] {
        assert!(names.contains(&want), "{want} in {names:?}");
    }
    let serial = locs.iter().find(|l| l.name == "serial").unwrap();
    let out = edit(tbs, &serial.path, &Op::LengthDelta(1)).unwrap();
    // The TBS itself is still one well-formed element; its serial is not.
    let t = Tlv::parse(&out).unwrap();
    assert_eq!(
        t.content.len() + 2 + usize::from(out[1] > 0x80) * (out[1] as usize & 0x7f),
        out.len()
    );
    let same = edit(tbs, &serial.path, &Op::LongForm(1)).unwrap();
    assert_eq!(same.len(), tbs.len() + 1, "0x81 LL instead of LL");
    let dropped = edit(tbs, &serial.path, &Op::Drop).unwrap();
    assert_eq!(
        Tlv::parse(&dropped).unwrap().children().unwrap().len() + 1,
        Tlv::parse(tbs).unwrap().children().unwrap().len()
    );
    assert_eq!(der_length(5), [5]);
    assert_eq!(der_length(200), [0x81, 200]);
    assert_eq!(der_length(0x1234), [0x82, 0x12, 0x34]);
}

#[test]
fn a_serial_edit_that_makes_a_catalogue_serial_mutation_is_excluded() {
    // The catalogue re-issues the identity as `pki::issue` does, so its
    // serial mutations differ from the identity in the serial only: a
    // negative serial here is `negative-serial` there.
    let p = pki();
    let f = fuzzer(&p);
    let serial = locations(f.base())
        .unwrap()
        .into_iter()
        .find(|l| l.name == "serial")
        .unwrap();
    let negative = edit(f.base(), &serial.path, &Op::Integer(&[0xff], "-1")).unwrap();
    assert!(f.excluded.contains(&fingerprint(&negative)));
    let small = edit(f.base(), &serial.path, &Op::Integer(&[0x7f], "127")).unwrap();
    assert!(!f.excluded.contains(&fingerprint(&small)));
}
