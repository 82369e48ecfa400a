//! `doctor` on a healthy bus and on deliberately broken queues and buses: each problem is found
//! with its message and exit 1; `--fix` repairs what it claims and a second run is clean.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

mod common;

use std::os::unix::fs::{FileExt, PermissionsExt};
use std::process::Stdio;
use std::time::Duration;

use chronicle_bus::markers::{Lease, Ready};
use chronicle_bus::{BusLayout, StrategyConfig, StrategyEndpoints};
use chronicle_core::QueueWriter;
use common::*;

fn strategy_config() -> StrategyConfig {
    StrategyConfig {
        writer: small(),
        lease_ttl: Duration::from_secs(600),
        ..StrategyConfig::default()
    }
}

/// Lines of stdout that are findings (not the summary).
fn findings(o: &Out) -> Vec<String> {
    o.stdout
        .lines()
        .filter(|l| !l.contains(" checked"))
        .map(str::to_string)
        .collect()
}

#[test]
fn healthy_bus_is_clean() {
    let tmp = tempfile::tempdir().unwrap();
    let bus = BusLayout::create(tmp.path().join("bus")).unwrap();
    make_queue(&bus.feed("md").unwrap(), 20);
    let mut s = StrategyEndpoints::open(&bus, "alpha", strategy_config()).unwrap();
    s.writer().append(1, b"order").unwrap();
    s.mark_ready().unwrap();
    make_queue(&bus.router_out(), 3);
    let o = run(&["doctor", p(bus.root()), "--verify"], b"");
    assert_eq!(o.code, 0, "{o:?}");
    assert_eq!(
        o.stdout,
        "ok 3 queues and 1 strategies checked, 24 records verified: no problems found\n"
    );
    let o = run(&["doctor", p(bus.root()), "--json"], b"");
    let v: serde_json::Value = serde_json::from_str(&o.stdout).unwrap();
    assert_eq!(v["kind"], "bus");
    assert_eq!(v["queues_checked"], 3);
    assert_eq!(v["errors"], 0);
    assert_eq!(v["findings"].as_array().unwrap().len(), 0);
    s.close().unwrap();
}

#[test]
fn stale_writer_lock_of_a_killed_writer_is_fixed_by_recovery() {
    let tmp = tempfile::tempdir().unwrap();
    let q = tmp.path().join("q");
    make_queue(&q, 2);
    let mut writer = bin()
        .args(["append", p(&q), "--print-seq"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    {
        use std::io::{BufRead, Write};
        writer.stdin.as_mut().unwrap().write_all(b"x\n").unwrap();
        writer.stdin.as_mut().unwrap().flush().unwrap();
        // Its printed seq proves the record is committed and the writer is open.
        let mut line = String::new();
        let out = writer.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let _ = std::io::BufReader::new(out).read_line(&mut line);
            let _ = tx.send(line);
        });
        let got = rx.recv_timeout(WATCHDOG);
        if got.is_err() {
            let _ = writer.kill();
            let _ = writer.wait();
        }
        assert_eq!(got.unwrap(), "2\n");
    }
    let pid = writer.id();
    writer.kill().unwrap();
    writer.wait().unwrap();
    let o = run(&["doctor", p(&q)], b"");
    assert_eq!(o.code, 1, "{o:?}");
    assert_eq!(
        findings(&o),
        vec![format!(
            "error   {}/writer.lock: writer pid {pid} died without closing the queue (queue.meta says open, writer.lock is free); fix: run recovery by opening a writer: chron-cli doctor --fix",
            p(&q)
        )]
    );
    let o = run(&["doctor", p(&q), "--fix"], b"");
    assert_eq!(o.code, 0, "{o:?}");
    assert!(
        o.stdout.contains(&format!(
            "fixed   {}/writer.lock: ran recovery: the tail was clean; next seq 3",
            p(&q)
        )),
        "{o:?}"
    );
    let o = run(&["doctor", p(&q)], b"");
    assert_eq!(o.code, 0, "{o:?}");
    assert!(o.stdout.contains("no problems found"), "{o:?}");
    assert_eq!(run(&["tail", p(&q)], b"").stdout.lines().count(), 3);
}

#[test]
fn torn_tail_is_found_and_fenced() {
    let tmp = tempfile::tempdir().unwrap();
    let q = tmp.path().join("q");
    make_queue(&q, 10);
    // A writer that died mid-record: header bytes without a commit word after the tail
    // (record 10 would start at 128 + 10 * 40 = 528), and queue.meta still says open.
    let seg = q.join("segments/00000000000000000000.seg");
    let f = std::fs::OpenOptions::new().write(true).open(&seg).unwrap();
    f.write_all_at(&[0xAB; 12], 528 + 8).unwrap();
    let m = std::fs::OpenOptions::new()
        .write(true)
        .open(q.join("queue.meta"))
        .unwrap();
    m.write_all_at(&1u32.to_le_bytes(), 172).unwrap();
    let o = run(&["doctor", p(&q)], b"");
    assert_eq!(o.code, 1, "{o:?}");
    let f = findings(&o);
    assert!(
        f.contains(&format!(
            "error   {}: torn record after the tail at segment 0 offset 528: 20 bytes written but never committed; fix: recovery fences it off with an ABORTED record: chron-cli doctor --fix",
            p(&seg)
        )),
        "{f:?}"
    );
    let o = run(&["doctor", p(&q), "--fix"], b"");
    assert_eq!(o.code, 0, "{o:?}");
    assert!(
        o.stdout.contains(
            "ran recovery: fenced off a torn record of 32 bytes at segment 0 offset 528; next seq 10 at segment 0 offset 560"
        ),
        "{o:?}"
    );
    let o = run(&["doctor", p(&q), "--verify"], b"");
    assert_eq!(o.code, 0, "{o:?}");
    assert!(
        o.stdout.contains("10 records verified: no problems found"),
        "{o:?}"
    );
}

#[test]
fn flipped_payload_byte_is_found_by_verify() {
    let tmp = tempfile::tempdir().unwrap();
    let q = tmp.path().join("q");
    make_queue(&q, 5);
    // Record 2 starts at 128 + 2 * 40; its payload at +32.
    let seg = q.join("segments/00000000000000000000.seg");
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&seg)
        .unwrap();
    let at = 128 + 2 * 40 + 32 + 1;
    let mut b = [0u8; 1];
    f.read_exact_at(&mut b, at).unwrap();
    f.write_all_at(&[b[0] ^ 0x01], at).unwrap();
    // Without --verify, records are not read.
    assert_eq!(run(&["doctor", p(&q)], b"").code, 0);
    let o = run(&["doctor", p(&q), "--verify"], b"");
    assert_eq!(o.code, 1, "{o:?}");
    assert_eq!(
        findings(&o),
        vec![format!(
            "error   {0}: record seq 2: {0} is corrupted at offset 208: CRC mismatch; fix: no automatic fix: readers stop at this record (skip it with QueueReader::skip_record, or restore the segment)",
            p(&seg)
        )]
    );
    assert!(o.stdout.contains("4 records verified"), "{o:?}");
    let v: serde_json::Value =
        serde_json::from_str(&run(&["doctor", p(&q), "--verify", "--json"], b"").stdout).unwrap();
    assert_eq!(v["errors"], 1);
    assert_eq!(v["findings"][0]["kind"], "bad-record");
}

#[test]
fn truncated_segment_is_an_error() {
    let tmp = tempfile::tempdir().unwrap();
    let q = tmp.path().join("q");
    make_queue(&q, 5);
    let seg = q.join("segments/00000000000000000000.seg");
    std::fs::OpenOptions::new()
        .write(true)
        .open(&seg)
        .unwrap()
        .set_len(32 << 10)
        .unwrap();
    let o = run(&["doctor", p(&q), "--verify"], b"");
    assert_eq!(o.code, 1, "{o:?}");
    let f = findings(&o);
    assert!(
        f.contains(&format!(
            "error   {}: segment 0 is 32.0 KiB but the queue's segments are 64.0 KiB (truncated); fix: no automatic fix: restore the file, or copy the readable records to a new queue (chron-cli tail --json | chron-cli append --create --format json)",
            p(&seg)
        )),
        "{f:?}"
    );
    // tail on it fails with one sentence, no panic.
    assert_one_sentence(
        &run(&["tail", p(&q)], b""),
        1,
        "shorter than the segment size",
    );
}

#[test]
fn orphan_reader_is_reported_and_removed_only_when_asked() {
    let tmp = tempfile::tempdir().unwrap();
    let q = tmp.path().join("q");
    make_queue(&q, 5);
    make_reader(&q, "audit", 2);
    make_reader(&q, "live", 5);
    let meta = q.join("readers/audit.meta");
    set_reader_liveness(&meta, NO_SUCH_PID, 1, T0);
    let o = run(&["doctor", p(&q)], b"");
    assert_eq!(o.code, 1, "{o:?}");
    let f = findings(&o);
    assert_eq!(f.len(), 1, "{f:?}");
    assert!(
        f[0].starts_with(&format!(
            "error   {}: orphan reader 'audit': pid {NO_SUCH_PID} is gone and its last heartbeat was ",
            p(&meta)
        )),
        "{f:?}"
    );
    assert!(f[0].ends_with("ago (position seq 2); fix: if its consumer is retired: chron-cli doctor --fix --remove-orphans (the position is lost)"), "{f:?}");
    // --fix alone keeps it (losing a position is not a safe fix).
    let o = run(&["doctor", p(&q), "--fix"], b"");
    assert_eq!(o.code, 1, "{o:?}");
    assert!(meta.exists());
    let o = run(&["doctor", p(&q), "--fix", "--remove-orphans"], b"");
    assert_eq!(o.code, 0, "{o:?}");
    assert!(o.stdout.contains("removed reader 'audit'"), "{o:?}");
    assert!(!meta.exists());
    assert!(q.join("readers/live.meta").exists());
    assert_eq!(run(&["doctor", p(&q)], b"").code, 0);
    // --remove-orphans without --fix is a usage error.
    assert_eq!(run(&["doctor", p(&q), "--remove-orphans"], b"").code, 2);
}

#[test]
fn world_writable_file_is_an_error() {
    let tmp = tempfile::tempdir().unwrap();
    let q = tmp.path().join("q");
    make_queue(&q, 1);
    let meta = q.join("queue.meta");
    std::fs::set_permissions(&meta, std::fs::Permissions::from_mode(0o666)).unwrap();
    let o = run(&["doctor", p(&q)], b"");
    assert_eq!(o.code, 1, "{o:?}");
    assert_eq!(
        findings(&o),
        vec![format!(
            "error   {0}: file is writable by every user (mode 0666); fix: chmod o-w {0}",
            p(&meta)
        )]
    );
}

#[test]
fn stale_markers_on_a_bus_are_removed_by_fix() {
    let tmp = tempfile::tempdir().unwrap();
    let bus = BusLayout::create(tmp.path().join("bus")).unwrap();
    // A strategy that died: stale LEASE, and its order queue's writer died too.
    let dead = bus.strategy_dir("dead").unwrap();
    std::fs::create_dir_all(&dead).unwrap();
    Lease {
        pid: NO_SUCH_PID,
        start_time: 1,
        heartbeat_ns: T0,
        expiry_ns: T0 + 1,
    }
    .write(&bus.strategy_lease("dead").unwrap(), 0o660)
    .unwrap();
    // READY with no order queue.
    let ghost = bus.strategy_dir("ghost").unwrap();
    std::fs::create_dir_all(&ghost).unwrap();
    let ready = bus.strategy_ready("ghost").unwrap();
    Ready::new(42, T0).write(&ready, 0o660).unwrap();
    let o = run(&["doctor", p(bus.root())], b"");
    // Warnings only: exit 0.
    assert_eq!(o.code, 0, "{o:?}");
    let lease = bus.strategy_lease("dead").unwrap();
    assert_eq!(
        findings(&o),
        vec![
            format!(
                "warning {}: lease holder pid {NO_SUCH_PID} is gone (last renewed {}); fix: remove the stale LEASE: chron-cli doctor --fix",
                p(&lease),
                o.stdout
                    .split("last renewed ")
                    .nth(1)
                    .unwrap()
                    .split(')')
                    .next()
                    .unwrap()
            ),
            format!(
                "warning {}: READY (pid {}) but there is no order queue at {}/orders; fix: remove the READY marker: chron-cli doctor --fix",
                p(&ready),
                std::process::id(),
                p(&ghost)
            ),
        ]
    );
    let o = run(&["doctor", p(bus.root()), "--fix"], b"");
    assert_eq!(o.code, 0, "{o:?}");
    assert!(
        o.stdout.contains(&format!("removed {}", p(&lease))),
        "{o:?}"
    );
    assert!(!lease.exists() && !ready.exists());
    let o = run(&["doctor", p(bus.root())], b"");
    assert!(o.stdout.contains("no problems found"), "{o:?}");
}

#[test]
fn doctor_refuses_what_is_not_a_bus_or_queue() {
    let tmp = tempfile::tempdir().unwrap();
    assert_one_sentence(
        &run(&["doctor", p(tmp.path())], b""),
        1,
        "is neither a chronicle queue",
    );
    assert_one_sentence(
        &run(&["doctor", p(&tmp.path().join("nope"))], b""),
        1,
        "no such file or directory",
    );
    // A live writer is not stale.
    let q = tmp.path().join("q");
    let mut w = QueueWriter::open(&q, small()).unwrap();
    w.append(0, b"x").unwrap();
    let o = run(&["doctor", p(&q)], b"");
    assert_eq!(o.code, 0, "{o:?}");
    w.close().unwrap();
}

#[test]
fn symbolic_links_and_marker_temporaries_are_reported_and_links_never_followed() {
    let tmp = tempfile::tempdir().unwrap();
    let bus = BusLayout::create(tmp.path().join("bus")).unwrap();
    let outside = tmp.path().join("outside");
    std::fs::create_dir_all(&outside).unwrap();
    // A real strategy whose LEASE is a dangling link and READY a link to a valid marker outside.
    let mut s = StrategyEndpoints::open(&bus, "alpha", strategy_config()).unwrap();
    s.mark_ready().unwrap();
    let ready = bus.strategy_ready("alpha").unwrap();
    let lease = bus.strategy_lease("alpha").unwrap();
    let elsewhere = outside.join("READY");
    std::fs::copy(&ready, &elsewhere).unwrap();
    std::fs::remove_file(&ready).unwrap();
    std::os::unix::fs::symlink(&elsewhere, &ready).unwrap();
    std::fs::remove_file(&lease).unwrap();
    std::os::unix::fs::symlink(outside.join("missing"), &lease).unwrap();
    // A temporary left by a writer that died before its rename.
    let temp = bus
        .strategy_dir("alpha")
        .unwrap()
        .join(format!(".LEASE.tmp.{NO_SUCH_PID}.3"));
    std::fs::write(&temp, b"half").unwrap();
    // A strategy "directory" that is a link to a directory outside the bus.
    let linked = bus.strategy_dir("beta").unwrap();
    std::os::unix::fs::symlink(&outside, &linked).unwrap();

    let o = run(&["doctor", p(bus.root())], b"");
    assert_eq!(o.code, 1, "{o:?}");
    assert_eq!(
        findings(&o),
        vec![
            format!(
                "error   {}: strategy directory is a symbolic link to {}: discovery never follows it, so nothing behind it is routed; fix: replace the link with the directory itself, or remove the link: rm {}",
                p(&linked),
                p(&outside),
                p(&linked)
            ),
            format!(
                "error   {}: READY marker is a symbolic link to {}: discovery refuses it; the strategy writes a real file in its place; fix: remove the link (not its target): chron-cli doctor --fix",
                p(&ready),
                p(&elsewhere)
            ),
            format!(
                "error   {}: LEASE marker is a symbolic link to {}/missing (dangling): discovery refuses it; the strategy writes a real file in its place; fix: remove the link (not its target): chron-cli doctor --fix",
                p(&lease),
                p(&outside)
            ),
            format!(
                "warning {}: marker temporary left by pid {NO_SUCH_PID}, which died before renaming it; fix: remove it: chron-cli doctor --fix (the strategy also removes it when it reopens)",
                p(&temp)
            ),
        ]
    );
    let o = run(&["doctor", p(bus.root()), "--fix"], b"");
    assert!(
        o.stdout.contains(&format!("removed {}", p(&ready))),
        "{o:?}"
    );
    // The links and the temporary are gone, the link targets are untouched, the directory
    // link is left for the operator.
    assert!(std::fs::symlink_metadata(&ready).is_err());
    assert!(std::fs::symlink_metadata(&lease).is_err());
    assert!(!temp.exists());
    assert!(elsewhere.exists());
    assert!(std::fs::symlink_metadata(&linked).is_ok());
    std::fs::remove_file(&linked).unwrap();
    s.mark_ready().unwrap();
    s.renew_lease().unwrap();
    let o = run(&["doctor", p(bus.root())], b"");
    assert!(o.stdout.contains("no problems found"), "{o:?}");
    s.close().unwrap();
}
