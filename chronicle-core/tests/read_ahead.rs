//! What an idle reader prepares ahead of time: it maps the pages ahead of its position into its
//! own address space (so the records that arrive next do not take page faults on their critical
//! path), near the end of a segment opens the next one, and unmaps the segment it left. Observed
//! through the reader's read-only mappings in /proc/self/smaps.
#![allow(clippy::unwrap_used, clippy::panic)]

use std::path::Path;

use chronicle_core::{QueueDir, QueueReader, QueueWriter, ReaderConfig, WriterConfig, probe};

/// Resident kB of this process's read-only shared mapping of `file`.
fn reader_rss_kb(file: &Path) -> u64 {
    try_reader_rss_kb(file).unwrap_or_else(|| {
        panic!(
            "no read-only mapping of {} in /proc/self/smaps",
            file.display()
        )
    })
}

/// Like `reader_rss_kb`, `None` when there is no such mapping.
fn try_reader_rss_kb(file: &Path) -> Option<u64> {
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
                return Some(kb.trim().trim_end_matches("kB").trim().parse().unwrap());
            }
        }
    }
    None
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
        after >= 256 && after >= before,
        "resident before {before} kB, after {after} kB"
    );
    // And it stops there: further idle polls map nothing more.
    for _ in 0..200 {
        assert!(r.next().unwrap().is_none());
    }
    // (Compared with itself, not with a size: how much one fault maps differs between kernels.)
    let later = reader_rss_kb(&seg);
    assert!(
        later <= after,
        "resident {after} kB after 200 polls, {later} kB after 400"
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

/// The writer prepares segment 1 in the background; an idle reader near the end of segment 0
/// opens it ahead of the PAD. When that writer goes away before rolling and the next writer
/// prepares segment 1 afresh (a new file at the same path), the reader must follow the new file,
/// not the one it opened ahead.
#[test]
fn reader_opens_the_next_segment_ahead_and_notices_when_it_is_replaced() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("q");
    let cfg = WriterConfig {
        segment_size: 64 << 10,
        ..WriterConfig::default()
    };
    let qdir = QueueDir::new(&path);
    let seg1 = qdir.segment(1);
    let payload = |i: u32| i.to_le_bytes().repeat(16);
    let mut w = QueueWriter::open(&path, cfg.clone()).unwrap();
    w.append(1, &payload(0)).unwrap();
    // Prepared means published: the file appears before its header (the reader, finding a
    // header not yet valid, would wait thousands of polls before trying again).
    let geometry = probe::read_meta(&qdir).unwrap().geometry;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while probe::segment_header(&qdir, 1, &geometry).is_err() {
        assert!(
            std::time::Instant::now() < deadline,
            "segment 1 never prepared"
        );
        std::thread::sleep(std::time::Duration::from_millis(2));
    }
    let mut r = QueueReader::open(&path, ReaderConfig::default()).unwrap();
    assert_eq!(r.next().unwrap().unwrap().payload(), payload(0));
    // Idle polls: the fault-ahead window reaches the end of the 64 KiB segment within 16
    // polls; the next poll opens segment 1.
    for _ in 0..64 {
        assert!(r.next().unwrap().is_none());
    }
    assert!(
        try_reader_rss_kb(&seg1).is_some(),
        "the idle reader did not open segment 1 ahead"
    );
    drop(w);
    // The next writer replaces the prepared-but-unused segment 1 with its own file.
    let mut w = QueueWriter::open(&path, cfg).unwrap();
    let mut i = 1u32;
    while r.position().segment == 0 || i < 2000 {
        w.append(1, &payload(i)).unwrap();
        let got = r.next().unwrap().map(|m| m.payload().to_vec());
        assert_eq!(
            got,
            Some(payload(i)),
            "record {i} (reader in segment {})",
            r.position().segment
        );
        i += 1;
        assert!(i < 100_000, "never rolled");
    }
    assert!(r.position().segment >= 1);
    // The segment left behind is released and unmapped by idle polls, not on the way out.
    let left = QueueDir::new(&path).segment(r.position().segment - 1);
    for _ in 0..2000 {
        assert!(r.next().unwrap().is_none());
    }
    assert!(
        try_reader_rss_kb(&left).is_none(),
        "{} still mapped after the reader moved on and idled",
        left.display()
    );
}
