//! Hand-built torn records, flipped bits, truncated and foreign files: typed errors, no panics.
#![allow(clippy::unwrap_used)]

mod common;

use std::fs::OpenOptions;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use chronicle_core::testing::layout::{FORMAT_VERSION, KIND_DATA, commit_word, segment_file_name};
use chronicle_core::{
    Error, QueueReader, QueueWriter, ReaderConfig, RecoveryAction, Tail, WriterConfig,
};
use common::new_queue;

fn cfg() -> WriterConfig {
    WriterConfig {
        segment_size: 64 << 10,
        index_stride: 1024,
        ..WriterConfig::default()
    }
}

fn seg_path(q: &Path, id: u64) -> PathBuf {
    q.join("segments").join(segment_file_name(id))
}

fn write_at(path: &Path, off: u64, bytes: &[u8]) {
    let f = OpenOptions::new().write(true).open(path).unwrap();
    f.write_all_at(bytes, off).unwrap();
}

fn read_at(path: &Path, off: u64, len: usize) -> Vec<u8> {
    let f = std::fs::File::open(path).unwrap();
    let mut b = vec![0; len];
    f.read_exact_at(&mut b, off).unwrap();
    b
}

fn filled(n: u64) -> (tempfile::TempDir, PathBuf, Tail) {
    let (dir, q, mut w) = new_queue(cfg());
    for i in 0..n {
        w.append(1, format!("record-{i}").as_bytes()).unwrap();
    }
    drop(w);
    let tail = QueueReader::open(&q, ReaderConfig::default())
        .unwrap()
        .tail();
    (dir, q, tail)
}

fn read_all(q: &Path) -> Vec<(u64, Vec<u8>)> {
    let mut r = QueueReader::open(q, ReaderConfig::default()).unwrap();
    let mut v = Vec::new();
    while let Some(m) = r.next().unwrap() {
        v.push((m.seq(), m.payload().to_vec()));
    }
    v
}

#[test]
fn torn_record_is_fenced_off_and_appends_continue() {
    let (_d, q, tail) = filled(10);
    // A writer died after writing header fields and part of a 500-byte payload, before the
    // commit word. Inside the partial payload are bytes that look like commit words.
    let p = seg_path(&q, tail.segment);
    let mut junk = vec![0u8; 300];
    junk[4..8].copy_from_slice(&0xdead_beefu32.to_le_bytes()); // crc
    junk[8..16].copy_from_slice(&10u64.to_le_bytes()); // seq
    for off in (32..300).step_by(8) {
        junk[off..off + 4].copy_from_slice(&commit_word(KIND_DATA, 8).to_le_bytes());
    }
    write_at(&p, tail.offset, &junk);
    // Readers never return the torn record.
    let before = read_all(&q);
    assert_eq!(before.len(), 10);
    let mut w = QueueWriter::open(&q, cfg()).unwrap();
    match w.recovery_report().action {
        RecoveryAction::Unblocked {
            segment,
            offset,
            len,
        } => {
            assert_eq!((segment, offset), (tail.segment, tail.offset));
            assert!(len >= 300, "fenced {len} bytes");
        }
        other => panic!("expected Unblocked, got {other:?}"),
    }
    assert_eq!(w.next_seq(), 10);
    // Short records after the fence: the junk commit words must never be seen.
    for i in 10..20 {
        assert_eq!(w.append(1, b"x").unwrap(), i);
    }
    let after = read_all(&q);
    assert_eq!(after.len(), 20);
    for (i, (seq, _)) in after.iter().enumerate() {
        assert_eq!(*seq, i as u64);
    }
    assert_eq!(&after[..10], &before[..]);
}

#[test]
fn clean_tail_needs_no_action() {
    let (_d, q, _tail) = filled(10);
    let w = QueueWriter::open(&q, cfg()).unwrap();
    assert_eq!(w.recovery_report().action, RecoveryAction::NoAction);
    assert_eq!(w.recovery_report().next_seq, 10);
}

#[test]
fn flipped_payload_bit_is_a_crc_error_and_can_be_skipped() {
    let (_d, q, _tail) = filled(5);
    let p = seg_path(&q, 0);
    // Record 2 starts at 128 + 2 * record_len(8) = 128 + 2*40 = 208; flip a payload bit.
    let first = read_at(&p, 128 + 32, 8);
    assert_eq!(&first, b"record-0");
    let off = 128 + 2 * 40 + 32 + 3;
    let b = read_at(&p, off, 1)[0];
    write_at(&p, off, &[b ^ 0x10]);
    let mut r = QueueReader::open(&q, ReaderConfig::default()).unwrap();
    assert_eq!(r.next().unwrap().unwrap().seq(), 0);
    assert_eq!(r.next().unwrap().unwrap().seq(), 1);
    match r.next() {
        Err(Error::Corrupted { path, offset, what }) => {
            assert_eq!(path, p);
            assert_eq!(offset, 128 + 2 * 40);
            assert_eq!(what, "CRC mismatch");
        }
        other => panic!("expected Corrupted, got {other:?}"),
    }
    assert_eq!(r.skip_record().unwrap(), 1);
    assert_eq!(r.next().unwrap().unwrap().seq(), 3);
    // With CRC verification off, the damaged record is returned as is.
    let c = ReaderConfig {
        verify_crc: false,
        ..ReaderConfig::default()
    };
    let mut r = QueueReader::open(&q, c).unwrap();
    r.next().unwrap();
    r.next().unwrap();
    assert_eq!(r.next().unwrap().unwrap().seq(), 2);
}

#[test]
fn flipped_header_fields_are_detected() {
    for (field_off, what) in [
        (4u64, "CRC mismatch"),
        (16, "CRC mismatch"),
        (24, "CRC mismatch"),
        (8, "unexpected sequence number"),
    ] {
        let (_d, q, _tail) = filled(3);
        let p = seg_path(&q, 0);
        let off = 128 + 40 + field_off;
        let b = read_at(&p, off, 1)[0];
        write_at(&p, off, &[b ^ 0x01]);
        let mut r = QueueReader::open(&q, ReaderConfig::default()).unwrap();
        r.next().unwrap().unwrap();
        match r.next() {
            Err(Error::Corrupted {
                what: w, offset, ..
            }) => {
                assert_eq!(w, what, "field at +{field_off}");
                assert_eq!(offset, 128 + 40);
            }
            other => panic!("field +{field_off}: expected Corrupted, got {other:?}"),
        }
    }
}

#[test]
fn garbage_commit_words_are_typed_errors() {
    for word in [
        commit_word(0, 5),                       // kind 0 with a length
        commit_word(KIND_DATA, 1 << 29),         // longer than max payload
        commit_word(KIND_DATA, (64 << 10) - 64), // runs past the segment end
    ] {
        let (_d, q, _tail) = filled(3);
        let p = seg_path(&q, 0);
        write_at(&p, 128 + 40, &word.to_le_bytes());
        let mut r = QueueReader::open(&q, ReaderConfig::default()).unwrap();
        r.next().unwrap().unwrap();
        assert!(
            matches!(r.next(), Err(Error::Corrupted { .. })),
            "word {word:#x}"
        );
        // The writer refuses to guess either.
        assert!(matches!(
            QueueWriter::open(&q, cfg()),
            Err(Error::Corrupted { .. })
        ));
    }
}

#[test]
fn bad_control_files_give_typed_errors() {
    let (_d, q, _tail) = filled(3);
    let meta = q.join("queue.meta");
    let orig = std::fs::read(&meta).unwrap();
    // wrong magic
    write_at(&meta, 0, b"NOTMAGIC");
    assert!(matches!(
        QueueReader::open(&q, ReaderConfig::default()),
        Err(Error::Corrupted { offset: 0, .. })
    ));
    // magic 0: not yet initialized
    write_at(&meta, 0, &[0; 8]);
    assert!(matches!(
        QueueReader::open(&q, ReaderConfig::default()),
        Err(Error::NotYetInitialized { .. })
    ));
    // wrong version
    std::fs::write(&meta, &orig).unwrap();
    write_at(&meta, 8, &(FORMAT_VERSION + 1).to_le_bytes());
    match QueueReader::open(&q, ReaderConfig::default()) {
        Err(Error::VersionMismatch {
            found, expected, ..
        }) => assert_eq!((found, expected), (FORMAT_VERSION + 1, FORMAT_VERSION)),
        other => panic!("expected VersionMismatch, got {other:?}"),
    }
    // impossible geometry
    std::fs::write(&meta, &orig).unwrap();
    write_at(&meta, 16, &12345u64.to_le_bytes());
    assert!(matches!(
        QueueReader::open(&q, ReaderConfig::default()),
        Err(Error::Corrupted { .. })
    ));
    // truncated and empty
    std::fs::write(&meta, &orig[..100]).unwrap();
    assert!(matches!(
        QueueReader::open(&q, ReaderConfig::default()),
        Err(Error::Corrupted { .. })
    ));
    std::fs::write(&meta, b"").unwrap();
    assert!(matches!(
        QueueReader::open(&q, ReaderConfig::default()),
        Err(Error::NotYetInitialized { .. })
    ));
    // not a queue at all
    let empty = tempfile::tempdir().unwrap();
    assert!(matches!(
        QueueReader::open(empty.path(), ReaderConfig::default()),
        Err(Error::NotAQueue { .. })
    ));
    assert!(matches!(
        QueueReader::open(empty.path().join("missing"), ReaderConfig::default()),
        Err(Error::Io { .. })
    ));
}

#[test]
fn bad_segment_and_reader_files_give_typed_errors() {
    let (_d, q, _tail) = filled(3);
    let p = seg_path(&q, 0);
    let orig = std::fs::read(&p).unwrap();
    std::fs::write(&p, &orig[..4096]).unwrap();
    assert!(matches!(
        QueueReader::open(&q, ReaderConfig::default()),
        Err(Error::Corrupted { .. })
    ));
    std::fs::write(&p, &orig).unwrap();
    write_at(&p, 24, &[0xff; 8]); // queue uid
    assert!(matches!(
        QueueReader::open(&q, ReaderConfig::default()),
        Err(Error::Corrupted { offset: 24, .. })
    ));
    std::fs::write(&p, &orig).unwrap();
    // reader meta: truncated, and foreign
    {
        let mut r = QueueReader::open(&q, ReaderConfig::named("x")).unwrap();
        r.next().unwrap();
        r.commit().unwrap();
    }
    let rm = q.join("readers").join("x.meta");
    let meta = std::fs::read(&rm).unwrap();
    std::fs::write(&rm, &meta[..64]).unwrap();
    assert!(matches!(
        QueueReader::open(&q, ReaderConfig::named("x")),
        Err(Error::Corrupted { .. })
    ));
    std::fs::write(&rm, &meta).unwrap();
    write_at(&rm, 0, b"XXXXXXXX");
    assert!(matches!(
        QueueReader::open(&q, ReaderConfig::named("x")),
        Err(Error::Corrupted { offset: 0, .. })
    ));
    for bad in ["", "../x", "a/b", ".hidden", "x\n", &"n".repeat(65)] {
        assert!(
            matches!(
                QueueReader::open(&q, ReaderConfig::named(bad)),
                Err(Error::InvalidName { .. })
            ),
            "{bad:?}"
        );
    }
}

#[test]
fn garbage_position_in_reader_meta_falls_back_to_its_sequence() {
    let (_d, q, _tail) = filled(50);
    {
        let mut r = QueueReader::open(&q, ReaderConfig::named("x")).unwrap();
        for _ in 0..20 {
            r.next().unwrap();
        }
        r.commit().unwrap();
    }
    // Corrupt the committed offset (slot holding gen): both slots' offsets.
    let rm = q.join("readers").join("x.meta");
    write_at(&rm, 264 + 16, &13u64.to_le_bytes());
    write_at(&rm, 296 + 16, &13u64.to_le_bytes());
    let mut r = QueueReader::open(&q, ReaderConfig::named("x")).unwrap();
    assert_eq!(r.next().unwrap().unwrap().seq(), 20);
}

#[test]
fn symlinked_queue_files_are_refused() {
    let (_d, q, _tail) = filled(3);
    let outside = tempfile::tempdir().unwrap();
    // A segment replaced by a link to a file outside the queue: readers refuse to follow it.
    let seg = seg_path(&q, 0);
    let target = outside.path().join("victim");
    std::fs::copy(&seg, &target).unwrap();
    let original = std::fs::read(&target).unwrap();
    std::fs::remove_file(&seg).unwrap();
    std::os::unix::fs::symlink(&target, &seg).unwrap();
    match QueueReader::open(&q, ReaderConfig::default()) {
        Err(Error::Io { source, .. }) => assert_eq!(source.raw_os_error(), Some(libc::ELOOP)),
        other => panic!("expected ELOOP, got {other:?}"),
    }
    // Nor does the writer write through it.
    assert!(QueueWriter::open(&q, cfg()).is_err());
    assert_eq!(
        std::fs::read(&target).unwrap(),
        original,
        "the link target was modified"
    );
    // queue.meta as a link.
    let (_d2, q2, _t2) = filled(1);
    let meta = q2.join("queue.meta");
    let t2 = outside.path().join("meta");
    std::fs::copy(&meta, &t2).unwrap();
    std::fs::remove_file(&meta).unwrap();
    std::os::unix::fs::symlink(&t2, &meta).unwrap();
    assert!(QueueReader::open(&q2, ReaderConfig::default()).is_err());
    assert!(QueueWriter::open(&q2, cfg()).is_err());
}

#[test]
fn reader_opening_while_the_queue_is_being_created_gets_a_transient_error_or_a_valid_start() {
    // queue.meta is published before the first writer has published its tail: the tail words are
    // still zero. A reader starting at the end must not take offset 0 for a record position.
    let (_d, q, _tail) = filled(0);
    let meta = q.join("queue.meta");
    write_at(&meta, 136, &[0u8; 24]); // tail_segment, tail_offset, next_seq
    let mut r = QueueReader::open(
        &q,
        ReaderConfig::default().start(chronicle_core::StartAt::Latest),
    )
    .unwrap();
    assert!(r.next().unwrap().is_none());
    let mut w = QueueWriter::open(&q, cfg()).unwrap();
    w.append(1, b"first").unwrap();
    assert_eq!(r.next().unwrap().unwrap().payload(), b"first");
    drop(w);
    // No segment yet at all: "not initialized yet" (callers retry), not "corrupted".
    for e in std::fs::read_dir(q.join("segments")).unwrap() {
        std::fs::remove_file(e.unwrap().path()).unwrap();
    }
    match QueueReader::open(&q, ReaderConfig::default()) {
        Err(Error::NotYetInitialized { .. }) => {}
        other => panic!("expected NotYetInitialized, got {other:?}"),
    }
}

#[test]
fn every_queue_file_kind_refuses_a_symbolic_link() {
    let outside = tempfile::tempdir().unwrap();
    let victim = |name: &str| {
        let p = outside.path().join(name);
        std::fs::write(&p, b"not yours").unwrap();
        p
    };
    let untouched = |p: &Path| assert_eq!(std::fs::read(p).unwrap(), b"not yours", "{p:?}");
    let eloop = |e: Error| match e {
        Error::Io { source, .. } => {
            assert_eq!(source.raw_os_error(), Some(libc::ELOOP), "{source}")
        }
        other => panic!("expected ELOOP, got {other:?}"),
    };
    // writer.lock
    let (_d, q, _t) = filled(3);
    let t = victim("lock");
    std::fs::remove_file(q.join("writer.lock")).unwrap();
    std::os::unix::fs::symlink(&t, q.join("writer.lock")).unwrap();
    eloop(QueueWriter::open(&q, cfg()).unwrap_err());
    untouched(&t);
    // The tail segment's index: a seeking reader neither follows nor fails (an index only
    // speeds seeks up); the writer's recovery rebuilds it as a new regular file (unlinking the
    // link, never writing through it).
    let (_d, q, _t) = filled(3);
    let idx = q
        .join("index")
        .join(chronicle_core::testing::layout::index_file_name(0));
    let t = victim("idx");
    std::fs::remove_file(&idx).unwrap();
    std::os::unix::fs::symlink(&t, &idx).unwrap();
    let mut r = QueueReader::open(
        &q,
        ReaderConfig::default().start(chronicle_core::StartAt::Seq(2)),
    )
    .unwrap();
    assert_eq!(r.next().unwrap().unwrap().seq(), 2);
    QueueWriter::open(&q, cfg()).unwrap().close().unwrap();
    assert!(std::fs::symlink_metadata(&idx).unwrap().is_file());
    untouched(&t);
    // Doorbell: opening a link fails; a link planted at the temporary name of its creation is
    // unlinked, not written through.
    let bell = outside.path().join("bell");
    let t = victim("bell-target");
    std::os::unix::fs::symlink(&t, &bell).unwrap();
    eloop(chronicle_core::Doorbell::open(&bell).unwrap_err());
    assert!(chronicle_core::Doorbell::open_or_create(&bell, 0o660).is_err());
    untouched(&t);
    std::fs::remove_file(&bell).unwrap();
    let planted = bell.with_extension(format!("tmp.{}", std::process::id()));
    std::os::unix::fs::symlink(&t, &planted).unwrap();
    chronicle_core::Doorbell::open_or_create(&bell, 0o660).unwrap();
    untouched(&t);
    assert!(std::fs::symlink_metadata(&bell).unwrap().is_file());
}
