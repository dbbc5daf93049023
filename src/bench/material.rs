//! The credentials of one (key type, chain depth): a root, optionally an
//! intermediate, a server leaf and a client leaf with a SPIFFE ID, all of
//! the key type, issued by the project's own `pki` and written where
//! `serve` reads them (so the service under test loads them as it always does).

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use rustls::sign::CertifiedKey;
use rustls::RootCertStore;
use time::OffsetDateTime;

use super::BenchError;
use crate::creds::{self, ServerFiles};
use crate::pki::{key_pem, Authority, KeyType, LeafSpec, Usage};

/// The trust domain of the bench identities.
pub const TRUST_DOMAIN: &str = "cluster.local";
/// The name the client asks for (SNI) and the server leaf carries.
pub const SERVER_NAME: &str = "localhost";

/// One PKI, on disk in a temporary directory that lives as long as this.
pub struct Material {
    _dir: tempfile::TempDir,
    pub server: ServerFiles,
    pub roots: RootCertStore,
    pub client: Arc<CertifiedKey>,
    /// The server leaf's key pair: the limit measures its operations.
    pub server_key: rcgen::KeyPair,
}

impl Material {
    /// Issue and write everything for `key` (with an intermediate when asked).
    pub fn generate(key: KeyType, intermediate: bool) -> Result<Material, BenchError> {
        let now = OffsetDateTime::now_utc();
        let day = Duration::from_secs(86_400);
        let root = Authority::new_root("certshift bench root", key, now, day)?;
        let mid = match intermediate {
            true => Some(root.new_intermediate("certshift bench intermediate", key, now, day)?),
            false => None,
        };
        let issuer = mid.as_ref().unwrap_or(&root);
        let mut server = LeafSpec::new(SERVER_NAME, Usage::Server, now, day);
        server.names = vec![SERVER_NAME.into(), "127.0.0.1".into()];
        let server = issuer.issue(&server, key)?;
        let mut client = LeafSpec::new("bench-client", Usage::Client, now, day);
        client.spiffe_id = Some(format!("spiffe://{TRUST_DOMAIN}/ns/bench/sa/bench-client"));
        let client = issuer.issue(&client, key)?;
        // A CRL from the issuer, as `serve --pki` always has: the service
        // checks revocation in every bench cell, as it does in production.
        let crl = issuer.crl(&[], now, day)?;

        let dir = tempfile::Builder::new()
            .prefix("certshift-bench-")
            .tempdir()
            .map_err(|e| BenchError::Io(format!("creating a temporary directory: {e}")))?;
        let chain = |leaf: &str| match &mid {
            Some(m) => format!("{leaf}{}", crate::pki::pem_cert(&m.cert)),
            None => leaf.to_string(),
        };
        let d = dir.path();
        let files = [
            ("server.crt", chain(&server.cert_pem())),
            ("server.key", key_pem(&server.key)),
            ("client.crt", chain(&client.cert_pem())),
            ("client.key", key_pem(&client.key)),
            ("ca.crt", crate::pki::pem_cert(&root.cert)),
            ("crl.pem", crl),
        ];
        for (name, text) in &files {
            write(&d.join(name), text)?;
        }
        let mut roots = RootCertStore::empty();
        roots
            .add(root.cert.clone())
            .map_err(|e| BenchError::Io(format!("trusting the bench root: {e}")))?;
        let client = creds::load_certified_key(&d.join("client.crt"), &d.join("client.key"))?;
        Ok(Material {
            server: ServerFiles {
                cert: d.join("server.crt"),
                key: d.join("server.key"),
                client_cas: vec![d.join("ca.crt")],
                crls: vec![d.join("crl.pem")],
            },
            roots,
            client,
            server_key: server.key,
            _dir: dir,
        })
    }
}

fn write(path: &Path, text: &str) -> Result<(), BenchError> {
    std::fs::write(path, text)
        .map_err(|e| BenchError::Io(format!("writing {}: {e}", path.display())))
}
