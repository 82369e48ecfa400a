//! A real ENOSPC on a small tmpfs: typed error at roll time, records intact, usable again once
//! space is freed. Needs root (mount); skipped with a message otherwise.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use std::path::Path;
use std::process::Command;

use chronicle_core::{Error, Preallocate, QueueReader, QueueWriter, ReaderConfig, WriterConfig};

fn mount_tmpfs(at: &Path, size: &str) -> bool {
    Command::new("mount")
        .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
        .arg(at)
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}

fn remount(at: &Path, size: &str) -> bool {
    Command::new("mount")
        .args(["-o", &format!("remount,size={size}")])
        .arg(at)
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}

struct Unmount<'a>(&'a Path);
impl Drop for Unmount<'_> {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(self.0).status();
    }
}

fn run(preallocate: Preallocate) {
    let dir = tempfile::tempdir().unwrap();
    if !mount_tmpfs(dir.path(), "1M") {
        eprintln!("SKIPPED disk-full test: cannot mount a tmpfs here (needs root)");
        if std::env::var("CI").is_ok_and(|v| v == "true") && unsafe_is_root() {
            panic!("running as root under CI but mount failed");
        }
        return;
    }
    let _guard = Unmount(dir.path());
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

fn unsafe_is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

#[test]
fn disk_full_at_roll_background() {
    run(Preallocate::Background);
}

#[test]
fn disk_full_at_roll_inline() {
    run(Preallocate::Inline);
}
