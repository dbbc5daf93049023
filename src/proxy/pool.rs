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
//! lock-free.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::ArcSwap;
use hyper::body::Incoming;
use rustls::sign::CertifiedKey;
use tokio::time::Instant;

use crate::net::{self, HttpClient, Timeouts, TlsTarget};
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

/// An upstream HTTP/1.1 connection, checked out for one request.
pub(super) struct Upstream {
    pub(super) client: HttpClient<Incoming>,
    pub(super) credential: Arc<Credential>,
    idle_since: Instant,
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
                let current = ArcSwap::from_pointee(credential(base.as_ref()));
                let slot = Slot {
                    base,
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
            if fresh
                && Arc::ptr_eq(&up.credential, &credential)
                && matches!(up.client.ready(Instant::now() + READY_WAIT).await, Ok(true))
            {
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
        let until = Instant::now() + self.timeouts.handshake;
        match HttpClient::handshake(opened.stream, until).await {
            Ok(client) => Ok((
                Upstream {
                    client,
                    credential,
                    idle_since: Instant::now(),
                },
                opening,
            )),
            Err(outcome) => Err((outcome, Some(credential), opening)),
        }
    }

    /// Give a connection back after its response ended cleanly. Kept only
    /// while its credential is still the one in force and there is room.
    pub(super) fn checkin(&self, presented: Presented, mut up: Upstream) {
        if self.max_idle == 0 || up.client.is_closed() {
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
        let now = tls::presented_by(config);
        let same = match (&now, &current.key) {
            (Some(a), Some(b)) => Arc::ptr_eq(a, b),
            (None, None) => true,
            _ => false,
        };
        if same {
            return current;
        }
        let fresh = Arc::new(credential(self.base.as_ref()));
        self.current.store(fresh.clone());
        fresh
    }
}

/// The credential `base` presents now, pinned: later rotations do not
/// change what a connection opened with it presents.
fn credential(base: Option<&TlsTarget>) -> Credential {
    let Some((config, name)) = base else {
        return Credential {
            target: None,
            key: None,
            serial: Arc::from("none"),
        };
    };
    match tls::presented_by(config) {
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
