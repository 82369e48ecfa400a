//! Behaviour of the DRR scheduler, one rule at a time. Time is passed explicitly (`*_at`) wherever
//! a result depends on it, so these tests are deterministic.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::sync::mpsc;
use std::sync::{Arc, Barrier};
use std::thread;
use std::time::{Duration, Instant};

use chronicle_bus::sched::{
    Backpressure, ConfigError, Dequeued, Enqueued, RejectReason, Scheduler, SchedulerConfig, Task,
    TenantKey,
};

fn nz(n: u32) -> NonZeroU32 {
    NonZeroU32::new(n).unwrap()
}

fn t(id: u64) -> TenantKey {
    TenantKey::new(id)
}

fn cfg() -> SchedulerConfig {
    SchedulerConfig::default()
}

fn accepted<T>(r: Result<Enqueued<T>, chronicle_bus::sched::Rejected<T>>) {
    match r {
        Ok(Enqueued::Queued) => {}
        Ok(Enqueued::Evicted(_)) => panic!("unexpected eviction"),
        Err(e) => panic!("unexpected rejection: {e}"),
    }
}

/// Dequeues until empty at `now`, returning (tenant, payload) in dispatch order.
fn drain<T>(s: &Scheduler<T>, now: Instant) -> Vec<(u64, T)> {
    let mut out = Vec::new();
    loop {
        match s.try_dequeue_at(now) {
            Dequeued::Task(k, task) => out.push((k.id(), task.into_payload())),
            Dequeued::Empty | Dequeued::Closed => return out,
        }
    }
}

/// Runs `f` on a thread and fails the test (instead of hanging) if it does not finish in time.
fn with_watchdog<R: Send + 'static>(limit: Duration, f: impl FnOnce() -> R + Send + 'static) -> R {
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        let _ = tx.send(f());
    });
    rx.recv_timeout(limit)
        .expect("watchdog: the test body did not finish in time")
}

#[test]
fn never_returns_an_expired_task() {
    for shards in [1, 3] {
        let s = Scheduler::new(cfg().with_shards(shards)).unwrap();
        let base = Instant::now();
        let mut live = 0;
        for i in 0..300u64 {
            let mut task = Task::new(i);
            // Deadlines spread over [base+1ms, base+30ms]; some tasks have none.
            if i % 5 != 0 {
                task = task.with_deadline(base + Duration::from_millis(1 + i % 30));
            }
            if i % 7 == 0 {
                task = task.urgent();
            }
            accepted(s.enqueue_at(t(i % 6), task, base));
        }
        let now = base + Duration::from_millis(15);
        let mut got = 0;
        loop {
            match s.try_dequeue_at(now) {
                Dequeued::Task(_, task) => {
                    got += 1;
                    if let Some(d) = task.deadline() {
                        assert!(
                            d > now,
                            "expired task returned: deadline {d:?} <= now {now:?}"
                        );
                        live += 1;
                    }
                }
                Dequeued::Empty => break,
                Dequeued::Closed => panic!("not closed"),
            }
        }
        let c = s.counters();
        // Deadline base+1+(i%30) ms is live at base+15ms iff 1 + i%30 > 15.
        let expect_live_with_deadline = (0..300u64)
            .filter(|i| i % 5 != 0 && 1 + i % 30 > 15)
            .count();
        assert_eq!(live, expect_live_with_deadline);
        assert_eq!(got as u64, c.dequeued);
        assert_eq!(c.expired, 300 - c.dequeued);
        assert_eq!(c.queue_len, 0);
    }
}

#[test]
fn rejects_at_max_global_with_the_task_handed_back() {
    let s = Scheduler::new(cfg().with_max_global(5).with_shards(2)).unwrap();
    for i in 0..5u64 {
        accepted(s.enqueue(t(i % 3), Task::new(i)));
    }
    let err = s.enqueue(t(9), Task::new(99)).unwrap_err();
    assert_eq!(err.reason(), RejectReason::GlobalFull);
    assert_eq!(err.into_task().into_payload(), 99);
    let err = s.enqueue(t(0), Task::new(100).urgent()).unwrap_err();
    assert_eq!(err.reason(), RejectReason::GlobalFull);
    assert!(err.task().is_urgent());
    let c = s.counters();
    assert_eq!(c.rejected.global_full, 2);
    assert_eq!(c.rejected.total(), 2);
    assert_eq!(c.enqueued, 5);
    assert_eq!(c.queue_len, 5);
    // Room again after one dequeue.
    assert!(matches!(s.try_dequeue(), Dequeued::Task(..)));
    accepted(s.enqueue(t(9), Task::new(101)));
}

#[test]
fn rejects_at_max_per_tenant_with_the_right_reason() {
    let s = Scheduler::new(cfg().with_max_per_tenant(3)).unwrap();
    for i in 0..3u64 {
        accepted(s.enqueue(t(1), Task::new(i)));
    }
    let err = s.enqueue(t(1), Task::new(3)).unwrap_err();
    assert_eq!(err.reason(), RejectReason::TenantFull);
    assert_eq!(err.into_task().into_payload(), 3);
    // Another tenant is unaffected.
    accepted(s.enqueue(t(2), Task::new(10)));
    let c = s.counters();
    assert_eq!(c.rejected.tenant_full, 1);
    assert_eq!(c.rejected.global_full, 0);
    let ts = s.tenant_stats(t(1)).unwrap();
    assert_eq!((ts.enqueued, ts.rejected, ts.queued), (3, 1, 3));
}

#[test]
fn full_tenant_drops_expired_heads_before_refusing() {
    let s = Scheduler::new(cfg().with_max_per_tenant(2)).unwrap();
    let base = Instant::now();
    let soon = base + Duration::from_millis(1);
    accepted(s.enqueue_at(t(1), Task::new(0).with_deadline(soon), base));
    accepted(s.enqueue_at(t(1), Task::new(1), base));
    // Still live: refused.
    assert_eq!(
        s.enqueue_at(t(1), Task::new(2), base).unwrap_err().reason(),
        RejectReason::TenantFull
    );
    // Head expired: it makes room.
    let later = base + Duration::from_millis(2);
    accepted(s.enqueue_at(t(1), Task::new(3), later));
    assert_eq!(s.counters().expired, 1);
    assert_eq!(drain(&s, later), vec![(1, 1), (1, 3)]);
}

#[test]
fn too_many_tenants_is_refused() {
    let s = Scheduler::new(cfg().with_max_tenants(2)).unwrap();
    accepted(s.enqueue(t(1), Task::new(())));
    accepted(s.enqueue(t(2), Task::new(())));
    let err = s.enqueue(t(3), Task::new(())).unwrap_err();
    assert_eq!(err.reason(), RejectReason::TooManyTenants);
    assert_eq!(
        s.set_quantum(t(4), nz(2)),
        Err(RejectReason::TooManyTenants)
    );
    // Known tenants still work, also after they went idle.
    let _ = drain(&s, Instant::now());
    accepted(s.enqueue(t(1), Task::new(())));
    assert_eq!(s.counters().rejected.too_many_tenants, 1);
}

#[test]
fn evict_oldest_hands_back_the_oldest_normal_task() {
    let s = Scheduler::new(
        cfg()
            .with_max_per_tenant(3)
            .with_backpressure(Backpressure::EvictOldest),
    )
    .unwrap();
    accepted(s.enqueue(t(1), Task::new(0).urgent()));
    accepted(s.enqueue(t(1), Task::new(1)));
    accepted(s.enqueue(t(1), Task::new(2)));
    match s.enqueue(t(1), Task::new(3)) {
        Ok(Enqueued::Evicted(old)) => assert_eq!(old.into_payload(), 1),
        other => panic!("expected an eviction, got {other:?}"),
    }
    match s.enqueue(t(1), Task::new(4).urgent()) {
        Ok(Enqueued::Evicted(old)) => assert_eq!(old.into_payload(), 2),
        other => panic!("expected an eviction, got {other:?}"),
    }
    // Now urgent 0, urgent 4, normal 3: one normal task left to evict.
    match s.enqueue(t(1), Task::new(5).urgent()) {
        Ok(Enqueued::Evicted(old)) => assert_eq!(old.into_payload(), 3),
        other => panic!("expected an eviction, got {other:?}"),
    }
    // Only urgent tasks are held: nothing may be evicted.
    let err = s.enqueue(t(1), Task::new(6)).unwrap_err();
    assert_eq!(err.reason(), RejectReason::TenantFull);
    let c = s.counters();
    assert_eq!((c.enqueued, c.evicted, c.queue_len), (6, 3, 3));
    assert_eq!(drain(&s, Instant::now()), vec![(1, 0), (1, 4), (1, 5)]);
}

#[test]
fn close_refuses_new_work_then_drains_then_reports_closed() {
    let s = Scheduler::new(cfg().with_shards(2)).unwrap();
    accepted(s.enqueue(t(1), Task::new(1)));
    accepted(s.enqueue(t(2), Task::new(2)));
    s.close();
    assert!(s.is_closed());
    assert_eq!(
        s.enqueue(t(1), Task::new(3)).unwrap_err().reason(),
        RejectReason::Closed
    );
    let mut got: Vec<u64> = drain(&s, Instant::now())
        .into_iter()
        .map(|(_, p)| p)
        .collect();
    got.sort_unstable();
    assert_eq!(got, vec![1, 2]);
    assert!(s.try_dequeue().is_closed());
    assert!(s.dequeue_blocking(Duration::from_secs(30)).is_closed());
    assert_eq!(s.counters().rejected.closed, 1);
}

#[test]
fn close_wakes_every_blocked_consumer() {
    let results = with_watchdog(Duration::from_secs(20), || {
        let s = Arc::new(Scheduler::<u32>::new(cfg()).unwrap());
        let start = Arc::new(Barrier::new(4));
        let handles: Vec<_> = (0..3)
            .map(|_| {
                let s = Arc::clone(&s);
                let start = Arc::clone(&start);
                thread::spawn(move || {
                    start.wait();
                    // Far longer than the watchdog: only `close` can end this wait in time.
                    s.dequeue_blocking(Duration::from_secs(3600)).is_closed()
                })
            })
            .collect();
        start.wait();
        thread::sleep(Duration::from_millis(50));
        s.close();
        handles
            .into_iter()
            .map(|h| h.join().unwrap())
            .collect::<Vec<_>>()
    });
    assert_eq!(results, vec![true, true, true]);
}

#[test]
fn blocked_consumer_is_woken_by_an_enqueue() {
    let got = with_watchdog(Duration::from_secs(20), || {
        let s = Arc::new(Scheduler::<u32>::new(cfg()).unwrap());
        let consumer = {
            let s = Arc::clone(&s);
            thread::spawn(move || {
                s.dequeue_blocking(Duration::from_secs(3600))
                    .into_task()
                    .map(|(_, t)| t.into_payload())
            })
        };
        thread::sleep(Duration::from_millis(30));
        accepted(s.enqueue(t(7), Task::new(42)));
        consumer.join().unwrap()
    });
    assert_eq!(got, Some(42));
}

#[test]
fn blocking_dequeue_times_out_with_empty() {
    let s = Scheduler::<u32>::new(cfg()).unwrap();
    let start = Instant::now();
    assert!(s.dequeue_blocking(Duration::from_millis(20)).is_empty());
    assert!(start.elapsed() >= Duration::from_millis(20));
}

/// Keeps every tenant backlogged and counts the cost each one is served over `dispatches`.
fn served_shares(
    s: &Scheduler<u64>,
    tenants: &[(u64, u32)],
    dispatches: usize,
    cost_of: impl Fn(u64, u64) -> u32,
) -> HashMap<u64, u64> {
    let now = Instant::now();
    let mut seq: HashMap<u64, u64> = HashMap::new();
    for &(k, _) in tenants {
        for _ in 0..4 {
            let n = seq.entry(k).or_default();
            *n += 1;
            accepted(s.enqueue_at(t(k), Task::new(*n).with_cost(nz(cost_of(k, *n))), now));
        }
    }
    let mut served: HashMap<u64, u64> = HashMap::new();
    for _ in 0..dispatches {
        let Dequeued::Task(k, task) = s.try_dequeue_at(now) else {
            panic!("backlogged scheduler ran dry")
        };
        *served.entry(k.id()).or_default() += u64::from(task.cost());
        let n = seq.entry(k.id()).or_default();
        *n += 1;
        accepted(s.enqueue_at(k, Task::new(*n).with_cost(nz(cost_of(k.id(), *n))), now));
    }
    served
}

fn assert_shares(served: &HashMap<u64, u64>, weights: &[(u64, u32)]) {
    let total: u64 = served.values().sum();
    let wsum: u32 = weights.iter().map(|&(_, w)| w).sum();
    for &(k, w) in weights {
        let want = f64::from(w) / f64::from(wsum);
        let got = served[&k] as f64 / total as f64;
        assert!(
            (got - want).abs() <= 0.05 * want,
            "tenant {k}: share {got:.4}, configured {want:.4} (served {served:?})"
        );
    }
}

#[test]
fn weights_give_bandwidth_shares_within_5_percent() {
    let weights = [(1, 1), (2, 2), (3, 5), (4, 8)];
    for shards in [1, 4] {
        let mut c = cfg().with_shards(shards);
        for &(k, q) in &weights {
            c = c.with_quantum(t(k), nz(q));
        }
        let s = Scheduler::new(c).unwrap();
        let served = served_shares(&s, &weights, 100_000, |_, _| 1);
        assert_shares(&served, &weights);
    }
}

#[test]
fn weights_hold_in_cost_units_with_mixed_costs() {
    // Quanta 10/20/50, costs 1..=17 varying per task: shares are of cost served, not of tasks.
    let weights = [(11, 10), (12, 20), (13, 50)];
    for shards in [1, 3] {
        let mut c = cfg().with_shards(shards);
        for &(k, q) in &weights {
            c = c.with_quantum(t(k), nz(q));
        }
        let s = Scheduler::new(c).unwrap();
        let served = served_shares(&s, &weights, 100_000, |k, n| {
            1 + ((k * 7 + n * 13) % 17) as u32
        });
        assert_shares(&served, &weights);
    }
}

#[test]
fn quantum_changes_at_run_time() {
    let s = Scheduler::new(cfg().with_shards(2)).unwrap();
    let weights = [(1, 1), (2, 1)];
    assert_shares(&served_shares(&s, &weights, 20_000, |_, _| 1), &weights);
    s.set_quantum(t(2), nz(3)).unwrap();
    assert_eq!(s.tenant_stats(t(2)).unwrap().quantum, 3);
    let before = (
        s.tenant_stats(t(1)).unwrap().dequeued,
        s.tenant_stats(t(2)).unwrap().dequeued,
    );
    let _ = served_shares(&s, &weights, 40_000, |_, _| 1);
    let d1 = s.tenant_stats(t(1)).unwrap().dequeued - before.0;
    let d2 = s.tenant_stats(t(2)).unwrap().dequeued - before.1;
    let ratio = d2 as f64 / d1 as f64;
    assert!(
        (ratio - 3.0).abs() < 0.15,
        "after set_quantum the ratio is {ratio:.3}, want 3"
    );
}

#[test]
fn cold_tenant_keeps_getting_service_while_a_hot_tenant_floods() {
    for shards in [1, 2, 4] {
        let s = Scheduler::new(
            cfg()
                .with_shards(shards)
                .with_max_per_tenant(100_000)
                .with_max_global(200_000),
        )
        .unwrap();
        let now = Instant::now();
        let hot = t(1);
        let cold = t(2);
        for i in 0..50_000u64 {
            accepted(s.enqueue_at(hot, Task::new(i), now));
        }
        let mut waits = Vec::new();
        for round in 0..1_000u64 {
            accepted(s.enqueue_at(cold, Task::new(1_000_000 + round), now));
            // The hot tenant keeps flooding between cold arrivals.
            for j in 0..5 {
                accepted(s.enqueue_at(hot, Task::new(100_000 + round * 5 + j), now));
            }
            let mut n = 0;
            loop {
                n += 1;
                let Dequeued::Task(k, _) = s.try_dequeue_at(now) else {
                    panic!("ran dry")
                };
                if k == cold {
                    break;
                }
                assert!(
                    n < 10,
                    "cold tenant not served within {n} dispatches (shards {shards})"
                );
            }
            waits.push(n);
        }
        // Equal quanta of 1: the cold task goes out within two dispatches of its arrival.
        assert!(waits.iter().all(|&n| n <= 2), "waits {:?}", &waits[..20]);
    }
}

#[test]
fn large_costs_and_small_quanta_do_not_starve_or_stall() {
    for shards in [1, 3] {
        let s = Scheduler::new(cfg().with_shards(shards)).unwrap();
        let now = Instant::now();
        // Quantum 1 everywhere; tenant 1's tasks cost a million.
        for i in 0..3u64 {
            accepted(s.enqueue_at(t(1), Task::new(i).with_cost(nz(1_000_000)), now));
        }
        for i in 0..10u64 {
            accepted(s.enqueue_at(t(2 + i % 3), Task::new(100 + i).with_cost(nz(7)), now));
        }
        let mut order = Vec::new();
        // Every call dispatches while anything is queued: the idle rounds are skipped, not spun.
        for _ in 0..13 {
            match s.try_dequeue_at(now) {
                Dequeued::Task(k, task) => order.push((k.id(), task.into_payload())),
                other => panic!("{other:?} with {} queued", s.queue_len()),
            }
        }
        assert!(s.try_dequeue_at(now).is_empty());
        let big: Vec<u64> = order
            .iter()
            .filter(|(k, _)| *k == 1)
            .map(|&(_, p)| p)
            .collect();
        assert_eq!(big, vec![0, 1, 2]);
        // The expensive tenant is not served ahead of the cheap ones: its first task needs a
        // million quanta while theirs need seven.
        assert_ne!(order[0].0, 1);
    }
}

#[test]
fn drr_order_matches_the_rule_exactly() {
    // One shard; A has quantum 2, B quantum 1. A: four tasks of cost 1. B: costs 2 then 1.
    let s = Scheduler::new(cfg().with_shards(1).with_quantum(t(1), nz(2))).unwrap();
    let now = Instant::now();
    for i in 0..4u64 {
        accepted(s.enqueue_at(t(1), Task::new(i), now));
    }
    accepted(s.enqueue_at(t(2), Task::new(10).with_cost(nz(2)), now));
    accepted(s.enqueue_at(t(2), Task::new(11), now));
    // Turn A (deficit 2): a0, a1; a2 does not fit: deficit 2, back. Turn B (deficit 1): b10 costs
    // 2: deficit 2, back. Turn A: a2, a3, empty, leaves. Turn B: b10 (deficit 0); b11 does not
    // fit: deficit 1, back. Turn B: b11.
    assert_eq!(
        drain(&s, now),
        vec![(1, 0), (1, 1), (1, 2), (1, 3), (2, 10), (2, 11)]
    );
}

#[test]
fn urgent_goes_ahead_of_its_own_tenant_only() {
    let s = Scheduler::new(cfg().with_shards(1)).unwrap();
    let now = Instant::now();
    for i in 0..3u64 {
        accepted(s.enqueue_at(t(1), Task::new(i), now));
    }
    for i in 0..3u64 {
        accepted(s.enqueue_at(t(2), Task::new(10 + i), now));
    }
    accepted(s.enqueue_at(t(1), Task::new(99).urgent(), now));
    accepted(s.enqueue_at(t(1), Task::new(98).urgent(), now));
    // Quantum 1: turns alternate A, B, A, B...; A's urgent tasks come first, in their own order.
    assert_eq!(
        drain(&s, now),
        vec![
            (1, 99),
            (2, 10),
            (1, 98),
            (2, 11),
            (1, 0),
            (2, 12),
            (1, 1),
            (1, 2)
        ]
    );
}

#[test]
fn marking_everything_urgent_buys_no_bandwidth() {
    let s = Scheduler::new(cfg().with_shards(2)).unwrap();
    let now = Instant::now();
    let mut served: HashMap<u64, u64> = HashMap::new();
    for i in 0..8u64 {
        accepted(s.enqueue_at(t(1), Task::new(i).urgent(), now));
        accepted(s.enqueue_at(t(2), Task::new(i), now));
    }
    for i in 0..10_000u64 {
        let Dequeued::Task(k, _) = s.try_dequeue_at(now) else {
            panic!("ran dry")
        };
        *served.entry(k.id()).or_default() += 1;
        let task = if k.id() == 1 {
            Task::new(i).urgent()
        } else {
            Task::new(i)
        };
        accepted(s.enqueue_at(k, task, now));
    }
    assert_eq!(served[&1], served[&2]);
}

#[test]
fn stats_report_queue_time_counters_and_top_tenants() {
    let s = Scheduler::new(cfg().with_shards(2).with_top_tenants(2)).unwrap();
    let base = Instant::now();
    for i in 0..10u64 {
        accepted(s.enqueue_at(t(1), Task::new(i), base));
    }
    for i in 0..5u64 {
        accepted(s.enqueue_at(t(2), Task::new(i), base));
    }
    accepted(s.enqueue_at(t(3), Task::new(0), base));
    // Every task waits exactly 1 ms.
    let got = drain(&s, base + Duration::from_millis(1));
    assert_eq!(got.len(), 16);
    let st = s.stats();
    assert_eq!(st.counters.enqueued, 16);
    assert_eq!(st.counters.dequeued, 16);
    assert_eq!(st.counters.queue_len, 0);
    assert_eq!(st.tenants, 3);
    assert_eq!(st.queue_time.count, 16);
    for p in [
        st.queue_time.p50,
        st.queue_time.p99,
        st.queue_time.p999,
        st.queue_time.max,
    ] {
        let ns = p.as_nanos() as f64;
        assert!(
            (ns - 1e6).abs() <= 0.01 * 1e6,
            "percentile {p:?} is not ~1ms"
        );
    }
    let top: Vec<(u64, u64)> = st
        .top_tenants
        .iter()
        .map(|ts| (ts.tenant.id(), ts.dequeued))
        .collect();
    assert_eq!(top, vec![(1, 10), (2, 5)]);
    assert_eq!(s.queue_time_histogram().len(), 16);
}

#[test]
fn config_is_validated() {
    let err = |c: SchedulerConfig| Scheduler::<()>::new(c).unwrap_err();
    assert_eq!(err(cfg().with_shards(0)), ConfigError::Shards { shards: 0 });
    assert_eq!(
        err(cfg().with_max_global(0)),
        ConfigError::ZeroLimit {
            field: "max_global"
        }
    );
    assert_eq!(
        err(cfg().with_max_per_tenant(0)),
        ConfigError::ZeroLimit {
            field: "max_per_tenant"
        }
    );
    assert_eq!(
        err(cfg()
            .with_max_tenants(1)
            .with_quantum(t(1), nz(1))
            .with_quantum(t(2), nz(1))),
        ConfigError::TooManyQuanta {
            quanta: 2,
            max_tenants: 1
        }
    );
    assert!(matches!(
        err(cfg().with_queue_time_histogram(Duration::from_secs(1), 9)),
        ConfigError::QueueTimeHistogram { .. }
    ));
    // The same tenant twice is one tenant; the later quantum wins.
    let s = Scheduler::<()>::new(
        cfg()
            .with_max_tenants(1)
            .with_quantum(t(1), nz(1))
            .with_quantum(t(1), nz(4)),
    )
    .unwrap();
    assert_eq!(s.tenant_stats(t(1)).unwrap().quantum, 4);
}

#[test]
fn tenant_keys_hash_stably() {
    // FNV-1a 64 of "a" and of "strategy-7" are fixed values, whatever the process.
    assert_eq!(TenantKey::from_name("a").id(), 0xaf63_dc4c_8601_ec8c);
    assert_eq!(
        TenantKey::from_name("strategy-7"),
        TenantKey::from_name("strategy-7")
    );
    assert_ne!(
        TenantKey::from_name("strategy-7"),
        TenantKey::from_name("strategy-8")
    );
    // splitmix64's finalizer of 1.
    assert_eq!(TenantKey::new(1).stable_hash(), 0x5692_161d_100b_05e5);
}

/// A payload whose `Drop` panics when armed.
struct Bomb(bool);

impl Drop for Bomb {
    fn drop(&mut self) {
        if self.0 {
            panic!("payload drop panicked");
        }
    }
}

#[test]
fn a_panicking_payload_drop_leaves_the_scheduler_consistent() {
    let s = Scheduler::new(cfg().with_shards(2)).unwrap();
    let base = Instant::now();
    let later = base + Duration::from_millis(2);
    accepted(s.enqueue_at(
        t(1),
        Task::new(Bomb(true)).with_deadline(base + Duration::from_millis(1)),
        base,
    ));
    accepted(s.enqueue_at(t(2), Task::new(Bomb(false)), base));
    // The expired bomb is dropped inside the scheduler, with a shard lock held; the panic reaches
    // the caller.
    let mut dispatched = 0;
    for _ in 0..2 {
        match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| s.try_dequeue_at(later))) {
            Ok(Dequeued::Task(k, _)) => {
                assert_eq!(k, t(2));
                dispatched += 1;
            }
            Ok(other) => panic!("unexpected {other:?}"),
            Err(_) => {}
        }
    }
    assert_eq!(dispatched, 1);
    // Counts are exact and the (poisoned) shard keeps working.
    let c = s.counters();
    assert_eq!(
        (c.enqueued, c.dequeued, c.expired, c.queue_len),
        (2, 1, 1, 0)
    );
    assert!(s.try_dequeue_at(later).is_empty());
    accepted(s.enqueue_at(t(1), Task::new(Bomb(false)), later));
    assert!(matches!(
        s.dequeue_blocking(Duration::from_secs(5)),
        Dequeued::Task(..)
    ));
    assert!(s.dequeue_blocking(Duration::from_millis(10)).is_empty());
}

// ---- Cancels: the urgent reserve, removal, expired tasks handed back ----

#[test]
fn urgent_reserve_admits_cancels_into_a_full_tenant_and_a_full_scheduler() {
    use chronicle_bus::sched::LocalScheduler;
    let now = Instant::now();
    let mut s: LocalScheduler<u32> = LocalScheduler::new(
        cfg()
            .with_max_per_tenant(2)
            .with_max_global(3)
            .with_urgent_reserve(2),
    )
    .unwrap();
    accepted(s.enqueue_at(t(1), Task::new(1), now));
    accepted(s.enqueue_at(t(1), Task::new(2), now));
    // The tenant is full for new orders...
    let r = s.enqueue_at(t(1), Task::new(3), now).unwrap_err();
    assert_eq!(r.reason(), RejectReason::TenantFull);
    accepted(s.enqueue_at(t(2), Task::new(20), now));
    // ...and so is the scheduler, but two cancels still get in, the third does not.
    assert_eq!(
        s.enqueue_at(t(2), Task::new(21), now).unwrap_err().reason(),
        RejectReason::GlobalFull
    );
    accepted(s.enqueue_at(t(1), Task::new(100).urgent(), now));
    accepted(s.enqueue_at(t(1), Task::new(101).urgent(), now));
    assert_eq!(
        s.enqueue_at(t(1), Task::new(102).urgent(), now)
            .unwrap_err()
            .reason(),
        RejectReason::TenantFull
    );
    assert_eq!(s.queue_len(), 5);
    // The cancels go first within their tenant.
    let mut order = Vec::new();
    while let Dequeued::Task(_, task) = s.try_dequeue_at(now) {
        order.push(task.into_payload());
    }
    assert_eq!(order.len(), 5);
    let pos = |v: u32| order.iter().position(|&x| x == v).unwrap();
    assert!(pos(100) < pos(1) && pos(101) < pos(1));
    // Every place was given back: the limits hold again as before.
    assert_eq!(s.queue_len(), 0);
    accepted(s.enqueue_at(t(2), Task::new(22), now));
}

#[test]
fn urgent_reserve_zero_keeps_the_plain_limits_for_urgent_tasks() {
    let now = Instant::now();
    let s: Scheduler<u32> = Scheduler::new(cfg().with_max_per_tenant(1)).unwrap();
    accepted(s.enqueue_at(t(1), Task::new(1), now));
    assert_eq!(
        s.enqueue_at(t(1), Task::new(2).urgent(), now)
            .unwrap_err()
            .reason(),
        RejectReason::TenantFull
    );
}

#[test]
fn remove_last_where_takes_the_newest_match_and_counts_it() {
    let now = Instant::now();
    let s: Scheduler<(u32, u32)> = Scheduler::new(cfg().with_shards(3)).unwrap();
    for (i, id) in [7u32, 8, 7, 9].into_iter().enumerate() {
        accepted(s.enqueue_at(t(1), Task::new((id, i as u32)), now));
    }
    accepted(s.enqueue_at(t(2), Task::new((7, 99)), now));
    let got = s.remove_last_where(t(1), |p| p.0 == 7).unwrap();
    assert_eq!(
        got.into_payload(),
        (7, 2),
        "the newest of tenant 1's matches"
    );
    assert!(s.remove_last_where(t(1), |p| p.0 == 42).is_none());
    assert!(
        s.remove_last_where(t(3), |_| true).is_none(),
        "unknown tenant"
    );
    assert_eq!(s.tenant_stats(t(1)).unwrap().removed, 1);
    assert_eq!(s.counters().removed, 1);
    assert_eq!(s.queue_len(), 4);
    let mut left = Vec::new();
    while let Dequeued::Task(_, task) = s.try_dequeue_at(now) {
        left.push(task.into_payload());
    }
    left.sort_unstable();
    assert_eq!(left, vec![(7, 0), (7, 99), (8, 1), (9, 3)]);
    // A tenant emptied by removal leaves the ring at its turn; nothing is left behind.
    assert!(s.remove_last_where(t(1), |_| true).is_none());
    assert_eq!(s.queue_len(), 0);
    assert!(matches!(s.try_dequeue_at(now), Dequeued::Empty));
}

#[test]
fn keep_expired_hands_every_expired_task_back_once() {
    use chronicle_bus::sched::LocalScheduler;
    let now = Instant::now();
    let later = now + Duration::from_millis(10);
    let mut s: LocalScheduler<u32> =
        LocalScheduler::new(cfg().with_keep_expired(true).with_max_per_tenant(2)).unwrap();
    let soon = now + Duration::from_millis(1);
    accepted(s.enqueue_at(t(1), Task::new(1).with_deadline(soon), now));
    accepted(s.enqueue_at(t(1), Task::new(2).with_deadline(soon), now));
    // Full: the expired heads are purged to make room, and kept.
    accepted(s.enqueue_at(t(1), Task::new(3).with_deadline(later), later));
    accepted(s.enqueue_at(t(2), Task::new(4).with_deadline(soon), now));
    // Serving drops tenant 2's expired head (kept) and sends 3 (not yet expired at `now`).
    match s.try_dequeue_at(later - Duration::from_millis(1)) {
        Dequeued::Task(_, task) => assert_eq!(task.into_payload(), 3),
        other => panic!("{other:?}"),
    }
    assert!(matches!(s.try_dequeue_at(later), Dequeued::Empty));
    let mut out = Vec::new();
    s.drain_expired(&mut out);
    let mut got: Vec<(u64, u32)> = out
        .into_iter()
        .map(|(k, task)| (k.id(), task.into_payload()))
        .collect();
    got.sort_unstable();
    assert_eq!(got, vec![(1, 1), (1, 2), (2, 4)]);
    assert_eq!(s.counters().expired, 3);
    let mut again = Vec::new();
    s.drain_expired(&mut again);
    assert!(again.is_empty(), "handed back once");
}

#[test]
fn purge_expired_at_answers_expired_heads_without_a_dispatch() {
    use chronicle_bus::sched::LocalScheduler;
    let now = Instant::now();
    let soon = now + Duration::from_millis(1);
    let later = now + Duration::from_secs(60);
    let mut s: LocalScheduler<u32> = LocalScheduler::new(cfg().with_keep_expired(true)).unwrap();
    accepted(s.enqueue_at(t(1), Task::new(1).with_deadline(soon), now));
    accepted(s.enqueue_at(t(1), Task::new(2).with_deadline(later), now));
    accepted(s.enqueue_at(t(1), Task::new(3).with_deadline(soon), now));
    accepted(s.enqueue_at(t(2), Task::new(4).with_deadline(soon), now));
    assert_eq!(s.purge_expired_at(now), 0);
    // Only heads go: task 3 waits behind the live task 2.
    assert_eq!(s.purge_expired_at(soon), 2);
    let mut out = Vec::new();
    s.drain_expired(&mut out);
    let mut got: Vec<u32> = out.into_iter().map(|(_, t)| t.into_payload()).collect();
    got.sort_unstable();
    assert_eq!(got, vec![1, 4]);
    assert_eq!(s.queue_len(), 2);
    match s.try_dequeue_at(soon) {
        Dequeued::Task(_, task) => assert_eq!(task.into_payload(), 2),
        other => panic!("{other:?}"),
    }
    // The shared scheduler does the same.
    let shared: Scheduler<u32> = Scheduler::new(cfg().with_shards(2)).unwrap();
    accepted(shared.enqueue_at(t(5), Task::new(5).with_deadline(soon), now));
    assert_eq!(shared.purge_expired_at(soon), 1);
    assert_eq!(shared.counters().expired, 1);
}

#[test]
fn new_tenants_first_serves_a_sparse_tenant_ahead_of_a_backlog_without_unfairness() {
    use chronicle_bus::sched::LocalScheduler;
    let now = Instant::now();
    let mut s: LocalScheduler<u32> =
        LocalScheduler::new(cfg().with_new_tenants_first(true)).unwrap();
    // A backlogged tenant...
    for i in 0..100 {
        accepted(s.enqueue_at(t(1), Task::new(i), now));
    }
    for _ in 0..10 {
        assert!(matches!(s.try_dequeue_at(now), Dequeued::Task(k, _) if k == t(1)));
    }
    // ...and a sparse one: its task goes out next, not after the backlog's turn.
    accepted(s.enqueue_at(t(2), Task::new(1_000), now));
    assert!(s.new_tenant_waiting());
    match s.try_dequeue_at(now) {
        Dequeued::Task(k, task) => assert_eq!((k, task.into_payload()), (t(2), 1_000)),
        other => panic!("{other:?}"),
    }
    assert!(!s.new_tenant_waiting());
    // Right away again: it has not had a whole round in the ring yet, so it is not new and
    // waits its turn behind the backlog's current one (no farming of the priority).
    accepted(s.enqueue_at(t(2), Task::new(1_001), now));
    assert!(!s.new_tenant_waiting());
    let next: Vec<TenantKey> = (0..2)
        .map(|_| s.try_dequeue_at(now).into_task().unwrap().0)
        .collect();
    assert_eq!(next, vec![t(1), t(2)]);
    // Both backlogged: plain DRR shares (equal quanta: alternate).
    for i in 0..10 {
        accepted(s.enqueue_at(t(2), Task::new(2_000 + i), now));
    }
    let order: Vec<u64> = (0..10)
        .map(|_| s.try_dequeue_at(now).into_task().unwrap().0.id())
        .collect();
    let ones = order.iter().filter(|&&k| k == 1).count();
    assert_eq!(ones, 5, "{order:?}");
}

#[test]
fn new_tenants_first_off_keeps_a_new_tenant_behind_the_round() {
    use chronicle_bus::sched::LocalScheduler;
    let now = Instant::now();
    let mut s: LocalScheduler<u32> = LocalScheduler::new(cfg().with_quantum(t(1), nz(4))).unwrap();
    for i in 0..100 {
        accepted(s.enqueue_at(t(1), Task::new(i), now));
    }
    assert!(matches!(s.try_dequeue_at(now), Dequeued::Task(k, _) if k == t(1)));
    accepted(s.enqueue_at(t(2), Task::new(1_000), now));
    assert!(!s.new_tenant_waiting());
    // Tenant 1 finishes its turn (quantum 4) first.
    let order: Vec<TenantKey> = (0..4)
        .map(|_| s.try_dequeue_at(now).into_task().unwrap().0)
        .collect();
    assert_eq!(order, vec![t(1), t(1), t(1), t(2)]);
}
