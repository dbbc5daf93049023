//! Set-up the benchmarks share: a test PKI from the project's own `pki`
//! module, and `serve --mode strict` in-process on loopback.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use certshift::creds;
use certshift::pki::{self, KeyType, PkiOptions};
use certshift::serve::{ServeArgs, Service};
use rustls::sign::CertifiedKey;
use rustls::RootCertStore;
use tempfile::TempDir;

/// A PKI with one service, `order-service`, whose identity the benchmarks present.
pub fn order_service_pki(key_type: KeyType) -> TempDir {
    let dir = tempfile::tempdir().unwrap();
    let opts = PkiOptions {
        key_type,
        services: vec!["order-service".into()],
        ..PkiOptions::default()
    };
    pki::init(dir.path(), &opts, false).unwrap();
    dir
}

pub fn roots(dir: &Path) -> RootCertStore {
    creds::load_roots(&[dir.join("ca/ca.crt")]).unwrap()
}

pub fn order_service_cert(dir: &Path) -> Arc<CertifiedKey> {
    creds::load_certified_key(
        &dir.join("clients/order-service/tls.crt"),
        &dir.join("clients/order-service/tls.key"),
    )
    .unwrap()
}

/// A running `serve`; it stops when this is stopped or dropped.
pub struct Serving {
    pub addr: SocketAddr,
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<()>,
}

impl Serving {
    pub async fn stop(self) {
        let _ = self.stop.send(());
        let _ = self.task.await;
    }
}

/// `serve --mode strict --pki DIR` on 127.0.0.1:0, with room for bursts.
pub async fn start_serve(dir: &Path) -> Serving {
    let args = ServeArgs {
        listen: SocketAddr::from(([127, 0, 0, 1], 0)),
        pki: Some(dir.to_path_buf()),
        no_watch: true,
        max_connections: 4096,
        ..ServeArgs::default()
    };
    let service = Service::bind(args.into_config().unwrap()).await.unwrap();
    let addr = service.local_addr();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(service.run(async { drop(stopped.await) }, Duration::from_secs(1)));
    Serving { addr, stop, task }
}
