//! [`LocalScheduler`]: the same DRR scheduler owned by one thread, without locks.

use std::num::NonZeroU32;
use std::time::Instant;

use hdrhistogram::Histogram;

use super::config::ConfigError;
use super::config::SchedulerConfig;
use super::drr::DrrState;
use super::outcome::{BatchDequeued, Dequeued, Enqueued, RejectReason, Rejected};
use super::stats::{
    QueueTimeSummary, SchedulerCounters, SchedulerStats, ShardCounters, TenantStats,
};
use super::task::{Task, TenantKey};
use super::{MAX_FAST_FORWARDS, Shared};

/// The DRR scheduler for a single owning thread (`&mut self`, no locks, no read-modify-write
/// atomics on the hot path): for a router loop that both accepts and dispatches on one thread.
///
/// Same rules, limits, results and statistics as [`Scheduler`](super::Scheduler) with one shard
/// (`shards` in the configuration is ignored); given the same operations it dispatches the same
/// tasks in the same order. There is no blocking dequeue: nothing else could enqueue while the
/// owner waits. Move it between threads freely (`Send` when `T: Send`).
#[derive(Debug)]
pub struct LocalScheduler<T> {
    shared: Shared,
    state: DrrState<T>,
    counters: ShardCounters,
    top_tenants: usize,
}

impl<T> LocalScheduler<T> {
    /// Builds a local scheduler.
    ///
    /// # Errors
    /// As [`Scheduler::new`](super::Scheduler::new).
    pub fn new(config: SchedulerConfig) -> Result<Self, ConfigError> {
        config.validate()?;
        let mut local = Self {
            shared: Shared::new(&config, false),
            state: DrrState::new(config.histogram()?),
            counters: ShardCounters::default(),
            top_tenants: config.top_tenants,
        };
        for &(tenant, quantum) in &config.quanta {
            local
                .set_quantum(tenant, quantum)
                .map_err(|_| ConfigError::TooManyQuanta {
                    quanta: config.quanta.len(),
                    max_tenants: config.max_tenants,
                })?;
        }
        Ok(local)
    }

    /// Offers a task, stamped with `Instant::now()`. See
    /// [`Scheduler::enqueue`](super::Scheduler::enqueue).
    ///
    /// # Errors
    /// [`Rejected`] (with the task), as for the shared scheduler.
    #[inline]
    pub fn enqueue(
        &mut self,
        tenant: TenantKey,
        task: Task<T>,
    ) -> Result<Enqueued<T>, Rejected<T>> {
        self.enqueue_at(tenant, task, Instant::now())
    }

    /// Offers a task with the caller's clock reading as its enqueue time.
    ///
    /// # Errors
    /// [`Rejected`] (with the task), as for the shared scheduler.
    #[inline]
    pub fn enqueue_at(
        &mut self,
        tenant: TenantKey,
        mut task: Task<T>,
        now: Instant,
    ) -> Result<Enqueued<T>, Rejected<T>> {
        task.stamp(now);
        let hash = tenant.stable_hash();
        let result = self
            .state
            .enqueue(&self.shared, &self.counters, hash, tenant, task, now);
        if let Err(rejected) = &result {
            self.counters.on_rejected(rejected.reason());
        }
        result
    }

    /// Takes the next task by the DRR rule, reading the clock once.
    #[inline]
    pub fn try_dequeue(&mut self) -> Dequeued<T> {
        self.try_dequeue_at(Instant::now())
    }

    /// Takes the next task by the DRR rule with `now` as the current time. `Empty` means nothing is
    /// queued; `Closed` means closed and nothing is queued.
    pub fn try_dequeue_at(&mut self, now: Instant) -> Dequeued<T> {
        let mut fast_forwards = 0u32;
        loop {
            if self.state.queued() == 0 {
                return if self.is_closed() {
                    Dequeued::Closed
                } else {
                    Dequeued::Empty
                };
            }
            if let Some((tenant, task)) = self.state.serve(&self.shared, now, &self.counters) {
                return Dequeued::Task(tenant, task);
            }
            // A round without a dispatch: skip the idle rounds ahead (see the module documentation).
            if fast_forwards >= MAX_FAST_FORWARDS {
                return Dequeued::Empty;
            }
            fast_forwards += 1;
            if let Some(rounds) = self.state.min_need(now).filter(|&m| m > 0) {
                self.state.fast_forward(rounds);
            }
        }
    }

    /// Takes up to `max` tasks (at least 1) into `out`, reading the clock once: the same tasks in
    /// the same order as that many [`try_dequeue`](Self::try_dequeue) calls at one instant.
    pub fn try_dequeue_batch(
        &mut self,
        max: usize,
        out: &mut Vec<(TenantKey, Task<T>)>,
    ) -> BatchDequeued {
        self.try_dequeue_batch_at(Instant::now(), max, out)
    }

    /// [`try_dequeue_batch`](Self::try_dequeue_batch) with the caller's clock reading.
    pub fn try_dequeue_batch_at(
        &mut self,
        now: Instant,
        max: usize,
        out: &mut Vec<(TenantKey, Task<T>)>,
    ) -> BatchDequeued {
        let max = max.max(1);
        let mut taken = 0usize;
        loop {
            match self.try_dequeue_at(now) {
                Dequeued::Task(tenant, task) => {
                    out.push((tenant, task));
                    taken += 1;
                    if taken >= max {
                        return BatchDequeued::Tasks(taken);
                    }
                }
                Dequeued::Empty if taken > 0 => return BatchDequeued::Tasks(taken),
                Dequeued::Closed if taken > 0 => return BatchDequeued::Tasks(taken),
                Dequeued::Empty => return BatchDequeued::Empty,
                Dequeued::Closed => return BatchDequeued::Closed,
            }
        }
    }

    /// Refuses enqueues from now on; what is queued can still be dequeued.
    pub fn close(&mut self) {
        // Relaxed: single owner; the flag is shared with `DrrState::enqueue` only through `&self`.
        self.shared
            .closed
            .store(true, std::sync::atomic::Ordering::Relaxed);
    }

    /// Whether [`close`](Self::close) was called.
    #[inline]
    #[must_use]
    pub fn is_closed(&self) -> bool {
        self.shared
            .closed
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Tasks held now.
    #[inline]
    #[must_use]
    pub fn queue_len(&self) -> usize {
        self.state.queued()
    }

    /// Sets a tenant's quantum (weight), from its next grant on.
    ///
    /// # Errors
    /// [`RejectReason::TooManyTenants`] if the tenant is new and `max_tenants` are tracked.
    pub fn set_quantum(
        &mut self,
        tenant: TenantKey,
        quantum: NonZeroU32,
    ) -> Result<(), RejectReason> {
        self.state
            .set_quantum(&self.shared, tenant.stable_hash(), tenant, quantum)
    }

    /// Takes out `tenant`'s most recently queued task whose payload matches `pred`. See
    /// [`Scheduler::remove_last_where`](super::Scheduler::remove_last_where).
    pub fn remove_last_where(
        &mut self,
        tenant: TenantKey,
        pred: impl FnMut(&T) -> bool,
    ) -> Option<Task<T>> {
        self.state
            .remove_last_where(&self.shared, &self.counters, tenant.stable_hash(), pred)
    }

    /// Whether the next dispatch would serve a tenant that just became active
    /// ([`SchedulerConfig::new_tenants_first`]): a caller pacing dispatches can spend a reserved
    /// token on it, so it waits for nothing.
    #[must_use]
    pub fn new_tenant_waiting(&self) -> bool {
        self.state.has_fresh_work()
    }

    /// Removes every active tenant's expired head tasks now instead of at their turns (a
    /// router that waits for send tokens still answers expiries on time); returns how many.
    pub fn purge_expired_at(&mut self, now: Instant) -> usize {
        self.state.purge_expired(&self.shared, &self.counters, now)
    }

    /// With [`SchedulerConfig::keep_expired`], moves the expired tasks collected so far into
    /// `out` (with their tenants); otherwise there are none.
    pub fn drain_expired(&mut self, out: &mut Vec<(TenantKey, Task<T>)>) {
        self.state.drain_expired(out);
    }

    /// One tenant's counters, if it is tracked.
    #[must_use]
    pub fn tenant_stats(&self, tenant: TenantKey) -> Option<TenantStats> {
        self.state.tenant_stats(tenant.stable_hash())
    }

    /// The scheduler-wide counters.
    #[must_use]
    pub fn counters(&self) -> SchedulerCounters {
        let mut c = SchedulerCounters::default();
        self.counters.snapshot(&mut c);
        c.queue_len = self.queue_len();
        c
    }

    /// The queue-time histogram (nanoseconds) of all dispatches so far.
    #[must_use]
    pub fn queue_time_histogram(&self) -> &Histogram<u64> {
        self.state.histogram()
    }

    /// A full snapshot: counters, queue-time percentiles and the busiest tenants.
    #[must_use]
    pub fn stats(&self) -> SchedulerStats {
        let mut top = Vec::new();
        self.state.collect_tenants(&mut top);
        top.sort_unstable_by(TenantStats::busiest_first);
        top.truncate(self.top_tenants);
        SchedulerStats {
            counters: self.counters(),
            queue_time: QueueTimeSummary::from_histogram(self.state.histogram()),
            tenants: self.state.tenant_count(),
            top_tenants: top,
        }
    }
}
