//! Tests of `pki inspect`: facts, validity, chain order, file reading and rendering,
//! on certificates issued by this crate's own `pki` module.

use std::time::Duration;

use sha2::{Digest, Sha256};
use time::macros::datetime;
use x509_parser::certificate::X509Certificate;
use x509_parser::prelude::FromDer;

use super::*;
use crate::pki::{
    key_pem, pem_cert, self_signed_leaf, Authority, Issued, KeyType, LeafSpec, PkiOptions, Role,
    Usage,
};
use crate::x509::serial_hex;

const SPIFFE: &str = "spiffe://example.org/ns/default/sa/web";
const NOW: OffsetDateTime = datetime!(2025-03-02 00:00 UTC);
/// Fixture leaves are valid exactly from `START` to `END`, so hints are predictable.
const START: OffsetDateTime = datetime!(2025-01-01 00:00 UTC);
const END: OffsetDateTime = datetime!(2025-04-01 00:00 UTC);
const LIFETIME: Duration = Duration::from_secs(90 * 86_400);

/// The subject DN the pki module gives every certificate it issues.
fn dn(cn: &str) -> String {
    format!("O=certshift test PKI, CN={cn}")
}

/// A P-256 root valid from an hour before `START` until `END`.
fn root(cn: &str) -> Authority {
    Authority::new_root(cn, KeyType::EcdsaP256, START, LIFETIME).unwrap()
}

/// A P-256 intermediate (pathLen 0) signed by `ca`, valid like `root`.
fn intermediate(ca: &Authority, cn: &str) -> Authority {
    ca.new_intermediate(cn, KeyType::EcdsaP256, START, LIFETIME)
        .unwrap()
}

fn spec(cn: &str, usage: Usage) -> LeafSpec {
    let mut spec = LeafSpec::new(cn, usage, START, LIFETIME);
    spec.not_before = START;
    assert_eq!(spec.not_after, END);
    spec
}

/// ECDSA P-256 workload cert with DNS, IP and SPIFFE URI SANs, clientAuth only.
fn leaf(ca: &Authority) -> Issued {
    let mut spec = spec("workload", Usage::Client);
    spec.names = vec!["web.default.svc".into(), "10.1.2.3".into()];
    spec.spiffe_id = Some(SPIFFE.into());
    ca.issue(&spec, KeyType::EcdsaP256).unwrap()
}

fn one(pem: &str) -> CertReport {
    let mut r = inspect_bytes("t.pem", pem.as_bytes(), NOW).unwrap();
    assert_eq!(r.certificates.len(), 1);
    assert!(
        r.chain.is_none(),
        "a single certificate has no chain verdict"
    );
    r.certificates.remove(0)
}

#[test]
fn leaf_reports_spiffe_id_sans_usages_and_issuer() {
    let ca = root("certshift test CA");
    let issued = leaf(&ca);
    let c = one(&issued.cert_pem());
    assert_eq!(c.subject, dn("workload"));
    assert_eq!(c.issuer, dn("certshift test CA"));
    assert_eq!(c.spiffe_id.as_deref(), Some(SPIFFE));
    assert_eq!(c.sans.dns, ["web.default.svc"]);
    assert_eq!(c.sans.ip, ["10.1.2.3"]);
    assert_eq!(c.sans.uri, [SPIFFE]);
    assert!(c.sans.email.is_empty());
    assert_eq!(c.extended_key_usage, ["clientAuth"]);
    assert_eq!(c.key_usage, ["digitalSignature"]);
    assert!(!c.is_ca && !c.self_signed);
    assert_eq!(c.path_len, None);
    assert_eq!(c.key.algorithm, "ECDSA");
    assert_eq!(c.key.size_bits, 256);
    assert_eq!(c.key.curve.as_deref(), Some("P-256"));
    assert_eq!(c.signature_algorithm, "ecdsa-with-SHA256");
    assert_eq!(c.not_before, "2025-01-01T00:00:00Z");
    assert_eq!(c.not_after, "2025-04-01T00:00:00Z");
    // The serial the issuer recorded (what a CRL names), as colon-free hex.
    assert_eq!(c.serial, serial_hex(&issued.serial.to_bytes()));
    assert!(
        c.serial.len() == 32 && c.serial.chars().all(|ch| ch.is_ascii_hexdigit()),
        "{}",
        c.serial
    );
}

#[test]
fn serial_drops_der_sign_padding_and_email_sans_are_listed() {
    // Raw rcgen: pki cannot pick a serial (8A01FF needs sign padding) or add an e-mail SAN.
    let mut p = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    p.serial_number = Some(rcgen::SerialNumber::from_slice(&[0x8A, 0x01, 0xFF]));
    p.subject_alt_names = vec![rcgen::SanType::Rfc822Name(
        "ops@example.org".try_into().unwrap(),
    )];
    let key = KeyType::EcdsaP256.generate().unwrap();
    let cert = p.self_signed(&key).unwrap();
    let (_, parsed) = X509Certificate::from_der(cert.der()).unwrap();
    assert_eq!(
        parsed.raw_serial(),
        [0x00, 0x8A, 0x01, 0xFF],
        "the fixture must carry a DER sign-padding byte"
    );

    let report = inspect_bytes("e.pem", cert.pem().as_bytes(), NOW).unwrap();
    let c = &report.certificates[0];
    // The DER sign-padding byte before 0x8A must not show up.
    assert_eq!(c.serial, "8A01FF");
    assert_eq!(c.sans.email, ["ops@example.org"]);
    assert!(c.sans.dns.is_empty() && c.sans.ip.is_empty() && c.sans.uri.is_empty());
    assert_eq!(c.spiffe_id, None);
    let text = render_text(&report);
    for needle in [
        "  emails:         ops@example.org\n",
        "  serial:         8A01FF\n",
    ] {
        assert!(text.contains(needle), "missing {needle:?} in:\n{text}");
    }
}

#[test]
fn ca_reports_basic_constraints_and_cert_signing_usage() {
    let ca = root("root");
    let c = one(&pem_cert(&ca.cert));
    assert!(c.is_ca && c.self_signed);
    assert_eq!(c.path_len, None, "a pki root is unconstrained");
    assert_eq!(c.key_usage, ["digitalSignature", "keyCertSign", "cRLSign"]);
    assert!(c.extended_key_usage.is_empty());
    assert_eq!(c.spiffe_id, None);

    let c = one(&pem_cert(&intermediate(&ca, "issuing").cert));
    assert!(c.is_ca && !c.self_signed);
    assert_eq!(c.path_len, Some(0));
    assert_eq!(c.issuer, dn("root"));
    assert_eq!(c.key_usage, ["digitalSignature", "keyCertSign", "cRLSign"]);
    assert!(c.extended_key_usage.is_empty());
    assert_eq!(c.spiffe_id, None);
}

#[test]
fn rsa_ecdsa_p384_and_ed25519_keys_are_identified_with_sizes() {
    let cert = |cn, key_type| {
        let issued = self_signed_leaf(&spec(cn, Usage::Server), key_type).unwrap();
        one(&issued.cert_pem())
    };
    let rsa = cert("rsa", KeyType::Rsa2048);
    assert_eq!(rsa.key.algorithm, "RSA");
    assert_eq!(rsa.key.size_bits, 2048);
    assert_eq!(rsa.key.curve, None);
    assert_eq!(rsa.signature_algorithm, "sha256WithRSAEncryption");
    assert!(rsa.self_signed && !rsa.is_ca);
    assert_eq!(rsa.extended_key_usage, ["serverAuth"]);

    let ed = cert("ed", KeyType::Ed25519);
    assert_eq!(ed.key.algorithm, "Ed25519");
    assert_eq!(ed.key.size_bits, 256);
    assert_eq!(ed.key.curve, None);
    assert_eq!(ed.signature_algorithm, "ed25519");

    let p384 = cert("p384", KeyType::EcdsaP384);
    assert_eq!(p384.key.algorithm, "ECDSA");
    assert_eq!(p384.key.size_bits, 384);
    assert_eq!(p384.key.curve.as_deref(), Some("P-384"));
    assert_eq!(p384.signature_algorithm, "ecdsa-with-SHA384");
}

#[test]
fn validity_state_and_hint_follow_now() {
    let issued = self_signed_leaf(&spec("v", Usage::Client), KeyType::EcdsaP256).unwrap();
    let pem = issued.cert_pem();
    let at = |now| {
        inspect_bytes("v.pem", pem.as_bytes(), now)
            .unwrap()
            .certificates[0]
            .clone()
    };

    let c = at(NOW);
    assert_eq!(c.not_before, "2025-01-01T00:00:00Z");
    assert_eq!(c.not_after, "2025-04-01T00:00:00Z");
    assert_eq!(c.validity.state, ValidityState::Valid);
    assert_eq!(c.validity.hint, "valid for 30 days");

    let expired = at(datetime!(2025-04-04 00:00 UTC)).validity;
    assert_eq!(expired.state, ValidityState::Expired);
    assert_eq!(expired.hint, "expired 3 days ago");

    let early = at(datetime!(2024-12-31 19:00 UTC)).validity;
    assert_eq!(early.state, ValidityState::NotYetValid);
    assert_eq!(early.hint, "not valid for another 5 hours");

    // RFC 5280: notBefore and notAfter themselves are inside the validity period.
    let edge = at(datetime!(2025-04-01 00:00 UTC)).validity;
    assert_eq!(edge.state, ValidityState::Valid);
    assert_eq!(at(START).validity.state, ValidityState::Valid);
    let after = at(datetime!(2025-04-01 00:00:01 UTC)).validity;
    assert_eq!(after.state, ValidityState::Expired);
    assert_eq!(after.hint, "expired 1 second ago");
}

#[test]
fn durations_use_the_coarsest_unit_with_at_least_two() {
    let d = time::Duration::seconds;
    assert_eq!(human_duration(d(2 * 86_400)), "2 days");
    assert_eq!(human_duration(d(2 * 86_400 - 1)), "47 hours");
    assert_eq!(human_duration(d(2 * 3_600 - 1)), "119 minutes");
    assert_eq!(human_duration(d(119)), "119 seconds");
    assert_eq!(human_duration(d(1)), "1 second");
}

#[test]
fn fingerprint_is_sha256_of_der_and_der_input_is_accepted() {
    let ca = root("ca");
    let issued = leaf(&ca);
    let der: &[u8] = issued.cert.as_ref();
    let expected: Vec<String> = Sha256::digest(der)
        .iter()
        .map(|b| format!("{b:02X}"))
        .collect();

    let from_der = inspect_bytes("leaf.der", der, NOW).unwrap();
    let from_pem = one(&issued.cert_pem());
    assert_eq!(from_der.certificates.len(), 1);
    let c = &from_der.certificates[0];
    assert_eq!(c.sha256_fingerprint, expected.join(":"));
    assert_eq!(from_pem.sha256_fingerprint, c.sha256_fingerprint);
    assert_eq!(c.spiffe_id.as_deref(), Some(SPIFFE));
}

#[test]
fn chain_order_is_checked_both_ways() {
    let ca = root("issuing CA");
    let leaf_pem = leaf(&ca).cert_pem();
    let ca_pem = pem_cert(&ca.cert);

    let good = inspect_bytes("chain.pem", format!("{leaf_pem}{ca_pem}").as_bytes(), NOW).unwrap();
    let chain = good.chain.unwrap();
    assert!(chain.leaf_to_root, "{}", chain.detail);

    let bad = inspect_bytes("chain.pem", format!("{ca_pem}{leaf_pem}").as_bytes(), NOW).unwrap();
    let chain = bad.chain.unwrap();
    assert!(!chain.leaf_to_root);
    assert!(
        chain
            .detail
            .starts_with("certificate 1's issuer is not certificate 2's subject"),
        "{}",
        chain.detail
    );
    assert!(chain.detail.contains("reverse it"), "{}", chain.detail);
}

#[test]
fn three_certificate_chain_order_names_the_break() {
    let ca = root("root");
    let mid = intermediate(&ca, "intermediate");
    let [leaf_pem, mid_pem, ca_pem] =
        [leaf(&mid).cert, mid.cert.clone(), ca.cert.clone()].map(|der| pem_cert(&der));
    let chain_of = |pem: String| {
        inspect_bytes("chain.pem", pem.as_bytes(), NOW)
            .unwrap()
            .chain
            .unwrap()
    };

    let good = chain_of(format!("{leaf_pem}{mid_pem}{ca_pem}"));
    assert!(good.leaf_to_root, "{}", good.detail);

    let reversed = chain_of(format!("{ca_pem}{mid_pem}{leaf_pem}"));
    assert!(!reversed.leaf_to_root);
    assert!(
        reversed.detail.contains("reverse it"),
        "{}",
        reversed.detail
    );

    // Neither order works: the verdict names the first break and gives no advice.
    let shuffled = chain_of(format!("{leaf_pem}{ca_pem}{mid_pem}"));
    assert!(!shuffled.leaf_to_root);
    assert_eq!(
        shuffled.detail,
        "certificate 1's issuer is not certificate 2's subject"
    );
}

#[test]
fn chain_with_same_issuer_name_but_other_key_is_not_in_order() {
    let old_ca = root("rotating CA");
    let new_ca = root("rotating CA");
    let leaf_pem = leaf(&new_ca).cert_pem();
    let chain_with = |ca: &Authority| {
        let bundle = format!("{leaf_pem}{}", pem_cert(&ca.cert));
        inspect_bytes("b.pem", bundle.as_bytes(), NOW)
            .unwrap()
            .chain
            .unwrap()
    };
    // Same names both times: only the key identifiers tell the two apart.
    let right = chain_with(&new_ca);
    assert!(right.leaf_to_root, "{}", right.detail);
    let chain = chain_with(&old_ca);
    assert!(!chain.leaf_to_root);
    assert!(
        chain.detail.contains("authority key identifier"),
        "{}",
        chain.detail
    );
}

#[test]
fn non_certificates_are_rejected_naming_the_file() {
    let key = KeyType::EcdsaP256.generate().unwrap();
    let key_pem = key_pem(&key);
    let cases: [(&str, &[u8], &str); 4] = [
        ("./x/tls.key", key_pem.as_bytes(), "PRIVATE KEY PEM block"),
        (
            "junk.bin",
            b"\x01\x02 definitely not a cert",
            "neither PEM nor DER",
        ),
        ("empty.crt", b"  \n", "empty"),
        (
            "key.der",
            &key.serialize_der(),
            "DER data that is not a certificate",
        ),
    ];
    for (name, bytes, why) in cases {
        let err = inspect_bytes(name, bytes, NOW).unwrap_err();
        assert!(
            matches!(err, InspectError::NotACertificate { .. }),
            "{err:?}"
        );
        let msg = err.to_string();
        assert!(msg.starts_with(&format!("{name}: ")), "{msg}");
        assert!(msg.contains(why), "{msg}");
    }
}

#[test]
fn broken_certificate_block_reports_its_position() {
    let ca_pem = pem_cert(&root("ca").cert);
    let bogus = "-----BEGIN CERTIFICATE-----\nMAMCAQE=\n-----END CERTIFICATE-----\n";
    let err = inspect_bytes("chain.pem", format!("{ca_pem}{bogus}").as_bytes(), NOW).unwrap_err();
    match err {
        InspectError::Parse { name, index, .. } => {
            assert_eq!((name.as_str(), index), ("chain.pem", 2));
        }
        other => panic!("expected Parse, got {other:?}"),
    }
}

#[test]
fn inspect_file_reads_a_generated_pki_and_names_missing_files() {
    let dir = tempfile::tempdir().unwrap();
    let opts = PkiOptions {
        intermediate: true,
        ..PkiOptions::default()
    };
    let manifest = crate::pki::init(dir.path(), &opts, false).unwrap();

    let ca = manifest.find(Role::Ca, "ca").unwrap();
    let path = dir.path().join(&ca.cert);
    let report = inspect_file(&path).unwrap();
    assert_eq!(report.file, path.display().to_string());
    assert!(report.chain.is_none());
    let c = &report.certificates[0];
    // `certshift test root CA` and a suffix unique to this PKI.
    let prefix = dn("certshift test root CA ");
    let suffix = c
        .subject
        .strip_prefix(&prefix)
        .unwrap_or_else(|| panic!("{}", c.subject));
    assert!(
        suffix.len() == 8 && suffix.bytes().all(|b| b.is_ascii_hexdigit()),
        "{suffix}"
    );
    assert_eq!(c.validity.state, ValidityState::Valid);
    // What inspect reports is what the manifest promises.
    assert_eq!(c.serial, ca.serial);
    assert_eq!(c.sha256_fingerprint, ca.sha256);
    assert_eq!(c.not_after, ca.not_after);

    let server = manifest.find(Role::Server, "server").unwrap();
    let report = inspect_file(&dir.path().join(&server.cert)).unwrap();
    assert_eq!(report.certificates.len(), 2, "leaf then intermediate");
    let chain = report.chain.unwrap();
    assert!(chain.leaf_to_root, "{}", chain.detail);
    let c = &report.certificates[0];
    assert_eq!(c.spiffe_id, server.spiffe_id);
    assert_eq!(c.serial, server.serial);
    assert_eq!(c.extended_key_usage, ["serverAuth"]);
    assert_eq!(
        report.certificates[1].subject,
        dn("certshift test intermediate CA")
    );

    let missing = dir.path().join("nope.crt");
    let err = inspect_file(&missing).unwrap_err();
    assert!(matches!(err, InspectError::Read { .. }));
    assert!(err.to_string().contains("nope.crt"), "{err}");
}

#[test]
fn json_field_names_are_stable() {
    let ca = root("ca");
    let pem = format!("{}{}", leaf(&ca).cert_pem(), pem_cert(&ca.cert));
    let json = serde_json::to_value(inspect_bytes("c.pem", pem.as_bytes(), NOW).unwrap()).unwrap();
    assert_eq!(json["chain"]["leaf_to_root"], true);
    let c = &json["certificates"][0];
    assert_eq!(c["spiffe_id"], SPIFFE);
    assert_eq!(c["validity"]["state"], "valid");
    assert_eq!(c["key"]["curve"], "P-256");
    assert_eq!(c["sans"]["ip"][0], "10.1.2.3");
    let mut keys: Vec<&str> = c.as_object().unwrap().keys().map(String::as_str).collect();
    keys.sort_unstable();
    assert_eq!(
        keys,
        [
            "extended_key_usage",
            "is_ca",
            "issuer",
            "key",
            "key_usage",
            "not_after",
            "not_before",
            "path_len",
            "sans",
            "self_signed",
            "serial",
            "sha256_fingerprint",
            "signature_algorithm",
            "spiffe_id",
            "subject",
            "validity",
        ]
    );
}

#[test]
fn text_rendering_labels_roles_spiffe_id_and_chain() {
    let ca = root("root CA");
    let mid = intermediate(&ca, "issuing CA");
    let issued = leaf(&mid);
    let pem: String = [&issued.cert, &mid.cert, &ca.cert]
        .into_iter()
        .map(pem_cert)
        .collect();
    let text = render_text(&inspect_bytes("chain.pem", pem.as_bytes(), NOW).unwrap());
    let serial = format!(
        "  serial:         {}\n",
        serial_hex(&issued.serial.to_bytes())
    );
    for needle in [
        "chain.pem: 3 certificates",
        "certificate 1 of 3 (leaf)",
        "certificate 2 of 3 (intermediate CA)",
        "certificate 3 of 3 (root CA)",
        &format!("  spiffe id:      {SPIFFE}\n"),
        "  status:         OK, valid for 30 days\n",
        "  key:            ECDSA 256 bits (P-256)\n",
        "  ca:             no\n",
        "  ca:             yes (path length 0)\n",
        "  ca:             yes (path length unlimited)\n",
        &serial,
        "  chain order:    leaf-to-root:",
    ] {
        assert!(text.contains(needle), "missing {needle:?} in:\n{text}");
    }
}
