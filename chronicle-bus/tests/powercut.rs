//! Power-loss simulator at bus level (DESIGN.md section 8, "After a power loss"; the disk model
//! is chronicle-core's `powercut::Recorder`, the one the queue simulator uses).
//!
//! Each cut builds a bus with three strategies (`StrategyEndpoints`: order queue, READY,
//! LEASE, renewed and rewritten now and then) and a router-style fan-in (`FanInReader` with a
//! named reader per source, merging in replay mode and committing now and then), in steps,
//! then composes the disk image a power cut can leave of the whole bus directory: pages of
//! every file lost, stale or zeroed since they were last made durable, names never made durable
//! missing, and each marker (written by rename without fsync) any version it had, missing,
//! empty or zero-filled. On that image it checks:
//!
//! - each marker reads as one of the versions written or fails with a typed error
//!   (`BadMarker`, not found); discovery's rescan never fails on them;
//! - each strategy reopens (its writer recovers the order queue): every record the mode
//!   promises is there byte for byte, and nothing but written records, whole and in order;
//! - the fan-in reopened with the same reader name resumes each source at a position it
//!   committed, never past the recovered tail, and merges exactly the records written from
//!   there; or that source is refused with a typed error (`HistoryRewritten` when its position
//!   is past the point from which recovery ended history), before and after the strategy
//!   wrote on with the lost seqs re-assigned (to records of the old sizes or of other sizes).
//!
//! `CHRONICLE_POWERCUT_CUTS` and `CHRONICLE_POWERCUT_SEED` as in the queue simulator.
#![allow(clippy::unwrap_used, clippy::indexing_slicing, clippy::panic)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use chronicle_bus::{
    BusError, BusLayout, DiscoveryConfig, FanInConfig, FanInReader, Lease, MergeMode, Ready,
    RouterDiscovery, SourceId, StrategyConfig, StrategyEndpoints,
};
use chronicle_core::testing::powercut::{self, Recorder, Rng};
use chronicle_core::{
    Durability, Error, Preallocate, QueueReader, ReaderConfig, StartAt, WriterConfig,
};

const STRATEGIES: [&str; 3] = ["s0", "s1", "s2"];
const ROUTER: &str = "router";

/// Payload of record `seq` of strategy `s` in generation `generation` (1: after the cut).
fn payload(s: usize, seq: u64, generation: u8, len: usize) -> Vec<u8> {
    let mut v = vec![s as u8, generation];
    v.extend(seq.to_le_bytes());
    v.extend((0..len).map(|i| (seq as u8) ^ (i as u8).wrapping_mul(31) ^ generation ^ s as u8));
    v
}

#[derive(Clone, Copy, Debug)]
enum Mode {
    PageCache,
    EveryRecords(u64),
}

fn strategy_config(mode: Mode) -> StrategyConfig {
    StrategyConfig {
        writer: WriterConfig {
            segment_size: 64 << 10,
            index_stride: 1024,
            durability: match mode {
                Mode::PageCache => Durability::PageCache,
                Mode::EveryRecords(n) => Durability::EveryRecords(n),
            },
            preallocate: Preallocate::Inline,
            ..WriterConfig::default()
        },
        ..StrategyConfig::default()
    }
}

fn fanin_config() -> FanInConfig {
    FanInConfig {
        mode: MergeMode::Replay,
        reader_name: Some(ROUTER.into()),
        start: StartAt::Earliest,
        ..FanInConfig::default()
    }
}

/// What the run before the cut did, per strategy.
#[derive(Default)]
struct Strategy {
    /// Payload lengths by seq.
    lens: Vec<usize>,
    /// Every record below this seq is promised durable.
    promised: u64,
    /// The fan-in's committed positions for this source (next seq).
    commits: Vec<u64>,
    /// The order queue's uid (READY names it).
    queue_uid: u64,
}

struct History {
    rec: Recorder,
    strategies: Vec<Strategy>,
    page_cache: bool,
    /// Every version of each marker ever written (relative path -> contents).
    markers: BTreeMap<PathBuf, Vec<Vec<u8>>>,
}

fn run_before_cut(bus: &Path, mode: Mode, rng: &mut Rng) -> History {
    let layout = BusLayout::create(bus).unwrap();
    let mut eps: Vec<StrategyEndpoints> = STRATEGIES
        .iter()
        .map(|id| StrategyEndpoints::open(&layout, id, strategy_config(mode)).unwrap())
        .collect();
    let mut h = History {
        rec: Recorder::new(bus),
        strategies: STRATEGIES.iter().map(|_| Strategy::default()).collect(),
        page_cache: matches!(mode, Mode::PageCache),
        markers: BTreeMap::new(),
    };
    let mut f = FanInReader::new(fanin_config()).unwrap();
    for (i, ep) in eps.iter_mut().enumerate() {
        ep.mark_ready().unwrap();
        h.strategies[i].queue_uid = ep.writer().geometry().queue_uid;
        f.add_source(STRATEGIES[i], ep.orders_path()).unwrap();
        h.strategies[i].commits.push(0);
    }
    note_markers(&layout, bus, &mut h.markers);
    // Records returned from each source so far (the position a commit persists).
    let mut next = [0u64; STRATEGIES.len()];
    let steps = 3 + rng.below(8);
    for _ in 0..steps {
        for (i, ep) in eps.iter_mut().enumerate() {
            let st = &mut h.strategies[i];
            for _ in 0..rng.below(40) {
                let len = rng.below(600) as usize;
                let seq = st.lens.len() as u64;
                assert_eq!(
                    ep.writer().append(1, &payload(i, seq, 0, len)).unwrap(),
                    seq
                );
                st.lens.push(len);
            }
            if rng.chance(20) {
                ep.writer().sync().unwrap();
                if matches!(mode, Mode::EveryRecords(_)) {
                    st.promised = st.lens.len() as u64;
                }
            }
            if let Mode::EveryRecords(k) = mode {
                st.promised = st
                    .promised
                    .max((st.lens.len() as u64).saturating_sub(k - 1));
            }
            if rng.chance(30) {
                ep.renew_lease().unwrap();
            }
            if rng.chance(10) {
                ep.mark_ready().unwrap();
            }
        }
        // The router merges some records and commits now and then.
        for _ in 0..rng.below(100) {
            let Some(m) = f.next().unwrap() else { break };
            let i = source_index(m.source());
            assert_eq!(m.seq(), next[i]);
            let want = payload(i, m.seq(), 0, h.strategies[i].lens[m.seq() as usize]);
            assert!(m.payload() == &want[..]);
            next[i] += 1;
        }
        if rng.chance(60) {
            f.commit().unwrap();
            for (st, &n) in h.strategies.iter_mut().zip(&next) {
                st.commits.push(n);
            }
        }
        h.rec.step();
        note_markers(&layout, bus, &mut h.markers);
    }
    // The power goes: the image is composed from the snapshots taken so far, and nothing the
    // library makes durable from here on counts. Closing the originals now (instead of leaking
    // them, which ran a long run out of file descriptors) changes nothing in the image.
    h.rec.finish();
    drop(f);
    drop(eps);
    h
}

/// Adds the current version of every marker to `markers`.
fn note_markers(layout: &BusLayout, bus: &Path, markers: &mut BTreeMap<PathBuf, Vec<Vec<u8>>>) {
    for id in STRATEGIES {
        for p in [
            layout.strategy_ready(id).unwrap(),
            layout.strategy_lease(id).unwrap(),
        ] {
            let rel = p.strip_prefix(bus).unwrap().to_path_buf();
            if let Ok(b) = std::fs::read(&p) {
                let versions = markers.entry(rel).or_default();
                if versions.last() != Some(&b) {
                    versions.push(b);
                }
            }
        }
    }
}

fn source_index(id: SourceId) -> usize {
    STRATEGIES
        .iter()
        .position(|s| SourceId::of(s) == id)
        .unwrap()
}

/// A typed error a `PageCache` image may give (a lost page, segment header or file name);
/// anything else fails the cut.
fn allowed_damage(e: &BusError, h: &History, ctx: &str) {
    let ok = h.page_cache
        && match e {
            BusError::Queue { source, .. } => matches!(
                source,
                Error::Corrupted { .. }
                    | Error::NotYetInitialized { .. }
                    | Error::PositionLost { .. }
                    | Error::NotAQueue { .. }
            ),
            BusError::SourceGone { .. } => true,
            _ => false,
        };
    assert!(ok, "{ctx}: {e}");
}

/// Reopens the fan-in on the image and checks every source. `recovered[i]`: where recovery
/// put strategy i's queue (`None`: refused); `lens1[i]`: records written since.
fn check_fanin(
    layout: &BusLayout,
    recovered: &[Option<u64>],
    lens1: &[Vec<usize>],
    h: &History,
    ctx: &str,
) -> usize {
    let mut f = FanInReader::new(fanin_config()).unwrap();
    let mut next: BTreeMap<usize, u64> = BTreeMap::new();
    let mut refused = 0;
    for (i, id) in STRATEGIES.iter().enumerate() {
        let ctx = format!("{ctx}: source {id}");
        let commits = &h.strategies[i].commits;
        let Some(rec) = recovered[i] else { continue };
        match f.add_source(id, layout.strategy_orders(id).unwrap()) {
            Ok(sid) => {
                let at = f.sources().find(|s| s.0 == sid).unwrap().2;
                assert!(
                    commits.contains(&at),
                    "{ctx}: resumed at {at}, committed {commits:?}"
                );
                assert!(at <= rec, "{ctx}: resumed at {at} past the recovered {rec}");
                next.insert(i, at);
            }
            Err(BusError::Queue {
                source:
                    Error::HistoryRewritten {
                        wanted_seq,
                        rewritten_from,
                        ..
                    },
                ..
            }) => {
                assert!(commits.contains(&wanted_seq), "{ctx}: {wanted_seq}");
                assert!(
                    wanted_seq > rec && rewritten_from == rec,
                    "{ctx}: {wanted_seq} from {rewritten_from}, recovered {rec}"
                );
                refused += 1;
            }
            Err(e) => allowed_damage(&e, h, &ctx),
        }
    }
    loop {
        let m = match f.next() {
            Ok(Some(m)) => m,
            Ok(None) => break,
            Err(e) => {
                allowed_damage(&e, h, &format!("{ctx}: merging"));
                return refused;
            }
        };
        let i = source_index(m.source());
        let seq = next[&i];
        assert_eq!(m.seq(), seq, "{ctx}: source {i}");
        let rec = recovered[i].unwrap();
        let want = if seq < rec {
            payload(i, seq, 0, h.strategies[i].lens[seq as usize])
        } else {
            let len = *lens1[i]
                .get((seq - rec) as usize)
                .unwrap_or_else(|| panic!("{ctx}: source {i} record {seq} never written"));
            payload(i, seq, 1, len)
        };
        assert!(
            m.payload() == &want[..],
            "{ctx}: source {i} record {seq} differs"
        );
        next.insert(i, seq + 1);
    }
    for (&i, &n) in &next {
        let end = recovered[i].unwrap() + lens1[i].len() as u64;
        if !h.page_cache {
            assert_eq!(n, end, "{ctx}: source {i} merged to {n}, written to {end}");
        }
    }
    refused
}

#[derive(Default)]
struct Outcome {
    refused_recovery: usize,
    rewritten: usize,
    refused_sources: usize,
    bad_markers: usize,
}

fn one_cut(seed: u64) -> Outcome {
    let mut rng = Rng(seed);
    let mode = match rng.below(3) {
        0 => Mode::PageCache,
        _ => Mode::EveryRecords(1 + rng.below(8)),
    };
    let ctx =
        format!("bus cut CHRONICLE_POWERCUT_SEED={seed:#x} CHRONICLE_POWERCUT_CUTS=1 ({mode:?})");
    let dir = tempfile::tempdir().unwrap();
    let bus = dir.path().join("bus");
    let h = run_before_cut(&bus, mode, &mut rng);
    let img = dir.path().join("image");
    let layout = BusLayout::new(&img);
    let metas: Vec<PathBuf> = STRATEGIES
        .iter()
        .map(|id| PathBuf::from(format!("strategies/{id}/orders/queue.meta")))
        .collect();
    let markers: Vec<PathBuf> = h.markers.keys().cloned().collect();
    // The doorbell is built under a temporary name, msynced and linked into place (any mode);
    // `queue.meta` likewise, and with a sync policy the writer fsyncs its directory.
    let mut born: Vec<&Path> = vec![Path::new("doorbell")];
    if !h.page_cache {
        born.extend(metas.iter().map(PathBuf::as_path));
    }
    let whole: Vec<&Path> = markers.iter().map(PathBuf::as_path).collect();
    h.rec.compose(&mut rng, &img, &born, &whole);
    BusLayout::create(&img).unwrap();
    let mut out = Outcome::default();

    // Markers: a version that was written, or a typed error.
    for (rel, versions) in &h.markers {
        let path = img.join(rel);
        let text = std::fs::read(&path).ok();
        let is_ready = rel.ends_with("READY");
        let res: Result<(), BusError> = if is_ready {
            Ready::read(&path).map(|_| ())
        } else {
            Lease::read(&path).map(|_| ())
        };
        match res {
            Ok(()) => assert!(
                text.as_ref().is_some_and(|t| versions.contains(t)),
                "{ctx}: {rel:?} parsed but was never written: {text:?}"
            ),
            Err(BusError::BadMarker { .. }) => out.bad_markers += 1,
            Err(e) if e.is_gone() => {}
            Err(e) => panic!("{ctx}: {rel:?}: {e}"),
        }
    }
    // Discovery's rescan copes with whatever the markers are.
    let mut d = RouterDiscovery::new(
        &layout,
        DiscoveryConfig {
            use_inotify: false,
            ..DiscoveryConfig::default()
        },
    )
    .unwrap();
    if let Err(e) = d.poll() {
        panic!("{ctx}: discovery: {e}");
    }

    // Each strategy comes back: its writer recovers the order queue.
    let mut recovered: Vec<Option<u64>> = Vec::new();
    let mut eps: Vec<Option<StrategyEndpoints>> = Vec::new();
    for (i, id) in STRATEGIES.iter().enumerate() {
        let st = &h.strategies[i];
        match StrategyEndpoints::open(&layout, id, strategy_config(mode)) {
            Ok(mut ep) => {
                let n = ep.writer().next_seq();
                assert!(
                    n >= st.promised,
                    "{ctx}: {id} recovered to {n}, {} promised",
                    st.promised
                );
                assert!(n <= st.lens.len() as u64, "{ctx}: {id}: {n} > written");
                out.rewritten += usize::from(ep.writer().history().epoch > 0);
                // Everything there is what was written.
                let q = layout.strategy_orders(id).unwrap();
                if let Ok(mut r) =
                    QueueReader::open(&q, ReaderConfig::default().start(StartAt::Earliest))
                {
                    let mut seq = r.next_seq();
                    while let Ok(Some(m)) = r.next() {
                        assert_eq!(m.seq(), seq, "{ctx}: {id}");
                        assert!(
                            m.payload() == &payload(i, seq, 0, st.lens[seq as usize])[..],
                            "{ctx}: {id} record {seq}"
                        );
                        seq += 1;
                    }
                    if !h.page_cache {
                        assert_eq!(seq, n, "{ctx}: {id} reads to {seq}, recovered {n}");
                    }
                }
                recovered.push(Some(n));
                eps.push(Some(ep));
            }
            Err(BusError::Queue { source, .. })
                if h.page_cache
                    && matches!(
                        source,
                        Error::Corrupted { .. } | Error::NotYetInitialized { .. }
                    ) =>
            {
                out.refused_recovery += 1;
                recovered.push(None);
                eps.push(None);
            }
            Err(e) => panic!("{ctx}: {id}: reopening: {e}"),
        }
    }
    let none: Vec<Vec<usize>> = STRATEGIES.iter().map(|_| Vec::new()).collect();
    out.refused_sources += check_fanin(
        &layout,
        &recovered,
        &none,
        &h,
        &format!("{ctx}: after recovery"),
    );

    // The strategies write on, re-assigning lost seqs to records of the old sizes or others.
    let mut lens1: Vec<Vec<usize>> = Vec::new();
    for (i, ep) in eps.iter_mut().enumerate() {
        let mut l = Vec::new();
        if let (Some(ep), Some(rec)) = (ep.as_mut(), recovered[i]) {
            let same = rng.chance(50);
            for k in 0..rng.below(60) {
                let seq = rec + k;
                let len = match h.strategies[i].lens.get(seq as usize) {
                    Some(&old) if same => old,
                    _ => 600 + rng.below(400) as usize,
                };
                assert_eq!(
                    ep.writer().append(2, &payload(i, seq, 1, len)).unwrap(),
                    seq
                );
                l.push(len);
            }
        }
        lens1.push(l);
    }
    for ep in eps.into_iter().flatten() {
        ep.close().unwrap();
    }
    check_fanin(
        &layout,
        &recovered,
        &lens1,
        &h,
        &format!("{ctx}: after writing on"),
    );
    let _ = powercut::take_under(dir.path());
    out
}

#[test]
fn bus_power_cuts() {
    let cuts: u64 = std::env::var("CHRONICLE_POWERCUT_CUTS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(40);
    let base: u64 = std::env::var("CHRONICLE_POWERCUT_SEED")
        .ok()
        .and_then(|s| u64::from_str_radix(s.trim_start_matches("0x"), 16).ok())
        .unwrap_or_else(chronicle_core::os::realtime_ns);
    println!("bus power cuts: {cuts}, CHRONICLE_POWERCUT_SEED={base:#x}");
    powercut::enable();
    let mut total = Outcome::default();
    for i in 0..cuts {
        let o = one_cut(base.wrapping_add(i));
        total.refused_recovery += o.refused_recovery;
        total.rewritten += o.rewritten;
        total.refused_sources += o.refused_sources;
        total.bad_markers += o.bad_markers;
    }
    println!(
        "bus power cuts: {cuts} checked; order queues refused by recovery (typed, PageCache) {}; \
         histories rewritten {}; fan-in sources refused (HistoryRewritten) {}; markers unreadable \
         (BadMarker) {}",
        total.refused_recovery, total.rewritten, total.refused_sources, total.bad_markers
    );
}
