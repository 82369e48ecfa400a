//! N producers x M consumers: every accepted task is delivered or expires exactly once, per-tenant
//! FIFO order holds in what each consumer sees, and the counters add up. Bounded by a watchdog.
#![allow(clippy::unwrap_used, clippy::indexing_slicing)]

use std::collections::HashSet;
use std::num::NonZeroU32;
use std::sync::{Arc, Barrier, mpsc};
use std::thread;
use std::time::{Duration, Instant};

use chronicle_bus::sched::{
    Backpressure, Dequeued, Enqueued, Scheduler, SchedulerConfig, Task, TenantKey,
};

const PRODUCERS: u64 = 4;
const CONSUMERS: usize = 2;
const TENANTS_PER_PRODUCER: u64 = 3;
const TASKS_PER_PRODUCER: u64 = 20_000;

/// Payload: (producer, tenant, sequence number within the tenant and lane, urgent).
type Payload = (u64, u64, u64, bool);

struct Outcome {
    accepted: Vec<Payload>,
    evicted: Vec<Payload>,
    delivered: Vec<Vec<Payload>>,
    counters: chronicle_bus::sched::SchedulerCounters,
}

fn run(shards: usize, backpressure: Backpressure) -> Outcome {
    let cfg = SchedulerConfig::default()
        .with_shards(shards)
        .with_max_global(512)
        .with_max_per_tenant(64)
        .with_backpressure(backpressure)
        .with_quantum(TenantKey::new(0), NonZeroU32::new(3).unwrap());
    let s = Arc::new(Scheduler::<Payload>::new(cfg).unwrap());
    let start = Arc::new(Barrier::new(PRODUCERS as usize + CONSUMERS));

    let consumers: Vec<_> = (0..CONSUMERS)
        .map(|_| {
            let s = Arc::clone(&s);
            let start = Arc::clone(&start);
            thread::spawn(move || {
                start.wait();
                let mut got = Vec::new();
                loop {
                    match s.dequeue_blocking(Duration::from_millis(200)) {
                        Dequeued::Task(k, task) => {
                            let p = *task.payload();
                            assert_eq!(k.id(), p.1);
                            if let Some(d) = task.deadline() {
                                // The dequeue read the clock under the shard lock, after this task
                                // was stamped, and the deadline was later than that reading.
                                assert!(task.enqueue_ts().unwrap() < d);
                            }
                            got.push(p);
                        }
                        Dequeued::Empty => {}
                        Dequeued::Closed => return got,
                    }
                }
            })
        })
        .collect();

    let producers: Vec<_> = (0..PRODUCERS)
        .map(|p| {
            let s = Arc::clone(&s);
            let start = Arc::clone(&start);
            thread::spawn(move || {
                start.wait();
                let mut accepted = Vec::new();
                let mut evicted = Vec::new();
                let mut seq = [[0u64; 2]; TENANTS_PER_PRODUCER as usize];
                for i in 0..TASKS_PER_PRODUCER {
                    let local = i % TENANTS_PER_PRODUCER;
                    let tenant = p * TENANTS_PER_PRODUCER + local;
                    let urgent = i % 11 == 0;
                    let lane = &mut seq[local as usize][usize::from(urgent)];
                    let payload = (p, tenant, *lane, urgent);
                    let mut task =
                        Task::new(payload).with_cost(NonZeroU32::new(1 + (i % 4) as u32).unwrap());
                    if urgent {
                        task = task.urgent();
                    }
                    if i % 7 == 0 {
                        // Short deadlines: some of these expire in the queue.
                        task = task.with_deadline(Instant::now() + Duration::from_micros(50));
                    }
                    match s.enqueue(TenantKey::new(tenant), task) {
                        Ok(Enqueued::Queued) => {
                            *lane += 1;
                            accepted.push(payload);
                        }
                        Ok(Enqueued::Evicted(old)) => {
                            *lane += 1;
                            accepted.push(payload);
                            evicted.push(old.into_payload());
                        }
                        Err(_) => thread::yield_now(),
                    }
                }
                (accepted, evicted)
            })
        })
        .collect();

    let mut accepted = Vec::new();
    let mut evicted = Vec::new();
    for h in producers {
        let (a, e) = h.join().unwrap();
        accepted.extend(a);
        evicted.extend(e);
    }
    s.close();
    let delivered = consumers.into_iter().map(|h| h.join().unwrap()).collect();
    Outcome {
        accepted,
        evicted,
        delivered,
        counters: s.counters(),
    }
}

fn check(o: &Outcome) {
    let accepted: HashSet<Payload> = o.accepted.iter().copied().collect();
    assert_eq!(accepted.len(), o.accepted.len(), "payloads are unique");
    let mut left = HashSet::new();
    for p in o.delivered.iter().flatten().chain(&o.evicted) {
        assert!(accepted.contains(p), "{p:?} left but was never accepted");
        assert!(left.insert(*p), "{p:?} left twice");
    }
    let delivered: usize = o.delivered.iter().map(Vec::len).sum();
    let c = o.counters;
    assert_eq!(c.enqueued, o.accepted.len() as u64);
    assert_eq!(c.dequeued, delivered as u64);
    assert_eq!(c.evicted, o.evicted.len() as u64);
    assert_eq!(c.queue_len, 0);
    // Every accepted task left exactly once: delivered, evicted, or expired.
    assert_eq!(delivered as u64 + c.evicted + c.expired, c.enqueued);
    assert!(delivered > 0);
    // Per tenant and lane, each consumer sees an increasing sequence (dispatch order is one total
    // order, and each consumer sees a subsequence of it).
    for got in &o.delivered {
        let mut last = std::collections::HashMap::new();
        for &(_, tenant, seq, urgent) in got {
            if let Some(prev) = last.insert((tenant, urgent), seq) {
                assert!(
                    prev < seq,
                    "tenant {tenant} urgent={urgent}: {seq} after {prev}"
                );
            }
        }
    }
}

#[test]
fn producers_and_consumers_deliver_every_task_exactly_once() {
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        for (shards, bp) in [
            (1, Backpressure::Reject),
            (4, Backpressure::Reject),
            (3, Backpressure::EvictOldest),
        ] {
            let o = run(shards, bp);
            check(&o);
            tx.send((shards, o.counters)).unwrap();
        }
    });
    for _ in 0..3 {
        let (shards, c) = rx
            .recv_timeout(Duration::from_secs(60))
            .expect("watchdog: stress run did not finish");
        eprintln!("shards {shards}: {c:?}");
    }
}

/// Hand-offs one at a time to consumers that block with an effectively infinite timeout: a single
/// lost wake-up stalls the hand-off and trips the watchdog.
#[test]
fn blocking_consumers_never_miss_a_wake_up() {
    const HANDOFFS: u64 = 3_000;
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        let s = Arc::new(Scheduler::<u64>::new(SchedulerConfig::default().with_shards(3)).unwrap());
        let (ack_tx, ack_rx) = mpsc::channel::<u64>();
        let consumers: Vec<_> = (0..2)
            .map(|_| {
                let s = Arc::clone(&s);
                let ack_tx = ack_tx.clone();
                thread::spawn(move || {
                    while let Dequeued::Task(_, task) =
                        s.dequeue_blocking(Duration::from_secs(3600))
                    {
                        ack_tx.send(task.into_payload()).unwrap();
                    }
                })
            })
            .collect();
        for i in 0..HANDOFFS {
            // Alternate tenants so the hand-offs land on different shards.
            let _ = s.enqueue(TenantKey::new(i % 5), Task::new(i)).unwrap();
            // Wait until a consumer took it: the consumers are asleep (or about to be) each time.
            assert_eq!(ack_rx.recv().unwrap(), i);
        }
        s.close();
        for h in consumers {
            h.join().unwrap();
        }
        tx.send(s.counters()).unwrap();
    });
    let c = rx
        .recv_timeout(Duration::from_secs(60))
        .expect("watchdog: a wake-up was lost");
    assert_eq!(c.dequeued, HANDOFFS);
}
