//! `bench --json`: the reader runs as a separate process (this binary re-executed), the JSON
//! object parses, its percentiles are ordered, and --hist writes the distribution.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

mod common;

use common::*;

#[test]
fn bench_json_parses_and_percentiles_are_ordered() {
    let tmp = tempfile::tempdir().unwrap();
    let hist = tmp.path().join("lat.hgrm");
    let o = run(
        &[
            "bench",
            "--json",
            "--count",
            "3000",
            "--warmup",
            "200",
            "--rate",
            "50000",
            "--size",
            "32",
            "--wait",
            "futex",
            "--dir",
            p(tmp.path()),
            "--hist",
            p(&hist),
        ],
        b"",
    );
    assert_eq!(o.code, 0, "{o:?}");
    assert_eq!(o.stdout.lines().count(), 1, "{o:?}");
    let v: serde_json::Value = serde_json::from_str(&o.stdout).unwrap();
    assert_eq!(v["size"], 32);
    assert_eq!(v["count"], 3000);
    assert_eq!(v["rate"], 50000);
    assert_eq!(v["wait"], "futex");
    assert!(v["throughput_msgs_per_s"].as_f64().unwrap() > 0.0, "{v}");
    let l = &v["latency_ns"];
    let ps: Vec<u64> = ["p50", "p90", "p99", "p99_9", "p99_99", "max"]
        .iter()
        .map(|k| {
            l[*k]
                .as_u64()
                .unwrap_or_else(|| panic!("{k} missing in {v}"))
        })
        .collect();
    assert!(ps[0] > 0, "{v}");
    assert!(ps.windows(2).all(|w| w[0] <= w[1]), "not ordered: {v}");
    let h = std::fs::read_to_string(&hist).unwrap();
    assert!(h.starts_with("       Value     Percentile TotalCount 1/(1-Percentile)"));
    assert!(h.contains("Total count    =         3000]"), "{h}");
    // The run directory was cleaned up.
    let left: Vec<_> = std::fs::read_dir(tmp.path())
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.path() != hist)
        .collect();
    assert!(left.is_empty(), "{left:?}");
}

#[test]
fn bench_rejects_bad_arguments() {
    assert_eq!(run(&["bench", "--cores", "1"], b"").code, 2);
    assert_eq!(run(&["bench", "--wait", "sleepy"], b"").code, 2);
    assert_one_sentence(&run(&["bench", "--size", "8", "--json"], b""), 1, "payload");
}
