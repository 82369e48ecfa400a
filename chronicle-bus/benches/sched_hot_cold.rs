//! Hot tenant vs many cold tenants: queue time per tenant class under the DRR scheduler and under a
//! plain FIFO with the same capacity and deadlines, with and without the hot tenant, in one run.
//!
//! `cargo bench -p chronicle-bus --bench sched_hot_cold`
//!
//! The scenario runs on a virtual clock (one tick = 1 µs, passed to `enqueue_at`/`try_dequeue_at`)
//! so the queue times measure the scheduling policy, not this machine's noise: the consumer
//! dispatches exactly one task per tick (capacity 1 M tasks/s); 16 cold tenants each offer a task
//! with probability 2.5 % per tick (40 % of capacity together); the hot tenant, when present,
//! offers 3 tasks per tick (300 % of capacity). Every task has a 2 ms deadline. Limits: 1 024 per
//! tenant, 4 096 in all; the FIFO has the same 4 096 bound and drops expired tasks at its head
//! just as the scheduler does. `Scheduler` (locked) and `LocalScheduler` (single owner) make the
//! same decisions, so their queue-time rows match; only their wall-clock rates differ. Queue times are enqueue-to-dispatch, recorded per class in HDR
//! histograms. The wall-clock rate of the whole simulation (scheduler calls plus the harness's own
//! bookkeeping) is printed too.
#![allow(clippy::unwrap_used)]

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use chronicle_bus::sched::{Dequeued, LocalScheduler, Scheduler, SchedulerConfig, Task, TenantKey};
use hdrhistogram::Histogram;

const TICKS: u64 = 2_000_000;
const COLD_TENANTS: u64 = 16;
const COLD_P: f64 = 0.025;
const HOT_PER_TICK: u64 = 3;
const DEADLINE_TICKS: u64 = 2_000;
const MAX_PER_TENANT: usize = 1_024;
const MAX_GLOBAL: usize = 4_096;
const HOT: u64 = 1_000;

#[derive(Clone, Copy, PartialEq, Eq)]
enum Policy {
    /// The thread-safe `Scheduler` (one shard).
    Drr,
    /// The single-owner `LocalScheduler`: same decisions, no locks.
    DrrLocal,
    /// A plain `VecDeque`: one FIFO for everyone, same global bound, expired heads dropped.
    Fifo,
}

struct Class {
    offered: u64,
    rejected: u64,
    expired: u64,
    dispatched: u64,
    hist: Histogram<u64>,
}

impl Class {
    fn new() -> Self {
        Self {
            offered: 0,
            rejected: 0,
            expired: 0,
            dispatched: 0,
            hist: Histogram::new_with_bounds(1, 60_000_000_000, 3).unwrap(),
        }
    }
}

struct Run {
    hot: Class,
    cold: Class,
    ops: u64,
    wall: Duration,
}

/// xorshift64*: a fixed-seed generator, so every run sees the same arrivals.
struct Rng(u64);

impl Rng {
    fn next_f64(&mut self) -> f64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        (self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 11) as f64 / (1u64 << 53) as f64
    }
}

fn run(policy: Policy, with_hot: bool) -> Run {
    let base = Instant::now();
    let at = |tick: u64| base + Duration::from_micros(tick);
    let config = || {
        SchedulerConfig::default()
            .with_shards(1)
            .with_max_global(MAX_GLOBAL)
            .with_max_per_tenant(MAX_PER_TENANT)
            .with_max_tenants(64)
    };
    let sched = Scheduler::<u64>::new(config()).unwrap();
    let mut local = LocalScheduler::<u64>::new(config()).unwrap();
    // FIFO entries: (tenant, enqueue tick, deadline tick).
    let mut fifo: VecDeque<(u64, u64, u64)> = VecDeque::with_capacity(MAX_GLOBAL);
    let mut hot = Class::new();
    let mut cold = Class::new();
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let mut ops = 0u64;
    let mut arrivals: Vec<u64> = Vec::with_capacity(32);
    let start = Instant::now();

    for tick in 0..TICKS {
        let now = at(tick);
        arrivals.clear();
        for k in 0..COLD_TENANTS {
            if rng.next_f64() < COLD_P {
                arrivals.push(k);
            }
        }
        if with_hot {
            arrivals.extend(std::iter::repeat_n(HOT, HOT_PER_TICK as usize));
        }
        for &tenant in &arrivals {
            let class = if tenant == HOT { &mut hot } else { &mut cold };
            class.offered += 1;
            ops += 1;
            let accepted = match policy {
                Policy::Drr => sched
                    .enqueue_at(
                        TenantKey::new(tenant),
                        Task::new(tick).with_deadline(at(tick + DEADLINE_TICKS)),
                        now,
                    )
                    .is_ok(),
                Policy::DrrLocal => local
                    .enqueue_at(
                        TenantKey::new(tenant),
                        Task::new(tick).with_deadline(at(tick + DEADLINE_TICKS)),
                        now,
                    )
                    .is_ok(),
                Policy::Fifo => {
                    if fifo.len() < MAX_GLOBAL {
                        fifo.push_back((tenant, tick, tick + DEADLINE_TICKS));
                        true
                    } else {
                        false
                    }
                }
            };
            if !accepted {
                class.rejected += 1;
            }
        }

        // One dispatch per tick.
        ops += 1;
        match policy {
            Policy::Drr | Policy::DrrLocal => {
                let out = if policy == Policy::Drr {
                    sched.try_dequeue_at(now)
                } else {
                    local.try_dequeue_at(now)
                };
                if let Dequeued::Task(k, task) = out {
                    let class = if k.id() == HOT { &mut hot } else { &mut cold };
                    class.dispatched += 1;
                    class.hist.record((tick - *task.payload()) * 1_000).unwrap();
                }
            }
            Policy::Fifo => {
                while let Some(&(tenant, enq, deadline)) = fifo.front() {
                    fifo.pop_front();
                    let class = if tenant == HOT { &mut hot } else { &mut cold };
                    if tick >= deadline {
                        class.expired += 1;
                        continue;
                    }
                    class.dispatched += 1;
                    class.hist.record((tick - enq) * 1_000).unwrap();
                    break;
                }
            }
        }
    }
    let wall = start.elapsed();
    let tenant_expired = |k: u64| match policy {
        Policy::Drr => sched
            .tenant_stats(TenantKey::new(k))
            .map_or(0, |t| t.expired),
        Policy::DrrLocal => local
            .tenant_stats(TenantKey::new(k))
            .map_or(0, |t| t.expired),
        Policy::Fifo => 0,
    };
    if policy != Policy::Fifo {
        hot.expired = tenant_expired(HOT);
        cold.expired = (0..COLD_TENANTS).map(tenant_expired).sum();
    }
    Run {
        hot,
        cold,
        ops,
        wall,
    }
}

fn us(ns: u64) -> String {
    format!("{:.1}", ns as f64 / 1_000.0)
}

fn row(name: &str, class: &str, c: &Class) {
    if c.offered == 0 {
        return;
    }
    println!(
        "| {name} | {class} | {} | {} | {} | {} | {} | {} | {} | {} |",
        c.offered,
        c.rejected,
        c.expired,
        c.dispatched,
        us(c.hist.value_at_quantile(0.50)),
        us(c.hist.value_at_quantile(0.99)),
        us(c.hist.value_at_quantile(0.999)),
        us(c.hist.max()),
    );
}

fn main() {
    // `cargo bench` passes `--bench`; a filter argument other than flags skips this target.
    if std::env::args()
        .skip(1)
        .any(|a| !a.starts_with("--") && !"sched_hot_cold".contains(a.as_str()))
    {
        return;
    }
    let runs = [
        ("DRR, cold only", run(Policy::Drr, false)),
        ("DRR, hot + cold", run(Policy::Drr, true)),
        ("DRR local, cold only", run(Policy::DrrLocal, false)),
        ("DRR local, hot + cold", run(Policy::DrrLocal, true)),
        ("FIFO, cold only", run(Policy::Fifo, false)),
        ("FIFO, hot + cold", run(Policy::Fifo, true)),
    ];
    println!(
        "virtual time: {TICKS} ticks of 1 us, 1 dispatch per tick; queue times in us (virtual)"
    );
    println!();
    println!(
        "| run | class | offered | rejected | expired | dispatched | p50 | p99 | p99.9 | max |"
    );
    println!("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|");
    for (name, r) in &runs {
        row(name, "cold", &r.cold);
        row(name, "hot", &r.hot);
    }
    println!();
    println!("| run | scheduler calls | wall time | calls/s (incl. harness) |");
    println!("|---|---:|---:|---:|");
    for (name, r) in &runs {
        println!(
            "| {name} | {} | {:.3} s | {:.1} M |",
            r.ops,
            r.wall.as_secs_f64(),
            r.ops as f64 / r.wall.as_secs_f64() / 1e6
        );
    }
    let cold_p99 = |r: &Run| r.cold.hist.value_at_quantile(0.99).max(1) as f64;
    println!();
    println!(
        "cold p99 with hot / without hot: DRR {:.2}x, FIFO {:.2}x",
        cold_p99(&runs[1].1) / cold_p99(&runs[0].1),
        cold_p99(&runs[5].1) / cold_p99(&runs[4].1)
    );
}
