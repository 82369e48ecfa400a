//! `Preallocate::Pretouch`: the writer's own thread prepares the next segment a step at a time
//! in `QueueWriter::pretouch`, retires full segments and runs retention there; what is not ready
//! at a roll is finished by the append that rolls.
#![allow(clippy::unwrap_used)]

mod common;

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use chronicle_core::testing::layout::segment_file_name;
use chronicle_core::{
    Preallocate, QueueReader, QueueWriter, ReaderConfig, RetentionPolicy, StartAt, WriterConfig,
    check_tail,
};
use common::{new_queue, payload};

const SEGMENT: u64 = 1 << 20;

fn pretouch_cfg() -> WriterConfig {
    WriterConfig {
        segment_size: SEGMENT,
        preallocate: Preallocate::Pretouch,
        ..WriterConfig::default()
    }
}

fn segment(q: &Path, id: u64) -> PathBuf {
    q.join("segments").join(segment_file_name(id))
}

/// Calls `pretouch` until it says nothing is left; returns how many calls that took.
fn pretouch_all(w: &mut QueueWriter) -> u64 {
    let mut calls = 1;
    while w.pretouch().unwrap() {
        calls += 1;
        assert!(calls < 10_000, "pretouch never finishes");
    }
    calls
}

/// Appends until the writer is in segment `id`; returns the next seq.
fn append_into(w: &mut QueueWriter, id: u64) -> u64 {
    while w.tail().segment < id {
        let seq = w.next_seq();
        w.append(1, &payload(seq)).unwrap();
    }
    w.next_seq()
}

fn read_all(q: &Path) -> u64 {
    let mut r = QueueReader::open(q, ReaderConfig::default().start(StartAt::Earliest)).unwrap();
    let mut n = 0;
    while let Some(m) = r.next().unwrap() {
        assert_eq!(m.payload(), &payload(m.seq())[..]);
        n += 1;
    }
    n
}

#[test]
fn the_next_segment_is_prepared_in_steps_and_swapped_in_at_the_roll() {
    let (_dir, q, mut w) = new_queue(pretouch_cfg());
    assert!(!segment(&q, 1).exists(), "nothing prepared before pretouch");
    // One call per step of allocation: the first also creates the file, the last finishes it.
    let calls = pretouch_all(&mut w);
    assert_eq!(calls, SEGMENT / chronicle_core::PRETOUCH_STEP);
    // Held open, so its inode number cannot be reused by a file made anew.
    let held = std::fs::File::open(segment(&q, 1)).unwrap();
    let prepared = held.metadata().unwrap();
    assert_eq!(prepared.len(), SEGMENT);
    assert!(!w.pretouch().unwrap(), "nothing left once ready");
    // The roll swaps in that very file.
    let next = append_into(&mut w, 1);
    assert_eq!(
        std::fs::metadata(segment(&q, 1)).unwrap().ino(),
        prepared.ino()
    );
    // A retention pass, segment 2, then letting go of segment 0 are left to pretouch.
    assert!(w.pretouch().unwrap());
    pretouch_all(&mut w);
    assert!(segment(&q, 2).exists());
    w.close().unwrap();
    assert_eq!(read_all(&q), next);
}

#[test]
fn without_pretouch_calls_each_roll_prepares_inline() {
    let (_dir, q, mut w) = new_queue(pretouch_cfg());
    let next = append_into(&mut w, 3);
    assert!(!segment(&q, 4).exists(), "nothing is prepared ahead");
    w.close().unwrap();
    assert_eq!(read_all(&q), next);
}

#[test]
fn a_roll_finishes_a_half_prepared_segment() {
    let (_dir, q, mut w) = new_queue(pretouch_cfg());
    for _ in 0..3 {
        assert!(w.pretouch().unwrap());
    }
    let held = std::fs::File::open(segment(&q, 1)).unwrap();
    let half = held.metadata().unwrap();
    let next = append_into(&mut w, 1);
    assert_eq!(std::fs::metadata(segment(&q, 1)).unwrap().ino(), half.ino());
    w.close().unwrap();
    assert_eq!(read_all(&q), next);
}

/// A half-prepared segment has no magic: the tail check, readers and a later writer take it for
/// a segment not created yet. A clean close removes it; one left by a crash is replaced.
#[test]
fn a_half_prepared_segment_is_nobodys_business_and_gone_after_close() {
    let (_dir, q, mut w) = new_queue(pretouch_cfg());
    let written = append_into(&mut w, 0) + 10;
    for seq in 0..written {
        w.append(1, &payload(seq)).unwrap();
    }
    for _ in 0..3 {
        w.pretouch().unwrap();
    }
    assert!(segment(&q, 1).exists());
    let dir = chronicle_core::QueueDir::new(&q);
    let geom = w.geometry();
    let c = check_tail(&dir, &geom, Some(w.tail().segment)).unwrap();
    assert_eq!((c.tail_segment, c.next_seq, c.torn), (0, written, None));
    assert_eq!(read_all(&q), written);
    w.close().unwrap();
    assert!(
        !segment(&q, 1).exists(),
        "close removes a half-prepared segment"
    );

    // What a writer killed part way leaves: the file at full length, zeroes, no magic.
    std::fs::File::create(segment(&q, 1))
        .unwrap()
        .set_len(SEGMENT)
        .unwrap();
    let c = check_tail(&dir, &geom, Some(0)).unwrap();
    assert_eq!((c.tail_segment, c.next_seq, c.torn), (0, written, None));
    let mut w = QueueWriter::open(&q, pretouch_cfg()).unwrap();
    assert_eq!(w.next_seq(), written);
    let next = append_into(&mut w, 2);
    w.close().unwrap();
    assert_eq!(read_all(&q), next);
}

/// Unmapping a populated segment in one go takes milliseconds: `pretouch` lets go of a full one
/// 64 KiB at a time (msync first when the durability policy syncs), so no call takes long, and
/// only after the next segment is ready (readers let go of it right after the roll).
#[test]
fn a_full_segment_is_let_go_of_in_steps_after_the_next_one_is_ready() {
    use chronicle_core::Durability;
    for (durability, passes) in [
        (Durability::PageCache, 1),
        (Durability::EveryRecords(1_000_000), 2),
    ] {
        let (_dir, q, mut w) = new_queue(WriterConfig {
            durability,
            ..pretouch_cfg()
        });
        pretouch_all(&mut w);
        let next = append_into(&mut w, 1);
        let seg0 = segment(&q, 0).display().to_string();
        let mapped = || {
            std::fs::read_to_string("/proc/self/maps")
                .unwrap()
                .contains(&seg0)
        };
        // A retention pass, then segment 2 a step at a time, segment 0 still mapped.
        for _ in 0..1 + SEGMENT / chronicle_core::PRETOUCH_STEP {
            assert!(w.pretouch().unwrap());
        }
        assert!(segment(&q, 2).exists());
        assert!(
            mapped(),
            "{durability:?}: segment 0 let go of before segment 2 was ready"
        );
        let steps = passes * SEGMENT / (64 << 10);
        for step in 1..steps {
            assert!(w.pretouch().unwrap());
            assert!(
                mapped(),
                "{durability:?}: unmapped after {step} of {steps} steps"
            );
        }
        assert!(
            !w.pretouch().unwrap(),
            "{durability:?}: nothing left after {steps} steps"
        );
        assert!(
            !mapped(),
            "{durability:?}: still mapped after {steps} steps"
        );
        w.close().unwrap();
        assert_eq!(read_all(&q), next);
    }
}

#[test]
fn pretouch_retires_full_segments_and_runs_retention() {
    let cfg = WriterConfig {
        retention: RetentionPolicy {
            max_bytes: Some(2 * SEGMENT),
            ..RetentionPolicy::default()
        },
        ..pretouch_cfg()
    };
    let (_dir, q, mut w) = new_queue(cfg);
    for id in 1..=5 {
        append_into(&mut w, id);
        pretouch_all(&mut w);
    }
    let dir = chronicle_core::QueueDir::new(&q);
    let ids = dir.list_segments().unwrap();
    assert!(
        ids.first().is_some_and(|&oldest| oldest >= 3),
        "retention ran in pretouch: {ids:?}"
    );
    assert!(ids.contains(&6), "segment 6 prepared: {ids:?}");
    w.close().unwrap();
}

#[test]
fn pretouch_does_nothing_in_the_other_modes() {
    for mode in [Preallocate::Inline, Preallocate::Background] {
        let (_dir, q, mut w) = new_queue(WriterConfig {
            preallocate: mode,
            ..pretouch_cfg()
        });
        assert!(!w.pretouch().unwrap());
        if mode == Preallocate::Inline {
            assert!(!segment(&q, 1).exists());
        }
        w.close().unwrap();
    }
}
