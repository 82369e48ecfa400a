//! Property tests: random operation sequences against the scheduler's invariants, with a virtual
//! clock (`*_at`) so every case is deterministic.
#![allow(clippy::unwrap_used)]

use std::collections::{HashMap, HashSet};
use std::num::NonZeroU32;
use std::time::{Duration, Instant};

use chronicle_bus::sched::{
    Backpressure, BatchDequeued, Dequeued, Enqueued, LocalScheduler, Scheduler, SchedulerConfig,
    Task, TenantKey,
};
use proptest::prelude::*;

const TENANTS: u8 = 5;
const MAX_COST: u32 = 6;

#[derive(Debug, Clone)]
enum Op {
    Enqueue {
        tenant: u8,
        cost: u32,
        urgent: bool,
        ttl_ms: Option<u8>,
    },
    Dequeue,
    Advance {
        ms: u8,
    },
    SetQuantum {
        tenant: u8,
        quantum: u32,
    },
}

/// The task an `Op::Enqueue` with these fields makes as the `id`th op at `now`.
fn op_task(id: u64, cost: u32, urgent: bool, ttl_ms: Option<u8>, now: Instant) -> Task<u64> {
    let mut task = Task::new(id).with_cost(NonZeroU32::new(cost).unwrap());
    if urgent {
        task = task.urgent();
    }
    if let Some(ms) = ttl_ms {
        task = task.with_deadline(now + Duration::from_millis(u64::from(ms)));
    }
    task
}

fn op(with_time: bool) -> impl Strategy<Value = Op> {
    let ttl = if with_time {
        proptest::option::of(0u8..20).boxed()
    } else {
        Just(None).boxed()
    };
    let enqueue = (0..TENANTS, 1..=MAX_COST, proptest::bool::weighted(0.2), ttl).prop_map(
        |(tenant, cost, urgent, ttl_ms)| Op::Enqueue {
            tenant,
            cost,
            urgent,
            ttl_ms,
        },
    );
    if with_time {
        prop_oneof![
            5 => enqueue,
            4 => Just(Op::Dequeue),
            1 => (0u8..6).prop_map(|ms| Op::Advance { ms }),
            1 => (0..TENANTS, 1u32..=4).prop_map(|(tenant, quantum)| Op::SetQuantum { tenant, quantum }),
        ]
        .boxed()
    } else {
        prop_oneof![5 => enqueue, 4 => Just(Op::Dequeue)].boxed()
    }
}

fn config() -> impl Strategy<Value = SchedulerConfig> {
    (
        1usize..=3,
        1usize..=30,
        1usize..=8,
        proptest::bool::ANY,
        proptest::collection::vec(1u32..=4, TENANTS as usize),
    )
        .prop_map(|(shards, max_global, max_per_tenant, evict, quanta)| {
            let mut c = SchedulerConfig::default()
                .with_shards(shards)
                .with_max_global(max_global)
                .with_max_per_tenant(max_per_tenant)
                .with_backpressure(if evict {
                    Backpressure::EvictOldest
                } else {
                    Backpressure::Reject
                });
            for (k, q) in quanta.into_iter().enumerate() {
                c = c.with_quantum(TenantKey::new(k as u64), NonZeroU32::new(q).unwrap());
            }
            c
        })
}

/// What the test knows about an accepted task.
#[derive(Debug, Clone, Copy)]
struct Meta {
    tenant: u64,
    urgent: bool,
}

proptest! {
    // 192 cases by default (about a second); PROPTEST_CASES overrides for longer searches.
    #![proptest_config(ProptestConfig {
        cases: std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(192),
        ..ProptestConfig::default()
    })]

    /// Accounting, queue length, per-tenant FIFO per lane, no expired or duplicate dispatch.
    #[test]
    fn accounting_fifo_and_expiry_hold(cfg in config(), ops in proptest::collection::vec(op(true), 1..200)) {
        let max_global = cfg.max_global;
        let max_per_tenant = cfg.max_per_tenant;
        let s = Scheduler::<u64>::new(cfg).unwrap();
        let base = Instant::now();
        let mut now = base;
        let mut next_id = 0u64;
        let mut meta: HashMap<u64, Meta> = HashMap::new();
        let mut gone: HashSet<u64> = HashSet::new();
        let mut last_in_lane: HashMap<(u64, bool), u64> = HashMap::new();
        let (mut accepted, mut rejected, mut evicted, mut dispatched) = (0u64, 0u64, 0u64, 0u64);

        for op in ops {
            match op {
                Op::Enqueue { tenant, cost, urgent, ttl_ms } => {
                    let id = next_id;
                    next_id += 1;
                    let mut task = Task::new(id).with_cost(NonZeroU32::new(cost).unwrap());
                    if urgent { task = task.urgent(); }
                    if let Some(ms) = ttl_ms { task = task.with_deadline(now + Duration::from_millis(u64::from(ms))); }
                    match s.enqueue_at(TenantKey::new(u64::from(tenant)), task, now) {
                        Ok(Enqueued::Queued) => {
                            accepted += 1;
                            meta.insert(id, Meta { tenant: u64::from(tenant), urgent });
                        }
                        Ok(Enqueued::Evicted(old)) => {
                            accepted += 1;
                            evicted += 1;
                            meta.insert(id, Meta { tenant: u64::from(tenant), urgent });
                            let old_id = *old.payload();
                            let m = meta[&old_id];
                            prop_assert!(!m.urgent, "an urgent task was evicted");
                            prop_assert_eq!(m.tenant, u64::from(tenant), "evicted another tenant's task");
                            prop_assert!(gone.insert(old_id), "task {} left twice", old_id);
                        }
                        Err(e) => {
                            rejected += 1;
                            prop_assert_eq!(*e.task().payload(), id, "the rejected task is handed back");
                        }
                    }
                }
                Op::Dequeue => match s.try_dequeue_at(now) {
                    Dequeued::Task(k, task) => {
                        dispatched += 1;
                        let id = *task.payload();
                        let m = meta[&id];
                        prop_assert_eq!(k.id(), m.tenant);
                        prop_assert!(task.deadline().is_none_or(|d| d > now), "expired task {} dispatched", id);
                        prop_assert!(gone.insert(id), "task {} left twice", id);
                        if let Some(prev) = last_in_lane.insert((m.tenant, m.urgent), id) {
                            prop_assert!(prev < id, "FIFO broken in tenant {} lane urgent={}: {} after {}", m.tenant, m.urgent, id, prev);
                        }
                    }
                    Dequeued::Empty => {
                        // Empty is only allowed when nothing is queued: a single consumer always
                        // makes progress.
                        prop_assert_eq!(s.queue_len(), 0);
                    }
                    Dequeued::Closed => prop_assert!(false, "never closed"),
                },
                Op::Advance { ms } => now += Duration::from_millis(u64::from(ms)),
                Op::SetQuantum { tenant, quantum } => {
                    s.set_quantum(TenantKey::new(u64::from(tenant)), NonZeroU32::new(quantum).unwrap()).unwrap();
                }
            }

            let c = s.counters();
            prop_assert_eq!(c.enqueued, accepted);
            prop_assert_eq!(c.rejected.total(), rejected);
            prop_assert_eq!(c.evicted, evicted);
            prop_assert_eq!(c.dequeued, dispatched);
            prop_assert_eq!(c.enqueued, c.dequeued + c.expired + c.evicted + c.queue_len as u64);
            prop_assert!(c.queue_len <= max_global);
            let mut per_tenant = 0;
            for k in 0..u64::from(TENANTS) {
                if let Some(ts) = s.tenant_stats(TenantKey::new(k)) {
                    prop_assert!(ts.queued <= max_per_tenant);
                    prop_assert_eq!(ts.enqueued, ts.dequeued + ts.expired + ts.evicted + ts.queued as u64);
                    per_tenant += ts.queued;
                }
            }
            prop_assert_eq!(per_tenant, c.queue_len);
        }

        // Drain far in the future: everything left either goes out or expires, exactly once.
        let end = now + Duration::from_secs(1);
        while let Dequeued::Task(_, task) = s.try_dequeue_at(end) {
            prop_assert!(task.deadline().is_none());
            prop_assert!(gone.insert(*task.payload()));
        }
        let c = s.counters();
        prop_assert_eq!(c.queue_len, 0);
        prop_assert_eq!(c.enqueued, c.dequeued + c.expired + c.evicted);
        prop_assert_eq!(gone.len() as u64 + c.expired, accepted);
    }

    /// Once a tenant becomes active it is served before any other tenant gets more than about one
    /// round of service beyond what the active tenant's own head needs: for every other tenant Y,
    /// Y's served cost before X's first dispatch is at most (k + 2) * quantum(Y) + max cost, where
    /// k = ceil(largest cost X enqueued in the window / quantum(X)) is the number of X's own turns
    /// its head needs.
    #[test]
    fn an_active_tenant_waits_at_most_one_round(cfg in config().prop_map(|c| c.with_backpressure(Backpressure::Reject)),
                                               ops in proptest::collection::vec(op(false), 1..300)) {
        let quanta: HashMap<u64, u64> = cfg.quanta.iter().map(|&(k, q)| (k.id(), u64::from(q.get()))).collect();
        let s = Scheduler::<u64>::new(cfg).unwrap();
        let now = Instant::now();
        let mut outstanding: HashMap<u64, usize> = HashMap::new();
        // Open windows: tenant X -> (largest cost X enqueued since it became active, cost served to
        // each other tenant since then).
        let mut windows: HashMap<u64, (u64, HashMap<u64, u64>)> = HashMap::new();
        for op in ops {
            match op {
                Op::Enqueue { tenant, cost, urgent, .. } => {
                    let x = u64::from(tenant);
                    let mut task = Task::new(0).with_cost(NonZeroU32::new(cost).unwrap());
                    if urgent { task = task.urgent(); }
                    if s.enqueue_at(TenantKey::new(x), task, now).is_ok() {
                        let n = outstanding.entry(x).or_default();
                        if *n == 0 {
                            windows.insert(x, (u64::from(cost), HashMap::new()));
                        } else if let Some(w) = windows.get_mut(&x) {
                            w.0 = w.0.max(u64::from(cost));
                        }
                        *n += 1;
                    }
                }
                Op::Dequeue => {
                    if let Dequeued::Task(k, task) = s.try_dequeue_at(now) {
                        let y = k.id();
                        *outstanding.get_mut(&y).unwrap() -= 1;
                        windows.remove(&y);
                        for (&x, (max_cost_x, served)) in &mut windows {
                            let got = served.entry(y).or_default();
                            *got += u64::from(task.cost());
                            let turns = max_cost_x.div_ceil(quanta[&x]);
                            let bound = (turns + 2) * quanta[&y] + u64::from(MAX_COST);
                            prop_assert!(*got <= bound,
                                "tenant {} waited while tenant {} got {} (bound {}, quanta {:?})", x, y, *got, bound, quanta);
                        }
                    }
                }
                Op::Advance { .. } | Op::SetQuantum { .. } => {}
            }
        }
    }

    /// `LocalScheduler` and a one-shard `Scheduler` given the same operations return the same
    /// results, in the same order, with the same counters.
    #[test]
    fn local_scheduler_matches_the_shared_one(cfg in config(), ops in proptest::collection::vec(op(true), 1..200)) {
        let shared = Scheduler::<u64>::new(cfg.clone().with_shards(1)).unwrap();
        let mut local = LocalScheduler::<u64>::new(cfg).unwrap();
        let base = Instant::now();
        let mut now = base;
        let show_enq = |r: Result<Enqueued<u64>, chronicle_bus::sched::Rejected<u64>>| match r {
            Ok(Enqueued::Queued) => "queued".to_string(),
            Ok(Enqueued::Evicted(t)) => format!("evicted {}", t.payload()),
            Err(e) => format!("rejected {} {}", e.reason(), e.task().payload()),
        };
        let show_deq = |d: Dequeued<u64>| match d {
            Dequeued::Task(k, t) => format!("{k} {} {:?}", t.payload(), t.enqueue_ts()),
            other => format!("{other:?}"),
        };
        for (id, op) in ops.into_iter().enumerate() {
            match op {
                Op::Enqueue { tenant, cost, urgent, ttl_ms } => {
                    let make = || op_task(id as u64, cost, urgent, ttl_ms, now);
                    let k = TenantKey::new(u64::from(tenant));
                    prop_assert_eq!(show_enq(shared.enqueue_at(k, make(), now)), show_enq(local.enqueue_at(k, make(), now)));
                }
                Op::Dequeue => prop_assert_eq!(show_deq(shared.try_dequeue_at(now)), show_deq(local.try_dequeue_at(now))),
                Op::Advance { ms } => now += Duration::from_millis(u64::from(ms)),
                Op::SetQuantum { tenant, quantum } => {
                    let k = TenantKey::new(u64::from(tenant));
                    let q = NonZeroU32::new(quantum).unwrap();
                    prop_assert_eq!(shared.set_quantum(k, q), local.set_quantum(k, q));
                }
            }
            prop_assert_eq!(shared.counters(), local.counters());
        }
        shared.close();
        local.close();
        loop {
            let (a, b) = (shared.try_dequeue_at(now), local.try_dequeue_at(now));
            let done = a.is_closed();
            prop_assert_eq!(show_deq(a), show_deq(b));
            if done { break; }
        }
        prop_assert_eq!(shared.stats(), local.stats());
    }

    /// A batch dequeue of `k` returns what `k` single dequeues at the same instant return, for the
    /// shared scheduler (any shard count) and the local one.
    #[test]
    fn batch_dequeue_matches_single_dequeues(cfg in config(),
                                             ops in proptest::collection::vec((op(true), 1usize..6), 1..150)) {
        let single = Scheduler::<u64>::new(cfg.clone()).unwrap();
        let batched = Scheduler::<u64>::new(cfg.clone()).unwrap();
        let mut local_single = LocalScheduler::<u64>::new(cfg.clone()).unwrap();
        let mut local_batched = LocalScheduler::<u64>::new(cfg).unwrap();
        let mut now = Instant::now();
        let mut out = Vec::new();
        for (id, (op, k)) in ops.into_iter().enumerate() {
            match op {
                Op::Enqueue { tenant, cost, urgent, ttl_ms } => {
                    let make = || op_task(id as u64, cost, urgent, ttl_ms, now);
                    let key = TenantKey::new(u64::from(tenant));
                    prop_assert_eq!(single.enqueue_at(key, make(), now).is_ok(), batched.enqueue_at(key, make(), now).is_ok());
                    prop_assert_eq!(local_single.enqueue_at(key, make(), now).is_ok(), local_batched.enqueue_at(key, make(), now).is_ok());
                }
                Op::Dequeue => {
                    let (mut want, mut want_local) = (Vec::new(), Vec::new());
                    for _ in 0..k {
                        if let Dequeued::Task(key, t) = single.try_dequeue_at(now) { want.push((key, *t.payload())); }
                        if let Dequeued::Task(key, t) = local_single.try_dequeue_at(now) { want_local.push((key, *t.payload())); }
                    }
                    for (sched_out, want) in [
                        ({ out.clear(); let r = batched.try_dequeue_batch_at(now, k, &mut out); (r, out.iter().map(|(key, t)| (*key, *t.payload())).collect::<Vec<_>>()) }, &want),
                        ({ out.clear(); let r = local_batched.try_dequeue_batch_at(now, k, &mut out); (r, out.iter().map(|(key, t)| (*key, *t.payload())).collect::<Vec<_>>()) }, &want_local),
                    ] {
                        let expect = if want.is_empty() { BatchDequeued::Empty } else { BatchDequeued::Tasks(want.len()) };
                        prop_assert_eq!(sched_out.0, expect);
                        prop_assert_eq!(&sched_out.1, want);
                    }
                }
                Op::Advance { ms } => now += Duration::from_millis(u64::from(ms)),
                Op::SetQuantum { tenant, quantum } => {
                    let key = TenantKey::new(u64::from(tenant));
                    let q = NonZeroU32::new(quantum).unwrap();
                    single.set_quantum(key, q).unwrap();
                    batched.set_quantum(key, q).unwrap();
                    local_single.set_quantum(key, q).unwrap();
                    local_batched.set_quantum(key, q).unwrap();
                }
            }
            prop_assert_eq!(single.counters(), batched.counters());
            prop_assert_eq!(local_single.counters(), local_batched.counters());
        }
        batched.close();
        local_batched.close();
        let end = now + Duration::from_secs(1);
        for _ in 0..2 {
            out.clear();
            let _ = batched.try_dequeue_batch_at(end, 1_000, &mut out);
            out.clear();
            let _ = local_batched.try_dequeue_batch_at(end, 1_000, &mut out);
        }
        prop_assert_eq!(batched.try_dequeue_batch_at(end, 1, &mut out), BatchDequeued::Closed);
        prop_assert_eq!(local_batched.try_dequeue_batch_at(end, 1, &mut out), BatchDequeued::Closed);
    }
}
