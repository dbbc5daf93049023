//! Handshake cost against the reference service, and PKI generation cost.
//!
//! `handshake/*`: one full experiment as the demo and audit run it (TCP
//! connect, mTLS handshake presenting a valid client certificate, one
//! HTTP/1.1 request, response read) against `serve --mode strict` in-process
//! on loopback, per key type and TLS version. `pki_generate/*`: building a
//! whole test PKI in memory (every key and certificate, no disk).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use certshift::creds;
use certshift::pki::{self, KeyType, PkiOptions};
use certshift::probe::{self, Probe};
use certshift::serve::{ServeArgs, Service};
use certshift::tls::{client_config, ClientCert, Outcome, TlsVersion, TlsVersions};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use rustls_pki_types::ServerName;

fn handshake(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let mut group = c.benchmark_group("handshake");
    group
        .measurement_time(Duration::from_secs(3))
        .sample_size(50);
    for key_type in [KeyType::EcdsaP256, KeyType::Ed25519, KeyType::Rsa2048] {
        let dir = tempfile::tempdir().unwrap();
        let opts = PkiOptions {
            key_type,
            services: vec!["order-service".into()],
            ..PkiOptions::default()
        };
        pki::init(dir.path(), &opts, false).unwrap();
        let service = rt.block_on(async {
            let args = ServeArgs {
                listen: SocketAddr::from(([127, 0, 0, 1], 0)),
                pki: Some(dir.path().to_path_buf()),
                no_watch: true,
                ..ServeArgs::default()
            };
            Service::bind(args.into_config().unwrap()).await.unwrap()
        });
        let addr = service.local_addr();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let server = rt.spawn(service.run(async { drop(stopped.await) }, Duration::from_secs(1)));
        let roots = creds::load_roots(&[dir.path().join("ca/ca.crt")]).unwrap();
        let cert = creds::load_certified_key(
            &dir.path().join("clients/order-service/tls.crt"),
            &dir.path().join("clients/order-service/tls.key"),
        )
        .unwrap();
        for version in TlsVersion::ALL {
            let config = client_config(
                roots.clone(),
                ClientCert::Always(cert.clone()),
                &TlsVersions::only(version),
            )
            .unwrap();
            let name = ServerName::try_from("localhost").unwrap();
            let p = Probe::new(addr, Some((Arc::new(config), name)));
            let id = BenchmarkId::new(key_type.name(), format!("tls{version}"));
            group.bench_with_input(id, &p, |b, p| {
                b.to_async(&rt).iter(|| async {
                    let r = probe::run(p).await;
                    assert_eq!(r.outcome, Outcome::Http(200));
                })
            });
        }
        let _ = stop.send(());
        let _ = rt.block_on(server);
    }
    group.finish();
}

fn pki_generate(c: &mut Criterion) {
    let mut group = c.benchmark_group("pki_generate");
    group
        .sample_size(10)
        .measurement_time(Duration::from_secs(5));
    for key_type in [KeyType::EcdsaP256, KeyType::Ed25519, KeyType::Rsa2048] {
        let opts = PkiOptions {
            key_type,
            ..PkiOptions::default()
        };
        group.bench_function(key_type.name(), |b| {
            b.iter(|| pki::generate(&opts, time::OffsetDateTime::now_utc()).unwrap())
        });
    }
    group.finish();
}

criterion_group!(benches, handshake, pki_generate);
criterion_main!(benches);
