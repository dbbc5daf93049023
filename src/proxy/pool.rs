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
//! request, then the response body on its way to the client) reads and
//! writes it (`wire`), so a request's upstream I/O wakes the downstream
//! connection's task directly instead of handing every read and write
//! across tasks (and often across threads). An idle pooled connection is
//! driven by nobody; a close by the service is noticed when it is next
//! checked out.

use std::collections::HashMap;
use std::future::{poll_fn, Future};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::Poll;
use std::time::Duration;

use arc_swap::ArcSwap;
use hyper::body::Incoming;
use hyper::header::HeaderValue;
use rustls::sign::CertifiedKey;
use rustls::SignatureScheme;
use tokio::time::{Instant, Sleep};

use super::wire::{Head, Wire};
use crate::net::{self, Timeouts, TlsTarget};
use crate::plan::Presented;
use crate::tls::{self, Outcome};

/// How long a pooled connection may wait idle; services close idle
/// keep-alive connections too (nginx after 75 s), and a request sent on one
/// they are closing fails for no reason of the plan's.
const MAX_IDLE_AGE: Duration = Duration::from_secs(20);
/// One credential value as presented upstream.
pub(super) struct Credential {
    /// What the connections opened with it present; `None` for plaintext.
    target: Option<TlsTarget>,
    /// The certificate it presents (its identity, for retirement).
    key: Option<Arc<CertifiedKey>>,
    /// Hex serial of that certificate; `none` when nothing is presented.
    pub(super) serial: Arc<str>,
    /// `serial` as the `x-certshift-serial` value, built once.
    pub(super) serial_value: Option<HeaderValue>,
}

/// An upstream HTTP/1.1 connection, checked out for one request.
pub(super) struct Upstream {
    pub(super) wire: Wire,
    /// The request's deadline: one timer per connection, reset per
    /// request, rather than one created and dropped per request.
    deadline: Pin<Box<Sleep>>,
    pub(super) credential: Arc<Credential>,
    idle_since: Instant,
}

impl Upstream {
    fn new(wire: Wire, credential: Arc<Credential>) -> Self {
        let now = Instant::now();
        Upstream {
            wire,
            deadline: Box::pin(tokio::time::sleep_until(now)),
            credential,
            idle_since: now,
        }
    }

    /// Send the request and wait until `until` for the response head.
    pub(super) async fn send(
        &mut self,
        parts: &hyper::http::request::Parts,
        body: Incoming,
        host: &str,
        until: Instant,
    ) -> Result<Head, Outcome> {
        let deadline = &mut self.deadline;
        deadline.as_mut().reset(until);
        let exchange = self.wire.send(parts, body, host);
        tokio::pin!(exchange);
        poll_fn(|cx| {
            if let Poll::Ready(r) = exchange.as_mut().poll(cx) {
                return Poll::Ready(r);
            }
            match deadline.as_mut().poll(cx) {
                Poll::Ready(()) => Poll::Ready(Err(Outcome::Timeout)),
                Poll::Pending => Poll::Pending,
            }
        })
        .await
    }
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
            if fresh && Arc::ptr_eq(&up.credential, &credential) && up.wire.idle_and_open() {
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
        Ok((Upstream::new(Wire::new(opened.stream), credential), opening))
    }

    /// Give a connection back after its response ended cleanly. Kept only
    /// while its credential is still the one in force and there is room.
    pub(super) fn checkin(&self, presented: Presented, mut up: Upstream) {
        if self.max_idle == 0 || !up.wire.reusable() {
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
        return Credential::new(None, None, "none");
    };
    match tls::presented_by(config, schemes) {
        Some(ck) => {
            let serial = ck
                .cert
                .first()
                .map_or_else(String::new, crate::creds::serial_of);
            let pinned = Arc::new(tls::presenting(config, ck.clone()));
            Credential::new(Some((pinned, name.clone())), Some(ck), &serial)
        }
        None => Credential::new(Some((config.clone(), name.clone())), None, "none"),
    }
}

impl Credential {
    fn new(target: Option<TlsTarget>, key: Option<Arc<CertifiedKey>>, serial: &str) -> Self {
        Credential {
            target,
            key,
            serial: Arc::from(serial),
            serial_value: HeaderValue::from_str(serial).ok(),
        }
    }
}

/// A poisoned idle list only means a panic mid push/pop of plain values.
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}
