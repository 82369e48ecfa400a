//! Property tests: arbitrary bytes in, typed error (or valid data) out, never a panic.

mod common;

use std::os::unix::fs::FileExt;

use chronicle_core::testing::layout::{
    KIND_ABORTED, KIND_DATA, KIND_PAD, RecordKind, commit_word, decode_commit, record_crc,
    record_len,
};
use chronicle_core::{QueueReader, QueueWriter, ReaderConfig, StartAt, WriterConfig};
use common::new_queue;
use proptest::prelude::*;

fn cfg() -> WriterConfig {
    WriterConfig {
        segment_size: 64 << 10,
        index_stride: 1024,
        ..WriterConfig::default()
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, .. ProptestConfig::default() })]

    #[test]
    fn commit_words_round_trip(kind in prop_oneof![Just(KIND_DATA), Just(KIND_PAD), Just(KIND_ABORTED)], len in 0u32..(1 << 30)) {
        let (k, l) = decode_commit(commit_word(kind, len)).unwrap();
        prop_assert_eq!(l, len);
        prop_assert_eq!(k, match kind { KIND_DATA => RecordKind::Data, KIND_PAD => RecordKind::Pad, _ => RecordKind::Aborted });
    }

    #[test]
    fn record_len_aligned_and_sufficient(n in 0u64..(1 << 30)) {
        let l = record_len(n);
        prop_assert_eq!(l % 8, 0);
        prop_assert!(l >= 32 + n && l < 32 + n + 8);
    }

    #[test]
    fn crc_detects_any_single_bit_flip(covered in proptest::collection::vec(any::<u8>(), 24..280), bit in any::<usize>()) {
        let crc = record_crc(&covered);
        let mut flipped = covered.clone();
        let b = bit % (covered.len() * 8);
        flipped[b / 8] ^= 1 << (b % 8);
        prop_assert_ne!(record_crc(&flipped), crc);
    }

    /// Writes records, then overwrites a random window of a segment with random bytes; reading
    /// everything back either succeeds with intact records or fails with a typed error.
    #[test]
    fn random_segment_damage_never_panics(
        n in 1u64..300,
        at in 0u64..(64 << 10),
        junk in proptest::collection::vec(any::<u8>(), 1..512),
    ) {
        let (_dir, q, mut w) = new_queue(cfg());
        for i in 0..n {
            w.append(i as u32, &i.to_le_bytes().repeat((i % 20) as usize)).unwrap();
        }
        drop(w);
        let seg = q.join("segments").join(chronicle_core::testing::layout::segment_file_name(0));
        let f = std::fs::OpenOptions::new().write(true).open(&seg).unwrap();
        let at = at.min((64 << 10) - junk.len() as u64);
        f.write_all_at(&junk, at).unwrap();
        drop(f);
        for start in [StartAt::Earliest, StartAt::Latest, StartAt::Seq(n / 2), StartAt::Timestamp(0)] {
            let Ok(mut r) = QueueReader::open(&q, ReaderConfig::default().start(start)) else { continue };
            for _ in 0..(n + 10) {
                match r.next() {
                    Ok(Some(m)) => {
                        // Records that pass the CRC are the ones written.
                        let i = m.seq();
                        prop_assert_eq!(m.payload(), &i.to_le_bytes().repeat((i % 20) as usize)[..]);
                    }
                    Ok(None) => break,
                    Err(_) => {
                        if r.skip_record().is_err() { break; }
                    }
                }
            }
        }
        // The writer either recovers or refuses with a typed error.
        let _ = QueueWriter::open(&q, cfg());
    }

    /// Random bytes as queue.meta and as a reader meta: typed errors, no panic.
    #[test]
    fn random_meta_files_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..5000), keep_magic in any::<bool>()) {
        let dir = tempfile::tempdir().unwrap();
        let q = dir.path().join("q");
        drop(QueueWriter::open(&q, cfg()).unwrap());
        let mut b = bytes.clone();
        if keep_magic && b.len() >= 12 {
            b[..8].copy_from_slice(b"CHRQMETA");
            b[8..12].copy_from_slice(&1u32.to_le_bytes());
        }
        std::fs::write(q.join("queue.meta"), &b).unwrap();
        let _ = QueueReader::open(&q, ReaderConfig::default());
        let _ = QueueWriter::open(&q, cfg());

        let dir2 = tempfile::tempdir().unwrap();
        let q2 = dir2.path().join("q");
        drop(QueueWriter::open(&q2, cfg()).unwrap());
        let mut b = bytes;
        if keep_magic && b.len() >= 8 {
            b[..8].copy_from_slice(b"CHRQREAD");
        }
        std::fs::write(q2.join("readers").join("r.meta"), &b).unwrap();
        if let Ok(mut r) = QueueReader::open(&q2, ReaderConfig::named("r")) {
            let _ = r.next();
        }
        let _ = chronicle_core::list_readers(&chronicle_core::QueueDir::new(&q2));
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, .. ProptestConfig::default() })]

    /// Seeking to any sequence number or time lands on the right record, across segments.
    #[test]
    fn seek_lands_on_the_right_record(
        sizes in proptest::collection::vec(0usize..700, 50..1500),
        probes in proptest::collection::vec(any::<u64>(), 1..20),
    ) {
        let (_dir, q, mut w) = new_queue(cfg());
        let base = 1_700_000_000_000_000_000u64;
        // Timestamps step by 2 so odd probe times fall between records.
        for (i, &len) in sizes.iter().enumerate() {
            w.append_at(0, base + 2 * i as u64, &vec![i as u8; len]).unwrap();
        }
        let n = sizes.len() as u64;
        let mut r = QueueReader::open(&q, ReaderConfig::default()).unwrap();
        for p in probes {
            let s = p % n;
            r.seek(StartAt::Seq(s)).unwrap();
            let m = r.next().unwrap().unwrap();
            prop_assert_eq!(m.seq(), s);
            prop_assert_eq!(m.payload().len(), sizes[s as usize]);
            let t = base + p % (2 * n);
            r.seek(StartAt::Timestamp(t)).unwrap();
            let want = (t - base).div_ceil(2);
            match r.next().unwrap() {
                Some(m) => prop_assert_eq!(m.seq(), want),
                None => prop_assert_eq!(want, n),
            }
        }
    }
}
