//! Power-loss simulator (DESIGN.md section 8, "After a power loss").
//!
//! Each cut builds a queue with a writer (single appends and batches) and three named readers,
//! in steps, with or without a retention cap; `chronicle_core::testing::powercut::Recorder` remembers every version of every file
//! and every range and directory the library made durable, and composes the disk image a cut
//! can leave: each 4 KiB page of each file its latest content or any version at or after the
//! last time it was made durable (zeroes if never), in segments, indexes, `queue.meta` and
//! reader metas, in any combination; files whose names no directory fsync recorded may be
//! missing (segments, indexes and `queue.meta` with `PageCache`), and segments retention
//! removed may be back. On that image it checks:
//!
//! - recovery (opening the writer) succeeds, and every record the durability mode promises is
//!   there byte for byte; every record there is one that was written, in order, whole;
//! - a named reader opened before recovery resumes at a position it committed and returns only
//!   written records, whole, or is told (`SeqNotWritten`, `Corrupted` at a record with a lost
//!   page, which recovery then fences);
//! - after recovery, each named reader resumes exactly at a position it committed, never past
//!   the recovered tail, or gets `HistoryRewritten` (its position is past the point from
//!   which recovery ended history: it saw records that are gone), before and after the writer
//!   assigned those seqs again — to records of other sizes or of exactly the old sizes, so a
//!   re-assigned seq can land at exactly a saved offset; never a record read from the middle
//!   of another, never a re-assigned seq returned to a reader whose position says it saw the
//!   old one; `PositionLost` only for a position in a segment retention removed.
//!
//! `CHRONICLE_POWERCUT_CUTS` sets the number of cuts (CI runs the default), and
//! `CHRONICLE_POWERCUT_SEED` replays a run (each cut prints nothing unless it fails; the failure
//! message names the seed of the cut).
#![allow(clippy::unwrap_used, clippy::indexing_slicing, clippy::panic)]

use std::collections::BTreeMap;
use std::path::Path;

use chronicle_core::testing::powercut::{self, Recorder, Rng};
use chronicle_core::{
    Durability, Error, Preallocate, QueueReader, QueueWriter, ReaderConfig, RetentionPolicy,
    StartAt, WriterConfig,
};

const READERS: [&str; 3] = ["a", "b", "c"];
const SEGMENT: u64 = 64 << 10;

/// Payload of record `seq` written in generation `generation` (1: after the cut).
fn payload(seq: u64, generation: u8, len: usize) -> Vec<u8> {
    let mut v = seq.to_le_bytes().to_vec();
    v.push(generation);
    v.extend((0..len).map(|i| (seq as u8) ^ (i as u8).wrapping_mul(29) ^ generation));
    v
}

#[derive(Clone, Copy, Debug)]
enum Mode {
    PageCache,
    EveryRecords(u64),
}

/// What the run before the cut did.
struct History {
    rec: Recorder,
    /// Records appended: payload lengths by seq.
    lens: Vec<usize>,
    /// Seqs every record below which the mode promises durable.
    promised: u64,
    /// Each reader's committed positions (next seq).
    commits: BTreeMap<&'static str, Vec<u64>>,
    /// `PageCache`: no page or name is ever made durable (but reader metas'), so pages and
    /// files of full segments may be lost too; a reader that runs into one gets a typed error
    /// naming the file.
    page_cache: bool,
    /// Retention ran with a cap.
    retention: bool,
    /// The first seq a reader from `Earliest` got just before the cut.
    oldest_kept: u64,
}

fn writer_config(mode: Mode, retention: bool) -> WriterConfig {
    WriterConfig {
        segment_size: SEGMENT,
        index_stride: 1024,
        durability: match mode {
            Mode::PageCache => Durability::PageCache,
            Mode::EveryRecords(n) => Durability::EveryRecords(n),
        },
        // On the appending thread: the msyncs of retired segments and retention happen in a
        // replayable order.
        preallocate: Preallocate::Inline,
        retention: RetentionPolicy {
            max_bytes: retention.then_some(3 * SEGMENT),
            ..RetentionPolicy::default()
        },
        ..WriterConfig::default()
    }
}

fn run_before_cut(q: &Path, mode: Mode, retention: bool, rng: &mut Rng) -> History {
    let mut w = QueueWriter::open(q, writer_config(mode, retention)).unwrap();
    let mut h = History {
        rec: Recorder::new(q),
        lens: Vec::new(),
        promised: 0,
        commits: BTreeMap::new(),
        page_cache: matches!(mode, Mode::PageCache),
        retention,
        oldest_kept: 0,
    };
    let mut readers: Vec<(&'static str, QueueReader)> = Vec::new();
    let steps = 4 + rng.below(12);
    for _ in 0..steps {
        // A reader joins (its meta is created and synced once, its name with it).
        if readers.len() < READERS.len() && rng.chance(40) {
            let name = READERS[readers.len()];
            let r = QueueReader::open(q, ReaderConfig::named(name)).unwrap();
            h.commits.entry(name).or_default().push(r.next_seq());
            readers.push((name, r));
        }
        let n = 1 + rng.below(60);
        if rng.chance(30) {
            // A batch: the durability policy is checked once, when it ends.
            let mut b = w.batch();
            for _ in 0..n {
                let len = rng.below(700) as usize;
                let seq = b.append(1, &payload(h.lens.len() as u64, 0, len)).unwrap();
                assert_eq!(seq, h.lens.len() as u64);
                h.lens.push(len);
            }
            b.finish();
        } else {
            for _ in 0..n {
                let len = rng.below(700) as usize;
                let seq = w.append(1, &payload(h.lens.len() as u64, 0, len)).unwrap();
                assert_eq!(seq, h.lens.len() as u64);
                h.lens.push(len);
            }
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
        h.rec.step();
    }
    h.oldest_kept = QueueReader::open(q, ReaderConfig::default().start(StartAt::Earliest))
        .unwrap()
        .next_seq();
    // The power goes: the image is composed from the snapshots taken so far, and nothing the
    // library makes durable from here on counts. Closing the originals now (instead of leaking
    // them, which ran a long run out of file descriptors) changes nothing in the image.
    h.rec.finish();
    drop(readers);
    drop(w);
    h
}

/// An error a reader may meet besides the ones each check expects: with `PageCache`, a typed
/// error naming a file of the queue (a lost page, a lost segment header, a segment or
/// `queue.meta` whose name was lost: then reader metas belong to another queue), or
/// `PositionLost` (a segment whose name was lost ends the reachable history); anything else
/// fails the cut.
fn allowed_damage(e: &Error, h: &History, ctx: &str) {
    match e {
        Error::Corrupted { path, .. } | Error::NotYetInitialized { path } if h.page_cache => {
            let p = path.to_string_lossy();
            assert!(
                p.ends_with(".seg") || p.ends_with(".meta") || p.ends_with("segments"),
                "{ctx}: {e}"
            );
        }
        Error::PositionLost { .. } | Error::NotAQueue { .. } if h.page_cache => {}
        _ => panic!("{ctx}: {e}"),
    }
}

/// Reads the whole queue from `Earliest`: contiguous seqs, each record whole and the one
/// written (generation 0 below `recovered`, 1 from there); the first no later than `first_max`.
/// Returns the next seq, or `None` if it ran into old damage.
fn check_all(
    q: &Path,
    first_max: u64,
    recovered: u64,
    lens1: &[usize],
    h: &History,
    ctx: &str,
) -> Option<u64> {
    let mut r = match QueueReader::open(q, ReaderConfig::default().start(StartAt::Earliest)) {
        Ok(r) => r,
        Err(e) => {
            allowed_damage(&e, h, ctx);
            return None;
        }
    };
    let mut seq = r.next_seq();
    if !h.page_cache {
        assert!(
            seq <= first_max,
            "{ctx}: earliest {seq}, kept from {first_max}; segments {:?}",
            segment_bases(q)
        );
    }
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

/// `(file, base seq)` of every segment file of `q` (for failure messages).
fn segment_bases(q: &Path) -> Vec<(String, Option<u64>)> {
    let mut v: Vec<(String, Option<u64>)> = std::fs::read_dir(q.join("segments"))
        .map(|rd| {
            rd.flatten()
                .map(|e| {
                    let base = std::fs::read(e.path()).ok().and_then(|b| {
                        b.get(40..48)
                            .map(|s| u64::from_le_bytes(s.try_into().unwrap()))
                    });
                    (e.file_name().to_string_lossy().into_owned(), base)
                })
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
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

/// Opens named reader `name` after recovery and checks what it says against what it committed
/// before the cut. `next`: the writer's next seq now.
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
            // Never past the recovered tail: such a position saw records that are gone.
            assert!(
                at <= recovered,
                "{ctx}: {name} resumed at {at} ({:?}) past {recovered}",
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
        Err(Error::HistoryRewritten {
            wanted_seq,
            rewritten_from,
            saved_epoch,
            queue_epoch,
            ..
        }) => {
            assert!(
                commits.contains(&wanted_seq),
                "{ctx}: {name}: {wanted_seq} {commits:?}"
            );
            assert!(
                wanted_seq > recovered && rewritten_from == recovered,
                "{ctx}: {name}: rewritten at {wanted_seq} from {rewritten_from}, recovered {recovered}"
            );
            assert_eq!((saved_epoch, queue_epoch), (0, 1), "{ctx}: {name}");
        }
        Err(Error::PositionLost { wanted_seq, .. }) if h.retention && !h.page_cache => {
            // Its meta went back to a position in a segment retention removed.
            assert!(
                commits.contains(&wanted_seq) && wanted_seq < h.oldest_kept,
                "{ctx}: {name}: lost {wanted_seq}, kept from {}",
                h.oldest_kept
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
        Err(Error::PositionLost { wanted_seq, .. }) if h.retention && !h.page_cache => {
            assert!(
                commits.contains(&wanted_seq) && wanted_seq < h.oldest_kept,
                "{ctx}: lost {wanted_seq}, kept from {}, committed {commits:?}",
                h.oldest_kept
            );
        }
        Err(e) => allowed_damage(&e, h, &ctx),
    }
}

/// What one cut found.
#[derive(Default)]
struct Outcome {
    /// Recovery refused (typed) and nothing more could be checked.
    refused: bool,
    /// Recovery recorded a rewrite of the history.
    rewritten: bool,
    /// Readers refused with `HistoryRewritten`... counted by the caller's interest only.
    vanished: usize,
    reappeared: usize,
}

/// One cut.
fn one_cut(seed: u64) -> Outcome {
    let mut rng = Rng(seed);
    let mode = match rng.below(3) {
        0 => Mode::PageCache,
        _ => Mode::EveryRecords(1 + rng.below(8)),
    };
    let retention = rng.chance(50);
    let ctx = format!(
        "cut CHRONICLE_POWERCUT_SEED={seed:#x} CHRONICLE_POWERCUT_CUTS=1 ({mode:?}, retention \
         {retention})"
    );
    let dir = tempfile::tempdir().unwrap();
    let q = dir.path().join("q");
    let h = run_before_cut(&q, mode, retention, &mut rng);
    let img = dir.path().join("image");
    // `queue.meta` is built under a temporary name, msynced and renamed; with a sync policy the
    // writer then fsyncs the queue's directory, so its name is durable too.
    let meta = Path::new("queue.meta");
    let born: &[&Path] = if h.page_cache { &[] } else { &[meta] };
    let cut = h.rec.compose(&mut rng, &img, born, &[]);
    for d in ["segments", "index", "readers"] {
        std::fs::create_dir_all(img.join(d)).unwrap();
    }
    std::fs::write(img.join("writer.lock"), b"").unwrap();
    let mut out = Outcome {
        vanished: cut.vanished.len(),
        reappeared: cut.reappeared.len(),
        ..Outcome::default()
    };
    if !h.page_cache {
        // Only names never made durable may vanish: none of a sync mode's data files.
        assert!(
            cut.vanished.is_empty(),
            "{ctx}: with a sync policy, names never made durable: {:?}",
            cut.vanished
        );
    }

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

    // Recovery. With `PageCache` nothing was ever made durable, a segment's header or name and
    // `queue.meta`'s name included: recovery may then refuse with a typed error naming the
    // file, never guess.
    let mut w = match QueueWriter::open(&img, writer_config(mode, retention)) {
        Ok(w) => w,
        Err(e @ (Error::NotYetInitialized { .. } | Error::Corrupted { .. })) if h.page_cache => {
            assert!(e.to_string().contains(".seg"), "{ctx}: recovery: {e}");
            out.refused = true;
            return out;
        }
        Err(e) => panic!("{ctx}: recovery: {e}"),
    };
    let recovered = w.next_seq();
    let history = w.history();
    out.rewritten = history.epoch > 0;
    assert!(
        recovered >= h.promised,
        "{ctx}: recovered to {recovered}, {} promised",
        h.promised
    );
    assert!(
        recovered <= h.lens.len() as u64,
        "{ctx}: {recovered} > written"
    );
    assert!(history.epoch <= 1, "{ctx}: {history:?}");
    if history.epoch == 1 {
        assert_eq!(history.rewritten_from, recovered, "{ctx}");
    }
    if let Some(end) = check_all(&img, h.oldest_kept, recovered, &[], &h, &ctx) {
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
    // The writer assigns the next seqs (perhaps again): to records of exactly the old sizes
    // (a re-assigned seq then lands at exactly its old offset), or to larger ones.
    let same_sizes = rng.chance(50);
    let lens1: Vec<usize> = (0..rng.below(150))
        .map(|i| match h.lens.get(recovered as usize + i as usize) {
            Some(&old) if same_sizes => old,
            _ => 700 + rng.below(500) as usize,
        })
        .collect();
    for (i, &len) in lens1.iter().enumerate() {
        let seq = recovered + i as u64;
        assert_eq!(w.append(2, &payload(seq, 1, len)).unwrap(), seq, "{ctx}");
    }
    w.close().unwrap();
    let next = recovered + lens1.len() as u64;
    // Retention may have run again (rolls): the earliest record can then be any later one.
    if let Some(end) = check_all(&img, next, recovered, &lens1, &h, &ctx) {
        assert_eq!(end, next, "{ctx}");
    }
    for name in READERS
        .iter()
        .filter(|n| h.commits.contains_key(*n) && !early.contains(n))
    {
        check_reader(&img, name, next, recovered, &lens1, &h, &ctx);
    }
    let _ = powercut::take_under(dir.path());
    out
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
        .unwrap_or_else(chronicle_core::os::realtime_ns);
    println!("power cuts: {cuts}, CHRONICLE_POWERCUT_SEED={base:#x}");
    powercut::enable();
    let (mut refused, mut rewritten, mut vanished, mut reappeared) = (0, 0, 0, 0);
    for i in 0..cuts {
        let o = one_cut(base.wrapping_add(i));
        refused += u64::from(o.refused);
        rewritten += u64::from(o.rewritten);
        vanished += o.vanished;
        reappeared += o.reappeared;
    }
    println!(
        "power cuts: {cuts} checked; recovery refused (typed error, PageCache) {refused}; \
         history rewritten {rewritten}; files whose name was lost {vanished}, removed files back \
         {reappeared}"
    );
}
