//! End to end: `chron-cli demo` runs the feed, three strategies (one hot) and the router as
//! processes for a few seconds, with strategy s1 killed and restarted midway, under an outbound
//! limit low enough that every strategy is backlogged. Checks that the accounting closes, that
//! `router/out` holds no order past its deadline and no order twice, that the per-strategy
//! counts match `router/out`, that the restarted strategy's orders keep flowing, and that the hot
//! strategy gets no more than its weighted share.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

mod common;

use std::collections::{HashMap, HashSet};

use chronicle_bus::SourceId;
use chronicle_core::{QueueReader, ReaderConfig, StartAt};
use serde_json::Value;

fn tag(id: &str) -> u64 {
    SourceId::of(id).0 & 0xFFFF
}

#[test]
fn demo_topology_accounting_closes_and_router_follows_restart() {
    let dir = tempfile::tempdir().unwrap();
    let bus = dir.path().join("bus");
    let bus_s = bus.to_str().unwrap();
    let out = common::run(
        &[
            "demo",
            "--json",
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
        ],
        b"",
    );
    assert_eq!(
        out.code, 0,
        "stdout: {}\nstderr: {}",
        out.stdout, out.stderr
    );
    let s: Value = serde_json::from_str(out.stdout.trim()).unwrap();
    assert_eq!(s["accounting_closes"], true, "{s:#}");
    assert_eq!(s["clean_stop"], true, "{s:#}");

    // Accounting: every committed order is routed, rejected or expired; nothing left queued.
    let mut routed_by_tag = HashMap::new();
    let mut weights = HashMap::new();
    let mut total_routed = 0;
    for p in s["strategies"].as_array().unwrap() {
        let id = p["id"].as_str().unwrap();
        let c = p["committed"].as_u64().unwrap();
        let (r, rj, ex) = (
            p["routed"].as_u64().unwrap(),
            p["rejected"].as_u64().unwrap(),
            p["expired"].as_u64().unwrap(),
        );
        assert!(c > 0, "{id} committed nothing: {s:#}");
        assert_eq!(p["queued"], 0, "{s:#}");
        assert_eq!(p["merged"].as_u64().unwrap(), c, "{id}: {s:#}");
        assert_eq!(r + rj + ex, c, "{id}: {s:#}");
        routed_by_tag.insert(tag(id), r);
        weights.insert(id.to_string(), p["weight"].as_u64().unwrap());
        total_routed += r;
    }
    assert_eq!(
        s["strategies"][0]["attached"], 2,
        "s1 attached twice: {s:#}"
    );

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
    assert!(
        restarted_routed > 0,
        "no order of the restarted s1 was routed: {s:#}"
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
