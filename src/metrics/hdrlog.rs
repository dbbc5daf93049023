//! HdrHistogram interval logs: the standard text format (Java's
//! `HistogramLogWriter`, read by `HistogramLogProcessor`, HdrHistogram's
//! plotters and the `hdrhistogram` crate), written with the crate's own
//! writer and read with its own iterator.
//!
//! Values are microseconds. The `Interval_Max` column is in milliseconds
//! (max value divisor 1000), as HdrHistogram's tools expect. certshift adds
//! comment lines starting `#[certshift] `: readers of the standard format
//! skip them; `report merge` reads the run metadata from them.

use std::io::Write;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine;
use hdrhistogram::serialization::interval_log::{
    IntervalLogIterator, IntervalLogWriterBuilder, LogEntry, Tag,
};
use hdrhistogram::serialization::{Deserializer, V2DeflateSerializer};
use hdrhistogram::Histogram;

use super::PhaseHist;

/// The prefix of certshift's own comment lines.
pub const META_PREFIX: &str = "[certshift] ";

/// One interval: its histograms by tag.
#[derive(Debug, Clone)]
pub struct LogInterval {
    /// From the log's base time.
    pub start_ms: u64,
    pub length_ms: u64,
    pub hists: Vec<(String, PhaseHist)>,
}

/// A parsed log.
#[derive(Debug, Clone)]
pub struct ParsedLog {
    /// The log's StartTime (when the measurement began), if it has one.
    pub start: Option<SystemTime>,
    /// Interval start times are from this (BaseTime, else the epoch).
    pub base: SystemTime,
    pub intervals: Vec<LogInterval>,
    /// certshift comment lines, without the prefix.
    pub meta: Vec<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum HdrLogError {
    #[error("writing the HdrHistogram log")]
    Write(#[source] std::io::Error),
    #[error("encoding a histogram of the HdrHistogram log: {0:?}")]
    Encode(
        hdrhistogram::serialization::interval_log::IntervalLogWriterError<
            hdrhistogram::serialization::V2DeflateSerializeError,
        >,
    ),
    #[error("line {line}: not an HdrHistogram interval log entry ({problem})")]
    Parse { line: usize, problem: String },
}

/// Write a whole log. Empty histograms are skipped: they carry nothing and
/// HdrHistogram's tools handle gaps.
pub fn write(
    out: &mut impl Write,
    start: SystemTime,
    intervals: &[LogInterval],
    meta: &[String],
) -> Result<(), HdrLogError> {
    let err = HdrLogError::Write;
    let mut serializer = V2DeflateSerializer::new();
    let mut builder = IntervalLogWriterBuilder::new();
    builder
        .add_comment("certshift load: latency in microseconds from the operation's start")
        .add_comment("tags: connect, handshake, request (from the intended start, corrected for coordinated omission); service-* (from the actual start); failed (lost operations)")
        .with_start_time(start)
        .with_base_time(start)
        .with_max_value_divisor(1000.0);
    for m in meta {
        builder.add_comment(&format!("{META_PREFIX}{m}"));
    }
    let mut w = builder
        .begin_log_with(&mut *out, &mut serializer)
        .map_err(err)?;
    for iv in intervals {
        for (tag, h) in &iv.hists {
            let Some(h) = h.histogram() else { continue };
            w.write_histogram(
                h,
                Duration::from_millis(iv.start_ms),
                Duration::from_millis(iv.length_ms),
                Tag::new(tag),
            )
            .map_err(HdrLogError::Encode)?;
        }
    }
    Ok(())
}

/// Read a log written by certshift or any HdrHistogram writer. Intervals
/// with the same start and tag stay separate entries; callers merge.
pub fn read(text: &[u8]) -> Result<ParsedLog, HdrLogError> {
    let meta = String::from_utf8_lossy(text)
        .lines()
        .filter_map(|l| l.strip_prefix('#').map(str::trim_start))
        .filter_map(|l| l.strip_prefix(META_PREFIX.trim_end()))
        .map(|l| l.trim().to_string())
        .collect();
    let mut log = ParsedLog {
        start: None,
        base: UNIX_EPOCH,
        intervals: Vec::new(),
        meta,
    };
    let mut deserializer = Deserializer::new();
    for (i, entry) in IntervalLogIterator::new(text).enumerate() {
        let parse_err = |problem: String| HdrLogError::Parse {
            line: i + 1,
            problem,
        };
        match entry.map_err(|e| parse_err(format!("{e:?}")))? {
            LogEntry::StartTime(d) => log.start = Some(UNIX_EPOCH + d),
            LogEntry::BaseTime(d) => log.base = UNIX_EPOCH + d,
            LogEntry::Interval(iv) => {
                let bytes = base64::engine::general_purpose::STANDARD
                    .decode(iv.encoded_histogram())
                    .map_err(|e| parse_err(format!("base64: {e}")))?;
                let h: Histogram<u64> = deserializer
                    .deserialize(&mut std::io::Cursor::new(bytes))
                    .map_err(|e| parse_err(format!("histogram: {e:?}")))?;
                log.intervals.push(LogInterval {
                    start_ms: iv.start_timestamp().as_millis() as u64,
                    length_ms: iv.duration().as_millis() as u64,
                    hists: vec![(
                        iv.tag().map_or("", |t| t.as_str()).to_string(),
                        PhaseHist::from_histogram(&h),
                    )],
                });
            }
        }
    }
    // No BaseTime: timestamps are absolute (the format's rule); with only a
    // StartTime, the Java reader treats small timestamps as offsets from it.
    if log.base == UNIX_EPOCH {
        if let Some(s) = log.start {
            let first = log.intervals.first().map_or(0, |i| i.start_ms);
            if first < 365 * 86_400_000 {
                log.base = s;
            }
        }
    }
    Ok(log)
}

impl ParsedLog {
    /// Where the log's intervals start, as wall-clock time.
    pub fn at(&self, start_ms: u64) -> SystemTime {
        self.base + Duration::from_millis(start_ms)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hist(values_us: &[u64]) -> PhaseHist {
        let mut h = PhaseHist::new();
        for v in values_us {
            h.record(Duration::from_micros(*v));
        }
        h
    }

    #[test]
    fn a_log_round_trips_through_the_crates_reader() {
        let start = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let intervals = vec![
            LogInterval {
                start_ms: 0,
                length_ms: 1000,
                hists: vec![
                    ("request".into(), hist(&[100, 200, 300])),
                    ("failed".into(), PhaseHist::new()),
                ],
            },
            LogInterval {
                start_ms: 1000,
                length_ms: 1000,
                hists: vec![("request".into(), hist(&[5_000_000]))],
            },
        ];
        let mut out = Vec::new();
        write(&mut out, start, &intervals, &["{\"attempted\":4}".into()]).unwrap();
        let text = String::from_utf8(out.clone()).unwrap();
        assert!(text.contains("#[StartTime: 1700000000.000"), "{text}");
        assert!(text.contains("Tag=request,"), "{text}");
        let log = read(&out).unwrap();
        assert_eq!(log.start, Some(start));
        assert_eq!(log.meta, ["{\"attempted\":4}"]);
        // The empty `failed` histogram was not written.
        assert_eq!(log.intervals.len(), 2);
        assert_eq!(log.intervals[1].start_ms, 1000);
        assert_eq!(log.at(1000), start + Duration::from_secs(1));
        let (tag, h) = &log.intervals[0].hists[0];
        assert_eq!((tag.as_str(), h.count()), ("request", 3));
        assert_eq!(h.percentiles().max, 300);
        // Within the histogram's 3 significant digits.
        let max = log.intervals[1].hists[0].1.percentiles().max;
        assert!((5_000_000..5_005_000).contains(&max), "{max}");
    }

    #[test]
    fn garbage_is_an_error_with_a_line() {
        let e = read(b"0.0,1.0,2.0,NOTBASE64!!\n").unwrap_err();
        assert!(matches!(e, HdrLogError::Parse { line: 1, .. }), "{e}");
    }
}
