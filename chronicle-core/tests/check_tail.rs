//! `check_tail`: the read-only tail check finds the true tail and torn bytes after it.

mod common;

use std::os::unix::fs::FileExt;

use chronicle_core::{QueueDir, QueueReader, QueueWriter, ReaderConfig, check_tail};
use common::{new_queue, small_inline_segments};

#[test]
fn clean_tail_then_torn_bytes_then_recovered() {
    let (_tmp, q, mut w) = new_queue(small_inline_segments());
    for i in 0..10u32 {
        w.append(i, &i.to_le_bytes()).unwrap();
    }
    let tail = w.tail();
    w.close().unwrap();
    let dir = QueueDir::new(&q);
    let geom = QueueReader::open(&q, ReaderConfig::default())
        .unwrap()
        .geometry();
    let c = check_tail(&dir, &geom, Some(tail.segment)).unwrap();
    assert_eq!((c.tail_segment, c.tail_offset), (tail.segment, tail.offset));
    assert_eq!(c.next_seq, 10);
    assert_eq!(c.records_walked, 10);
    assert_eq!(c.torn, None);

    // A writer that died mid-record leaves header bytes without a commit word.
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(dir.segment(tail.segment))
        .unwrap();
    f.write_all_at(&[0xAB; 12], tail.offset + 8).unwrap();
    let c = check_tail(&dir, &geom, Some(tail.segment)).unwrap();
    assert_eq!(c.torn, Some((tail.offset, 20)));

    // Recovery fences it; the check is clean again.
    let w = QueueWriter::open(&q, small_inline_segments()).unwrap();
    assert!(matches!(
        w.recovery_report().action,
        chronicle_core::RecoveryAction::Unblocked { .. }
    ));
    w.close().unwrap();
    let c = check_tail(&dir, &geom, Some(tail.segment)).unwrap();
    assert_eq!(c.torn, None);
    assert_eq!(c.next_seq, 10);
}
