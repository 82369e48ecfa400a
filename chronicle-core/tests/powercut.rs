//! Power-loss simulator (DESIGN.md section 8, "After a power loss").
//!
//! Each cut builds a queue with a writer and three named readers, in steps, remembering every
//! version of every file (a snapshot after each step) and every range the library made durable
//! (the `power-model` log of msync/fsync, see `chronicle_core::powercut`). The cut then composes
//! a disk image page by page (4 KiB): each page of each file is either its latest content or
//! any version at or after the last time it was made durable (a page never made durable may be
//! all zeroes) — lost suffixes, stale pages and zeroed pages, in segments, indexes, `queue.meta`
//! and reader metas, in any combination. On that image it checks:
//!
//! - recovery (opening the writer) succeeds, and every record the durability mode promises is
//!   there byte for byte; every record there is one that was written, in order, whole;
//! - a named reader opened before recovery resumes at a position it committed and returns only
//!   written records, whole, or is told (`SeqNotWritten`, `Corrupted` at a record with a lost
//!   page, which recovery then fences);
//! - each named reader resumes exactly at a position it committed, or gets `SeqNotWritten`
//!   (its position is past the recovered tail) — and once the writer has assigned the lost
//!   sequence numbers again (to records of other sizes), `PositionMismatch`; never a record
//!   read from the middle of another, never a re-assigned seq returned to a reader whose
//!   position says it saw the old one.
//!
//! `CHRONICLE_POWERCUT_CUTS` sets the number of cuts (CI runs the default), and
//! `CHRONICLE_POWERCUT_SEED` replays a run (each cut prints nothing unless it fails; the failure
//! message names the seed of the cut).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use chronicle_core::powercut;
use chronicle_core::{
    Durability, Error, Preallocate, QueueReader, QueueWriter, ReaderConfig, StartAt, WriterConfig,
};

const PAGE: usize = 4096;
const READERS: [&str; 3] = ["a", "b", "c"];

/// splitmix64: small, seeded, replayable.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
    fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
}

/// Payload of record `seq` written in generation `generation` (1: after the cut, larger, so
/// re-assigned seqs land at other offsets).
fn payload(seq: u64, generation: u8, len: usize) -> Vec<u8> {
    let mut v = seq.to_le_bytes().to_vec();
    v.push(generation);
    v.extend((0..len).map(|i| (seq as u8) ^ (i as u8).wrapping_mul(29) ^ generation));
    v
}

type Files = BTreeMap<PathBuf, Vec<u8>>;

/// Every regular file of the queue except the writer's lock file (not part of the data).
fn snapshot(q: &Path) -> Files {
    let mut out = Files::new();
    let mut dirs = vec![q.to_path_buf()];
    while let Some(d) = dirs.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let e = e.unwrap();
            let p = e.path();
            if e.file_type().unwrap().is_dir() {
                dirs.push(p);
            } else if p.file_name().unwrap() != "writer.lock" {
                let rel = p.strip_prefix(q).unwrap().to_path_buf();
                // A file may be removed between listing and reading (recovery, retention).
                if let Ok(b) = std::fs::read(&p) {
                    out.insert(rel, b);
                }
            }
        }
    }
    out
}

#[derive(Clone, Copy, Debug)]
enum Mode {
    PageCache,
    EveryRecords(u64),
}

/// What the run before the cut did.
struct History {
    /// `snaps[k]`: the files after step `k` (`snaps[0]`: right after the queue was created).
    snaps: Vec<Files>,
    /// Durable ranges: (index of the first snapshot taken after it, file, offset, bytes).
    durable: Vec<(usize, PathBuf, u64, Vec<u8>)>,
    /// Records appended: payload lengths by seq.
    lens: Vec<usize>,
    /// Seqs every record below which the mode promises durable.
    promised: u64,
    /// Each reader's committed positions (next seq).
    commits: BTreeMap<&'static str, Vec<u64>>,
    /// `PageCache`: no page is ever made durable, so pages of full segments may be lost too;
    /// a reader that runs into one gets `Corrupted` naming the file and offset.
    old_damage_possible: bool,
}

fn writer_config(mode: Mode) -> WriterConfig {
    WriterConfig {
        segment_size: 64 << 10,
        index_stride: 1024,
        durability: match mode {
            Mode::PageCache => Durability::PageCache,
            Mode::EveryRecords(n) => Durability::EveryRecords(n),
        },
        // On the appending thread: the msyncs of retired segments happen in a replayable order.
        preallocate: Preallocate::Inline,
        ..WriterConfig::default()
    }
}

fn run_before_cut(q: &Path, mode: Mode, rng: &mut Rng) -> History {
    let mut w = QueueWriter::open(q, writer_config(mode)).unwrap();
    let mut h = History {
        snaps: vec![snapshot(q)],
        durable: Vec::new(),
        lens: Vec::new(),
        promised: 0,
        commits: BTreeMap::new(),
        old_damage_possible: matches!(mode, Mode::PageCache),
    };
    let mut readers: Vec<(&'static str, QueueReader)> = Vec::new();
    let steps = 4 + rng.below(12);
    for _ in 0..steps {
        // A reader joins (its meta is created and synced once).
        if readers.len() < READERS.len() && rng.chance(40) {
            let name = READERS[readers.len()];
            let r = QueueReader::open(q, ReaderConfig::named(name)).unwrap();
            h.commits.entry(name).or_default().push(r.next_seq());
            readers.push((name, r));
        }
        let n = 1 + rng.below(60);
        for _ in 0..n {
            let len = rng.below(700) as usize;
            let seq = w.append(1, &payload(h.lens.len() as u64, 0, len)).unwrap();
            assert_eq!(seq, h.lens.len() as u64);
            h.lens.push(len);
        }
        if rng.chance(20) {
            w.sync().unwrap();
            if matches!(mode, Mode::EveryRecords(_)) {
                h.promised = h.lens.len() as u64;
            }
        }
        if let Mode::EveryRecords(k) = mode {
            // At most k - 1 records follow the last msync.
            h.promised = h.promised.max((h.lens.len() as u64).saturating_sub(k - 1));
        }
        for (name, r) in &mut readers {
            let take = rng.below(80);
            for _ in 0..take {
                if r.next().unwrap().is_none() {
                    break;
                }
            }
            r.commit().unwrap();
            h.commits.entry(name).or_default().push(r.next_seq());
        }
        let k = h.snaps.len();
        for s in powercut::take_under(q) {
            if let Ok(rel) = s.path.strip_prefix(q) {
                h.durable.push((k, rel.to_path_buf(), s.offset, s.bytes));
            }
        }
        h.snaps.push(snapshot(q));
    }
    // The power goes: nothing is closed, nothing more is synced.
    std::mem::forget(w);
    for (_, r) in readers {
        std::mem::forget(r);
    }
    let _ = powercut::take_under(q);
    h
}

/// Composes the disk image after the cut into `out`.
fn cut(h: &History, rng: &mut Rng, out: &Path) {
    let last = h.snaps.last().unwrap();
    let keep = 30 + rng.below(70); // percent of pages that reached the disk in their last version
    for (rel, cur) in last {
        let pages = cur.len().div_ceil(PAGE);
        let mut image = cur.clone();
        for p in 0..pages {
            if rng.chance(keep) {
                continue;
            }
            let (lo, hi) = (p * PAGE, ((p + 1) * PAGE).min(cur.len()));
            // The durable version of this page and the snapshot it precedes.
            let mut floor = if rel == Path::new("queue.meta") {
                // Created under a temporary name, msynced, renamed: never lost entirely.
                (0usize, h.snaps[0].get(rel).map(|b| b[lo..hi].to_vec()))
            } else {
                (0usize, None)
            };
            for (k, f, off, bytes) in &h.durable {
                let (off, end) = (*off as usize, *off as usize + bytes.len());
                if f == rel && off < hi && end > lo {
                    let mut page = floor.1.clone().unwrap_or_else(|| vec![0; hi - lo]);
                    let (a, b) = (lo.max(off), hi.min(end));
                    page[a - lo..b - lo].copy_from_slice(&bytes[a - off..b - off]);
                    floor = (*k, Some(page));
                }
            }
            // Candidates: the durable version (zeroes if never made durable), then every
            // snapshot taken after it.
            let mut cands: Vec<Vec<u8>> = vec![floor.1.unwrap_or_else(|| vec![0; hi - lo])];
            for s in &h.snaps[floor.0..] {
                if let Some(b) = s.get(rel).filter(|b| b.len() >= hi) {
                    cands.push(b[lo..hi].to_vec());
                }
            }
            let pick = &cands[rng.below(cands.len() as u64) as usize];
            image[lo..hi].copy_from_slice(pick);
        }
        let path = out.join(rel);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, &image).unwrap();
    }
    for d in ["segments", "index", "readers"] {
        std::fs::create_dir_all(out.join(d)).unwrap();
    }
    std::fs::write(out.join("writer.lock"), b"").unwrap();
}

/// An error a reader may meet: `Corrupted` in a segment before the recovered tail's, when old
/// pages may have been lost (it must name a segment file); anything else fails the cut.
fn allowed_damage(e: &Error, h: &History, ctx: &str) {
    match e {
        Error::Corrupted { path, .. } | Error::NotYetInitialized { path }
            if h.old_damage_possible =>
        {
            assert!(path.to_string_lossy().ends_with(".seg"), "{ctx}: {e}");
        }
        _ => panic!("{ctx}: {e}"),
    }
}

/// Reads the whole queue from the start: contiguous seqs from 0, each record whole and the one
/// written (generation 0 below `recovered`, 1 from there). Returns the next seq, or `None` if
/// it ran into old damage.
fn check_all(q: &Path, recovered: u64, lens1: &[usize], h: &History, ctx: &str) -> Option<u64> {
    let mut r = match QueueReader::open(q, ReaderConfig::default().start(StartAt::Earliest)) {
        Ok(r) => r,
        Err(e) => {
            allowed_damage(&e, h, ctx);
            return None;
        }
    };
    let mut seq = 0;
    loop {
        let m = match r.next() {
            Ok(Some(m)) => m,
            Ok(None) => break,
            Err(e) => {
                allowed_damage(&e, h, &format!("{ctx}: reading record {seq}"));
                return None;
            }
        };
        assert_eq!(m.seq(), seq, "{ctx}");
        check_record(seq, m.payload(), recovered, lens1, h, ctx);
        seq += 1;
    }
    Some(seq)
}

fn check_record(seq: u64, got: &[u8], recovered: u64, lens1: &[usize], h: &History, ctx: &str) {
    let want = if seq < recovered {
        payload(seq, 0, h.lens[seq as usize])
    } else {
        let Some(&len) = lens1.get((seq - recovered) as usize) else {
            panic!(
                "{ctx}: record {seq} returned, {recovered} recovered + {} written",
                lens1.len()
            );
        };
        payload(seq, 1, len)
    };
    assert!(got == &want[..], "{ctx}: record {seq} differs");
}

/// Opens named reader `name` and checks what it says against what it committed before the cut.
fn check_reader(
    q: &Path,
    name: &str,
    next: u64,
    recovered: u64,
    lens1: &[usize],
    h: &History,
    ctx: &str,
) {
    let commits = &h.commits[name];
    match QueueReader::open(q, ReaderConfig::named(name)) {
        Ok(mut r) => {
            let at = r.next_seq();
            assert!(
                commits.contains(&at),
                "{ctx}: {name} resumed at {at}, committed {commits:?}"
            );
            // Past the recovered tail only if nothing was re-assigned since (then it is the
            // tail itself: the writer wrote nothing).
            assert!(
                at <= recovered || next == recovered,
                "{ctx}: {name} resumed at {at} ({:?}) past {recovered}, next {next}",
                r.position()
            );
            let mut seq = at;
            loop {
                match r.next() {
                    Ok(Some(m)) => {
                        assert_eq!(m.seq(), seq, "{ctx}: {name}");
                        check_record(seq, m.payload(), recovered, lens1, h, ctx);
                        seq += 1;
                    }
                    Ok(None) => {
                        assert_eq!(seq, next, "{ctx}: {name} stopped early");
                        break;
                    }
                    Err(e) => {
                        allowed_damage(&e, h, &format!("{ctx}: {name} reading {seq}"));
                        break;
                    }
                }
            }
        }
        Err(Error::SeqNotWritten {
            wanted_seq,
            next_seq,
        }) => {
            assert!(
                commits.contains(&wanted_seq),
                "{ctx}: {name}: {wanted_seq} {commits:?}"
            );
            assert!(
                wanted_seq > next && next_seq == next,
                "{ctx}: {name}: {wanted_seq} {next_seq} {next}"
            );
        }
        Err(Error::PositionMismatch { wanted_seq, .. }) => {
            assert!(
                commits.contains(&wanted_seq),
                "{ctx}: {name}: {wanted_seq} {commits:?}"
            );
            assert!(
                wanted_seq > recovered && next > recovered,
                "{ctx}: {name}: mismatch at {wanted_seq}, recovered {recovered}"
            );
        }
        Err(e) => allowed_damage(&e, h, &format!("{ctx}: {name}")),
    }
}

fn check_before_recovery(q: &Path, name: &str, h: &History, ctx: &str) {
    let commits = &h.commits[name];
    let ctx = format!("{ctx}: {name} before recovery");
    match QueueReader::open(q, ReaderConfig::named(name)) {
        Ok(mut r) => {
            let at = r.next_seq();
            assert!(
                commits.contains(&at),
                "{ctx}: resumed at {at}, committed {commits:?}"
            );
            let mut seq = at;
            loop {
                match r.next() {
                    Ok(Some(m)) => {
                        assert_eq!(m.seq(), seq, "{ctx}");
                        check_record(seq, m.payload(), u64::MAX, &[], h, &ctx);
                        seq += 1;
                    }
                    Ok(None) => break,
                    Err(Error::Corrupted { path, .. }) => {
                        assert!(path.to_string_lossy().ends_with(".seg"), "{ctx}");
                        break;
                    }
                    Err(e) => {
                        allowed_damage(&e, h, &format!("{ctx}: reading {seq}"));
                        break;
                    }
                }
            }
        }
        Err(Error::SeqNotWritten { wanted_seq, .. }) => {
            assert!(
                commits.contains(&wanted_seq),
                "{ctx}: {wanted_seq} {commits:?}"
            );
        }
        Err(e) => allowed_damage(&e, h, &ctx),
    }
}

/// One cut; false when recovery refused (typed) and nothing more could be checked.
fn one_cut(seed: u64) -> bool {
    let mut rng = Rng(seed);
    let mode = match rng.below(3) {
        0 => Mode::PageCache,
        _ => Mode::EveryRecords(1 + rng.below(8)),
    };
    let ctx = format!("cut CHRONICLE_POWERCUT_SEED={seed:#x} CHRONICLE_POWERCUT_CUTS=1 ({mode:?})");
    let dir = tempfile::tempdir().unwrap();
    let q = dir.path().join("q");
    let h = run_before_cut(&q, mode, &mut rng);
    let img = dir.path().join("image");
    cut(&h, &mut rng, &img);

    // A reader may come back before the writer: it resumes at a position it committed and reads
    // only records that were written, whole; or it is told (`SeqNotWritten` past the end it can
    // see, `Corrupted` at a record whose page was lost, which recovery will fence).
    if let Some(name) = READERS
        .iter()
        .copied()
        .find(|n| h.commits.contains_key(n) && rng.chance(30))
    {
        check_before_recovery(&img, name, &h, &ctx);
    }

    // Recovery. With `PageCache` nothing was ever made durable, a segment's header included:
    // recovery may then refuse with a typed error naming the file, never guess.
    let mut w = match QueueWriter::open(&img, writer_config(mode)) {
        Ok(w) => w,
        Err(e @ (Error::NotYetInitialized { .. } | Error::Corrupted { .. }))
            if h.old_damage_possible =>
        {
            assert!(e.to_string().contains(".seg"), "{ctx}: recovery: {e}");
            return false;
        }
        Err(e) => panic!("{ctx}: recovery: {e}"),
    };
    let recovered = w.next_seq();
    assert!(
        recovered >= h.promised,
        "{ctx}: recovered to {recovered}, {} promised",
        h.promised
    );
    assert!(
        recovered <= h.lens.len() as u64,
        "{ctx}: {recovered} > written"
    );
    if let Some(end) = check_all(&img, recovered, &[], &h, &ctx) {
        assert_eq!(end, recovered, "{ctx}");
    }

    // Some readers come back before the writer writes on, the others after.
    let early: Vec<&str> = READERS
        .iter()
        .copied()
        .filter(|n| h.commits.contains_key(n) && rng.chance(50))
        .collect();
    for name in &early {
        check_reader(&img, name, recovered, recovered, &[], &h, &ctx);
    }
    // The writer assigns the next seqs (perhaps again) to larger records.
    let lens1: Vec<usize> = (0..rng.below(150))
        .map(|_| 700 + rng.below(500) as usize)
        .collect();
    for (i, &len) in lens1.iter().enumerate() {
        let seq = recovered + i as u64;
        assert_eq!(w.append(2, &payload(seq, 1, len)).unwrap(), seq, "{ctx}");
    }
    w.close().unwrap();
    let next = recovered + lens1.len() as u64;
    if let Some(end) = check_all(&img, recovered, &lens1, &h, &ctx) {
        assert_eq!(end, next, "{ctx}");
    }
    for name in READERS
        .iter()
        .filter(|n| h.commits.contains_key(*n) && !early.contains(n))
    {
        check_reader(&img, name, next, recovered, &lens1, &h, &ctx);
    }
    let _ = powercut::take_under(dir.path());
    true
}

#[test]
fn power_cuts() {
    let cuts: u64 = std::env::var("CHRONICLE_POWERCUT_CUTS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(100);
    let base: u64 = std::env::var("CHRONICLE_POWERCUT_SEED")
        .ok()
        .and_then(|s| u64::from_str_radix(s.trim_start_matches("0x"), 16).ok())
        .unwrap_or_else(chronicle_core::sys::realtime_ns);
    println!("power cuts: {cuts}, CHRONICLE_POWERCUT_SEED={base:#x}");
    powercut::enable();
    let mut refused = 0;
    for i in 0..cuts {
        if !one_cut(base.wrapping_add(i)) {
            refused += 1;
        }
    }
    println!("power cuts: {cuts} checked, recovery refused (typed error, PageCache) {refused}");
}
