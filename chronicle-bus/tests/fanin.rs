//! Fan-in merge: determinism against a reference sort (property test), the live watermark and
//! hold rules, resume from committed positions, sources added and removed while merging.
#![allow(clippy::unwrap_used)]

mod bus_common;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use bus_common::small_writer;
use chronicle_bus::{FanInConfig, FanInReader, FanInWaitOutcome, MergeMode, SourceId};
use chronicle_core::{QueueWriter, WriterConfig};
use proptest::prelude::*;

type Rec = (u64, u64, u64, Vec<u8>);

/// Drains a merger (no waiting): (ts, source id, seq, payload).
fn drain(f: &mut FanInReader) -> Vec<Rec> {
    let mut out = Vec::new();
    while let Some(m) = f.next().unwrap() {
        out.push((
            m.timestamp_ns(),
            m.source().0,
            m.seq(),
            m.payload().to_vec(),
        ));
    }
    out
}

/// Writes `ts_lists[i]` into queue `q<i>`; returns the queue paths and the reference merge.
fn write_sources(root: &Path, ts_lists: &[Vec<u64>]) -> (Vec<PathBuf>, Vec<Rec>) {
    let mut paths = Vec::new();
    let mut all = Vec::new();
    for (i, list) in ts_lists.iter().enumerate() {
        let p = root.join(format!("q{i}"));
        let mut w = QueueWriter::open(&p, small_writer()).unwrap();
        let sid = SourceId::of(&format!("s{i}")).0;
        for &ts in list {
            let payload = format!("{i}:{ts}").into_bytes();
            let seq = w.append_at(i as u32, ts, &payload).unwrap();
            all.push((ts, sid, seq, payload));
        }
        w.close().unwrap();
        paths.push(p);
    }
    all.sort();
    (paths, all)
}

fn ts_lists() -> impl Strategy<Value = Vec<Vec<u64>>> {
    // Small increments make ties across (and within) sources common.
    prop::collection::vec(
        prop::collection::vec(0u64..3, 0..40).prop_map(|incs| {
            let mut t = 1_000u64;
            incs.into_iter()
                .map(|d| {
                    t += d;
                    t
                })
                .collect::<Vec<u64>>()
        }),
        1..6,
    )
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    /// Replay and live mode (writers closed) both give the reference sort by
    /// (timestamp, source id, seq), whatever order the sources are added in.
    #[test]
    fn merge_equals_reference_sort(lists in ts_lists(), rot in 0usize..6) {
        let d = tempfile::tempdir().unwrap();
        let (paths, reference) = write_sources(d.path(), &lists);
        for mode in [MergeMode::Replay, MergeMode::Live] {
            let mut f = FanInReader::new(FanInConfig {
                mode,
                max_hold: None,
                ..FanInConfig::default()
            })
            .unwrap();
            let n = paths.len();
            for k in 0..n {
                let i = (k + rot) % n;
                f.add_source(&format!("s{i}"), &paths[i]).unwrap();
            }
            let got = drain(&mut f);
            prop_assert_eq!(&got, &reference);
            prop_assert_eq!(f.stats().late, 0);
            prop_assert_eq!(f.stats().forced, 0);
        }
    }
}

fn now() -> u64 {
    chronicle_core::os::realtime_ns()
}

/// A writer on `root/name` ringing the doorbell shared by the scenario, `root/doorbell`.
fn belled_writer(root: &Path, name: &str) -> QueueWriter {
    let cfg = WriterConfig {
        doorbell: Some(root.join("doorbell")),
        ..small_writer()
    };
    QueueWriter::open(root.join(name), cfg).unwrap()
}

/// A live merger woken by the doorbell `root/doorbell`, with the given hold limit.
fn belled_live_reader(root: &Path, max_hold: Option<Duration>) -> FanInReader {
    FanInReader::new(FanInConfig {
        mode: MergeMode::Live,
        max_hold,
        doorbell: Some(root.join("doorbell")),
        ..FanInConfig::default()
    })
    .unwrap()
}

/// Belled writers `a` and `b` and a live merger over both with no hold limit.
fn belled_pair(root: &Path) -> (QueueWriter, QueueWriter, FanInReader, SourceId, SourceId) {
    let a = belled_writer(root, "a");
    let b = belled_writer(root, "b");
    let mut f = belled_live_reader(root, None);
    let ida = f.add_source("a", root.join("a")).unwrap();
    let idb = f.add_source("b", root.join("b")).unwrap();
    (a, b, f, ida, idb)
}

/// Waits (with a watchdog) until `next` yields a record; returns (source, seq, ts).
fn next_within(f: &mut FanInReader, limit: Duration) -> Option<(SourceId, u64, u64)> {
    let end = Instant::now() + limit;
    loop {
        if let Some(m) = f.next().unwrap() {
            return Some((m.source(), m.seq(), m.timestamp_ns()));
        }
        if Instant::now() >= end {
            return None;
        }
        f.wait(Duration::from_millis(5)).unwrap();
    }
}

#[test]
fn live_mode_waits_for_an_idle_sources_watermark() {
    let d = tempfile::tempdir().unwrap();
    let (mut a, mut b, mut f, ida, idb) = belled_pair(d.path());
    b.heartbeat();
    a.append(1, b"x").unwrap();
    // B is alive and its watermark is behind A's record: held (no max_hold).
    assert!(f.next().unwrap().is_none());
    assert_eq!(
        f.wait(Duration::from_millis(20)).unwrap(),
        FanInWaitOutcome::TimedOut
    );
    assert!(f.next().unwrap().is_none());
    // B heartbeats: the watermark passes the record, which is released.
    b.heartbeat();
    assert_eq!(
        f.wait(Duration::from_secs(5)).unwrap(),
        FanInWaitOutcome::Ready
    );
    let (src, seq, _) = next_within(&mut f, Duration::from_secs(5)).unwrap();
    assert_eq!((src, seq), (ida, 0));
    // B's record with an earlier timestamp than A's next one comes first, even if appended
    // later; a tie on the timestamp is broken by source id.
    let t = now() + 1_000_000;
    a.append_at(1, t + 10, b"a1").unwrap();
    b.append_at(2, t, b"b0").unwrap();
    b.append_at(2, t + 10, b"b1").unwrap();
    let mut got = Vec::new();
    // Until both watermarks pass t + 10, the last of the tied records is held: the other
    // source could still write (t + 10) with a smaller source id... so two come out first.
    for _ in 0..2 {
        let r = next_within(&mut f, Duration::from_secs(5)).expect("watchdog");
        got.push((r.0, r.1));
    }
    assert!(
        f.next().unwrap().is_none(),
        "tie held until the other watermark passes it"
    );
    while now() <= t + 10 {
        std::thread::sleep(Duration::from_millis(1));
    }
    a.heartbeat();
    b.heartbeat();
    let r = next_within(&mut f, Duration::from_secs(5)).expect("watchdog");
    got.push((r.0, r.1));
    let (lo, hi) = if ida < idb { (ida, idb) } else { (idb, ida) };
    // Both tied records are seq 1 of their queue (A: "x", "a1"; B: "b0", "b1").
    assert_eq!(got, vec![(idb, 0), (lo, 1), (hi, 1)]);
    assert_eq!(f.stats().forced, 0);
    assert_eq!(f.stats().late, 0);
    // A dead or closed idle source does not hold anything back (liveness probe).
    b.close().unwrap();
    a.append(1, b"after").unwrap();
    let r = next_within(&mut f, Duration::from_secs(5)).expect("closed source must not block");
    assert_eq!(r.0, ida);
    assert!(f.stats().probes >= 1);
}

#[test]
fn max_hold_releases_a_record_behind_a_silent_live_source() {
    let d = tempfile::tempdir().unwrap();
    let mut a = QueueWriter::open(d.path().join("a"), small_writer()).unwrap();
    let _b = QueueWriter::open(d.path().join("b"), small_writer()).unwrap(); // alive, never heartbeats
    let mut f = FanInReader::new(FanInConfig {
        mode: MergeMode::Live,
        max_hold: Some(Duration::from_millis(20)),
        ..FanInConfig::default()
    })
    .unwrap();
    let ida = f.add_source("a", d.path().join("a")).unwrap();
    f.add_source("b", d.path().join("b")).unwrap();
    let t0 = now();
    a.append(1, b"x").unwrap();
    assert!(
        f.next().unwrap().is_none(),
        "held while B may still write earlier records"
    );
    let (src, _, ts) = next_within(&mut f, Duration::from_secs(5)).expect("released by max_hold");
    assert_eq!(src, ida);
    assert!(now() >= ts + 20_000_000, "released before the hold passed");
    assert!(ts >= t0);
    assert_eq!(f.stats().forced, 1);
}

#[test]
fn committed_positions_resume_without_loss_or_duplicates() {
    let d = tempfile::tempdir().unwrap();
    let lists: Vec<Vec<u64>> = (0..4)
        .map(|i| (0..50).map(|k| 1_000 + k * 3 + i).collect())
        .collect();
    let (paths, reference) = write_sources(d.path(), &lists);
    let open = || {
        let mut f = FanInReader::new(FanInConfig {
            mode: MergeMode::Replay,
            reader_name: Some("router".into()),
            ..FanInConfig::default()
        })
        .unwrap();
        for (i, p) in paths.iter().enumerate() {
            f.add_source(&format!("s{i}"), p).unwrap();
        }
        f
    };
    let mut got = Vec::new();
    let mut f = open();
    // Commit after each of the first 70 records; then take 5 more without committing.
    for _ in 0..70 {
        let m = f.next().unwrap().unwrap();
        got.push((
            m.timestamp_ns(),
            m.source().0,
            m.seq(),
            m.payload().to_vec(),
        ));
        f.commit().unwrap();
    }
    for _ in 0..5 {
        f.next().unwrap().unwrap();
    }
    drop(f); // "crash": the 5 uncommitted records are delivered again
    let mut f = open();
    got.extend(drain(&mut f));
    assert_eq!(got, reference);
}

#[test]
fn sources_added_and_removed_while_merging() {
    let d = tempfile::tempdir().unwrap();
    let lists = vec![
        vec![10, 20, 30, 40],
        vec![11, 21, 31, 41],
        vec![12, 22, 32, 42],
    ];
    let (paths, _) = write_sources(d.path(), &lists);
    let mut f = FanInReader::new(FanInConfig {
        mode: MergeMode::Replay,
        ..FanInConfig::default()
    })
    .unwrap();
    let s0 = f.add_source("s0", &paths[0]).unwrap();
    let s1 = f.add_source("s1", &paths[1]).unwrap();
    assert!(matches!(
        f.add_source("s0", &paths[0]),
        Err(chronicle_bus::BusError::DuplicateSource { .. })
    ));
    assert!(
        f.add_source("gone", d.path().join("nope"))
            .unwrap_err()
            .is_gone()
    );
    let ts = |f: &mut FanInReader| f.next().unwrap().map(|m| m.timestamp_ns());
    assert_eq!(ts(&mut f), Some(10));
    assert_eq!(ts(&mut f), Some(11));
    // Drained removal: s0's remaining records still come out.
    f.remove_source(s0, true).unwrap();
    // Immediate removal: s1 stops now.
    f.remove_source(s1, false).unwrap();
    assert_eq!(f.len(), 1);
    // A late joiner with older records: emitted, flagged late.
    f.add_source("s2", &paths[2]).unwrap();
    let mut rest = Vec::new();
    while let Some(m) = f.next().unwrap() {
        rest.push((m.timestamp_ns(), m.late()));
    }
    assert_eq!(
        rest,
        vec![
            (12, false),
            (20, false),
            (22, false),
            (30, false),
            (32, false),
            (40, false),
            (42, false)
        ]
    );
    assert_eq!(f.len(), 1, "drained source dropped");
    assert_eq!(f.stats().drained, 1);
    assert!(f.remove_source(s0, false).is_err());
    // Late flag: a source whose records are older than what was emitted.
    let mut g = FanInReader::new(FanInConfig {
        mode: MergeMode::Replay,
        ..FanInConfig::default()
    })
    .unwrap();
    g.add_source("s1", &paths[1]).unwrap();
    assert_eq!(g.next().unwrap().map(|m| m.timestamp_ns()), Some(11));
    assert_eq!(g.next().unwrap().map(|m| m.timestamp_ns()), Some(21));
    g.add_source("s0", &paths[0]).unwrap();
    let m = g.next().unwrap().unwrap();
    assert_eq!((m.timestamp_ns(), m.late()), (10, true));
    assert_eq!(g.stats().late, 1);
}

/// A consumer that finishes records out of order commits each source only up to its first
/// unfinished record; a restart reads exactly the unfinished ones (and what follows) again.
#[test]
fn commit_with_holds_each_source_at_its_first_unfinished_record() {
    let dir = tempfile::tempdir().unwrap();
    let (paths, all) = write_sources(dir.path(), &[vec![10, 20, 30, 40], vec![15, 25, 35]]);
    let cfg = || FanInConfig {
        mode: MergeMode::Replay,
        reader_name: Some("r".into()),
        ..FanInConfig::default()
    };
    let s0 = SourceId::of("s0");
    let s1 = SourceId::of("s1");
    let mut f = FanInReader::new(cfg()).unwrap();
    f.add_source("s0", &paths[0]).unwrap();
    f.add_source("s1", &paths[1]).unwrap();
    // Take everything; s0's record 1 (ts 20) stays unfinished, s1 is all finished.
    let mut hold0 = None;
    let mut n = 0;
    while let Some(m) = f.next().unwrap() {
        if m.source() == s0 && m.seq() == 1 {
            hold0 = Some(m.position());
        }
        n += 1;
    }
    assert_eq!(n, all.len());
    let hold0 = hold0.unwrap();
    assert_eq!(hold0.next_seq, 1);
    f.commit_with(|id| if id == s0 { Some(hold0) } else { None })
        .unwrap();
    drop(f);
    let mut f = FanInReader::new(cfg()).unwrap();
    f.add_source("s0", &paths[0]).unwrap();
    f.add_source("s1", &paths[1]).unwrap();
    let again = drain(&mut f);
    let seqs: Vec<(u64, u64)> = again.iter().map(|r| (r.1, r.2)).collect();
    assert_eq!(seqs, vec![(s0.0, 1), (s0.0, 2), (s0.0, 3)]);
    // Now everything is finished: a plain commit_with persists the ends, nothing comes back.
    f.commit_with(|_| None).unwrap();
    drop(f);
    let mut f = FanInReader::new(cfg()).unwrap();
    f.add_source("s0", &paths[0]).unwrap();
    f.add_source("s1", &paths[1]).unwrap();
    assert!(drain(&mut f).is_empty());
    assert!(
        f.sources()
            .all(|(id, _, next)| next == if id == s1 { 3 } else { 4 })
    );
}

/// A writer that announced it is idle holds nobody, even with no `max_hold` and no heartbeat;
/// once it appends again (withdrawing the announcement) it is waited for like any live source.
#[test]
fn an_idle_writer_holds_nobody() {
    let d = tempfile::tempdir().unwrap();
    let (mut a, mut b, mut f, ida, idb) = belled_pair(d.path());
    b.idle();
    a.append(1, b"a0").unwrap();
    let r = f.next().unwrap().map(|m| (m.source(), m.seq()));
    assert_eq!(r, Some((ida, 0)), "released at once: B is idle");
    // B appends (the announcement is withdrawn; its record is stamped after A's) and stays
    // busy; A has nothing more to say and says so.
    a.idle();
    b.append(2, b"b0").unwrap();
    let r = next_within(&mut f, Duration::from_secs(5)).expect("watchdog");
    assert_eq!((r.0, r.1), (idb, 0));
    a.append(1, b"a1").unwrap();
    a.idle();
    assert!(
        f.next().unwrap().is_none(),
        "B is busy and silent: A's record waits"
    );
    assert_eq!(
        f.wait(Duration::from_millis(20)).unwrap(),
        FanInWaitOutcome::TimedOut
    );
    // B announces idle: that rings the doorbell and releases A's record.
    b.idle();
    assert_eq!(
        f.wait(Duration::from_secs(5)).unwrap(),
        FanInWaitOutcome::Ready
    );
    let r = next_within(&mut f, Duration::from_secs(5)).expect("watchdog");
    assert_eq!((r.0, r.1), (ida, 1));
    assert_eq!((f.stats().forced, f.stats().late), (0, 0));
    // A writer that died idle leaves the announcement up; its successor withdraws it first.
    drop(b);
    let mut b = belled_writer(d.path(), "b");
    b.append(2, b"b1").unwrap();
    b.idle();
    let r = next_within(&mut f, Duration::from_secs(5)).expect("watchdog");
    assert_eq!((r.0, r.1), (idb, 1));
}

/// Writers that append and announce idle at random, in their own threads, against a live merge
/// that never forces: the output is exactly the records sorted by (timestamp, source, seq), and
/// nothing is late.
#[test]
fn idle_announcements_keep_the_live_merge_exact() {
    use std::sync::{Arc, Barrier};
    let d = tempfile::tempdir().unwrap();
    const N: u64 = 3_000;
    let names = ["w0", "w1", "w2"];
    let mut writers: Vec<QueueWriter> = names.iter().map(|n| belled_writer(d.path(), n)).collect();
    for w in &mut writers {
        w.idle();
    }
    let mut f = belled_live_reader(d.path(), None);
    for n in names {
        f.add_source(n, d.path().join(n)).unwrap();
    }
    let start = Arc::new(Barrier::new(names.len() + 1));
    let handles: Vec<_> = writers
        .into_iter()
        .enumerate()
        .map(|(i, mut w)| {
            let start = Arc::clone(&start);
            std::thread::spawn(move || {
                let mut x = 0x9E37_79B9_7F4A_7C15u64 ^ (i as u64 + 1);
                start.wait();
                for k in 0..N {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    w.append(1, &k.to_le_bytes()).unwrap();
                    if x % 3 == 0 {
                        w.idle();
                    }
                    if x % 64 == 0 {
                        std::thread::sleep(Duration::from_micros(x % 200));
                    }
                }
                w.idle();
                w
            })
        })
        .collect();
    start.wait();
    let mut got = Vec::new();
    let end = Instant::now() + Duration::from_secs(120);
    while got.len() < (N as usize) * names.len() {
        assert!(Instant::now() < end, "watchdog: {} merged", got.len());
        match f.next().unwrap() {
            Some(m) => got.push(m.key()),
            None => {
                f.wait(Duration::from_millis(5)).unwrap();
            }
        }
    }
    let writers: Vec<QueueWriter> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    let mut sorted = got.clone();
    sorted.sort_unstable();
    assert_eq!(got, sorted, "merged out of key order");
    assert_eq!((f.stats().forced, f.stats().late), (0, 0));
    drop(writers);
}

/// With nothing held back, a merger waits for records only: heartbeats and idle announcements
/// of its sources do not wake it (they would make an idle router spin).
#[test]
fn wait_ignores_watermarks_while_nothing_is_held() {
    let d = tempfile::tempdir().unwrap();
    let mut a = belled_writer(d.path(), "a");
    let mut f = belled_live_reader(d.path(), FanInConfig::default().max_hold);
    f.add_source("a", d.path().join("a")).unwrap();
    a.heartbeat();
    a.idle();
    assert!(f.next().unwrap().is_none());
    assert_eq!(
        f.wait(Duration::from_millis(20)).unwrap(),
        FanInWaitOutcome::TimedOut
    );
    a.append(1, b"x").unwrap();
    assert_eq!(
        f.wait(Duration::from_secs(5)).unwrap(),
        FanInWaitOutcome::Ready
    );
}

/// A fan-in's saved source position past a tail that a power cut took (the pages of records
/// 90-99 never reached the disk): `SeqNotWritten` before the source's writer recovers, then
/// `HistoryRewritten` (recovery saw the position past the tail it found), also once the writer
/// has assigned those seqs again, whatever their sizes; never a merge from mid-record, never a
/// re-assigned seq merged as the old one.
#[test]
fn source_position_past_a_lost_tail_is_refused_not_resumed_mid_record() {
    use chronicle_bus::BusError;
    use chronicle_core::{Error, QueueReader, ReaderConfig};
    use std::os::unix::fs::FileExt;
    let dir = tempfile::tempdir().unwrap();
    let q = dir.path().join("q");
    let mut w = QueueWriter::open(&q, small_writer()).unwrap();
    for i in 0..100u64 {
        w.append_at(1, 1000 + i, &vec![i as u8; 10 + (i as usize % 40)])
            .unwrap();
    }
    w.close().unwrap();
    let cfg = || FanInConfig {
        reader_name: Some("merge".into()),
        ..FanInConfig::default()
    };
    {
        let mut f = FanInReader::new(cfg()).unwrap();
        f.add_source("s", &q).unwrap();
        assert_eq!(drain(&mut f).len(), 100);
        f.commit().unwrap();
    }
    // Where record 90 starts and the tail ends.
    let mut r = QueueReader::open(&q, ReaderConfig::default()).unwrap();
    for _ in 0..90 {
        r.next().unwrap().unwrap();
    }
    let from = r.position().offset;
    while r.next().unwrap().is_some() {}
    let to = r.position().offset;
    drop(r);
    let seg = q.join("segments/00000000000000000000.seg");
    let file = std::fs::OpenOptions::new().write(true).open(&seg).unwrap();
    file.write_all_at(&vec![0u8; (to - from) as usize], from)
        .unwrap();
    let mut f = FanInReader::new(cfg()).unwrap();
    match f.add_source("s", &q) {
        Err(BusError::Queue {
            source:
                Error::SeqNotWritten {
                    wanted_seq: 100,
                    next_seq: 90,
                },
            ..
        }) => {}
        other => panic!("expected SeqNotWritten {{ 100, 90 }}, got {other:?}"),
    }
    drop(f);
    let mut w = QueueWriter::open(&q, small_writer()).unwrap();
    assert_eq!(w.next_seq(), 90);
    let refused = || {
        let mut f = FanInReader::new(cfg()).unwrap();
        match f.add_source("s", &q) {
            Err(BusError::Queue {
                source:
                    Error::HistoryRewritten {
                        wanted_seq: 100,
                        rewritten_from: 90,
                        ..
                    },
                ..
            }) => {}
            other => panic!("expected HistoryRewritten at 100 from 90, got {other:?}"),
        }
    };
    refused();
    // The same sizes as before: seq 100 lands at exactly the saved offset.
    for i in 90..130u64 {
        let len = 10 + (i as usize % 40);
        assert_eq!(w.append_at(1, 2000 + i, &vec![7u8; len]).unwrap(), i);
    }
    w.close().unwrap();
    refused();
}
