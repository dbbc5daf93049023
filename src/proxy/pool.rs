//! Upstream connections for `--swap request`, one pool per presented
//! credential: a request goes upstream over a connection that presented
//! exactly the credential picked for it.
//!
//! Owns: which credential value a new connection presents (a rotating
//! identity is pinned per connection, so the serial a response reports is
//! the one the service saw), the idle connections kept per credential
//! (`--upstream-pool`, none with `--upstream-reuse off`), and their retirement:
//! once the identity rotates, its old connections are never handed out
//! again (in-flight requests finish on them; idle ones are dropped when met).
//! Never: judges a response (that is `request`) or keeps statistics.
//!
//! Each credential's idle list has its own short mutex (a push or a pop);
//! connections never share one lock, and the credential in force is read
//! lock-free. A connection has no task of its own: whoever holds it (the
//! request, then the response body on its way to the client) drives it, so
//! a request's upstream I/O wakes the downstream connection's task
//! directly instead of handing every read and write across tasks (and
//! often across threads). An idle pooled connection is driven by nobody; a
//! close by the service is noticed when it is next checked out.

use std::collections::HashMap;
use std::future::{poll_fn, Future};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use arc_swap::ArcSwap;
use hyper::body::Incoming;
use hyper::client::conn::http1::SendRequest;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use rustls::sign::CertifiedKey;
use rustls::SignatureScheme;
use tokio::time::Instant;

use crate::net::{self, classify_hyper, Timeouts, TlsTarget};
use crate::plan::Presented;
use crate::tls::{self, Outcome};

/// How long a pooled connection may wait idle; services close idle
/// keep-alive connections too (nginx after 75 s), and a request sent on one
/// they are closing fails for no reason of the plan's.
const MAX_IDLE_AGE: Duration = Duration::from_secs(20);
/// How long a pooled connection gets to show it is ready for a request.
const READY_WAIT: Duration = Duration::from_millis(50);

/// One credential value as presented upstream.
pub(super) struct Credential {
    /// What the connections opened with it present; `None` for plaintext.
    target: Option<TlsTarget>,
    /// The certificate it presents (its identity, for retirement).
    key: Option<Arc<CertifiedKey>>,
    /// Hex serial of that certificate; `none` when nothing is presented.
    pub(super) serial: Arc<str>,
}

type Conn = hyper::client::conn::http1::Connection<TokioIo<net::Stream>, Incoming>;

/// An upstream HTTP/1.1 connection, checked out for one request.
pub(super) struct Upstream {
    sender: SendRequest<Incoming>,
    conn: Pin<Box<Conn>>,
    /// How the connection ended, once it has: the cause of a failed
    /// request (a TLS 1.3 alert surfaces here, not in the request's error).
    ended: Option<Result<(), hyper::Error>>,
    pub(super) credential: Arc<Credential>,
    idle_since: Instant,
}

impl Upstream {
    /// Let the connection do its reads and writes; `true` once it has ended.
    pub(super) fn drive(&mut self, cx: &mut Context<'_>) -> bool {
        drive(&mut self.conn, &mut self.ended, cx)
    }

    /// Whether the connection can take a request, waiting at most `wait`.
    async fn ready(&mut self, wait: Duration) -> bool {
        let ready = poll_fn(|cx| {
            if self.drive(cx) {
                return Poll::Ready(false);
            }
            self.sender.poll_ready(cx).map(|r| r.is_ok())
        });
        tokio::time::timeout(wait, ready).await.unwrap_or(false)
    }

    /// Send `req` and wait until `until` for the response head.
    pub(super) async fn send(
        &mut self,
        req: Request<Incoming>,
        until: Instant,
    ) -> Result<Response<Incoming>, Outcome> {
        let (conn, ended) = (&mut self.conn, &mut self.ended);
        let send = self.sender.send_request(req);
        tokio::pin!(send);
        let exchange = poll_fn(|cx| {
            drive(conn, ended, cx);
            send.as_mut().poll(cx)
        });
        match tokio::time::timeout_at(until, exchange).await {
            Ok(Ok(resp)) => Ok(resp),
            Ok(Err(e)) => Err(match &self.ended {
                Some(Err(cause)) => classify_hyper(cause),
                _ => classify_hyper(&e),
            }),
            Err(_) => Err(Outcome::Timeout),
        }
    }
}

fn drive(
    conn: &mut Pin<Box<Conn>>,
    ended: &mut Option<Result<(), hyper::Error>>,
    cx: &mut Context<'_>,
) -> bool {
    if ended.is_none() {
        if let Poll::Ready(r) = conn.as_mut().poll(cx) {
            *ended = Some(r);
        }
    }
    ended.is_some()
}

/// What opening a connection cost, when one was opened.
#[derive(Debug, Default, Clone, Copy)]
pub(super) struct Opening {
    pub(super) connect: Option<Duration>,
    pub(super) handshake: Option<Duration>,
}

struct Slot {
    /// As bind() built it: a fixed or rotating credential.
    base: Option<TlsTarget>,
    /// What to offer its resolver when asking what it presents now;
    /// computed once, since that question is asked per request.
    schemes: Vec<SignatureScheme>,
    current: ArcSwap<Credential>,
    idle: Mutex<Vec<Upstream>>,
}

/// Every presentable credential's pool.
pub(super) struct Upstreams {
    slots: HashMap<Presented, Slot>,
    addr: String,
    timeouts: Timeouts,
    max_idle: usize,
}

impl Upstreams {
    /// `targets`: bind()'s config per credential; `None` for a plaintext
    /// upstream (every credential then presents nothing).
    pub(super) fn new(
        targets: HashMap<Presented, Option<TlsTarget>>,
        addr: String,
        timeouts: Timeouts,
        max_idle: usize,
    ) -> Self {
        let slots = targets
            .into_iter()
            .map(|(presented, base)| {
                let schemes = base
                    .as_ref()
                    .map_or_else(Vec::new, |(config, _)| tls::offered_schemes(config));
                let current = ArcSwap::from_pointee(credential(base.as_ref(), &schemes));
                let slot = Slot {
                    base,
                    schemes,
                    current,
                    idle: Mutex::new(Vec::new()),
                };
                (presented, slot)
            })
            .collect();
        Upstreams {
            slots,
            addr,
            timeouts,
            max_idle,
        }
    }

    /// The credential `presented` stands for now: a rotated identity is a
    /// new value (and so a new pool).
    pub(super) fn credential(&self, presented: Presented) -> Option<Arc<Credential>> {
        let slot = self.slots.get(&presented)?;
        Some(slot.credential())
    }

    /// A connection presenting `presented`'s current credential: an idle one
    /// of the same credential if there is one, else a new one.
    pub(super) async fn checkout(
        &self,
        presented: Presented,
    ) -> Result<(Upstream, Opening), (Outcome, Option<Arc<Credential>>, Opening)> {
        let Some(slot) = self.slots.get(&presented) else {
            // bind() builds a config for every credential a plan can pick.
            let outcome = Outcome::Tls("no_config_for_variant".into());
            return Err((outcome, None, Opening::default()));
        };
        let credential = slot.credential();
        while let Some(mut up) = self.pop(slot) {
            let fresh = up.idle_since.elapsed() < MAX_IDLE_AGE;
            if fresh && Arc::ptr_eq(&up.credential, &credential) && up.ready(READY_WAIT).await {
                return Ok((up, Opening::default()));
            }
            // Retired (rotated away), stale or closed: dropping it closes it.
        }
        let mut opening = Opening::default();
        let opened = match net::open(
            self.addr.as_str(),
            credential.target.as_ref(),
            self.timeouts,
        )
        .await
        {
            Ok(o) => o,
            Err(f) => {
                opening.connect = f.connected.map(|c| c - f.started);
                return Err((f.outcome, Some(credential), opening));
            }
        };
        opening.connect = Some(opened.connected - opened.started);
        opening.handshake = opened.handshake_time();
        // HTTP/1.1 over an open stream: no I/O, nothing to time out.
        match hyper::client::conn::http1::handshake(TokioIo::new(opened.stream)).await {
            Ok((sender, conn)) => Ok((
                Upstream {
                    sender,
                    conn: Box::pin(conn),
                    ended: None,
                    credential,
                    idle_since: Instant::now(),
                },
                opening,
            )),
            Err(e) => Err((classify_hyper(&e), Some(credential), opening)),
        }
    }

    /// Give a connection back after its response ended cleanly. Kept only
    /// while its credential is still the one in force and there is room.
    pub(super) fn checkin(&self, presented: Presented, mut up: Upstream) {
        if self.max_idle == 0 || up.ended.is_some() || up.sender.is_closed() {
            return;
        }
        let Some(slot) = self.slots.get(&presented) else {
            return;
        };
        if !Arc::ptr_eq(&up.credential, &slot.current.load()) {
            return;
        }
        up.idle_since = Instant::now();
        let mut idle = lock(&slot.idle);
        if idle.len() < self.max_idle {
            idle.push(up);
        }
    }

    fn pop(&self, slot: &Slot) -> Option<Upstream> {
        lock(&slot.idle).pop()
    }
}

impl Slot {
    /// The credential in force; rebuilt (once per rotation) when the
    /// configured resolver now hands out another certificate.
    fn credential(&self) -> Arc<Credential> {
        let current = self.current.load_full();
        let Some((config, _)) = &self.base else {
            return current;
        };
        let now = tls::presented_by(config, &self.schemes);
        let same = match (&now, &current.key) {
            (Some(a), Some(b)) => Arc::ptr_eq(a, b),
            (None, None) => true,
            _ => false,
        };
        if same {
            return current;
        }
        let fresh = Arc::new(credential(self.base.as_ref(), &self.schemes));
        self.current.store(fresh.clone());
        fresh
    }
}

/// The credential `base` presents now, pinned: later rotations do not
/// change what a connection opened with it presents.
fn credential(base: Option<&TlsTarget>, schemes: &[SignatureScheme]) -> Credential {
    let Some((config, name)) = base else {
        return Credential {
            target: None,
            key: None,
            serial: Arc::from("none"),
        };
    };
    match tls::presented_by(config, schemes) {
        Some(ck) => {
            let serial = ck
                .cert
                .first()
                .map_or_else(String::new, crate::creds::serial_of);
            let pinned = Arc::new(tls::presenting(config, ck.clone()));
            Credential {
                target: Some((pinned, name.clone())),
                key: Some(ck),
                serial: Arc::from(serial),
            }
        }
        None => Credential {
            target: Some((config.clone(), name.clone())),
            key: None,
            serial: Arc::from("none"),
        },
    }
}

/// A poisoned idle list only means a panic mid push/pop of plain values.
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}
