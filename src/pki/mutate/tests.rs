//! Each mutation changes exactly what its `changes` line says, keeps the
//! identity's public key, and presents a chain that ends in the identity's.

use std::collections::BTreeSet;
use std::time::Duration;

use rustls_pki_types::CertificateDer;
use time::OffsetDateTime;
use x509_parser::prelude::{FromDer, X509Certificate};

use super::*;
use crate::pki::resign::{signature_bytes, split_certificate};
use crate::pki::{Authority, Expect, Issued, KeyType, LeafSpec, Usage};

const ID: &str = "spiffe://cluster.local/ns/production/sa/order-service";

struct Pki {
    issuing: Authority,
    chain: Vec<CertificateDer<'static>>,
    identity: Issued,
}

/// A root, an intermediate under it (pathLenConstraint 0, like `pki init
/// --intermediate`) when `intermediate`, and the identity.
fn pki(intermediate: bool) -> Pki {
    let now = OffsetDateTime::now_utc();
    let year = Duration::from_secs(365 * 86_400);
    let root = Authority::new_root("mutate root", KeyType::EcdsaP256, now, year).unwrap();
    let (issuing, chain) = if intermediate {
        let i = root
            .new_intermediate("mutate intermediate", KeyType::EcdsaP256, now, year)
            .unwrap();
        let chain = vec![i.cert.clone()];
        (i, chain)
    } else {
        let again = Authority::from_parts(root.cert.clone(), clone_key(&root)).unwrap();
        (again, Vec::new())
    };
    let mut spec = LeafSpec::new("order-service", Usage::Client, now, year);
    spec.spiffe_id = Some(ID.into());
    let identity = issuing.issue(&spec, KeyType::EcdsaP256).unwrap();
    Pki {
        issuing,
        chain,
        identity,
    }
}

fn clone_key(ca: &Authority) -> rcgen::KeyPair {
    rcgen::KeyPair::try_from(ca.key().serialized_der()).unwrap()
}

/// The fields a mutation may change, read with x509-parser (which, unlike
/// `CertFacts`, reads duplicate extensions and ignores trailing bytes).
#[derive(Debug, Clone, PartialEq)]
struct Fields {
    version: u32,
    serial: Vec<u8>,
    tbs_algorithm: String,
    outer_algorithm: String,
    issuer: Vec<u8>,
    validity: (i64, i64),
    subject: Vec<u8>,
    public_key: Vec<u8>,
    /// (OID, critical, value), the authorityKeyIdentifier left out: it
    /// names whoever signed.
    extensions: Vec<(String, bool, Vec<u8>)>,
    trailing: usize,
}

fn fields(der: &[u8]) -> Fields {
    let (rest, c) = X509Certificate::from_der(der).unwrap();
    Fields {
        version: c.version().0,
        serial: c.raw_serial().to_vec(),
        tbs_algorithm: c.tbs_certificate.signature.algorithm.to_id_string(),
        outer_algorithm: c.signature_algorithm.algorithm.to_id_string(),
        issuer: c.issuer().as_raw().to_vec(),
        validity: (
            c.validity().not_before.timestamp(),
            c.validity().not_after.timestamp(),
        ),
        subject: c.subject().as_raw().to_vec(),
        public_key: c.public_key().raw.to_vec(),
        extensions: c
            .extensions()
            .iter()
            .filter(|e| e.oid.to_id_string() != "2.5.29.35")
            .map(|e| (e.oid.to_id_string(), e.critical, e.value.to_vec()))
            .collect(),
        trailing: rest.len(),
    }
}

/// Which fields differ, the serial aside (every re-issue gets a fresh one).
fn changed(a: &Fields, b: &Fields) -> BTreeSet<&'static str> {
    let mut out = BTreeSet::new();
    let mut differs = |name, d: bool| {
        if d {
            out.insert(name);
        }
    };
    differs("version", a.version != b.version);
    differs("tbs_algorithm", a.tbs_algorithm != b.tbs_algorithm);
    differs("outer_algorithm", a.outer_algorithm != b.outer_algorithm);
    differs("issuer", a.issuer != b.issuer);
    differs("validity", a.validity != b.validity);
    differs("subject", a.subject != b.subject);
    differs("public_key", a.public_key != b.public_key);
    differs("extensions", a.extensions != b.extensions);
    differs("trailing", a.trailing != b.trailing);
    out
}

/// Does `issuer`'s key verify `cert`'s signature under the algorithm
/// `cert`'s outer signatureAlgorithm names?
fn verifies(cert: &[u8], issuer: &[u8]) -> bool {
    let parts = split_certificate(cert).unwrap();
    let signature = signature_bytes(parts.signature).unwrap();
    let (_, c) = X509Certificate::from_der(issuer).unwrap();
    let spki = c.public_key();
    // AlgorithmIdentifier contents, as rustls's verifiers name theirs; one
    // of a wrong curve fails to verify, so every candidate may be tried.
    let alg = &parts.signature_algorithm[2..];
    crate::creds::provider()
        .signature_verification_algorithms
        .all
        .iter()
        .filter(|a| a.signature_alg_id().as_ref() == alg)
        .any(|a| {
            a.verify_signature(&spki.subject_public_key.data, parts.tbs, signature)
                .is_ok()
        })
}

/// What each mutation changes, beyond its serial and signature.
fn expected_changes(name: &str) -> BTreeSet<&'static str> {
    let set = |s: &[&'static str]| s.iter().copied().collect::<BTreeSet<_>>();
    match name {
        "bad-signature" | "negative-serial" | "serial-21-bytes" | "serial-20-bytes"
        | "sha1-signature" => match name {
            "sha1-signature" => set(&["tbs_algorithm", "outer_algorithm"]),
            _ => set(&[]),
        },
        "signature-algorithm-mismatch" => set(&["outer_algorithm"]),
        "validity-reversed" => set(&["validity"]),
        "v1-with-extensions" => set(&["version"]),
        "trailing-bytes" => set(&["trailing"]),
        "empty-subject-non-critical-san" => set(&["subject"]),
        "issuer-not-ca" | "path-len-exceeded" | "name-constraints-violated" => set(&["issuer"]),
        _ => set(&["extensions"]),
    }
}

#[test]
fn the_catalogue_has_unique_kebab_case_names_and_every_rule() {
    assert!(MUTATIONS.len() >= 20, "{}", MUTATIONS.len());
    let names: BTreeSet<&str> = MUTATIONS.iter().map(|m| m.name).collect();
    assert_eq!(names.len(), MUTATIONS.len(), "names are unique");
    for m in MUTATIONS {
        assert!(
            m.name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-'),
            "{}",
            m.name
        );
        assert_eq!(m.check_id, format!("mutation:{}", m.name));
        assert!(!m.changes.is_empty() && !m.rule.is_empty(), "{}", m.name);
        assert_eq!(find(m.name).map(|f| f.name), Some(m.name));
    }
    let accepted: BTreeSet<&str> = MUTATIONS
        .iter()
        .filter(|m| m.expect == Expect::Accept)
        .map(|m| m.name)
        .collect();
    assert_eq!(
        accepted,
        BTreeSet::from([
            "serial-20-bytes",
            "spiffe-id-uppercase-scheme",
            "unknown-non-critical-extension"
        ])
    );
}

#[test]
fn every_mutation_keeps_the_key_and_changes_only_its_one_thing() {
    for intermediate in [false, true] {
        let p = pki(intermediate);
        let identity = fields(&p.identity.cert);
        for m in MUTATIONS {
            let what = format!("{} (intermediate: {intermediate})", m.name);
            let chain = m
                .derive(&p.identity.cert, &p.issuing, &p.chain)
                .unwrap_or_else(|e| panic!("{what}: {e}"));
            let leaf = fields(&chain[0]);
            assert_eq!(leaf.public_key, identity.public_key, "{what}: the key");
            assert!(
                chain.ends_with(&p.chain),
                "{what}: the identity's chain goes last"
            );
            assert_eq!(
                changed(&identity, &leaf),
                expected_changes(m.name),
                "{what}: {}",
                m.changes
            );
            // Who signed: the issuing CA, except where the mutation adds the
            // intermediate that signs, or breaks the signature.
            let signer = match chain.len() - p.chain.len() {
                1 => p.issuing.cert.as_ref(),
                _ => chain[1].as_ref(),
            };
            // rustls verifies no SHA-1; the stray bytes follow a valid certificate.
            let expect_valid = !matches!(
                m.name,
                "bad-signature" | "signature-algorithm-mismatch" | "sha1-signature"
            );
            let cert = &chain[0][..chain[0].len() - leaf.trailing];
            assert_eq!(verifies(cert, signer), expect_valid, "{what}");
        }
    }
}

#[test]
fn what_each_mutation_changes() {
    let p = pki(false);
    let derive = |name: &str| {
        find(name)
            .unwrap()
            .derive(&p.identity.cert, &p.issuing, &p.chain)
            .unwrap()
    };
    let ext = |name: &str, oid: &str| -> Vec<(bool, Vec<u8>)> {
        fields(&derive(name)[0])
            .extensions
            .into_iter()
            .filter(|(o, _, _)| o == oid)
            .map(|(_, c, v)| (c, v))
            .collect()
    };
    let unknown = "1.3.6.1.4.1.32473.1.1";
    assert_eq!(
        ext("unknown-critical-extension", unknown),
        [(true, vec![5, 0])]
    );
    assert_eq!(
        ext("unknown-non-critical-extension", unknown),
        [(false, vec![5, 0])]
    );
    let eku = ext("duplicate-extension", "2.5.29.37");
    assert_eq!(eku.len(), 2);
    assert_eq!(eku[0], eku[1], "the same extension twice");

    let serial = |name: &str| fields(&derive(name)[0]).serial;
    assert!(serial("negative-serial")[0] & 0x80 != 0, "negative");
    assert_eq!(serial("serial-21-bytes").len(), 21);
    assert_eq!(serial("serial-20-bytes").len(), 20);
    assert!(serial("serial-20-bytes")[0] & 0x80 == 0, "positive");

    let id = fields(&p.identity.cert);
    let reversed = fields(&derive("validity-reversed")[0]).validity;
    assert_eq!(reversed, (id.validity.1, id.validity.0));
    assert_eq!(fields(&derive("v1-with-extensions")[0]).version, 0);
    assert_eq!(
        fields(&derive("v1-with-extensions")[0]).extensions,
        id.extensions
    );
    assert_eq!(fields(&derive("trailing-bytes")[0]).trailing, 2);
    let empty = fields(&derive("empty-subject-non-critical-san")[0]);
    assert_eq!(empty.subject, [0x30, 0x00]);
    assert!(
        empty
            .extensions
            .iter()
            .any(|(o, critical, _)| o == "2.5.29.17" && !critical),
        "the SAN stays non-critical"
    );
    let sha1 = fields(&derive("sha1-signature")[0]);
    assert_eq!(sha1.outer_algorithm, "1.2.840.10045.4.1", "ecdsa-with-SHA1");
    let mismatch = fields(&derive("signature-algorithm-mismatch")[0]);
    assert_eq!(
        (
            mismatch.tbs_algorithm.as_str(),
            mismatch.outer_algorithm.as_str()
        ),
        ("1.2.840.10045.4.3.2", "1.2.840.10045.4.3.3")
    );

    let uris = |name: &str| -> Vec<String> {
        let chain = derive(name);
        let (_, c) = X509Certificate::from_der(&chain[0]).unwrap();
        let san = c.subject_alternative_name().unwrap().unwrap();
        san.value
            .general_names
            .iter()
            .filter_map(|g| match g {
                x509_parser::extensions::GeneralName::URI(u) => Some(u.to_string()),
                _ => None,
            })
            .collect()
    };
    assert_eq!(
        uris("two-spiffe-ids"),
        [ID.to_string(), format!("{ID}-twin")]
    );
    let single = |name: &str| uris(name).join(" ");
    assert_eq!(
        single("spiffe-id-dot-segment"),
        "spiffe://cluster.local/ns/production/sa/evil/../order-service"
    );
    assert_eq!(
        single("spiffe-id-percent-encoded"),
        "spiffe://cluster.local/ns/production/sa/%6Frder-service"
    );
    assert_eq!(
        single("spiffe-id-uppercase-scheme"),
        "SPIFFE://cluster.local/ns/production/sa/order-service"
    );
    assert_eq!(
        single("spiffe-id-port"),
        "spiffe://cluster.local:443/ns/production/sa/order-service"
    );
    assert_eq!(single("spiffe-id-query"), format!("{ID}?admin=true"));
    assert_eq!(single("spiffe-uri-empty"), "spiffe://");
    assert_eq!(single("spiffe-id-without-path"), "spiffe://cluster.local");

    let facts = |name: &str| CertFacts::from_der(&derive(name)[0]).unwrap();
    assert_eq!(
        facts("key-usage-without-digital-signature").key_usage,
        ["nonRepudiation"]
    );
    assert_eq!(
        facts("eku-server-auth-only").extended_key_usage,
        ["serverAuth"]
    );

    // The issuer side: what the added intermediates say about themselves.
    let ca = |name: &str, at: usize| CertFacts::from_der(&derive(name)[at]).unwrap();
    let not_ca = ca("issuer-not-ca", 1);
    assert!(!not_ca.is_ca && not_ca.key_usage.contains(&"keyCertSign".to_string()));
    let chain = derive("path-len-exceeded");
    assert_eq!(chain.len(), 3);
    let (below, top) = (ca("path-len-exceeded", 1), ca("path-len-exceeded", 2));
    assert!(below.is_ca && top.is_ca && top.path_len == Some(0));
    assert_eq!(below.link.issuer_der, top.link.subject_der);
    let constrained = derive("name-constraints-violated");
    let (_, nc) = X509Certificate::from_der(&constrained[1]).unwrap();
    let constraints = nc.name_constraints().unwrap().unwrap();
    assert!(constraints.critical);
    let permitted = constraints.value.permitted_subtrees.as_ref().unwrap();
    assert_eq!(
        format!("{:?}", permitted[0].base),
        "URI(\"constrained.invalid\")"
    );
}

#[test]
fn spiffe_mutations_of_an_identity_without_a_spiffe_id_say_so() {
    let now = OffsetDateTime::now_utc();
    let year = Duration::from_secs(365 * 86_400);
    let ca = Authority::new_root("plain", KeyType::EcdsaP256, now, year).unwrap();
    let mut spec = LeafSpec::new("plain", Usage::Client, now, year);
    spec.names = vec!["plain.example".into()];
    let leaf = ca.issue(&spec, KeyType::EcdsaP256).unwrap();
    let err = find("spiffe-id-port")
        .unwrap()
        .derive(&leaf.cert, &ca, &[])
        .unwrap_err();
    assert!(
        matches!(
            err,
            PkiError::Mutation {
                name: "spiffe-id-port",
                ..
            }
        ),
        "{err}"
    );
    // A DNS-only identity gets a DNS name constraint instead.
    let chain = find("name-constraints-violated")
        .unwrap()
        .derive(&leaf.cert, &ca, &[])
        .unwrap();
    let (_, nc) = X509Certificate::from_der(&chain[1]).unwrap();
    let c = nc.name_constraints().unwrap().unwrap();
    assert_eq!(
        format!("{:?}", c.value.permitted_subtrees.as_ref().unwrap()[0].base),
        "DNSName(\"constrained.invalid\")"
    );
}
