//! End-to-end check: `--quick` runs every transport in both payload sizes and writes all
//! outputs. A broken transport fails its run, and a failed run makes the binary exit
//! non-zero. Nothing here looks at how fast anything was.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::process::Command;

#[test]
fn quick_run_covers_every_transport() {
    let out = std::env::temp_dir().join(format!("chronicle-compare-quick-{}", std::process::id()));
    let status = Command::new(env!("CARGO_BIN_EXE_chronicle-compare"))
        .args(["--quick", "--out"])
        .arg(&out)
        .status()
        .expect("running chronicle-compare");
    assert!(
        status.success(),
        "chronicle-compare --quick failed: {status}"
    );
    let md = std::fs::read_to_string(out.join("results.md")).unwrap();
    for name in [
        "ring (floor)",
        "**chronicle**",
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
    let svg = std::fs::read_to_string(out.join("compare-latency.svg")).unwrap();
    assert!(svg.starts_with("<svg") && svg.contains("iceoryx2"));
    let runs = std::fs::read_to_string(out.join("runs.csv")).unwrap();
    // 11 cases x 2 sizes x (latency + throughput), plus the header.
    assert_eq!(runs.lines().count(), 1 + 11 * 2 * 2, "{runs}");
    assert!(runs.lines().skip(1).all(|l| l.ends_with(",true")), "{runs}");
    let _ = std::fs::remove_dir_all(&out);
}
