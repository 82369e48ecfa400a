//! The order router: finds strategies as they come and go, merges their order queues by
//! timestamp, orders the flow fairly per strategy (DRR, cancels first, deadlines), sends it to
//! `router/out` under an exchange-style rate limit, and answers every order in the strategy's
//! fates queue. Crash-safe: kill it at any instant and start it again, and every order is
//! answered exactly once and sent at most once (check with `chron-cli audit <bus>`).
//!
//! ```text
//! cargo run --release --example router -- --bus /dev/shm/bus [--weights s1=1,s2=3]
//!     [--rate-limit 200000] [--hold-us 500] [--max-per-tenant 1024] [--secs 0]
//! ```
//!
//! The router is `chronicle::bus::orders::Router`, the same one `chron-cli router` (and so
//! `chron-cli demo`) runs; this program adds arguments and human-readable status lines.

mod common;

use std::num::NonZeroU32;
use std::time::{Duration, Instant};

use chronicle::bus::BusLayout;
use chronicle::bus::orders::{Router, RouterConfig};
use common::Args;

const USAGE: &str = "router --bus DIR [--weights ID=W,..] [--rate-limit ORDERS_PER_S] \
                     [--hold-us US] [--max-per-tenant N] [--secs S]";

fn main() {
    common::main_with("router", run);
}

fn run() -> Result<(), Box<dyn std::error::Error>> {
    let args = Args::parse(USAGE, &[]);
    let bus = args.str("bus").ok_or("--bus is required")?;
    let mut cfg = RouterConfig::default();
    cfg.rate_limit = args.num("rate-limit", 200_000, USAGE);
    cfg.max_hold = Duration::from_micros(args.num("hold-us", 500, USAGE));
    cfg.max_per_tenant = args.num("max-per-tenant", 1_024, USAGE).max(1) as usize;
    for pair in args
        .str("weights")
        .unwrap_or("")
        .split(',')
        .filter(|p| !p.is_empty())
    {
        let (id, w) = pair.split_once('=').ok_or("--weights takes ID=W,ID=W")?;
        let w = w
            .parse::<u32>()
            .ok()
            .and_then(NonZeroU32::new)
            .ok_or_else(|| format!("bad weight in {pair:?}"))?;
        cfg.weights.push((id.to_string(), w));
    }
    let run_for = args.secs("secs", USAGE);
    let mut router = Router::open(&BusLayout::new(bus), cfg)?;
    println!(
        "router: bus {bus}, router/out next seq {}",
        router.out_next_seq()
    );
    let start = Instant::now();
    let mut last_report = start;
    let mut routed_at_report = 0;
    router.run(
        || run_for.is_some_and(|d| start.elapsed() >= d),
        Duration::from_secs(5),
        |r| {
            for ev in r.take_events() {
                println!("router: {ev:?}");
            }
            if last_report.elapsed() >= Duration::from_secs(1) {
                let w = r.window();
                println!(
                    "router: {} routed/s, queued {}, origin-to-route p50 {} us p99 {} us",
                    r.routed() - routed_at_report,
                    r.queued(),
                    w.value_at_quantile(0.5) / 1_000,
                    w.value_at_quantile(0.99) / 1_000
                );
                routed_at_report = r.routed();
                r.reset_window();
                last_report = Instant::now();
            }
        },
    )?;
    for s in router.strategies() {
        println!(
            "router:   {:<8} weight {:<3} merged {:>9}: {}",
            s.id,
            s.weight,
            s.merged,
            common::fate_summary(&s.fates)
        );
    }
    router.close()?;
    Ok(())
}
