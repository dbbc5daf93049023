//! Which cipher suite certshift's servers (`serve`, the proxy's TLS
//! listener) pick, judged by OpenSSL's own client: the server's preference,
//! AES-128-GCM first, over a client that lists AES-256-GCM-SHA384 first
//! (OpenSSL's default order, and curl's and Python's); a client that
//! offers only AES-256 is still served.

use certshift::proxy::TlsMode;
use certshift::serve::Enforcement;

use crate::common;
use common::own_ca::{openssl, text};
use common::*;

/// `openssl s_client` with the order-service credential and `extra`
/// flags: the suite it reports, or the whole output when it reports none.
async fn negotiated(pki: &TestPki, addr: std::net::SocketAddr, extra: &[&str]) -> String {
    let dir = pki.path().to_path_buf();
    let connect = addr.to_string();
    let mut args: Vec<String> = [
        "s_client",
        "-connect",
        &connect,
        "-servername",
        "localhost",
        "-CAfile",
        "ca/ca.crt",
        "-cert",
        "clients/order-service/tls.crt",
        "-key",
        "clients/order-service/tls.key",
        "-verify_return_error",
        "-brief",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    args.extend(extra.iter().map(|s| s.to_string()));
    let out = tokio::task::spawn_blocking(move || {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        openssl(&dir, &args)
    })
    .await
    .expect("s_client thread");
    let all = text(&out);
    all.lines()
        .find_map(|l| l.strip_prefix("Ciphersuite: "))
        .map(str::to_string)
        .unwrap_or(all)
}

async fn picks_aes128_first(pki: &TestPki, addr: std::net::SocketAddr, who: &str) {
    let cases: [(&[&str], &str); 4] = [
        (&[], "TLS_AES_128_GCM_SHA256"),
        (
            &["-ciphersuites", "TLS_AES_256_GCM_SHA384"],
            "TLS_AES_256_GCM_SHA384",
        ),
        (&["-tls1_2"], "ECDHE-ECDSA-AES128-GCM-SHA256"),
        (
            &["-tls1_2", "-cipher", "ECDHE-ECDSA-AES256-GCM-SHA384"],
            "ECDHE-ECDSA-AES256-GCM-SHA384",
        ),
    ];
    for (extra, want) in cases {
        assert_eq!(negotiated(pki, addr, extra).await, want, "{who} {extra:?}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn servers_pick_aes128_gcm_over_an_openssl_client_listing_aes256_first() {
    if !have("openssl") {
        eprintln!("skipped: openssl not installed");
        return;
    }
    let pki = TestPki::default_flat();
    let serve = start_serve(&pki, Enforcement::Strict).await;
    picks_aes128_first(&pki, serve.addr, "serve").await;
    let mut args = proxy_args(&pki, serve.addr);
    args.listen_tls = TlsMode::Mtls;
    let proxy = start_proxy(args).await;
    picks_aes128_first(&pki, proxy.addr, "proxy --listen-tls mtls").await;
    proxy.stop().await;
    serve.stop().await;
}
