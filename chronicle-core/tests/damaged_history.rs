//! Damage a power cut or a bad disk leaves behind, done by hand on the files (DESIGN.md sections
//! 2 and 8): a lost tail under a named reader's saved position, and damage confined to the oldest
//! segment. Readers get typed errors that say what happened or read on; never a record read from
//! the middle of another.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use std::fs::OpenOptions;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use chronicle_core::layout::segment_file_name;
use chronicle_core::{Error, QueueReader, QueueWriter, ReaderConfig, StartAt, WriterConfig};

fn seg_path(q: &Path, id: u64) -> PathBuf {
    q.join("segments").join(segment_file_name(id))
}

/// Payload of record `seq` in generation `gen` (a second generation re-assigns seqs with other
/// sizes and content).
fn payload(seq: u64, generation: u8) -> Vec<u8> {
    let len = match generation {
        0 => 8 + (seq * 37 % 120) as usize,
        _ => 200 + (seq * 13 % 90) as usize,
    };
    (0..len)
        .map(|i| (seq as u8) ^ (i as u8) ^ generation)
        .collect()
}

/// A queue of records 0..n (generation 0) and the (segment, offset) of each record.
fn queue_with(n: u64, segment_size: u64) -> (tempfile::TempDir, PathBuf, Vec<(u64, u64)>) {
    let dir = tempfile::tempdir().unwrap();
    let q = dir.path().join("q");
    let mut w = QueueWriter::open(
        &q,
        WriterConfig {
            segment_size,
            index_stride: 1024,
            ..WriterConfig::default()
        },
    )
    .unwrap();
    for seq in 0..n {
        assert_eq!(w.append(1, &payload(seq, 0)).unwrap(), seq);
    }
    w.close().unwrap();
    let mut r = QueueReader::open(&q, ReaderConfig::default()).unwrap();
    let mut at = Vec::new();
    // The position before `next` is the record's own only once a PAD has been followed: read
    // the record first, then take its start from the position after minus its length.
    while let Some(m) = r.next().unwrap() {
        let len = m.payload().len() as u64;
        let after = r.position();
        let total = (32 + len + 7) & !7;
        at.push((after.segment, after.offset - total));
    }
    assert_eq!(at.len() as u64, n);
    (dir, q, at)
}

fn zero(path: &Path, from: u64, to: u64) {
    let f = OpenOptions::new().write(true).open(path).unwrap();
    f.write_all_at(&vec![0u8; (to - from) as usize], from)
        .unwrap();
}

/// Issue 20, first behaviour: the pages holding records 990-999 never reached the disk; a named
/// reader had committed at seq 1000.
#[test]
fn named_reader_past_a_lost_tail_gets_seq_not_written_then_position_mismatch() {
    let (_d, q, at) = queue_with(1000, 1 << 20);
    {
        let mut r = QueueReader::open(&q, ReaderConfig::named("late")).unwrap();
        while r.next().unwrap().is_some() {}
        r.commit().unwrap();
        assert_eq!(r.next_seq(), 1000);
        // Another reader stopped at 995, inside the region about to be lost.
        let mut mid = QueueReader::open(&q, ReaderConfig::named("mid")).unwrap();
        for _ in 0..995 {
            mid.next().unwrap().unwrap();
        }
        mid.commit().unwrap();
        // And one at 980, before it.
        let mut early = QueueReader::open(&q, ReaderConfig::named("early")).unwrap();
        for _ in 0..980 {
            early.next().unwrap().unwrap();
        }
        early.commit().unwrap();
    }
    let (seg, from) = at[990];
    let end = {
        let (s, o) = at[999];
        assert_eq!(s, seg);
        o + ((32 + payload(999, 0).len() as u64 + 7) & !7)
    };
    zero(&seg_path(&q, seg), from, end);

    // Before the writer recovers, and after it did, the reader past the tail is told.
    for recovered in [false, true] {
        if recovered {
            let w = QueueWriter::open(&q, WriterConfig::default()).unwrap();
            assert_eq!(w.next_seq(), 990);
            w.close().unwrap();
        }
        match QueueReader::open(&q, ReaderConfig::named("late")) {
            Err(Error::SeqNotWritten {
                wanted_seq: 1000,
                next_seq: 990,
            }) => {}
            other => panic!("expected SeqNotWritten {{ 1000, 990 }}, got {other:?}"),
        }
    }
    // The reader before the lost region resumes exactly.
    {
        let mut early = QueueReader::open(&q, ReaderConfig::named("early")).unwrap();
        for seq in 980..990 {
            let m = early.next().unwrap().unwrap();
            assert_eq!((m.seq(), m.payload()), (seq, &payload(seq, 0)[..]));
        }
        assert!(early.next().unwrap().is_none());
    }

    // The writer assigns 990..1030 again, to records of other sizes.
    let mut w = QueueWriter::open(&q, WriterConfig::default()).unwrap();
    for seq in 990..1030 {
        assert_eq!(w.append(2, &payload(seq, 1)).unwrap(), seq);
    }
    w.close().unwrap();
    // Both readers that saw the old 990.. are refused, naming where their record now is.
    for (name, wanted, old_offset) in [("late", 1000u64, end), ("mid", 995, at[995].1)] {
        match QueueReader::open(&q, ReaderConfig::named(name)) {
            Err(Error::PositionMismatch {
                wanted_seq,
                found_segment,
                found_offset,
                ..
            }) => {
                assert_eq!(wanted_seq, wanted);
                assert_eq!(found_segment, seg);
                assert!(found_offset > old_offset, "{found_offset} {old_offset}");
            }
            other => panic!("{name}: expected PositionMismatch, got {other:?}"),
        }
    }
    // A new reader reads the re-assigned records whole.
    let mut r = QueueReader::open(&q, ReaderConfig::default().start(StartAt::Seq(985))).unwrap();
    for seq in 985..1030 {
        let m = r.next().unwrap().unwrap();
        let generation = u8::from(seq >= 990);
        assert_eq!((m.seq(), m.payload()), (seq, &payload(seq, generation)[..]));
    }
    assert!(r.next().unwrap().is_none());
}

/// A reader at the tail, at the end of a segment (its position is the PAD) or behind a record
/// a dead writer tore still resumes: the position leads to its record over non-DATA records.
#[test]
fn positions_at_the_tail_and_at_a_pad_still_resume() {
    let (_d, q, at) = queue_with(3000, 64 << 10);
    let last_of_seg0 = at.iter().rposition(|&(s, _)| s == 0).unwrap() as u64;
    {
        let mut pad = QueueReader::open(&q, ReaderConfig::named("pad")).unwrap();
        for _ in 0..=last_of_seg0 {
            pad.next().unwrap().unwrap();
        }
        pad.commit().unwrap();
        assert_eq!(pad.position().segment, 0);
        let mut tail = QueueReader::open(&q, ReaderConfig::named("tail")).unwrap();
        while tail.next().unwrap().is_some() {}
        tail.commit().unwrap();
    }
    let mut w = QueueWriter::open(&q, WriterConfig::default()).unwrap();
    w.append(1, &payload(3000, 0)).unwrap();
    w.close().unwrap();
    let mut pad = QueueReader::open(&q, ReaderConfig::named("pad")).unwrap();
    assert_eq!(pad.next().unwrap().unwrap().seq(), last_of_seg0 + 1);
    let mut tail = QueueReader::open(&q, ReaderConfig::named("tail")).unwrap();
    assert_eq!(tail.next().unwrap().unwrap().seq(), 3000);
}

/// Issue 20, second behaviour: segment 0 truncated to 4 KiB, segments 1-3 intact.
#[test]
fn damage_in_the_oldest_segment_stops_only_the_readers_that_run_into_it() {
    let (_d, q, at) = queue_with(2500, 64 << 10);
    let segs = at.last().unwrap().0;
    assert!(segs >= 3, "{segs} segments");
    let first_of = |s: u64| at.iter().position(|&(id, _)| id == s).unwrap() as u64;
    // A named reader with a position in segment 2, one in segment 0.
    for (name, upto) in [("in2", first_of(2) + 5), ("in0", 10)] {
        let mut r = QueueReader::open(&q, ReaderConfig::named(name)).unwrap();
        for _ in 0..upto {
            r.next().unwrap().unwrap();
        }
        r.commit().unwrap();
    }
    let p0 = seg_path(&q, 0);
    OpenOptions::new()
        .write(true)
        .open(&p0)
        .unwrap()
        .set_len(4096)
        .unwrap();

    let check_from = |r: &mut QueueReader, from: u64| {
        for seq in from..2500 {
            let m = r.next().unwrap().unwrap();
            assert_eq!((m.seq(), m.payload()), (seq, &payload(seq, 0)[..]));
        }
        assert!(r.next().unwrap().is_none());
    };
    let target = first_of(2) + 3;
    let mut r = QueueReader::open(&q, ReaderConfig::default().start(StartAt::Seq(target))).unwrap();
    check_from(&mut r, target);
    let mut r = QueueReader::open(&q, ReaderConfig::default().start(StartAt::Latest)).unwrap();
    assert!(r.next().unwrap().is_none());
    let mut r = QueueReader::open(&q, ReaderConfig::named("in2")).unwrap();
    check_from(&mut r, first_of(2) + 5);
    // A seq in segment 1 is reached from segment 1's own start.
    let target = first_of(1) + 1;
    let mut r = QueueReader::open(&q, ReaderConfig::default().start(StartAt::Seq(target))).unwrap();
    check_from(&mut r, target);
    // The writer appends on.
    let mut w = QueueWriter::open(&q, WriterConfig::default()).unwrap();
    assert_eq!(w.append(1, b"more").unwrap(), 2500);
    w.close().unwrap();

    // Readers that need segment 0 get a typed error naming it.
    let names_seg0 = |e: Error| match e {
        Error::Corrupted { path, .. } => assert_eq!(path, p0),
        other => panic!("expected Corrupted naming segment 0, got {other:?}"),
    };
    names_seg0(
        QueueReader::open(&q, ReaderConfig::default().start(StartAt::Earliest)).unwrap_err(),
    );
    names_seg0(QueueReader::open(&q, ReaderConfig::default().start(StartAt::Seq(5))).unwrap_err());
    names_seg0(QueueReader::open(&q, ReaderConfig::named("in0")).unwrap_err());
}
