//! End to end: `chron-cli demo` runs the feed, three strategies (one hot) and the router as
//! processes for a few seconds, with strategy s1 killed and restarted midway, under an outbound
//! limit low enough that every strategy is backlogged. Checks that every order has exactly one
//! fate (the demo's audit), that `router/out` holds no order past its deadline and no order
//! twice, that the per-strategy counts match `router/out`, that the restarted strategy's orders
//! keep flowing, and that the hot strategy gets no more than its weighted share. A second run
//! SIGKILLs the router three times: every order must still be answered exactly once.
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::{HashMap, HashSet};

use chronicle_bus::SourceId;
use chronicle_bus::orders::{Fate, FateCode};
use chronicle_core::{QueueReader, ReaderConfig, StartAt};
use serde_json::Value;

fn tag(id: &str) -> u64 {
    SourceId::of(id).0 & 0xFFFF
}

/// Runs `demo --json` with `args`; it must succeed. Returns its JSON summary.
/// Runs the demo with `--json` and returns its summary. One demo at a time: each spins a feed,
/// strategies and a router, and two at once on a small machine starve the strategies, so none
/// stays backlogged and the fairness the first test checks no longer applies.
fn demo_summary(args: &[&str]) -> Value {
    static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _one = ONE_AT_A_TIME
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let mut all = vec!["demo", "--json"];
    all.extend_from_slice(args);
    let out = common::run(&all, b"");
    assert_eq!(
        out.code, 0,
        "stdout: {}\nstderr: {}",
        out.stdout, out.stderr
    );
    serde_json::from_str(out.stdout.trim()).unwrap()
}

#[test]
fn demo_topology_accounting_closes_and_router_follows_restart() {
    let dir = tempfile::tempdir().unwrap();
    let bus = dir.path().join("bus");
    let bus_s = bus.to_str().unwrap();
    let s = demo_summary(&[
        "--secs",
        "4",
        "--strategies",
        "3",
        "--rate",
        "2000",
        "--every",
        "1",
        "--rate-limit",
        "1000",
        "--deadline-us",
        "20000",
        "--bus",
        bus_s,
    ]);
    assert_eq!(s["accounting_closes"], true, "{s:#}");
    assert_eq!(s["clean_stop"], true, "{s:#}");
    // The router ran on the config the demo wrote into the bus: its weights and rate limit.
    let cfg = std::fs::read_to_string(bus.join("router.toml")).unwrap();
    for want in [
        "rate_limit = 1000 ",
        "[strategies.s1]\nweight = 1 ",
        "[strategies.s2]\nweight = 2 ",
        "[strategies.hot]\nweight = 1 ",
    ] {
        assert!(cfg.contains(want), "{want:?} not in\n{cfg}");
    }

    // Accounting: every committed order has exactly one fate; nothing is left unanswered.
    let mut routed_by_tag = HashMap::new();
    let mut weights = HashMap::new();
    let mut total_routed = 0;
    for p in s["strategies"].as_array().unwrap() {
        let id = p["id"].as_str().unwrap();
        let c = p["committed"].as_u64().unwrap();
        let r = p["routed"].as_u64().unwrap();
        let fates: u64 = FateCode::ALL
            .iter()
            .map(|c| p[c.name()].as_u64().unwrap())
            .sum();
        assert!(c > 0, "{id} committed nothing: {s:#}");
        assert_eq!(p["answered"].as_u64().unwrap(), c, "{id}: {s:#}");
        assert_eq!(p["unanswered"], 0, "{s:#}");
        assert_eq!(p["sent_twice"], 0, "{s:#}");
        assert_eq!(fates, c, "{id}: {s:#}");
        // The strategy read fates too (it backs off on them).
        let seen: u64 = p["fates_seen_by_strategy"]
            .as_object()
            .unwrap()
            .values()
            .map(|v| v.as_u64().unwrap())
            .sum();
        assert!(seen > 0 && seen <= c, "{id}: {s:#}");
        routed_by_tag.insert(tag(id), r);
        weights.insert(id.to_string(), p["weight"].as_u64().unwrap());
        total_routed += r;
    }
    assert_eq!(s["audit"]["clean"], true, "{s:#}");

    // router/out: no order past its deadline, none twice, counts match.
    let mut r = QueueReader::open(
        bus.join("router/out"),
        ReaderConfig::default().start(StartAt::Earliest),
    )
    .unwrap();
    let mut seen = HashSet::new();
    let mut counts: HashMap<u64, u64> = HashMap::new();
    let restarted_first = s["restarted_first_order_id"].as_u64().unwrap();
    let mut restarted_routed = 0;
    while let Some(m) = r.next().unwrap() {
        let p = m.payload();
        let id = u64::from_le_bytes(p[0..8].try_into().unwrap());
        let deadline = u64::from_le_bytes(p[16..24].try_into().unwrap());
        let kind = p[41];
        assert_eq!(m.type_id(), 4, "a routed order");
        assert_eq!(
            u64::from_le_bytes(p[48..56].try_into().unwrap()) & 0xFFFF,
            id >> 48,
            "the routed record names its strategy"
        );
        assert!(
            deadline >= m.timestamp_ns(),
            "order {id:#x} routed {} ns past its deadline",
            m.timestamp_ns() - deadline
        );
        assert!(
            seen.insert((id, kind)),
            "order {id:#x} (kind {kind}) routed twice"
        );
        *counts.entry(id >> 48).or_default() += 1;
        if id >> 48 == tag("s1") && id >= restarted_first {
            restarted_routed += 1;
        }
    }
    assert_eq!(counts, routed_by_tag, "{s:#}");
    // The router followed the restart: it answered orders of the restarted s1. Routed ones
    // when the machine keeps up; on a starved one their deadlines may all pass first, and an
    // `expired` fate is as much an answer.
    let mut fates = QueueReader::open(
        chronicle_bus::BusLayout::new(&bus)
            .strategy_fates("s1")
            .unwrap(),
        ReaderConfig::default().start(StartAt::Earliest),
    )
    .unwrap();
    let mut restarted_answered = 0;
    while let Some(m) = fates.next().unwrap() {
        let f = Fate::decode(m.payload()).unwrap();
        if f.order_id >= restarted_first {
            restarted_answered += 1;
        }
    }
    assert!(
        restarted_answered > 0 && restarted_routed <= restarted_answered,
        "no order of the restarted s1 was answered: {s:#}"
    );

    // Every strategy was backlogged (the outbound limit is far below the offered load), so the
    // hot one's share is its weight's share, give or take (the restart gap, the first second).
    let wsum: u64 = weights.values().sum();
    let hot_share = routed_by_tag[&tag("hot")] as f64 / total_routed as f64;
    let hot_weight_share = weights["hot"] as f64 / wsum as f64;
    assert!(
        hot_share <= hot_weight_share + 0.1,
        "hot took {hot_share:.3} of the routed orders, its weight share is {hot_weight_share:.3}: {s:#}"
    );
}

#[test]
fn demo_with_the_router_killed_answers_every_order_once() {
    let dir = tempfile::tempdir().unwrap();
    let bus = dir.path().join("bus");
    let s = demo_summary(&[
        "--secs",
        "6",
        "--kill-router",
        "3",
        "--bus",
        bus.to_str().unwrap(),
    ]);
    assert_eq!(s["router_kills"], 3, "{s:#}");
    assert_eq!(s["audit"]["clean"], true, "{s:#}");
    for p in s["strategies"].as_array().unwrap() {
        assert_eq!(p["unanswered"], 0, "{s:#}");
        assert_eq!(p["sent_twice"], 0, "{s:#}");
        assert_eq!(p["answered"], p["committed"], "{s:#}");
    }
    // The audit command agrees, from the files alone.
    let audit = common::run(&["audit", bus.to_str().unwrap(), "--json"], b"");
    assert_eq!(audit.code, 0, "{}", audit.stdout);
    let a: Value = serde_json::from_str(audit.stdout.trim()).unwrap();
    assert_eq!(a["clean"], true);
    assert_eq!(a["router_running"], false);
}
