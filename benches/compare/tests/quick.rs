//! End-to-end check: `--quick` runs every transport in both payload sizes and writes all
//! outputs. A broken transport fails its run, and a failed run makes the binary exit
//! non-zero. A second run with `--touch-payload` checks that every output says what the
//! readers read. Nothing here looks at how fast anything was.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::PathBuf;
use std::process::Command;
use std::sync::Mutex;

/// The runs pin to the same two cores: one at a time.
static SERIAL: Mutex<()> = Mutex::new(());

/// Runs `chronicle-compare ARGS --out DIR` (one run at a time), asserts that it succeeded and
/// returns `DIR` (a temporary directory named after `tag`) and the `results.md` written there.
fn run_compare(tag: &str, args: &[&str]) -> (PathBuf, String) {
    let out = std::env::temp_dir().join(format!("chronicle-compare-{tag}-{}", std::process::id()));
    let _guard = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let status = Command::new(env!("CARGO_BIN_EXE_chronicle-compare"))
        .args(args)
        .arg("--out")
        .arg(&out)
        .status()
        .expect("running chronicle-compare");
    assert!(
        status.success(),
        "chronicle-compare {} failed: {status}",
        args.join(" ")
    );
    let md = std::fs::read_to_string(out.join("results.md")).unwrap();
    (out, md)
}

#[test]
fn quick_run_covers_every_transport() {
    let (out, md) = run_compare("quick", &["--quick"]);
    for name in [
        "ring (floor)",
        "ring, length-prefixed",
        "**chronicle**",
        "chronicle, pretouch",
        "iceoryx2",
        "unix seqpacket",
        "pipe",
        "crossbeam (threads)",
        "ring-futex (floor)",
    ] {
        assert!(
            md.contains(&format!("| {name} |")),
            "{name} missing from\n{md}"
        );
    }
    assert!(md.contains("## 64 B payload") && md.contains("## 1024 B payload"));
    assert!(!md.contains("Failed or unclean runs"), "{md}");
    assert!(md.contains("Readers read only the 16-byte header"), "{md}");
    let svg = std::fs::read_to_string(out.join("compare-latency.svg")).unwrap();
    assert!(svg.starts_with("<svg") && svg.contains("iceoryx2"));
    let runs = std::fs::read_to_string(out.join("runs.csv")).unwrap();
    // 13 cases x 2 sizes x (latency + throughput + batched throughput), plus the header.
    assert_eq!(runs.lines().count(), 1 + 13 * 2 * 3, "{runs}");
    assert_eq!(
        runs.lines()
            .filter(|l| l.contains(",throughput,16,"))
            .count(),
        13 * 2,
        "{runs}"
    );
    assert!(runs.lines().skip(1).all(|l| l.ends_with(",true")), "{runs}");
    assert!(runs.starts_with("round,payload,transport,label,wait,reader,touch_payload,mode,"));
    assert!(
        runs.lines().skip(1).all(|l| l.contains(",false,")),
        "{runs}"
    );
    let _ = std::fs::remove_dir_all(&out);
}

#[test]
fn touch_payload_run_says_so_in_every_output() {
    let (out, md) = run_compare(
        "touch",
        &[
            "--quick",
            "--touch-payload",
            "--only",
            "ring,chronicle,crossbeam",
            "--sizes",
            "1024",
        ],
    );
    assert!(md.contains("--touch-payload"), "{md}");
    assert!(md.contains("Readers read the whole payload"), "{md}");
    assert!(!md.contains("Readers read only the 16-byte header"), "{md}");
    assert!(!md.contains("Failed or unclean runs"), "{md}");
    let runs = std::fs::read_to_string(out.join("runs.csv")).unwrap();
    // ring, chronicle and crossbeam in both wait modes where supported: ring spin,
    // chronicle spin + sleep, crossbeam spin + sleep; latency, throughput and batched
    // throughput each.
    assert_eq!(runs.lines().count(), 1 + 5 * 3, "{runs}");
    assert!(
        runs.lines()
            .skip(1)
            .all(|l| l.contains(",true,") && l.ends_with(",true")),
        "{runs}"
    );
    let svg = std::fs::read_to_string(out.join("compare-latency.svg")).unwrap();
    assert!(svg.contains("reading all of it"), "chart caption");
    let _ = std::fs::remove_dir_all(&out);
}
