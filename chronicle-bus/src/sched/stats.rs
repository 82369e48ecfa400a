//! Counters and snapshots.
//!
//! Each shard keeps its counters in atomics next to (not inside) its lock:
//! - the *flow* counters (`enqueued`, `dequeued`, `expired`, `evicted`) and the shard's `queued`
//!   are written only by the thread that holds the shard lock, as a plain load + store (no
//!   read-modify-write on the hot path); the lock orders successive writers, so every increment is
//!   exact, and readers load them lock-free;
//! - the *reject* counters are bumped with `fetch_add` outside the lock (rejections are off the
//!   fast path).
//!
//! The queue-time histogram and the per-tenant counters live inside the shard's locked state; a
//! [`SchedulerStats`] snapshot takes each shard lock in turn, briefly, never all at once.

use std::cmp::Ordering as CmpOrdering;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use hdrhistogram::Histogram;

use super::outcome::RejectReason;
use super::task::TenantKey;

/// Per-shard counters (see the module documentation for who writes what).
#[derive(Debug, Default)]
pub(super) struct ShardCounters {
    enqueued: AtomicU64,
    dequeued: AtomicU64,
    expired: AtomicU64,
    evicted: AtomicU64,
    removed: AtomicU64,
    queued: AtomicUsize,
    rejected_global: AtomicU64,
    rejected_tenant: AtomicU64,
    rejected_tenants: AtomicU64,
    rejected_closed: AtomicU64,
}

/// Adds `n` to a counter that only the shard-lock holder writes.
///
/// SYNC POINT: the Release store pairs with the Acquire loads in [`ShardCounters::snapshot`]. A
/// task's `enqueued` increment happens-before its `dequeued`/`expired`/`evicted` increment (both
/// are made under the same shard lock, in that order), so a reader that loads the outflow counters
/// first and `enqueued` last never sees more tasks leave than enter.
#[inline]
fn bump(counter: &AtomicU64, n: u64) {
    counter.store(
        counter.load(Ordering::Relaxed).wrapping_add(n),
        Ordering::Release,
    );
}

impl ShardCounters {
    /// Caller holds the shard lock.
    #[inline]
    pub(super) fn on_enqueued(&self) {
        bump(&self.enqueued, 1);
    }

    /// Caller holds the shard lock.
    #[inline]
    pub(super) fn on_dequeued(&self) {
        bump(&self.dequeued, 1);
    }

    /// Caller holds the shard lock.
    #[inline]
    pub(super) fn on_expired(&self, n: u64) {
        bump(&self.expired, n);
    }

    /// Caller holds the shard lock.
    #[inline]
    pub(super) fn on_evicted(&self) {
        bump(&self.evicted, 1);
    }

    /// Caller holds the shard lock.
    #[inline]
    pub(super) fn on_removed(&self) {
        bump(&self.removed, 1);
    }

    /// Caller holds the shard lock. Relaxed: `queued` is only a hint that lets consumers skip an
    /// empty shard without locking it; the lock, not this value, protects the queues.
    #[inline]
    pub(super) fn set_queued(&self, n: usize) {
        self.queued.store(n, Ordering::Relaxed);
    }

    /// Tasks held by the shard as of its last update (lock-free hint).
    #[inline]
    pub(super) fn queued(&self) -> usize {
        self.queued.load(Ordering::Relaxed)
    }

    /// Counts a rejection (any thread, lock not required).
    #[inline]
    pub(super) fn on_rejected(&self, reason: RejectReason) {
        let c = match reason {
            RejectReason::GlobalFull => &self.rejected_global,
            RejectReason::TenantFull => &self.rejected_tenant,
            RejectReason::TooManyTenants => &self.rejected_tenants,
            RejectReason::Closed => &self.rejected_closed,
        };
        // Relaxed: a statistic, it publishes nothing.
        c.fetch_add(1, Ordering::Relaxed);
    }

    /// Adds this shard's counters into `into` (outflows first; see [`bump`]).
    pub(super) fn snapshot(&self, into: &mut SchedulerCounters) {
        into.dequeued += self.dequeued.load(Ordering::Acquire);
        into.expired += self.expired.load(Ordering::Acquire);
        into.evicted += self.evicted.load(Ordering::Acquire);
        into.removed += self.removed.load(Ordering::Acquire);
        into.enqueued += self.enqueued.load(Ordering::Acquire);
        into.rejected.global_full += self.rejected_global.load(Ordering::Relaxed);
        into.rejected.tenant_full += self.rejected_tenant.load(Ordering::Relaxed);
        into.rejected.too_many_tenants += self.rejected_tenants.load(Ordering::Relaxed);
        into.rejected.closed += self.rejected_closed.load(Ordering::Relaxed);
    }
}

/// Rejections, by reason.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct RejectCounts {
    /// Refused because the scheduler held `max_global` tasks.
    pub global_full: u64,
    /// Refused because the tenant held `max_per_tenant` tasks.
    pub tenant_full: u64,
    /// Refused because the tenant was new and `max_tenants` tenants were tracked.
    pub too_many_tenants: u64,
    /// Refused because the scheduler was closed.
    pub closed: u64,
}

impl RejectCounts {
    /// All rejections.
    #[must_use]
    pub const fn total(&self) -> u64 {
        self.global_full + self.tenant_full + self.too_many_tenants + self.closed
    }
}

/// Scheduler-wide counters, read lock-free ([`Scheduler::counters`](super::Scheduler::counters)).
///
/// Every accepted task is counted once in `enqueued` and, when it leaves, once in exactly one of
/// `dequeued`, `expired` or `evicted`; so `enqueued = dequeued + expired + evicted + queue_len`
/// whenever no operation is in flight. Rejected tasks were never accepted and appear only in
/// `rejected`. While the scheduler runs, the counters are read shard by shard, not as one atomic
/// cut, but outflows are read before inflows so `dequeued + expired + evicted <= enqueued` holds
/// in every snapshot.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct SchedulerCounters {
    /// Tasks accepted by `enqueue`.
    pub enqueued: u64,
    /// Tasks handed to a consumer.
    pub dequeued: u64,
    /// Tasks dropped because their deadline had passed (never handed to a consumer).
    pub expired: u64,
    /// Tasks removed to make room under [`Backpressure::EvictOldest`](super::Backpressure) and
    /// handed back to the enqueuer.
    pub evicted: u64,
    /// Tasks taken out before dispatch by `remove_last_where` (cancelled orders).
    pub removed: u64,
    /// Tasks refused by `enqueue`, by reason.
    pub rejected: RejectCounts,
    /// Tasks held now (accepted, not yet dequeued, expired or evicted): the sum of the shards'
    /// counts, each exact as of that shard's last operation.
    pub queue_len: usize,
}

/// Percentiles of the time tasks spent queued (enqueue to dispatch), from an HDR histogram.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct QueueTimeSummary {
    /// Number of dispatched tasks measured (every dispatch is recorded).
    pub count: u64,
    /// Median.
    pub p50: Duration,
    /// 99th percentile.
    pub p99: Duration,
    /// 99.9th percentile.
    pub p999: Duration,
    /// Largest recorded (clamped at the configured `queue_time_max`).
    pub max: Duration,
}

impl QueueTimeSummary {
    /// Summarizes a histogram of nanoseconds.
    #[must_use]
    pub fn from_histogram(h: &Histogram<u64>) -> Self {
        if h.is_empty() {
            return Self::default();
        }
        Self {
            count: h.len(),
            p50: Duration::from_nanos(h.value_at_quantile(0.50)),
            p99: Duration::from_nanos(h.value_at_quantile(0.99)),
            p999: Duration::from_nanos(h.value_at_quantile(0.999)),
            max: Duration::from_nanos(h.max()),
        }
    }
}

/// One tenant's counters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct TenantStats {
    /// The tenant.
    pub tenant: TenantKey,
    /// Its current quantum (weight).
    pub quantum: u32,
    /// Tasks it holds now.
    pub queued: usize,
    /// Its tasks accepted.
    pub enqueued: u64,
    /// Its tasks dispatched.
    pub dequeued: u64,
    /// Its tasks dropped as expired.
    pub expired: u64,
    /// Its tasks evicted to make room for newer ones.
    pub evicted: u64,
    /// Its tasks taken out by their owner before dispatch (a cancelled order).
    pub removed: u64,
    /// Its tasks refused because it or the scheduler was full (refusals of a closed scheduler are
    /// counted only scheduler-wide).
    pub rejected: u64,
}

impl TenantStats {
    /// Tasks offered: accepted plus refused (the ranking key of the top-tenants list).
    #[must_use]
    pub const fn offered(&self) -> u64 {
        self.enqueued + self.rejected
    }

    /// Orders by offered load, busiest first, then by key (so the order is deterministic).
    pub(super) fn busiest_first(a: &Self, b: &Self) -> CmpOrdering {
        b.offered().cmp(&a.offered()).then(a.tenant.cmp(&b.tenant))
    }
}

/// A snapshot of everything ([`Scheduler::stats`](super::Scheduler::stats)).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct SchedulerStats {
    /// The scheduler-wide counters.
    pub counters: SchedulerCounters,
    /// Queue time of dispatched tasks.
    pub queue_time: QueueTimeSummary,
    /// Tenants tracked.
    pub tenants: usize,
    /// The busiest tenants by offered tasks (at most `top_tenants` entries), busiest first.
    pub top_tenants: Vec<TenantStats>,
}

/// Per-tenant counters kept in the shard's locked state.
#[derive(Clone, Copy, Debug, Default)]
pub(super) struct TenantCounters {
    pub(super) enqueued: u64,
    pub(super) dequeued: u64,
    pub(super) expired: u64,
    pub(super) evicted: u64,
    pub(super) removed: u64,
    pub(super) rejected: u64,
}
