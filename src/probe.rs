//! One experiment against an mTLS endpoint: connect, handshake presenting a
//! chosen certificate, send one HTTP/1.1 request, read the answer, and
//! classify what happened. The demo, the audit and the tests all judge a
//! service through this one path.
//!
//! Every phase has its own timeout, and acceptance is decided by the HTTP
//! response, never by the handshake: a TLS 1.3 server refuses a client
//! certificate only after the client's handshake has completed.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hyper::body::Bytes;
use rustls::ClientConfig;
use rustls_pki_types::{CertificateDer, ServerName};
use tokio::time::Instant;

use crate::net::{self, http, HttpClient, Stream, Timeouts};
use crate::tls::{Outcome, TlsVersion};

/// Largest response body a probe keeps.
const BODY_LIMIT: usize = 64 * 1024;

/// Where and how to probe.
#[derive(Clone)]
pub struct Probe {
    pub addr: SocketAddr,
    /// TLS client config and the server name to verify; `None` for plaintext.
    pub tls: Option<(Arc<ClientConfig>, ServerName<'static>)>,
    pub method: hyper::Method,
    pub path: String,
    pub connect_timeout: Duration,
    pub handshake_timeout: Duration,
    /// Time allowed for the response once the handshake is done.
    pub response_timeout: Duration,
}

impl Probe {
    pub fn new(addr: SocketAddr, tls: Option<(Arc<ClientConfig>, ServerName<'static>)>) -> Self {
        Probe {
            addr,
            tls,
            method: hyper::Method::GET,
            path: "/".into(),
            connect_timeout: Duration::from_secs(5),
            handshake_timeout: Duration::from_secs(10),
            response_timeout: Duration::from_secs(10),
        }
    }

    pub fn path(mut self, path: &str) -> Self {
        self.path = path.to_string();
        self
    }

    pub fn method(mut self, method: hyper::Method) -> Self {
        self.method = method;
        self
    }
}

/// What a probe saw.
#[derive(Debug, Clone)]
pub struct ProbeResult {
    pub outcome: Outcome,
    /// Negotiated version, when the client's side of the handshake completed.
    pub tls_version: Option<TlsVersion>,
    pub body: Option<Bytes>,
    pub handshake: Option<Duration>,
    /// The server's leaf certificate, when the handshake got that far.
    pub server_cert: Option<CertificateDer<'static>>,
    /// The negotiated key-exchange group (e.g. `X25519MLKEM768`), which
    /// dominates handshake cost.
    pub key_exchange: Option<String>,
    /// Whether the handshake resumed an earlier session.
    pub resumed: Option<bool>,
}

impl ProbeResult {
    fn failed(outcome: Outcome) -> Self {
        ProbeResult {
            outcome,
            tls_version: None,
            body: None,
            handshake: None,
            server_cert: None,
            key_exchange: None,
            resumed: None,
        }
    }

    /// The body as text (lossy), for messages and assertions.
    pub fn body_text(&self) -> String {
        self.body
            .as_ref()
            .map(|b| String::from_utf8_lossy(b).into_owned())
            .unwrap_or_default()
    }
}

/// Run one probe.
pub async fn run(p: &Probe) -> ProbeResult {
    let t = Timeouts::per_phase(p.connect_timeout, p.handshake_timeout);
    let opened = match net::open(p.addr, p.tls.as_ref(), t).await {
        Ok(o) => o,
        Err(f) => return ProbeResult::failed(f.outcome),
    };
    let handshake = opened.handshake_time();
    let tls = opened.tls.unwrap_or_default();
    let (outcome, body) = request(p, opened.stream).await;
    ProbeResult {
        outcome,
        tls_version: tls.version,
        body,
        handshake,
        server_cert: tls.server_cert,
        key_exchange: tls.key_exchange,
        resumed: tls.resumed,
    }
}

async fn request(p: &Probe, io: Stream) -> (Outcome, Option<Bytes>) {
    let req = match http::request(&p.method, &p.path, &p.addr.to_string(), true) {
        Ok(r) => r,
        Err(o) => return (o, None),
    };
    let until = Instant::now() + p.response_timeout;
    let mut client = match HttpClient::handshake(io, until).await {
        Ok(c) => c,
        Err(o) => return (o, None),
    };
    let resp = match client.send(req, until).await {
        Ok(r) => r,
        Err(o) => return (o, None),
    };
    // The status line is the evidence; a body that stalls afterwards does not
    // turn an accepted request into a timeout.
    let status = resp.status().as_u16();
    let body = client
        .collect(resp, BODY_LIMIT, Instant::now() + p.response_timeout)
        .await;
    (Outcome::Http(status), body)
}
