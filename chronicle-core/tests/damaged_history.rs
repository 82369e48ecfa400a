//! Damage a power cut or a bad disk leaves behind, done by hand on the files (DESIGN.md sections
//! 2 and 8): a lost tail under a named reader's saved position, and damage confined to the oldest
//! segment. Readers get typed errors that say what happened or read on; never a record read from
//! the middle of another.
#![allow(clippy::unwrap_used, clippy::panic)]

mod common;

use std::fs::OpenOptions;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use chronicle_core::testing::layout::segment_file_name;
use chronicle_core::{
    Error, Position, QueueReader, QueueWriter, ReaderConfig, StartAt, WriterConfig,
};
use common::new_queue;

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

/// Opening named reader `name` fails with `HistoryRewritten` for its position `wanted`, saved
/// under epoch 0, the queue's history rewritten from `from` (epoch 1).
fn expect_rewritten(q: &Path, name: &str, wanted: u64, from: u64) {
    match QueueReader::open(q, ReaderConfig::named(name)) {
        Err(Error::HistoryRewritten {
            path,
            wanted_seq,
            rewritten_from,
            saved_epoch: 0,
            queue_epoch: 1,
        }) => {
            assert_eq!((wanted_seq, rewritten_from), (wanted, from), "{name}");
            assert!(path.ends_with(format!("readers/{name}.meta")), "{path:?}");
        }
        other => panic!("{name}: expected HistoryRewritten at {wanted}, got {other:?}"),
    }
}

fn zero(path: &Path, from: u64, to: u64) {
    let f = OpenOptions::new().write(true).open(path).unwrap();
    f.write_all_at(&vec![0u8; (to - from) as usize], from)
        .unwrap();
}

/// Issue 20, first behaviour: the pages holding records 990-999 never reached the disk; a named
/// reader had committed at seq 1000. Before the writer recovers it is told `SeqNotWritten`;
/// recovery sees positions past the recovered tail and records a rewrite of the history from
/// 990, after which every reader past 990 is told `HistoryRewritten`, before and after the
/// writer assigned those seqs again.
#[test]
fn named_reader_past_a_lost_tail_gets_seq_not_written_then_history_rewritten() {
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

    // Before the writer recovers, the reader past the tail is told the seq is not there.
    match QueueReader::open(&q, ReaderConfig::named("late")) {
        Err(Error::SeqNotWritten {
            wanted_seq: 1000,
            next_seq: 990,
        }) => {}
        other => panic!("expected SeqNotWritten {{ 1000, 990 }}, got {other:?}"),
    }
    // Recovery ends history at 990, below what readers saw: it records the rewrite.
    let w = QueueWriter::open(&q, WriterConfig::default()).unwrap();
    assert_eq!(w.next_seq(), 990);
    let h = w.history();
    assert_eq!(
        (h.epoch, h.rewritten_from, h.rewritten_floor),
        (1, 990, 990)
    );
    w.close().unwrap();
    expect_rewritten(&q, "late", 1000, 990);
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
    // Both readers that saw the old 990.. are refused.
    expect_rewritten(&q, "late", 1000, 990);
    expect_rewritten(&q, "mid", 995, 990);
    let _ = (seg, end);
    // A new reader reads the re-assigned records whole.
    let mut r = QueueReader::open(&q, ReaderConfig::default().start(StartAt::Seq(985))).unwrap();
    for seq in 985..1030 {
        let m = r.next().unwrap().unwrap();
        let generation = u8::from(seq >= 990);
        assert_eq!((m.seq(), m.payload()), (seq, &payload(seq, generation)[..]));
    }
    assert!(r.next().unwrap().is_none());
}

/// The case a check by place cannot see: records 50-99 are lost, the writer assigns 50..100
/// again to records of exactly the old sizes, so seq 60 lands at exactly the offset a named
/// reader saved for it. The reader saw the old 50-59, which no longer exist: it must be refused,
/// by the history epochs, not resumed on the new records as if they were the old ones.
#[test]
fn reassigned_seq_at_exactly_its_old_offset_is_refused() {
    let (_d, q, at) = queue_with(100, 1 << 20);
    let commit_at = |name: &str, n: u64| {
        let mut r = QueueReader::open(&q, ReaderConfig::named(name)).unwrap();
        for _ in 0..n {
            r.next().unwrap().unwrap();
        }
        r.commit().unwrap();
        assert_eq!(r.next_seq(), n);
    };
    commit_at("past", 60);
    commit_at("at", 50); // exactly at the rewrite point: saw nothing that is lost
    commit_at("before", 40);
    let (seg, from) = at[50];
    zero(&seg_path(&q, seg), from, at[99].1 + 4096);

    let mut w = QueueWriter::open(&q, WriterConfig::default()).unwrap();
    assert_eq!(w.next_seq(), 50);
    assert_eq!(w.history().epoch, 1);
    // Same sizes, other content: seq 60 is at the offset "past" saved.
    for seq in 50..100 {
        let mut p = payload(seq, 0);
        p.iter_mut().for_each(|b| *b ^= 0xa5);
        assert_eq!(w.append(2, &p).unwrap(), seq);
    }
    w.close().unwrap();
    {
        let r = QueueReader::open(&q, ReaderConfig::default().start(StartAt::Seq(60))).unwrap();
        assert_eq!(
            r.position().offset,
            at[60].1,
            "the test needs the same offset"
        );
    }
    expect_rewritten(&q, "past", 60, 50);
    // The others saw only what survived: they resume, and read the old then the new records.
    for (name, start) in [("at", 50u64), ("before", 40)] {
        let mut r = QueueReader::open(&q, ReaderConfig::named(name)).unwrap();
        for seq in start..100 {
            let m = r.next().unwrap().unwrap();
            let mut want = payload(seq, 0);
            if seq >= 50 {
                want.iter_mut().for_each(|b| *b ^= 0xa5);
            }
            assert_eq!((m.seq(), m.payload()), (seq, &want[..]), "{name}");
        }
        r.commit().unwrap();
        drop(r);
        // Positions committed under the new epoch resume (no false alarm).
        let r = QueueReader::open(&q, ReaderConfig::named(name)).unwrap();
        assert_eq!(r.next_seq(), 100);
    }
    // Resetting the refused reader (remove its meta) lets it start over.
    chronicle_core::remove_reader(&chronicle_core::QueueDir::new(&q), "past").unwrap();
    let r = QueueReader::open(&q, ReaderConfig::named("past").start(StartAt::Seq(60))).unwrap();
    assert_eq!(r.next_seq(), 60);
}

/// A named reader that was open when the writer recovered, placed before the rewrite point,
/// read only records that survived and then the new ones: its positions are valid under the
/// new history epoch, and it resumes after a reopen (no false alarm).
#[test]
fn reader_open_across_the_recovery_keeps_resuming() {
    let (_d, q, at) = queue_with(100, 1 << 20);
    let mut x = QueueReader::open(&q, ReaderConfig::named("x")).unwrap();
    for _ in 0..40 {
        x.next().unwrap().unwrap();
    }
    x.commit().unwrap();
    commit_past(&q, "gone", 70);
    let (seg, from) = at[50];
    zero(&seg_path(&q, seg), from, at[99].1 + 4096);
    for seq in 40..50 {
        assert_eq!(x.next().unwrap().unwrap().seq(), seq);
    }
    assert!(x.next().unwrap().is_none());
    x.commit().unwrap();
    let mut w = QueueWriter::open(&q, WriterConfig::default()).unwrap();
    assert_eq!((w.next_seq(), w.history().epoch), (50, 1));
    for seq in 50..80 {
        assert_eq!(w.append(2, &payload(seq, 1)).unwrap(), seq);
    }
    w.close().unwrap();
    for seq in 50..80 {
        let m = x.next().unwrap().unwrap();
        assert_eq!((m.seq(), m.payload()), (seq, &payload(seq, 1)[..]));
    }
    x.commit().unwrap();
    drop(x);
    let x = QueueReader::open(&q, ReaderConfig::named("x")).unwrap();
    assert_eq!(x.next_seq(), 80);
    expect_rewritten(&q, "gone", 70, 50);
}

/// Commits named reader `name` at seq `n` and closes it.
fn commit_past(q: &Path, name: &str, n: u64) {
    let mut r = QueueReader::open(q, ReaderConfig::named(name)).unwrap();
    for _ in 0..n {
        r.next().unwrap().unwrap();
    }
    r.commit().unwrap();
}

/// Only the published tail in `queue.meta` remembers the lost records (no named reader had
/// gone past the recovered tail): the rewrite is still recorded; a writer reopened after a clean
/// close records none (nor after a process crash: `tests/multiprocess.rs`).
#[test]
fn rewrite_is_recorded_from_the_published_tail_and_only_after_a_loss() {
    let (_d, q, at) = queue_with(100, 1 << 20);
    // A clean reopen: nothing lost, no rewrite.
    let mut w = QueueWriter::open(&q, WriterConfig::default()).unwrap();
    assert_eq!((w.next_seq(), w.history().epoch), (100, 0));
    w.append(1, &payload(100, 0)).unwrap();
    w.close().unwrap();
    // Records 90-100 lost; no named reader; queue.meta still says 101.
    let at: Vec<(u64, u64)> = at;
    let (seg, from) = at[90];
    zero(&seg_path(&q, seg), from, at[99].1 + 4096);
    let w = QueueWriter::open(&q, WriterConfig::default()).unwrap();
    assert_eq!(w.next_seq(), 90);
    let h = w.history();
    assert_eq!((h.epoch, h.rewritten_from), (1, 90));
    w.close().unwrap();
    // Reopening again records nothing more.
    let w = QueueWriter::open(&q, WriterConfig::default()).unwrap();
    assert_eq!(w.history().epoch, 1);
    w.close().unwrap();
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

const RETAINED_SEGMENT: u64 = 64 << 10;

/// 64 KiB segments, retention keeping two segments' worth.
fn retained_cfg() -> WriterConfig {
    WriterConfig {
        segment_size: RETAINED_SEGMENT,
        index_stride: 1024,
        retention: chronicle_core::RetentionPolicy {
            max_bytes: Some(2 * RETAINED_SEGMENT),
            ..chronicle_core::RetentionPolicy::default()
        },
        ..WriterConfig::default()
    }
}

/// Retention's unlinks are not fsynced: after a power cut a removed segment can be back (with
/// its content). It is not reachable (no PAD leads from it to the rest of the queue, whose
/// next older segment is gone): readers from `Earliest` start after the gap, a position in it
/// is `PositionLost` as before the cut, the writer keeps the oldest seq, and retention
/// removes it again.
#[test]
fn segment_removed_by_retention_and_back_after_a_cut_is_ignored() {
    use chronicle_core::RetentionPolicy;
    let dir = tempfile::tempdir().unwrap();
    let q = dir.path().join("q");
    // As `retained_cfg`, no reader holding retention back (their heartbeats age out at once).
    let cfg_no_readers = || WriterConfig {
        retention: RetentionPolicy {
            reader_ttl: std::time::Duration::ZERO,
            ..retained_cfg().retention
        },
        ..retained_cfg()
    };
    let mut w = QueueWriter::open(&q, retained_cfg()).unwrap();
    // A named reader in segment 1, which retention then removes once the reader is gone.
    let mut saved = Position::default();
    for seq in 0..3000u64 {
        w.append(1, &payload(seq, 0)).unwrap();
        if seq == 700 {
            let mut r = QueueReader::open(&q, ReaderConfig::named("old")).unwrap();
            while r.next().unwrap().is_some() {}
            r.commit().unwrap();
            saved = r.position();
            assert_eq!(saved.segment, 1, "{saved:?}");
        }
    }
    let copy1 = std::fs::read(seg_path(&q, 1)).unwrap();
    // The reader stops holding retention back (its heartbeat ages out: a zero TTL).
    w.close().unwrap();
    let mut w = QueueWriter::open(&q, cfg_no_readers()).unwrap();
    let rep = w.run_retention().unwrap();
    assert!(rep.deleted.contains(&1), "{rep:?}");
    let earliest = |q: &Path| {
        QueueReader::open(q, ReaderConfig::default().start(StartAt::Earliest))
            .unwrap()
            .next_seq()
    };
    let oldest = earliest(&q);
    w.close().unwrap();
    // The cut brings segment 1 back.
    std::fs::write(seg_path(&q, 1), &copy1).unwrap();
    assert_eq!(earliest(&q), oldest, "Earliest must start after the gap");
    match QueueReader::open(&q, ReaderConfig::named("old")) {
        Err(Error::PositionLost { wanted_seq, .. }) => assert_eq!(wanted_seq, saved.next_seq),
        other => panic!("expected PositionLost, got {other:?}"),
    }
    let mut w = QueueWriter::open(&q, cfg_no_readers()).unwrap();
    assert_eq!(earliest(&q), oldest);
    let rep = w.run_retention().unwrap();
    assert!(
        rep.deleted.contains(&1),
        "retention removes it again: {rep:?}"
    );
    assert!(!seg_path(&q, 1).exists());
    w.close().unwrap();
}

/// After a cut `queue.meta` can be an old version (only its creation was made durable): its
/// published tail names segment 0 and seq 0 while retention has removed segment 0 since. A
/// named reader saved in a later segment, opened before the writer recovers, resumes (it was
/// `PositionLost`: the seek passed over every segment past the stale tail's).
#[test]
fn saved_position_resumes_under_a_stale_published_tail() {
    let (_dir, q, mut w) = new_queue(retained_cfg());
    for seq in 0..3000u64 {
        w.append(1, &payload(seq, 0)).unwrap();
    }
    // The reader stops after the last record of segment 3: its position is segment 3's PAD
    // (restore then looks the seq up: no record at the saved offset).
    let base4 = {
        let f = std::fs::File::open(seg_path(&q, 4)).unwrap();
        let mut b = [0u8; 8];
        f.read_exact_at(&mut b, 40).unwrap();
        u64::from_le_bytes(b)
    };
    let mut r =
        QueueReader::open(&q, ReaderConfig::named("r").start(StartAt::Seq(base4 - 1))).unwrap();
    r.next().unwrap().unwrap();
    r.commit().unwrap();
    let saved = r.position();
    assert_eq!((saved.segment, saved.next_seq), (3, base4));
    drop(r);
    w.run_retention().unwrap();
    w.close().unwrap();
    assert!(!seg_path(&q, 0).exists());
    // The published tail as the writer's open left it: segment 0, offset 128, seq 0 (an even
    // seqlock word: a consistent, old publication).
    let meta = OpenOptions::new()
        .write(true)
        .open(q.join("queue.meta"))
        .unwrap();
    for (at, v) in [(136u64, 0u64), (144, 128), (152, 0)] {
        meta.write_all_at(&v.to_le_bytes(), at).unwrap();
    }
    let r = QueueReader::open(&q, ReaderConfig::named("r")).unwrap();
    assert_eq!(r.next_seq(), base4);
}
