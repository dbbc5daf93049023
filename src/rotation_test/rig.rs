//! The rotation test's rig: the PKI, the service and the proxy it starts (or
//! the target it was given), and the rotations it performs on them.
//!
//! Rotations go through the same paths as in production: new files are
//! written beside the old ones, renamed into place, and the component
//! reloads them (checked before they are published). Only the client side of
//! handshake mode, which has no proxy, publishes into the load's live
//! credential directly.
//!
//! Never: mints keys, writes files or reloads a component on the async
//! runtime's threads while the load runs. The load generator shares this
//! process and runtime, and an RSA key generation (up to a second) on a
//! worker would show up as false latency in the very run that measures
//! rotation downtime: every rotation step runs on the blocking pool
//! (`Rig::off_runtime`).

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use rustls_pki_types::ServerName;

use super::steps::{Direct, Issuing, NewRoot, Steps};
use super::{Rotate, RotationTestArgs};
use crate::creds::RotationKind;
use crate::load::{Marks, Mode, Target};
use crate::metrics::Metrics;
use crate::pki::{self, Authority, Manifest, PkiDir, PkiOptions, Role};
use crate::proxy::{Proxy, ProxyArgs};
use crate::report::RunInfo;
use crate::serve::{ServeArgs, Service};
use crate::x509::CertFacts;

/// Everything the test runs against and rotates.
pub struct Rig {
    /// What a rotation changes; shared with the blocking-pool threads that
    /// perform its steps.
    steps: Arc<Steps>,
    serve: Option<Running>,
    proxy: Option<Running>,
    /// Where the load connects.
    addr: SocketAddr,
    server_name: String,
    /// The proxy's metrics: what the service answered the proxy.
    metrics: Metrics,
}

/// A component the rig started, and how to stop it.
struct Running {
    addr: SocketAddr,
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<()>,
}

impl Rig {
    pub async fn start(args: &RotationTestArgs, tmp: &Path) -> anyhow::Result<Rig> {
        match &args.target {
            Some(t) => Self::for_target(args, t).await,
            None => Self::embedded(args, tmp).await,
        }
    }

    async fn embedded(args: &RotationTestArgs, dir: &Path) -> anyhow::Result<Rig> {
        let opts = PkiOptions {
            key_type: args.key_type,
            ..PkiOptions::default()
        };
        let pki_dir = dir.join("pki");
        let manifest = pki::init(&pki_dir, &opts, false).context("generating the test PKI")?;
        let pki = PkiDir::new(&pki_dir, manifest.clone());
        let issuing = authority(&pki)?;
        let ca_pem = std::fs::read_to_string(pki.ca_cert())?;
        let client = client_identity(&manifest, None)?;
        let server = manifest.credentials.iter().find(|e| e.role == Role::Server);
        let mut steps = Steps::new(dir, args.key_type, issuing, ca_pem, client);
        steps.server_names = manifest.server_names.clone();
        steps.server_spiffe = server.and_then(|e| e.spiffe_id.clone());
        for d in ["serve", "proxy"] {
            std::fs::create_dir_all(dir.join(d))?;
        }
        steps.issue_server()?;
        steps.write_bundles()?;
        let serve = ServeArgs {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            cert: Some(dir.join("serve/tls.crt")),
            key: Some(dir.join("serve/tls.key")),
            client_ca: vec![dir.join("serve/client-ca.crt")],
            trust_domain: vec![manifest.trust_domain.clone()],
            no_watch: true,
            ..ServeArgs::default()
        };
        let service = Service::bind(serve.into_config()?).await?;
        let (stop, rx) = tokio::sync::oneshot::channel::<()>();
        let addr = service.local_addr();
        steps.serve = Some(service.handle());
        let task = tokio::spawn(service.run(async { drop(rx.await) }, Duration::from_secs(2)));
        let serve = Some(Running { addr, stop, task });
        let metrics = Metrics::start();
        let (client, cert, key) = steps.issue_client()?;
        let mut proxy = None;
        if args.mode == Mode::Handshake {
            steps.direct = Some(Direct::new(client, &steps.trusted_pem())?);
        } else {
            steps.write_client(&cert, &key)?;
            let mut p = ProxyArgs::for_upstream(&addr.to_string());
            p.listen = SocketAddr::from(([127, 0, 0, 1], 0));
            p.upstream_ca = vec![dir.join("proxy/upstream-ca.crt")];
            p.upstream_name = Some("localhost".into());
            p.client_cert = Some(dir.join("proxy/tls.crt"));
            p.client_key = Some(dir.join("proxy/tls.key"));
            p.admin = "off".into();
            p.no_watch = true;
            p.connect_timeout = Duration::from_secs(2);
            let bound = Proxy::bind(p.into_config()?, metrics.clone()).await?;
            let (stop, rx) = tokio::sync::oneshot::channel::<()>();
            let paddr = bound.local_addr();
            steps.proxy = Some(bound.handle());
            let task = tokio::spawn(bound.run(async { drop(rx.await) }));
            proxy = Some(Running {
                addr: paddr,
                stop,
                task,
            });
        }
        Ok(Rig {
            steps: Arc::new(steps),
            addr: proxy.as_ref().map_or(addr, |p| p.addr),
            serve,
            proxy,
            server_name: "localhost".into(),
            metrics,
        })
    }

    async fn for_target(args: &RotationTestArgs, target: &str) -> anyhow::Result<Rig> {
        let Some(pki_dir) = &args.pki else {
            anyhow::bail!("--pki: --target needs the PKI whose CA issues the rotated client certificates (and whose ca/ca.crt verifies the service)");
        };
        let pki = PkiDir::open(pki_dir)?;
        let manifest = pki.manifest();
        let addr = tokio::net::lookup_host(target)
            .await
            .with_context(|| format!("--target: cannot resolve {target}"))?
            .next()
            .with_context(|| format!("--target: {target} resolves to no address"))?;
        let ca_pem = std::fs::read_to_string(pki.ca_cert())
            .with_context(|| format!("reading {}", pki.ca_cert().display()))?;
        let client = client_identity(manifest, args.identity.as_deref())?;
        let mut steps = Steps::new(pki_dir, manifest.key_type, authority(&pki)?, ca_pem, client);
        let (client, _, _) = steps.issue_client()?;
        steps.direct = Some(Direct::new(client, &steps.trusted_pem())?);
        Ok(Rig {
            steps: Arc::new(steps),
            serve: None,
            proxy: None,
            addr,
            server_name: args
                .server_name
                .clone()
                .unwrap_or_else(|| "localhost".into()),
            metrics: Metrics::start(),
        })
    }

    /// The load's target.
    pub fn target(&self, args: &RotationTestArgs) -> Target {
        let tls = self.steps.direct.as_ref().map(|d| {
            let name = ServerName::try_from(self.server_name.clone()).unwrap_or_else(|_| {
                ServerName::try_from("localhost").expect("invariant: a valid DNS name")
            });
            (d.config.clone(), name)
        });
        Target {
            addr: self.addr,
            tls,
            method: hyper::Method::GET,
            path: args.path.clone(),
            authority: self.addr.to_string(),
            confirm_window: Duration::from_millis(100),
        }
    }

    pub fn topology(&self, args: &RotationTestArgs) -> &'static str {
        match (&self.proxy, &args.target) {
            (Some(_), _) => "load -> proxy -> serve (strict mTLS)",
            (None, Some(_)) => "load -> target (mTLS)",
            (None, None) => "load -> serve (strict mTLS)",
        }
    }

    pub fn info(&self, args: &RotationTestArgs) -> RunInfo {
        let tls = if self.steps.direct.is_some() {
            "mtls"
        } else {
            "off"
        };
        RunInfo {
            target: args.target.clone().unwrap_or_else(|| self.addr.to_string()),
            mode: args.mode.name().into(),
            tls: tls.into(),
        }
    }

    pub fn describe(&self) -> String {
        let mut s = String::new();
        if let Some(sv) = &self.serve {
            s.push_str(&format!("serve --mode strict on {}", sv.addr));
        }
        if let Some(p) = &self.proxy {
            s.push_str(&format!(
                ", proxy on {} presenting {}",
                p.addr, self.steps.client_cn
            ));
        }
        if self.serve.is_none() {
            s.push_str(&format!(
                "target {} presenting {}",
                self.addr, self.steps.client_cn
            ));
        }
        s
    }

    /// Behind the proxy: the outcome of every upstream connection, which
    /// names the cause the load only sees as a 502 (an alert, a failed
    /// verification). Empty without a proxy.
    pub async fn upstream_outcomes(&self) -> std::collections::BTreeMap<String, u64> {
        if self.proxy.is_none() {
            return Default::default();
        }
        let Ok(snap) = self.metrics.snapshot().await else {
            return Default::default();
        };
        let mut out = std::collections::BTreeMap::new();
        for (_, v) in snap.variants() {
            crate::metrics::add_counts(&mut out, &v.outcomes);
        }
        out
    }

    /// Perform one rotation of `kind`, marking each step.
    pub async fn rotate(
        &self,
        kind: Rotate,
        no_overlap: bool,
        interval: Duration,
        marks: &Marks,
    ) -> anyhow::Result<()> {
        match kind {
            Rotate::Client | Rotate::All => {
                self.off_runtime(marks, |steps, marks| {
                    let serial = steps.rotate_client()?;
                    marks.mark(RotationKind::Client, Some(serial));
                    Ok(())
                })
                .await
            }
            Rotate::Server => {
                self.off_runtime(marks, |steps, marks| {
                    let serial = steps.issue_server()?;
                    steps.reload_serve()?;
                    marks.mark(RotationKind::Server, Some(serial));
                    Ok(())
                })
                .await
            }
            Rotate::CaBundle => self.rotate_ca(no_overlap, interval, marks).await,
        }
    }

    /// Add the new root everywhere, issue from it, drop the old root. With
    /// `no_overlap`, issue first and switch the bundles after.
    async fn rotate_ca(
        &self,
        no_overlap: bool,
        interval: Duration,
        marks: &Marks,
    ) -> anyhow::Result<()> {
        let step = interval / 3;
        let root = self
            .off_runtime(marks, move |steps, marks| {
                let root = steps.new_root()?;
                if !no_overlap {
                    steps.trust_also(root.pem.clone())?;
                    marks.mark(RotationKind::CaAddRoot, Some(root.serial.clone()));
                }
                Ok(root)
            })
            .await?;
        if !no_overlap {
            tokio::time::sleep(step).await;
        }
        let NewRoot {
            authority,
            pem,
            serial,
        } = root;
        let serial = self
            .off_runtime(marks, move |steps, marks| {
                steps.issue_from(authority);
                steps.rotate_client()?;
                steps.issue_server()?;
                steps.reload_serve()?;
                marks.mark(RotationKind::CaIssue, Some(serial.clone()));
                Ok(serial)
            })
            .await?;
        tokio::time::sleep(step).await;
        self.off_runtime(marks, move |steps, marks| {
            steps.trust_only(pem)?;
            marks.mark(RotationKind::CaDropRoot, Some(serial));
            Ok(())
        })
        .await
    }

    /// Run one rotation step on the blocking pool, so that minting keys,
    /// writing files and reloading never stall the load sharing this
    /// runtime. The step marks the timeline itself, the moment it has
    /// published, not when this task is next polled.
    async fn off_runtime<R: Send + 'static>(
        &self,
        marks: &Marks,
        step: impl FnOnce(&Steps, &Marks) -> anyhow::Result<R> + Send + 'static,
    ) -> anyhow::Result<R> {
        let (steps, marks) = (self.steps.clone(), marks.clone());
        tokio::task::spawn_blocking(move || step(&steps, &marks))
            .await
            .context("a rotation step panicked")?
    }

    pub async fn stop(self) {
        for r in [self.proxy, self.serve].into_iter().flatten() {
            let _ = r.stop.send(());
            let _ = tokio::time::timeout(Duration::from_secs(3), r.task).await;
        }
    }
}

/// The CA that signs the rotated certificates: the PKI's issuing CA (its
/// intermediate when it has one, so a PKI issued under the user's own
/// intermediate mints without the root's key, which certshift never holds),
/// sent along with each leaf when it is not the root.
fn authority(pki: &PkiDir) -> anyhow::Result<Issuing> {
    let read =
        |f: &Path| std::fs::read_to_string(f).with_context(|| format!("reading {}", f.display()));
    let ca = pki.issuing_ca().unwrap_or_else(|| pki.ca());
    let cert_pem = read(&ca.cert)?;
    let authority = Authority::from_pem(&cert_pem, &read(&ca.key)?)?;
    let self_signed = CertFacts::from_der(&authority.cert).map_or(true, |f| f.self_signed);
    let chain_pem = if self_signed {
        String::new()
    } else {
        pki::pem_cert(&authority.cert)
    };
    Ok(Issuing {
        ca: authority,
        chain_pem,
    })
}

fn client_identity(
    m: &Manifest,
    identity: Option<&str>,
) -> anyhow::Result<(String, Option<String>)> {
    let service = identity
        .map(str::to_string)
        .or_else(|| m.services.first().cloned())
        .unwrap_or_default();
    let e = m.client(&service).with_context(|| {
        format!(
            "--identity: {service:?} is not a service of the PKI; it has {}",
            m.services.join(", ")
        )
    })?;
    Ok((service, e.spiffe_id.clone()))
}
