//! Unit tests of target parsing and judging; the audit against real
//! services is in tests/audit*.rs.

use super::target::{parse_expect, parse_statuses, Target};
use super::*;

#[test]
fn targets_parse_as_urls_or_host_port() {
    let t = Target::parse("https://127.0.0.1:8443/api/x").unwrap();
    assert_eq!(
        (t.host.as_str(), t.port, t.path.as_deref()),
        ("127.0.0.1", 8443, Some("/api/x"))
    );
    let t = Target::parse("https://svc.internal").unwrap();
    assert_eq!(
        (t.host.as_str(), t.port, t.path),
        ("svc.internal", 443, None)
    );
    let t = Target::parse("[::1]:9443").unwrap();
    assert_eq!((t.host.as_str(), t.port), ("::1", 9443));
    let t = Target::parse("https://[::1]/p").unwrap();
    assert_eq!(
        (t.host.as_str(), t.port, t.path.as_deref()),
        ("::1", 443, Some("/p"))
    );
    let e = Target::parse("http://x:80").unwrap_err().to_string();
    assert!(e.contains("https://"), "{e}");
    assert!(Target::parse("localhost").is_err());
    assert!(Target::parse("ftp://x:1").is_err());
}

#[test]
fn expectations_and_statuses_name_what_is_wrong() {
    assert_eq!(
        parse_expect("revoked=skip").unwrap(),
        ("revoked".into(), Expected::Skip)
    );
    let e = parse_expect("revokd=skip").unwrap_err();
    assert!(e.contains("unknown check") && e.contains("revoked"), "{e}");
    assert!(parse_expect("revoked=maybe")
        .unwrap_err()
        .contains("accept, reject"));
    assert_eq!(parse_statuses("403, 401").unwrap(), vec![403, 401]);
    assert!(parse_statuses("40x").is_err());
    assert!(parse_statuses("99").is_err());
}

#[test]
fn a_targets_file_is_lines_or_toml() {
    let dir = tempfile::tempdir().unwrap();
    let lines = dir.path().join("t.txt");
    std::fs::write(&lines, "# ours\nhttps://a:1/x\n\n127.0.0.1:2  # comment\n").unwrap();
    let t = target::read_file(&lines).unwrap();
    assert_eq!(t.len(), 2);
    assert_eq!((t[1].host.as_str(), t[1].port), ("127.0.0.1", 2));
    let toml = dir.path().join("t.toml");
    std::fs::write(
        &toml,
        "[[target]]\nurl = \"https://a:1/x\"\nidentity = \"svc\"\nexpect = { revoked = \"skip\" }\n",
    )
    .unwrap();
    let t = target::read_file(&toml).unwrap();
    assert_eq!(t[0].identity.as_deref(), Some("svc"));
    assert_eq!(t[0].expect, vec![("revoked".to_string(), Expected::Skip)]);
    std::fs::write(
        &toml,
        "[[target]]\nurl = \"https://a:1\"\nexpect = { revokd = \"skip\" }\n",
    )
    .unwrap();
    let e = format!("{:#}", target::read_file(&toml).unwrap_err());
    assert!(e.contains("target #1") && e.contains("revokd"), "{e}");
    std::fs::write(
        &toml,
        "[[target]]\nurl = \"https://a:1\"\nidentiy = \"x\"\n",
    )
    .unwrap();
    let e = format!("{:#}", target::read_file(&toml).unwrap_err());
    assert!(e.contains("identiy"), "{e}");
}

#[test]
fn the_registry_has_unique_ids_and_the_sanity_check_first() {
    assert_eq!(checks()[0].id, check::SANITY);
    let mut ids: Vec<&str> = checks().iter().map(|c| c.id).collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), checks().len());
    for id in [
        "no-client-cert",
        "untrusted-ca",
        "self-signed",
        "expired",
        "not-yet-valid",
        "revoked",
        "wrong-eku",
        "ca-as-leaf",
        "missing-intermediate",
        "wrong-trust-domain",
        "no-spiffe-id",
        "other-identity",
        "plaintext",
        "resumption-after-expiry",
        "clock-skew",
    ] {
        assert!(check::find(id).is_some(), "{id} is not registered");
    }
    let x509 = check::Defaults {
        profile: Profile::X509,
        max_skew: false,
        strict: false,
    };
    let spiffe = check::Defaults {
        profile: Profile::Spiffe,
        max_skew: false,
        strict: false,
    };
    let wtd = check::find("wrong-trust-domain").unwrap();
    assert_eq!(
        ((wtd.default)(spiffe), (wtd.default)(x509)),
        (Expected::Reject, Expected::Info)
    );
}

fn seen(label: &str, outcome: crate::tls::Outcome, decision: experiment::Decision) -> judge::Seen {
    judge::Seen {
        label: label.into(),
        layer: judge::layer(&outcome),
        outcome,
        decision,
        resumed: None,
    }
}

#[test]
fn a_refusal_for_another_cause_is_a_warning_and_evidence_groups_agreeing_attempts() {
    use crate::tls::Outcome;
    use experiment::Decision::Refused;
    let expired = check::find("expired").unwrap();
    let right = [seen(
        "1.3",
        Outcome::Alert("certificate_expired".into()),
        Refused,
    )];
    assert_eq!(judge::wrong_cause(expired, &right), None);
    let wrong = [
        seen("1.3", Outcome::Alert("unknown_ca".into()), Refused),
        seen("1.2", Outcome::Alert("unknown_ca".into()), Refused),
    ];
    let w = judge::wrong_cause(expired, &wrong).expect("a warning");
    assert!(
        w.contains("unknown_ca") && w.contains("certificate_expired"),
        "{w}"
    );
    // A generic alert or an HTTP refusal names no cause: no warning.
    let generic = [seen(
        "1.3",
        Outcome::Alert("bad_certificate".into()),
        Refused,
    )];
    assert_eq!(judge::wrong_cause(expired, &generic), None);
    assert_eq!(
        judge::wrong_cause(expired, &[seen("1.3", Outcome::Http(400), Refused)]),
        None
    );
    assert_eq!(
        judge::evidence(&wrong),
        "alert:unknown_ca (tls) on 1.3, 1.2"
    );
    let mixed = [
        seen("1.3", Outcome::Http(403), Refused),
        seen("1.2", Outcome::Reset, Refused),
    ];
    assert_eq!(
        judge::evidence(&mixed),
        "1.3: http:403 (http); 1.2: reset (reset)"
    );
}

#[test]
fn every_mutation_is_a_check_after_the_experiments_held_to_its_verdict_by_its_mandate() {
    use crate::pki::{Mandate, MUTATIONS};
    let all = checks();
    let first = all.len() - MUTATIONS.len();
    assert!(all[..first]
        .iter()
        .all(|c| c.category != Category::Mutation));
    let defaults = |profile, strict| check::Defaults {
        profile,
        max_skew: false,
        strict,
    };
    for (c, m) in all[first..].iter().zip(MUTATIONS) {
        assert_eq!(c.id, format!("mutation:{}", m.name));
        assert_eq!(
            (c.category, c.about, c.hint),
            (Category::Mutation, m.changes, m.rule)
        );
        assert!(matches!(c.run, check::Run::Mutation(r) if r.name == m.name));
        let verdict = match m.expect {
            crate::pki::Expect::Accept => Expected::Accept,
            crate::pki::Expect::Reject => Expected::Reject,
        };
        let under = |profile, strict| (c.default)(defaults(profile, strict));
        let (spiffe, x509, strict) = (
            under(Profile::Spiffe, false),
            under(Profile::X509, false),
            under(Profile::X509, true),
        );
        match m.mandate {
            Mandate::Validator => assert_eq!((spiffe, x509, strict), (verdict, verdict, verdict)),
            Mandate::Svid => assert_eq!((spiffe, x509), (verdict, Expected::Info), "{}", m.name),
            Mandate::Issuer | Mandate::Crypto => {
                assert_eq!(
                    (spiffe, x509, strict),
                    (Expected::Info, Expected::Info, verdict)
                )
            }
        }
    }
    let list = output::check_list();
    assert!(
        list.contains("mutation:bad-signature") && list.contains("mutation"),
        "{list}"
    );
}
