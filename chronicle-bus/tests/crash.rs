//! Crash harness: real processes killed at named protocol steps and at random instants.
//!
//! Two scenarios, each a loop of "start the process, let it die, check everything, restart":
//!
//! * **pipeline** — a strategy-shaped process: a named reader (`s1-in`) on a feed queue, a
//!   strategy order queue (16 KiB segments, so segment rolls, index entries, preparation of the
//!   next segment and retention happen all the time), READY and a LEASE renewed every 8 records.
//!   For each input record it appends one order, then commits its reader position.
//! * **router** — a fan-in merger over 4 finished source queues with persisted per-source
//!   positions (named reader `router`), appending every merged record to an output queue and
//!   committing after each.
//!
//! Each iteration arms one crash point (`CHRONICLE_CRASH_AT=NAME:N`, see `chronicle_core::testing::crash`)
//! in turn, with a random pass count N, or (one iteration in five) kills the process from
//! outside after a random delay. After every death the test checks:
//!
//! * every committed record of the output queue is readable, byte for byte, with contiguous
//!   seqs, and no torn record is ever returned (reads verify CRCs; any error fails the test);
//! * no input record is lost, and an input record appears twice only where the documented
//!   at-least-once semantics allow it: the one record handed on but not yet committed when the
//!   process died (at most one duplicate per death, always adjacent to its first copy);
//! * the persisted reader positions are exactly "after the last handed-on record" or "one
//!   before" (died between hand-on and commit), and the restarted process resumes there;
//! * the restarted writer continues at the next seq; the LEASE always parses; no marker
//!   temporary survives a restart.
//!
//! CI runs `CHRONICLE_CRASH_ITERS` (default 56) iterations per scenario; the full run is
//! `CHRONICLE_CRASH_ITERS=1000 cargo test --release -p chronicle-bus --features crash-points
//! --test crash -- --nocapture` (see README). Every point must have fired at least once.
#![allow(clippy::unwrap_used, clippy::indexing_slicing, clippy::panic)]

#[path = "../../chronicle-core/tests/common/mod.rs"]
mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Child;
use std::time::Duration;

use chronicle_bus::{
    BusLayout, FanInConfig, FanInReader, Lease, MergeMode, SourceId, StrategyConfig,
    StrategyEndpoints,
};
use chronicle_core::{
    Preallocate, QueueDir, QueueReader, QueueWriter, ReaderConfig, RetentionPolicy, WaitOutcome,
    WriterConfig, list_readers,
};
use common::{ROLE, Rng, payload, run_crash_child, spawn_child};

/// Watchdog for one child run (a hang is a failure; no timing is asserted).
const T: Duration = Duration::from_secs(300);

fn env(k: &str) -> String {
    std::env::var(k).unwrap()
}

fn iterations() -> u64 {
    common::crash_iterations(56)
}

/// The order queue: small segments and a tight index so rolls and index entries are frequent;
/// retention keeps 4 segments beyond what registered readers still need.
fn orders_cfg() -> WriterConfig {
    WriterConfig {
        segment_size: 16 << 10,
        index_stride: 1024,
        preallocate: Preallocate::Background,
        retention: RetentionPolicy {
            max_bytes: Some(4 * (16 << 10)),
            ..RetentionPolicy::default()
        },
        ..WriterConfig::default()
    }
}

fn plain_cfg() -> WriterConfig {
    WriterConfig {
        segment_size: 64 << 10,
        index_stride: 1024,
        preallocate: Preallocate::Inline,
        ..WriterConfig::default()
    }
}

/// Order payload for input record `in_seq`: derivable from the input seq alone.
fn order_payload(in_seq: u64) -> Vec<u8> {
    let mut v = vec![0xA5];
    v.extend_from_slice(&payload(in_seq));
    v
}

fn in_seq_of(order: &[u8]) -> u64 {
    assert_eq!(order[0], 0xA5, "order payload tag");
    u64::from_le_bytes(order[1..9].try_into().unwrap())
}

/// Entry point of every child process (ignored in normal runs).
#[test]
#[ignore = "child process entry, run by the crash tests"]
fn child_entry() {
    let Ok(role) = std::env::var(ROLE) else {
        return;
    };
    match role.as_str() {
        "pipeline" => pipeline(),
        "router" => router(),
        other => panic!("unknown role {other}"),
    }
}

/// Reads the feed with named reader `s1-in` up to `UNTIL`, appends one order per input record to
/// strategy `s1`'s queue, then commits; renews the lease every 8 records.
fn pipeline() {
    let bus = PathBuf::from(env("BUS"));
    let feed = PathBuf::from(env("FEED"));
    let until: u64 = env("UNTIL").parse().unwrap();
    let layout = BusLayout::new(&bus);
    let mut ep = StrategyEndpoints::open(
        &layout,
        "s1",
        StrategyConfig {
            writer: orders_cfg(),
            lease_ttl: Duration::from_secs(30),
            file_mode: 0o660,
        },
    )
    .unwrap();
    ep.mark_ready().unwrap();
    let mut r = QueueReader::open(&feed, ReaderConfig::named("s1-in")).unwrap();
    println!("resume {} {}", r.next_seq(), ep.writer().next_seq());
    let mut n = 0u64;
    while r.next_seq() < until {
        let Some(m) = r.next().unwrap() else {
            if let WaitOutcome::WriterGone(_) = r.wait(Duration::from_millis(50)).unwrap() {
                assert!(r.has_next(), "feed ended before {until}");
            }
            continue;
        };
        let seq = m.seq();
        assert_eq!(m.payload(), &payload(seq)[..], "feed record {seq}");
        ep.writer().append(7, &order_payload(seq)).unwrap();
        r.commit().unwrap();
        n += 1;
        if n % 8 == 0 {
            ep.renew_lease().unwrap();
        }
    }
    println!("done {n}");
}

const SOURCES: [&str; 4] = ["a", "b", "c", "d"];

/// Merges the 4 source queues (replay, named reader `router`) into `OUT`, committing after each
/// appended record.
fn router() {
    let root = PathBuf::from(env("ROOT"));
    let mut fan = FanInReader::new(FanInConfig {
        mode: MergeMode::Replay,
        reader_name: Some("router".into()),
        ..FanInConfig::default()
    })
    .unwrap();
    for s in SOURCES {
        fan.add_source(s, root.join(s)).unwrap();
    }
    let mut resume: Vec<String> = fan
        .sources()
        .map(|(_, name, next)| format!("{name}={next}"))
        .collect();
    resume.sort();
    let mut out = QueueWriter::open(root.join("out"), orders_cfg()).unwrap();
    println!("resume {} {}", out.next_seq(), resume.join(","));
    let mut n = 0u64;
    while let Some(m) = fan.next().unwrap() {
        let mut p = Vec::with_capacity(16);
        p.extend_from_slice(&m.source().0.to_le_bytes());
        p.extend_from_slice(&m.seq().to_le_bytes());
        let (ty, ts) = (m.type_id(), m.timestamp_ns());
        out.append_at(ty, ts, &p).unwrap();
        fan.commit().unwrap();
        n += 1;
    }
    println!("done {n}");
}

/// A crash point with the range of pass counts to draw N from (sized so the point is reached
/// within one run of the child).
struct Point {
    name: &'static str,
    max_pass: u64,
}

const fn pt(name: &'static str, max_pass: u64) -> Point {
    Point { name, max_pass }
}

/// What one iteration armed.
enum Plan {
    At(&'static str, u64),
    Timer(u64),
}

fn plan(i: u64, points: &[Point], rng: &mut Rng) -> Plan {
    if i % 5 == 4 {
        return Plan::Timer(rng.range(500, 20_000));
    }
    let p = &points[((i - i / 5) % points.len() as u64) as usize];
    Plan::At(p.name, rng.range(1, p.max_pass + 1))
}

/// Runs `child` under `plan`; returns whether it died of SIGKILL (fired or killed), the line
/// it printed once started (`None` if it died while starting) and its final line.
fn run_once(child: Child, plan: &Plan) -> (bool, Option<String>, Option<String>) {
    let kill_after = match plan {
        Plan::Timer(us) => Some(Duration::from_micros(*us)),
        Plan::At(..) => None,
    };
    let run = run_crash_child(child, kill_after, T);
    (run.killed, run.resume, run.done)
}

fn crash_env(plan: &Plan) -> Option<(&'static str, String)> {
    match plan {
        Plan::At(name, n) => Some((chronicle_core::testing::crash::VAR, format!("{name}:{n}"))),
        Plan::Timer(_) => None,
    }
}

fn parse_resume(line: &str) -> Vec<String> {
    line.split(' ').skip(1).map(str::to_string).collect()
}

/// Position the named reader `name` persisted on `queue`.
fn persisted(queue: &Path, name: &str) -> Option<u64> {
    list_readers(&QueueDir::new(queue))
        .unwrap()
        .into_iter()
        .map(|r| r.unwrap())
        .find(|r| r.name == name)
        .and_then(|r| r.position.map(|p| p.next_seq))
}

/// Reads every new record of an output queue with the registered verifier reader, committing
/// its position (so retention never deletes unverified records).
fn drain_new(verifier: &mut QueueReader, mut each: impl FnMut(u64, &[u8])) -> u64 {
    let mut n = 0;
    loop {
        let expect = verifier.next_seq();
        match verifier.next() {
            Ok(Some(m)) => {
                assert_eq!(m.seq(), expect, "output seq gap");
                each(m.seq(), m.payload());
                n += 1;
            }
            Ok(None) => break,
            Err(e) => panic!("reading the output after a crash: {e}"),
        }
    }
    verifier.commit().unwrap();
    n
}

fn report(fired: &BTreeMap<&'static str, (u64, u64)>, kills: u64, iters: u64) {
    eprintln!("{iters} iterations, {kills} deaths; point: armed/fired");
    for (name, (armed, hit)) in fired {
        eprintln!("  {name:28} {armed:4} {hit:4}");
    }
    if iters >= 3 * fired.len() as u64 {
        for (name, (_, hit)) in fired {
            assert!(*hit > 0, "crash point {name} never fired");
        }
    }
}

#[test]
fn strategy_pipeline_killed_at_crash_points_loses_nothing() {
    let points = [
        pt("append.before_commit", 2000),
        pt("append.after_commit", 2000),
        pt("append.after_tail", 2000),
        pt("index.before_push", 250),
        pt("index.after_push", 250),
        pt("roll.before_pad", 12),
        pt("roll.after_pad", 12),
        pt("roll.after_tail", 12),
        pt("prepare.after_segment", 12),
        pt("reader.commit.before_gen", 2000),
        pt("retention.after_advance", 2),
        pt("retention.between_unlinks", 2),
        pt("marker.before_rename", 200),
        pt("marker.after_rename", 200),
    ];
    let iters = iterations();
    let mut rng = Rng::from_env_or_time("CHRONICLE_CRASH_SEED");
    let dir = tempfile::tempdir().unwrap();
    let bus = dir.path().join("bus");
    let feed_path = dir.path().join("feed");
    let layout = BusLayout::new(&bus);
    let orders = layout.strategy_orders("s1").unwrap();
    let lease_path = layout.strategy_lease("s1").unwrap();
    let mut feed = QueueWriter::open(
        &feed_path,
        WriterConfig {
            retention: RetentionPolicy {
                max_bytes: Some(1 << 20),
                ..RetentionPolicy::default()
            },
            ..plain_cfg()
        },
    )
    .unwrap();
    // Create the order queue up front so the verifier can register before the first record.
    std::fs::create_dir_all(orders.parent().unwrap()).unwrap();
    QueueWriter::open(&orders, orders_cfg())
        .unwrap()
        .close()
        .unwrap();
    let mut verifier = QueueReader::open(&orders, ReaderConfig::named("verifier")).unwrap();

    let mut fired: BTreeMap<&'static str, (u64, u64)> =
        points.iter().map(|p| (p.name, (0, 0))).collect();
    let mut kills = 0u64;
    let mut orders_seen = 0u64; // records in the order queue verified so far
    let mut last_in: Option<u64> = None; // input seq of the last order
    let mut dups = 0u64;
    for i in 0..iters {
        // Make sure the feed has plenty beyond the committed position.
        let committed = persisted(&feed_path, "s1-in").unwrap_or(0);
        while feed.next_seq() < committed + 4000 {
            let s = feed.next_seq();
            feed.append(s as u32, &payload(s)).unwrap();
        }
        let plan = plan(i, &points, &mut rng);
        let mut envs = vec![
            ("BUS", bus.display().to_string()),
            ("FEED", feed_path.display().to_string()),
            ("UNTIL", feed.next_seq().to_string()),
        ];
        if let Some((k, v)) = crash_env(&plan) {
            envs.push((k, v));
        }
        let child = spawn_child("pipeline", &envs);
        let (died, resume, _) = run_once(child, &plan);
        // The restarted process resumed exactly at the persisted position, and its writer at
        // the next seq.
        if let Some(resume) = &resume {
            let r = parse_resume(resume);
            assert_eq!(
                r[0].parse::<u64>().unwrap(),
                committed,
                "iteration {i}: reader did not resume at its committed position"
            );
            assert_eq!(
                r[1].parse::<u64>().unwrap(),
                orders_seen,
                "iteration {i}: writer did not continue after the last committed record"
            );
        }
        if died {
            kills += 1;
        }
        if let Plan::At(name, _) = plan {
            let e = fired.get_mut(name).unwrap();
            e.0 += 1;
            e.1 += u64::from(died);
        }
        // Output: contiguous seqs, byte-exact payloads, input seqs contiguous with at most one
        // adjacent duplicate per death.
        orders_seen += drain_new(&mut verifier, |seq, p| {
            let in_seq = in_seq_of(p);
            assert_eq!(p, &order_payload(in_seq)[..], "order {seq} differs");
            match last_in {
                None => assert_eq!(in_seq, 0, "first order must be for input 0"),
                Some(l) if in_seq == l => dups += 1,
                Some(l) => assert_eq!(in_seq, l + 1, "iteration {i}: input {} lost", l + 1),
            }
            last_in = Some(in_seq);
        });
        assert!(dups <= kills, "{dups} duplicates after {kills} deaths");
        // The persisted position is right after the last order, or on it (died between the
        // append and the commit: that one record will be delivered again).
        let pos = persisted(&feed_path, "s1-in").unwrap_or(0);
        let after = last_in.map_or(0, |l| l + 1);
        assert!(
            pos == after || (died && pos + 1 == after),
            "iteration {i}: reader position {pos}, last order for input {last_in:?}"
        );
        // The lease always parses (it is replaced by rename, never rewritten in place).
        if lease_path.exists() {
            Lease::read(&lease_path).unwrap();
        }
    }
    // A last clean run: temporaries of dead incarnations are gone, and nothing is missing.
    let plan = Plan::At("none", 1);
    let child = spawn_child(
        "pipeline",
        &[
            ("BUS", bus.display().to_string()),
            ("FEED", feed_path.display().to_string()),
            ("UNTIL", feed.next_seq().to_string()),
        ],
    );
    let (died, _, done) = run_once(child, &plan);
    assert!(
        !died && done.is_some(),
        "the final clean run did not finish"
    );
    orders_seen += drain_new(&mut verifier, |_, p| {
        let in_seq = in_seq_of(p);
        assert!(last_in.is_none_or(|l| in_seq == l + 1 || in_seq == l));
        last_in = Some(in_seq);
    });
    assert_eq!(
        last_in,
        Some(feed.next_seq() - 1),
        "not every input reached"
    );
    let strays: Vec<_> = std::fs::read_dir(layout.strategy_dir("s1").unwrap())
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().contains(".tmp."))
        .map(|e| e.file_name())
        .collect();
    assert!(strays.is_empty(), "marker temporaries left: {strays:?}");
    eprintln!("{orders_seen} orders verified, {dups} duplicates");
    report(&fired, kills, iters);
}

#[test]
fn router_killed_at_crash_points_resumes_its_fan_in_positions() {
    let points = [
        pt("append.before_commit", 3000),
        pt("append.after_commit", 3000),
        pt("append.after_tail", 3000),
        pt("roll.after_pad", 5),
        pt("index.after_push", 70),
        pt("reader.commit.before_gen", 12_000),
    ];
    let iters = iterations();
    let mut rng = Rng::from_env_or_time("CHRONICLE_ROUTER_CRASH_SEED");
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    // About what the iterations consume (most points fire within ~1500 records), so that the
    // final clean run has little left to do.
    let per_source = iters * 800 + 2000;
    let ids: BTreeMap<u64, &str> = SOURCES.iter().map(|s| (SourceId::of(s).0, *s)).collect();
    // Four finished sources, interleaved in time.
    let mut ws: Vec<QueueWriter> = SOURCES
        .iter()
        .map(|s| QueueWriter::open(root.join(s), plain_cfg()).unwrap())
        .collect();
    let mut rr = Rng(7);
    for s in 0..per_source {
        for w in ws.iter_mut() {
            if rr.range(0, 4) != 0 || s + 1 == per_source {
                let q = w.next_seq();
                w.append(q as u32, &payload(q)).unwrap();
            }
        }
    }
    let totals: Vec<u64> = ws.iter().map(QueueWriter::next_seq).collect();
    for w in ws {
        w.close().unwrap();
    }
    let out = root.join("out");
    QueueWriter::open(&out, orders_cfg())
        .unwrap()
        .close()
        .unwrap();
    let mut verifier = QueueReader::open(&out, ReaderConfig::named("verifier")).unwrap();

    let mut fired: BTreeMap<&'static str, (u64, u64)> =
        points.iter().map(|p| (p.name, (0, 0))).collect();
    let mut kills = 0u64;
    let mut out_seen = 0u64;
    let mut last: BTreeMap<&str, u64> = BTreeMap::new(); // source -> last seq in out
    let mut dups = 0u64;
    let mut prev_died = false;
    let mut finished = false;
    let mut i = 0u64;
    while !finished {
        let plan = if i < iters {
            plan(i, &points, &mut rng)
        } else {
            Plan::At("none", 1)
        };
        let mut envs = vec![("ROOT", root.display().to_string())];
        if let Some((k, v)) = crash_env(&plan) {
            envs.push((k, v));
        }
        let committed: Vec<String> = SOURCES
            .iter()
            .map(|s| {
                let p = persisted(&root.join(s), "router").unwrap_or(0);
                format!("{s}={p}")
            })
            .collect();
        let mut committed = committed;
        committed.sort();
        let child = spawn_child("router", &envs);
        let (died, resume, done) = run_once(child, &plan);
        if let Some(resume) = &resume {
            let r = parse_resume(resume);
            assert_eq!(r[0].parse::<u64>().unwrap(), out_seen, "out writer resume");
            assert_eq!(
                r[1],
                committed.join(","),
                "iteration {i}: fan-in did not resume at its persisted positions"
            );
        }
        if died {
            kills += 1;
        }
        if let Plan::At(name, _) = plan {
            if let Some(e) = fired.get_mut(name) {
                e.0 += 1;
                e.1 += u64::from(died);
            }
        }
        let mut dup_now = 0u64;
        out_seen += drain_new(&mut verifier, |seq, p| {
            assert_eq!(p.len(), 16, "out record {seq} length");
            let src = u64::from_le_bytes(p[0..8].try_into().unwrap());
            let sseq = u64::from_le_bytes(p[8..16].try_into().unwrap());
            let name = ids.get(&src).expect("unknown source id");
            match last.get(name) {
                None => assert_eq!(sseq, 0, "{name}: first record must be 0"),
                Some(&l) if l == sseq => dup_now += 1,
                Some(&l) => assert_eq!(sseq, l + 1, "iteration {i}: {name} record lost"),
            }
            last.insert(name, sseq);
        });
        dups += dup_now;
        // A duplicate is the record the previous incarnation appended but did not commit.
        assert!(
            dup_now <= u64::from(prev_died),
            "iteration {i}: {dup_now} duplicates after one restart"
        );
        prev_died = died;
        // Every source's persisted position is after its last record in out, or on it.
        for s in SOURCES {
            let pos = persisted(&root.join(s), "router").unwrap_or(0);
            let after = last.get(s).map_or(0, |l| l + 1);
            assert!(
                pos == after || (died && pos + 1 == after),
                "iteration {i}: {s} position {pos}, last merged {after}"
            );
        }
        if done.is_some() && i >= iters {
            finished = true;
        }
        i += 1;
        assert!(i <= iters + 1, "the final clean run did not finish");
    }
    for (k, s) in SOURCES.iter().enumerate() {
        assert_eq!(
            last.get(s).map(|l| l + 1),
            Some(totals[k]),
            "{s} incomplete"
        );
    }
    assert!(dups <= kills);
    eprintln!("{out_seen} merged records verified, {dups} duplicates");
    report(&fired, kills, iters);
}
