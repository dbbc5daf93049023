//! Handshake cost against the reference service, and PKI generation cost.
//!
//! `handshake/*`: one full experiment as the demo and audit run it (TCP
//! connect, mTLS handshake presenting a valid client certificate, one
//! HTTP/1.1 request, response read) against `serve --mode strict` in-process
//! on loopback, per key type and TLS version. `pki_generate/*`: building a
//! whole test PKI in memory (every key and certificate, no disk).

mod common;

use std::sync::Arc;
use std::time::Duration;

use certshift::pki::{self, KeyType, PkiOptions};
use certshift::probe::{self, Probe};
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
        let dir = common::order_service_pki(key_type);
        let serving = rt.block_on(common::start_serve(dir.path()));
        let addr = serving.addr;
        let roots = common::roots(dir.path());
        let cert = common::order_service_cert(dir.path());
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
        rt.block_on(serving.stop());
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
