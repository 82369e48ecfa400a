//! Hostile input for the queue engine: the property-test twins of the fuzz targets in `fuzz/`
//! (same checks, from `tests/fuzz_checks/`), replays of the kept fuzz corpus, hostile reader
//! names and symlinked reader metas.
#![allow(clippy::unwrap_used, clippy::indexing_slicing)]

mod common;
mod fuzz_checks;

use chronicle_core::testing::layout::{CONTROL_MAGIC, FORMAT_VERSION, SEGMENT_HEADER_SIZE};
use chronicle_core::{Error, QueueDir, QueueReader, ReaderConfig, remove_reader};
use common::corpus;
use fuzz_checks::*;
use proptest::prelude::*;

/// Arbitrary bytes, biased towards the interesting: short, long, zero-filled and copies of a
/// real file with a few bytes changed.
fn bytes_like(real: Vec<u8>) -> impl Strategy<Value = Vec<u8>> {
    let n = real.len();
    prop_oneof![
        proptest::collection::vec(any::<u8>(), 0..64),
        proptest::collection::vec(any::<u8>(), 0..4096),
        (0usize..4096).prop_map(|n| vec![0u8; n]),
        proptest::collection::vec((0..n.max(1), any::<u8>()), 1..16).prop_map(move |edits| {
            let mut b = real.clone();
            for (i, v) in edits {
                if let Some(x) = b.get_mut(i) {
                    *x = v;
                }
            }
            b
        }),
        (0..n.max(1)).prop_map({
            let r = real_prefix_source();
            move |k| r[..k.min(r.len())].to_vec()
        }),
    ]
}

/// A real `queue.meta` (for truncation and mutation).
fn real_prefix_source() -> Vec<u8> {
    let tmp = tempfile::tempdir().unwrap();
    let q = filled_queue(tmp.path());
    std::fs::read(q.join("queue.meta")).unwrap()
}

fn real_reader_meta() -> Vec<u8> {
    let tmp = tempfile::tempdir().unwrap();
    let q = filled_queue(tmp.path());
    let mut r = QueueReader::open(&q, ReaderConfig::named("r1")).unwrap();
    r.next().unwrap();
    r.commit().unwrap();
    drop(r);
    std::fs::read(QueueDir::new(&q).reader_meta("r1")).unwrap()
}

/// The data region of a real segment (records as written), for mutation.
fn real_records() -> Vec<u8> {
    let tmp = tempfile::tempdir().unwrap();
    let q = filled_queue(tmp.path());
    let seg = std::fs::read(
        q.join("segments")
            .join(chronicle_core::testing::layout::segment_file_name(0)),
    )
    .unwrap();
    // Selector byte 0 (data region), then the records and some of the zeroed tail.
    let mut v = vec![0u8];
    v.extend_from_slice(&seg[SEGMENT_HEADER_SIZE as usize..1024]);
    v
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 128, .. ProptestConfig::default() })]

    /// `record_parse`: arbitrary or mutated record bytes in a segment; reads at every start
    /// position, `check_tail` and writer recovery give typed errors or the records written.
    #[test]
    fn record_parse_never_panics(data in bytes_like(real_records())) {
        record_parse(&data, true);
    }

    /// `control_open`: arbitrary, truncated or mutated `queue.meta`.
    #[test]
    fn control_open_never_panics(data in bytes_like(real_prefix_source())) {
        control_open(&data);
    }

    /// `reader_meta`: arbitrary, truncated or mutated `readers/<name>.meta`.
    #[test]
    fn reader_meta_never_panics(data in bytes_like(real_reader_meta())) {
        reader_meta(&data, true);
    }
}

/// A `queue.meta` that keeps the magic and version but has random geometry is refused or used
/// safely (the geometry checks are the only thing between it and the mapping code).
#[test]
fn control_open_with_valid_magic_and_random_geometry() {
    let mut rng = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = || {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng
    };
    let real = real_prefix_source();
    for _ in 0..48 {
        let mut b = real.clone();
        b[..8].copy_from_slice(&CONTROL_MAGIC.to_le_bytes());
        b[8..12].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
        // Scramble a few words of the first 128 bytes (the geometry and header fields).
        for _ in 0..4 {
            let at = 12 + (next() % 116) as usize;
            let v = next().to_le_bytes();
            let end = (at + 8).min(b.len());
            b[at..end].copy_from_slice(&v[..end - at]);
        }
        control_open(&b);
    }
}

fn replay(target: &str, check: impl Fn(&[u8])) {
    for (path, bytes) in corpus(target) {
        eprintln!("replaying {}", path.display());
        check(&bytes);
    }
}

/// The kept corpus of each fuzz target replays without a panic.
#[test]
fn corpus_record_parse() {
    replay("record_parse", |b| record_parse(b, false));
}

#[test]
fn corpus_control_open() {
    replay("control_open", control_open);
}

#[test]
fn corpus_reader_meta() {
    replay("reader_meta", |b| reader_meta(b, false));
}

/// Reader names that could escape `readers/`, hide, or break a terminal are refused with
/// `InvalidName` by `open` and `remove_reader`, and nothing is created.
#[test]
fn hostile_reader_names_are_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let q = filled_queue(tmp.path());
    let dir = QueueDir::new(&q);
    let long = "a".repeat(65);
    let bad: Vec<&str> = vec![
        "",
        ".",
        "..",
        "../x",
        "../../etc/passwd",
        "a/b",
        "/abs",
        ".hidden",
        "a\nb",
        "a\0b",
        "\x1b[2J",
        "a\tb",
        "a b",
        "é",
        &long,
    ];
    let before: Vec<_> = std::fs::read_dir(dir.readers()).unwrap().collect();
    for name in bad {
        match QueueReader::open(&q, ReaderConfig::named(name)) {
            Err(Error::InvalidName { name: n }) => assert_eq!(n, name),
            other => panic!("{name:?}: expected InvalidName, got {other:?}"),
        }
        match remove_reader(&dir, name) {
            Err(Error::InvalidName { .. }) => {}
            other => panic!("{name:?}: remove_reader gave {other:?}"),
        }
    }
    assert_eq!(
        std::fs::read_dir(dir.readers()).unwrap().count(),
        before.len()
    );
    assert!(!tmp.path().join("x.meta").exists());
    // The longest valid name works.
    let ok = "a".repeat(64);
    QueueReader::open(&q, ReaderConfig::named(ok.as_str())).unwrap();
    remove_reader(&dir, &ok).unwrap();
}

/// A reader meta replaced by a symlink to a file outside the queue is refused, never followed,
/// and the target is left untouched (by open, commit and remove alike).
#[test]
fn symlinked_reader_meta_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let q = filled_queue(tmp.path());
    let dir = QueueDir::new(&q);
    let outside = tempfile::tempdir().unwrap();
    let victim = outside.path().join("victim");
    std::fs::write(&victim, b"precious").unwrap();
    let meta = dir.reader_meta("r1");
    std::os::unix::fs::symlink(&victim, &meta).unwrap();
    assert!(QueueReader::open(&q, ReaderConfig::named("r1")).is_err());
    // Listing reports it as an error entry rather than reading through it.
    let listed = chronicle_core::list_readers(&dir).unwrap();
    assert_eq!(listed.len(), 1);
    assert!(listed[0].is_err(), "{listed:?}");
    assert_eq!(std::fs::read(&victim).unwrap(), b"precious");
    // Removing the reader removes the link, not the target.
    remove_reader(&dir, "r1").unwrap();
    assert!(std::fs::symlink_metadata(&meta).is_err());
    assert_eq!(std::fs::read(&victim).unwrap(), b"precious");
}

/// Writes seed inputs for the fuzz targets (real files of a fresh queue) into
/// `$CHRONICLE_FUZZ_SEEDS/<target>/`; see `fuzz/README.md`.
#[test]
#[ignore]
fn write_fuzz_seeds() {
    let Ok(out) = std::env::var("CHRONICLE_FUZZ_SEEDS") else {
        return;
    };
    let out = std::path::Path::new(&out);
    let seeds: [(&str, Vec<u8>); 3] = [
        ("record_parse", real_records()),
        ("control_open", real_prefix_source()),
        ("reader_meta", real_reader_meta()),
    ];
    for (target, bytes) in seeds {
        let d = out.join(target);
        std::fs::create_dir_all(&d).unwrap();
        std::fs::write(d.join("seed-real"), bytes).unwrap();
    }
}
