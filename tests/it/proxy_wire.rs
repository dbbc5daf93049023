//! `--swap request` relays HTTP/1.1 messages of every framing over its
//! pooled upstream connection: chunked and long bodies split across reads,
//! `HEAD`, a `100 Continue` before the response, request bodies with and
//! without a length, and a body that runs until the service closes (that
//! connection is then not reused; the client's connection stays open);
//! and a request body from an HTTP/2 client.
//! The service is a scripted strict-mTLS HTTP/1.1 server; the client one
//! hyper keep-alive connection.

use crate::common;

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use certshift::tls::{server_config, ClientAuth, TlsVersions};
use common::*;
use http_body_util::{BodyExt, Full};
use hyper::body::{Body, Bytes, Frame};
use hyper::{Method, Request};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const BIG: usize = 200_000;

fn big_body() -> Vec<u8> {
    (0..BIG).map(|i| (i % 251) as u8).collect()
}

/// A strict mTLS service answering by path; counts its connections.
async fn scripted_service(pki: &TestPki) -> (SocketAddr, Arc<AtomicUsize>) {
    let files = certshift::creds::ServerFiles {
        cert: pki.file("server/tls.crt"),
        key: pki.file("server/tls.key"),
        client_cas: vec![pki.file("ca/ca.crt")],
        crls: vec![],
    };
    let material = files
        .read(
            &mut certshift::creds::Sources::default(),
            &["cluster.local".to_string()],
        )
        .unwrap();
    let config = server_config(material, ClientAuth::Required, &TlsVersions::all()).unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let accepted = Arc::new(AtomicUsize::new(0));
    let count = accepted.clone();
    tokio::spawn(async move {
        while let Ok((s, _)) = listener.accept().await {
            count.fetch_add(1, Ordering::Relaxed);
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                if let Ok(tls) = acceptor.accept(s).await {
                    let _ = answer(tls).await;
                }
            });
        }
    });
    (addr, accepted)
}

/// One connection: each request read whole, answered by its path.
async fn answer<S: AsyncRead + AsyncWrite + Unpin>(mut s: S) -> std::io::Result<()> {
    let mut buf = Vec::new();
    for _ in 0..100 {
        let (method, path, body) = match read_request(&mut s, &mut buf).await? {
            Some(r) => r,
            None => return Ok(()),
        };
        match (method.as_str(), path.as_str()) {
            (_, "/chunked") => {
                s.write_all(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhel")
                    .await?;
                s.flush().await?;
                tokio::time::sleep(Duration::from_millis(5)).await;
                s.write_all(b"lo\r\n6;ext=1\r\n world\r\n0\r\nX-Trailer: t\r\n\r\n")
                    .await?;
            }
            ("HEAD", "/big") => {
                s.write_all(format!("HTTP/1.1 200 OK\r\nContent-Length: {BIG}\r\n\r\n").as_bytes())
                    .await?;
            }
            (_, "/big") => {
                s.write_all(format!("HTTP/1.1 200 OK\r\nContent-Length: {BIG}\r\n\r\n").as_bytes())
                    .await?;
                for piece in big_body().chunks(70_000) {
                    s.write_all(piece).await?;
                    s.flush().await?;
                    tokio::time::sleep(Duration::from_millis(2)).await;
                }
            }
            (_, "/echo") => {
                let text = format!("{method} {} {}", body.len(), String::from_utf8_lossy(&body));
                s.write_all(
                    format!(
                        "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{text}",
                        text.len()
                    )
                    .as_bytes(),
                )
                .await?;
            }
            (_, "/continue") => {
                s.write_all(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 201 Created\r\nContent-Length: 2\r\n\r\nok")
                    .await?;
            }
            (_, "/close") => {
                s.write_all(b"HTTP/1.1 200 OK\r\n\r\nuntil the close")
                    .await?;
                s.flush().await?;
                s.shutdown().await?;
                return Ok(());
            }
            _ => {
                s.write_all(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n")
                    .await?;
            }
        }
        s.flush().await?;
    }
    Ok(())
}

/// The next request: method, path, body (by Content-Length or chunked).
async fn read_request<S: AsyncRead + Unpin>(
    s: &mut S,
    buf: &mut Vec<u8>,
) -> std::io::Result<Option<(String, String, Vec<u8>)>> {
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        if !fill(s, buf).await? {
            return Ok(None);
        }
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    buf.drain(..head_end);
    let mut words = head.split_whitespace();
    let method = words.next().unwrap_or_default().to_string();
    let path = words.next().unwrap_or_default().to_string();
    let field = |name: &str| {
        head.lines().find_map(|l| {
            let (n, v) = l.split_once(':')?;
            n.eq_ignore_ascii_case(name).then(|| v.trim().to_string())
        })
    };
    let mut body = Vec::new();
    if field("transfer-encoding").is_some_and(|v| v.eq_ignore_ascii_case("chunked")) {
        loop {
            let line_end = loop {
                if let Some(i) = buf.windows(2).position(|w| w == b"\r\n") {
                    break i;
                }
                assert!(fill(s, buf).await?, "closed mid-chunk");
            };
            let size = usize::from_str_radix(std::str::from_utf8(&buf[..line_end]).unwrap(), 16)
                .expect("a chunk size");
            buf.drain(..line_end + 2);
            while buf.len() < size + 2 {
                assert!(fill(s, buf).await?, "closed mid-chunk");
            }
            body.extend_from_slice(&buf[..size]);
            buf.drain(..size + 2);
            if size == 0 {
                break;
            }
        }
    } else if let Some(n) = field("content-length") {
        let n: usize = n.parse().unwrap();
        while buf.len() < n {
            assert!(fill(s, buf).await?, "closed mid-body");
        }
        body = buf.drain(..n).collect();
    }
    Ok(Some((method, path, body)))
}

async fn fill<S: AsyncRead + Unpin>(s: &mut S, buf: &mut Vec<u8>) -> std::io::Result<bool> {
    let mut chunk = [0u8; 16 * 1024];
    let n = s.read(&mut chunk).await?;
    buf.extend_from_slice(&chunk[..n]);
    Ok(n > 0)
}

/// A request body of unknown length: hyper sends it chunked.
struct Pieces(VecDeque<Bytes>);

impl Body for Pieces {
    type Data = Bytes;
    type Error = std::convert::Infallible;
    fn poll_frame(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        Poll::Ready(self.0.pop_front().map(|b| Ok(Frame::data(b))))
    }
}

type AnyBody = http_body_util::combinators::BoxBody<Bytes, std::convert::Infallible>;

/// One request on the kept-alive client connection; the head and whole body.
async fn exchange(
    client: &mut hyper::client::conn::http1::SendRequest<AnyBody>,
    method: Method,
    path: &str,
    body: AnyBody,
) -> (hyper::http::response::Parts, Bytes) {
    let limit = Duration::from_secs(10);
    tokio::time::timeout(limit, client.ready())
        .await
        .expect("ready in time")
        .expect("the client connection still open");
    let req = Request::builder()
        .method(method)
        .uri(path)
        .header("host", "order.example")
        .body(body)
        .unwrap();
    let resp = tokio::time::timeout(limit, client.send_request(req))
        .await
        .expect("a response in time")
        .expect("a response");
    let (parts, body) = resp.into_parts();
    let body = tokio::time::timeout(limit, body.collect())
        .await
        .expect("the body in time")
        .expect("the whole body")
        .to_bytes();
    (parts, body)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_framing_is_relayed_and_only_a_cleanly_ended_connection_is_reused() {
    let pki = TestPki::default_flat();
    let (service, accepted) = scripted_service(&pki).await;
    let mut args = proxy_args(&pki, service);
    args.swap = Some("request".into());
    let proxy = start_proxy(args).await;

    let stream = TcpStream::connect(proxy.addr).await.unwrap();
    let (mut client, conn) =
        hyper::client::conn::http1::handshake::<_, AnyBody>(hyper_util::rt::TokioIo::new(stream))
            .await
            .unwrap();
    let downstream = tokio::spawn(conn);
    let empty = || Full::new(Bytes::new()).boxed();

    let (p, b) = exchange(&mut client, Method::GET, "/chunked", empty()).await;
    assert_eq!(p.status, 200);
    assert_eq!(b, "hello world", "chunks decoded, trailers dropped");
    assert_eq!(p.headers["x-certshift-outcome"], "http:200");
    assert_eq!(p.headers["x-certshift-variant"], "valid");

    let (p, b) = exchange(&mut client, Method::GET, "/big", empty()).await;
    assert_eq!(p.status, 200);
    assert_eq!(p.headers["content-length"], BIG.to_string().as_str());
    assert!(b == big_body(), "{BIG} bytes across reads, in order");

    let (p, b) = exchange(&mut client, Method::HEAD, "/big", empty()).await;
    assert_eq!((p.status.as_u16(), b.len()), (200, 0));
    assert_eq!(p.headers["content-length"], BIG.to_string().as_str());

    let (p, b) = exchange(
        &mut client,
        Method::POST,
        "/echo",
        Full::new(Bytes::from("abc")).boxed(),
    )
    .await;
    assert_eq!((p.status.as_u16(), &b[..]), (200, &b"POST 3 abc"[..]));

    let pieces = Pieces(["ab", "", "cde", "f"].map(Bytes::from).into());
    let (p, b) = exchange(&mut client, Method::PUT, "/echo", pieces.boxed()).await;
    assert_eq!(
        (p.status.as_u16(), &b[..]),
        (200, &b"PUT 6 abcdef"[..]),
        "a body without a length goes upstream chunked"
    );

    let (p, b) = exchange(&mut client, Method::GET, "/continue", empty()).await;
    assert_eq!((p.status.as_u16(), &b[..]), (201, &b"ok"[..]));
    assert_eq!(
        accepted.load(Ordering::Relaxed),
        1,
        "one pooled upstream connection so far"
    );

    let (p, b) = exchange(&mut client, Method::GET, "/close", empty()).await;
    assert_eq!((p.status.as_u16(), &b[..]), (200, &b"until the close"[..]));
    let (p, b) = exchange(&mut client, Method::GET, "/chunked", empty()).await;
    assert_eq!((p.status.as_u16(), &b[..]), (200, &b"hello world"[..]));
    assert_eq!(
        accepted.load(Ordering::Relaxed),
        2,
        "a body that ran until the close ended that upstream connection"
    );
    assert!(
        !downstream.is_finished(),
        "the client's connection stays open"
    );

    // HTTP/2 downstream: no Host header (`:authority` becomes it), a body.
    let url = format!("http://{}/echo", proxy.addr);
    let (body, code) = tokio::task::spawn_blocking(move || {
        curl(&["--http2-prior-knowledge", "--data-binary", "over h2", &url])
    })
    .await
    .unwrap();
    assert_eq!((code.as_str(), body.as_str()), ("200", "POST 7 over h2"));

    let snap = proxy.stop().await;
    assert_eq!(snap.totals().connections, 9, "one report per request");
}
