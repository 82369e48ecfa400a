//! Discovery: attach/detach rules, stale leases, churn with inotify and with rescans only.
#![allow(clippy::unwrap_used)]

mod bus_common;

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use bus_common::{dead_pid, poll_until, removed, small_strategy};
use chronicle_bus::{
    BusLayout, DiscoveryConfig, DiscoveryEvent, Lease, LeaseState, Ready, RemoveReason,
    RouterDiscovery, StrategyEndpoints,
};

fn fast(use_inotify: bool) -> DiscoveryConfig {
    DiscoveryConfig {
        rescan_interval: Duration::from_millis(if use_inotify { 50 } else { 2 }),
        use_inotify,
    }
}

fn added(ev: &[DiscoveryEvent], id: &str) -> bool {
    ev.iter()
        .any(|e| matches!(e, DiscoveryEvent::Added(ep) if ep.id == id))
}

#[test]
fn attaches_only_ready_queues_with_live_leases() {
    for inotify in [true, false] {
        let d = tempfile::tempdir().unwrap();
        let layout = BusLayout::create(d.path()).unwrap();
        let mut disc = RouterDiscovery::new(&layout, fast(inotify)).unwrap();
        assert_eq!(disc.inotify_active(), inotify);
        assert!(disc.poll().unwrap().is_empty());

        // Queue exists, no READY: not attached.
        let mut s = StrategyEndpoints::open(&layout, "alpha", small_strategy()).unwrap();
        std::thread::sleep(Duration::from_millis(10));
        assert!(disc.poll().unwrap().is_empty());
        s.mark_ready().unwrap();
        let ev = poll_until(&mut disc, false, "alpha added", |e| added(e, "alpha"));
        assert_eq!(ev.len(), 1, "{ev:?}");
        let DiscoveryEvent::Added(ep) = &ev[0] else {
            panic!()
        };
        assert_eq!(ep.queue_uid, s.writer().geometry().queue_uid);
        assert_eq!(ep.orders, layout.strategy_orders("alpha").unwrap());
        assert_eq!(ep.lease_pid, std::process::id());
        // Lease renewals and READY rewrites are not events.
        s.renew_lease().unwrap();
        s.mark_ready().unwrap();
        std::thread::sleep(Duration::from_millis(60));
        assert!(disc.poll().unwrap().is_empty());

        // Clean close: READY removed.
        s.close().unwrap();
        let ev = poll_until(&mut disc, false, "alpha removed", |e| {
            removed(e, "alpha").is_some()
        });
        assert_eq!(ev.len(), 1, "{ev:?}");
        assert_eq!(removed(&ev, "alpha"), Some(RemoveReason::ReadyRemoved));

        // Restart, then the holder dies: stale lease.
        let mut s = StrategyEndpoints::open(&layout, "alpha", small_strategy()).unwrap();
        s.mark_ready().unwrap();
        poll_until(&mut disc, false, "alpha re-added", |e| added(e, "alpha"));
        let lease_path = layout.strategy_lease("alpha").unwrap();
        Lease {
            pid: dead_pid(),
            ..s.lease()
        }
        .write(&lease_path, 0o660)
        .unwrap();
        let ev = poll_until(&mut disc, false, "stale", |e| removed(e, "alpha").is_some());
        assert_eq!(
            removed(&ev, "alpha"),
            Some(RemoveReason::LeaseStale(LeaseState::HolderGone))
        );
        // Renewed by a live holder: attached again.
        s.renew_lease().unwrap();
        poll_until(&mut disc, false, "renewed", |e| added(e, "alpha"));
        drop(s);

        // Expiry: a live holder whose lease was not renewed in time. The expired lease is
        // written directly (expiry in the past), so the test does not race a short TTL against
        // a loaded machine.
        let mut b = StrategyEndpoints::open(&layout, "beta", small_strategy()).unwrap();
        b.mark_ready().unwrap();
        poll_until(&mut disc, false, "beta added", |e| added(e, "beta"));
        let beta_lease = layout.strategy_lease("beta").unwrap();
        Lease {
            expiry_ns: chronicle_core::os::realtime_ns().saturating_sub(1_000_000),
            ..b.lease()
        }
        .write(&beta_lease, 0o660)
        .unwrap();
        let ev = poll_until(&mut disc, false, "beta expired", |e| {
            removed(e, "beta").is_some()
        });
        assert_eq!(
            removed(&ev, "beta"),
            Some(RemoveReason::LeaseStale(LeaseState::Expired))
        );

        // Queue re-created from scratch under the same id: Removed(QueueReplaced) + Added.
        b.renew_lease().unwrap();
        poll_until(&mut disc, false, "beta back", |e| added(e, "beta"));
        let orders = layout.strategy_orders("beta").unwrap();
        drop(b);
        std::fs::remove_dir_all(&orders).unwrap();
        let mut b = StrategyEndpoints::open(&layout, "beta", small_strategy()).unwrap();
        b.mark_ready().unwrap();
        let ev = poll_until(&mut disc, false, "beta replaced", |e| added(e, "beta"));
        let uid = b.writer().geometry().queue_uid;
        let last_added = ev.iter().rev().find_map(|e| match e {
            DiscoveryEvent::Added(ep) => Some(ep.queue_uid),
            _ => None,
        });
        assert_eq!(last_added, Some(uid));
        // Either the READY removal was seen (ReadyRemoved) or only the uid change was.
        assert!(matches!(
            removed(&ev, "beta"),
            Some(
                RemoveReason::QueueReplaced
                    | RemoveReason::ReadyRemoved
                    | RemoveReason::DirectoryRemoved
            )
        ));

        // Directory deleted.
        drop(b);
        std::fs::remove_dir_all(layout.strategy_dir("beta").unwrap()).unwrap();
        let ev = poll_until(&mut disc, false, "beta deleted", |e| {
            removed(e, "beta").is_some()
        });
        assert_eq!(removed(&ev, "beta"), Some(RemoveReason::DirectoryRemoved));

        // Things that must never attach: a symlinked strategy directory, a bad name, garbage
        // markers, READY without a queue.
        let outside = tempfile::tempdir().unwrap();
        let other = BusLayout::create(outside.path()).unwrap();
        let mut o = StrategyEndpoints::open(&other, "ext", small_strategy()).unwrap();
        o.mark_ready().unwrap();
        std::os::unix::fs::symlink(
            other.strategy_dir("ext").unwrap(),
            layout.strategies_dir().join("evil"),
        )
        .unwrap();
        std::fs::create_dir(layout.strategies_dir().join(".hidden")).unwrap();
        let g = layout.strategy_dir("garbage").unwrap();
        std::fs::create_dir(&g).unwrap();
        std::fs::write(g.join("READY"), b"not a marker").unwrap();
        let n = layout.strategy_dir("noqueue").unwrap();
        std::fs::create_dir(&n).unwrap();
        Ready::new(1, 1).write(&n.join("READY"), 0o660).unwrap();
        Lease::for_current_process(chronicle_core::os::realtime_ns(), 60_000_000_000)
            .write(&n.join("LEASE"), 0o660)
            .unwrap();
        std::thread::sleep(Duration::from_millis(60));
        disc.request_rescan();
        let ev = disc.poll().unwrap();
        assert!(ev.is_empty(), "{ev:?}");
        // Only "alpha" (dropped without close: READY stays, lease live until it expires).
        let ids: Vec<String> = disc.attached().map(|e| e.id.clone()).collect();
        assert_eq!(ids, vec!["alpha".to_string()]);
        drop(o);
    }
}

/// 200 sequential create / READY / delete cycles: every READY is attached, every deletion
/// detached, exactly one event each, nothing else.
fn churn_sequential(use_inotify: bool, cycles: usize) {
    let d = tempfile::tempdir().unwrap();
    let layout = BusLayout::create(d.path()).unwrap();
    let mut disc = RouterDiscovery::new(&layout, fast(use_inotify)).unwrap();
    for i in 0..cycles {
        let id = format!("s{}", i % 7);
        let mut s = StrategyEndpoints::open(&layout, &id, small_strategy()).unwrap();
        s.mark_ready().unwrap();
        let ev = poll_until(&mut disc, false, "added", |e| added(e, &id));
        assert_eq!(ev.len(), 1, "cycle {i}: {ev:?}");
        // Alternate the ways an endpoint goes away.
        let want = match i % 3 {
            0 => {
                s.close().unwrap();
                RemoveReason::ReadyRemoved
            }
            1 => {
                drop(s);
                std::fs::remove_dir_all(layout.strategy_dir(&id).unwrap()).unwrap();
                RemoveReason::DirectoryRemoved
            }
            _ => {
                drop(s);
                std::fs::remove_file(layout.strategy_ready(&id).unwrap()).unwrap();
                RemoveReason::ReadyRemoved
            }
        };
        let ev = poll_until(&mut disc, false, "removed", |e| removed(e, &id).is_some());
        assert_eq!(ev.len(), 1, "cycle {i}: {ev:?}");
        assert_eq!(removed(&ev, &id), Some(want), "cycle {i}");
        assert_eq!(disc.attached().count(), 0);
    }
    eprintln!("stats: {:?}", disc.stats());
}

#[test]
fn churn_200_cycles_with_inotify() {
    churn_sequential(true, 200);
}

#[test]
fn churn_cycles_with_rescans_only() {
    churn_sequential(false, 60);
}

/// A thread creates and deletes strategies as fast as it can while discovery polls: events
/// alternate per id, never name a strategy that was never created, and the final attached set
/// is exactly the set of strategies left READY.
#[test]
fn concurrent_churn_has_no_phantoms() {
    let d = tempfile::tempdir().unwrap();
    let layout = BusLayout::create(d.path()).unwrap();
    let mut disc = RouterDiscovery::new(&layout, fast(true)).unwrap();
    let l2 = layout.clone();
    let churner = std::thread::spawn(move || {
        let mut keep = BTreeSet::new();
        let mut created = BTreeSet::new();
        for i in 0..200usize {
            let id = format!("c{}", i % 13);
            created.insert(id.clone());
            let mut s = StrategyEndpoints::open(&l2, &id, small_strategy()).unwrap();
            s.mark_ready().unwrap();
            if i >= 190 {
                keep.insert(id);
                std::mem::forget(s); // stays READY with a live lease (this process)
            } else if i % 2 == 0 {
                s.close().unwrap();
            } else {
                drop(s);
                std::fs::remove_dir_all(l2.strategy_dir(&id).unwrap()).unwrap();
            }
        }
        (keep, created)
    });
    let mut events = Vec::new();
    let end = Instant::now() + Duration::from_secs(30);
    while !churner.is_finished() {
        disc.poll_into(&mut events).unwrap();
        assert!(Instant::now() < end, "churner watchdog");
        std::thread::sleep(Duration::from_micros(100));
    }
    let (keep, created) = churner.join().unwrap();
    // Let the last inotify events and a rescan through.
    std::thread::sleep(Duration::from_millis(60));
    disc.request_rescan();
    disc.poll_into(&mut events).unwrap();
    let mut state: BTreeMap<String, bool> = BTreeMap::new();
    for e in &events {
        match e {
            DiscoveryEvent::Added(ep) => {
                assert!(created.contains(&ep.id), "phantom {ep:?}");
                let was = state.insert(ep.id.clone(), true).unwrap_or(false);
                assert!(!was, "double Added for {}", ep.id);
            }
            DiscoveryEvent::Removed(ep, _) => {
                let was = state.insert(ep.id.clone(), false).unwrap_or(false);
                assert!(was, "Removed without Added for {}", ep.id);
            }
        }
    }
    let attached: BTreeSet<String> = disc.attached().map(|e| e.id.clone()).collect();
    assert_eq!(attached, keep);
    let from_events: BTreeSet<String> = state
        .into_iter()
        .filter(|(_, on)| *on)
        .map(|(id, _)| id)
        .collect();
    assert_eq!(from_events, keep);
    eprintln!("events: {}, stats: {:?}", events.len(), disc.stats());
}
