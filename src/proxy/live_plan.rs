//! The plan as a published value: `PUT /plan` and `--plan-schedule` phases
//! change it while traffic flows, as toxiproxy's users change toxics.
//!
//! Owns: the active plan, its connection counter, and the one path a change
//! takes (check it can be presented, publish, put it on the timeline).
//! Never: holds a lock on the connection path. Like a rotated credential,
//! the plan is an immutable value swapped atomically (`arc-swap`, the
//! mechanism `creds::Live` uses); a connection loads it once, and one that
//! loaded the old plan finishes with it.

use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use arc_swap::ArcSwap;

use super::config::{PlanPhase, TlsMode};
use crate::metrics::Metrics;
use crate::pki::Variant;
use crate::plan::{Plan, PlanError, PlanSpec, Presented, Swap};

/// The plan in force and what a report needs to say since when.
#[derive(Debug)]
pub struct ActivePlan {
    pub plan: Plan,
    /// Per connection or per request; changes with the plan (`"swap"`).
    pub swap: Swap,
    /// How many changes came before this plan (0: the startup plan).
    pub changes: u64,
    /// When it became active, for `GET /plan`.
    pub since_unix_ms: u64,
    /// Connection numbers restart at 0 with every plan, so a sequence plan
    /// starts at its first entry after a change: the first connection that
    /// loads the new plan presents its first item, "within one request".
    next: AtomicU64,
}

impl ActivePlan {
    fn new(plan: Plan, swap: Swap, changes: u64) -> Self {
        let since_unix_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
        ActivePlan {
            plan,
            swap,
            changes,
            since_unix_ms,
            next: AtomicU64::new(0),
        }
    }

    /// The plan and its swap mode in one line, for the timeline and logs.
    pub fn describe(&self) -> String {
        match self.swap {
            Swap::Connection => self.plan.describe(),
            swap => format!("{}; swap {swap}", self.plan.describe()),
        }
    }

    /// The choice for the next connection under this plan. An atomic
    /// increment and the pure [`Plan::pick`]: no lock.
    pub fn pick_next(&self) -> Presented {
        self.plan.pick(self.next.fetch_add(1, Ordering::Relaxed))
    }
}

/// Why a plan change was refused; the running plan stays.
#[derive(Debug, thiserror::Error)]
pub enum PlanChangeError {
    #[error(transparent)]
    Plan(#[from] PlanError),
    #[error("the proxy did not load {}: only credentials loaded at startup can be presented; start it with --pki DIR holding them (every variant and mutation of the PKI is loaded; a PKI made before mutations existed has no mutations/: re-run `certshift pki init` to write them)", names(.0))]
    NotLoaded(Vec<Presented>),
    #[error("{} need --upstream-tls mtls: without client certificates upstream, every connection presents nothing", names(.0))]
    NeedsMtls(Vec<Presented>),
}

/// The proxy's plan, changed only through [`LivePlan::change`].
pub struct LivePlan {
    current: ArcSwap<ActivePlan>,
    /// Serialises changes so the change count has no gaps or repeats;
    /// never taken by a connection.
    writer: Mutex<()>,
    /// What bind() built an upstream config for.
    presentable: HashSet<Presented>,
    upstream_mtls: bool,
    metrics: Metrics,
}

impl LivePlan {
    pub(super) fn new(
        plan: Plan,
        swap: Swap,
        presentable: HashSet<Presented>,
        upstream_tls: TlsMode,
        metrics: Metrics,
    ) -> Self {
        LivePlan {
            current: ArcSwap::from_pointee(ActivePlan::new(plan, swap, 0)),
            writer: Mutex::new(()),
            presentable,
            upstream_mtls: upstream_tls == TlsMode::Mtls,
            metrics,
        }
    }

    /// The plan in force; a connection calls this once.
    pub fn current(&self) -> Arc<ActivePlan> {
        self.current.load_full()
    }

    /// `PUT /plan`: parse `spec` with the flags' parsers, then [`Self::apply`].
    pub fn change(&self, spec: &PlanSpec) -> Result<Arc<ActivePlan>, PlanChangeError> {
        let plan = spec.build(rand::random())?;
        self.apply(plan, spec.swap()?)
    }

    /// The one path every change takes (`PUT /plan` and each schedule
    /// phase): refuse what cannot be presented, publish, and mark the
    /// timeline. A refused plan leaves the running one untouched. `swap`
    /// `None` keeps the swap mode in force.
    pub fn apply(
        &self,
        plan: Plan,
        swap: Option<Swap>,
    ) -> Result<Arc<ActivePlan>, PlanChangeError> {
        let picked: Vec<Presented> = plan
            .items()
            .into_iter()
            .filter(|(_, w)| *w > 0)
            .map(|(p, _)| p)
            .collect();
        let valid = Presented::Variant(Variant::Valid);
        if !self.upstream_mtls {
            let bad: Vec<Presented> = picked.iter().copied().filter(|p| *p != valid).collect();
            if !bad.is_empty() {
                return Err(PlanChangeError::NeedsMtls(bad));
            }
        } else {
            let missing: Vec<Presented> = picked
                .iter()
                .copied()
                .filter(|p| !self.presentable.contains(p))
                .collect();
            if !missing.is_empty() {
                return Err(PlanChangeError::NotLoaded(missing));
            }
        }
        // A poisoned lock only means another change panicked; the value it
        // guards is `()`, so carrying on is sound.
        let _guard = self
            .writer
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let running = self.current.load();
        let changes = running.changes + 1;
        let swap = swap.unwrap_or(running.swap);
        let active = Arc::new(ActivePlan::new(plan, swap, changes));
        self.current.store(active.clone());
        self.metrics.plan_change(Instant::now(), active.describe());
        tracing::info!(plan = %active.describe(), changes, "plan changed");
        Ok(active)
    }

    /// Applies `phases` on a timer until dropped; each phase `after` the
    /// previous one. A phase that fails to apply is logged and skipped
    /// (startup validation makes that a bug, not a user error).
    pub(super) fn spawn_schedule(
        self: &Arc<Self>,
        phases: Vec<PlanPhase>,
    ) -> Option<tokio::task::JoinHandle<()>> {
        if phases.is_empty() {
            return None;
        }
        let me = self.clone();
        Some(tokio::spawn(async move {
            let mut at = tokio::time::Instant::now();
            for (i, phase) in phases.into_iter().enumerate() {
                at += phase.after;
                if phase.after > Duration::ZERO {
                    tokio::time::sleep_until(at).await;
                }
                if let Err(e) = me.apply(phase.plan, phase.swap) {
                    tracing::error!(phase = i + 1, error = %e, "--plan-schedule phase refused");
                }
            }
        }))
    }
}

fn names(presented: &[Presented]) -> String {
    let names: Vec<&str> = presented.iter().map(|p| p.name()).collect();
    names.join(", ")
}
