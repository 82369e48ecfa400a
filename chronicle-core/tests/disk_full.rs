//! A real ENOSPC on a small tmpfs: typed error at roll time, records intact, usable again once
//! space is freed. Needs root (mount); skipped with a message otherwise.
#![allow(clippy::unwrap_used, clippy::panic)]

mod tmpfs;

use std::path::Path;

use chronicle_core::{Error, Preallocate, QueueReader, QueueWriter, ReaderConfig, WriterConfig};
use tmpfs::{mount_or_skip, remount};

fn run(preallocate: Preallocate) {
    let dir = tempfile::tempdir().unwrap();
    let Some(_guard) = mount_or_skip(dir.path(), "disk-full test") else {
        return;
    };
    let q = dir.path().join("q");
    let cfg = WriterConfig {
        segment_size: 256 << 10,
        index_stride: 4096,
        preallocate,
        ..WriterConfig::default()
    };
    let mut w = QueueWriter::open(&q, cfg).unwrap();
    let payload = [0x5Au8; 2000];
    let mut n = 0u64;
    let err = loop {
        match w.append(3, &payload) {
            Ok(s) => {
                assert_eq!(s, n);
                n += 1;
            }
            Err(e) => break e,
        }
        assert!(n < 10_000, "the tmpfs never filled up");
    };
    assert!(
        matches!(err, Error::StorageFull { .. }),
        "expected StorageFull, got {err:?}"
    );
    // Asking again fails the same way, and nothing is half-published.
    assert!(matches!(
        w.append(3, &payload),
        Err(Error::StorageFull { .. })
    ));
    let mut r = QueueReader::open(&q, ReaderConfig::default()).unwrap();
    let mut got = 0;
    while let Some(m) = r.next().unwrap() {
        assert_eq!(m.seq(), got);
        assert_eq!(m.payload(), &payload[..]);
        got += 1;
    }
    assert_eq!(got, n);
    // Free space: the queue continues where it stopped.
    assert!(remount(dir.path(), "4M"));
    assert_eq!(w.append(3, &payload).unwrap(), n);
    let m = loop {
        if let Some(m) = r.next().unwrap() {
            break (m.seq(), m.payload().to_vec());
        }
    };
    assert_eq!(m.0, n);
    drop(r);
    drop(w);
}

/// Mounts a 1 MiB tmpfs at `at`, or says why the test is skipped (failing instead when running
/// as root under CI, where the mount must work).
#[test]
fn disk_full_at_roll_background() {
    run(Preallocate::Background);
}

#[test]
fn disk_full_at_roll_inline() {
    run(Preallocate::Inline);
}

/// Fills the file system at `dir` to the last byte with a filler file.
fn fill_up(dir: &Path) -> std::path::PathBuf {
    use std::io::Write as _;
    let filler = dir.join("filler");
    let mut f = std::fs::File::create(&filler).unwrap();
    let block = vec![0xEEu8; 4096];
    loop {
        match f.write(&block) {
            Ok(0) => break,
            Ok(_) => continue,
            Err(e) if e.raw_os_error() == Some(libc::ENOSPC) => break,
            Err(e) => panic!("filling the tmpfs: {e}"),
        }
    }
    // Partial pages too.
    while f.write(&[0xEE]).is_ok_and(|n| n == 1) {}
    filler
}

#[test]
fn full_disk_gives_typed_errors_for_reader_metas_doorbells_and_new_queues() {
    let dir = tempfile::tempdir().unwrap();
    let Some(_guard) = mount_or_skip(dir.path(), "disk-full test") else {
        return;
    };
    let q = dir.path().join("q");
    let cfg = WriterConfig {
        segment_size: 128 << 10,
        index_stride: 4096,
        preallocate: Preallocate::Inline,
        ..WriterConfig::default()
    };
    let mut w = QueueWriter::open(&q, cfg.clone()).unwrap();
    for i in 0..10u32 {
        w.append(i, b"before the disk filled").unwrap();
    }
    let mut early = QueueReader::open(&q, ReaderConfig::named("early")).unwrap();
    let filler = fill_up(dir.path());
    // Each of these needs new blocks: a typed StorageFull naming the file, never SIGBUS.
    match QueueReader::open(&q, ReaderConfig::named("late")) {
        Err(Error::StorageFull { path }) => assert!(path.ends_with("readers/late.meta")),
        other => panic!("new reader meta on a full disk: {other:?}"),
    }
    assert!(
        !q.join("readers/late.meta").exists(),
        "a failed reader meta must not be left behind"
    );
    match chronicle_core::Doorbell::open_or_create(dir.path().join("bell"), 0o660) {
        Err(Error::StorageFull { .. }) => {}
        other => panic!("doorbell on a full disk: {other:?}"),
    }
    match QueueWriter::open(dir.path().join("q2"), cfg.clone()) {
        Err(Error::StorageFull { .. }) | Err(Error::Io { .. }) => {}
        other => panic!("new queue on a full disk: {other:?}"),
    }
    // What exists keeps working: the writer appends into its allocated segment, the early
    // reader reads and commits its position (its meta is allocated).
    w.append(99, b"after").unwrap();
    let mut n = 0;
    while let Some(m) = early.next().unwrap() {
        assert_eq!(m.seq(), n);
        n += 1;
    }
    assert_eq!(n, 11);
    early.commit().unwrap();
    // Space back: everything that failed now works.
    std::fs::remove_file(filler).unwrap();
    let _ = std::fs::remove_dir_all(dir.path().join("q2"));
    QueueReader::open(&q, ReaderConfig::named("late")).unwrap();
    chronicle_core::Doorbell::open_or_create(dir.path().join("bell"), 0o660).unwrap();
    QueueWriter::open(dir.path().join("q2"), cfg)
        .unwrap()
        .close()
        .unwrap();
}
