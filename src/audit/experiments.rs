//! The experiments behind the registry's checks, one function each. A
//! function gathers evidence only; judging it against the expectation is
//! [`super::judge`]'s job.

use std::sync::Arc;
use std::time::Duration;

use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::CertificateDer;
use time::OffsetDateTime;

use super::experiment::{certified, Attempt, Ctx, Decision, Observation};
use crate::pki::{self, Authority, Mutation, Variant};
use crate::tls::{ClientCert, Outcome, SessionRecorder, TlsVersion};

pub async fn valid_identity(ctx: &Ctx) -> Observation {
    Observation::of(
        ctx.present(ClientCert::Always(ctx.identity.key.clone()))
            .await,
    )
}

pub async fn no_client_cert(ctx: &Ctx) -> Observation {
    Observation::of(ctx.present(ClientCert::None).await)
}

/// A catalogue variant of the PKI, presented over every version.
async fn variant(ctx: &Ctx, v: Variant) -> Observation {
    let Some(pki) = &ctx.pki else {
        return Observation::skipped(format!(
            "needs --pki DIR: the `{v}` certificate must come from the CA the service trusts"
        ));
    };
    let Some(files) = pki.variant(v) else {
        return Observation::skipped(if v.needs_intermediate() {
            "the PKI issues leaves from its root: there is no intermediate to leave out (pki init --intermediate)".to_string()
        } else {
            format!("the PKI at {} has no `{v}` variant", pki.dir().display())
        });
    };
    match crate::creds::load_certified_key(&files.cert, &files.key) {
        Ok(ck) => Observation::of(ctx.present(ClientCert::Always(ck)).await),
        Err(e) => Observation::inconclusive(format!("cannot load the `{v}` variant: {e}")),
    }
}

/// The PKI's variant when there is one; else a fresh look-alike made by
/// `fresh` (these two need no key the service trusts).
async fn variant_or_fresh(
    ctx: &Ctx,
    v: Variant,
    fresh: fn(&Ctx) -> Result<Arc<CertifiedKey>, String>,
) -> Observation {
    if ctx.pki.as_ref().and_then(|p| p.variant(v)).is_some() {
        return variant(ctx, v).await;
    }
    match fresh(ctx) {
        Ok(ck) => Observation::of(ctx.present(ClientCert::Always(ck)).await)
            .note("minted from fresh keys"),
        Err(e) => Observation::inconclusive(e),
    }
}

fn now() -> OffsetDateTime {
    OffsetDateTime::now_utc()
}

fn day() -> time::Duration {
    time::Duration::days(1)
}

pub async fn untrusted_ca(ctx: &Ctx) -> Observation {
    variant_or_fresh(ctx, Variant::UntrustedCa, |ctx| {
        let (spec, kt) = ctx.look_alike("untrusted-ca", now() - day(), now() + day());
        let ca = Authority::new_root(
            "certshift audit untrusted CA",
            kt,
            now(),
            Duration::from_secs(86_400),
        )
        .map_err(|e| e.to_string())?;
        certified(ca.issue(&spec, kt).map_err(|e| e.to_string())?, &[])
    })
    .await
}

pub async fn self_signed(ctx: &Ctx) -> Observation {
    variant_or_fresh(ctx, Variant::SelfSigned, |ctx| {
        let (spec, kt) = ctx.look_alike("self-signed", now() - day(), now() + day());
        certified(
            pki::self_signed_leaf(&spec, kt).map_err(|e| e.to_string())?,
            &[],
        )
    })
    .await
}

pub async fn expired(ctx: &Ctx) -> Observation {
    variant(ctx, Variant::Expired).await
}

pub async fn not_yet_valid(ctx: &Ctx) -> Observation {
    variant(ctx, Variant::NotYetValid).await
}

pub async fn revoked(ctx: &Ctx) -> Observation {
    variant(ctx, Variant::Revoked).await
}

pub async fn wrong_eku(ctx: &Ctx) -> Observation {
    variant(ctx, Variant::WrongEku).await
}

pub async fn ca_as_leaf(ctx: &Ctx) -> Observation {
    variant(ctx, Variant::CaAsLeaf).await
}

pub async fn missing_intermediate(ctx: &Ctx) -> Observation {
    variant(ctx, Variant::MissingIntermediate).await
}

pub async fn wrong_trust_domain(ctx: &Ctx) -> Observation {
    variant(ctx, Variant::WrongTrustDomain).await
}

pub async fn no_spiffe_id(ctx: &Ctx) -> Observation {
    variant(ctx, Variant::NoSpiffeId).await
}

pub async fn other_identity(ctx: &Ctx) -> Observation {
    match &ctx.other {
        Some(other) => Observation::of(ctx.present(ClientCert::Always(other.key.clone())).await)
            .note(format!("presented {}", other.name)),
        None => Observation::skipped(
            "give --other-identity SERVICE (or --other-cert/--other-key): a valid identity of another workload",
        ),
    }
}

/// Plain HTTP to the mTLS port and to `--plaintext-port`. Only an HTTP
/// answer with a non-refusal status counts as served; a TLS server's alert
/// bytes, a close or a timeout all mean "not served".
pub async fn plaintext(ctx: &Ctx) -> Observation {
    let mut ports = vec![ctx.addr.port()];
    ports.extend(ctx.plaintext_port.filter(|p| *p != ctx.addr.port()));
    let mut attempts = Vec::new();
    for port in ports {
        let mut addr = ctx.addr;
        addr.set_port(port);
        let r = ctx.probe(None, addr).await;
        let served = match &r.outcome {
            Outcome::Http(s) => !ctx.reject_status.contains(s),
            Outcome::Ok => true,
            _ => false,
        };
        attempts.push(Attempt {
            label: format!("plain :{port}"),
            outcome: r.outcome,
            resumed: None,
            decision: Some(if served {
                Decision::Accepted
            } else {
                Decision::Refused
            }),
        });
    }
    Observation::of(attempts)
}

/// Full handshake with a certificate valid for a few seconds, keep what the
/// service hands out to resume with, wait until the certificate has expired,
/// resume. Per TLS version, concurrently (the wait dominates).
pub async fn resumption_after_expiry(ctx: &Ctx) -> Observation {
    if let Err(e) = &ctx.issuing {
        return Observation::skipped(format!(
            "needs the issuing CA's key to mint a short-lived certificate: {e}"
        ));
    }
    let runs = ctx.versions.iter().map(|v| resume_once(ctx, *v));
    let results = futures_util::future::join_all(runs).await;
    let mut obs = Observation::default();
    let mut offered = 0;
    let mut why_not = Vec::new();
    for r in results {
        match r {
            Ok((attempt, note)) => {
                offered += 1;
                obs.attempts.push(attempt);
                obs.notes.extend(note);
            }
            Err(e) => why_not.push(e),
        }
    }
    obs.notes.extend(why_not.iter().cloned());
    if offered == 0 {
        obs.inconclusive = Some(why_not.join("; "));
    }
    obs
}

/// One version's resumption experiment: the attempt after expiry, or why
/// there was nothing to test.
async fn resume_once(ctx: &Ctx, v: TlsVersion) -> Result<(Attempt, Option<String>), String> {
    // notAfter is encoded in whole seconds: wait past the truncated second.
    let start = now();
    let not_after = start + ctx.short_lived;
    let ck = ctx.mint("short-lived", start - time::Duration::hours(1), not_after)?;
    let mut config = ctx
        .config(ClientCert::Always(ck), v)
        .map_err(|e| e.to_string())?;
    let store = SessionRecorder::shared();
    store.install(&mut config);
    let config = Arc::new(config);
    let first = ctx.probe(Some(config.clone()), ctx.addr).await;
    let first_attempt = Attempt {
        label: String::new(),
        outcome: first.outcome.clone(),
        resumed: first.resumed,
        decision: None,
    };
    if ctx.decide(&first_attempt) != Decision::Accepted {
        return Err(format!(
            "TLS {v}: the short-lived certificate was not accepted while valid ({})",
            first.outcome
        ));
    }
    let offered = match v {
        TlsVersion::Tls13 => store.tls13_tickets(),
        TlsVersion::Tls12 => store.tls12_sessions(),
    };
    if offered == 0 {
        return Err(format!(
            "TLS {v}: the service issued no {} to resume with",
            match v {
                TlsVersion::Tls13 => "session ticket",
                TlsVersion::Tls12 => "session id or ticket",
            }
        ));
    }
    let wait = (not_after - now()).max(time::Duration::ZERO) + time::Duration::milliseconds(1500);
    tokio::time::sleep(wait.unsigned_abs()).await;
    let second = ctx.probe(Some(config), ctx.addr).await;
    let resumed = second.resumed == Some(true);
    let note = (!resumed && second.tls_version.is_some())
        .then(|| format!("TLS {v}: the service did not resume; the expired certificate went through a full handshake"));
    Ok((
        Attempt {
            label: format!("{v} {}", if resumed { "resumed" } else { "full" }),
            outcome: second.outcome,
            resumed: second.resumed,
            decision: None,
        },
        note,
    ))
}

/// Certificates outside their validity by 1 minute, 1 hour and 1 day, and
/// not yet valid by 1 minute, over the first version under audit: the
/// tolerance the service allows.
pub async fn clock_skew(ctx: &Ctx) -> Observation {
    if let Err(e) = &ctx.issuing {
        return Observation::skipped(format!(
            "needs the issuing CA's key to mint certificates: {e}"
        ));
    }
    let Some(version) = ctx.versions.first().copied() else {
        return Observation::inconclusive("no TLS version to test");
    };
    let t = now();
    let cases: [(&str, time::Duration, OffsetDateTime, OffsetDateTime); 4] = [
        (
            "expired 1m",
            time::Duration::minutes(1),
            t - day(),
            t - time::Duration::minutes(1),
        ),
        (
            "expired 1h",
            time::Duration::hours(1),
            t - day() * 2,
            t - time::Duration::hours(1),
        ),
        ("expired 1d", day(), t - day() * 3, t - day()),
        (
            "not-yet-valid 1m",
            time::Duration::minutes(1),
            t + time::Duration::minutes(1),
            t + day(),
        ),
    ];
    let mut obs = Observation::default();
    let mut beyond = false;
    let mut tolerated = Vec::new();
    for (label, skew, nb, na) in cases {
        let ck = match ctx.mint(label, nb, na) {
            Ok(ck) => ck,
            Err(e) => return Observation::inconclusive(e),
        };
        let a = ctx
            .present_over(
                ClientCert::Always(ck),
                version,
                format!("{label} {version}"),
            )
            .await;
        if ctx.decide(&a) == Decision::Accepted {
            tolerated.push(label);
            if ctx.max_skew.is_some_and(|m| skew.unsigned_abs() > m) {
                beyond = true;
            }
        }
        obs.attempts.push(a);
    }
    obs.notes.push(if tolerated.is_empty() {
        "tolerance: none (every certificate outside its validity was refused)".to_string()
    } else {
        format!("tolerance: accepted {}", tolerated.join(", "))
    });
    if let Some(m) = ctx.max_skew {
        obs.notes
            .push(format!("--max-skew {}", humantime::format_duration(m)));
    }
    obs.decision = Some(if beyond {
        Decision::Accepted
    } else {
        Decision::Refused
    });
    obs
}

/// A leaf like the identity's, signed by the issuing CA with SHA-1.
pub async fn weak_signature(ctx: &Ctx) -> Observation {
    let issuing = match &ctx.issuing {
        Ok(i) => i,
        Err(e) => return Observation::skipped(format!("needs the issuing CA's key to sign: {e}")),
    };
    let (spec, kt) = ctx.look_alike("weak-signature", now() - day(), now() + day());
    let ck = match pki::sha1_signed(&issuing.authority, &spec, kt) {
        Ok(issued) => certified(issued, &issuing.chain),
        // An Ed25519 CA has no SHA-1 signature: nothing to test.
        Err(e @ pki::PkiError::NoSha1Signature { .. }) => {
            return Observation::skipped(e.to_string())
        }
        Err(e) => Err(e.to_string()),
    };
    match ck {
        Ok(ck) => Observation::of(ctx.present(ClientCert::Always(ck)).await)
            .note("SHA-1 signature by the issuing CA"),
        Err(e) => Observation::inconclusive(e),
    }
}

/// A leaf like the identity's with an RSA-1024 key, signed normally.
pub async fn weak_key(ctx: &Ctx) -> Observation {
    let issuing = match &ctx.issuing {
        Ok(i) => i,
        Err(e) => return Observation::skipped(format!("needs the issuing CA's key to sign: {e}")),
    };
    let (spec, _) = ctx.look_alike("weak-key", now() - day(), now() + day());
    match pki::rsa1024_client(&issuing.authority, &spec) {
        Ok(cred) => {
            let ck = Arc::new(cred.certified_key(&issuing.chain));
            Observation::of(ctx.present(ClientCert::Always(ck)).await).note("RSA-1024 client key")
        }
        Err(e) => Observation::inconclusive(e.to_string()),
    }
}

/// A mutated certificate of the identity (`pki::mutate`), presented over
/// every version: the PKI's `mutations/<name>/` when it has one, else
/// derived in memory from the identity and its issuing CA.
pub async fn mutation(ctx: &Ctx, m: &'static Mutation) -> Observation {
    let (ck, note) = match mutation_key(ctx, m) {
        Ok(found) => found,
        Err(MutationUnavailable::Skip(why)) => return Observation::skipped(why),
        Err(MutationUnavailable::Broken(why)) => return Observation::inconclusive(why),
    };
    let obs = Observation::of(ctx.present(ClientCert::Always(ck)).await);
    match note {
        Some(note) => obs.note(note),
        None => obs,
    }
}

/// Why a mutation was not presented.
enum MutationUnavailable {
    /// It cannot be made for this identity or without the CA's key.
    Skip(String),
    /// Its files or our own side failed.
    Broken(String),
}

/// The mutated chain with the key to sign the handshake. No check that the
/// key matches the leaf: rustls would parse the leaf for that, and several
/// mutations are certificates it refuses to parse, which is their point.
fn mutation_key(
    ctx: &Ctx,
    m: &'static Mutation,
) -> Result<(Arc<CertifiedKey>, Option<String>), MutationUnavailable> {
    use MutationUnavailable::{Broken, Skip};
    if let Some(files) = ctx.pki.as_ref().and_then(|p| p.mutation(m.name)) {
        let load = || -> Result<Arc<CertifiedKey>, String> {
            let bytes = crate::creds::read(&files.cert).map_err(|e| e.to_string())?;
            let chain = CertificateDer::pem_slice_iter(&bytes)
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| format!("{}: {e}", files.cert.display()))?;
            let key = crate::creds::load_key(&files.key).map_err(|e| e.to_string())?;
            let signer = crate::creds::provider()
                .key_provider
                .load_private_key(key)
                .map_err(|e| format!("{}: {e}", files.key.display()))?;
            Ok(Arc::new(CertifiedKey::new(chain, signer)))
        };
        return load()
            .map(|ck| (ck, None))
            .map_err(|e| Broken(format!("cannot load the `{}` mutation: {e}", m.name)));
    }
    let issuing = ctx.issuing.as_ref().map_err(|e| {
        Skip(format!(
            "needs the PKI's mutations/ (pki init) or the issuing CA's key to derive it: {e}"
        ))
    })?;
    let Some(leaf) = ctx.identity.key.cert.first() else {
        return Err(Broken("the identity has no certificate".into()));
    };
    let chain = match m.derive(leaf, &issuing.authority, &issuing.chain) {
        Ok(chain) => chain,
        Err(e @ (pki::PkiError::NoSha1Signature { .. } | pki::PkiError::Mutation { .. })) => {
            return Err(Skip(e.to_string()))
        }
        Err(e) => return Err(Broken(format!("deriving the `{}` mutation: {e}", m.name))),
    };
    let ck = CertifiedKey::new(chain, ctx.identity.key.key.clone());
    Ok((
        Arc::new(ck),
        Some("derived from the identity in memory".into()),
    ))
}
