//! The `certshift bench` report: its JSON contract, its table (printed by
//! `bench` and again by `report show`) and its SVG bar chart.
//!
//! Owns the shape only; `bench` measures. The JSON keys below are a
//! contract: [`SCHEMA`] changes when one changes meaning or goes away.

use std::fmt::Write as _;
use std::path::Path;

use plotters::prelude::*;

use super::output::{atomic_write, OutputError};
use super::plot::PlotError;

/// The value of a bench report's `schema` key; `report show` tells a bench
/// report from a load report by it.
pub const SCHEMA: &str = "certshift-bench/1";

/// How the limit beside each cell is defined (written into the report so
/// a reader of the JSON alone knows).
pub const LIMIT_DEFINITION: &str = "limit_us: CPU µs of the cell's public-key operations alone, \
measured in the same process with the same provider (aws-lc-rs): full handshake, server = 1 \
handshake signature + key exchange (keygen and agreement) [+ client chain verifications and the \
client's CertificateVerify check with auth=on]; client = server chain verifications + the server's \
handshake signature check + key exchange [+ 1 signature with auth=on]. Resumed TLS 1.3 \
(psk_dhe_ke): the key exchange alone. Resumed TLS 1.2: no public-key operation, limit 0. \
efficiency = limit / measured, clamped to [0, 1] (clamped: true says noise pushed it over 1).";

/// A whole bench run.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct BenchReport {
    /// Always [`SCHEMA`].
    pub schema: String,
    /// `HOST:PORT` with `--target` (client side only), else `null`.
    pub target: Option<String>,
    /// Measured time per cell, ms.
    pub duration_ms: u64,
    /// Connections in the closed loop.
    pub connections: usize,
    /// Whether each connection also carried one HTTP request.
    pub request: bool,
    /// What was chosen, in words (the default subset says so here).
    pub selection: String,
    pub limit_definition: String,
    pub cells: Vec<Cell>,
    pub skipped: Vec<Skipped>,
}

/// The axis values of a cell, as `--filter` spells them.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Axes {
    pub key: String,
    pub tls: String,
    pub resume: String,
    pub kx: String,
    pub auth: String,
    pub chain: String,
}

/// A figure per side; `server` is `null` with `--target`.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Sides {
    pub client: Option<f64>,
    pub server: Option<f64>,
}

#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Latency {
    pub p50: f64,
    pub p99: f64,
}

/// Bytes on the wire per handshake (per connection, with `--request`).
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Bytes {
    pub c2s: f64,
    pub s2c: f64,
}

/// What the connections themselves negotiated (rustls's own state), so a
/// reader can check that each axis value took effect.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Observed {
    /// Every protocol version negotiated, e.g. `["1.3"]`.
    pub tls: Vec<String>,
    /// Every key-exchange group negotiated, as `kx=` spells it.
    pub kx: Vec<String>,
    /// The server leaf's key type, as `key=` spells it.
    pub key: Option<String>,
    /// Certificates the server sent (2 with an intermediate).
    pub server_chain_len: Option<usize>,
    pub resumed_share: f64,
    /// Share of handshakes in which the server asked for a client
    /// certificate (a CertificateRequest reached the client).
    #[serde(default)]
    pub cert_requested_share: f64,
}

/// One measured cell.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Cell {
    pub axes: Axes,
    /// Handshakes completed in the measured window.
    pub handshakes: u64,
    /// Connections that failed (connect, handshake or request).
    pub errors: u64,
    /// The first failure's outcome, when there was one.
    #[serde(default)]
    pub first_error: Option<String>,
    /// Closed-loop handshakes per second, each side on one thread (one core).
    pub hs_per_s: f64,
    /// Thread CPU µs per handshake.
    pub cpu_us: Sides,
    pub limit_us: Sides,
    /// `limit / measured` per side, in [0, 1].
    pub efficiency: Sides,
    /// Noise pushed an efficiency over 1 and it was clamped.
    pub clamped: bool,
    pub latency_ms: Latency,
    pub bytes: Bytes,
    pub resumed_share: f64,
    pub observed: Observed,
}

/// A combination the matrix names but that cannot run, and why.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Skipped {
    pub axes: Axes,
    pub reason: String,
}

impl Axes {
    /// `key=ecdsa-p256 tls=1.3 …`: the cell as a filter would name it.
    pub fn label(&self) -> String {
        format!(
            "{} {} {} {} auth={} chain={}",
            self.key, self.tls, self.resume, self.kx, self.auth, self.chain
        )
    }
}

/// `limit / measured`, clamped to [0, 1]; the flag says it was clamped.
pub fn efficiency(limit: f64, measured: f64) -> (f64, bool) {
    if measured <= 0.0 || !limit.is_finite() {
        return (0.0, false);
    }
    let e = limit / measured;
    (e.clamp(0.0, 1.0), e > 1.0)
}

fn side(v: Option<f64>, digits: usize) -> String {
    v.map_or_else(|| "-".into(), |v| format!("{v:.digits$}"))
}

/// The table `bench` prints and `report show` prints again.
pub fn render(r: &BenchReport) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "certshift bench: {}", r.selection);
    let _ = writeln!(
        out,
        "  {} per cell, {} connection(s) in a closed loop{}{}",
        crate::metrics::fmt_ms(r.duration_ms),
        r.connections,
        if r.request { ", one request each" } else { "" },
        r.target
            .as_deref()
            .map(|t| format!(", against {t} (client side only)"))
            .unwrap_or_default()
    );
    let _ = writeln!(
        out,
        "{:<10} {:<3} {:<7} {:<14} {:<4} {:<5} {:>8} {:>9} {:>9} {:>9} {:>9} {:>5} {:>5} {:>7} {:>7} {:>6} {:>6} {:>5}",
        "key", "tls", "resume", "kx", "auth", "chain", "hs/s", "cli µs", "cli lim",
        "srv µs", "srv lim", "eff c", "eff s", "p50 ms", "p99 ms", "c2s B", "s2c B", "res"
    );
    for c in &r.cells {
        let a = &c.axes;
        let _ = writeln!(
            out,
            "{:<10} {:<3} {:<7} {:<14} {:<4} {:<5} {:>8.0} {:>9} {:>9} {:>9} {:>9} {:>5} {:>5} {:>7.3} {:>7.3} {:>6.0} {:>6.0} {:>5.2}",
            a.key,
            a.tls,
            a.resume,
            a.kx,
            a.auth,
            a.chain,
            c.hs_per_s,
            side(c.cpu_us.client, 0),
            side(c.limit_us.client, 0),
            side(c.cpu_us.server, 0),
            side(c.limit_us.server, 0),
            side(c.efficiency.client, 2),
            side(c.efficiency.server, 2),
            c.latency_ms.p50,
            c.latency_ms.p99,
            c.bytes.c2s,
            c.bytes.s2c,
            c.resumed_share,
        );
        if c.errors > 0 {
            let _ = writeln!(
                out,
                "  ^ {} connection(s) failed in this cell, first: {}",
                c.errors,
                c.first_error.as_deref().unwrap_or("?")
            );
        }
    }
    if r.cells.iter().any(|c| c.clamped) {
        let _ = writeln!(
            out,
            "  (an efficiency above 1 from measurement noise was clamped to 1)"
        );
    }
    for s in &r.skipped {
        let _ = writeln!(out, "skipped {}: {}", s.axes.label(), s.reason);
    }
    let _ = writeln!(
        out,
        "µs = thread CPU per handshake; lim = the cell's public-key operations alone; eff = lim / µs"
    );
    out
}

const SIZE: (u32, u32) = (1100, 640);
const CLIENT: RGBColor = RGBColor(70, 130, 180);
const SERVER: RGBColor = RGBColor(230, 140, 40);
/// The limit mark: one colour for both sides, so a test can find it.
pub const LIMIT: RGBColor = RGBColor(200, 30, 30);

/// Bars per cell (client and server CPU µs per handshake), each with its
/// limit marked as a line across the bar.
pub fn render_svg(r: &BenchReport) -> Result<String, PlotError> {
    let draw = |e: &dyn std::fmt::Display| PlotError::Draw(e.to_string());
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, SIZE).into_drawing_area();
        root.fill(&WHITE).map_err(|e| draw(&e))?;
        let n = r.cells.len().max(1);
        let top = r
            .cells
            .iter()
            .flat_map(|c| {
                [
                    c.cpu_us.client,
                    c.cpu_us.server,
                    c.limit_us.client,
                    c.limit_us.server,
                ]
            })
            .flatten()
            .fold(1.0_f64, f64::max)
            * 1.1;
        let title = match &r.target {
            Some(t) => format!("certshift bench against {t}: CPU µs per handshake"),
            None => "certshift bench: CPU µs per handshake (limit marked)".to_string(),
        };
        let mut chart = ChartBuilder::on(&root)
            .caption(title, ("sans-serif", 22))
            .margin(10)
            .x_label_area_size(40)
            .y_label_area_size(60)
            .build_cartesian_2d(0.0..n as f64, 0.0..top)
            .map_err(|e| draw(&e))?;
        chart
            .configure_mesh()
            .disable_x_mesh()
            .x_labels(0)
            .y_desc("CPU µs / handshake")
            .draw()
            .map_err(|e| draw(&e))?;
        let bar = |i: usize, off: f64, v: f64, colour: RGBColor| {
            let x0 = i as f64 + off;
            Rectangle::new([(x0, 0.0), (x0 + 0.38, v)], colour.filled())
        };
        let mark = |i: usize, off: f64, v: f64| {
            let x0 = i as f64 + off;
            PathElement::new([(x0, v), (x0 + 0.38, v)], LIMIT.stroke_width(3))
        };
        for (i, c) in r.cells.iter().enumerate() {
            for (off, cpu, lim, colour) in [
                (0.1, c.cpu_us.client, c.limit_us.client, CLIENT),
                (0.52, c.cpu_us.server, c.limit_us.server, SERVER),
            ] {
                if let Some(v) = cpu {
                    chart
                        .draw_series([bar(i, off, v, colour)])
                        .map_err(|e| draw(&e))?;
                }
                if let Some(l) = lim {
                    chart.draw_series([mark(i, off, l)]).map_err(|e| draw(&e))?;
                }
            }
            let a = &c.axes;
            chart
                .draw_series([Text::new(
                    format!("{} {} {} {}", a.key, a.tls, a.resume, a.kx),
                    (i as f64 + 0.1, top * 0.02),
                    ("sans-serif", 11)
                        .into_font()
                        .transform(FontTransform::Rotate270),
                )])
                .map_err(|e| draw(&e))?;
        }
        // The legend: three invisible series carry the labels.
        for (label, colour) in [
            ("client CPU", CLIENT),
            ("server CPU", SERVER),
            ("limit (crypto alone)", LIMIT),
        ] {
            chart
                .draw_series(std::iter::empty::<Circle<(f64, f64), u32>>())
                .map_err(|e| draw(&e))?
                .label(label)
                .legend(move |(x, y)| {
                    Rectangle::new([(x, y - 5), (x + 12, y + 5)], colour.filled())
                });
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperRight)
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK)
            .draw()
            .map_err(|e| draw(&e))?;
        root.present().map_err(|e| draw(&e))?;
    }
    Ok(svg)
}

/// Write the SVG to `path` (atomically, like every report file).
pub fn write_svg(path: &Path, r: &BenchReport) -> Result<(), OutputError> {
    let svg = render_svg(r)?;
    atomic_write(path, svg.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn efficiency_is_clamped_and_says_so() {
        assert_eq!(efficiency(50.0, 100.0), (0.5, false));
        assert_eq!(efficiency(120.0, 100.0), (1.0, true));
        assert_eq!(efficiency(0.0, 100.0), (0.0, false));
        assert_eq!(efficiency(10.0, 0.0), (0.0, false));
    }
}
