//! CPU time, the cost side of every "per operation" figure: the whole
//! process's (what `load` spent) or the calling thread's (one side of a
//! handshake, when each side runs on a thread of its own). Wall time says
//! how long something took; CPU time says what it cost, and only CPU time
//! compares with `perf stat`'s task-clock or another tool's.

use std::time::Duration;

use rustix::time::{clock_gettime, ClockId};

/// CPU time (user and system) every thread of this process has used.
pub fn process() -> Duration {
    since_boot(ClockId::ProcessCPUTime)
}

/// CPU time (user and system) the calling thread has used.
pub fn thread() -> Duration {
    since_boot(ClockId::ThreadCPUTime)
}

fn since_boot(id: ClockId) -> Duration {
    let t = clock_gettime(id);
    Duration::new(
        t.tv_sec.max(0) as u64,
        t.tv_nsec.clamp(0, 999_999_999) as u32,
    )
}

/// Microseconds of `cpu` per one of `ops`; `None` without operations.
pub fn per_op_us(cpu: Duration, ops: u64) -> Option<f64> {
    (ops > 0).then(|| cpu.as_secs_f64() * 1e6 / ops as f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_thread_that_works_uses_cpu_and_one_that_sleeps_does_not() {
        let (p0, t0) = (process(), thread());
        let mut x = 0u64;
        let started = std::time::Instant::now();
        while started.elapsed() < Duration::from_millis(30) {
            x = std::hint::black_box(x.wrapping_mul(31).wrapping_add(7));
        }
        let busy = thread() - t0;
        assert!(
            busy >= Duration::from_millis(10),
            "{busy:?} of CPU in a 30 ms spin"
        );
        assert!(process() - p0 >= busy);
        let t1 = thread();
        std::thread::sleep(Duration::from_millis(30));
        assert!(
            thread() - t1 < Duration::from_millis(10),
            "sleeping costs no CPU"
        );
        assert_eq!(per_op_us(Duration::from_millis(3), 1000), Some(3.0));
        assert_eq!(per_op_us(Duration::from_millis(3), 0), None);
    }
}
