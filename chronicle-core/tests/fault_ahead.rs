//! An idle reader maps the pages ahead of its position into its own address space, so the
//! records that arrive next do not take page faults on their critical path. Observed through
//! the resident size of the reader's read-only mapping in /proc/self/smaps.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use std::path::Path;

use chronicle_core::{QueueDir, QueueReader, QueueWriter, ReaderConfig, WriterConfig};

/// Resident kB of this process's read-only shared mapping of `file`.
fn reader_rss_kb(file: &Path) -> u64 {
    let smaps = std::fs::read_to_string("/proc/self/smaps").unwrap();
    let name = file.to_str().unwrap();
    let mut in_vma = false;
    for line in smaps.lines() {
        let first = line.split_whitespace().next().unwrap_or("");
        if first.contains('-') && first.chars().all(|c| c.is_ascii_hexdigit() || c == '-') {
            let perms = line.split_whitespace().nth(1).unwrap_or("");
            in_vma = perms == "r--s" && line.ends_with(name);
        } else if in_vma {
            if let Some(kb) = line.strip_prefix("Rss:") {
                return kb.trim().trim_end_matches("kB").trim().parse().unwrap();
            }
        }
    }
    panic!("no read-only mapping of {name} in /proc/self/smaps");
}

#[test]
fn idle_reader_maps_the_pages_ahead() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("q");
    let cfg = WriterConfig {
        segment_size: 4 << 20,
        ..WriterConfig::default()
    };
    let mut w = QueueWriter::open(&path, cfg).unwrap();
    w.append(1, b"first").unwrap();
    let mut r = QueueReader::open(&path, ReaderConfig::default()).unwrap();
    assert_eq!(r.next().unwrap().unwrap().payload(), b"first");
    let seg = QueueDir::new(&path).segment(r.position().segment);
    let before = reader_rss_kb(&seg);
    // Idle polls: one page per poll, up to 256 KiB ahead of the position.
    for _ in 0..200 {
        assert!(r.next().unwrap().is_none());
    }
    let after = reader_rss_kb(&seg);
    assert!(
        after >= 256 && after > before,
        "resident before {before} kB, after {after} kB"
    );
    // And it stops there: further idle polls map nothing more.
    for _ in 0..200 {
        assert!(r.next().unwrap().is_none());
    }
    let later = reader_rss_kb(&seg);
    assert!(
        later <= 256 + 64 + 64,
        "resident {later} kB after 400 polls"
    );
    // Reading on moves the window: records past it are mapped as the reader goes.
    let big = vec![7u8; 60_000];
    for _ in 0..10 {
        w.append(2, &big).unwrap();
    }
    for _ in 0..10 {
        assert_eq!(r.next().unwrap().unwrap().payload().len(), big.len());
    }
    for _ in 0..200 {
        assert!(r.next().unwrap().is_none());
    }
    let moved = reader_rss_kb(&seg);
    assert!(
        moved >= 600 + 256,
        "resident {moved} kB after reading 600 kB"
    );
}
