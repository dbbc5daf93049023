//! The live progress line of a load run (indicatif): elapsed time, rate,
//! ok, failed, dropped and the p99 of the last second. Drawn on stderr only
//! when it is a terminal, so logs and CI output stay clean.

use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use tokio::time::Instant;

/// How often the line is redrawn.
const TICK: Duration = Duration::from_millis(250);

/// One reading of the workers' counters.
#[derive(Debug, Clone, Copy, Default)]
pub struct Reading {
    pub ok: u64,
    pub failed: u64,
    pub dropped: u64,
    pub p99_us: u64,
}

/// What the progress line reads.
pub struct Source {
    /// Measured operations the run will attempt.
    pub total: u64,
    pub measured_from: Instant,
    pub read: Box<dyn Fn() -> Reading + Send + Sync>,
}

/// The running progress line.
pub struct Progress {
    task: tokio::task::JoinHandle<()>,
    bar: ProgressBar,
}

impl Progress {
    /// Stop drawing and clear the line, so the final table starts clean.
    pub async fn finish(self) {
        self.task.abort();
        let _ = self.task.await;
        self.bar.finish_and_clear();
    }
}

pub fn spawn(src: Source) -> Progress {
    let bar = ProgressBar::with_draw_target(Some(src.total), ProgressDrawTarget::stderr());
    let style = ProgressStyle::with_template("{elapsed_precise} [{bar:24}] {pos}/{len} {msg}")
        .map(|s| s.progress_chars("=> "))
        .unwrap_or_else(|_| ProgressStyle::default_bar());
    bar.set_style(style);
    let drawn = bar.clone();
    let task = tokio::spawn(async move {
        let mut tick = tokio::time::interval(TICK);
        let mut last = (Instant::now(), 0u64);
        loop {
            tick.tick().await;
            let now = Instant::now();
            if now < src.measured_from {
                drawn.set_message("warming up");
                continue;
            }
            let r = (src.read)();
            let done = r.ok + r.failed + r.dropped;
            let secs = now.duration_since(last.0).as_secs_f64();
            let rate = if secs > 0.0 {
                (done.saturating_sub(last.1)) as f64 / secs
            } else {
                0.0
            };
            last = (now, done);
            drawn.set_position(done);
            drawn.set_message(line(&r, rate));
        }
    });
    Progress { task, bar }
}

fn line(r: &Reading, rate: f64) -> String {
    format!(
        "{rate:.0}/s  ok {}  failed {}  dropped {}  p99 {}",
        r.ok,
        r.failed,
        r.dropped,
        crate::metrics::fmt_us(r.p99_us)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_line_shows_every_count() {
        let r = Reading {
            ok: 10,
            failed: 2,
            dropped: 1,
            p99_us: 1500,
        };
        assert_eq!(
            line(&r, 199.6),
            "200/s  ok 10  failed 2  dropped 1  p99 1.50ms"
        );
    }
}
