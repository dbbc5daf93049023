//! `certshift demo`: the README's main job on the embedded default. A test
//! PKI in a temporary directory, the reference service in strict mode on a
//! free loopback port, and every client credential and bad variant presented
//! over TLS 1.2 and 1.3, with the verdict each got.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use rustls_pki_types::ServerName;

use crate::creds;
use crate::pki::{self, Expect, KeyType, Manifest, PkiOptions};
use crate::probe::{self, Probe};
use crate::serve::{Mode, ServeArgs, Service};
use crate::tls::{client_config, ClientCert, Outcome, TlsVersion, TlsVersions, Verdict};

/// `certshift demo` options.
#[derive(Debug, Clone, clap::Args)]
pub struct DemoArgs {
    /// Key algorithm of the generated PKI.
    #[arg(long, value_enum, default_value_t = KeyType::EcdsaP256)]
    pub key_type: KeyType,
    /// Keep the generated PKI in DIR (must be empty) instead of a temporary directory.
    #[arg(long, value_name = "DIR")]
    pub keep_pki: Option<PathBuf>,
    /// Write the verdict matrix as JSON.
    #[arg(long, value_name = "FILE")]
    pub json: Option<PathBuf>,
}

/// One credential presented over one TLS version.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Row {
    /// Credential name: a service (valid identity), a variant, or `none`.
    pub credential: String,
    pub variant: String,
    pub tls_version: TlsVersion,
    pub expected: Expect,
    pub observed: Outcome,
    pub pass: bool,
}

impl Row {
    fn new(
        credential: &str,
        variant: &str,
        tls_version: TlsVersion,
        expected: Expect,
        observed: Outcome,
    ) -> Self {
        let pass = matches!(
            (expected, observed.verdict()),
            (Expect::Accept, Verdict::Accepted) | (Expect::Reject, Verdict::Refused)
        );
        Row {
            credential: credential.into(),
            variant: variant.into(),
            tls_version,
            expected,
            observed,
            pass,
        }
    }

    pub fn verdict(&self) -> &'static str {
        match (self.pass, self.expected, self.observed.verdict()) {
            (true, _, _) => "PASS",
            (false, _, Verdict::Inconclusive) => "FAIL: inconclusive (no answer from the service)",
            (false, Expect::Reject, _) => "FAIL: enforcement hole",
            (false, Expect::Accept, _) => "FAIL: wrongly refused",
        }
    }
}

/// Run the demo; `Ok(false)` when a verdict was wrong.
pub async fn run(args: &DemoArgs) -> anyhow::Result<bool> {
    let tmp;
    let dir: &Path = match &args.keep_pki {
        Some(d) => d,
        None => {
            tmp = tempfile::tempdir().context("creating a temporary directory for the PKI")?;
            tmp.path()
        }
    };
    let opts = PkiOptions {
        key_type: args.key_type,
        intermediate: true,
        ..PkiOptions::default()
    };
    let manifest = pki::init(dir, &opts, false).context("generating the demo PKI")?;
    println!(
        "test PKI ({}, with an intermediate CA) in {}",
        manifest.key_type,
        dir.display()
    );

    let serve = ServeArgs {
        listen: SocketAddr::from(([127, 0, 0, 1], 0)),
        pki: Some(dir.to_path_buf()),
        mode: Mode::Strict,
        no_watch: true,
        ..ServeArgs::default()
    };
    let service = Service::bind(serve.into_config()?).await?;
    let addr = service.local_addr();
    println!("certshift serve --mode strict listening on {addr}\n");
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(service.run(async { drop(stop_rx.await) }, Duration::from_secs(2)));

    let rows = matrix(addr, dir, &manifest, &TlsVersions::all()).await?;
    let _ = stop_tx.send(());
    let _ = server.await;

    print!("{}", render(&rows));
    let failed = rows.iter().filter(|r| !r.pass).count();
    println!(
        "\n{} checks: {} as a strict mTLS server must answer, {failed} wrong",
        rows.len(),
        rows.len() - failed
    );
    if let Some(path) = &args.json {
        std::fs::write(path, serde_json::to_vec_pretty(&rows)?)
            .with_context(|| format!("writing {}", path.display()))?;
        println!("verdict matrix written to {}", path.display());
    }
    Ok(failed == 0)
}

/// Present every client credential of `manifest` (and no certificate at all)
/// to the service at `addr`, once per TLS version.
pub async fn matrix(
    addr: SocketAddr,
    dir: &Path,
    manifest: &Manifest,
    versions: &TlsVersions,
) -> anyhow::Result<Vec<Row>> {
    let roots = creds::load_roots(&[dir.join("ca/ca.crt")])?;
    let name = ServerName::try_from(
        manifest
            .server_names
            .first()
            .cloned()
            .unwrap_or_else(|| "localhost".into()),
    )
    .context("server name of the PKI")?;
    let mut presented = vec![(
        "none".to_string(),
        "none".to_string(),
        Expect::Reject,
        ClientCert::None,
    )];
    for e in manifest.clients() {
        let ck = creds::load_certified_key(&dir.join(&e.cert), &dir.join(&e.key))?;
        let variant = e.variant.map(|v| v.name().to_string()).unwrap_or_default();
        presented.push((
            e.name.clone(),
            variant,
            e.expect.unwrap_or(Expect::Reject),
            ClientCert::Always(ck),
        ));
    }
    let mut rows = Vec::new();
    for version in versions.iter() {
        for (credential, variant, expected, cert) in &presented {
            let config = client_config(roots.clone(), cert.clone(), &TlsVersions::only(version))?;
            let p = Probe::new(addr, Some((Arc::new(config), name.clone()))).path("/api/demo");
            let observed = probe::run(&p).await.outcome;
            rows.push(Row::new(credential, variant, version, *expected, observed));
        }
    }
    Ok(rows)
}

/// The verdict matrix as an aligned table.
pub fn render(rows: &[Row]) -> String {
    let mut out = format!(
        "{:<22} {:<20} {:<4} {:<9} {:<30} {}\n",
        "credential", "variant", "tls", "expected", "observed", "verdict"
    );
    for r in rows {
        out += &format!(
            "{:<22} {:<20} {:<4} {:<9} {:<30} {}\n",
            r.credential,
            r.variant,
            r.tls_version.to_string(),
            r.expected.to_string(),
            r.observed.to_string(),
            r.verdict()
        );
    }
    out
}
