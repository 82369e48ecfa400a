//! The checks behind the queue-engine fuzz targets, shared by `fuzz/fuzz_targets/*.rs` (included
//! with `#[path]`) and the property tests in `tests/hostile.rs`, so CI runs exactly what the
//! fuzzer runs. Each takes arbitrary bytes, plants them in a real queue, and drives the public
//! API over them: every call must return a typed error or valid data, never panic, and every
//! loop must end within its bound.
#![allow(dead_code, clippy::panic)]

use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use chronicle_core::testing::layout::{SEGMENT_HEADER_SIZE, segment_file_name};
use chronicle_core::{
    Preallocate, QueueDir, QueueReader, QueueWriter, ReaderConfig, StartAt, WriterConfig,
    check_tail, list_readers, remove_reader,
};

/// Segment size of the queues the checks build (the smallest allowed: fast to scan).
pub const SEGMENT_SIZE: u64 = 16 << 10;
/// Records written before the damage.
pub const RECORDS: u64 = 12;
/// Upper bound on the steps of any read loop: more than one step per 8-byte slot of a segment.
pub const STEP_BOUND: u64 = SEGMENT_SIZE / 8 + 64;

pub fn cfg() -> WriterConfig {
    WriterConfig {
        segment_size: SEGMENT_SIZE,
        index_stride: 1024,
        preallocate: Preallocate::Inline,
        ..WriterConfig::default()
    }
}

/// Payload of record `seq`: derivable from the seq, so a record read back can be checked.
pub fn payload(seq: u64) -> Vec<u8> {
    seq.to_le_bytes().repeat((seq % 7) as usize * 5 + 1)
}

/// A fresh queue with [`RECORDS`] records, closed.
pub fn filled_queue(root: &Path) -> PathBuf {
    let q = root.join("q");
    let mut w = QueueWriter::open(&q, cfg()).unwrap();
    for i in 0..RECORDS {
        w.append_at(i as u32, 1_000 + i, &payload(i)).unwrap();
    }
    w.close().unwrap();
    q
}

pub const STARTS: [StartAt; 8] = [
    StartAt::Earliest,
    StartAt::Latest,
    StartAt::Seq(0),
    StartAt::Seq(RECORDS / 2),
    StartAt::Seq(u64::MAX),
    StartAt::Timestamp(0),
    StartAt::Timestamp(1_000 + RECORDS / 2),
    StartAt::Timestamp(u64::MAX),
];

/// Reads to the end with `peek`/`next`/`skip_record`, bounded. With `strict`, every record
/// returned with a seq below [`RECORDS`] must be the one written (a CRC collision forged by a
/// coverage-guided fuzzer is not a bug, so the fuzz targets pass `false`).
pub fn drain(r: &mut QueueReader, strict: bool) {
    let mut last: Option<u64> = None;
    for _ in 0..STEP_BOUND {
        let peeked = match r.peek() {
            Ok(Some(m)) => Some(m.seq()),
            Ok(None) => None,
            Err(_) => {
                if r.skip_record().is_err() {
                    return;
                }
                continue;
            }
        };
        match r.next() {
            Ok(Some(m)) => {
                let s = m.seq();
                assert_eq!(Some(s), peeked, "next returned another record than peek");
                if let Some(l) = last {
                    assert!(s > l, "seq went backwards: {l} then {s}");
                }
                last = Some(s);
                if strict && s < RECORDS && m.payload() != AFTER_RECOVERY {
                    assert_eq!(m.payload(), &payload(s)[..], "record {s} altered");
                }
            }
            Ok(None) => return,
            Err(_) => {
                if r.skip_record().is_err() {
                    return;
                }
            }
        }
    }
    panic!("read loop did not end within {STEP_BOUND} steps");
}

/// Opens readers at every start position and drains them; errors are fine, panics are not.
pub fn read_everything(q: &Path, strict: bool) {
    for start in STARTS {
        if let Ok(mut r) = QueueReader::open(q, ReaderConfig::default().start(start)) {
            drain(&mut r, strict);
            let _ = r.seek(StartAt::Seq(RECORDS / 3));
            drain(&mut r, strict);
        }
    }
}

/// The read-only tail check, with the geometry a reader sees.
pub fn tail_check(q: &Path) {
    if let Ok(r) = QueueReader::open(q, ReaderConfig::default()) {
        let geom = r.geometry();
        let dir = QueueDir::new(q);
        let _ = check_tail(&dir, &geom, None);
        let _ = check_tail(&dir, &geom, Some(0));
        let _ = check_tail(&dir, &geom, Some(u64::MAX));
    }
}

/// Payload of the record appended after recovery (it may take the seq of a record that
/// recovery fenced off).
pub const AFTER_RECOVERY: &[u8] = b"after recovery";

/// Writer recovery over the damage, then one more append, then a full read.
pub fn recover_and_append(q: &Path, strict: bool) {
    if let Ok(mut w) = QueueWriter::open(q, cfg()) {
        let _ = w.append(7, AFTER_RECOVERY);
        let _ = w.close();
        read_everything(q, strict);
    }
}

/// `record_parse`: `data` overwrites a segment of a real queue (the data region after the
/// 128-byte header, or the whole file from offset 0 when the first byte is odd).
pub fn record_parse(data: &[u8], strict: bool) {
    let tmp = tempfile::tempdir().unwrap();
    let q = filled_queue(tmp.path());
    let seg = q.join("segments").join(segment_file_name(0));
    let (at, body) = match data.split_first() {
        Some((&sel, rest)) if sel & 1 == 1 => (0, rest),
        Some((_, rest)) => (SEGMENT_HEADER_SIZE, rest),
        None => (SEGMENT_HEADER_SIZE, data),
    };
    let room = (SEGMENT_SIZE - at) as usize;
    let body = &body[..body.len().min(room)];
    let f = std::fs::OpenOptions::new().write(true).open(&seg).unwrap();
    f.write_all_at(body, at).unwrap();
    drop(f);
    read_everything(&q, strict);
    tail_check(&q);
    recover_and_append(&q, strict);
}

/// `control_open`: `data` is the whole of `queue.meta`.
pub fn control_open(data: &[u8]) {
    let tmp = tempfile::tempdir().unwrap();
    let q = filled_queue(tmp.path());
    std::fs::write(q.join("queue.meta"), data).unwrap();
    read_everything(&q, false);
    tail_check(&q);
    if let Ok(r) = QueueReader::open(&q, ReaderConfig::named("r1")) {
        drop(r);
    }
    let _ = list_readers(&QueueDir::new(&q));
    recover_and_append(&q, false);
}

/// `reader_meta`: `data` is the whole of `readers/r1.meta`.
pub fn reader_meta(data: &[u8], strict: bool) {
    let tmp = tempfile::tempdir().unwrap();
    let q = filled_queue(tmp.path());
    let dir = QueueDir::new(&q);
    std::fs::write(dir.reader_meta("r1"), data).unwrap();
    let _ = list_readers(&dir);
    for start in [
        StartAt::Earliest,
        StartAt::Latest,
        StartAt::Seq(RECORDS / 2),
    ] {
        if let Ok(mut r) = QueueReader::open(&q, ReaderConfig::named("r1").start(start)) {
            let _ = r.position();
            drain(&mut r, strict);
            let _ = r.commit();
        }
        let _ = list_readers(&dir);
    }
    // A writer's retention looks at reader positions too.
    recover_and_append(&q, strict);
    let _ = remove_reader(&dir, "r1");
    let _ = list_readers(&dir);
}
