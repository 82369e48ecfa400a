//! The demo behind `chron-cli demo`: the trading topology end to end. Starts the feed, N
//! strategies (the last one "hot") and the router as separate OS processes (the calling
//! executable re-run with the `feed`, `strategy` and `router` role subcommands, which it must
//! dispatch: the first two to [`roles`], the router to the product's router process) on a bus
//! directory, prints one status line per second, kills and
//! restarts strategy `s1` midway (the router follows it), with `--kill-router N` SIGKILLs the
//! router N times at random moments and restarts it, stops everything in order (feed →
//! strategies → router, which drains) after `--secs` or on Ctrl-C, then audits the bus from its
//! files (`chronicle_bus::orders::audit`, what `chron-cli audit` runs) and prints a summary: per
//! strategy committed / routed / rejected / expired / cancelled, answered / unanswered / sent
//! twice, and tick-to-route latency percentiles. It fails (exit 1) unless every order is
//! answered exactly once, none is sent twice and the audit is clean.
//!
//! Weights (DRR quanta): `s<i>` weighs `i`, `hot` weighs 1. The demo writes the router's
//! settings (weights, rate limit, metrics address) to `<bus>/router.toml` and starts the router
//! with `--config` on it: edit it and send the router SIGHUP to change weights or the rate
//! limit while the demo runs.

use std::collections::BTreeMap;
use std::io::Write;
use std::num::NonZeroU32;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use serde_json::{Value, json};

use chronicle_bus::BusLayout;
use chronicle_bus::orders::{AuditReport, FateCode, audit};

use chronicle_metrics::text::{duration_ns, table};

use crate::procs::{Proc, role_command};

pub mod roles;

/// What the front end running the demo supplies: the product's parts that the demo drives.
#[derive(Debug, Clone, Copy)]
pub struct Host {
    /// Polled between steps: true once the user asked to stop (SIGINT, SIGTERM); the front end
    /// installs the handlers.
    pub stop_requested: fn() -> bool,
    /// Refuses a `--bus` path that is not a bus directory (a missing one is fine: it is created).
    pub check_bus_dir: fn(&Path) -> Result<()>,
    /// Renders the router's config file (what the `router` role reads with `--config`).
    pub router_config: fn(&RouterSettings) -> String,
    /// The log format handed to the processes (`CHRONICLE_LOG_FORMAT`).
    pub log_format: &'static str,
}

/// The router settings the demo chooses, for [`Host::router_config`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouterSettings {
    /// Outbound orders per second.
    pub rate_limit: u64,
    /// Where the router serves its Prometheus metrics, if anywhere.
    pub metrics_listen: Option<String>,
    /// Strategy weights (DRR quanta), in order.
    pub weights: Vec<(String, NonZeroU32)>,
}

/// Arguments of `chron-cli demo`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Number of strategies (the last one is the hot one).
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..=32))]
    pub strategies: u32,
    /// Seconds to run.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(2..))]
    pub secs: u64,
    /// Feed rate, ticks per second.
    #[arg(long, default_value_t = 10_000)]
    pub rate: u64,
    /// Router outbound rate limit, orders per second (the exchange throttle).
    #[arg(long, default_value_t = 5_000)]
    pub rate_limit: u64,
    /// A normal strategy orders on every N-th tick of its symbols.
    #[arg(long, default_value_t = 8)]
    pub every: u64,
    /// Order deadline, microseconds.
    #[arg(long, default_value_t = 2_000)]
    pub deadline_us: u64,
    /// SIGKILL the router this many times at random moments (and restart it each time).
    #[arg(long, default_value_t = 0)]
    pub kill_router: u32,
    /// Strategies' back-off window (orders without a fate at once; 0: no back-off).
    #[arg(long, default_value_t = 64)]
    pub max_outstanding: u64,
    /// Pin each process to its own CPU (feed, strategies, router in turn, wrapping around) and
    /// let them spin while they wait: for a machine with a core per process.
    #[arg(long)]
    pub pin: bool,
    /// Busy polls a waiting strategy or router makes before yielding (default: 200 when the
    /// processes share CPUs, 1000000 with a core each or with --pin).
    #[arg(long)]
    pub spin: Option<u32>,
    /// `sched_yield`s a waiting strategy or router makes before sleeping (default: 10 when the
    /// processes share CPUs, 0 otherwise).
    #[arg(long)]
    pub yields: Option<u32>,
    /// Microseconds the feed spins before each tick instead of sleeping (default: 0 when the
    /// processes share CPUs, 50 otherwise).
    #[arg(long)]
    pub feed_spin_us: Option<u64>,
    /// Bus directory (default: a new directory under the system temp dir, left for inspection).
    #[arg(long)]
    pub bus: Option<PathBuf>,
    /// Print only the summary, as one JSON object (status lines go to stderr).
    #[arg(long)]
    pub json: bool,
    /// The router serves its Prometheus metrics on this address (see `router --metrics-listen`;
    /// `chron-cli metrics BUS --listen` serves the queues').
    #[arg(long, value_name = "ADDR")]
    pub metrics_listen: Option<String>,
}

/// Starts this executable with `args`; its stdout lines go to `tx` labelled `label`.
fn spawn(
    label: &str,
    args: &[String],
    tx: &mpsc::Sender<(String, String)>,
    log_format: &str,
) -> Result<Proc> {
    let mut cmd = role_command(args)?;
    cmd.env(chronicle_metrics::logs::LOG_FORMAT_ENV, log_format)
        .stdin(Stdio::null());
    // The demo prints the router's events itself: its processes log only what goes wrong,
    // unless CHRONICLE_LOG says otherwise.
    if std::env::var_os(chronicle_metrics::logs::LOG_ENV).is_none() {
        cmd.env(chronicle_metrics::logs::LOG_ENV, "warn");
    }
    Proc::spawn(label, cmd, tx).with_context(|| format!("cannot start the {label}"))
}

/// What the demo knows about each process, from their JSON lines.
#[derive(Debug, Default)]
struct State {
    feed: Value,
    strategies: BTreeMap<String, Value>,
    router: Value,
    events: Vec<String>,
    restarted_first_order_id: Option<u64>,
}

impl State {
    fn absorb(&mut self, label: &str, line: &str) {
        let Ok(v) = serde_json::from_str::<Value>(line) else {
            return;
        };
        match v.get("role").and_then(Value::as_str) {
            Some("feed") => self.feed = v,
            Some("router") if v.get("event").is_some() => {
                let ev = v.get("event").and_then(Value::as_str).unwrap_or("");
                let id = v.get("id").and_then(Value::as_str).unwrap_or("");
                let why = v
                    .get("reason")
                    .or_else(|| v.get("error"))
                    .and_then(Value::as_str)
                    .map(|r| format!(" ({r})"))
                    .unwrap_or_default();
                self.events.push(format!("router: {ev} {id}{why}"));
            }
            Some("router") => self.router = v,
            Some("strategy") if v.get("start").is_some() && label.ends_with("(restarted)") => {
                self.restarted_first_order_id = v.get("first_order_id").and_then(Value::as_u64);
            }
            Some("strategy") if v.get("start").is_some() => {}
            Some("strategy") => {
                let id = v
                    .get("id")
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .to_string();
                self.strategies.insert(id, v);
            }
            _ => {}
        }
    }

    fn router_rows(&self) -> Vec<Value> {
        self.router
            .get("strategies")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default()
    }
}

fn n(v: &Value, k: &str) -> u64 {
    v.get(k).and_then(Value::as_u64).unwrap_or(0)
}

/// Runs the demo.
///
/// # Errors
/// A bus directory that is not one, a process that cannot be started; a failed audit is exit
/// status 1, not an error.
pub fn run(a: Args, host: &Host) -> Result<u8> {
    let stop_requested = host.stop_requested;
    let bus = match &a.bus {
        Some(b) => b.clone(),
        None => std::env::temp_dir().join(format!("chronicle-demo-{}", std::process::id())),
    };
    (host.check_bus_dir)(&bus)?;
    std::fs::create_dir_all(&bus)
        .with_context(|| format!("cannot create bus directory {}", bus.display()))?;
    let bus_s = bus.to_string_lossy().to_string();
    let n_normal = a.strategies - 1;
    let mut ids: Vec<(String, u32, bool)> = (1..=n_normal)
        .map(|i| (format!("s{i}"), i, false))
        .collect();
    ids.push(("hot".to_string(), 1, true));
    let weights = ids
        .iter()
        .map(|(id, w, _)| format!("{id}={w}"))
        .collect::<Vec<_>>()
        .join(",");
    let wait = WaitPolicy::choose(&a, ids.len() + 2);
    let say = |s: &str| {
        if a.json {
            eprintln!("{s}");
        } else {
            println!("{s}");
        }
    };
    say(&format!(
        "demo: bus {bus_s}: feed {} ticks/s, {} strategies ({weights}), router limit {}/s, {} s",
        a.rate, a.strategies, a.rate_limit, a.secs
    ));

    let config_path = bus.join("router.toml");
    let router_file = RouterSettings {
        rate_limit: a.rate_limit,
        metrics_listen: a.metrics_listen.clone(),
        weights: ids
            .iter()
            .map(|(id, w, _)| (id.clone(), NonZeroU32::new(*w).unwrap_or(NonZeroU32::MIN)))
            .collect(),
    };
    std::fs::write(&config_path, (host.router_config)(&router_file))
        .with_context(|| format!("cannot write the router config {}", config_path.display()))?;
    say(&format!(
        "demo: router config {} (edit it and send the router SIGHUP to change weights or the rate limit)",
        config_path.display()
    ));

    let (tx, rx) = mpsc::channel();
    let s = |v: &str| v.to_string();
    let mut router_args = vec![
        s("router"),
        s("--bus"),
        bus_s.clone(),
        s("--config"),
        config_path.to_string_lossy().into_owned(),
    ];
    router_args.extend(wait.args(ids.len() + 1, false));
    let mut router = spawn("router", &router_args, &tx, host.log_format)?;
    // When to kill the router: spread over the middle 80 % of the run, jittered.
    let mut kills = router_kill_times(a.kill_router, Duration::from_secs(a.secs));
    let mut router_kills = 0u32;
    let mut feed = spawn(
        "feed",
        &[
            vec![
                s("feed"),
                s("--bus"),
                bus_s.clone(),
                s("--rate"),
                a.rate.to_string(),
            ],
            wait.args(0, true),
        ]
        .concat(),
        &tx,
        host.log_format,
    )?;
    let strategy_args = |id: &str, slot: u32, hot: bool| {
        let mut v = vec![
            s("strategy"),
            s("--bus"),
            bus_s.clone(),
            s("--id"),
            s(id),
            s("--every"),
            a.every.to_string(),
            s("--slot"),
            slot.to_string(),
            s("--slots"),
            n_normal.max(1).to_string(),
            s("--deadline-us"),
            a.deadline_us.to_string(),
            s("--max-outstanding"),
            a.max_outstanding.to_string(),
        ];
        v.extend(wait.args(1 + slot as usize, false));
        if hot {
            v.push(s("--hot"));
        }
        v
    };
    let mut strategies = Vec::new();
    for (i, (id, _, hot)) in ids.iter().enumerate() {
        strategies.push(spawn(
            &format!("strategy {id}"),
            &strategy_args(id, i as u32, *hot),
            &tx,
            host.log_format,
        )?);
    }

    let mut st = State::default();
    let start = Instant::now();
    let run_for = Duration::from_secs(a.secs);
    let mut restarted = n_normal == 0;
    let mut next_status = start + Duration::from_secs(1);
    let mut prev: (u64, u64, u64, BTreeMap<String, u64>) = (0, 0, 0, BTreeMap::new());
    let mut interrupted = false;
    loop {
        while let Ok((label, line)) = rx.recv_timeout(Duration::from_millis(20)) {
            st.absorb(&label, &line);
            if Instant::now() >= next_status {
                break;
            }
        }
        for e in st.events.drain(..) {
            say(&format!("  {e}"));
        }
        let now = Instant::now();
        if stop_requested() {
            interrupted = true;
            break;
        }
        if now.duration_since(start) >= run_for {
            break;
        }
        if !restarted && now.duration_since(start) >= run_for / 2 {
            restarted = true;
            if let Some(p) = strategies.first_mut() {
                say("demo: killing strategy s1 (SIGKILL) and starting it again");
                p.kill();
                *p = spawn(
                    "strategy s1 (restarted)",
                    &strategy_args("s1", 0, false),
                    &tx,
                    host.log_format,
                )?;
            }
        }
        if kills
            .first()
            .is_some_and(|&k| now.duration_since(start) >= k)
        {
            kills.remove(0);
            router_kills += 1;
            say(&format!(
                "demo: killing the router (SIGKILL, {router_kills} of {}) and starting it again",
                a.kill_router
            ));
            router.kill();
            router = spawn("router", &router_args, &tx, host.log_format)?;
        }
        if now >= next_status {
            next_status += Duration::from_secs(1);
            say(&status_line(&st, &mut prev, now.duration_since(start)));
        }
    }

    // Stop in order: the feed, then the strategies (they close their queues), then the router,
    // which drains what they committed.
    say(&format!(
        "demo: {}stopping feed, strategies, router",
        if interrupted { "interrupted; " } else { "" }
    ));
    let mut clean = feed.stop(Duration::from_secs(10));
    for p in &mut strategies {
        clean &= p.stop(Duration::from_secs(10));
    }
    clean &= router.stop(Duration::from_secs(20));
    drop(tx);
    // The reader threads end with their pipes; collect every last line.
    let until = Instant::now() + Duration::from_secs(5);
    while let Ok((label, line)) = rx.recv_timeout(until.saturating_duration_since(Instant::now())) {
        st.absorb(&label, &line);
    }
    for e in st.events.drain(..) {
        say(&format!("  {e}"));
    }
    let report = audit(&BusLayout::new(&bus)).context("cannot audit the bus")?;
    let summary = summary(
        &st,
        &ids,
        &report,
        &bus,
        clean,
        interrupted,
        start.elapsed(),
    );
    let summary = with_kills(summary, router_kills);
    if a.json {
        let mut out = std::io::stdout().lock();
        serde_json::to_writer_pretty(&mut out, &summary).context("write JSON output")?;
        writeln!(out).context("write output")?;
    } else {
        print_summary(&summary, &bus);
        for p in report.problems.iter().take(20) {
            println!("  audit: {p}");
        }
    }
    let closes = summary.get("accounting_closes").and_then(Value::as_bool) == Some(true);
    if !clean {
        bail!("a process of the topology did not stop within its grace period");
    }
    Ok(if closes { 0 } else { 1 })
}

/// How the demo's processes wait: spin (and pin) on a machine with a core per process, otherwise
/// short spins and then sleep, so that idle processes leave the CPUs to busy ones.
#[derive(Debug, Clone, Copy)]
struct WaitPolicy {
    pin: bool,
    cpus: usize,
    spin: u32,
    yields: u32,
    feed_spin_us: u64,
}

impl WaitPolicy {
    fn choose(a: &Args, processes: usize) -> WaitPolicy {
        let cpus = std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get);
        // Spinning pays only when every process has a core of its own.
        let spinning = a.pin || cpus >= processes;
        let (spin, yields, feed_spin_us) = if spinning {
            (1_000_000, 0, 50)
        } else {
            (SHARED_SPIN, SHARED_YIELDS, 0)
        };
        WaitPolicy {
            pin: a.pin,
            cpus,
            spin: a.spin.unwrap_or(spin),
            yields: a.yields.unwrap_or(yields),
            feed_spin_us: a.feed_spin_us.unwrap_or(feed_spin_us),
        }
    }

    /// The role arguments for process number `index` (0 the feed).
    fn args(&self, index: usize, feed: bool) -> Vec<String> {
        let mut v = if feed {
            vec!["--spin-us".to_string(), self.feed_spin_us.to_string()]
        } else {
            vec![
                "--spin".to_string(),
                self.spin.to_string(),
                "--yields".to_string(),
                self.yields.to_string(),
            ]
        };
        if self.pin {
            v.push("--cpu".to_string());
            v.push((index % self.cpus.max(1)).to_string());
        }
        v
    }
}

/// Busy polls before yielding when processes share CPUs (measured: BENCHMARKS.md "Tick to route").
const SHARED_SPIN: u32 = 200;
/// `sched_yield`s before sleeping when processes share CPUs.
const SHARED_YIELDS: u32 = 10;

fn with_kills(mut v: Value, kills: u32) -> Value {
    if let Some(m) = v.as_object_mut() {
        m.insert("router_kills".to_string(), json!(kills));
    }
    v
}

/// `n` moments in the middle 80 % of `run`, each jittered within its own slot (so two kills are
/// never on top of each other and the router gets time to recover in between).
fn router_kill_times(n: u32, run: Duration) -> Vec<Duration> {
    if n == 0 {
        return Vec::new();
    }
    let mut rng = crate::topology::XorShift(
        u64::from(std::process::id()).wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1,
    );
    let span = run.mul_f64(0.8);
    let slot = span / n;
    (0..n)
        .map(|i| {
            let jitter = (rng.next_u64() % 1_000) as f64 / 1_000.0;
            run.mul_f64(0.1) + slot * i + slot.mul_f64(0.2 + 0.6 * jitter)
        })
        .collect()
}

fn status_line(
    st: &State,
    prev: &mut (u64, u64, u64, BTreeMap<String, u64>),
    elapsed: Duration,
) -> String {
    let ticks = n(&st.feed, "ticks");
    let committed: u64 = st.strategies.values().map(|v| n(v, "committed")).sum();
    let routed = n(&st.router, "routed");
    let rows = st.router_rows();
    let (mut rejected, mut expired) = (0, 0);
    let mut per = BTreeMap::new();
    for r in &rows {
        rejected += n(r, "rejected");
        expired += n(r, "expired");
        let id = r
            .get("id")
            .and_then(Value::as_str)
            .unwrap_or("?")
            .to_string();
        per.insert(id, n(r, "routed"));
    }
    let d_routed = routed.saturating_sub(prev.2);
    let mut shares = String::new();
    for (id, r) in &per {
        let d = r.saturating_sub(prev.3.get(id).copied().unwrap_or(0));
        let pct = if d_routed == 0 {
            0.0
        } else {
            100.0 * d as f64 / d_routed as f64
        };
        shares.push_str(&format!(" {id} {pct:.0}%"));
    }
    let win = st.router.get("window").cloned().unwrap_or(Value::Null);
    let line = format!(
        "{:>3}s  ticks/s {:>6}  orders/s {:>6}  routed/s {:>6}  rejected {:>7}  expired {:>7}  \
         t2r p50 {:>8} p99 {:>8}  share{shares}",
        elapsed.as_secs(),
        ticks.saturating_sub(prev.0),
        committed.saturating_sub(prev.1),
        d_routed,
        rejected,
        expired,
        duration_ns(n(&win, "p50_ns")),
        duration_ns(n(&win, "p99_ns")),
    );
    *prev = (ticks, committed, routed, per);
    line
}

fn summary(
    st: &State,
    ids: &[(String, u32, bool)],
    report: &AuditReport,
    bus: &Path,
    clean: bool,
    interrupted: bool,
    elapsed: Duration,
) -> Value {
    let total_routed: u64 = report
        .strategies
        .iter()
        .map(|s| s.fates.get(FateCode::Routed))
        .sum();
    let mut all_close = report.is_clean();
    let mut per = Vec::new();
    for (id, weight, hot) in ids {
        let sv = st.strategies.get(id).cloned().unwrap_or(Value::Null);
        let Some(au) = report.strategies.iter().find(|s| &s.id == id) else {
            all_close = false;
            continue;
        };
        let committed = n(&sv, "committed");
        let f = |c: FateCode| au.fates.get(c);
        let closes = sv.get("final").and_then(Value::as_bool) == Some(true)
            && au.orders == committed
            && au.unanswered == 0
            && au.answered_twice == 0
            && au.sent_twice == 0;
        all_close &= closes;
        let q = |p: f64| {
            if au.latency.is_empty() {
                0
            } else {
                au.latency.value_at_quantile(p)
            }
        };
        let seen = sv.get("fates").cloned().unwrap_or(Value::Null);
        // Where the time goes (the last router process's view).
        let stages = st
            .router_rows()
            .into_iter()
            .find(|r| r.get("id").and_then(Value::as_str) == Some(id))
            .and_then(|r| r.get("stages_ns").cloned())
            .unwrap_or(Value::Null);
        per.push(json!({"id": id, "weight": weight, "hot": hot, "committed": committed,
            "answered": au.answered, "unanswered": au.unanswered,
            "answered_twice": au.answered_twice, "sent_twice": au.sent_twice,
            "routed": f(FateCode::Routed), "rejected": f(FateCode::Rejected),
            "expired": f(FateCode::Expired), "evicted": f(FateCode::Evicted),
            "cancelled": f(FateCode::Cancelled), "malformed": f(FateCode::Malformed),
            "fates_seen_by_strategy": seen, "held_back": n(&sv, "held_back"),
            "stale": n(&sv, "stale"), "not_connected": n(&sv, "not_connected"),
            "share": if total_routed == 0 { 0.0 } else { f(FateCode::Routed) as f64 / total_routed as f64 },
            "expired_share": if committed == 0 { 0.0 } else { f(FateCode::Expired) as f64 / committed as f64 },
            "tick_to_route_ns": {"p50": q(0.5), "p99": q(0.99), "p999": q(0.999)},
            "stages_ns": stages,
            "accounting_closes": closes}));
    }
    // Over every routed order of the run (from router/out, so across router restarts).
    let mut all = report.strategies.first().map(|a| a.latency.clone());
    if let Some(h) = &mut all {
        for a in report.strategies.iter().skip(1) {
            let _same_bounds = h.add(&a.latency);
        }
    }
    let (count, p50, p99, p999, max) = all.filter(|h| !h.is_empty()).map_or((0, 0, 0, 0, 0), |h| {
        (
            h.len(),
            h.value_at_quantile(0.5),
            h.value_at_quantile(0.99),
            h.value_at_quantile(0.999),
            h.max(),
        )
    });
    json!({"bus": bus.to_string_lossy(), "secs": elapsed.as_secs_f64(),
        "interrupted": interrupted, "clean_stop": clean,
        "ticks": n(&st.feed, "ticks"), "routed": total_routed,
        "tick_to_route_ns": {"count": count, "p50": p50, "p99": p99, "p999": p999, "max": max},
        "restarted_first_order_id": st.restarted_first_order_id,
        "audit": {"clean": report.is_clean(), "problems": report.problems.len(),
            "out_records": report.out_records},
        "strategies": per, "accounting_closes": all_close})
}

fn print_summary(s: &Value, bus: &Path) {
    let lat = s.get("tick_to_route_ns").cloned().unwrap_or(Value::Null);
    println!(
        "\nsummary: {} ticks, {} orders routed in {:.1} s",
        n(s, "ticks"),
        n(s, "routed"),
        s.get("secs").and_then(Value::as_f64).unwrap_or(0.0)
    );
    println!(
        "tick-to-route: p50 {}  p99 {}  p99.9 {}  max {}  ({} orders)",
        duration_ns(n(&lat, "p50")),
        duration_ns(n(&lat, "p99")),
        duration_ns(n(&lat, "p999")),
        duration_ns(n(&lat, "max")),
        n(&lat, "count")
    );
    let mut rows = vec![
        [
            "strategy",
            "weight",
            "committed",
            "routed",
            "share",
            "rejected",
            "expired",
            "cancelled",
            "answered",
            "unanswered",
            "sent twice",
            "t2r p50",
            "t2r p99",
            "accounting",
        ]
        .map(String::from)
        .to_vec(),
    ];
    for p in s
        .get("strategies")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let id = p.get("id").and_then(Value::as_str).unwrap_or("?");
        let hot = p.get("hot").and_then(Value::as_bool) == Some(true);
        let t2r = |k: &str| duration_ns(p.get("tick_to_route_ns").map_or(0, |l| n(l, k)));
        rows.push(vec![
            if hot {
                format!("{id} (hot)")
            } else {
                id.to_string()
            },
            n(p, "weight").to_string(),
            n(p, "committed").to_string(),
            n(p, "routed").to_string(),
            format!(
                "{:.1}%",
                100.0 * p.get("share").and_then(Value::as_f64).unwrap_or(0.0)
            ),
            n(p, "rejected").to_string(),
            n(p, "expired").to_string(),
            n(p, "cancelled").to_string(),
            n(p, "answered").to_string(),
            n(p, "unanswered").to_string(),
            n(p, "sent_twice").to_string(),
            t2r("p50"),
            t2r("p99"),
            if p.get("accounting_closes").and_then(Value::as_bool) == Some(true) {
                "closes".to_string()
            } else {
                "OPEN".to_string()
            },
        ]);
    }
    print!(
        "{}",
        table(
            &rows,
            &[
                false, true, true, true, true, true, true, true, true, true, true, true, true,
                false
            ],
            "  "
        )
    );
    let audit = s.get("audit").cloned().unwrap_or(Value::Null);
    println!(
        "audit: {} ({} records in router/out, {} problems); router killed {} times",
        if audit.get("clean").and_then(Value::as_bool) == Some(true) {
            "clean"
        } else {
            "PROBLEMS"
        },
        n(&audit, "out_records"),
        n(&audit, "problems"),
        n(s, "router_kills")
    );
    let b = bus.display();
    println!(
        "\nThe bus is left in {b} (delete it when done). Look at what the run left behind:\n  \
         chron-cli doctor {b}\n  chron-cli audit {b}\n  chron-cli inspect {b}/router/out\n  \
         chron-cli tail -n 5 {b}/router/out\n  chron-cli tail -n 5 {b}/strategies/s1/orders"
    );
}
