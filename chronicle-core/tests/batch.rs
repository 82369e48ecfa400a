//! Batches: `QueueWriter::batch` (records committed one by one, published and woken once per
//! batch) and `QueueReader::drain` (what is there now, committed once).

use std::time::Duration;

mod common;

use chronicle_core::{CommitPolicy, Error, QueueReader, QueueWriter, ReaderConfig, WaitOutcome};
use common::{new_queue, payload, small_segments as small};

#[test]
fn records_are_visible_at_once_and_the_tail_is_published_when_the_batch_ends() {
    let (_dir, q, mut w) = new_queue(small());
    w.append(1, b"before").unwrap();
    let mut r = QueueReader::open(&q, ReaderConfig::default()).unwrap();
    assert_eq!(r.next().unwrap().unwrap().payload(), b"before");
    {
        let mut b = w.batch();
        assert!(b.is_empty());
        for i in 1..=3u64 {
            assert_eq!(b.append(2, &payload(i)).unwrap(), i);
        }
        assert_eq!(b.len(), 3);
        let ts = b.timestamp_ns();
        // Committed: a reader that polls sees each record before the batch ends ...
        for i in 1..=3u64 {
            let m = r.next().unwrap().unwrap();
            assert_eq!((m.seq(), m.type_id()), (i, 2));
            assert_eq!(m.payload(), &payload(i)[..]);
            assert_eq!(m.timestamp_ns(), ts, "one clock reading per batch");
        }
        assert!(r.next().unwrap().is_none());
        // ... but the tail in queue.meta still names the record before the batch.
        assert_eq!(r.tail().next_seq, 1);
        b.finish();
    }
    assert_eq!(r.tail().next_seq, 4);
    assert_eq!(w.next_seq(), 4);
    assert_eq!(w.append(1, b"after").unwrap(), 4);
    assert_eq!(r.next().unwrap().unwrap().payload(), b"after");
}

#[test]
fn a_batch_that_crosses_segments_keeps_every_record_in_order() {
    let (_dir, q, mut w) = new_queue(small());
    let mut r = QueueReader::open(&q, ReaderConfig::default()).unwrap();
    // 5000 records of 8-207 B span several 64 KiB segments in one batch.
    let mut b = w.batch();
    for i in 0..5000u64 {
        assert_eq!(b.append(7, &payload(i)).unwrap(), i);
    }
    drop(b);
    let segs = std::fs::read_dir(q.join("segments")).unwrap().count();
    assert!(segs > 5, "expected several segments, got {segs}");
    for i in 0..5000u64 {
        let m = r.next().unwrap().unwrap();
        assert_eq!(m.seq(), i);
        assert_eq!(m.payload(), &payload(i)[..]);
    }
    assert!(r.next().unwrap().is_none());
    assert_eq!(r.tail().next_seq, 5000);
    w.close().unwrap();
    // Reopened: recovery finds exactly what the batch wrote.
    let w = QueueWriter::open(&q, small()).unwrap();
    assert_eq!(w.next_seq(), 5000);
}

#[test]
fn an_error_inside_a_batch_keeps_the_records_before_it() {
    let (_dir, q, mut w) = new_queue(small());
    let max = w.max_payload() as usize;
    {
        let mut b = w.batch();
        b.append(1, b"one").unwrap();
        let err = b.append(1, &vec![0u8; max + 1]).unwrap_err();
        assert!(matches!(err, Error::PayloadTooLarge { .. }), "{err:?}");
        b.append(1, b"two").unwrap();
    }
    let mut r = QueueReader::open(&q, ReaderConfig::default()).unwrap();
    assert_eq!(r.next().unwrap().unwrap().payload(), b"one");
    assert_eq!(r.next().unwrap().unwrap().payload(), b"two");
    assert!(r.next().unwrap().is_none());
    assert_eq!(r.tail().next_seq, 2);
}

#[test]
fn a_sleeping_reader_is_woken_by_the_end_of_a_batch() {
    let (_dir, q, mut w) = new_queue(small());
    let mut r = QueueReader::open(&q, ReaderConfig::default()).unwrap();
    let reader = std::thread::spawn(move || {
        let mut got = Vec::new();
        while got.len() < 64 {
            match r.wait(Duration::from_secs(30)).unwrap() {
                WaitOutcome::Ready => {
                    while let Some(m) = r.next().unwrap() {
                        got.push(m.seq());
                    }
                }
                other => panic!("reader not woken: {other:?}"),
            }
        }
        got
    });
    for round in 0..8u64 {
        std::thread::sleep(Duration::from_millis(5));
        let mut b = w.batch();
        for i in 0..8 {
            b.append(1, &payload(round * 8 + i)).unwrap();
        }
    }
    assert_eq!(reader.join().unwrap(), (0..64).collect::<Vec<_>>());
}

/// With `EveryRecords(4)`, a batch of 10 records is msynced once, at its end; the count
/// starts again after it. Read from the library's log of msyncs (feature `power-model`).
#[cfg(feature = "power-model")]
#[test]
fn every_records_durability_syncs_a_batch_once_at_its_end() {
    use chronicle_core::testing::powercut;
    use chronicle_core::{Durability, Preallocate, WriterConfig};
    powercut::enable();
    let dir = tempfile::tempdir().unwrap();
    let q = dir.path().join("q");
    let cfg = WriterConfig {
        durability: Durability::EveryRecords(4),
        preallocate: Preallocate::Inline,
        ..small()
    };
    let mut w = QueueWriter::open(&q, cfg.clone()).unwrap();
    let segments = q.join("segments");
    let segment_syncs = |d: &std::path::Path| {
        powercut::take_under(d)
            .into_iter()
            .filter(|s| s.path.extension().is_some_and(|e| e == "seg"))
            .count()
    };
    let _ = segment_syncs(&segments);
    {
        let mut b = w.batch();
        for i in 0..10u64 {
            b.append(1, &payload(i)).unwrap();
        }
        assert_eq!(segment_syncs(&segments), 0, "no sync inside the batch");
    }
    assert_eq!(
        segment_syncs(&segments),
        1,
        "one sync at the end of the batch"
    );
    for i in 0..3u64 {
        w.append(1, &payload(i)).unwrap();
    }
    assert_eq!(segment_syncs(&segments), 0);
    w.append(1, b"fourth").unwrap();
    assert_eq!(segment_syncs(&segments), 1);
    drop(w);
    let w = QueueWriter::open(&q, cfg).unwrap();
    assert_eq!(w.next_seq(), 14);
}

/// `QueueReader::drain`: what is there now, up to `max`, in order, and never a wait.
#[test]
fn drain_hands_out_what_is_there_up_to_max() {
    let (_dir, q, mut w) = new_queue(small());
    let mut r = QueueReader::open(&q, ReaderConfig::default()).unwrap();
    assert_eq!(r.drain(16, |_| panic!("nothing written yet")).unwrap(), 0);
    // 3000 records of 8-207 B span several 64 KiB segments.
    for i in 0..3000u64 {
        w.append(1, &payload(i)).unwrap();
    }
    let mut got = Vec::new();
    let mut take = |r: &mut QueueReader, max| {
        r.drain(max, |m| {
            assert_eq!(m.payload(), &payload(m.seq())[..]);
            got.push(m.seq());
        })
        .unwrap()
    };
    assert_eq!(take(&mut r, 0), 0);
    assert_eq!(take(&mut r, 1000), 1000);
    assert_eq!(take(&mut r, 5000), 2000);
    assert_eq!(take(&mut r, 5000), 0);
    assert_eq!(got, (0..3000).collect::<Vec<_>>());
    w.append(1, b"later").unwrap();
    assert_eq!(
        r.drain(8, |m| assert_eq!(m.payload(), b"later")).unwrap(),
        1
    );
}

/// With `CommitPolicy::OnNext`, `next` commits a record when the one after it is asked for;
/// `drain` commits once, after the last record it handed out was processed.
#[test]
fn drain_commits_once_after_the_last_record() {
    let (_dir, q, mut w) = new_queue(small());
    for i in 0..10u64 {
        w.append(1, &payload(i)).unwrap();
    }
    let on_next = |name: &str| {
        let mut c = ReaderConfig::named(name);
        c.commit = CommitPolicy::OnNext;
        c
    };
    // `next` five times: the fifth record is not committed yet.
    let mut r = QueueReader::open(&q, on_next("n")).unwrap();
    for _ in 0..5 {
        r.next().unwrap().unwrap();
    }
    drop(r);
    let mut r = QueueReader::open(&q, on_next("n")).unwrap();
    assert_eq!(r.next().unwrap().unwrap().seq(), 4);
    drop(r);
    // `drain` five: all five are.
    let mut r = QueueReader::open(&q, on_next("d")).unwrap();
    assert_eq!(r.drain(5, |_| {}).unwrap(), 5);
    drop(r);
    let mut r = QueueReader::open(&q, on_next("d")).unwrap();
    assert_eq!(r.next().unwrap().unwrap().seq(), 5);
    // A manual reader keeps its own pace: drain commits nothing for it.
    let mut m = QueueReader::open(&q, ReaderConfig::named("m")).unwrap();
    assert_eq!(m.drain(5, |_| {}).unwrap(), 5);
    drop(m);
    let mut m = QueueReader::open(&q, ReaderConfig::named("m")).unwrap();
    assert_eq!(m.next().unwrap().unwrap().seq(), 0);
}

/// A damaged record stops a drain with `next`'s error; the records before it stay consumed
/// and committed, and the reader stands at the damaged one.
#[test]
fn drain_stops_at_a_damaged_record() {
    use std::os::unix::fs::FileExt;
    let (_dir, q, mut w) = new_queue(small());
    for i in 0..3u64 {
        w.append(1, format!("record-{i}-marker").as_bytes())
            .unwrap();
    }
    w.close().unwrap();
    let seg = q
        .join("segments")
        .join(chronicle_core::testing::layout::segment_file_name(0));
    let bytes = std::fs::read(&seg).unwrap();
    let at = bytes
        .windows(15)
        .position(|b| b == b"record-2-marker")
        .unwrap();
    let f = std::fs::OpenOptions::new().write(true).open(&seg).unwrap();
    f.write_all_at(b"X", at as u64).unwrap();

    let mut c = ReaderConfig::named("d");
    c.commit = CommitPolicy::OnNext;
    let mut r = QueueReader::open(&q, c.clone()).unwrap();
    let mut seen = Vec::new();
    let err = r.drain(10, |m| seen.push(m.seq())).unwrap_err();
    assert!(matches!(err, Error::Corrupted { .. }), "{err:?}");
    assert_eq!(seen, vec![0, 1]);
    assert_eq!(r.next_seq(), 2);
    drop(r);
    let mut r = QueueReader::open(&q, c).unwrap();
    assert_eq!(r.next_seq(), 2, "records 0 and 1 were committed");
    assert!(r.next().is_err());
}
