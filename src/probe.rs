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
use std::time::{Duration, Instant};

use http_body_util::{BodyExt, Empty, Limited};
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;
use rustls::ClientConfig;
use rustls_pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;

use crate::tls::{classify_io, classify_rustls, Outcome, TlsVersion};

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
    let tcp = match tokio::time::timeout(p.connect_timeout, TcpStream::connect(p.addr)).await {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => return ProbeResult::failed(classify_io(&e)),
        Err(_) => return ProbeResult::failed(Outcome::ConnectTimeout),
    };
    let _ = tcp.set_nodelay(true);
    let Some((config, name)) = &p.tls else {
        let (outcome, body) = request(p, tcp).await;
        return ProbeResult {
            outcome,
            tls_version: None,
            body,
            handshake: None,
            server_cert: None,
            key_exchange: None,
        };
    };
    let started = Instant::now();
    let connector = tokio_rustls::TlsConnector::from(config.clone());
    let tls = match tokio::time::timeout(p.handshake_timeout, connector.connect(name.clone(), tcp))
        .await
    {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => return ProbeResult::failed(classify_io(&e)),
        Err(_) => return ProbeResult::failed(Outcome::HandshakeTimeout),
    };
    let handshake = started.elapsed();
    let conn = tls.get_ref().1;
    let tls_version = conn.protocol_version().and_then(TlsVersion::of);
    let key_exchange = conn
        .negotiated_key_exchange_group()
        .map(|g| format!("{:?}", g.name()));
    let server_cert = conn
        .peer_certificates()
        .and_then(|c| c.first())
        .map(|c| c.clone().into_owned());
    let (outcome, body) = request(p, tls).await;
    ProbeResult {
        outcome,
        tls_version,
        body,
        handshake: Some(handshake),
        server_cert,
        key_exchange,
    }
}

async fn request<S>(p: &Probe, io: S) -> (Outcome, Option<Bytes>)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let req = hyper::Request::builder()
        .method(p.method.clone())
        .uri(&p.path)
        .header(hyper::header::HOST, p.addr.to_string())
        .header(hyper::header::CONNECTION, "close")
        .body(Empty::<Bytes>::new());
    let req = match req {
        Ok(r) => r,
        // The path comes from flags or code; an invalid one is a usage error.
        Err(e) => return (Outcome::Io(format!("invalid_request: {e}")), None),
    };
    let exchange = async {
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(io)).await?;
        let mut driver = AbortOnDrop(tokio::spawn(conn));
        match sender.send_request(req).await {
            Ok(resp) => Ok((resp, driver)),
            Err(e) => {
                // The request side only learns that the connection closed; the
                // cause (a TLS alert read after a TLS 1.3 handshake) is the
                // connection driver's error.
                match tokio::time::timeout(Duration::from_secs(1), &mut driver.0).await {
                    Ok(Ok(Err(cause))) => Err(cause),
                    _ => Err(e),
                }
            }
        }
    };
    let (resp, _driver) = match tokio::time::timeout(p.response_timeout, exchange).await {
        Ok(Ok(r)) => r,
        Ok(Err(e)) => return (classify_hyper(&e), None),
        Err(_) => return (Outcome::Timeout, None),
    };
    // The status line is the evidence; a body that stalls afterwards does not
    // turn an accepted request into a timeout.
    let status = resp.status().as_u16();
    let body = Limited::new(resp.into_body(), BODY_LIMIT).collect();
    let body = match tokio::time::timeout(p.response_timeout, body).await {
        Ok(Ok(b)) => Some(b.to_bytes()),
        _ => None,
    };
    (Outcome::Http(status), body)
}

/// Stops the connection task however the exchange ends.
pub(crate) struct AbortOnDrop<T>(pub(crate) tokio::task::JoinHandle<T>);

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Find the I/O or TLS error behind a hyper error.
pub(crate) fn classify_hyper(e: &hyper::Error) -> Outcome {
    let mut source: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(e);
    while let Some(s) = source {
        if let Some(io) = s.downcast_ref::<std::io::Error>() {
            return classify_io(io);
        }
        if let Some(tls) = s.downcast_ref::<rustls::Error>() {
            return classify_rustls(tls);
        }
        source = s.source();
    }
    if e.is_incomplete_message() || e.is_closed() || e.is_canceled() {
        Outcome::ClosedEarly
    } else {
        Outcome::Io(e.to_string())
    }
}
