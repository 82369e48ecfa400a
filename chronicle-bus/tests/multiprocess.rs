//! Real processes: a router process follows 4 strategy processes that start, write, stop
//! (cleanly and by SIGKILL) and restart. Every record a strategy committed reaches the router's
//! output exactly once, in merge order; stale leases are detected.
//!
//! Children are this test binary re-executed on the ignored `child_entry` test with a role in
//! the environment.
#![allow(clippy::unwrap_used, clippy::panic)]

mod bus_common;

#[path = "../../chronicle-core/tests/common/mod.rs"]
mod common;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Child;
use std::time::{Duration, Instant};

use bus_common::small_writer;
use chronicle_bus::{
    BusLayout, DiscoveryConfig, DiscoveryEvent, FanInConfig, FanInReader, MergeMode,
    RouterDiscovery, SourceId, StrategyConfig, StrategyEndpoints,
};
use chronicle_core::{QueueReader, QueueWriter, ReaderConfig};
use common::{Lines, ROLE, spawn_child};

fn env(k: &str) -> String {
    std::env::var(k).unwrap()
}

#[test]
#[ignore = "child process entry, run by the multi-process test"]
fn child_entry() {
    let Ok(role) = std::env::var(ROLE) else {
        return;
    };
    let bus = PathBuf::from(env("BUS"));
    match role.as_str() {
        "router" => router(&bus),
        "strategy" => strategy(&bus),
        other => panic!("unknown role {other}"),
    }
}

/// Discovery + live fan-in into `router/out`; each output record carries (source id, seq).
/// Exits once `stop` exists and no endpoint is attached or draining.
fn router(bus: &Path) {
    let layout = BusLayout::new(bus);
    let mut disc = RouterDiscovery::new(
        &layout,
        DiscoveryConfig {
            rescan_interval: Duration::from_millis(20),
            use_inotify: true,
        },
    )
    .unwrap();
    let mut fan = FanInReader::new(FanInConfig {
        mode: MergeMode::Live,
        max_hold: None,
        reader_name: Some("router".into()),
        doorbell: Some(layout.doorbell()),
        ..FanInConfig::default()
    })
    .unwrap();
    let mut out = QueueWriter::open(layout.router_out(), small_writer()).unwrap();
    println!("router-up");
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        assert!(Instant::now() < deadline, "router watchdog");
        for ev in disc.poll().unwrap() {
            match ev {
                DiscoveryEvent::Added(ep) => match fan.add_source(&ep.id, &ep.orders) {
                    Ok(_) => println!("attached {} {}", ep.id, ep.lease_pid),
                    Err(e) if e.is_gone() => {}
                    Err(e) => panic!("{e}"),
                },
                DiscoveryEvent::Removed(ep, why) => {
                    fan.remove_source(ep.source_id, true).unwrap();
                    println!("removed {} {why:?}", ep.id);
                }
            }
        }
        while let Some(m) = fan.next().unwrap() {
            let mut p = Vec::with_capacity(17);
            p.extend_from_slice(&m.source().0.to_le_bytes());
            p.extend_from_slice(&m.seq().to_le_bytes());
            p.push(u8::from(m.late()));
            let (ty, ts) = (m.type_id(), m.timestamp_ns());
            out.append_at(ty, ts, &p).unwrap();
            fan.commit().unwrap();
        }
        if bus.join("stop").exists() && fan.is_empty() && disc.attached().count() == 0 {
            break;
        }
        fan.wait(Duration::from_millis(10)).unwrap();
    }
    out.close().unwrap();
    let st = fan.stats();
    println!("done {} {} {}", st.emitted, st.late, st.forced);
}

/// Opens strategy ID, marks READY, waits (heartbeating) for `go.<ID>.<GEN>`, then writes COUNT
/// records (forever when 0), heartbeating as it goes; closes cleanly at the end.
fn strategy(bus: &Path) {
    let id = env("ID");
    let gen_ = env("GEN");
    let count: u64 = env("COUNT").parse().unwrap();
    let layout = BusLayout::new(bus);
    let mut s = StrategyEndpoints::open(
        &layout,
        &id,
        StrategyConfig {
            writer: small_writer(),
            ..StrategyConfig::default()
        },
    )
    .unwrap();
    s.mark_ready().unwrap();
    println!("ready");
    let go = bus.join(format!("go.{id}.{gen_}"));
    let deadline = Instant::now() + Duration::from_secs(30);
    while !go.exists() {
        assert!(Instant::now() < deadline, "strategy watchdog");
        s.heartbeat().unwrap();
        std::thread::sleep(Duration::from_micros(500));
    }
    let mut n = 0u64;
    while count == 0 || n < count {
        s.writer()
            .append(7, format!("{id}/{gen_}/{n}").as_bytes())
            .unwrap();
        n += 1;
        if n % 8 == 0 {
            s.heartbeat().unwrap();
            std::thread::sleep(Duration::from_micros(200));
        }
    }
    s.close().unwrap();
    println!("done {n}");
}

/// A spawned child with its stdout lines; killed and reaped on drop.
struct Kid {
    child: Child,
    lines: Lines,
    /// Lines read but not yet matched by `expect`.
    backlog: Vec<String>,
}

impl Kid {
    fn spawn(role: &str, envs: &[(&str, String)]) -> Kid {
        let mut child = spawn_child(role, envs);
        let lines = Lines::new(child.stdout.take().unwrap());
        Kid {
            child,
            lines,
            backlog: Vec::new(),
        }
    }

    /// First unmatched line starting with `prefix` (others are kept for later calls); panics
    /// after `limit` (watchdog).
    fn expect(&mut self, prefix: &str, limit: Duration) -> String {
        if let Some(i) = self.backlog.iter().position(|l| l.starts_with(prefix)) {
            return self.backlog.remove(i);
        }
        let end = Instant::now() + limit;
        loop {
            let left = end.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(l) if l.starts_with(prefix) => return l,
                Ok(l) => self.backlog.push(l),
                Err(e) => panic!("no {prefix:?} within {limit:?}: {e:?}"),
            }
        }
    }

    fn kill9(&mut self) {
        // SAFETY: kill(2) on the pid of our own child, not reaped yet (reaped right below).
        unsafe { libc::kill(self.child.id() as i32, libc::SIGKILL) };
        let _ = self.child.wait();
    }

    fn wait_exit(&mut self, limit: Duration) {
        let end = Instant::now() + limit;
        loop {
            if let Some(st) = self.child.try_wait().unwrap() {
                assert!(st.success(), "child failed: {st:?}");
                return;
            }
            if Instant::now() >= end {
                self.kill9();
                panic!("child did not exit within {limit:?}");
            }
            std::thread::sleep(Duration::from_millis(2));
        }
    }
}

impl Drop for Kid {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            self.kill9();
        }
    }
}

const T: Duration = Duration::from_secs(20);

fn start(bus: &Path, router: &mut Kid, id: &str, gen_: u32, count: u64) -> Kid {
    let mut k = Kid::spawn(
        "strategy",
        &[
            ("BUS", bus.display().to_string()),
            ("ID", id.to_string()),
            ("GEN", gen_.to_string()),
            ("COUNT", count.to_string()),
        ],
    );
    k.expect("ready", T);
    let pid = k.child.id();
    // Writing starts only once the router has attached this incarnation (so its records can
    // never be older than records the router already emitted).
    router.expect(&format!("attached {id} {pid}"), T);
    std::fs::write(bus.join(format!("go.{id}.{gen_}")), b"").unwrap();
    k
}

#[test]
fn router_follows_strategies_that_start_stop_die_and_restart() {
    let d = tempfile::tempdir().unwrap();
    let bus = d.path().to_path_buf();
    let layout = BusLayout::create(&bus).unwrap();
    let mut router = Kid::spawn("router", &[("BUS", bus.display().to_string())]);
    router.expect("router-up", T);

    // Round 1: s0, s1 write a fixed number and close; s2, s3 write until SIGKILLed.
    let mut s0 = start(&bus, &mut router, "s0", 0, 300);
    let mut s1 = start(&bus, &mut router, "s1", 0, 300);
    let mut s2 = start(&bus, &mut router, "s2", 0, 0);
    let mut s3 = start(&bus, &mut router, "s3", 0, 0);
    std::thread::sleep(Duration::from_millis(60));
    s2.kill9();
    s3.kill9();
    s0.expect("done", T);
    s1.expect("done", T);
    s0.wait_exit(T);
    s1.wait_exit(T);
    let mut removed = BTreeSet::new();
    while removed.len() < 4 {
        let l = router.expect("removed", T);
        removed.insert(l);
    }
    let removed: Vec<String> = removed.into_iter().collect();
    assert_eq!(
        removed,
        vec![
            "removed s0 ReadyRemoved".to_string(),
            "removed s1 ReadyRemoved".to_string(),
            "removed s2 LeaseStale(HolderGone)".to_string(),
            "removed s3 LeaseStale(HolderGone)".to_string(),
        ]
    );

    // Round 2: all four restart (the killed ones recover their queues) and close cleanly.
    let mut kids: Vec<Kid> = ["s0", "s1", "s2", "s3"]
        .iter()
        .map(|id| start(&bus, &mut router, id, 1, 200))
        .collect();
    for k in &mut kids {
        k.expect("done", T);
        k.wait_exit(T);
    }
    for _ in 0..4 {
        router.expect("removed", T);
    }
    std::fs::write(bus.join("stop"), b"").unwrap();
    let done = router.expect("done", T);
    router.wait_exit(T);
    let f: Vec<u64> = done
        .split_whitespace()
        .skip(1)
        .map(|x| x.parse().unwrap())
        .collect();
    let (emitted, late, forced) = (f[0], f[1], f[2]);

    // What the strategies committed.
    let mut committed = BTreeSet::new();
    for id in ["s0", "s1", "s2", "s3"] {
        let q = layout.strategy_orders(id).unwrap();
        let mut r = QueueReader::open(&q, ReaderConfig::default()).unwrap();
        while let Some(m) = r.next().unwrap() {
            committed.insert((SourceId::of(id).0, m.seq()));
        }
    }
    // What the router output, in order.
    let mut r = QueueReader::open(layout.router_out(), ReaderConfig::default()).unwrap();
    let mut got = Vec::new();
    let mut keys = Vec::new();
    while let Some(m) = r.next().unwrap() {
        let p = m.payload();
        let sid = u64::from_le_bytes(p[0..8].try_into().unwrap());
        let seq = u64::from_le_bytes(p[8..16].try_into().unwrap());
        assert_eq!(p[16], 0, "late record in the output");
        got.push((sid, seq));
        keys.push((m.timestamp_ns(), sid, seq));
    }
    let unique: BTreeSet<_> = got.iter().copied().collect();
    assert_eq!(unique.len(), got.len(), "duplicates in the router output");
    assert_eq!(
        unique, committed,
        "router output differs from what strategies committed"
    );
    assert!(
        keys.windows(2).all(|w| w[0] < w[1]),
        "output not in merge order"
    );
    assert_eq!(emitted, got.len() as u64);
    assert_eq!((late, forced), (0, 0));
    assert!(committed.len() >= 4 * 200 + 2 * 300, "{}", committed.len());
    eprintln!("records: {}", committed.len());
}
