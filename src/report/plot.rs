//! Renders a load-test timeline (latency percentiles, per-bucket outcomes and
//! rotation markers) as a standalone SVG document.
//!
//! Owns only the picture: callers aggregate samples into [`Point`]s and
//! rotation events into [`Marker`]s. Text is emitted as SVG `<text>` and laid
//! out by plotters' built-in size estimate, so no font files or system font
//! libraries are needed; the viewer picks the actual font.

use std::path::{Path, PathBuf};

use plotters::coord::ranged1d::AsRangedCoord;
use plotters::coord::types::RangedCoordf64;
use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

/// One time bucket of a run.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Point {
    /// Start of the bucket, ms since the run started.
    pub t_ms: u64,
    pub p50_us: u64,
    pub p90_us: u64,
    pub p99_us: u64,
    pub max_us: u64,
    /// Operations that succeeded / failed in the bucket.
    pub ok: u64,
    pub failed: u64,
}

/// A rotation event, drawn as a vertical marker with a short label.
#[derive(Debug, Clone, PartialEq)]
pub struct Marker {
    pub t_ms: u64,
    pub kind: String,
    pub serial: Option<String>,
}

pub struct PlotInput<'a> {
    pub title: &'a str,
    /// Width of each bucket in ms (e.g. 100 or 1000).
    pub bucket_ms: u64,
    pub points: &'a [Point],
    pub markers: &'a [Marker],
}

#[derive(Debug, thiserror::Error)]
pub enum PlotError {
    #[error("writing plot {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("drawing plot: {0}")]
    Draw(String),
}

const SIZE: (u32, u32) = (1000, 640);
/// Log scale cannot show 0; anything faster than 10 µs is noise for TLS ops.
const FLOOR_MS: f64 = 0.01;
/// Unique colour so marker lines stay identifiable (also by tests).
const MARKER: RGBColor = RGBColor(128, 0, 160);
const OK_GREEN: RGBColor = RGBColor(60, 170, 90);

type Area<'a> = DrawingArea<SVGBackend<'a>, Shift>;

fn draw_err(e: impl std::fmt::Display) -> PlotError {
    PlotError::Draw(e.to_string())
}

/// Render to an SVG document string.
pub fn render_svg(input: &PlotInput) -> Result<String, PlotError> {
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, SIZE).into_drawing_area();
        draw(&root, input)?;
        // The backend only flushes closing tags on present (or drop, which
        // swallows errors), so present explicitly before reading the buffer.
        root.present().map_err(draw_err)?;
    }
    Ok(svg)
}

/// Render and write to `path` (create/truncate).
pub fn write_svg(path: &Path, input: &PlotInput) -> Result<(), PlotError> {
    let svg = render_svg(input)?;
    std::fs::write(path, svg).map_err(|source| PlotError::Io {
        path: path.to_path_buf(),
        source,
    })
}

fn us_to_ms(us: u64) -> f64 {
    (us as f64 / 1000.0).max(FLOOR_MS)
}

/// Buckets with no operations, or no recorded latency (e.g. every op failed
/// before it could be timed), carry no latency information; plotting them at
/// the floor would fake a fast dip.
fn has_latency(p: &Point) -> bool {
    p.ok + p.failed > 0 && p.max_us > 0
}

type Pick = fn(&Point) -> u64;

/// Latency series as runs of consecutive measured buckets, so gaps show as
/// breaks in the line rather than being bridged.
fn latency_runs(points: &[Point], pick: Pick, half: f64) -> Vec<Vec<(f64, f64)>> {
    let mut runs: Vec<Vec<(f64, f64)>> = Vec::new();
    let mut open = false;
    for p in points {
        let xy = (secs(p.t_ms) + half, us_to_ms(pick(p)));
        match runs.last_mut() {
            _ if !has_latency(p) => {}
            Some(run) if open => run.push(xy),
            _ => runs.push(vec![xy]),
        }
        open = has_latency(p);
    }
    runs.into_iter().map(|r| widen(r, half)).collect()
}

/// A one-point polyline draws nothing, so an isolated bucket becomes a flat
/// segment across its width.
fn widen(run: Vec<(f64, f64)>, half: f64) -> Vec<(f64, f64)> {
    match run[..] {
        [(x, y)] => vec![(x - half, y), (x + half, y)],
        _ => run,
    }
}

fn marker_label(m: &Marker) -> String {
    match &m.serial {
        Some(s) => format!("{} {}", m.kind, s.chars().take(8).collect::<String>()),
        None => m.kind.clone(),
    }
}

/// Tick labels for a log axis spanning many decades: no exponent notation,
/// no trailing zeros.
fn fmt_ms(v: &f64) -> String {
    if *v >= 10.0 {
        format!("{v:.0}")
    } else {
        let s = format!("{v:.2}");
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    }
}

fn secs(ms: u64) -> f64 {
    ms as f64 / 1000.0
}

/// Both panels share margins and label areas so their x axes line up.
fn panel<'a, 'b, Y: AsRangedCoord>(
    area: &'a Area<'b>,
    x_max: f64,
    y: Y,
) -> Result<
    ChartContext<'a, SVGBackend<'b>, Cartesian2d<RangedCoordf64, Y::CoordDescType>>,
    PlotError,
> {
    ChartBuilder::on(area)
        .margin(10)
        .x_label_area_size(35)
        .y_label_area_size(60)
        .build_cartesian_2d(0.0..x_max, y)
        .map_err(draw_err)
}

fn legend<'a, 'b: 'a, CT: CoordTranslate>(
    chart: &mut ChartContext<'a, SVGBackend<'b>, CT>,
) -> Result<(), PlotError> {
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperRight)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .draw()
        .map_err(draw_err)
}

/// Semi-transparent so dozens of markers don't drown the data.
fn marker_lines(
    markers: &[Marker],
    y0: f64,
    y1: f64,
) -> impl Iterator<Item = PathElement<(f64, f64)>> + '_ {
    markers
        .iter()
        .map(move |m| PathElement::new([(secs(m.t_ms), y0), (secs(m.t_ms), y1)], MARKER.mix(0.6)))
}

fn draw(root: &Area, input: &PlotInput) -> Result<(), PlotError> {
    root.fill(&WHITE).map_err(draw_err)?;
    let body = root
        .titled(input.title, ("sans-serif", 24))
        .map_err(draw_err)?;
    let (top, bottom) = body.split_vertically(body.dim_in_pixel().1 * 60 / 100);

    let bucket_s = secs(input.bucket_ms);
    let half = bucket_s / 2.0;
    let bucket_ends = input
        .points
        .iter()
        .map(|p| p.t_ms.saturating_add(input.bucket_ms));
    let end_ms = bucket_ends
        .chain(input.markers.iter().map(|m| m.t_ms))
        .max();
    // 2% slack keeps a marker at the very end off the plot border.
    let x_max = (secs(end_ms.unwrap_or(0)) * 1.02).max(1.0);

    let lat: Vec<f64> = input
        .points
        .iter()
        .filter(|p| has_latency(p))
        .flat_map(|p| [p.p50_us, p.p90_us, p.p99_us, p.max_us])
        .map(us_to_ms)
        .collect();
    let (lo, hi) = lat
        .iter()
        .fold((f64::MAX, 0.0_f64), |(a, b), &v| (a.min(v), b.max(v)));
    // Half/double is a fixed margin on a log axis regardless of magnitude.
    let (y_lo, y_hi) = match lat.is_empty() {
        true => (0.1, 100.0),
        false => ((lo / 2.0).max(FLOOR_MS), hi * 2.0),
    };

    let mut chart = panel(&top, x_max, (y_lo..y_hi).log_scale())?;
    chart
        .configure_mesh()
        .x_desc("time (s)")
        .y_desc("latency (ms)")
        .y_label_formatter(&fmt_ms)
        .draw()
        .map_err(draw_err)?;

    let series: [(&str, Pick, RGBColor); 4] = [
        ("p50", |p| p.p50_us, RGBColor(31, 119, 180)),
        ("p90", |p| p.p90_us, RGBColor(255, 127, 14)),
        ("p99", |p| p.p99_us, RGBColor(214, 39, 40)),
        ("max", |p| p.max_us, RGBColor(90, 90, 90)),
    ];
    for (name, pick, color) in series {
        let runs = latency_runs(input.points, pick, half);
        chart
            .draw_series(runs.into_iter().map(|r| PathElement::new(r, color)))
            .map_err(draw_err)?
            .label(name)
            .legend(move |(x, y)| PathElement::new([(x, y), (x + 20, y)], color));
    }

    if lat.is_empty() {
        let msg = if input.points.is_empty() {
            "no operations"
        } else {
            "no latency samples"
        };
        let style = ("sans-serif", 20)
            .into_font()
            .color(&BLACK)
            .pos(Pos::new(HPos::Center, VPos::Center));
        let centre = (x_max / 2.0, (y_lo * y_hi).sqrt());
        chart
            .draw_series([Text::new(msg, centre, style)])
            .map_err(draw_err)?;
    }

    chart
        .draw_series(marker_lines(input.markers, y_lo, y_hi))
        .map_err(draw_err)?;
    let label_style = ("sans-serif", 12)
        .into_font()
        .transform(FontTransform::Rotate90)
        .color(&MARKER)
        // The default top anchor shifts text by +0.76em along its own y, which
        // after rotation pushes it back over the line; bottom keeps it beside.
        .pos(Pos::new(HPos::Left, VPos::Bottom));
    // Rotated labels run down the line so dense markers overlap less.
    let labels = input.markers.iter().map(|m| {
        EmptyElement::at((secs(m.t_ms), y_hi))
            + Text::new(marker_label(m), (3, 4), label_style.clone())
    });
    chart.draw_series(labels).map_err(draw_err)?;
    legend(&mut chart)?;

    let ops_max = input.points.iter().map(|p| p.ok.max(p.failed)).max();
    // Counts are integers; a tiny range would only produce fractional ticks.
    let ops_top = ops_max.unwrap_or(0).max(10) as f64 * 1.1;
    let mut ops = panel(&bottom, x_max, 0.0..ops_top)?;
    ops.configure_mesh()
        .x_desc("time (s)")
        .y_desc("ops per bucket")
        .y_label_formatter(&|v| format!("{v:.0}"))
        .draw()
        .map_err(draw_err)?;

    let bars = input.points.iter().filter(|p| p.failed > 0).map(|p| {
        let x0 = secs(p.t_ms);
        Rectangle::new([(x0, 0.0), (x0 + bucket_s, p.failed as f64)], RED.filled())
    });
    ops.draw_series(bars)
        .map_err(draw_err)?
        .label("failed")
        .legend(|(x, y)| Rectangle::new([(x, y - 5), (x + 20, y + 5)], RED.filled()));
    let ok_line = input
        .points
        .iter()
        .map(|p| (secs(p.t_ms) + half, p.ok as f64));
    ops.draw_series([PathElement::new(widen(ok_line.collect(), half), OK_GREEN)])
        .map_err(draw_err)?
        .label("ok")
        .legend(|(x, y)| PathElement::new([(x, y), (x + 20, y)], OK_GREEN));
    ops.draw_series(marker_lines(input.markers, 0.0, ops_top))
        .map_err(draw_err)?;
    legend(&mut ops)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(n: u64) -> Vec<Point> {
        let pt = |i| Point {
            t_ms: i * 1000,
            p50_us: 800 + i * 10,
            p90_us: 2_000 + i * 20,
            p99_us: 9_000 + i * 50,
            max_us: 40_000 + i * 100,
            ok: 200 + i,
            failed: if i % 10 == 3 { 7 } else { 0 },
        };
        (0..n).map(pt).collect()
    }

    fn markers(n: u64, step_ms: u64) -> Vec<Marker> {
        let mk = |i| Marker {
            t_ms: 5_000 + i * step_ms,
            kind: "rotate".into(),
            serial: Some(format!("0a1b2c3d4e5f{i}")),
        };
        (0..n).map(mk).collect()
    }

    /// Parses the SVG; returns every `<text>` (trimmed) and the marker line count.
    fn parse(svg: &str) -> (Vec<String>, usize) {
        let doc = roxmltree::Document::parse(svg).unwrap_or_else(|e| panic!("{e}\n{svg}"));
        assert_eq!(doc.root_element().tag_name().name(), "svg");
        let texts = doc.descendants().filter(|n| n.has_tag_name("text"));
        let texts = texts.map(|n| n.text().unwrap_or("").trim().to_string());
        let lines = doc
            .descendants()
            .filter(|n| n.attribute("stroke") == Some("#8000A0"));
        (texts.collect(), lines.count())
    }

    fn render(title: &str, points: &[Point], markers: &[Marker]) -> (Vec<String>, usize) {
        let input = PlotInput {
            title,
            bucket_ms: 1000,
            points,
            markers,
        };
        parse(&render_svg(&input).unwrap())
    }

    fn has(texts: &[String], want: &str) -> bool {
        texts.iter().any(|t| t == want)
    }

    #[test]
    fn normal_run_has_legend_and_markers() {
        let (t, lines) = render("rotation run", &run(50), &markers(3, 15_000));
        for want in "rotation run|p50|p90|p99|max|failed|ok|latency (ms)".split('|') {
            assert!(has(&t, want), "missing {want:?} in {t:?}");
        }
        // Serial is cut to 8 chars; one line per marker in each panel.
        assert_eq!(t.iter().filter(|s| *s == "rotate 0a1b2c3d").count(), 3);
        assert_eq!(lines, 6);
    }

    #[test]
    fn degenerate_runs_render() {
        assert!(has(&render("empty", &[], &[]).0, "no operations"));
        assert!(has(&render("one", &run(1), &[]).0, "p99"));
        let failed: Vec<Point> = (0..5)
            .map(|i| Point {
                t_ms: i * 1000,
                failed: 50,
                ..Point::default()
            })
            .collect();
        assert!(has(&render("failed", &failed, &[]).0, "no latency samples"));
    }

    #[test]
    fn extreme_values_and_late_markers() {
        let mut pts = run(3);
        pts[1].max_us = 86_400_000_000;
        // Latency without operations must be skipped, not plotted.
        (pts[2].ok, pts[2].failed) = (0, 0);
        let (t, lines) = render("huge", &pts, &markers(30, 3_000));
        assert_eq!(lines, 60);
        // Last marker is at 92 s, far past the last bucket.
        assert!(has(&t, "90.0"), "x axis not extended: {t:?}");
    }

    #[test]
    fn title_is_escaped() {
        let title = r#"a <b> & "c" 'd'"#;
        assert!(has(&render(title, &run(5), &[]).0, title));
    }

    #[test]
    fn write_svg_writes_parsable_file() {
        let dir = std::env::temp_dir();
        let path = dir.join(format!("certshift-plot-{}.svg", std::process::id()));
        let ms = markers(1, 0);
        let input = PlotInput {
            title: "file",
            bucket_ms: 100,
            points: &run(10),
            markers: &ms,
        };
        write_svg(&path, &input).unwrap();
        let svg = std::fs::read_to_string(&path).unwrap();
        std::fs::remove_file(&path).ok();
        assert_eq!(parse(&svg).1, 2);

        let bad = dir.join("no-such-dir-certshift").join("x.svg");
        assert!(matches!(write_svg(&bad, &input), Err(PlotError::Io { .. })));
    }
}
