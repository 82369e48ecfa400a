//! Real processes: a writer and readers in separate processes, SIGKILLed and restarted.
#![allow(clippy::unwrap_used, clippy::panic)]

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use chronicle_core::{
    CommitPolicy, QueueReader, QueueWriter, ReaderConfig, WaitOutcome, WriterConfig, WriterStatus,
    list_readers,
};
use common::{Lines, ROLE, Rng, kill9, new_queue, payload, spawn_child, wait_with_deadline};

fn env(k: &str) -> String {
    std::env::var(k).unwrap()
}

fn small_segments() -> WriterConfig {
    WriterConfig {
        segment_size: 64 << 10,
        index_stride: 1024,
        ..WriterConfig::default()
    }
}

/// Entry point of every child process (ignored in normal runs).
#[test]
#[ignore = "child process entry, run by the multi-process tests"]
fn child_entry() {
    let Ok(role) = std::env::var(ROLE) else {
        return;
    };
    let q = PathBuf::from(env("Q"));
    match role.as_str() {
        "writer" => child_writer(&q),
        "reader" => child_reader(&q),
        "sleeper" => child_sleeper(&q),
        "idle_writer" => child_idle_writer(&q),
        other => panic!("unknown role {other}"),
    }
}

/// Appends `COUNT` records (or forever when COUNT=0), optionally spinning `SPIN` iterations
/// between appends; prints "ready <next_seq>" first and "done <n>" at the end.
fn child_writer(q: &Path) {
    let count: u64 = env("COUNT").parse().unwrap();
    let spin: u64 = env("SPIN").parse().unwrap();
    let seg: u64 = env("SEG").parse().unwrap();
    let cfg = WriterConfig {
        segment_size: seg,
        index_stride: 1024,
        ..WriterConfig::default()
    };
    let mut w = QueueWriter::open(q, cfg).unwrap();
    println!("ready {}", w.next_seq());
    let mut n = 0u64;
    while count == 0 || n < count {
        let seq = w.next_seq();
        assert_eq!(w.append(seq as u32, &payload(seq)).unwrap(), seq);
        n += 1;
        for _ in 0..spin {
            std::hint::spin_loop();
        }
    }
    w.close().unwrap();
    println!("done {n}");
}

/// Named reader "r": reads until `UNTIL` (exclusive), verifying every record, committing after
/// each one; prints "first <seq>" for the first record it sees and "done <count> <sum>".
fn child_reader(q: &Path) {
    let until: u64 = env("UNTIL").parse().unwrap();
    let mut cfg = ReaderConfig::named("r");
    cfg.commit = CommitPolicy::OnNext;
    let mut r = loop {
        match QueueReader::open(q, cfg.clone()) {
            Ok(r) => break r,
            Err(_) => std::thread::sleep(Duration::from_millis(2)),
        }
    };
    let mut expected = r.next_seq();
    println!("first {expected}");
    let mut count = 0u64;
    let mut sum = 0u64;
    while expected < until {
        match r.next().unwrap() {
            Some(m) => {
                assert_eq!(m.seq(), expected, "records out of order or duplicated");
                assert_eq!(
                    m.payload(),
                    &payload(m.seq())[..],
                    "payload of {} differs",
                    m.seq()
                );
                assert_eq!(m.type_id(), m.seq() as u32);
                sum = sum.wrapping_add(m.seq());
                expected += 1;
                count += 1;
            }
            None => {
                if let WaitOutcome::WriterGone(s) = r.wait(Duration::from_millis(200)).unwrap() {
                    if !r.has_next() {
                        panic!("writer gone ({s:?}) before {until}");
                    }
                }
            }
        }
    }
    r.commit().unwrap();
    println!("done {count} {sum}");
}

/// Opens the queue for writing, says so, and then stays alive without writing.
fn child_idle_writer(q: &Path) {
    let _w = QueueWriter::open(q, small_segments()).unwrap();
    println!("ready");
    loop {
        std::thread::sleep(Duration::from_secs(1));
    }
}

/// Reader that goes to sleep at the tail and reports how the wait ended.
fn child_sleeper(q: &Path) {
    let mut r = QueueReader::open(
        q,
        ReaderConfig::default().start(chronicle_core::StartAt::Latest),
    )
    .unwrap();
    println!("sleeping");
    let out = r.wait(Duration::from_secs(60)).unwrap();
    println!("woke {out:?}");
}

/// Checks every record of the queue: contiguous seqs from 0, payloads byte for byte.
fn verify_queue(q: &Path) -> u64 {
    let mut r = QueueReader::open(q, ReaderConfig::default()).unwrap();
    let mut n = 0u64;
    while let Some(m) = r.next().unwrap() {
        assert_eq!(m.seq(), n, "sequence gap or reorder");
        assert_eq!(m.payload(), &payload(n)[..], "record {n} differs");
        n += 1;
    }
    n
}

#[test]
fn one_million_messages_between_processes() {
    let dir = tempfile::tempdir().unwrap();
    let q = dir.path().join("q");
    let total: u64 = 1_000_000;
    // Create the queue first so the reader can open it.
    drop(
        QueueWriter::open(
            &q,
            WriterConfig {
                segment_size: 4 << 20,
                ..WriterConfig::default()
            },
        )
        .unwrap(),
    );
    let mut reader = spawn_child(
        "reader",
        &[("Q", q.display().to_string()), ("UNTIL", total.to_string())],
    );
    let rl = Lines::new(reader.stdout.take().unwrap());
    assert_eq!(rl.expect("first", Duration::from_secs(60)), "first 0");
    let mut writer = spawn_child(
        "writer",
        &[
            ("Q", q.display().to_string()),
            ("COUNT", total.to_string()),
            ("SPIN", "0".into()),
            ("SEG", (4u64 << 20).to_string()),
        ],
    );
    let wl = Lines::new(writer.stdout.take().unwrap());
    wl.expect("ready", Duration::from_secs(60));
    assert_eq!(
        wl.expect("done", Duration::from_secs(300)),
        format!("done {total}")
    );
    let done = rl.expect("done", Duration::from_secs(300));
    let expect_sum = total * (total - 1) / 2;
    assert_eq!(done, format!("done {total} {expect_sum}"));
    assert!(wait_with_deadline(&mut writer, Duration::from_secs(30)).success());
    assert!(wait_with_deadline(&mut reader, Duration::from_secs(30)).success());
    assert_eq!(verify_queue(&q), total);
}

#[test]
fn writer_sigkilled_at_random_points_loses_nothing_committed() {
    let iters = common::crash_iterations(50);
    let mut rng = Rng::from_env_or_time("CHRONICLE_CRASH_SEED");
    let dir = tempfile::tempdir().unwrap();
    let q = dir.path().join("q");
    let mut committed = 0u64;
    let mut torn_repairs = 0;
    for i in 0..iters {
        let mut w = spawn_child(
            "writer",
            &[
                ("Q", q.display().to_string()),
                ("COUNT", "0".into()),
                ("SPIN", rng.range(0, 400).to_string()),
                ("SEG", (64u64 << 10).to_string()),
            ],
        );
        let wl = Lines::new(w.stdout.take().unwrap());
        let ready = wl.expect("ready", Duration::from_secs(60));
        let start: u64 = ready.trim_start_matches("ready ").parse().unwrap();
        assert_eq!(
            start, committed,
            "iteration {i}: writer restarted at {start}, {committed} records were readable"
        );
        std::thread::sleep(Duration::from_micros(rng.range(200, 8000)));
        kill9(&mut w);
        let n = verify_queue(&q);
        assert!(
            n >= committed,
            "iteration {i}: {n} records readable, {committed} before"
        );
        committed = n;
        // A named reader saves a position at the tail: the next recovery sees it and must not
        // take it for a record lost (a process crash loses no committed record).
        let mut r = QueueReader::open(&q, ReaderConfig::named("tail")).unwrap();
        while r.next().unwrap().is_some() {}
        r.commit().unwrap();
    }
    // A final writer in this process: recovery reports the same tail, and no writer recorded a
    // rewrite of the history.
    let w = QueueWriter::open(&q, small_segments()).unwrap();
    assert_eq!(w.next_seq(), committed);
    assert_eq!(w.history().epoch, 0, "a process crash recorded a rewrite");
    if let chronicle_core::RecoveryAction::Unblocked { .. } = w.recovery_report().action {
        torn_repairs += 1;
    }
    eprintln!("{iters} kills, {committed} records verified, final recovery torn={torn_repairs}");
    assert!(committed > 0);
}

#[test]
fn reader_killed_resumes_exactly_after_its_committed_position() {
    let dir = tempfile::tempdir().unwrap();
    let q = dir.path().join("q");
    let total = 200_000u64;
    {
        let mut w = QueueWriter::open(&q, small_segments()).unwrap();
        for s in 0..total {
            w.append(s as u32, &payload(s)).unwrap();
        }
        w.close().unwrap();
    }
    // A reader child reading up to `total`: the child, its output lines and the seq it
    // started at.
    let start_reader = || {
        let mut r = spawn_child(
            "reader",
            &[("Q", q.display().to_string()), ("UNTIL", total.to_string())],
        );
        let rl = Lines::new(r.stdout.take().unwrap());
        let first: u64 = rl
            .expect("first", Duration::from_secs(60))
            .trim_start_matches("first ")
            .parse()
            .unwrap();
        (r, rl, first)
    };
    let mut rng = Rng::from_env_or_time("CHRONICLE_READER_SEED");
    let mut last_committed = 0u64;
    for _ in 0..5 {
        let (mut r, _rl, first) = start_reader();
        assert_eq!(
            first, last_committed,
            "restarted reader must resume at its committed position"
        );
        std::thread::sleep(Duration::from_micros(rng.range(500, 5000)));
        kill9(&mut r);
        let info = list_readers(&chronicle_core::QueueDir::new(&q)).unwrap();
        let pos = info[0].as_ref().unwrap().position.unwrap();
        assert!(pos.next_seq >= last_committed);
        last_committed = pos.next_seq;
    }
    // Final run to completion.
    let (mut r, rl, first) = start_reader();
    assert_eq!(first, last_committed);
    let done = rl.expect("done", Duration::from_secs(120));
    assert_eq!(
        done.split(' ').nth(1).unwrap().parse::<u64>().unwrap(),
        total - last_committed
    );
    assert!(wait_with_deadline(&mut r, Duration::from_secs(30)).success());
}

#[test]
fn sleeping_reader_sees_writer_death() {
    let dir = tempfile::tempdir().unwrap();
    let q = dir.path().join("q");
    drop(QueueWriter::open(&q, small_segments()).unwrap());
    let mut w = spawn_child(
        "writer",
        &[
            ("Q", q.display().to_string()),
            ("COUNT", "100".into()),
            ("SPIN", "0".into()),
            ("SEG", (64u64 << 10).to_string()),
        ],
    );
    // Some history written and closed cleanly, then a second writer that stays alive and idle.
    let wl = Lines::new(w.stdout.take().unwrap());
    wl.expect("done", Duration::from_secs(60));
    wait_with_deadline(&mut w, Duration::from_secs(30));
    let mut w = spawn_child("idle_writer", &[("Q", q.display().to_string())]);
    let wl = Lines::new(w.stdout.take().unwrap());
    wl.expect("ready", Duration::from_secs(60));
    // The writer stays alive and idle: the sleeper ends up asleep on the futex.
    let mut s = spawn_child("sleeper", &[("Q", q.display().to_string())]);
    let sl = Lines::new(s.stdout.take().unwrap());
    sl.expect("sleeping", Duration::from_secs(60));
    wait_until_armed(&q);
    kill9(&mut w);
    let woke = sl.expect("woke", Duration::from_secs(30));
    assert_eq!(
        woke,
        format!("woke {:?}", WaitOutcome::WriterGone(WriterStatus::Dead))
    );
    assert!(wait_with_deadline(&mut s, Duration::from_secs(30)).success());
}

/// Waits (watchdog: 30 s) until a sleeping reader has set the WAITERS bit of the futex word.
fn wait_until_armed(q: &Path) {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while notify_word(q) & 1 == 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "sleeper never armed the futex"
        );
        std::thread::sleep(Duration::from_millis(1));
    }
}

fn notify_word(q: &Path) -> u32 {
    use std::os::unix::fs::FileExt;
    let f = std::fs::File::open(q.join("queue.meta")).unwrap();
    let mut b = [0u8; 4];
    f.read_exact_at(&mut b, 256).unwrap();
    u32::from_le_bytes(b)
}

#[test]
fn reader_dying_asleep_costs_the_writer_at_most_one_wake() {
    let (_dir, q, mut w) = new_queue(small_segments());
    let mut s = spawn_child("sleeper", &[("Q", q.display().to_string())]);
    let sl = Lines::new(s.stdout.take().unwrap());
    sl.expect("sleeping", Duration::from_secs(60));
    // Wait until the sleeper has armed the futex word (WAITERS bit), then kill it.
    wait_until_armed(&q);
    kill9(&mut s);
    let before = notify_word(&q);
    assert_eq!(before & 1, 1, "the dead sleeper left WAITERS set");
    for i in 0..1000u64 {
        w.append(1, &i.to_le_bytes()).unwrap();
    }
    let after = notify_word(&q);
    assert_eq!(after & 1, 0, "WAITERS must be cleared by the first commit");
    assert_eq!(
        (after >> 1).wrapping_sub(before >> 1),
        1,
        "exactly one wake for 1000 commits"
    );
}
