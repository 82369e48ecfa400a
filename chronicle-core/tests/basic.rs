//! Single-process behaviour of writer and reader.

mod common;

use std::time::Duration;

use chronicle_core::{
    Error, OnLost, Preallocate, QueueReader, QueueWriter, ReaderConfig, RetentionPolicy, StartAt,
    WaitOutcome, WriterConfig, WriterStatus,
};
use common::new_queue;

fn small() -> WriterConfig {
    WriterConfig {
        segment_size: 64 << 10,
        index_stride: 1024,
        ..WriterConfig::default()
    }
}

fn payload(seq: u64) -> Vec<u8> {
    let len = (seq % 97) as usize;
    (0..len)
        .map(|i| (seq as u8).wrapping_add(i as u8))
        .collect()
}

#[test]
fn append_and_read_back_across_segments() {
    let (_dir, q, mut w) = new_queue(small());
    let mut r = QueueReader::open(&q, ReaderConfig::default()).unwrap();
    assert!(r.next().unwrap().is_none());
    for i in 0..5000u64 {
        assert_eq!(w.append(7, &payload(i)).unwrap(), i);
    }
    let mut n = 0u64;
    let mut last_ts = 0;
    while let Some(m) = r.next().unwrap() {
        assert_eq!(m.seq(), n);
        assert_eq!(m.type_id(), 7);
        assert_eq!(m.payload(), &payload(n)[..]);
        assert!(m.timestamp_ns() >= last_ts);
        last_ts = m.timestamp_ns();
        n += 1;
    }
    assert_eq!(n, 5000);
    let segs = std::fs::read_dir(q.join("segments")).unwrap().count();
    assert!(segs > 5, "expected several segments, got {segs}");
}

#[test]
fn inline_preallocation_works_too() {
    let dir = tempfile::tempdir().unwrap();
    let q = dir.path().join("q");
    let cfg = WriterConfig {
        preallocate: Preallocate::Inline,
        ..small()
    };
    let mut w = QueueWriter::open(&q, cfg).unwrap();
    for i in 0..3000u64 {
        w.append(1, &payload(i)).unwrap();
    }
    let mut r = QueueReader::open(&q, ReaderConfig::default()).unwrap();
    let mut n = 0;
    while let Some(m) = r.next().unwrap() {
        assert_eq!(m.payload(), &payload(n)[..]);
        n += 1;
    }
    assert_eq!(n, 3000);
}

#[test]
fn zero_length_and_maximum_payloads() {
    let (_dir, q, mut w) = new_queue(small());
    let max = w.max_payload() as usize;
    assert_eq!(max, 16 << 10);
    w.append(1, &[]).unwrap();
    w.append(2, &vec![0xAB; max]).unwrap();
    match w.append(3, &vec![0; max + 1]) {
        Err(Error::PayloadTooLarge { len, max: m }) => {
            assert_eq!(len, max + 1);
            assert_eq!(m as usize, max);
        }
        other => panic!("expected PayloadTooLarge, got {other:?}"),
    }
    let mut r = QueueReader::open(&q, ReaderConfig::default()).unwrap();
    assert_eq!(r.next().unwrap().unwrap().payload().len(), 0);
    let m = r.next().unwrap().unwrap();
    assert_eq!(m.seq(), 1);
    assert!(m.payload().iter().all(|&b| b == 0xAB) && m.payload().len() == max);
    assert!(r.next().unwrap().is_none());
}

#[test]
fn default_geometry_allows_one_mebibyte_payloads() {
    let cfg = WriterConfig::default();
    assert!(cfg.effective_max_payload() >= 1 << 20);
}

#[test]
fn claim_commit_and_abandon() {
    let (_dir, q, mut w) = new_queue(small());
    {
        let mut c = w.claim(5, 100).unwrap();
        c.payload_mut().fill(0xEE);
        // dropped: abandoned
    }
    let mut c = w.claim(9, 16).unwrap();
    c.payload_mut().copy_from_slice(b"0123456789abcdef");
    assert_eq!(c.commit(), 0);
    let mut c = w.claim(9, 64).unwrap();
    c.payload_mut()[..3].copy_from_slice(b"xyz");
    assert_eq!(c.commit_truncated(3), 1);
    w.append(1, b"after").unwrap();
    let mut r = QueueReader::open(&q, ReaderConfig::default()).unwrap();
    let m = r.next().unwrap().unwrap();
    assert_eq!(
        (m.seq(), m.type_id(), m.payload()),
        (0, 9, &b"0123456789abcdef"[..])
    );
    assert_eq!(r.next().unwrap().unwrap().payload(), b"xyz");
    assert_eq!(r.next().unwrap().unwrap().payload(), b"after");
    assert!(r.next().unwrap().is_none());
}

/// The second half of a roll (retiring the old segment, retention, preparing the next) runs
/// once the record that caused the roll is published. When that record is a claim that gets
/// abandoned, the work still happens: at the next roll, or when the writer closes.
#[test]
fn rolls_whose_claim_is_abandoned_still_retire_their_segments() {
    let dir = tempfile::tempdir().unwrap();
    let q = dir.path().join("q");
    let seg = 256u64 << 10;
    let cfg = WriterConfig {
        segment_size: seg,
        retention: RetentionPolicy {
            max_bytes: Some(4 * seg),
            ..RetentionPolicy::default()
        },
        ..small()
    };
    let big = |i: u64| vec![i as u8; 60 << 10];
    let mut w = QueueWriter::open(&q, cfg.clone()).unwrap();
    let mut seq = 0u64;
    for _ in 0..40 {
        // Four 60 KiB records fill most of a 256 KiB segment...
        for _ in 0..4 {
            assert_eq!(w.append(1, &big(seq)).unwrap(), seq);
            seq += 1;
        }
        // ...so this claim rolls to the next one, and is then abandoned.
        let c = w.claim(2, 60 << 10).unwrap();
        drop(c);
    }
    let segments = || std::fs::read_dir(q.join("segments")).unwrap().count();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while segments() > 7 {
        assert!(
            std::time::Instant::now() < deadline,
            "retention never ran: {} segments",
            segments()
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    // Closed with the last roll's second half still pending.
    w.close().unwrap();
    let mut w = QueueWriter::open(&q, cfg).unwrap();
    assert_eq!(w.append(1, &big(seq)).unwrap(), seq);
    let mut r = QueueReader::open(&q, ReaderConfig::default()).unwrap();
    let first = r.next().unwrap().unwrap().seq();
    assert!(first > 0, "retention kept everything");
    let mut expect = first + 1;
    while let Some(m) = r.next().unwrap() {
        assert_eq!(m.seq(), expect);
        assert_eq!(m.payload(), &big(expect)[..]);
        expect += 1;
    }
    assert_eq!(expect, seq + 1);
}

#[test]
fn named_reader_resumes_after_its_committed_position() {
    let (_dir, q, mut w) = new_queue(small());
    for i in 0..1000u64 {
        w.append(1, &payload(i)).unwrap();
    }
    {
        let mut r = QueueReader::open(&q, ReaderConfig::named("strat-1")).unwrap();
        for i in 0..600u64 {
            assert_eq!(r.next().unwrap().unwrap().seq(), i);
        }
        r.commit().unwrap();
        // read more without committing: must be delivered again
        for _ in 0..10 {
            r.next().unwrap().unwrap();
        }
    }
    let mut r = QueueReader::open(&q, ReaderConfig::named("strat-1")).unwrap();
    assert_eq!(r.next().unwrap().unwrap().seq(), 600);
    // a second process/handle on the same name is refused while this one is open
    match QueueReader::open(&q, ReaderConfig::named("strat-1")) {
        Err(Error::ReaderInUse { .. }) => {}
        other => panic!("expected ReaderInUse, got {other:?}"),
    }
}

#[test]
fn seek_by_seq_and_time_and_latest() {
    let (_dir, q, mut w) = new_queue(small());
    let base = 1_000_000_000u64;
    for i in 0..4000u64 {
        w.append_at(1, base + i * 10, &payload(i)).unwrap();
    }
    let mut r = QueueReader::open(&q, ReaderConfig::default().start(StartAt::Seq(2345))).unwrap();
    assert_eq!(r.next().unwrap().unwrap().seq(), 2345);
    for target in [0u64, 1, 999, 1000, 3998, 3999] {
        r.seek(StartAt::Seq(target)).unwrap();
        assert_eq!(r.next().unwrap().unwrap().seq(), target);
    }
    r.seek(StartAt::Seq(4000)).unwrap();
    assert!(r.next().unwrap().is_none());
    assert!(matches!(
        r.seek(StartAt::Seq(4001)),
        Err(Error::SeqNotWritten { .. })
    ));
    for (t, want) in [
        (base, 0u64),
        (base + 5, 1),
        (base + 12_340, 1234),
        (base + 12_341, 1235),
    ] {
        r.seek(StartAt::Timestamp(t)).unwrap();
        assert_eq!(r.next().unwrap().unwrap().seq(), want, "time {t}");
    }
    r.seek(StartAt::Timestamp(0)).unwrap();
    assert_eq!(r.next().unwrap().unwrap().seq(), 0);
    r.seek(StartAt::Timestamp(u64::MAX)).unwrap();
    assert!(r.next().unwrap().is_none());
    let mut latest = QueueReader::open(&q, ReaderConfig::default().start(StartAt::Latest)).unwrap();
    assert!(latest.next().unwrap().is_none());
    w.append(1, b"new").unwrap();
    let m = latest.next().unwrap().unwrap();
    assert_eq!((m.seq(), m.payload()), (4000, &b"new"[..]));
}

#[test]
fn writer_reopen_continues_sequence() {
    let dir = tempfile::tempdir().unwrap();
    let q = dir.path().join("q");
    {
        let mut w = QueueWriter::open(&q, small()).unwrap();
        for i in 0..777u64 {
            w.append(1, &payload(i)).unwrap();
        }
        w.close().unwrap();
    }
    let mut w = QueueWriter::open(&q, small()).unwrap();
    assert_eq!(w.next_seq(), 777);
    assert_eq!(w.append(1, b"x").unwrap(), 777);
    match QueueWriter::open(&q, small()) {
        Err(Error::WriterLocked { pid, .. }) => assert_eq!(pid, Some(std::process::id())),
        other => panic!("expected WriterLocked, got {other:?}"),
    }
}

#[test]
fn wait_wakes_on_append_and_reports_closed_writer() {
    let (_dir, q, w) = new_queue(small());
    let mut r = QueueReader::open(&q, ReaderConfig::default()).unwrap();
    assert_eq!(r.writer_status(), WriterStatus::Alive);
    assert_eq!(
        r.wait(Duration::from_millis(20)).unwrap(),
        WaitOutcome::TimedOut
    );
    let t = std::thread::spawn(move || {
        let mut w = w;
        std::thread::sleep(Duration::from_millis(50));
        w.append(1, b"wake").unwrap();
        std::thread::sleep(Duration::from_millis(50));
        w.close().unwrap();
    });
    assert_eq!(r.wait(Duration::from_secs(30)).unwrap(), WaitOutcome::Ready);
    assert_eq!(r.next().unwrap().unwrap().payload(), b"wake");
    assert_eq!(
        r.wait(Duration::from_secs(30)).unwrap(),
        WaitOutcome::WriterGone(WriterStatus::Closed)
    );
    t.join().unwrap();
}

#[test]
fn capacity_cap_is_a_typed_error_and_records_stay_intact() {
    let dir = tempfile::tempdir().unwrap();
    let q = dir.path().join("q");
    let cfg = WriterConfig {
        capacity_bytes: Some(3 * (64 << 10)),
        ..small()
    };
    let mut w = QueueWriter::open(&q, cfg).unwrap();
    let mut written = 0u64;
    let err = loop {
        match w.append(1, &[1u8; 1000]) {
            Ok(s) => {
                assert_eq!(s, written);
                written += 1;
            }
            Err(e) => break e,
        }
        assert!(written < 1_000_000);
    };
    assert!(matches!(err, Error::CapacityExceeded { .. }), "{err:?}");
    let mut r = QueueReader::open(&q, ReaderConfig::default()).unwrap();
    let mut n = 0;
    while let Some(m) = r.next().unwrap() {
        assert_eq!(m.payload(), &[1u8; 1000][..]);
        n += 1;
    }
    assert_eq!(n, written);
}

#[test]
fn retention_waits_for_live_readers_and_lost_position_is_reported() {
    let dir = tempfile::tempdir().unwrap();
    let q = dir.path().join("q");
    let cfg = WriterConfig {
        retention: RetentionPolicy {
            max_bytes: Some(2 * (64 << 10)),
            max_age: None,
            reader_ttl: Duration::from_secs(3600),
        },
        preallocate: Preallocate::Inline,
        ..small()
    };
    let mut w = QueueWriter::open(&q, cfg).unwrap();
    let mut slow = QueueReader::open(&q, ReaderConfig::named("slow")).unwrap();
    for _ in 0..500 {
        w.append(1, &[2u8; 1000]).unwrap();
    }
    // The slow reader sits at seq 0: nothing may be deleted.
    let rep = w.run_retention().unwrap();
    assert!(rep.deleted.is_empty());
    assert_eq!(rep.held_by.as_ref().map(|h| h.1.as_str()), Some("slow"));
    assert!(std::fs::read_dir(q.join("segments")).unwrap().count() >= 7);
    // Let it consume everything; now retention trims to the cap.
    while slow.next().unwrap().is_some() {}
    slow.commit().unwrap();
    let rep = w.run_retention().unwrap();
    assert!(!rep.deleted.is_empty());
    assert!(rep.segments_remaining <= 2);
    // An anonymous reader from the earliest starts at the oldest retained record.
    let mut r = QueueReader::open(&q, ReaderConfig::default()).unwrap();
    let first = r.next().unwrap().unwrap().seq();
    assert!(first > 0);
    // A reader asking for a deleted seq gets a typed error, or the earliest if it asked for that.
    match QueueReader::open(&q, ReaderConfig::default().start(StartAt::Seq(0))) {
        Err(Error::PositionLost {
            wanted_seq: 0,
            oldest_seq: Some(o),
        }) => assert_eq!(o, first),
        other => panic!("expected PositionLost, got {other:?}"),
    }
    let mut cfg = ReaderConfig::default().start(StartAt::Seq(0));
    cfg.on_lost = OnLost::Earliest;
    let mut r = QueueReader::open(&q, cfg).unwrap();
    assert_eq!(r.next().unwrap().unwrap().seq(), first);
}

#[test]
fn eventfd_bridge_becomes_readable_on_append() {
    use std::os::fd::AsRawFd;
    let poll = |fd: i32, ms: i32| -> bool {
        let mut p = libc::pollfd {
            fd,
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd.
        let r = unsafe { libc::poll(&mut p, 1, ms) };
        r == 1 && p.revents & libc::POLLIN != 0
    };
    let (_dir, q, mut w) = new_queue(small());
    let mut r = QueueReader::open(&q, ReaderConfig::default()).unwrap();
    let b = chronicle_core::EventFdBridge::open(&q).unwrap();
    assert!(!poll(b.as_raw_fd(), 50), "no records yet");
    for round in 0..20u64 {
        let t = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(5));
            w.append(1, &round.to_le_bytes()).unwrap();
            w
        });
        assert!(
            poll(b.as_raw_fd(), 30_000),
            "round {round}: fd never became readable"
        );
        b.clear();
        w = t.join().unwrap();
        let m = r.next().unwrap().unwrap();
        assert_eq!(m.payload(), &round.to_le_bytes()[..]);
        assert!(r.next().unwrap().is_none());
    }
}

#[test]
fn polling_reader_keeps_its_heartbeat_fresh() {
    let (_dir, q, mut w) = new_queue(small());
    let mut r = QueueReader::open(&q, ReaderConfig::named("poller")).unwrap();
    let qd = chronicle_core::QueueDir::new(&q);
    let hb = || {
        chronicle_core::list_readers(&qd).unwrap()[0]
            .as_ref()
            .unwrap()
            .heartbeat_ns
    };
    let start = hb();
    // Idle polling only.
    let t = std::time::Instant::now();
    while t.elapsed() < Duration::from_millis(150) {
        assert!(r.next().unwrap().is_none());
    }
    let idle = hb();
    assert!(
        idle > start + 100_000_000,
        "idle polling did not refresh the heartbeat"
    );
    // Busy reading only (no idle polls, no commits).
    for i in 0..200_000u64 {
        w.append(1, &i.to_le_bytes()).unwrap();
    }
    let t = std::time::Instant::now();
    let mut n = 0;
    while t.elapsed() < Duration::from_millis(150) {
        for _ in 0..100 {
            if r.next().unwrap().is_some() {
                n += 1;
            }
        }
    }
    assert!(n > 0);
    let busy = hb();
    assert!(busy > idle, "busy reading did not refresh the heartbeat");
    let info = &chronicle_core::list_readers(&qd).unwrap()[0];
    assert!(info.as_ref().unwrap().in_use);
}

#[test]
fn durability_policies_sync_and_keep_data() {
    for d in [
        chronicle_core::Durability::EveryRecords(100),
        chronicle_core::Durability::Interval(Duration::from_millis(2)),
        chronicle_core::Durability::PageCache,
    ] {
        let dir = tempfile::tempdir().unwrap();
        let q = dir.path().join("q");
        let mut w = QueueWriter::open(
            &q,
            WriterConfig {
                durability: d,
                ..small()
            },
        )
        .unwrap();
        for i in 0..3000u64 {
            w.append(1, &payload(i)).unwrap();
        }
        w.sync().unwrap();
        w.close().unwrap();
        let mut r = QueueReader::open(&q, ReaderConfig::default()).unwrap();
        let mut n = 0;
        while let Some(m) = r.next().unwrap() {
            assert_eq!(m.payload(), &payload(n)[..]);
            n += 1;
        }
        assert_eq!(n, 3000, "{d:?}");
    }
}

#[test]
fn files_get_the_configured_mode() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let q = dir.path().join("q");
    let mut w = QueueWriter::open(
        &q,
        WriterConfig {
            file_mode: 0o640,
            ..small()
        },
    )
    .unwrap();
    w.append(1, b"x").unwrap();
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&q.join("queue.meta")), 0o640);
    assert_eq!(
        mode(
            &q.join("segments")
                .join(chronicle_core::testing::layout::segment_file_name(0))
        ),
        0o640
    );
    assert_eq!(mode(&q.join("segments")), 0o750);
    assert_eq!(mode(&q), 0o750);
    let _r = QueueReader::open(&q, ReaderConfig::named("m")).unwrap();
    assert_eq!(mode(&q.join("readers").join("m.meta")), 0o640);
}

#[test]
fn doorbell_wakes_a_consumer_of_many_queues() {
    let dir = tempfile::tempdir().unwrap();
    let bell = dir.path().join("doorbell");
    let cfg = WriterConfig {
        doorbell: Some(bell.clone()),
        ..small()
    };
    let qs: Vec<_> = (0..3).map(|i| dir.path().join(format!("q{i}"))).collect();
    let writers: Vec<_> = qs
        .iter()
        .map(|q| QueueWriter::open(q, cfg.clone()).unwrap())
        .collect();
    let mut readers: Vec<_> = qs
        .iter()
        .map(|q| QueueReader::open(q, ReaderConfig::default()).unwrap())
        .collect();
    let d = chronicle_core::Doorbell::open(&bell).unwrap();
    let producer = std::thread::spawn(move || {
        let mut writers = writers;
        for round in 0..30u64 {
            std::thread::sleep(Duration::from_millis(2));
            let i = (round % 3) as usize;
            writers[i].append(1, &round.to_le_bytes()).unwrap();
        }
        writers
    });
    let mut got = Vec::new();
    while got.len() < 30 {
        let ring = d.wait(Duration::from_secs(30), 0, 0, || {
            readers.iter().any(|r| r.has_next())
        });
        assert_eq!(
            ring,
            chronicle_core::DoorbellWaitOutcome::Ready,
            "doorbell never rang"
        );
        for r in readers.iter_mut() {
            while let Some(m) = r.next().unwrap() {
                got.push(u64::from_le_bytes(m.payload().try_into().unwrap()));
            }
        }
    }
    got.sort_unstable();
    assert_eq!(got, (0..30).collect::<Vec<_>>());
    drop(producer.join().unwrap());
}

#[test]
fn heartbeat_advances_the_watermark_of_an_idle_writer() {
    let (_dir, q, mut w) = new_queue(small());
    let r = QueueReader::open(&q, ReaderConfig::default()).unwrap();
    w.append_at(1, 1_000, b"old").unwrap();
    assert_eq!(r.watermark_ns(), 1_000);
    w.heartbeat();
    let wm = r.watermark_ns();
    assert!(
        wm > 1_000_000_000_000_000_000,
        "watermark is wall-clock time after a heartbeat"
    );
    // Records appended later are never stamped below the watermark.
    w.append(1, b"new").unwrap();
    let mut r = r;
    r.next().unwrap().unwrap();
    assert!(r.next().unwrap().unwrap().timestamp_ns() >= wm);
}

#[test]
fn peek_does_not_consume_and_survives_segment_changes() {
    let dir = tempfile::tempdir().unwrap();
    let mut w = QueueWriter::open(dir.path(), small()).unwrap();
    let mut r = QueueReader::open(dir.path(), ReaderConfig::named("p")).unwrap();
    assert!(r.peek().unwrap().is_none());
    // Enough records to cross several segment boundaries (PADs are followed by peek).
    for seq in 0..2_000u64 {
        w.append(7, &payload(seq)).unwrap();
    }
    for seq in 0..2_000u64 {
        let a = r.peek().unwrap().map(|m| (m.seq(), m.payload().to_vec()));
        let b = r.peek().unwrap().map(|m| (m.seq(), m.payload().to_vec()));
        assert_eq!(a, b);
        assert_eq!(a, Some((seq, payload(seq))));
        let m = r.next().unwrap().unwrap();
        assert_eq!((m.seq(), m.payload()), (seq, &payload(seq)[..]));
    }
    assert!(r.peek().unwrap().is_none());
    // A peeked record is forgotten by a seek and by skip_record.
    r.seek(StartAt::Seq(10)).unwrap();
    assert_eq!(r.peek().unwrap().unwrap().seq(), 10);
    r.seek(StartAt::Seq(20)).unwrap();
    assert_eq!(r.peek().unwrap().unwrap().seq(), 20);
    assert_eq!(r.skip_record().unwrap(), 1);
    assert_eq!(r.peek().unwrap().unwrap().seq(), 21);
    assert_eq!(r.next().unwrap().unwrap().seq(), 21);
    r.commit().unwrap();
    drop(r);
    // The committed position is after the last record returned by `next`, not by `peek`.
    let mut r = QueueReader::open(dir.path(), ReaderConfig::named("p")).unwrap();
    assert_eq!(r.peek().unwrap().unwrap().seq(), 22);
    r.heartbeat();
}

#[test]
fn a_stale_reader_stops_holding_retention_and_finds_its_position_lost_when_it_returns() {
    let dir = tempfile::tempdir().unwrap();
    let q = dir.path().join("q");
    let ttl = Duration::from_millis(300);
    let cfg = WriterConfig {
        retention: RetentionPolicy {
            max_bytes: Some(2 * (64 << 10)),
            max_age: None,
            reader_ttl: ttl,
        },
        preallocate: Preallocate::Inline,
        ..small()
    };
    let mut w = QueueWriter::open(&q, cfg.clone()).unwrap();
    // A reader that reads a little, commits, and goes away (its meta and position stay).
    let mut gone = QueueReader::open(&q, ReaderConfig::named("gone")).unwrap();
    w.append(1, &[1u8; 1000]).unwrap();
    gone.next().unwrap().unwrap();
    gone.commit().unwrap();
    drop(gone);
    // The writer is never blocked by it: it keeps appending while the reader holds segment 0.
    for _ in 0..500 {
        w.append(1, &[2u8; 1000]).unwrap();
    }
    let rep = w.run_retention().unwrap();
    let held = rep.held_by.clone();
    if held.is_some() {
        // Still within its TTL (the usual case right after it left): it holds segment 0.
        assert!(rep.deleted.is_empty(), "{rep:?}");
        assert_eq!(held.map(|h| h.1), Some("gone".to_string()));
    }
    // A hard capacity cap with a live holder is an error for the writer, never a wait.
    let capped = WriterConfig {
        capacity_bytes: Some(8 * (64 << 10)),
        ..cfg.clone()
    };
    let mut q2 = QueueWriter::open(dir.path().join("q2"), capped).unwrap();
    let _holder = QueueReader::open(dir.path().join("q2"), ReaderConfig::named("h")).unwrap();
    let err = loop {
        if let Err(e) = q2.append(1, &[3u8; 1000]) {
            break e;
        }
    };
    assert!(
        matches!(err, Error::CapacityExceeded { .. }),
        "expected CapacityExceeded, got {err:?}"
    );
    // Once its heartbeat is older than the TTL it no longer holds anything back.
    std::thread::sleep(ttl + Duration::from_millis(200));
    let rep = w.run_retention().unwrap();
    assert!(!rep.deleted.is_empty(), "{rep:?}");
    assert!(rep.held_by.is_none(), "{rep:?}");
    // Returning, it is told its position is gone (typed), or starts at the oldest if it asks.
    match QueueReader::open(&q, ReaderConfig::named("gone")) {
        Err(Error::PositionLost {
            wanted_seq: 1,
            oldest_seq: Some(o),
        }) => assert!(o > 1),
        other => panic!("expected PositionLost, got {other:?}"),
    }
    let mut cfg = ReaderConfig::named("gone");
    cfg.on_lost = OnLost::Earliest;
    let mut back = QueueReader::open(&q, cfg).unwrap();
    assert!(back.next().unwrap().unwrap().seq() > 1);
}
