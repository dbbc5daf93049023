//! The plan's unit tests: parsing, picking, the expected verdicts.
use super::*;
use crate::pki::{Expect, MUTATIONS};

fn weights(spec: &str, seed: u64) -> Plan {
    Plan::parse_weights(spec, seed).unwrap()
}

fn picks(plan: &Plan, range: std::ops::Range<u64>) -> Vec<Presented> {
    range.map(|n| plan.pick(n)).collect()
}

fn v(variant: Variant) -> Presented {
    Presented::Variant(variant)
}

fn mutation(name: &str) -> Presented {
    Presented::Mutation(MutationId::find(name).unwrap())
}

#[test]
fn parse_weights_keeps_names_weights_order_and_seed() {
    let plan = weights("valid=90,expired=5,untrusted-ca=5,none=0", 42);
    assert_eq!(
        plan.items(),
        vec![
            (v(Variant::Valid), 90),
            (v(Variant::Expired), 5),
            (v(Variant::UntrustedCa), 5),
            (Presented::None, 0),
        ]
    );
    assert_eq!(plan.seed(), Some(42));
}

#[test]
fn whitespace_around_items_names_and_weights_is_tolerated() {
    let spaced = weights("  valid = 90 ,\texpired=5 , untrusted-ca =5  ", 7);
    assert_eq!(spaced, weights("valid=90,expired=5,untrusted-ca=5", 7));
    let sequence = Plan::parse_sequence(" valid , revoked,none ").unwrap();
    assert_eq!(
        sequence,
        Plan::parse_sequence("valid,revoked,none").unwrap()
    );
}

#[test]
fn unknown_name_names_the_flag_and_lists_every_known_name() {
    let err = Plan::parse_weights("valid=90,expird=10", 1).unwrap_err();
    let PlanError::UnknownName { flag, name, known } = &err else {
        panic!("{err:?}")
    };
    assert_eq!((*flag, name.as_str()), ("--present", "expird"));
    assert_eq!(known.len(), Variant::ALL.len() + 1);
    let message = err.to_string();
    for p in Presented::all().take(Variant::ALL.len() + 1) {
        assert!(known.contains(&p.name()), "{p}");
        assert!(message.contains(p.name()), "{message}");
    }
    assert!(message.starts_with("--present: "), "{message}");
    // The mutations are summed up, not listed: how to name one, and the group.
    assert!(
        message.contains("mutation:<name> for any of the 26 catalogue mutations")
            && message.contains("`mutations`")
            && !message.contains("mutation:serial-21-bytes"),
        "{message}"
    );

    let err = Plan::parse_sequence("valid,Revoked").unwrap_err();
    assert!(
        matches!(&err, PlanError::UnknownName { flag: "--present-sequence", name, .. } if name == "Revoked"),
        "{err:?}"
    );
}

#[test]
fn malformed_items_name_the_item_and_the_expected_form() {
    for item in [
        "valid",
        "valid=",
        "=5",
        "valid=abc",
        "valid=-1",
        "valid=1.5",
        "valid=4294967296",
        "",
    ] {
        let spec = format!("expired=5,{item}");
        match Plan::parse_weights(&spec, 1) {
            Err(PlanError::Malformed {
                flag: "--present",
                item: got,
                expected: "NAME=WEIGHT",
            }) => assert_eq!(got, item, "{spec}"),
            other => panic!("{spec}: {other:?}"),
        }
    }
    let message = Plan::parse_weights("valid:90", 1).unwrap_err().to_string();
    assert!(
        message.contains("\"valid:90\"") && message.contains("NAME=WEIGHT"),
        "{message}"
    );
    // The largest weight is accepted, so the refusal above is overflow.
    assert!(Plan::parse_weights("valid=4294967295,expired=4294967295", 1).is_ok());

    for item in ["valid=90", ""] {
        let spec = format!("revoked,{item}");
        assert!(
            matches!(Plan::parse_sequence(&spec), Err(PlanError::Malformed { flag: "--present-sequence", item: got, expected: "NAME" }) if got == item),
            "{spec}"
        );
    }
}

#[test]
fn a_name_given_twice_is_refused() {
    let err = Plan::parse_weights("valid=90, expired=5, valid=5", 1).unwrap_err();
    assert_eq!(
        err,
        PlanError::Duplicate {
            name: "valid".into()
        }
    );
    assert!(err.to_string().contains("more than once"), "{err}");
    // In a sequence a repeat is the point: it sets the proportions.
    assert!(Plan::parse_sequence("valid,valid,revoked").is_ok());
}

#[test]
fn all_zero_weights_are_refused() {
    let err = Plan::parse_weights("valid=0,expired=0", 1).unwrap_err();
    assert_eq!(err, PlanError::ZeroTotal);
    assert!(err.to_string().contains("positive weight"), "{err}");
}

#[test]
fn empty_specs_are_refused_naming_their_flag() {
    for spec in ["", "  "] {
        assert_eq!(
            Plan::parse_sequence(spec),
            Err(PlanError::Empty {
                flag: "--present-sequence"
            })
        );
        assert_eq!(
            Plan::parse_weights(spec, 1),
            Err(PlanError::Empty { flag: "--present" })
        );
    }
    let message = Plan::parse_sequence("").unwrap_err().to_string();
    assert!(
        message.contains("--present-sequence valid,revoked,none"),
        "{message}"
    );
}

#[test]
fn same_seed_gives_the_same_first_10000_picks() {
    let spec = "valid=90,expired=5,untrusted-ca=3,none=2";
    let first = picks(&weights(spec, 42), 0..10_000);
    assert_eq!(first, picks(&weights(spec, 42), 0..10_000));
    assert_eq!(first, picks(&weights(spec, 42).clone(), 0..10_000));
}

#[test]
fn different_seeds_give_unrelated_sequences() {
    // With 50/50 weights, unrelated sequences disagree on about half of
    // the picks (500 ± 16 of 1,000); a seed ignored or applied as a shift
    // would disagree on none, or on a structured fraction.
    let spec = "valid=1,revoked=1";
    for (a, b) in [(1, 2), (42, 43), (0, u64::MAX)] {
        let (pa, pb) = (
            picks(&weights(spec, a), 0..1_000),
            picks(&weights(spec, b), 0..1_000),
        );
        let differ = pa.iter().zip(&pb).filter(|(x, y)| x != y).count();
        assert!(
            (420..=580).contains(&differ),
            "seeds {a}/{b}: {differ} differ"
        );
        let shifted = pa[1..].iter().zip(&pb).filter(|(x, y)| x != y).count();
        assert!(
            (420..=580).contains(&shifted),
            "seeds {a}/{b}: shifted {shifted}"
        );
    }
}

#[test]
fn pick_order_and_threads_do_not_change_choices() {
    let plan = weights("valid=80,expired=10,none=10", 9);
    let forward = picks(&plan, 0..10_000);
    let mut reverse: Vec<Presented> = (0..10_000).rev().map(|n| plan.pick(n)).collect();
    reverse.reverse();
    assert_eq!(forward, reverse);

    // Four workers, each taking every fourth connection, as the proxy's
    // tasks do.
    let mut threaded = vec![Presented::None; 10_000];
    std::thread::scope(|s| {
        let handles: Vec<_> = (0..4u64)
            .map(|k| {
                let plan = &plan;
                s.spawn(move || {
                    (k..10_000)
                        .step_by(4)
                        .map(|n| (n, plan.pick(n)))
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        for h in handles {
            for (n, p) in h.join().unwrap() {
                threaded[n as usize] = p;
            }
        }
    });
    assert_eq!(forward, threaded);
}

#[test]
fn the_pick_sequence_is_stable_across_releases() {
    // A logged seed must reproduce a past run. SplitMix64's reference
    // outputs (Vigna's splitmix64.c, state 0), then this plan's choices.
    assert_eq!(
        (0..3).map(|n| splitmix64_nth(0, n)).collect::<Vec<_>>(),
        [0xe220a8397b1dcdaf, 0x6e789e6aa1b965f4, 0x06c45d188009454f]
    );
    let names: Vec<&str> = picks(&weights("valid=50,expired=25,none=25", 42), 0..16)
        .into_iter()
        .map(Presented::name)
        .collect();
    assert_eq!(
        names,
        [
            "expired", "valid", "valid", "valid", "valid", "none", "valid", "none", "valid",
            "expired", "valid", "valid", "expired", "expired", "expired", "valid"
        ]
    );
}

#[test]
fn each_value_of_the_total_maps_to_its_weights_bucket_exactly() {
    // Exhaustive over [0, total): each item owns exactly `weight` values,
    // zero weights (first, middle, last) own none.
    let plan = weights(
        "none=0,valid=3,expired=0,revoked=1,self-signed=4,ca-as-leaf=0",
        1,
    );
    let Kind::Weights {
        items,
        cumulative,
        total,
        ..
    } = &plan.kind
    else {
        unreachable!()
    };
    let mut owned = vec![0u64; items.len()];
    for r in 0..*total {
        owned[bucket(cumulative, r)] += 1;
    }
    assert_eq!(owned, items.iter().map(|&(_, w)| w).collect::<Vec<_>>());
    assert_eq!((scale(0, *total), scale(u64::MAX, *total)), (0, total - 1));
}

#[test]
fn shares_over_100000_picks_match_the_weights() {
    // Counts are Binomial(100_000, p): the standard deviation of a share
    // is 0.095 pp at p = 0.90 and 0.069 pp at p = 0.05, so ±0.5 pp is over
    // 5 sd, while a bucket off by one unit of 100 moves a share by 1 pp.
    // Deterministic, so it cannot flake; several seeds show it is not one
    // lucky seed.
    for seed in [1, 42, 1 << 63, u64::MAX] {
        let plan = weights("valid=90,expired=5,untrusted-ca=5", seed);
        let all = picks(&plan, 0..100_000);
        for (p, w) in plan.items() {
            let share = all.iter().filter(|&&q| q == p).count() as f64 / 1_000.0;
            assert!(
                (share - w as f64).abs() <= 0.5,
                "seed {seed}: {p} {share}% for weight {w}"
            );
        }
    }
    // A 1-in-1000 chaos rate: 100 expected, sd 10.
    let rare = picks(&weights("valid=999,revoked=1", 3), 0..100_000);
    let revoked = rare.iter().filter(|&&p| p == v(Variant::Revoked)).count();
    assert!((60..=140).contains(&revoked), "{revoked}");
}

#[test]
fn a_zero_weight_is_never_picked() {
    let plan = weights("expired=0,valid=1,none=0,revoked=1,self-signed=0", 5);
    let all = picks(&plan, 0..100_000);
    assert!(all
        .iter()
        .all(|&p| p == v(Variant::Valid) || p == v(Variant::Revoked)));
    assert!(all.contains(&v(Variant::Valid)) && all.contains(&v(Variant::Revoked)));
}

#[test]
fn a_sequence_is_cycled_for_any_connection_number() {
    let plan = Plan::parse_sequence("valid,revoked,none").unwrap();
    let (valid, revoked) = (v(Variant::Valid), v(Variant::Revoked));
    assert_eq!(
        picks(&plan, 0..7),
        [
            valid,
            revoked,
            Presented::None,
            valid,
            revoked,
            Presented::None,
            valid
        ]
    );
    // u64::MAX % 3 == 0
    assert_eq!(plan.pick(u64::MAX), valid);
    assert_eq!(plan.seed(), None);
    assert!(picks(&Plan::valid_only(), 0..1_000)
        .iter()
        .all(|&p| p == valid));
    assert_eq!(Plan::default(), Plan::valid_only());
}

#[test]
fn a_sequence_reports_each_items_count_in_the_cycle() {
    let plan = Plan::parse_sequence("valid,valid,revoked,none,valid").unwrap();
    assert_eq!(
        plan.items(),
        vec![
            (v(Variant::Valid), 3),
            (v(Variant::Revoked), 1),
            (Presented::None, 1)
        ]
    );
}

#[test]
fn only_the_valid_credential_must_be_accepted() {
    assert_eq!(Presented::None.expected(), Expect::Reject);
    assert_eq!(v(Variant::Valid).expected(), Expect::Accept);
    for variant in Variant::ALL.into_iter().filter(|&x| x != Variant::Valid) {
        assert_eq!(v(variant).expected(), Expect::Reject, "{variant}");
    }
}

#[test]
fn names_round_trip_through_display_fromstr_and_serde() {
    let names: Vec<&str> = Presented::all().map(Presented::name).collect();
    assert_eq!(names[0], "none");
    let variants = Variant::ALL.len();
    assert_eq!(&names[1..=variants], Variant::ALL.map(Variant::name));
    let mutations: Vec<&str> = MUTATIONS.iter().map(|m| m.check_id).collect();
    assert_eq!(&names[variants + 1..], mutations);
    for p in Presented::all() {
        assert_eq!(p.to_string().parse::<Presented>(), Ok(p));
        let json = serde_json::to_string(&p).unwrap();
        assert_eq!(json, format!("\"{}\"", p.name()));
        assert_eq!(serde_json::from_str::<Presented>(&json).unwrap(), p);
    }
    let err = serde_json::from_str::<Presented>("\"nope\"")
        .unwrap_err()
        .to_string();
    assert!(err.contains("missing-intermediate"), "{err}");
}

#[test]
fn needs_lists_the_bad_variants_that_can_be_presented() {
    let plan = weights(
        "missing-intermediate=1,valid=90,none=5,revoked=0,expired=4",
        1,
    );
    assert_eq!(
        plan.needs(),
        [v(Variant::Expired), v(Variant::MissingIntermediate)]
    );
    let sequence = Plan::parse_sequence("ca-as-leaf,valid,self-signed,ca-as-leaf,none").unwrap();
    assert_eq!(
        sequence.needs(),
        [v(Variant::SelfSigned), v(Variant::CaAsLeaf)]
    );
    // Mutations come after the variants, in catalogue order.
    let plan =
        Plan::parse_sequence("mutation:serial-20-bytes,expired,mutation:bad-signature").unwrap();
    assert_eq!(
        plan.needs(),
        [
            v(Variant::Expired),
            mutation("bad-signature"),
            mutation("serial-20-bytes")
        ]
    );
    assert_eq!(
        weights("valid=1,mutations=1", 1).needs().len(),
        MUTATIONS.len()
    );
    assert!(weights("valid=1,mutations=0", 1).needs().is_empty());
    assert!(Plan::valid_only().needs().is_empty());
    assert!(Plan::parse_sequence("none,valid")
        .unwrap()
        .needs()
        .is_empty());
}

#[test]
fn describe_gives_what_reproduces_the_run() {
    assert_eq!(
        weights("valid=90, expired=5,untrusted-ca=5", 42).describe(),
        "weights valid=90 expired=5 untrusted-ca=5, seed 42"
    );
    assert_eq!(
        Plan::parse_sequence("valid,revoked,none")
            .unwrap()
            .describe(),
        "sequence valid,revoked,none (cycled)"
    );
    assert_eq!(Plan::valid_only().describe(), "always valid");
}

#[test]
fn a_mutation_is_named_by_its_check_id_and_expects_its_verdict() {
    for (m, p) in MUTATIONS
        .iter()
        .zip(MutationId::all().map(Presented::Mutation))
    {
        assert_eq!(p.name(), m.check_id);
        assert_eq!(p.name(), format!("mutation:{}", m.name));
        assert_eq!(m.check_id.parse::<Presented>(), Ok(p));
        assert_eq!(p.expected(), m.expect, "{p}");
    }
    assert_eq!(mutation("bad-signature").expected(), Expect::Reject);
    // The catalogue's controls must be accepted.
    assert_eq!(mutation("serial-20-bytes").expected(), Expect::Accept);
    assert!(v(Variant::Valid) < mutation("unknown-critical-extension"));
    assert!(mutation("unknown-critical-extension") < mutation("bad-signature"));
}

#[test]
fn an_unknown_mutation_lists_the_catalogue_and_a_bare_name_says_the_prefix() {
    let err = Plan::parse_sequence("valid,mutation:nope").unwrap_err();
    assert!(
        matches!(&err, PlanError::UnknownName { flag: "--present-sequence", name, .. } if name == "mutation:nope"),
        "{err:?}"
    );
    let message = err.to_string();
    for m in MUTATIONS {
        assert!(message.contains(m.name), "{}: {message}", m.name);
    }
    assert!(message.contains("mutation:<name>"), "{message}");
    // The catalogue name without its prefix is not a credential name.
    let message = Plan::parse_weights("bad-signature=1", 1)
        .unwrap_err()
        .to_string();
    assert!(
        message.contains("unknown credential \"bad-signature\"")
            && message.contains("e.g. mutation:bad-signature"),
        "{message}"
    );
    let err = "mutation:".parse::<Presented>().unwrap_err();
    assert_eq!(err, UnknownPresented("mutation:".into()));
}

#[test]
fn the_group_spreads_its_weight_evenly_and_exactly_over_every_mutation() {
    let n = MUTATIONS.len() as u64;
    let plan = weights("valid=80,mutations=20", 7);
    let items = plan.items();
    assert_eq!(items.len(), 1 + MUTATIONS.len());
    // Units of 1/N: valid weighs 80·N, each mutation 20, in catalogue order.
    assert_eq!(items[0], (v(Variant::Valid), 80 * n));
    let expanded: Vec<Presented> = MutationId::all().map(Presented::Mutation).collect();
    assert_eq!(
        items[1..].to_vec(),
        expanded.iter().map(|&p| (p, 20)).collect::<Vec<_>>()
    );
    let Kind::Weights {
        cumulative, total, ..
    } = &plan.kind
    else {
        unreachable!()
    };
    assert_eq!(*total, 100 * n);
    // Exhaustive over [0, total): every value is owned as the units say.
    let mut owned = vec![0u64; items.len()];
    for r in 0..*total {
        owned[bucket(cumulative, r)] += 1;
    }
    assert_eq!(owned, items.iter().map(|&(_, w)| w).collect::<Vec<_>>());
    assert_eq!(plan.describe(), "weights valid=80 mutations=20, seed 7");
    // A zero-weight group is kept in the description and never picked.
    let quiet = weights("valid=1,mutations=0", 3);
    assert_eq!(quiet.describe(), "weights valid=1 mutations=0, seed 3");
    assert!(picks(&quiet, 0..1_000)
        .iter()
        .all(|&p| p == v(Variant::Valid)));
}

#[test]
fn a_grouped_plan_picks_every_mutation_at_its_share_and_reproducibly() {
    let plan = weights("valid=80,mutations=20", 42);
    let all = picks(&plan, 0..100_000);
    assert_eq!(
        all,
        picks(&weights("valid=80, mutations=20", 42), 0..100_000)
    );
    assert_ne!(
        all,
        picks(&weights("valid=80,mutations=20", 43), 0..100_000)
    );
    // Shares as in shares_over_100000_picks_match_the_weights: valid 80 %
    // (sd 0.13 pp), each mutation 20/26 % (sd 0.028 pp).
    let share = |p: Presented| all.iter().filter(|&&q| q == p).count() as f64 / 1_000.0;
    assert!((share(v(Variant::Valid)) - 80.0).abs() <= 0.7);
    let each = 20.0 / MUTATIONS.len() as f64;
    for m in MutationId::all().map(Presented::Mutation) {
        assert!(
            (share(m) - each).abs() <= 0.2,
            "{m}: {}% for {each}%",
            share(m)
        );
    }
    // Order of picking does not matter: pick is a pure function of n.
    for n in [0, 17, 99_999, u64::MAX] {
        assert_eq!(plan.pick(n), weights("valid=80,mutations=20", 42).pick(n));
    }
}

#[test]
fn the_group_and_its_members_or_itself_twice_are_refused() {
    assert_eq!(
        Plan::parse_weights("mutations=5,valid=90,mutation:bad-signature=5", 1),
        Err(PlanError::InGroup {
            name: "mutation:bad-signature".into()
        })
    );
    let message = Plan::parse_weights("mutation:bad-signature=5,mutations=5", 1)
        .unwrap_err()
        .to_string();
    assert!(message.contains("group `mutations`"), "{message}");
    assert_eq!(
        Plan::parse_weights("mutations=5,mutations=5", 1),
        Err(PlanError::Duplicate {
            name: "mutations".into()
        })
    );
    // Without the group, mutations weigh as any name does, in units of 1.
    let plan = weights("valid=9,mutation:bad-signature=1", 1);
    assert_eq!(
        plan.items(),
        vec![(v(Variant::Valid), 9), (mutation("bad-signature"), 1)]
    );
}

#[test]
fn in_a_sequence_the_group_is_every_mutation_in_catalogue_order() {
    let plan = Plan::parse_sequence("valid,mutations").unwrap();
    let n = MUTATIONS.len() as u64;
    let cycle = picks(&plan, 0..n + 2);
    assert_eq!(cycle[0], v(Variant::Valid));
    let expected: Vec<Presented> = MutationId::all().map(Presented::Mutation).collect();
    assert_eq!(cycle[1..=MUTATIONS.len()], expected[..]);
    assert_eq!(cycle[MUTATIONS.len() + 1], v(Variant::Valid));
    assert_eq!(plan.describe(), "sequence valid,mutations (cycled)");
    assert_eq!(
        Plan::parse_sequence("mutation:bad-signature")
            .unwrap()
            .describe(),
        "always mutation:bad-signature"
    );
    assert_eq!(
        Plan::parse_sequence("mutations").unwrap().describe(),
        "sequence mutations (cycled)"
    );
}
