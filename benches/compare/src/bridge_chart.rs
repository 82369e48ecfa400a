//! `chronicle-compare bridge-chart`: the NATS bridge's throughput by batch size, as SVG.
//!
//! Reads the CSV files `bridge_bench --csv FILE` writes (`size,batch,msgs_per_s,p50_us,p99_us`)
//! and draws one line per payload size: x the out-bridge's batch size (records per message), y
//! the end-to-end throughput in messages per second, both on log scales. Uses the panel legend
//! and error mapping of [`crate::chart`], so there is one plotter in the repository.

use std::path::{Path, PathBuf};

use anyhow::{Context as _, Result, bail};
use plotters::prelude::*;

use crate::chart::{err, label_line, legend};

/// `bridge-chart --help` text.
pub const HELP: &str = "\
chronicle-compare bridge-chart: the NATS bridge's throughput by batch size (SVG)

usage: chronicle-compare bridge-chart --csv FILE [--csv FILE ...] --out FILE.svg [--title TEXT]

  --csv FILE    a CSV written by `bridge_bench --csv` (size,batch,msgs_per_s,p50_us,p99_us)
  --out FILE    the SVG to write
  --title TEXT  the chart's caption
  --help        this text
";

/// Parsed options.
#[derive(Debug, Clone)]
pub struct Options {
    csv: Vec<PathBuf>,
    out: PathBuf,
    title: String,
}

impl Options {
    /// Parses the arguments after `bridge-chart`; `Ok(None)` for `--help`.
    ///
    /// # Errors
    /// An unknown option, a missing value, no `--csv` or no `--out`.
    pub fn parse(args: impl Iterator<Item = String>) -> Result<Option<Options>> {
        let mut csv = Vec::new();
        let mut out = None;
        let mut title =
            "chron-bridge throughput by batch size (loopback, one nats-server, file storage)"
                .to_string();
        let mut it = args;
        while let Some(a) = it.next() {
            let mut value = || it.next().with_context(|| format!("{a} needs a value"));
            match a.as_str() {
                "--csv" => csv.push(PathBuf::from(value()?)),
                "--out" => out = Some(PathBuf::from(value()?)),
                "--title" => title = value()?,
                "--help" | "-h" => return Ok(None),
                other => bail!("unknown option {other:?}"),
            }
        }
        if csv.is_empty() {
            bail!("--csv FILE is required");
        }
        let Some(out) = out else {
            bail!("--out FILE.svg is required");
        };
        Ok(Some(Options { csv, out, title }))
    }
}

/// One measured point.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Point {
    size: u64,
    batch: u64,
    msgs_per_s: f64,
}

fn read_points(path: &Path) -> Result<Vec<Point>> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate().skip(1) {
        let f: Vec<&str> = line.split(',').collect();
        let (Some(size), Some(batch), Some(rate)) = (f.first(), f.get(1), f.get(2)) else {
            bail!(
                "{}:{}: expected size,batch,msgs_per_s,...",
                path.display(),
                i + 1
            );
        };
        let parse = |what: &str, v: &str| {
            v.trim()
                .parse::<f64>()
                .with_context(|| format!("{}:{}: {what} {v:?}", path.display(), i + 1))
        };
        out.push(Point {
            size: parse("size", size)? as u64,
            batch: parse("batch", batch)? as u64,
            msgs_per_s: parse("msgs_per_s", rate)?,
        });
    }
    Ok(out)
}

fn color_of(i: usize) -> RGBColor {
    [
        RGBColor(214, 39, 40),
        RGBColor(31, 119, 180),
        RGBColor(44, 160, 44),
        RGBColor(255, 127, 14),
    ]
    .get(i % 4)
    .copied()
    .unwrap_or(BLACK)
}

/// Draws the chart.
///
/// # Errors
/// A CSV cannot be read or parsed, holds no point, or the SVG cannot be written.
pub fn run(o: &Options) -> Result<()> {
    let mut points = Vec::new();
    for p in &o.csv {
        points.extend(read_points(p)?);
    }
    if points.is_empty() {
        bail!("no measurement in the CSV files");
    }
    let mut sizes: Vec<u64> = points.iter().map(|p| p.size).collect();
    sizes.sort_unstable();
    sizes.dedup();
    let b_max = points.iter().map(|p| p.batch).max().unwrap_or(1).max(2) as f64;
    let r_lo = points
        .iter()
        .map(|p| p.msgs_per_s)
        .fold(f64::MAX, f64::min)
        .max(1.0);
    let r_hi = points.iter().map(|p| p.msgs_per_s).fold(1.0, f64::max);
    let y_lo = 10f64.powf(r_lo.log10().floor());
    let y_hi = 10f64.powf(r_hi.log10().ceil());

    let root = SVGBackend::new(&o.out, (1000, 560)).into_drawing_area();
    root.fill(&WHITE).map_err(err)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(&o.title, ("sans-serif", 18))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(80)
        .build_cartesian_2d((1f64..b_max * 1.5).log_scale(), (y_lo..y_hi).log_scale())
        .map_err(err)?;
    chart
        .configure_mesh()
        .x_desc("records per message (out --batch)")
        .y_desc("end-to-end throughput (msgs/s)")
        .x_label_formatter(&|x| format!("{x:.0}"))
        .y_label_formatter(&|y| {
            if *y >= 1e6 {
                format!("{:.1}M", y / 1e6)
            } else {
                format!("{:.0}k", y / 1e3)
            }
        })
        .draw()
        .map_err(err)?;
    for (i, size) in sizes.iter().enumerate() {
        let mut line: Vec<(f64, f64)> = points
            .iter()
            .filter(|p| p.size == *size)
            .map(|p| (p.batch.max(1) as f64, p.msgs_per_s.max(1.0)))
            .collect();
        line.sort_by(|a, b| a.0.total_cmp(&b.0));
        let style = color_of(i).stroke_width(2);
        let drawn = chart
            .draw_series(LineSeries::new(line.clone(), style))
            .map_err(err)?;
        label_line(drawn, format!("{size} B records"), style);
        chart
            .draw_series(line.into_iter().map(|p| Circle::new(p, 4, style.filled())))
            .map_err(err)?;
    }
    legend(&mut chart)?;
    root.present().map_err(err)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn points_are_read_and_bad_lines_named() -> Result<()> {
        let dir = std::env::temp_dir().join(format!("bridge-chart-{}", std::process::id()));
        std::fs::create_dir_all(&dir)?;
        let good = dir.join("good.csv");
        std::fs::write(
            &good,
            "size,batch,msgs_per_s,p50_us,p99_us\n64,1,44851,,\n64,256,833643,215.0,\n",
        )?;
        let p = read_points(&good)?;
        assert_eq!(p.len(), 2);
        assert_eq!((p[1].size, p[1].batch), (64, 256));
        let bad = dir.join("bad.csv");
        std::fs::write(&bad, "size,batch,msgs_per_s\n64,x,1\n")?;
        let e = read_points(&bad)
            .err()
            .map(|e| format!("{e:#}"))
            .unwrap_or_default();
        assert!(e.contains("bad.csv:2") && e.contains("batch"), "{e}");
        let out = dir.join("c.svg");
        run(&Options {
            csv: vec![good],
            out: out.clone(),
            title: "t".into(),
        })?;
        assert!(std::fs::read_to_string(&out)?.contains("64 B records"));
        std::fs::remove_dir_all(&dir)?;
        Ok(())
    }
}
