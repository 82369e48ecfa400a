//! `doctor` on a healthy bus and on deliberately broken queues and buses: each problem is found
//! with its message and exit 1; `--fix` repairs what it claims and a second run is clean.
#![allow(clippy::unwrap_used)]

mod common;

use std::os::unix::fs::FileExt;
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

/// Asserts doctor found an error (exit 1) and returns its findings.
fn error_findings(o: &Out) -> Vec<String> {
    assert_eq!(o.code, 1, "{o:?}");
    findings(o)
}

/// Asserts doctor found an error (exit 1), `line` among its findings.
fn assert_error_finding(o: &Out, line: &str) {
    let f = error_findings(o);
    assert!(f.iter().any(|l| l == line), "{f:?}");
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
    let (_tmp, q) = temp_queue(2);
    let mut writer = spawn_append(&q, &["--print-seq"], Stdio::piped(), b"x\n");
    {
        use std::io::BufRead;
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
    assert_eq!(
        error_findings(&o),
        vec![format!(
            "error   {}/writer.lock: writer pid {pid} died without closing the queue (queue.meta says open, writer.lock is free); fix: run recovery by opening a writer: chron-cli doctor --fix",
            p(&q)
        )]
    );
    let o = run(&["doctor", p(&q), "--fix"], b"");
    assert_success(
        &o,
        &format!(
            "fixed   {}/writer.lock: ran recovery: the tail was clean; next seq 3",
            p(&q)
        ),
    );
    let o = run(&["doctor", p(&q)], b"");
    assert_success(&o, "no problems found");
    assert_eq!(run(&["tail", p(&q)], b"").stdout.lines().count(), 3);
}

#[test]
fn torn_tail_is_found_and_fenced() {
    let (_tmp, q) = temp_queue(10);
    // A writer that died mid-record: header bytes without a commit word after the tail
    // (record 10 would start at 128 + 10 * 40 = 528), and queue.meta still says open.
    let seg = seg0(&q);
    put_at(&seg, 528 + 8, &[0xAB; 12]);
    put_at(&meta(&q), 172, &1u32.to_le_bytes());
    let o = run(&["doctor", p(&q)], b"");
    assert_error_finding(
        &o,
        &format!(
            "error   {}: torn record after the tail at segment 0 offset 528: 20 bytes written but never committed; fix: recovery fences it off with an ABORTED record: chron-cli doctor --fix",
            p(&seg)
        ),
    );
    let o = run(&["doctor", p(&q), "--fix"], b"");
    assert_success(
        &o,
        "ran recovery: fenced off a torn record of 32 bytes at segment 0 offset 528; next seq 10 at segment 0 offset 560",
    );
    let o = run(&["doctor", p(&q), "--verify"], b"");
    assert_success(&o, "10 records verified: no problems found");
}

#[test]
fn flipped_payload_byte_is_found_by_verify() {
    let (_tmp, q) = temp_queue(5);
    // Record 2 starts at 128 + 2 * 40; its payload at +32.
    let seg = seg0(&q);
    xor_at(&seg, 128 + 2 * 40 + 32 + 1, 0x01);
    // Without --verify, records are not read.
    assert_eq!(run(&["doctor", p(&q)], b"").code, 0);
    let o = run(&["doctor", p(&q), "--verify"], b"");
    assert_eq!(
        error_findings(&o),
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
    let (_tmp, q) = temp_queue(5);
    let seg = seg0(&q);
    truncate(&seg, 32 << 10);
    let o = run(&["doctor", p(&q), "--verify"], b"");
    assert_error_finding(
        &o,
        &format!(
            "error   {}: segment 0 is 32.0 KiB but the queue's segments are 64.0 KiB (truncated); fix: no automatic fix: restore the file, or copy the readable records to a new queue (chron-cli tail --json | chron-cli append --create --format json)",
            p(&seg)
        ),
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
    let (_tmp, q) = temp_queue(5);
    make_reader(&q, "audit", 2);
    make_reader(&q, "live", 5);
    let meta = q.join("readers/audit.meta");
    set_reader_liveness(&meta, NO_SUCH_PID, 1, T0);
    let o = run(&["doctor", p(&q)], b"");
    let f = error_findings(&o);
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
    assert_success(&o, "removed reader 'audit'");
    assert!(!meta.exists());
    assert!(q.join("readers/live.meta").exists());
    assert_eq!(run(&["doctor", p(&q)], b"").code, 0);
    // --remove-orphans without --fix is a usage error.
    assert_eq!(run(&["doctor", p(&q), "--remove-orphans"], b"").code, 2);
}

#[test]
fn world_writable_file_is_an_error() {
    let (_tmp, q) = temp_queue(1);
    let meta = q.join("queue.meta");
    chmod(&meta, 0o666);
    let o = run(&["doctor", p(&q)], b"");
    assert_eq!(
        error_findings(&o),
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
    assert_success(&o, &format!("removed {}", p(&lease)));
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
    assert_eq!(
        error_findings(&o),
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

/// One deliberate corruption: which file to damage and how.
struct Damage {
    name: &'static str,
    /// The file in the queue, from the queue's path.
    file: fn(&std::path::Path) -> std::path::PathBuf,
    /// Damages that file, given its path.
    apply: fn(&std::path::Path),
    /// Offset the typed error must name (`None`: an error that names the file only).
    offset: Option<u64>,
}

fn damage(
    name: &'static str,
    file: fn(&std::path::Path) -> std::path::PathBuf,
    apply: fn(&std::path::Path),
    offset: Option<u64>,
) -> Damage {
    Damage {
        name,
        file,
        apply,
        offset,
    }
}

fn seg0(q: &std::path::Path) -> std::path::PathBuf {
    q.join("segments/00000000000000000000.seg")
}
fn meta(q: &std::path::Path) -> std::path::PathBuf {
    q.join("queue.meta")
}
fn idx0(q: &std::path::Path) -> std::path::PathBuf {
    q.join("index/00000000000000000000.idx")
}
fn rmeta(q: &std::path::Path) -> std::path::PathBuf {
    q.join("readers/r.meta")
}
fn xor_at(path: &std::path::Path, at: u64, mask: u8) {
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .unwrap();
    let mut b = [0u8; 1];
    f.read_exact_at(&mut b, at).unwrap();
    f.write_all_at(&[b[0] ^ mask], at).unwrap();
}
fn put_at(path: &std::path::Path, at: u64, bytes: &[u8]) {
    let f = std::fs::OpenOptions::new().write(true).open(path).unwrap();
    f.write_all_at(bytes, at).unwrap();
}
fn truncate(path: &std::path::Path, len: u64) {
    std::fs::OpenOptions::new()
        .write(true)
        .open(path)
        .unwrap()
        .set_len(len)
        .unwrap();
}

/// Record 2 of `make_queue` starts at 128 + 2 * 40 = 208: commit word +0, CRC +4, seq +8,
/// timestamp +16, type +24, length +28, payload +32.
const R2: u64 = 208;

#[test]
fn corruption_matrix_gives_typed_errors_naming_file_and_offset_and_doctor_finds_each() {
    let cases = [
        damage("payload bit", seg0, |f| xor_at(f, R2 + 33, 0x10), Some(R2)),
        damage("crc bit", seg0, |f| xor_at(f, R2 + 4, 0x01), Some(R2)),
        damage("seq bit", seg0, |f| xor_at(f, R2 + 8, 0x04), Some(R2)),
        damage(
            "timestamp bit",
            seg0,
            |f| xor_at(f, R2 + 17, 0x80),
            Some(R2),
        ),
        damage("type bit", seg0, |f| xor_at(f, R2 + 24, 0x02), Some(R2)),
        damage(
            "length past the segment end",
            seg0,
            |f| put_at(f, R2 + 28, &0x00ff_ffffu32.to_le_bytes()),
            Some(R2),
        ),
        damage(
            "garbage commit word",
            seg0,
            |f| put_at(f, R2, &0xdead_beefu32.to_le_bytes()),
            Some(R2),
        ),
        damage(
            "commit word length past the end",
            seg0,
            |f| put_at(f, R2, &0x0fff_fff1u32.to_le_bytes()),
            Some(R2),
        ),
        damage("segment magic", seg0, |f| xor_at(f, 0, 0xff), Some(0)),
        damage("truncated segment", seg0, |f| truncate(f, 4096), Some(4096)),
        damage("zero-length segment", seg0, |f| truncate(f, 0), Some(0)),
        damage("queue.meta magic", meta, |f| xor_at(f, 0, 0xff), Some(0)),
        damage("queue.meta version", meta, |f| xor_at(f, 8, 0x40), None),
        damage(
            "truncated queue.meta",
            meta,
            |f| truncate(f, 100),
            Some(100),
        ),
        damage("zero-length queue.meta", meta, |f| truncate(f, 0), None),
        damage("truncated reader meta", rmeta, |f| truncate(f, 10), None),
        damage("zero-length reader meta", rmeta, |f| truncate(f, 0), None),
        damage("reader meta magic", rmeta, |f| xor_at(f, 0, 0xff), None),
        damage("truncated index", idx0, |f| truncate(f, 10), None),
        damage("zero-length index", idx0, |f| truncate(f, 0), None),
    ];
    for c in cases {
        let (_tmp, q) = temp_queue(5);
        make_reader(&q, "r", 1);
        let file = (c.file)(&q);
        (c.apply)(&file);
        // doctor --verify finds it and names the file.
        let o = run(&["doctor", p(&q), "--verify"], b"");
        let line = o
            .stdout
            .lines()
            .find(|l| l.contains(p(&file)))
            .unwrap_or_else(|| panic!("{}: doctor does not name {}: {o:?}", c.name, p(&file)));
        let warning_only = c.name.ends_with("index");
        // A zero-length reader meta is what a reader killed while creating it leaves: the
        // library starts it afresh (at its configured start: more duplicates, never a loss);
        // doctor still reports it.
        let reinit = c.name == "zero-length reader meta";
        if warning_only {
            assert!(line.starts_with("warning"), "{}: {line}", c.name);
        } else {
            assert_eq!(o.code, 1, "{}: {o:?}", c.name);
            assert!(line.starts_with("error"), "{}: {line}", c.name);
        }
        if let Some(off) = c.offset {
            assert!(
                o.stdout.contains(&format!("at offset {off}")) || o.stdout.contains("truncated"),
                "{}: doctor does not give the offset: {o:?}",
                c.name
            );
        }
        // The library: reading everything, opening the named reader and seeking give typed
        // errors that name the file (and the offset), never a panic or a wrong record.
        let mut errs = Vec::new();
        match chronicle_core::QueueReader::open(&q, chronicle_core::ReaderConfig::default()) {
            Ok(mut r) => loop {
                match r.next() {
                    Ok(Some(m)) => assert_eq!(m.payload(), format!("rec-{}", m.seq()).as_bytes()),
                    Ok(None) => break,
                    Err(e) => {
                        errs.push(e);
                        break;
                    }
                }
            },
            Err(e) => errs.push(e),
        }
        let named = chronicle_core::ReaderConfig::named("r");
        if let Err(e) = chronicle_core::QueueReader::open(&q, named) {
            errs.push(e);
        }
        let seek = chronicle_core::ReaderConfig::default().start(chronicle_core::StartAt::Seq(3));
        match chronicle_core::QueueReader::open(&q, seek) {
            Ok(mut r) => {
                if let Ok(Some(m)) = r.next() {
                    assert_eq!(m.seq(), 3, "{}: seek landed on the wrong record", c.name);
                }
            }
            Err(e) => errs.push(e),
        }
        if warning_only || reinit {
            assert!(errs.is_empty(), "{}: {errs:?}", c.name);
            continue;
        }
        assert!(!errs.is_empty(), "{}: no error from the library", c.name);
        for e in &errs {
            use chronicle_core::Error as E;
            match e {
                E::Corrupted { path, offset, .. } => {
                    assert_eq!(path, &file, "{}: {e}", c.name);
                    if let Some(off) = c.offset {
                        assert_eq!(*offset, off, "{}: {e}", c.name);
                    }
                }
                E::VersionMismatch { path, .. } | E::NotYetInitialized { path } => {
                    assert_eq!(path, &file, "{}: {e}", c.name);
                    assert!(c.offset.is_none(), "{}: {e}", c.name);
                }
                other => panic!("{}: unexpected error {other}", c.name),
            }
            assert!(e.to_string().contains(p(&file)), "{}: {e}", c.name);
        }
    }
}

#[test]
fn damaged_old_segment_is_reported_with_its_seqs_and_quarantined_on_request() {
    use chronicle_core::{Error, QueueReader, ReaderConfig, StartAt, WriterConfig};
    let (_tmp, q) = temp_queue_path();
    let mut w = QueueWriter::open(
        &q,
        WriterConfig {
            segment_size: 64 << 10,
            ..WriterConfig::default()
        },
    )
    .unwrap();
    for i in 0..3000u64 {
        w.append(1, &[i as u8; 60]).unwrap();
    }
    w.close().unwrap();
    wait_unlocked(&q);
    let base = |id: u64| {
        let f = std::fs::File::open(q.join(format!("segments/{id:020}.seg"))).unwrap();
        let mut b = [0u8; 8];
        f.read_exact_at(&mut b, 40).unwrap();
        u64::from_le_bytes(b)
    };
    let (base1, base2) = (base(1), base(2));
    // A page in the middle of segment 1 lost (zeroes), as after a power cut without msync.
    let seg1 = q.join("segments/00000000000000000001.seg");
    put_at(&seg1, 16 << 10, &[0u8; 4096]);
    let o = run(&["doctor", p(&q)], b"");
    let f = error_findings(&o);
    let line = f
        .iter()
        .find(|l| l.contains("damaged-history") || l.contains(&format!("{}: segment 1:", p(&seg1))))
        .unwrap_or_else(|| panic!("{f:?}"));
    assert!(
        line.contains(&format!(
            "up to seq {} cannot be read; readers starting at seq {base2} (segment 2) or later are not affected",
            base2 - 1
        )),
        "{line}"
    );
    assert!(line.contains(" from seq "), "{line}");
    assert!(
        line.contains("chron-cli doctor --fix --quarantine"),
        "{line}"
    );
    let from: u64 = line
        .split(" from seq ")
        .nth(1)
        .and_then(|r| r.split(' ').next())
        .unwrap()
        .parse()
        .unwrap();
    assert!(from > base1 && from < base2, "{from} {base1} {base2}");
    // A plain --fix leaves it; --quarantine moves segments 0 and 1 aside.
    let o = run(&["doctor", p(&q), "--fix"], b"");
    assert_eq!(o.code, 1, "{o:?}");
    assert!(seg0(&q).exists());
    let o = run(&["doctor", p(&q), "--fix", "--quarantine"], b"");
    assert!(
        o.stdout.contains(&format!(
            "moved segments [0, 1] to {}/quarantine/; the queue now starts at seq {base2} (segment 2)",
            p(&q)
        )),
        "{o:?}"
    );
    assert!(q.join("quarantine/00000000000000000001.seg").exists());
    assert!(q.join("quarantine/00000000000000000000.idx").exists());
    let o = run(&["doctor", p(&q)], b"");
    assert_eq!(o.code, 0, "{o:?}");
    let mut r = QueueReader::open(&q, ReaderConfig::default().start(StartAt::Earliest)).unwrap();
    assert_eq!(r.next().unwrap().unwrap().seq(), base2);
    match QueueReader::open(&q, ReaderConfig::default().start(StartAt::Seq(5))) {
        Err(Error::PositionLost {
            wanted_seq: 5,
            oldest_seq,
        }) => {
            assert_eq!(oldest_seq, Some(base2));
        }
        other => panic!("{other:?}"),
    }
}

/// A power cut lost records 50-99 after a named reader had read to 60; the recovering writer
/// recorded the rewrite of the history: `inspect` shows it, and `doctor` names the reader that
/// saw lost records (it will be refused), and not the one that saw only what survived.
#[test]
fn reader_past_a_rewrite_of_the_history_is_reported() {
    use chronicle_core::{QueueReader, ReaderConfig, WriterConfig};
    let (_tmp, q) = temp_queue_path();
    let mut w = QueueWriter::open(&q, WriterConfig::default()).unwrap();
    for i in 0..100u64 {
        w.append(1, &[i as u8; 100]).unwrap();
    }
    w.close().unwrap();
    let mut offset_50 = 0;
    for (name, n) in [("saw-lost", 60u64), ("before", 50)] {
        let mut r = QueueReader::open(&q, ReaderConfig::named(name)).unwrap();
        for _ in 0..n {
            r.next().unwrap().unwrap();
        }
        r.commit().unwrap();
        if n == 50 {
            offset_50 = r.position().offset;
        }
    }
    // The pages of records 50-99 never reached the disk.
    put_at(&seg0(&q), offset_50, &vec![0u8; 100 * 136]);
    let w = QueueWriter::open(&q, WriterConfig::default()).unwrap();
    assert_eq!(w.next_seq(), 50);
    w.close().unwrap();
    wait_unlocked(&q);
    let o = run(&["inspect", p(&q)], b"");
    assert_eq!(o.code, 0, "{o:?}");
    assert!(
        o.stdout.contains("rewritten from seq 50 (epoch 1)"),
        "{}",
        o.stdout
    );
    let o = run(&["doctor", p(&q)], b"");
    let f = error_findings(&o);
    let hits: Vec<&String> = f
        .iter()
        .filter(|l| l.contains("saw records lost in a power cut"))
        .collect();
    assert_eq!(hits.len(), 1, "{f:?}");
    assert!(
        hits[0].contains("reader 'saw-lost'") && hits[0].contains("past seq 50"),
        "{}",
        hits[0]
    );
}
