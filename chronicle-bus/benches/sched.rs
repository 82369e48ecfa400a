//! Enqueue+dequeue pairs per second: single-threaded and across two threads, against a
//! `Mutex<VecDeque>` FIFO as the floor of any locked queue.
//!
//! `cargo bench -p chronicle-bus --bench sched`
#![allow(clippy::unwrap_used)]

use std::collections::VecDeque;
use std::hint::black_box;
use std::sync::{Arc, Barrier, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use chronicle_bus::sched::{Dequeued, LocalScheduler, Scheduler, SchedulerConfig, Task, TenantKey};
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};

fn sched(shards: usize) -> Scheduler<u64> {
    Scheduler::new(
        SchedulerConfig::default()
            .with_shards(shards)
            .with_max_global(1 << 20)
            .with_max_per_tenant(1 << 16),
    )
    .unwrap()
}

/// The calls these benches make, on the shared scheduler and on its single-owner variant.
trait Pairs {
    fn put(&mut self, k: TenantKey, i: u64);
    fn put_at(&mut self, k: TenantKey, i: u64, now: Instant);
    fn take(&mut self) -> Dequeued<u64>;
    fn take_at(&mut self, now: Instant) -> Dequeued<u64>;
}

// Both schedulers have the same calls (`&self` on the shared one, `&mut self` on the local one).
macro_rules! impl_pairs {
    ($($t:ty),*) => {$(
        impl Pairs for $t {
            fn put(&mut self, k: TenantKey, i: u64) {
                let _ = self.enqueue(k, Task::new(i)).unwrap();
            }
            fn put_at(&mut self, k: TenantKey, i: u64, now: Instant) {
                let _ = self.enqueue_at(k, Task::new(i), now).unwrap();
            }
            fn take(&mut self) -> Dequeued<u64> {
                self.try_dequeue()
            }
            fn take_at(&mut self, now: Instant) -> Dequeued<u64> {
                self.try_dequeue_at(now)
            }
        }
    )*};
}
impl_pairs!(Scheduler<u64>, LocalScheduler<u64>);

type Group<'a> = criterion::BenchmarkGroup<'a, criterion::measurement::WallTime>;

/// One tenant, empty between pairs: each pair activates the tenant and retires it.
fn one_tenant(g: &mut Group, id: BenchmarkId, s: &mut impl Pairs) {
    let k = TenantKey::new(7);
    g.bench_function(id, |b| {
        let mut i = 0u64;
        b.iter(|| {
            i += 1;
            s.put(k, i);
            black_box(s.take())
        });
    });
}

/// 64 tenants, 8 tasks each queued: pairs run against a standing backlog and a full ring.
fn backlog_64_tenants(g: &mut Group, id: BenchmarkId, s: &mut impl Pairs) {
    for t in 0..64u64 {
        for j in 0..8 {
            s.put(TenantKey::new(t), j);
        }
    }
    g.bench_function(id, |b| {
        let mut i = 0u64;
        b.iter(|| {
            i += 1;
            s.put(TenantKey::new(i % 64), i);
            black_box(s.take())
        });
    });
}

/// One tenant, the clock read once per 64 pairs (`enqueue_at` / `try_dequeue_at`).
fn one_tenant_clock_per_64(g: &mut Group, id: BenchmarkId, s: &mut impl Pairs) {
    let k = TenantKey::new(7);
    g.bench_function(id, |b| {
        let mut i = 0u64;
        b.iter(|| {
            let now = Instant::now();
            for _ in 0..64 {
                i += 1;
                s.put_at(k, i, now);
                let _ = black_box(s.take_at(now));
            }
        });
    });
}

fn single_thread(c: &mut Criterion) {
    let mut g = c.benchmark_group("sched_pairs_1thread");
    g.throughput(Throughput::Elements(1));

    for shards in [1, 4] {
        let shards_id = format!("shards_{shards}");
        one_tenant(
            &mut g,
            BenchmarkId::new("1_tenant", &shards_id),
            &mut sched(shards),
        );
        backlog_64_tenants(
            &mut g,
            BenchmarkId::new("64_tenants_backlog", &shards_id),
            &mut sched(shards),
        );
    }

    // The caller reads the clock once per batch of 64 pairs (`enqueue_at` / `try_dequeue_at`), as
    // a router loop that timestamps a batch does.
    g.throughput(Throughput::Elements(64));
    for shards in [1, 4] {
        one_tenant_clock_per_64(
            &mut g,
            BenchmarkId::new("1_tenant_clock_per_64", format!("shards_{shards}")),
            &mut sched(shards),
        );
    }

    // Batches: 64 enqueues then one batch dequeue of 64, one clock read for all of it.
    for shards in [1, 4] {
        let s = sched(shards);
        let mut out = Vec::with_capacity(64);
        g.bench_function(
            BenchmarkId::new("64_tenants_batch_64", format!("shards_{shards}")),
            |b| {
                let mut i = 0u64;
                b.iter(|| {
                    let now = Instant::now();
                    for _ in 0..64 {
                        i += 1;
                        let _ = s
                            .enqueue_at(TenantKey::new(i % 64), Task::new(i), now)
                            .unwrap();
                    }
                    out.clear();
                    let _ = black_box(s.try_dequeue_batch_at(now, 64, &mut out));
                });
            },
        );
    }

    // The single-owner variant: same DRR state, no locks.
    let local = || {
        LocalScheduler::<u64>::new(
            SchedulerConfig::default()
                .with_max_global(1 << 20)
                .with_max_per_tenant(1 << 16),
        )
        .unwrap()
    };
    g.throughput(Throughput::Elements(1));
    one_tenant(&mut g, BenchmarkId::new("local", "1_tenant"), &mut local());
    backlog_64_tenants(
        &mut g,
        BenchmarkId::new("local", "64_tenants_backlog"),
        &mut local(),
    );
    g.throughput(Throughput::Elements(64));
    one_tenant_clock_per_64(
        &mut g,
        BenchmarkId::new("local", "1_tenant_clock_per_64"),
        &mut local(),
    );

    // Floor: a plain locked FIFO.
    g.throughput(Throughput::Elements(1));
    let q = Mutex::new(VecDeque::<(u64, Instant)>::with_capacity(1024));
    g.bench_function("mutex_vecdeque_fifo", |b| {
        let mut i = 0u64;
        b.iter(|| {
            i += 1;
            q.lock().unwrap().push_back((i, Instant::now()));
            black_box(q.lock().unwrap().pop_front())
        });
    });
    g.finish();
}

/// `iters` tasks from a producer thread to a consumer thread; both spin (no blocking waits).
/// `take` drains what it can in one call and returns how many tasks it took.
fn two_threads_sched_with(
    shards: usize,
    iters: u64,
    mut take: impl FnMut(&Scheduler<u64>) -> u64,
) -> Duration {
    let s = Arc::new(
        Scheduler::<u64>::new(
            SchedulerConfig::default()
                .with_shards(shards)
                .with_max_global(4096)
                .with_max_per_tenant(4096),
        )
        .unwrap(),
    );
    let go = Arc::new(Barrier::new(2));
    let producer = {
        let s = Arc::clone(&s);
        let go = Arc::clone(&go);
        thread::spawn(move || {
            go.wait();
            for i in 0..iters {
                let mut task = Task::new(i);
                loop {
                    match s.enqueue(TenantKey::new(i % 8), task) {
                        Ok(_) => break,
                        Err(e) => {
                            task = e.into_task();
                            std::hint::spin_loop();
                        }
                    }
                }
            }
        })
    };
    go.wait();
    let start = Instant::now();
    let mut got = 0;
    while got < iters {
        match take(&s) {
            0 => std::hint::spin_loop(),
            n => got += n,
        }
    }
    let elapsed = start.elapsed();
    producer.join().unwrap();
    elapsed
}

/// One task per dequeue call.
fn two_threads_sched(shards: usize, iters: u64) -> Duration {
    two_threads_sched_with(shards, iters, |s| match s.try_dequeue() {
        Dequeued::Task(_, t) => {
            black_box(t);
            1
        }
        _ => 0,
    })
}

/// As `two_threads_sched`, the consumer taking up to 64 tasks per call.
fn two_threads_sched_batch(shards: usize, iters: u64) -> Duration {
    let mut out = Vec::with_capacity(64);
    two_threads_sched_with(shards, iters, move |s| {
        out.clear();
        let n = match s.try_dequeue_batch(64, &mut out) {
            chronicle_bus::sched::BatchDequeued::Tasks(n) => n as u64,
            _ => 0,
        };
        black_box(&out);
        n
    })
}

fn two_threads_fifo(iters: u64) -> Duration {
    let q = Arc::new(Mutex::new(VecDeque::<(u64, Instant)>::with_capacity(4096)));
    let go = Arc::new(Barrier::new(2));
    let producer = {
        let q = Arc::clone(&q);
        let go = Arc::clone(&go);
        thread::spawn(move || {
            go.wait();
            for i in 0..iters {
                loop {
                    let mut g = q.lock().unwrap();
                    if g.len() < 4096 {
                        g.push_back((i, Instant::now()));
                        break;
                    }
                    drop(g);
                    std::hint::spin_loop();
                }
            }
        })
    };
    go.wait();
    let start = Instant::now();
    let mut got = 0;
    while got < iters {
        let item = q.lock().unwrap().pop_front();
        match item {
            Some(x) => {
                black_box(x);
                got += 1;
            }
            None => std::hint::spin_loop(),
        }
    }
    let elapsed = start.elapsed();
    producer.join().unwrap();
    elapsed
}

fn two_threads(c: &mut Criterion) {
    let mut g = c.benchmark_group("sched_pairs_2threads");
    g.throughput(Throughput::Elements(1));
    for shards in [1, 4] {
        g.bench_function(
            BenchmarkId::new("producer_consumer", format!("shards_{shards}")),
            |b| {
                b.iter_custom(|iters| two_threads_sched(shards, iters));
            },
        );
    }
    for shards in [1, 4] {
        g.bench_function(
            BenchmarkId::new("producer_consumer_batch_64", format!("shards_{shards}")),
            |b| b.iter_custom(|iters| two_threads_sched_batch(shards, iters)),
        );
    }
    g.bench_function("mutex_vecdeque_fifo", |b| b.iter_custom(two_threads_fifo));
    g.finish();
}

fn config() -> Criterion {
    Criterion::default()
        .sample_size(30)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
}

criterion_group! { name = benches; config = config(); targets = single_thread, two_threads }
criterion_main!(benches);
