//! Crash harness of the order router: the real [`Router`] in a child process, killed at its own
//! crash points and at random instants, restarted, again and again.
//!
//! Three strategies (queues held open by this test process, so their leases stay live) get a
//! new batch of orders before every iteration: new orders, cancels of recent orders (some catch
//! their order still queued), malformed records, and deadlines that are absent, far away or a
//! few milliseconds away (those often pass while the router is down). The router runs under a
//! rate limit and a small per-strategy limit, so orders are queued, rejected and expired all the
//! time. Each iteration arms one crash point (`CHRONICLE_CRASH_AT=NAME:N`, see
//! `chronicle_core::testing::crash`) or, one in five, kills the router from outside after a random delay:
//!
//! | point | where the router dies |
//! |---|---|
//! | `router.after_out` | an order is in `router/out`, its fate not yet written |
//! | `router.after_fate` | the fate is written, the position not yet committed |
//! | `router.enqueued` | an order was just queued in the scheduler (others wait there too) |
//! | `append.after_commit` | inside an append to `router/out` or a fates queue |
//! | `reader.commit.before_gen` | half-way through committing a strategy position |
//!
//! After every death the bus is audited from its files (`chronicle_bus::orders::audit`): no
//! order answered twice, sent twice, sent without a `routed` fate or sent after its deadline;
//! and every strategy's persisted router position lies at or before its first unanswered order.
//! A final clean run must answer everything: 0 unanswered.
//!
//! CI runs `CHRONICLE_CRASH_ITERS` (default 56) iterations; the long run is
//! `CHRONICLE_CRASH_ITERS=1000 cargo test --release -p chronicle-bus --features crash-points
//! --test router_crash -- --nocapture` (README, BENCHMARKS).
#![allow(clippy::unwrap_used)]

#[path = "../../chronicle-core/tests/common/mod.rs"]
mod common;

use std::collections::BTreeMap;
use std::num::NonZeroU32;
use std::path::{Path, PathBuf};
use std::process::Child;
use std::time::{Duration, Instant};

use chronicle_bus::orders::record::ORDER;
use chronicle_bus::orders::{FateCode, Kind, Order, Problem, Router, RouterConfig, audit};
use chronicle_bus::{BusLayout, StrategyConfig, StrategyEndpoints};
use chronicle_core::os::realtime_ns;
use chronicle_core::{QueueDir, QueueReader, ReaderConfig, StartAt, WriterConfig, list_readers};
use common::{ROLE, Rng, run_crash_child, spawn_child};

const STRATEGIES: [&str; 3] = ["a", "b", "c"];
/// New records per strategy before each iteration.
const BATCH: u64 = 300;
/// Watchdog for one child run (a hang is a failure; no timing is asserted).
const T: Duration = Duration::from_secs(300);

fn iterations() -> u64 {
    common::crash_iterations(56)
}

fn small_queue() -> WriterConfig {
    WriterConfig {
        segment_size: 256 << 10,
        index_stride: 1024,
        ..WriterConfig::default()
    }
}

fn router_config() -> RouterConfig {
    let mut cfg = RouterConfig::default();
    cfg.rate_limit = 20_000;
    cfg.max_per_tenant = 128;
    cfg.cancel_reserve = 16;
    cfg.max_hold = Duration::from_micros(200);
    cfg.weights = vec![("b".to_string(), NonZeroU32::new(2).unwrap())];
    cfg.out = small_queue();
    cfg.fates = small_queue();
    cfg
}

/// Entry point of every child process (ignored in normal runs).
#[test]
#[ignore = "child process entry, run by the crash test"]
fn child_entry() {
    if std::env::var(ROLE).as_deref() != Ok("router") {
        return;
    }
    let bus = BusLayout::new(std::env::var("BUS").unwrap());
    let total: u64 = std::env::var("TOTAL").unwrap().parse().unwrap();
    let mut router = Router::open(&bus, router_config()).unwrap();
    println!("resume {}", router.out_next_seq());
    // Runs until every strategy's every order has its fate (each order gets exactly one, so
    // the fates queues then hold `total` records each).
    let fates: Vec<PathBuf> = STRATEGIES
        .iter()
        .map(|s| bus.strategy_fates(s).unwrap())
        .collect();
    let answered = |fates: &[PathBuf]| {
        fates.iter().all(|p| {
            QueueReader::open(p, ReaderConfig::default())
                .map(|r| r.tail().next_seq >= total)
                .unwrap_or(false)
        })
    };
    let mut last_check = Instant::now();
    loop {
        let busy = router.step().unwrap();
        if last_check.elapsed() >= Duration::from_millis(5) {
            if answered(&fates) {
                break;
            }
            last_check = Instant::now();
        }
        if !busy {
            router.wait(Duration::from_micros(200)).unwrap();
        }
    }
    router.close().unwrap();
    println!("done");
}

/// Appends `BATCH` records to a strategy's queue: mostly new orders, every 5th a cancel of the
/// order before it, every 37th malformed; deadlines none / 60 s / 3 ms away.
fn write_batch(ep: &mut StrategyEndpoints, rng: &mut Rng) {
    let w = ep.writer();
    for _ in 0..BATCH {
        let seq = w.next_seq();
        let now = realtime_ns();
        if seq % 37 == 36 {
            w.append(ORDER, &[0xEE; 20]).unwrap();
            continue;
        }
        let deadline_ns = match rng.range(0, 3) {
            0 => 0,
            1 => now + 60_000_000_000,
            _ => now + 3_000_000,
        };
        let (order_id, kind) = if seq % 5 == 4 {
            (seq - 1, Kind::Cancel)
        } else {
            (seq, Kind::New)
        };
        let o = Order {
            order_id,
            origin_ns: now,
            deadline_ns,
            price: 100,
            symbol: (seq % 7) as u32,
            qty: 1,
            buy: seq % 2 == 0,
            kind,
        };
        w.append(ORDER, &o.encode()).unwrap();
    }
}

/// The router's persisted position in a strategy's order queue.
fn persisted(queue: &Path) -> u64 {
    list_readers(&QueueDir::new(queue))
        .unwrap()
        .into_iter()
        .map(|r| r.unwrap())
        .find(|r| r.name == "router")
        .and_then(|r| r.position.map(|p| p.next_seq))
        .unwrap_or(0)
}

enum Plan {
    At(&'static str, u64),
    Timer(u64),
    Clean,
}

/// Runs the child under `plan`; returns whether it died of SIGKILL.
fn run_once(child: Child, plan: &Plan) -> bool {
    let kill_after = match plan {
        Plan::Timer(us) => Some(Duration::from_micros(*us)),
        Plan::At(..) | Plan::Clean => None,
    };
    run_crash_child(child, kill_after, T).killed
}

#[test]
fn router_killed_anywhere_answers_every_order_exactly_once() {
    let points: [(&str, u64); 5] = [
        ("router.after_out", 120),
        ("router.after_fate", 120),
        ("router.enqueued", 400),
        ("append.after_commit", 800),
        ("reader.commit.before_gen", 40),
    ];
    let iters = iterations();
    let mut rng = Rng::from_env_or_time("CHRONICLE_ROUTER_CRASH_SEED");
    let dir = tempfile::tempdir().unwrap();
    let bus = dir.path().join("bus");
    let layout = BusLayout::create(&bus).unwrap();
    let mut eps: Vec<StrategyEndpoints> = STRATEGIES
        .iter()
        .map(|s| {
            let mut ep = StrategyEndpoints::open(
                &layout,
                s,
                StrategyConfig {
                    writer: small_queue(),
                    lease_ttl: Duration::from_secs(3600),
                    file_mode: 0o660,
                },
            )
            .unwrap();
            ep.mark_ready().unwrap();
            ep
        })
        .collect();
    let mut fired: BTreeMap<&str, (u64, u64)> = points.iter().map(|p| (p.0, (0, 0))).collect();
    let mut kills = 0u64;
    let mut i = 0u64;
    loop {
        let plan = if i >= iters {
            Plan::Clean
        } else if i % 5 == 4 {
            Plan::Timer(rng.range(1_000, 40_000))
        } else {
            let (name, max) = points[((i - i / 5) % points.len() as u64) as usize];
            Plan::At(name, rng.range(1, max + 1))
        };
        if i < iters {
            for ep in &mut eps {
                write_batch(ep, &mut rng);
            }
        }
        let total = eps[0].writer().next_seq();
        let mut envs = vec![
            ("BUS", bus.display().to_string()),
            ("TOTAL", total.to_string()),
        ];
        if let Plan::At(name, n) = plan {
            envs.push((chronicle_core::testing::crash::VAR, format!("{name}:{n}")));
        }
        let died = run_once(spawn_child("router", &envs), &plan);
        if died {
            kills += 1;
        }
        if let Plan::At(name, _) = plan {
            let e = fired.get_mut(name).unwrap();
            e.0 += 1;
            e.1 += u64::from(died);
        }

        // What the files say after this death (or clean finish).
        let report = audit(&layout).unwrap();
        // Unanswered orders are the dead router's work in progress. So is, at most, the last
        // record of router/out without its fate (died between sending and answering): the next
        // router answers it first thing, which the next iteration's audit checks.
        let last_out = report.out_records.checked_sub(1);
        let serious: Vec<&Problem> = report
            .problems
            .iter()
            .filter(|p| match p {
                Problem::Unanswered { .. } => false,
                Problem::SentWithoutFate { out_seq, .. } => !(died && Some(*out_seq) == last_out),
                _ => true,
            })
            .collect();
        assert!(
            serious.is_empty(),
            "iteration {i} ({}): {serious:#?}",
            match plan {
                Plan::At(n, k) => format!("{n}:{k}"),
                Plan::Timer(us) => format!("killed after {us} us"),
                Plan::Clean => "clean run".to_string(),
            }
        );
        // The router committed each strategy only up to its first unanswered order.
        for (k, s) in STRATEGIES.iter().enumerate() {
            let first_unanswered = report.problems.iter().find_map(|p| match p {
                Problem::Unanswered {
                    strategy,
                    order_seq,
                    ..
                } if strategy == s => Some(*order_seq),
                _ => None,
            });
            let pos = persisted(&layout.strategy_orders(s).unwrap());
            if let Some(first) = first_unanswered {
                assert!(
                    pos <= first,
                    "iteration {i}: {s} committed at {pos}, but order {first} has no fate"
                );
            }
            assert!(report.strategies[k].answered_twice == 0);
        }
        if matches!(plan, Plan::Clean) {
            assert!(!died, "the final clean run died");
            assert!(
                report.is_clean(),
                "after the clean run: {:#?}",
                report.problems
            );
            for a in &report.strategies {
                assert_eq!(a.unanswered, 0, "{}", a.id);
                assert_eq!(a.answered, total, "{}", a.id);
                // Every kind of fate this workload produces did occur.
                for c in [
                    FateCode::Routed,
                    FateCode::Rejected,
                    FateCode::Expired,
                    FateCode::Cancelled,
                    FateCode::Malformed,
                ] {
                    assert!(a.fates.get(c) > 0, "{}: no {} fate", a.id, c.name());
                }
            }
            eprintln!(
                "{} orders per strategy answered exactly once, {} in router/out",
                total, report.out_records
            );
            break;
        }
        i += 1;
    }
    eprintln!("{iters} iterations, {kills} deaths; point: armed/fired");
    for (name, (armed, hit)) in &fired {
        eprintln!("  {name:28} {armed:4} {hit:4}");
    }
    if iters >= 3 * points.len() as u64 {
        for (name, (_, hit)) in &fired {
            assert!(*hit > 0, "crash point {name} never fired");
        }
    }
    // The strategies' fates queues are readable from their side too.
    let mut r = QueueReader::open(
        layout.strategy_fates("a").unwrap(),
        ReaderConfig::default().start(StartAt::Earliest),
    )
    .unwrap();
    assert!(r.next().unwrap().is_some());
    drop(eps);
}
