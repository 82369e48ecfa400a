//! `chronicle-compare tick-to-route`: the main job (tick → strategy → router → `router/out`) of
//! two or more builds side by side.
//!
//! Each round runs `chron-cli demo --json` once per build, in turn, on a fresh bus; afterwards
//! the bus's audit (`chronicle_bus::orders::audit`, read from the files) gives every strategy's
//! tick-to-route histogram over all its routed orders. Writes `tick-to-route.md` (per build and
//! strategy: the median and spread over the rounds of p50, p99, expired orders and share, and
//! the percentiles of all rounds merged; the demo's stage medians of the last round) and
//! `tick-to-route.svg` (one panel per strategy, one line per build, all rounds merged).

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context as _, Result, anyhow, bail};
use chronicle_bus::BusLayout;
use chronicle_bus::orders::audit;
use hdrhistogram::Histogram;
use plotters::prelude::*;
use serde_json::Value;

use crate::chart::{err, label_line, legend, log_log_panel, percentile_series, x_of};
use crate::machine::Machine;

/// `tick-to-route --help` text.
pub const HELP: &str = "\
chronicle-compare tick-to-route: the demo topology's tick-to-route latency, builds side by side

usage: chronicle-compare tick-to-route --build LABEL=CHRON_CLI [--build ...] [options]
                                       [-- DEMO ARGS]

  --build LABEL=PATH  a chron-cli binary to run (two or more; the first is the baseline)
  --rounds N          rounds; each build runs the demo once per round (default 3)
  --out DIR           output directory (default target/tick-to-route)
  -- DEMO ARGS        passed to `chron-cli demo` (default: --strategies 4 --secs 8)
  --help              this text
";

/// Parsed options.
#[derive(Debug, Clone)]
pub struct Options {
    /// (label, chron-cli path), baseline first.
    pub builds: Vec<(String, PathBuf)>,
    /// Rounds.
    pub rounds: u32,
    /// Output directory.
    pub out: PathBuf,
    /// Arguments of `chron-cli demo`.
    pub demo: Vec<String>,
}

impl Options {
    /// Parses the arguments after `tick-to-route`; `None` for `--help`.
    ///
    /// # Errors
    /// An unknown flag, a bad value, or fewer than two builds.
    pub fn parse(args: impl IntoIterator<Item = String>) -> Result<Option<Self>> {
        let mut o = Options {
            builds: Vec::new(),
            rounds: 3,
            out: PathBuf::from("target/tick-to-route"),
            demo: Vec::new(),
        };
        let mut args = args.into_iter();
        while let Some(arg) = args.next() {
            let mut value = |name: &str| args.next().ok_or_else(|| anyhow!("{name} needs a value"));
            match arg.as_str() {
                "--help" => return Ok(None),
                "--build" => {
                    let v = value("--build")?;
                    let (label, path) = v
                        .split_once('=')
                        .ok_or_else(|| anyhow!("--build takes LABEL=PATH, not {v:?}"))?;
                    o.builds.push((label.to_owned(), PathBuf::from(path)));
                }
                "--rounds" => {
                    o.rounds = value("--rounds")?
                        .parse()
                        .context("--rounds takes a number")?;
                }
                "--out" => o.out = PathBuf::from(value("--out")?),
                "--" => {
                    o.demo = args.by_ref().collect();
                }
                other => bail!("unexpected argument `{other}`"),
            }
        }
        if o.builds.len() < 2 {
            bail!("give at least two builds (--build LABEL=PATH), the baseline first");
        }
        if o.rounds == 0 {
            bail!("--rounds must be at least 1");
        }
        if o.demo.is_empty() {
            o.demo = ["--strategies", "4", "--secs", "8"]
                .map(String::from)
                .to_vec();
        }
        Ok(Some(o))
    }
}

/// One strategy in one run.
#[derive(Debug, Clone)]
struct StrategyRun {
    id: String,
    hot: bool,
    p50: u64,
    p99: u64,
    expired_share: f64,
    share: f64,
    stages: Value,
}

/// Per build and strategy: every round's figures and the merged histogram.
#[derive(Debug)]
struct Series {
    build: usize,
    id: String,
    hot: bool,
    runs: Vec<StrategyRun>,
    merged: Histogram<u64>,
}

fn num(v: &Value, path: &[&str]) -> u64 {
    path.iter()
        .try_fold(v, |v, k| v.get(k))
        .and_then(Value::as_u64)
        .unwrap_or(0)
}

fn float(v: &Value, key: &str) -> f64 {
    v.get(key).and_then(Value::as_f64).unwrap_or(0.0)
}

/// Runs the demo once with `cli` on a fresh bus under `out`; returns its strategies and their
/// audited histograms.
fn run_demo(cli: &Path, demo: &[String], bus: &Path) -> Result<Vec<(StrategyRun, Histogram<u64>)>> {
    if bus.exists() {
        std::fs::remove_dir_all(bus).with_context(|| format!("removing {}", bus.display()))?;
    }
    let out = Command::new(cli)
        .arg("demo")
        .args(demo)
        .args(["--json", "--bus"])
        .arg(bus)
        .output()
        .with_context(|| format!("running {}", cli.display()))?;
    if !out.status.success() {
        bail!(
            "{} demo failed ({}): {}",
            cli.display(),
            out.status,
            String::from_utf8_lossy(&out.stderr)
                .lines()
                .last()
                .unwrap_or("")
        );
    }
    let summary: Value = serde_json::from_slice(&out.stdout).context("reading demo --json")?;
    let report = audit(&BusLayout::new(bus)).context("auditing the bus")?;
    let mut runs = Vec::new();
    for s in summary
        .get("strategies")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let id = s
            .get("id")
            .and_then(Value::as_str)
            .unwrap_or("?")
            .to_owned();
        let Some(a) = report.strategies.iter().find(|a| a.id == id) else {
            bail!("strategy {id} is not in the audit of {}", bus.display());
        };
        runs.push((
            StrategyRun {
                hot: s.get("hot").and_then(Value::as_bool) == Some(true),
                p50: num(s, &["tick_to_route_ns", "p50"]),
                p99: num(s, &["tick_to_route_ns", "p99"]),
                expired_share: float(s, "expired_share"),
                share: float(s, "share"),
                stages: s.get("stages_ns").cloned().unwrap_or(Value::Null),
                id,
            },
            a.latency.clone(),
        ));
    }
    std::fs::remove_dir_all(bus).with_context(|| format!("removing {}", bus.display()))?;
    Ok(runs)
}

/// Runs every round and writes the outputs.
///
/// # Errors
/// A demo run fails, or an output cannot be written.
pub fn run(o: &Options) -> Result<()> {
    std::fs::create_dir_all(&o.out)
        .with_context(|| format!("creating the output directory {}", o.out.display()))?;
    let before = Machine::probe();
    let mut series: Vec<Series> = Vec::new();
    for round in 1..=o.rounds {
        for (b, (label, cli)) in o.builds.iter().enumerate() {
            eprintln!("round {round}/{}: {label}", o.rounds);
            let bus = o.out.join(format!("bus-{b}"));
            for (run, h) in run_demo(cli, &o.demo, &bus).with_context(|| label.clone())? {
                eprintln!(
                    "  {:>4}{} p50 {:>7.1} µs  p99 {:>7.1} µs  expired {:.3} %",
                    run.id,
                    if run.hot { " (hot)" } else { "" },
                    run.p50 as f64 / 1e3,
                    run.p99 as f64 / 1e3,
                    run.expired_share * 100.0
                );
                match series.iter_mut().find(|s| s.build == b && s.id == run.id) {
                    Some(s) => {
                        // Same bounds everywhere (the audit builds them alike).
                        let _ = s.merged.add(&h);
                        s.runs.push(run);
                    }
                    None => series.push(Series {
                        build: b,
                        id: run.id.clone(),
                        hot: run.hot,
                        runs: vec![run],
                        merged: h,
                    }),
                }
            }
        }
    }
    let after = Machine::probe();
    let md = o.out.join("tick-to-route.md");
    std::fs::write(&md, markdown(o, &series, &before, &after))
        .with_context(|| format!("writing {}", md.display()))?;
    let svg = o.out.join("tick-to-route.svg");
    draw(&svg, o, &series).context("drawing the chart")?;
    println!("wrote {} and {}", md.display(), svg.display());
    Ok(())
}

/// Median and range of `v`, formatted with `f`.
fn spread(mut v: Vec<f64>, f: impl Fn(f64) -> String) -> String {
    v.sort_by(f64::total_cmp);
    let (Some(lo), Some(hi)) = (v.first(), v.last()) else {
        return "-".to_owned();
    };
    let mid = v.get(v.len() / 2).copied().unwrap_or(*lo);
    if v.len() == 1 {
        f(mid)
    } else {
        format!("{} ({}-{})", f(mid), f(*lo), f(*hi))
    }
}

fn us(ns: f64) -> String {
    if ns >= 1e6 {
        format!("{:.2} ms", ns / 1e6)
    } else {
        format!("{:.0} µs", ns / 1e3)
    }
}

fn markdown(o: &Options, series: &[Series], before: &Machine, after: &Machine) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "# Tick to route\n\n`chron-cli demo {} --json`, {} round(s) per build, builds in turn.\n\n\
         machine before: {}\n\nmachine after: {}\n",
        o.demo.join(" "),
        o.rounds,
        before.one_line(),
        after.one_line()
    );
    let _ = writeln!(s, "Builds:");
    for (label, cli) in &o.builds {
        let _ = writeln!(s, "- `{label}`: `{}`", cli.display());
    }
    let _ = writeln!(
        s,
        "\nPer strategy: median (min-max) over the rounds; the percentiles of all rounds' \
         routed orders merged from the audits.\n\n\
         | build | strategy | p50 | p99 | expired | share | merged p50 / p90 / p99 / p99.9 |\n\
         |---|---|---|---|---|---|---|"
    );
    for x in series {
        let label = o.builds.get(x.build).map_or("?", |(l, _)| l.as_str());
        let q = |p: f64| us(x.merged.value_at_quantile(p) as f64);
        let _ = writeln!(
            s,
            "| {label} | {}{} | {} | {} | {} | {} | {} / {} / {} / {} |",
            x.id,
            if x.hot { " (hot)" } else { "" },
            spread(x.runs.iter().map(|r| r.p50 as f64).collect(), us),
            spread(x.runs.iter().map(|r| r.p99 as f64).collect(), us),
            spread(
                x.runs.iter().map(|r| r.expired_share * 100.0).collect(),
                |v| format!("{v:.2} %")
            ),
            spread(x.runs.iter().map(|r| r.share * 100.0).collect(), |v| {
                format!("{v:.1} %")
            }),
            q(0.5),
            q(0.9),
            q(0.99),
            q(0.999)
        );
    }
    let _ = writeln!(
        s,
        "\nStages (the last round's router, p50 / p99): to_order (tick sent → order written), \
         merge (written → merged), queue (merged → out of the scheduler), send.\n\n\
         | build | strategy | to_order | merge | queue | send |\n|---|---|---|---|---|---|"
    );
    for x in series {
        let label = o.builds.get(x.build).map_or("?", |(l, _)| l.as_str());
        let Some(last) = x.runs.last() else { continue };
        let stage = |k: &str| {
            if last.stages.get(k).is_none() {
                return "-".to_owned();
            }
            format!(
                "{} / {}",
                us(num(&last.stages, &[k, "p50"]) as f64),
                us(num(&last.stages, &[k, "p99"]) as f64)
            )
        };
        let _ = writeln!(
            s,
            "| {label} | {} | {} | {} | {} | {} |",
            x.id,
            stage("to_order"),
            stage("merge"),
            stage("queue"),
            stage("send")
        );
    }
    s
}

const COLORS: [RGBColor; 4] = [
    RGBColor(0, 0, 0),
    RGBColor(214, 39, 40),
    RGBColor(31, 119, 180),
    RGBColor(44, 160, 44),
];

fn draw(path: &Path, o: &Options, series: &[Series]) -> Result<()> {
    let mut ids: Vec<(&str, bool)> = Vec::new();
    for x in series {
        if !ids.iter().any(|(id, _)| *id == x.id) {
            ids.push((&x.id, x.hot));
        }
    }
    let cols = 2usize;
    let rows = ids.len().div_ceil(cols).max(1);
    let root =
        SVGBackend::new(path, (1400, 480 * u32::try_from(rows).unwrap_or(1))).into_drawing_area();
    root.fill(&WHITE).map_err(err)?;
    let title = format!(
        "Tick to route by percentile, per strategy (chron-cli demo {}, {} round(s) merged)",
        o.demo.join(" "),
        o.rounds
    );
    let root = root.titled(&title, ("sans-serif", 22)).map_err(err)?;
    let panels = root.split_evenly((rows, cols));
    for ((id, hot), panel) in ids.iter().zip(panels.iter()) {
        let curves: Vec<(usize, Vec<(f64, u64)>)> = series
            .iter()
            .filter(|x| x.id == *id && !x.merged.is_empty())
            .map(|x| (x.build, percentile_series(&x.merged)))
            .collect();
        if curves.is_empty() {
            continue;
        }
        let refs: Vec<&[(f64, u64)]> = curves.iter().map(|(_, c)| c.as_slice()).collect();
        let caption = format!("strategy {id}{}", if *hot { " (hot)" } else { "" });
        let (mut chart, x_max) = log_log_panel(panel, &caption, "tick to route", &refs)?;
        for (b, points) in &curves {
            let color = COLORS.get(*b % COLORS.len()).copied().unwrap_or(BLACK);
            let style = ShapeStyle::from(color).stroke_width(if *b == 0 { 2 } else { 3 });
            let line = points
                .iter()
                .map(|&(q, v)| (x_of(q, x_max), v.max(1) as f64));
            let label = o.builds.get(*b).map_or("?", |(l, _)| l.as_str());
            let drawn = chart
                .draw_series(LineSeries::new(line, style))
                .map_err(err)?;
            label_line(drawn, label, style);
        }
        legend(&mut chart)?;
    }
    root.present().map_err(err)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(v: &[&str]) -> Result<Option<Options>> {
        Options::parse(v.iter().map(|s| (*s).to_owned()))
    }

    #[test]
    fn options() {
        let o = parse(&[
            "--build", "a=/x", "--build", "b=/y", "--rounds", "2", "--", "--secs", "3",
        ])
        .unwrap()
        .unwrap();
        assert_eq!(o.builds.len(), 2);
        assert_eq!(o.builds[1], ("b".to_owned(), PathBuf::from("/y")));
        assert_eq!(
            (o.rounds, o.demo.clone()),
            (2, vec!["--secs".to_owned(), "3".to_owned()])
        );
        let d = parse(&["--build", "a=/x", "--build", "b=/y"])
            .unwrap()
            .unwrap();
        assert_eq!(d.demo.join(" "), "--strategies 4 --secs 8");
        assert!(parse(&["--build", "a=/x"]).is_err());
        assert!(parse(&["--build", "a"]).is_err());
        assert!(parse(&["--help"]).unwrap().is_none());
    }

    #[test]
    fn spread_is_median_and_range() {
        assert_eq!(spread(vec![3.0, 1.0, 2.0], |v| format!("{v}")), "2 (1-3)");
        assert_eq!(spread(vec![5.0], |v| format!("{v}")), "5");
        assert_eq!(spread(vec![], |v| format!("{v}")), "-");
    }

    #[test]
    fn chart_and_table_name_every_build_and_strategy() {
        let dir = std::env::temp_dir().join(format!("t2r-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let o = Options {
            builds: vec![
                ("before".into(), "/a".into()),
                ("after".into(), "/b".into()),
            ],
            rounds: 1,
            out: dir.clone(),
            demo: vec!["--secs".into(), "1".into()],
        };
        let mut series = Vec::new();
        for (build, scale) in [(0usize, 10u64), (1, 1)] {
            for id in ["s1", "hot"] {
                let mut h = Histogram::<u64>::new_with_bounds(1, 60_000_000_000, 3).unwrap();
                for v in 1..=1000u64 {
                    h.record(v * 100 * scale).unwrap();
                }
                let run = StrategyRun {
                    id: id.into(),
                    hot: id == "hot",
                    p50: h.value_at_quantile(0.5),
                    p99: h.value_at_quantile(0.99),
                    expired_share: 0.001,
                    share: 0.5,
                    stages: serde_json::json!({"to_order": {"p50": 1000, "p99": 2000}}),
                };
                series.push(Series {
                    build,
                    id: id.into(),
                    hot: id == "hot",
                    runs: vec![run],
                    merged: h,
                });
            }
        }
        let svg = dir.join("t.svg");
        draw(&svg, &o, &series).unwrap();
        let text = std::fs::read_to_string(&svg).unwrap();
        for name in ["before", "after", "strategy s1", "strategy hot (hot)"] {
            assert!(text.contains(name), "{name} missing from the chart");
        }
        let before = Machine::probe();
        let md = markdown(&o, &series, &before, &before);
        assert!(
            md.contains("| before | s1 | 500 µs | 990 µs | 0.10 % | 50.0 % |"),
            "{md}"
        );
        assert!(
            md.contains("| after | hot | 1 µs / 2 µs | - | - | - |"),
            "{md}"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
