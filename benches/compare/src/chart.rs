//! The latency percentile chart (the HdrHistogram percentile plot), as SVG.
//!
//! One panel per payload size and reader kind (spinning / sleeping). The x axis is the
//! percentile on a log scale of `1 / (1 - q)` (50 % at 2, 99 % at 100, 99.9 % at 1000...),
//! so the tail gets as much room as the body; the y axis is the one-way latency, also on a
//! log scale because the transports span three orders of magnitude. Each line is one
//! transport's histogram summed over all rounds.
//!
//! The SVG backend writes text as SVG `<text>` elements and sizes it with plotters' built-in
//! estimate, so drawing needs no font files and no system libraries.

use anyhow::{Result, anyhow};
use chronicle_lab::harness::WaitMode;
use hdrhistogram::Histogram;
use plotters::prelude::*;

use crate::options::Options;
use crate::{CASES, Measurement};

/// Points per decade of `1 / (1 - q)`.
const POINTS_PER_DECADE: u32 = 50;

/// The histogram of `case` at `payload`, summed over rounds.
#[must_use]
pub fn merged(all: &[Measurement], payload: usize, case: usize) -> Option<Histogram<u64>> {
    let mut out: Option<Histogram<u64>> = None;
    for h in all
        .iter()
        .filter(|m| m.payload == payload && m.case == case)
        .filter_map(|m| m.latency.as_ref()?.histogram.as_ref())
    {
        match out.as_mut() {
            None => out = Some(h.clone()),
            Some(acc) => {
                // Same bounds everywhere (the harness builds every histogram alike), so
                // adding cannot fail; a failure would only drop this round from the plot.
                let _ = acc.add(h);
            }
        }
    }
    out.filter(|h| !h.is_empty())
}

/// `(quantile, latency ns)` from the median to the last sample, evenly spaced on the
/// log-percentile axis.
#[must_use]
pub fn percentile_series(h: &Histogram<u64>) -> Vec<(f64, u64)> {
    let n = h.len().max(1) as f64;
    // The last point sits where one sample is left: q = 1 - 1/n.
    let decades = n.log10();
    let steps = (decades * f64::from(POINTS_PER_DECADE)).ceil() as u32;
    let mut out = Vec::with_capacity(steps as usize + 2);
    for i in 0..=steps {
        let x = 10f64
            .powf(f64::from(i) / f64::from(POINTS_PER_DECADE))
            .min(n);
        let q = 1.0 - 1.0 / x;
        out.push((q, h.value_at_quantile(q)));
    }
    out.push((1.0, h.max()));
    out
}

/// A panel with a log-scale percentile x axis and a log-scale latency y axis that fits every
/// curve (each a [`percentile_series`]); returns it and the x of the last point.
pub fn log_log_panel<'a, 'b>(
    panel: &'a DrawingArea<SVGBackend<'b>, plotters::coord::Shift>,
    caption: &str,
    y_desc: &str,
    curves: &[&[(f64, u64)]],
) -> Result<(LogPanel<'a, 'b>, f64)> {
    let x_max = curves
        .iter()
        .filter_map(|s| s.iter().rev().nth(1).map(|&(q, _)| x_of(q, f64::MAX)))
        .fold(10.0f64, f64::max);
    let values = || curves.iter().flat_map(|s| s.iter().map(|&(_, v)| v));
    let lo = values().min().unwrap_or(1).max(1) as f64;
    let hi = values().max().unwrap_or(1).max(2) as f64;
    let y_lo = 10f64.powf(lo.log10().floor());
    let y_hi = 10f64.powf(hi.log10().ceil());
    let mut chart = ChartBuilder::on(panel)
        .caption(caption, ("sans-serif", 18))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(70)
        .build_cartesian_2d((1f64..x_max).log_scale(), (y_lo..y_hi).log_scale())
        .map_err(err)?;
    chart
        .configure_mesh()
        .x_desc("percentile")
        .y_desc(y_desc)
        .x_label_formatter(&|x| percent_label(*x))
        .y_label_formatter(&|y| latency_label(*y))
        .draw()
        .map_err(err)?;
    Ok((chart, x_max))
}

/// The series labels, top left on a translucent box.
pub fn legend<'a, 'b: 'a>(chart: &mut LogPanel<'a, 'b>) -> Result<()> {
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .draw()
        .map_err(err)
}

/// Names a drawn series in the legend, keyed by a short line in the series' style.
pub fn label_line<DB: DrawingBackend>(
    series: &mut plotters::chart::SeriesAnno<'_, DB>,
    label: impl Into<String>,
    style: ShapeStyle,
) {
    series
        .label(label)
        .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], style));
}

/// What [`log_log_panel`] draws on.
pub type LogPanel<'a, 'b> = ChartContext<
    'a,
    SVGBackend<'b>,
    Cartesian2d<
        plotters::coord::combinators::LogCoord<f64>,
        plotters::coord::combinators::LogCoord<f64>,
    >,
>;

/// The x coordinate of quantile `q` (`1 / (1 - q)`, the last point at `x_max`).
pub fn x_of(q: f64, x_max: f64) -> f64 {
    if q >= 1.0 {
        x_max
    } else {
        (1.0 / (1.0 - q)).min(x_max)
    }
}

fn percent_label(x: f64) -> String {
    let q = (1.0 - 1.0 / x) * 100.0;
    let decimals = (x.log10().round() as i64 - 2).clamp(0, 6) as usize;
    format!("{q:.decimals$}%")
}

fn latency_label(ns: f64) -> String {
    if ns < 1e3 {
        format!("{ns:.0} ns")
    } else if ns < 1e6 {
        format!("{:.0} µs", ns / 1e3)
    } else if ns < 1e9 {
        format!("{:.0} ms", ns / 1e6)
    } else {
        format!("{:.0} s", ns / 1e9)
    }
}

fn color_of(transport: &str) -> RGBColor {
    match transport {
        "ring" | "ring-futex" => RGBColor(0, 0, 0),
        "ring-len" => RGBColor(110, 110, 110),
        "chronicle" => RGBColor(214, 39, 40),
        "iceoryx2" => RGBColor(31, 119, 180),
        "unix" => RGBColor(44, 160, 44),
        "pipe" => RGBColor(255, 127, 14),
        "crossbeam" => RGBColor(148, 103, 189),
        _ => RGBColor(127, 127, 127),
    }
}

pub fn err<E: std::fmt::Debug>(e: E) -> anyhow::Error {
    anyhow!("plotting: {e:?}")
}

/// Draws the chart into `path` (SVG).
///
/// # Errors
/// Nothing was measured, or the file cannot be written.
pub fn draw(path: &std::path::Path, o: &Options, all: &[Measurement]) -> Result<()> {
    let waits = [
        (WaitMode::Spin, "spinning readers"),
        (WaitMode::Block, "sleeping readers"),
    ];
    let sizes = &o.sizes;
    let rows = sizes.len().max(1);
    let root =
        SVGBackend::new(path, (1400, 560 * u32::try_from(rows).unwrap_or(1))).into_drawing_area();
    root.fill(&WHITE).map_err(err)?;
    let pinning = o.cores.map_or_else(
        || "unpinned".to_owned(),
        |(w, r)| format!("writer on core {w}, reader on core {r}"),
    );
    let title = format!(
        "One-way latency by percentile ({} msgs/s paced, {} round(s) merged, {pinning})",
        o.rate, o.rounds
    );
    let root = root.titled(&title, ("sans-serif", 24)).map_err(err)?;
    let panels = root.split_evenly((rows, waits.len()));
    let mut panels = panels.iter();
    for &payload in sizes {
        for &(wait, wait_name) in &waits {
            let Some(panel) = panels.next() else { break };
            let series: Vec<(usize, Vec<(f64, u64)>)> = CASES
                .iter()
                .enumerate()
                .filter(|(_, c)| c.wait == wait)
                .filter_map(|(i, _)| merged(all, payload, i).map(|h| (i, percentile_series(&h))))
                .collect();
            if series.is_empty() {
                continue;
            }
            let curves: Vec<&[(f64, u64)]> = series.iter().map(|(_, s)| s.as_slice()).collect();
            let reading = if o.touch_payload {
                "all of it"
            } else {
                "its 16 B header"
            };
            let (mut chart, x_max) = log_log_panel(
                panel,
                &format!("{payload} B payload, {wait_name} reading {reading}"),
                "one-way latency",
                &curves,
            )?;
            for (i, points) in &series {
                let Some(c) = CASES.get(*i) else { continue };
                let color = color_of(c.transport);
                let width = if c.transport == "chronicle" { 3 } else { 2 };
                let style = ShapeStyle::from(color).stroke_width(width);
                let line = points
                    .iter()
                    .map(|&(q, v)| (x_of(q, x_max), (v.max(1)) as f64));
                let drawn = if c.threads {
                    chart
                        .draw_series(DashedLineSeries::new(line, 6, 4, style))
                        .map_err(err)?
                } else {
                    chart
                        .draw_series(LineSeries::new(line, style))
                        .map_err(err)?
                };
                label_line(drawn, c.label, style);
            }
            legend(&mut chart)?;
        }
    }
    root.present().map_err(err)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels() {
        assert_eq!(percent_label(2.0), "50%");
        assert_eq!(percent_label(100.0), "99%");
        assert_eq!(percent_label(1000.0), "99.9%");
        assert_eq!(percent_label(1e5), "99.999%");
        assert_eq!(latency_label(100.0), "100 ns");
        assert_eq!(latency_label(10_000.0), "10 µs");
    }

    #[test]
    fn series_reaches_the_maximum() {
        let mut h = Histogram::<u64>::new_with_bounds(1, 60_000_000_000, 3).unwrap();
        for v in 1..=10_000u64 {
            h.record(v).unwrap();
        }
        let s = percentile_series(&h);
        assert_eq!(s.first().unwrap().1, h.value_at_quantile(0.0));
        assert_eq!(s.last().unwrap(), &(1.0, h.max()));
        assert!(s.windows(2).all(|w| w[0].1 <= w[1].1));
    }
}
