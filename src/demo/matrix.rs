//! The static verdict matrix: every client credential of a PKI (and no
//! certificate at all) presented once per TLS version to a service, with
//! the verdict each got. The audit and the tests judge services with it.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use anyhow::Context;
use rustls_pki_types::ServerName;

use crate::creds;
use crate::pki::{Expect, Manifest, PkiDir};
use crate::probe::{self, Probe};
use crate::tls::{client_config, ClientCert, Outcome, TlsVersion, TlsVersions, Verdict};

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
/// Present every client credential of `manifest` (and no certificate at all)
/// to the service at `addr`, once per TLS version.
pub async fn matrix(
    addr: SocketAddr,
    dir: &Path,
    manifest: &Manifest,
    versions: &TlsVersions,
) -> anyhow::Result<Vec<Row>> {
    let pki = PkiDir::new(dir, manifest.clone());
    let roots = creds::load_roots(&[pki.ca_cert()])?;
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
        let files = pki.files(e);
        let ck = creds::load_certified_key(&files.cert, &files.key)?;
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
