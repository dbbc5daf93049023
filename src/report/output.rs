//! The files a run writes: `--json`, `--hdr-log`, `--plot`. Each is written
//! to a temporary file beside the target and renamed into place, so a
//! reader never sees half a report.

use std::path::{Path, PathBuf};
use std::time::{Duration, UNIX_EPOCH};

use super::plot::{self, Marker, PlotInput, Point};
use super::{LoadReport, RotationMark};
use crate::metrics::hdrlog::{self, LogInterval};

/// The per-operation views a run's files are drawn from. `load` provides
/// them from its operation log; `report` never sees the log itself.
pub trait RunViews {
    /// Histograms per `interval_ms`, tagged as [`super::interval_tags`] lists.
    fn intervals(&self, interval_ms: u64) -> Vec<LogInterval>;
    /// Plot points per `bucket_ms`.
    fn points(&self, bucket_ms: u64) -> Vec<Point>;
}

/// Why a report file could not be written.
#[derive(Debug, thiserror::Error)]
pub enum OutputError {
    #[error("writing {}: cannot create a file in {}", path.display(), dir.display())]
    Create {
        path: PathBuf,
        dir: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("writing {}", path.display())]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("encoding the report as JSON")]
    Json(#[from] serde_json::Error),
    #[error(transparent)]
    HdrLog(#[from] hdrlog::HdrLogError),
    #[error(transparent)]
    Plot(#[from] plot::PlotError),
}

/// Where a run's files go.
#[derive(Debug, Clone, Default)]
pub struct Outputs {
    pub json: Option<PathBuf>,
    pub hdr_log: Option<PathBuf>,
    pub hdr_interval: Duration,
    pub plot: Option<PathBuf>,
}

/// Write every requested file; one line per file written, for the user.
pub fn write_outputs(
    run: &dyn RunViews,
    report: &LoadReport,
    out: &Outputs,
) -> Result<Vec<String>, OutputError> {
    let mut lines = Vec::new();
    if let Some(path) = &out.json {
        write_json(path, report)?;
        lines.push(format!("json written to {}", path.display()));
    }
    if let Some(path) = &out.hdr_log {
        let interval_ms = out.hdr_interval.as_millis().max(1) as u64;
        let intervals = run.intervals(interval_ms);
        let start = UNIX_EPOCH + Duration::from_millis(report.started_unix_ms);
        let mut buf = Vec::new();
        hdrlog::write(&mut buf, start, &intervals, &[log_meta(report)?])?;
        atomic_write(path, &buf)?;
        lines.push(format!(
            "HdrHistogram interval log written to {}",
            path.display()
        ));
    }
    if let Some(path) = &out.plot {
        let bucket_ms = plot_bucket_ms(report.duration_s);
        write_plot(path, report, &run.points(bucket_ms), bucket_ms)?;
        lines.push(format!("plot written to {}", path.display()));
    }
    Ok(lines)
}

/// The summary carried in an HdrHistogram log's `#[certshift]` comment:
/// the report without the parts the histograms carry.
pub(super) fn log_meta(report: &LoadReport) -> Result<String, OutputError> {
    let mut meta = report.clone();
    meta.timeline.clear();
    meta.latency_us.clear();
    meta.service_time_us.clear();
    Ok(serde_json::to_string(&meta)?)
}

pub fn write_json(path: &Path, value: &impl serde::Serialize) -> Result<(), OutputError> {
    let mut bytes = serde_json::to_vec_pretty(value)?;
    bytes.push(b'\n');
    atomic_write(path, &bytes)
}

pub(super) fn write_plot(
    path: &Path,
    report: &LoadReport,
    points: &[Point],
    bucket_ms: u64,
) -> Result<(), OutputError> {
    let markers: Vec<Marker> = report.rotations.iter().map(marker).collect();
    let title = format!(
        "certshift load {} ({}, tls {}) at {:.0}/s",
        report.info.target, report.info.mode, report.info.tls, report.rate
    );
    let svg = plot::render_svg(&PlotInput {
        title: &title,
        bucket_ms,
        points,
        markers: &markers,
    })?;
    atomic_write(path, svg.as_bytes())
}

fn marker(r: &RotationMark) -> Marker {
    Marker {
        t_ms: r.t_ms,
        kind: r.kind.clone(),
        serial: r.serial.clone(),
    }
}

/// 100 ms buckets up to a minute, then wider so a plot keeps ~600 points.
pub(super) fn plot_bucket_ms(duration_s: f64) -> u64 {
    let ms = (duration_s * 1000.0 / 600.0).ceil() as u64;
    ms.max(100).div_ceil(100) * 100
}

pub(super) fn atomic_write(path: &Path, bytes: &[u8]) -> Result<(), OutputError> {
    // `--json /dev/null` or a named pipe: write into it. Renaming a file
    // over it would replace the device (as root, /dev/null itself).
    if std::fs::metadata(path).is_ok_and(|m| !m.is_file() && !m.is_dir()) {
        return std::fs::OpenOptions::new()
            .write(true)
            .open(path)
            .and_then(|mut f| std::io::Write::write_all(&mut f, bytes))
            .map_err(|source| OutputError::Write {
                path: path.to_path_buf(),
                source,
            });
    }
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let mut tmp = tempfile::NamedTempFile::new_in(dir).map_err(|source| OutputError::Create {
        path: path.to_path_buf(),
        dir: dir.to_path_buf(),
        source,
    })?;
    let write = |source| OutputError::Write {
        path: path.to_path_buf(),
        source,
    };
    std::io::Write::write_all(&mut tmp, bytes).map_err(write)?;
    // Reports are for sharing (CI artifacts); temp files start out 0600.
    use std::os::unix::fs::PermissionsExt;
    let _ = tmp
        .as_file()
        .set_permissions(std::fs::Permissions::from_mode(0o644));
    tmp.persist(path).map_err(|e| write(e.error))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    /// A device or pipe given as the output is written into, never
    /// replaced by a regular file.
    #[test]
    fn an_output_that_is_a_pipe_is_written_into_not_replaced() {
        use std::os::unix::fs::FileTypeExt;
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("out.json");
        assert!(std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap()
            .success());
        // The reader reports through a channel: were the pipe replaced, it
        // would wait for a writer forever, and the test must fail, not hang.
        let (tx, rx) = std::sync::mpsc::channel();
        {
            let fifo = fifo.clone();
            std::thread::spawn(move || tx.send(std::fs::read(fifo).unwrap()));
        }
        atomic_write(&fifo, b"{}\n").unwrap();
        let got = rx
            .recv_timeout(std::time::Duration::from_secs(5))
            .expect("the pipe's reader got the output");
        assert_eq!(got, b"{}\n");
        assert!(std::fs::metadata(&fifo).unwrap().file_type().is_fifo());
    }

    use super::*;

    #[test]
    fn plots_keep_about_600_points() {
        assert_eq!(plot_bucket_ms(2.0), 100);
        assert_eq!(plot_bucket_ms(60.0), 100);
        assert_eq!(plot_bucket_ms(600.0), 1000);
        assert_eq!(plot_bucket_ms(3600.0), 6000);
    }
}
