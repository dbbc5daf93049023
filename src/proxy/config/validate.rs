//! Raw flags into a [`ProxyConfig`], in named steps: the PKI, the plan, the
//! identity and variants it presents, the upstream side, the listen side,
//! rotation, the admin API and the limits. Each step checks its own flags
//! and says which flag is wrong and how to fix it.
//!
//! Owns: every rule about how settings combine, whichever source (flag or
//! file) they came from. Never: reads the config file or knows where a
//! value came from (`file` points errors back at its keys).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use super::error::{flag, ConfigError};
use super::flags::{ProxyArgs, Reuse, TlsMode};
use super::schedule;
use super::settings::{ClientFiles, PlanPhase, ProxyConfig};
use crate::creds::ServerFiles;
use crate::pki::{CredentialFiles, PkiDir, Variant};
use crate::plan::{MutationId, Plan, PlanError, Presented, Swap};
use crate::tls::{Kx, TlsVersion};

/// Upper bounds that keep arithmetic on user-given values from overflowing.
const MAX_CONNECTIONS: usize = 1 << 20;
const MAX_TIMEOUT: Duration = Duration::from_secs(86_400);
/// Linux silently caps a larger backlog at net.core.somaxconn anyway.
const MAX_BACKLOG: u32 = 1 << 16;

/// Checks `args` step by step; the first error wins, in the order below.
pub(super) fn validate(args: ProxyArgs) -> Result<ProxyConfig, ConfigError> {
    let pki = open_pki(&args)?;
    let plan = plan(&args)?;
    let mode = match (&args.swap, args.swap_every) {
        (Some(mode), _) => mode.as_str(),
        (None, Some(_)) => "request",
        (None, None) => "connection",
    };
    let swap = Swap::parse(mode, args.swap_every).map_err(|e| match e {
        PlanError::SwapEvery(p) => flag("--swap-every", p),
        other => flag("--swap", other.to_string()),
    })?;
    let Presenting {
        client,
        variants,
        mutations,
    } = presenting(&args, pki.as_ref(), &plan)?;
    // The PKI's identity is meant for the PKI's CA; one given by
    // --client-cert may belong to any CA.
    let client_ca = match (&args.client_cert, pki.as_ref(), &client) {
        (None, Some(p), Some(_)) => Some(p.ca_cert()),
        _ => None,
    };
    let plan_schedule = plan_schedule(&args, pki.as_ref(), client.is_some())?;
    let upstream = upstream(&args, pki.as_ref())?;
    let listen_files = listen(&args, pki.as_ref())?;
    let rotate_ca = rotation(&args, pki.as_ref())?;
    let admin = admin(&args)?;
    limits(&args)?;
    let trust_domains = vec![pki.as_ref().map_or("cluster.local".to_string(), |p| {
        p.manifest().trust_domain.clone()
    })];
    Ok(ProxyConfig {
        listen: args.listen,
        listen_tls: args.listen_tls,
        listen_files,
        upstream_name: upstream.name,
        upstream: args.upstream,
        upstream_tls: args.upstream_tls,
        upstream_cas: upstream.cas,
        upstream_crls: args.upstream_crl,
        upstream_spiffe_id: args.upstream_spiffe_id,
        versions: args.tls_versions,
        upstream_kx: args.upstream_kx,
        trust_domains,
        client,
        client_ca,
        variants,
        mutations,
        plan,
        swap,
        upstream_pool: match args.upstream_reuse {
            Reuse::On => args.upstream_pool,
            Reuse::Off => 0,
        },
        plan_schedule,
        rotate_every: args.rotate_every,
        rotate_jitter: args.rotate_jitter.unwrap_or_default(),
        rotate_ca,
        on_rotate: args.on_rotate,
        admin,
        admin_token: args.admin_token.filter(|t| !t.is_empty()),
        max_connections: args.max_connections,
        max_handshakes: max_handshakes(args.max_handshakes, args.max_connections),
        backlog: args.backlog,
        workers: crate::accept::resolve_workers(args.workers)
            .map_err(|problem| flag("--workers", problem))?,
        handshake_timeout: args.handshake_timeout,
        header_timeout: args.header_timeout,
        connect_timeout: args.connect_timeout,
        idle_timeout: args.idle_timeout,
        drain_timeout: args.drain_timeout,
        json: args.json,
        watch: !args.no_watch,
        reload_poll: crate::creds::poll_period(!args.no_watch, args.reload_poll),
    })
}

/// `--pki DIR`: its manifest and the layout that names its files.
fn open_pki(args: &ProxyArgs) -> Result<Option<PkiDir>, ConfigError> {
    Ok(args.pki.as_deref().map(PkiDir::open).transpose()?)
}

fn client_files(f: CredentialFiles) -> ClientFiles {
    ClientFiles {
        cert: f.cert,
        key: f.key,
    }
}

/// `--present`, `--present-sequence`, `--seed`.
fn plan(args: &ProxyArgs) -> Result<Plan, ConfigError> {
    Ok(match (&args.present, &args.present_sequence) {
        (Some(w), _) => Plan::parse_weights(w, args.seed.unwrap_or_else(rand::random))?,
        (None, Some(s)) => Plan::parse_sequence(s)?,
        (None, None) => Plan::valid_only(),
    })
}

/// What the plan needs to present: the identity, the bad variants and the
/// mutated certificates.
struct Presenting {
    client: Option<ClientFiles>,
    variants: Vec<(Variant, ClientFiles)>,
    mutations: Vec<(MutationId, ClientFiles)>,
}

/// `--identity`, `--client-cert`/`--client-key` and the variants of the
/// plan, checked against `--upstream-tls`.
fn presenting(
    args: &ProxyArgs,
    pki: Option<&PkiDir>,
    plan: &Plan,
) -> Result<Presenting, ConfigError> {
    let identity = match (pki, &args.identity) {
        (Some(p), Some(id)) if p.client(id).is_none() => {
            return Err(flag(
                "--identity",
                format!(
                    "{id:?} is not a service of the PKI; it has {}",
                    p.manifest().services.join(", ")
                ),
            ))
        }
        (Some(p), id) => id
            .clone()
            .or_else(|| p.manifest().services.first().cloned()),
        (None, Some(_)) => return Err(flag("--identity", "needs --pki DIR")),
        (None, None) => None,
    };
    let client = match (&args.client_cert, &args.client_key, pki, &identity) {
        (Some(c), Some(k), _, _) => Some(ClientFiles {
            cert: c.clone(),
            key: k.clone(),
        }),
        (_, _, Some(p), Some(id)) => p.client(id).map(client_files),
        _ => None,
    };
    if let Some((flag_name, problem)) = unfit(plan, args, pki, client.is_some()) {
        return Err(flag(flag_name, problem));
    }
    // Every variant the PKI has is loaded, not only those the startup plan
    // picks: `PUT /plan` and `--plan-schedule` may switch to any of them,
    // and only credentials loaded at startup can be presented.
    let variants = pki
        .map(|p| {
            Variant::ALL
                .into_iter()
                .filter(|v| *v != Variant::Valid)
                .filter_map(|v| p.variant(v).map(|f| (v, client_files(f))))
                .collect()
        })
        .unwrap_or_default();
    // Likewise every mutation the PKI has (none, if it predates them).
    let mutations = pki
        .map(|p| {
            MutationId::all()
                .filter_map(|m| p.mutation(m.name()).map(|f| (m, client_files(f))))
                .collect()
        })
        .unwrap_or_default();
    Ok(Presenting {
        client,
        variants,
        mutations,
    })
}

/// Why the proxy could not present `plan`: the flag to blame and the
/// problem, or `None` when it can. Run for the startup plan and for every
/// `--plan-schedule` phase, so a phase fails at startup, not mid-run.
fn unfit(
    plan: &Plan,
    args: &ProxyArgs,
    pki: Option<&PkiDir>,
    has_client: bool,
) -> Option<(&'static str, String)> {
    for needed in plan.needs() {
        let Some(p) = pki else {
            return Some((
                "--present",
                format!(
                    "presenting {needed} needs --pki DIR (the bad credentials come from the PKI)"
                ),
            ));
        };
        if let Some(problem) = missing(p, needed) {
            return Some(("--present", problem));
        }
    }
    let valid = Presented::Variant(Variant::Valid);
    let presents =
        |keep: &dyn Fn(&Presented) -> bool| plan.items().iter().any(|(p, w)| *w > 0 && keep(p));
    if args.upstream_tls != TlsMode::Mtls && presents(&|p| *p != valid) {
        return Some(("--present", "bad variants and `none` need --upstream-tls mtls: without client certificates upstream, every connection presents nothing".into()));
    }
    if args.upstream_tls == TlsMode::Mtls && presents(&|p| *p == valid) && !has_client {
        return Some(("--client-cert", "mTLS upstream needs a client identity: pass --client-cert/--client-key, or --pki DIR [--identity SERVICE]".into()));
    }
    None
}

/// Why the PKI cannot present `needed`, or `None` when it can.
fn missing(p: &PkiDir, needed: Presented) -> Option<String> {
    let dir = p.dir().display();
    match needed {
        Presented::Variant(v) if p.variant(v).is_none() => Some(format!(
            "the PKI in {dir} has no {v} credential (missing-intermediate needs `pki init --intermediate`)"
        )),
        Presented::Mutation(_) if p.manifest().mutations.is_empty() => Some(format!(
            "the PKI in {dir} has no mutated certificates (it was made before certshift wrote mutations/); re-run `certshift pki init --out {dir}` to present {needed}"
        )),
        Presented::Mutation(m) if p.mutation(m.name()).is_none() => Some(format!(
            "the PKI in {dir} has no {needed} (pki init skips what its CA cannot sign, e.g. SHA-1 under an Ed25519 CA); name the mutations it has instead, e.g. mutation:bad-signature"
        )),
        _ => None,
    }
}

/// `--plan-schedule FILE`: its phases, each checked like the startup plan.
fn plan_schedule(
    args: &ProxyArgs,
    pki: Option<&PkiDir>,
    has_client: bool,
) -> Result<Vec<PlanPhase>, ConfigError> {
    let Some(path) = &args.plan_schedule else {
        return Ok(Vec::new());
    };
    let phases = schedule::read(path, args.seed.unwrap_or_else(rand::random))?;
    for (i, phase) in phases.iter().enumerate() {
        if let Some((_, problem)) = unfit(&phase.plan, args, pki, has_client) {
            return Err(flag(
                "--plan-schedule",
                format!("{}: phase {}: {problem}", path.display(), i + 1),
            ));
        }
    }
    Ok(phases)
}

/// The service's name to verify and the CAs to verify it with.
struct Upstream {
    name: String,
    cas: Vec<PathBuf>,
}

/// `--upstream`, `--upstream-name`, `--upstream-ca`.
fn upstream(args: &ProxyArgs, pki: Option<&PkiDir>) -> Result<Upstream, ConfigError> {
    let (host, _) = crate::net::parse_host_port(&args.upstream)
        .map_err(|e| flag("--upstream", e.to_string()))?;
    let cas = match (args.upstream_ca.is_empty(), pki.map(PkiDir::ca_cert)) {
        (false, _) => args.upstream_ca.clone(),
        (true, Some(ca)) => vec![ca],
        (true, None) => Vec::new(),
    };
    if args.upstream_tls != TlsMode::Off && cas.is_empty() {
        return Err(flag("--upstream-ca", "TLS upstream needs the CA that signed the service's certificate: pass --upstream-ca FILE or --pki DIR"));
    }
    let name = args
        .upstream_name
        .clone()
        .unwrap_or_else(|| host.to_string());
    // Checked by the one SPIFFE parser: an ID no certificate can carry
    // would refuse every service.
    if let Some(id) = &args.upstream_spiffe_id {
        crate::spiffe::SpiffeId::parse(id).map_err(|e| {
            flag(
                "--upstream-spiffe-id",
                format!("{e}; write spiffe://TRUST-DOMAIN/PATH, e.g. spiffe://cluster.local/ns/default/sa/api"),
            )
        })?;
    }
    // TLS 1.2 has no post-quantum hybrid: a list of only that group would
    // fail every TLS 1.2-only handshake.
    let tls12_only = args.tls_versions.iter().all(|v| v == TlsVersion::Tls12);
    let usable = |k: Kx| {
        k.group()
            .usable_for_version(rustls::ProtocolVersion::TLSv1_2)
    };
    if tls12_only && !args.upstream_kx.iter().any(usable) {
        return Err(flag(
            "--upstream-kx",
            format!("{} cannot be used with TLS 1.2 (--tls-versions 1.2); add x25519, secp256r1 or secp384r1", args.upstream_kx),
        ));
    }
    Ok(Upstream { name, cas })
}

/// `--listen-tls` and its files; none when downstream is plaintext.
fn listen(args: &ProxyArgs, pki: Option<&PkiDir>) -> Result<Option<ServerFiles>, ConfigError> {
    let mode = args.listen_tls;
    if mode == TlsMode::Off {
        return Ok(None);
    }
    let server = pki.and_then(PkiDir::server);
    let required = |f: &'static str, given: &Option<PathBuf>, default: Option<PathBuf>| {
        given
            .clone()
            .or(default)
            .ok_or_else(|| flag(f, "required with --listen-tls tls|mtls (or --pki DIR)"))
    };
    let cert = required(
        "--listen-cert",
        &args.listen_cert,
        server.as_ref().map(|f| f.cert.clone()),
    )?;
    let key = required(
        "--listen-key",
        &args.listen_key,
        server.as_ref().map(|f| f.key.clone()),
    )?;
    let client_cas = match (
        mode,
        args.listen_client_ca.is_empty(),
        pki.map(PkiDir::ca_cert),
    ) {
        (TlsMode::Mtls, false, _) => args.listen_client_ca.clone(),
        (TlsMode::Mtls, true, Some(ca)) => vec![ca],
        (TlsMode::Mtls, true, None) => {
            return Err(flag(
                "--listen-client-ca",
                "required with --listen-tls mtls (or --pki DIR)",
            ))
        }
        _ => Vec::new(),
    };
    // The PKI's CRL only goes with the PKI's CA: a --listen-client-ca of
    // another CA takes no CRL by default.
    let crls = match (
        mode,
        args.listen_crl.is_empty(),
        args.listen_client_ca.is_empty(),
        pki.map(PkiDir::crl),
    ) {
        (TlsMode::Mtls, false, _, _) => args.listen_crl.clone(),
        // A PKI always has its CRL: without it, revocation would stop
        // being checked, silently.
        (TlsMode::Mtls, true, true, Some(crl)) if !crl.exists() => {
            return Err(flag(
                "--pki",
                format!(
                    "{} is missing, so revoked clients would be let in; restore it, re-run `certshift pki init`, or pass --listen-crl FILE",
                    crl.display()
                ),
            ))
        }
        (TlsMode::Mtls, true, true, Some(crl)) => vec![crl],
        _ => Vec::new(),
    };
    Ok(Some(ServerFiles {
        cert,
        key,
        client_cas,
        crls,
    }))
}

/// `--rotate-every` and the CA that mints (`--rotate-ca-*`, or the PKI's
/// issuing CA).
fn rotation(
    args: &ProxyArgs,
    pki: Option<&PkiDir>,
) -> Result<Option<(PathBuf, PathBuf)>, ConfigError> {
    let rotate_ca = match (&args.rotate_ca_cert, &args.rotate_ca_key, pki) {
        (Some(c), Some(k), _) => Some((c.clone(), k.clone())),
        (_, _, Some(p)) => p.issuing_ca().map(|f| (f.cert, f.key)),
        _ => None,
    };
    if args.rotate_every.is_some() && rotate_ca.is_none() {
        return Err(flag(
            "--rotate-every",
            "minting needs a CA: pass --rotate-ca-cert/--rotate-ca-key, or --pki DIR",
        ));
    }
    if args
        .rotate_every
        .is_some_and(|d| d < Duration::from_millis(10))
    {
        return Err(flag("--rotate-every", "give at least 10ms"));
    }
    Ok(rotate_ca)
}

/// `--admin` and `--admin-token`: off, or an address; a token off loopback.
fn admin(args: &ProxyArgs) -> Result<Option<SocketAddr>, ConfigError> {
    let a = match args.admin.as_str() {
        "off" => return Ok(None),
        a => a
            .parse::<SocketAddr>()
            .map_err(|e| flag("--admin", format!("{a:?}: {e}; give IP:PORT or off")))?,
    };
    crate::net::check_admin_bind(a, args.admin_token.as_deref())
        .map_err(|e| flag(e.flag, e.problem))?;
    Ok(Some(a))
}

fn max_handshakes(max_handshakes: Option<usize>, max_connections: usize) -> usize {
    max_handshakes.unwrap_or(crate::accept::Limits::default_max_handshakes(
        max_connections,
    ))
}

/// `--max-connections`, `--max-handshakes`, `--backlog` and the timeouts, within bounds.
fn limits(args: &ProxyArgs) -> Result<(), ConfigError> {
    if !(1..=MAX_CONNECTIONS).contains(&args.max_connections) {
        return Err(flag(
            "--max-connections",
            format!("give 1 to {MAX_CONNECTIONS}"),
        ));
    }
    let hs = max_handshakes(args.max_handshakes, args.max_connections);
    if !(1..=args.max_connections).contains(&hs) {
        return Err(flag(
            "--max-handshakes",
            format!(
                "{hs} is out of range; give 1 to --max-connections ({})",
                args.max_connections
            ),
        ));
    }
    if !(1..=MAX_BACKLOG).contains(&args.backlog) {
        return Err(flag(
            "--backlog",
            format!("{} is out of range; give 1 to {MAX_BACKLOG}", args.backlog),
        ));
    }
    for (f, d) in [
        ("--handshake-timeout", args.handshake_timeout),
        ("--header-timeout", args.header_timeout),
        ("--connect-timeout", args.connect_timeout),
        ("--idle-timeout", args.idle_timeout),
        ("--drain-timeout", args.drain_timeout),
    ] {
        if d.is_zero() || d > MAX_TIMEOUT {
            return Err(flag(f, "give a duration above 0 and at most 1d (e.g. 10s)"));
        }
    }
    if args.reload_poll.is_some_and(|d| d > MAX_TIMEOUT) {
        return Err(flag(
            "--reload-poll",
            "give a duration of at most 1d (e.g. 5s), or 0 to disable",
        ));
    }
    Ok(())
}
