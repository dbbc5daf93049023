//! Property tests of the parsers of untrusted input: credential files (PEM
//! and DER), policy TOML, the proxy's config TOML and `--present` specs.
//! Whatever the bytes, a parser returns (never panics), and its error names
//! the file or the flag; well-formed input round-trips. Cases are small and
//! few (256 per property) so the whole file runs in a few seconds in CI.

use std::path::Path;
use std::sync::OnceLock;

use certshift::creds;
use certshift::plan::{Plan, Presented};
use certshift::serve::Policy;
use proptest::prelude::*;

fn config() -> ProptestConfig {
    ProptestConfig {
        cases: 256,
        // A failure is reported with its input; no files of regressions.
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

/// One self-signed certificate and its key, PEM: the valid input the
/// mutations start from.
fn cert_and_key() -> &'static (String, String) {
    static PAIR: OnceLock<(String, String)> = OnceLock::new();
    PAIR.get_or_init(|| {
        let ck = rcgen::generate_simple_self_signed(vec!["svc.example".into()]).expect("rcgen");
        (ck.cert.pem(), ck.signing_key.serialize_pem())
    })
}

const CERT_FILE: &str = "/run/secrets/svc/tls.crt";
const KEY_FILE: &str = "/run/secrets/svc/tls.key";

proptest! {
    #![proptest_config(config())]

    #[test]
    fn any_bytes_as_a_chain_or_key_error_names_the_file(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        if let Err(e) = creds::parse_chain(Path::new(CERT_FILE), &bytes) {
            prop_assert!(e.to_string().contains(CERT_FILE), "{}", e);
        }
        if let Err(e) = creds::parse_key(Path::new(KEY_FILE), &bytes) {
            prop_assert!(e.to_string().contains(KEY_FILE), "{}", e);
        }
        let _ = certshift::x509::pem_labels(&bytes);
        let _ = certshift::x509::looks_like_pem(&bytes);
    }

    #[test]
    fn a_cut_or_damaged_certificate_is_refused_by_name_or_still_whole(
        cut in 0usize..2000,
        flip in proptest::option::of((0usize..2000, any::<u8>())),
    ) {
        let (pem, _) = cert_and_key();
        let mut bytes = pem.as_bytes().to_vec();
        bytes.truncate(cut.min(bytes.len()));
        if let Some((at, b)) = flip {
            if let Some(slot) = bytes.get_mut(at) {
                *slot = b;
            }
        }
        match creds::parse_chain(Path::new(CERT_FILE), &bytes) {
            Ok(chain) => prop_assert!(!chain.is_empty()),
            Err(e) => {
                let e = e.to_string();
                prop_assert!(e.contains(CERT_FILE), "{}", e);
                prop_assert!(!has_byte_list(&e), "bytes instead of text: {}", e);
            }
        }
    }

    #[test]
    fn policy_text_parses_or_names_its_source(text in "(?s).{0,200}") {
        if let Err(e) = Policy::from_toml_str("policy.toml", &text) {
            prop_assert!(e.to_string().contains("policy.toml"), "{}", e);
        }
    }

    #[test]
    fn policy_rules_of_any_strings_never_panic(
        principals in proptest::collection::vec("[ -~]{0,20}", 0..3),
        paths in proptest::collection::vec("[ -~]{0,20}", 0..3),
        methods in proptest::collection::vec("[A-Za-z*]{0,8}", 0..3),
    ) {
        let list = |v: &[String]| {
            let items: Vec<String> = v.iter().map(|s| format!("{s:?}")).collect();
            format!("[{}]", items.join(", "))
        };
        let text = format!(
            "[[rules]]\nprincipals = {}\npaths = {}\nmethods = {}\n",
            list(&principals),
            list(&paths),
            list(&methods)
        );
        if let Err(e) = Policy::from_toml_str("policy.toml", &text) {
            prop_assert!(e.to_string().contains("policy.toml"), "{}", e);
        }
    }

    #[test]
    fn a_proxy_config_error_never_shows_the_admin_token(
        secret in "[A-Za-z0-9]{16,24}",
        before in "(?s).{0,60}",
        after in "(?s).{0,60}",
        quote in prop_oneof![Just("\""), Just(""), Just("'''"), Just("\"\"\"")],
    ) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("proxy.toml");
        std::fs::write(&path, format!("{before}\nadmin_token = {quote}{secret}\n{after}")).unwrap();
        let args = certshift::proxy::ProxyArgs::from_flags(["--config", path.to_str().unwrap()]);
        if let Ok(args) = args {
            if let Err(e) = args.into_config() {
                let text = format!("{e:#}");
                prop_assert!(!text.contains(&secret), "the token is shown: {}", text);
            }
        }
    }

    #[test]
    fn any_present_spec_parses_or_names_its_flag(spec in "[ -~]{0,40}", seed in any::<u64>()) {
        if let Err(e) = Plan::parse_weights(&spec, seed) {
            prop_assert!(e.to_string().contains("--present"), "{}", e);
        }
        if let Err(e) = Plan::parse_sequence(&spec) {
            prop_assert!(e.to_string().contains("--present"), "{}", e);
        }
        let _ = spec.parse::<Presented>();
    }

    #[test]
    fn well_formed_present_specs_round_trip(
        picks in proptest::collection::vec((0usize..64, 1u32..100), 1..5),
        seed in any::<u64>(),
    ) {
        let names: Vec<Presented> = Presented::all().collect();
        let mut items: Vec<(String, u32)> = Vec::new();
        for (i, w) in picks {
            let name = names[i % names.len()].to_string();
            if !items.iter().any(|(n, _)| *n == name) {
                items.push((name, w));
            }
        }
        let spec: Vec<String> = items.iter().map(|(n, w)| format!("{n}={w}")).collect();
        let plan = Plan::parse_weights(&spec.join(","), seed);
        prop_assert!(plan.is_ok(), "{:?}: {:?}", spec, plan.err());
        let sequence: Vec<&str> = items.iter().map(|(n, _)| n.as_str()).collect();
        prop_assert!(Plan::parse_sequence(&sequence.join(",")).is_ok(), "{:?}", sequence);
        for (n, _) in &items {
            let back: Presented = n.parse().map_err(|e| TestCaseError::fail(format!("{n}: {e}")))?;
            prop_assert_eq!(&back.to_string(), n);
        }
    }
}

/// `[45, 45, 45` and the like: a PEM marker printed as its bytes.
fn has_byte_list(s: &str) -> bool {
    s.split('[').skip(1).any(|rest| {
        let mut parts = rest.splitn(3, ", ");
        let numeric = |p: Option<&str>| {
            p.is_some_and(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()))
        };
        numeric(parts.next()) && numeric(parts.next())
    })
}
