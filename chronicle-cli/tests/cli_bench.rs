//! `bench --json`: the reader runs as a separate process (this binary re-executed), the JSON
//! object parses, its percentiles are ordered, and --hist writes the distribution.

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
    assert_eq!(v["touch_payload"], false);
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
fn bench_touch_payload_runs_and_says_so() {
    let tmp = tempfile::tempdir().unwrap();
    let args = [
        "bench",
        "--touch-payload",
        "--count",
        "2000",
        "--warmup",
        "200",
        "--rate",
        "50000",
        "--size",
        "1024",
        "--dir",
        p(tmp.path()),
    ];
    let o = run(&[&args[..], &["--json"]].concat(), b"");
    assert_eq!(o.code, 0, "{o:?}");
    let v: serde_json::Value = serde_json::from_str(&o.stdout).unwrap();
    assert_eq!(v["size"], 1024);
    assert_eq!(v["touch_payload"], true);
    assert!(v["throughput_msgs_per_s"].as_f64().unwrap() > 0.0, "{v}");
    assert!(v["latency_ns"]["p50"].as_u64().unwrap() > 0, "{v}");
    let o = run(&args, b"");
    assert_success(&o, "reader reads the whole payload");
    assert_eq!(std::fs::read_dir(tmp.path()).unwrap().count(), 0);
}

#[test]
fn bench_rejects_bad_arguments() {
    assert_eq!(run(&["bench", "--cores", "1"], b"").code, 2);
    assert_eq!(run(&["bench", "--wait", "sleepy"], b"").code, 2);
    assert_one_sentence(&run(&["bench", "--size", "8", "--json"], b""), 1, "payload");
    // Soak options need --soak; latency-run options do not go with it.
    assert_eq!(run(&["bench", "--secs", "3"], b"").code, 2);
    assert_eq!(run(&["bench", "--soak", "--count", "5"], b"").code, 2);
    assert_eq!(run(&["bench", "--soak", "--wait", "futex"], b"").code, 2);
    assert_eq!(run(&["bench", "--soak", "--touch-payload"], b"").code, 2);
    assert_one_sentence(
        &run(&["bench", "--soak", "--size", "16"], b""),
        1,
        "at least 24 bytes",
    );
}

/// `bench --soak` for 3 s at a small rate: real processes, every record checked.
fn soak_args(dir: &str, json: bool) -> Vec<&str> {
    let mut a = vec![
        "bench",
        "--soak",
        "--secs",
        "3",
        "--interval",
        "1",
        "--rate",
        "5000",
        "--size",
        "48",
        "--segment-size",
        "64K",
        "--retain-segments",
        "4",
        "--slow-stall-ms",
        "100",
        "--dir",
        dir,
    ];
    if json {
        a.push("--json");
    }
    a
}

#[test]
fn bench_soak_json_reports_every_record_and_no_loss() {
    let tmp = tempfile::tempdir().unwrap();
    let o = run(&soak_args(p(tmp.path()), true), b"");
    assert_eq!(o.code, 0, "{o:?}");
    assert_eq!(o.stdout.lines().count(), 1, "{o:?}");
    let v: serde_json::Value = serde_json::from_str(&o.stdout).unwrap();
    assert_eq!(v["mode"], "soak");
    assert_eq!(v["verdict"], "PASS", "{v}");
    assert_eq!(v["losses"], 0, "{v}");
    assert_eq!(v["problems"].as_array().unwrap().len(), 0, "{v}");
    let records = v["records"].as_u64().unwrap();
    assert!(records > 0, "{v}");
    let writers = v["writers"].as_array().unwrap();
    assert_eq!(writers.len(), 2);
    let q0 = writers[0]["records"].as_u64().unwrap();
    let q1 = writers[1]["records"].as_u64().unwrap();
    assert!(q0 > 0 && q1 > 0, "{v}");
    assert_eq!(q0 + q1, records);
    let readers = v["readers"].as_array().unwrap();
    assert_eq!(readers.len(), 4, "{v}");
    for r in readers {
        assert_eq!(r["records"].as_u64(), Some(q0), "{r}");
        assert_eq!(r["end_total"].as_u64(), Some(q0), "{r}");
        assert_eq!(r["losses"], 0, "{r}");
        assert_eq!(r["duplicates"], 0, "{r}");
        assert_eq!(r["corrupt"], 0, "{r}");
        let l = &r["latency_ns"];
        assert!(l["p50"].as_u64().unwrap() > 0, "{r}");
        assert!(l["p50"].as_u64() <= l["max"].as_u64(), "{r}");
    }
    assert_eq!(readers[3]["slow"], true);
    let f = &v["fanin"];
    assert_eq!(f["records"].as_u64(), Some(records), "{f}");
    assert_eq!(f["per_source"]["q0"].as_u64(), Some(q0), "{f}");
    assert_eq!(f["per_source"]["q1"].as_u64(), Some(q1), "{f}");
    for k in [
        "losses",
        "duplicates",
        "corrupt",
        "order_violations",
        "late",
    ] {
        assert_eq!(f[k], 0, "{k}: {f}");
    }
    let rss = v["rss"].as_array().unwrap();
    let names: Vec<&str> = rss.iter().map(|r| r["process"].as_str().unwrap()).collect();
    assert_eq!(names, ["w0", "w1", "r1", "r2", "r3", "r4", "fanin", "soak"]);
    for r in rss {
        assert!(r["start"]["rss_kib"].as_u64().unwrap() > 0, "{r}");
        assert!(r["end"]["rss_kib"].as_u64().unwrap() > 0, "{r}");
        assert_eq!(r["within_limit"], true, "{r}");
    }
    // Each queue gets ~15,000 records of ~80 B in 3 s: about 18 segments of 64 KiB. Retention
    // keeps 4 (plus the one prepared ahead and the one a reader may still be in); allow twice
    // that for readers held up on a loaded machine, still well below what was written.
    assert!(
        v["disk_max_bytes"].as_u64().unwrap() <= 2 * 12 * 65536,
        "{v}"
    );
    let intervals = v["intervals"].as_array().unwrap();
    assert!(!intervals.is_empty(), "{v}");
    assert!(intervals[0]["readers_latency_ns"]["p99"].as_u64().is_some());
    // Interval lines go to stderr in JSON mode.
    assert!(o.stderr.contains("written"), "{o:?}");
    // The run directory was removed.
    assert_eq!(std::fs::read_dir(tmp.path()).unwrap().count(), 0);
}

#[test]
fn bench_soak_prints_interval_lines_and_a_verdict() {
    let tmp = tempfile::tempdir().unwrap();
    let o = run(&soak_args(p(tmp.path()), false), b"");
    assert_eq!(o.code, 0, "{o:?}");
    let intervals = o
        .stdout
        .lines()
        .filter(|l| l.trim_start().starts_with(|c: char| c.is_ascii_digit()) && l.contains("lag"))
        .count();
    assert!(intervals >= 1, "{}", o.stdout);
    for name in [
        "reader r1",
        "reader r2",
        "reader r3",
        "reader r4 (slow)",
        "fan-in q0+q1",
    ] {
        assert!(o.stdout.contains(name), "{name} missing: {}", o.stdout);
    }
    assert!(
        o.stdout.contains("merge order violations 0, late 0"),
        "{}",
        o.stdout
    );
    let verdict = o.stdout.lines().last().unwrap();
    assert!(
        verdict.starts_with("verdict: PASS: 0 losses"),
        "{}",
        o.stdout
    );
}

#[test]
fn bench_soak_fails_clearly_when_a_reader_dies() {
    use std::io::BufRead;
    let tmp = tempfile::tempdir().unwrap();
    let mut args = soak_args(p(tmp.path()), false);
    args[3] = "60";
    let mut child = bin()
        .args(&args)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = std::io::BufReader::new(child.stdout.take().unwrap());
    let mut pid = None;
    let mut line = String::new();
    while pid.is_none() && out.read_line(&mut line).unwrap() > 0 {
        pid = line
            .split_whitespace()
            .find_map(|w| w.strip_prefix("r2="))
            .map(|p| p.parse::<i32>().unwrap());
        line.clear();
    }
    let pid = pid.expect("no pids line");
    let killed = std::process::Command::new("kill")
        .args(["-9", &pid.to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let st = wait(&mut child);
    let mut err = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut err).unwrap();
    assert_eq!(st.code(), Some(1), "{err}");
    assert!(
        err.contains(&format!("the soak r2 (pid {pid}) exited during the run")),
        "{err}"
    );
    assert!(err.contains("signal: 9"), "{err}");
    // One line from the parent (the killed child says nothing).
    let lines: Vec<&str> = err.lines().collect();
    assert_eq!(lines.len(), 1, "{err}");
    assert!(lines[0].starts_with("chron-cli: "), "{err}");
    assert!(lines[0].contains("queues left in"), "{err}");
}
