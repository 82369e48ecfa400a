//! The order-flow scheduler: deficit round robin (DRR) across tenants, bounded, deadline-aware.
//!
//! A [`Scheduler`] takes [`Task`]s from many producer threads, each on behalf of a [`TenantKey`]
//! (in the router: a strategy), and hands them to one or more consumers so that no tenant can
//! starve another, nothing is queued without bound, and no task is handed out after its deadline.
//! [`LocalScheduler`] is the same scheduler for a single owning thread (no locks): a router loop
//! that accepts and dispatches on one thread.
//!
//! # Example
//! ```
//! use std::num::NonZeroU32;
//! use std::time::{Duration, Instant};
//!
//! use chronicle_bus::sched::{Dequeued, Enqueued, Scheduler, SchedulerConfig, Task, TenantKey};
//!
//! let a = TenantKey::from_name("strategy-a");
//! let b = TenantKey::from_name("strategy-b");
//! let two = NonZeroU32::new(2).ok_or("zero")?;
//! // Strategy b gets twice a's share while both have orders waiting.
//! let sched = Scheduler::new(SchedulerConfig::default().with_max_per_tenant(1_000).with_quantum(b, two))?;
//!
//! let deadline = Instant::now() + Duration::from_secs(60);
//! assert!(matches!(sched.enqueue(a, Task::new("a: new order").with_deadline(deadline))?, Enqueued::Queued));
//! assert!(matches!(sched.enqueue(a, Task::new("a: cancel").urgent())?, Enqueued::Queued));
//! assert!(matches!(sched.enqueue(b, Task::new("b: new order"))?, Enqueued::Queued));
//!
//! // The router loop: a's cancel goes ahead of a's own order; b is served in its turn.
//! let mut sent = Vec::new();
//! while let Dequeued::Task(_tenant, task) = sched.try_dequeue() {
//!     sent.push(task.into_payload());
//! }
//! assert_eq!(sent.len(), 3);
//! assert!(sent.iter().position(|p| *p == "a: cancel") < sent.iter().position(|p| *p == "a: new order"));
//! let stats = sched.stats();
//! assert_eq!(stats.counters.dequeued, 3);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # DRR rule
//! Each tenant has a *quantum* (its weight, in cost units) and a *deficit* (its unspent credit).
//! Tenants holding tasks are *active* and sit in a ring. Service goes one turn at a time:
//!
//! 1. A tenant entering the ring is granted one quantum: `deficit = quantum`.
//! 2. The front tenant's expired head tasks are dropped (see *Deadlines*). If it is now empty it
//!    leaves the ring and its deficit is reset to 0.
//! 3. If its head's `cost <= deficit`, the head is dispatched and `deficit -= cost`; the tenant keeps
//!    the front (the same turn continues) unless it is now empty, in which case it leaves the ring
//!    and its deficit is reset to 0.
//! 4. Otherwise `deficit += quantum` and the tenant moves to the back of the ring (its turn ends).
//!
//! A tenant's deficit stays in `[0, quantum + max_cost)`, so a tenant that stays active for `k` of
//! its turns is served within `quantum + max_cost` cost units of `k * quantum`: bandwidth between
//! continuously active tenants follows the ratio of their quanta (the DRR bound). A tenant whose
//! head costs `c` is dispatched after at most `ceil(c / quantum)` of its own turns, so large costs
//! and small quanta cannot starve it.
//! A turn that dispatches nothing only raises a deficit; when a whole cycle over all shards
//! dispatches nothing, the scheduler grants every active tenant the `m` quanta that the next `m`
//! idle rounds would have granted (`m` = the fewest top-ups any head still needs), with all shard
//! locks held, so a dequeue does bounded work whatever the cost/quantum ratio.
//!
//! # Shards
//! Tenants are spread over `shards` by [`TenantKey::stable_hash`]; each shard has its own lock and
//! its own ring, so producers of different tenants rarely contend. A *round* of a shard is one turn
//! for each tenant that was in its ring when the round began (tenants arriving during a round are
//! served from the next). Consumers share one cursor and serve one whole round of a shard before
//! moving to the next non-empty shard, so across shards every active tenant still gets one turn per
//! cycle and the DRR shares hold between tenants of different shards. A tenant that becomes active
//! gets its first turn before any other tenant gets a second one (it waits at most one round).
//!
//! # Urgent tasks (cancels)
//! Each tenant has two FIFO lanes. A task marked [`Task::urgent`] goes into the urgent lane, and a
//! tenant's head is its oldest urgent task if it has one, otherwise its oldest normal task. An
//! urgent task is charged its cost against the same deficit, in the tenant's own turn.
//!
//! Fairness argument: DRR never looks past a tenant's head, only at the head's cost; reordering a
//! tenant's own tasks changes which of its tasks is sent, not how much service it gets. Marking
//! tasks urgent therefore gives a tenant no extra bandwidth and costs other tenants nothing: a
//! tenant that marks everything urgent is scheduled exactly like one that marks nothing. The price
//! is that a cancel waits for its tenant's turn: at most one round (the other active tenants'
//! quanta) behind other tenants' work, never behind its own tenant's queued orders. FIFO order holds
//! within each lane.
//!
//! # Deadlines
//! A task with a deadline is expired at and after that instant. Expired tasks are dropped when they
//! reach their tenant's head (at its turn, or when the tenant is full and a new task arrives) and
//! counted in `expired`; they are never returned. Expired tasks behind a live head stay queued (and
//! counted in `queue_len`) until they reach the head. With [`SchedulerConfig::keep_expired`] they
//! are kept instead of dropped and handed back by `drain_expired`, so an owner that must answer
//! every task (the router answers every order) can. A dispatched task's deadline was in the future
//! at the `now` the dequeue used: [`Scheduler::try_dequeue`], `try_dequeue_batch` and
//! `dequeue_blocking` read the clock after taking a shard lock (once per shard visited), so that
//! reading is later than the enqueue of every task they can see there; the `*_at` variants use the
//! caller's reading instead.
//!
//! # Rejection
//! [`Scheduler::enqueue`] never blocks and never queues beyond the limits. It returns
//! `Err(`[`Rejected`]`)`, which hands the task back with a `Copy` [`RejectReason`]:
//! - [`Closed`](RejectReason::Closed): [`close`](Scheduler::close) was called (checked first);
//! - [`TooManyTenants`](RejectReason::TooManyTenants): a new tenant beyond `max_tenants`;
//! - [`TenantFull`](RejectReason::TenantFull): the tenant holds `max_per_tenant` tasks (after its
//!   expired head tasks are dropped) and the policy is [`Backpressure::Reject`], or it is
//!   [`Backpressure::EvictOldest`] and the tenant holds no normal task to evict;
//! - [`GlobalFull`](RejectReason::GlobalFull): the scheduler holds `max_global` tasks.
//!
//! An urgent task is exempt from both limits while its tenant holds fewer than
//! [`SchedulerConfig::urgent_reserve`] urgent tasks: a tenant's own flood of new orders can never
//! crowd out its cancels. The scheduler then holds at most `max_global` plus the tenants' reserves.
//!
//! # Removal
//! [`remove_last_where`](Scheduler::remove_last_where) takes a queued task back out (a cancel that
//! catches its order before dispatch), counted in `removed`.
//!
//! Under `EvictOldest` a full tenant's oldest normal task is removed and returned in
//! [`Enqueued::Evicted`] to make room.
//!
//! # Closing
//! After [`close`](Scheduler::close), enqueues are refused, consumers keep draining what is queued,
//! and dequeues return [`Dequeued::Closed`] once nothing is left. `close` wakes every blocked
//! consumer.
//!
//! # Concurrency
//! Each shard is one `std::sync::Mutex`. A producer locks only its tenant's shard; a consumer locks
//! one shard at a time. Four rare paths take every shard lock, always in index order (the only
//! order in which two are ever held, so there is no deadlock): the fast-forward above, a consumer's
//! decision to sleep, [`close`](Scheduler::close), and the final check before `Closed`. Blocked
//! consumers sleep on a condition variable (no busy loop); a producer notifies only when a sleeper
//! is registered, and the sleep decision is made under the shard locks, so no wake-up is lost.
//! A poisoned lock is recovered, not propagated. Tenant state, including its two `VecDeque` lanes,
//! is kept and reused, so steady-state operation does not allocate. [`Scheduler::enqueue`] and
//! [`Scheduler::try_dequeue`] each read the clock once (the dequeue once per shard visited); the
//! `*_at` variants take the caller's reading, so a loop can read it once per batch, and
//! [`Scheduler::try_dequeue_batch`] serves several tasks per lock acquisition.
//!
//! # Statistics
//! [`Scheduler::counters`] reads lock-free; [`Scheduler::stats`] adds the queue-time percentiles and
//! the busiest tenants, locking one shard at a time, briefly.
//! - `enqueued`: tasks accepted. `dequeued`: tasks handed to a consumer. `expired`: tasks dropped
//!   because their deadline passed. `evicted`: tasks removed by `EvictOldest` (and handed back).
//!   `removed`: tasks taken back out by `remove_last_where`. Every accepted task ends in exactly
//!   one of these four, or is still queued.
//! - `rejected`: tasks refused by `enqueue`, by reason; never counted as enqueued.
//! - `queue_len`: tasks held now.
//! - `queue_time`: enqueue-to-dispatch time of every dispatched task (HDR histogram in ns; p50, p99,
//!   p99.9, max). Expired and evicted tasks are not recorded.
//! - `top_tenants`: per-tenant counters of the busiest tenants by offered tasks (accepted +
//!   refused), at most `top_tenants` entries; per-tenant state is bounded by `max_tenants`.

mod config;
mod drr;
mod local;
mod outcome;
mod stats;
mod task;
mod wait;

use std::num::NonZeroU32;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use crossbeam_utils::CachePadded;
use hdrhistogram::Histogram;

pub use config::{Backpressure, ConfigError, MAX_SHARDS, SchedulerConfig};
pub use local::LocalScheduler;
pub use outcome::{BatchDequeued, Dequeued, Enqueued, RejectReason, Rejected};
pub use stats::{QueueTimeSummary, RejectCounts, SchedulerCounters, SchedulerStats, TenantStats};
pub use task::{Task, TenantKey};

use drr::DrrState;
use stats::ShardCounters;
use wait::Waiters;

/// Fast-forwards one `try_dequeue` may attempt before it reports `Empty`. One suffices for a single
/// consumer (the next cycle dispatches); more only matter when other consumers race for the work.
const MAX_FAST_FORWARDS: u32 = 4;

/// The state every shard operation may touch besides its own shard.
#[derive(Debug)]
struct Shared {
    /// Tasks held, all shards together; kept only with more than one shard (with one shard, that
    /// shard's own count, under its lock, is exact).
    len: CachePadded<AtomicUsize>,
    global_len: bool,
    /// Written only with every shard lock held (see [`Scheduler::close`]), so a read under any
    /// shard lock is exact.
    closed: AtomicBool,
    /// Tenants tracked, all shards together.
    tenants: AtomicUsize,
    waiters: Waiters,
    max_global: usize,
    max_per_tenant: usize,
    max_tenants: usize,
    default_quantum: NonZeroU32,
    backpressure: Backpressure,
    urgent_reserve: usize,
    new_tenants_first: bool,
    keep_expired: bool,
}

impl Shared {
    fn new(config: &SchedulerConfig, global_len: bool) -> Self {
        Self {
            len: CachePadded::new(AtomicUsize::new(0)),
            global_len,
            closed: AtomicBool::new(false),
            tenants: AtomicUsize::new(0),
            waiters: Waiters::default(),
            max_global: config.max_global,
            max_per_tenant: config.max_per_tenant,
            max_tenants: config.max_tenants,
            default_quantum: config.default_quantum,
            backpressure: config.backpressure,
            urgent_reserve: config.urgent_reserve,
            new_tenants_first: config.new_tenants_first,
            keep_expired: config.keep_expired,
        }
    }

    /// Takes one of the `max_global` places for a new task (the caller holds a shard lock; its shard
    /// holds `shard_queued` tasks).
    #[inline]
    fn reserve(&self, shard_queued: usize) -> Result<(), RejectReason> {
        if !self.global_len {
            return if shard_queued >= self.max_global {
                Err(RejectReason::GlobalFull)
            } else {
                Ok(())
            };
        }
        // Relaxed: `len` bounds how much is held; it publishes nothing (the tasks themselves are
        // published by the shard locks). The CAS never lets `len` pass `max_global`.
        let mut cur = self.len.load(Ordering::Relaxed);
        loop {
            if cur >= self.max_global {
                return Err(RejectReason::GlobalFull);
            }
            match self
                .len
                .compare_exchange_weak(cur, cur + 1, Ordering::Relaxed, Ordering::Relaxed)
            {
                Ok(_) => return Ok(()),
                Err(now) => cur = now,
            }
        }
    }

    /// Takes a place beyond `max_global` for an urgent task within its tenant's reserve.
    #[inline]
    fn reserve_urgent(&self) {
        if self.global_len {
            // Relaxed: see `reserve`.
            self.len.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Gives back `n` places (tasks that left).
    #[inline]
    fn release(&self, n: usize) {
        if self.global_len && n > 0 {
            // Relaxed: see `reserve`.
            self.len.fetch_sub(n, Ordering::Relaxed);
        }
    }

    /// Counts one more tenant unless `max_tenants` are tracked.
    fn try_add_tenant(&self) -> bool {
        // Relaxed: a bound on memory, it publishes nothing (the slot itself is under a shard lock).
        self.tenants
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| {
                (n < self.max_tenants).then_some(n + 1)
            })
            .is_ok()
    }
}

/// One shard: a lock around its DRR state, and counters readable without the lock.
#[derive(Debug)]
struct Shard<T> {
    state: Mutex<DrrState<T>>,
    counters: ShardCounters,
}

impl<T> Shard<T> {
    /// Locks the shard, ignoring poisoning: the only code that can panic while a shard lock is
    /// held is a payload's `Drop` for an expired task, and it runs after that task has left every
    /// structure and count, so the state is consistent (tested).
    #[inline]
    fn lock(&self) -> MutexGuard<'_, DrrState<T>> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The DRR scheduler. `Sync` when `T: Send`: share it by reference or in an `Arc`.
///
/// See the [module documentation](self) for the rules.
#[derive(Debug)]
pub struct Scheduler<T> {
    shared: Shared,
    /// The shard served now (consumers finish its round, then move on).
    cursor: CachePadded<AtomicUsize>,
    /// Shard 0, kept apart so that [`Scheduler::shard`] is a total function.
    first: CachePadded<Shard<T>>,
    rest: Box<[CachePadded<Shard<T>>]>,
    top_tenants: usize,
}

impl<T> Scheduler<T> {
    /// Builds a scheduler.
    ///
    /// # Errors
    /// [`ConfigError`] when a limit is zero, `shards` is out of range, more tenants are given a
    /// quantum than `max_tenants`, or the histogram bounds are unusable.
    pub fn new(config: SchedulerConfig) -> Result<Self, ConfigError> {
        config.validate()?;
        let hist = config.histogram()?;
        let make = || {
            CachePadded::new(Shard {
                state: Mutex::new(DrrState::new(hist.clone())),
                counters: ShardCounters::default(),
            })
        };
        let first = make();
        let rest: Box<[_]> = (1..config.shards).map(|_| make()).collect();
        let sched = Self {
            shared: Shared::new(&config, config.shards > 1),
            cursor: CachePadded::new(AtomicUsize::new(0)),
            first,
            rest,
            top_tenants: config.top_tenants,
        };
        for &(tenant, quantum) in &config.quanta {
            // Cannot fail: `validate` checked the number of distinct tenants against max_tenants.
            sched
                .set_quantum(tenant, quantum)
                .map_err(|_| ConfigError::TooManyQuanta {
                    quanta: config.quanta.len(),
                    max_tenants: config.max_tenants,
                })?;
        }
        Ok(sched)
    }

    /// Number of shards.
    #[inline]
    #[must_use]
    pub fn shard_count(&self) -> usize {
        1 + self.rest.len()
    }

    #[inline]
    fn shard(&self, i: usize) -> &Shard<T> {
        match i.checked_sub(1).and_then(|j| self.rest.get(j)) {
            Some(s) => s,
            None => &self.first,
        }
    }

    /// The shard of a tenant: the high bits of its stable hash, scaled to the shard count.
    #[inline]
    fn shard_index(&self, hash: u64) -> usize {
        ((u128::from(hash) * self.shard_count() as u128) >> 64) as usize
    }

    /// Offers a task for `tenant`, stamped with `Instant::now()` as its enqueue time.
    ///
    /// # Errors
    /// [`Rejected`] (with the task) when the scheduler is closed, the tenant is new and
    /// `max_tenants` are tracked, the tenant is full, or the scheduler is full; see the module
    /// documentation.
    #[inline]
    pub fn enqueue(&self, tenant: TenantKey, task: Task<T>) -> Result<Enqueued<T>, Rejected<T>> {
        self.enqueue_at(tenant, task, Instant::now())
    }

    /// [`enqueue`](Self::enqueue) with the caller's clock reading as the enqueue time (one clock
    /// read can serve a batch). `now` also decides which tasks count as expired if the tenant is
    /// full.
    ///
    /// # Errors
    /// As [`enqueue`](Self::enqueue).
    pub fn enqueue_at(
        &self,
        tenant: TenantKey,
        mut task: Task<T>,
        now: Instant,
    ) -> Result<Enqueued<T>, Rejected<T>> {
        let hash = tenant.stable_hash();
        let shard = self.shard(self.shard_index(hash));
        // Relaxed: an early refusal only; the decisive check is made under the shard lock, under
        // which `close` writes the flag.
        if self.shared.closed.load(Ordering::Relaxed) {
            shard.counters.on_rejected(RejectReason::Closed);
            return Err(Rejected::new(RejectReason::Closed, task));
        }
        task.stamp(now);
        let result = shard
            .lock()
            .enqueue(&self.shared, &shard.counters, hash, tenant, task, now);
        // The shard lock is released here, before any wake-up (see `wait`).
        match &result {
            Ok(Enqueued::Queued) => self.shared.waiters.wake_one(),
            // Same number of tasks as before: nobody can be asleep waiting for it.
            Ok(Enqueued::Evicted(_)) => {}
            Err(rejected) => shard.counters.on_rejected(rejected.reason()),
        }
        result
    }

    /// Takes the next task by the DRR rule, reading the clock once.
    #[inline]
    pub fn try_dequeue(&self) -> Dequeued<T> {
        self.dequeue_one(None)
    }

    /// Takes the next task by the DRR rule with `now` as the current time: tasks whose deadline is
    /// at or before `now` are dropped (counted as expired), never returned.
    ///
    /// Returns [`Dequeued::Closed`] only when the scheduler is closed and empty. `Empty` can also
    /// mean that other consumers took the dispatchable work while this call looked.
    #[inline]
    pub fn try_dequeue_at(&self, now: Instant) -> Dequeued<T> {
        self.dequeue_one(Some(now))
    }

    /// One dequeue; `now: None` reads the clock under each shard lock it takes.
    #[inline]
    fn dequeue_one(&self, now: Option<Instant>) -> Dequeued<T> {
        let mut out = None;
        match self.dequeue_into(now, 1, |tenant, task| out = Some((tenant, task))) {
            BatchDequeued::Closed => Dequeued::Closed,
            BatchDequeued::Tasks(_) | BatchDequeued::Empty => match out {
                Some((tenant, task)) => Dequeued::Task(tenant, task),
                None => Dequeued::Empty,
            },
        }
    }

    /// Takes up to `max` tasks (at least 1) into `out`, reading the clock once: the same tasks in
    /// the same order as that many [`try_dequeue`](Self::try_dequeue) calls at one instant, with
    /// one lock acquisition per shard round instead of one per task.
    pub fn try_dequeue_batch(
        &self,
        max: usize,
        out: &mut Vec<(TenantKey, Task<T>)>,
    ) -> BatchDequeued {
        self.dequeue_into(None, max.max(1), |tenant, task| out.push((tenant, task)))
    }

    /// [`try_dequeue_batch`](Self::try_dequeue_batch) with the caller's clock reading.
    pub fn try_dequeue_batch_at(
        &self,
        now: Instant,
        max: usize,
        out: &mut Vec<(TenantKey, Task<T>)>,
    ) -> BatchDequeued {
        self.dequeue_into(Some(now), max.max(1), |tenant, task| {
            out.push((tenant, task))
        })
    }

    /// Dispatches up to `max` (>= 1) tasks to `sink`, exactly as `max` successive single dequeues
    /// at `now` would by one consumer. With `now: None` the clock is read right after each shard
    /// lock is taken, so every task seen under that lock was stamped before that reading.
    #[inline]
    fn dequeue_into(
        &self,
        now: Option<Instant>,
        max: usize,
        mut sink: impl FnMut(TenantKey, Task<T>),
    ) -> BatchDequeued {
        let n = self.shard_count();
        let mut taken = 0usize;
        let mut idle_visits = 0usize;
        let mut fast_forwards = 0u32;
        loop {
            // Relaxed: the cursor is only a hint of where to serve; shard state is under its lock.
            let start = if n == 1 {
                0
            } else {
                self.cursor.load(Ordering::Relaxed) % n
            };
            let Some(cur) = (0..n)
                .map(|k| (start + k) % n)
                .find(|&i| self.shard(i).counters.queued() > 0)
            else {
                return if taken > 0 {
                    BatchDequeued::Tasks(taken)
                } else {
                    self.empty_or_closed()
                };
            };
            if cur != start {
                self.move_cursor(start, cur);
            }
            let shard = self.shard(cur);
            let (idle, round_over) = {
                let mut st = shard.lock();
                let now = now.unwrap_or_else(Instant::now);
                let idle = loop {
                    match st.serve(&self.shared, now, &shard.counters) {
                        Some((tenant, task)) => {
                            sink(tenant, task);
                            taken += 1;
                            idle_visits = 0;
                            fast_forwards = 0;
                            if taken >= max || st.round_over() {
                                break false;
                            }
                        }
                        None => break true,
                    }
                };
                (idle, st.round_over())
            };
            if round_over && n > 1 {
                self.move_cursor(cur, (cur + 1) % n);
            }
            if taken >= max {
                return BatchDequeued::Tasks(taken);
            }
            if idle {
                idle_visits += 1;
                if idle_visits >= n {
                    // A cycle of visits without a dispatch: every head needs more credit.
                    if fast_forwards >= MAX_FAST_FORWARDS {
                        return if taken > 0 {
                            BatchDequeued::Tasks(taken)
                        } else {
                            BatchDequeued::Empty
                        };
                    }
                    fast_forwards += 1;
                    idle_visits = 0;
                    self.fast_forward(now);
                }
            }
        }
    }

    /// No shard shows a task: `Closed` if closed and truly empty (checked under every lock, since
    /// the per-shard counts read so far are hints), else `Empty`.
    fn empty_or_closed(&self) -> BatchDequeued {
        // Relaxed: a hint here; the decision is re-made under the locks below.
        if !self.shared.closed.load(Ordering::Relaxed) {
            return BatchDequeued::Empty;
        }
        let guards = self.lock_all();
        if guards.iter().all(|g| g.queued() == 0) {
            BatchDequeued::Closed
        } else {
            BatchDequeued::Empty
        }
    }

    /// Every shard lock, in index order (the only order in which more than one is ever held).
    fn lock_all(&self) -> Vec<MutexGuard<'_, DrrState<T>>> {
        (0..self.shard_count())
            .map(|i| self.shard(i).lock())
            .collect()
    }

    /// Moves the shared cursor from `from` to `to` unless another consumer moved it already.
    ///
    /// Relaxed load and store, no read-modify-write: the cursor is a hint. Two consumers racing here
    /// can at worst move it back to a shard that just finished its round, giving that shard one
    /// extra round; they cannot skip a shard, and within a shard every turn still follows the ring.
    #[inline]
    fn move_cursor(&self, from: usize, to: usize) {
        if self.cursor.load(Ordering::Relaxed) == from {
            self.cursor.store(to, Ordering::Relaxed);
        }
    }

    /// Grants every active tenant of every shard the quanta of the idle rounds ahead, all shard
    /// locks held (taken in index order; nothing else holds two shard locks, so no deadlock).
    fn fast_forward(&self, now: Option<Instant>) {
        let mut guards = self.lock_all();
        let now = now.unwrap_or_else(Instant::now);
        let need = guards.iter().filter_map(|g| g.min_need(now)).min();
        if let Some(rounds) = need.filter(|&m| m > 0) {
            for g in &mut guards {
                g.fast_forward(rounds);
            }
        }
    }

    /// Waits up to `timeout` for a task, without spinning: `Dequeued::Empty` after the timeout,
    /// `Dequeued::Closed` once closed and drained. [`close`](Self::close) wakes every waiter.
    /// A `timeout` too large to represent waits without limit.
    pub fn dequeue_blocking(&self, timeout: Duration) -> Dequeued<T> {
        let deadline = Instant::now().checked_add(timeout);
        loop {
            match self.try_dequeue() {
                Dequeued::Empty => {}
                done => return done,
            }
            if deadline.is_some_and(|d| Instant::now() >= d) {
                return Dequeued::Empty;
            }
            // Decide to sleep under every shard lock (see `wait` for why this loses no wake-up).
            let guards = self.lock_all();
            // Relaxed: `closed` is written under these locks.
            let idle = !self.shared.closed.load(Ordering::Relaxed)
                && guards.iter().all(|g| g.queued() == 0);
            if idle {
                self.shared.waiters.sleep(deadline, move || drop(guards));
            }
        }
    }

    /// Closes the scheduler: enqueues are refused from now on, queued tasks can still be
    /// dequeued, and every blocked consumer is woken. Idempotent.
    pub fn close(&self) {
        {
            let _all = self.lock_all();
            // Relaxed: written under every shard lock, so every decision made under a shard lock
            // (accept an enqueue, report `Closed`, go to sleep) sees it or precedes it.
            self.shared.closed.store(true, Ordering::Relaxed);
        }
        self.shared.waiters.wake_all();
    }

    /// Whether [`close`](Self::close) was called.
    #[inline]
    #[must_use]
    pub fn is_closed(&self) -> bool {
        // Relaxed: a report, not a decision (see `close`).
        self.shared.closed.load(Ordering::Relaxed)
    }

    /// Tasks held now (lock-free).
    #[inline]
    #[must_use]
    pub fn queue_len(&self) -> usize {
        (0..self.shard_count())
            .map(|i| self.shard(i).counters.queued())
            .sum()
    }

    /// Sets `tenant`'s quantum (weight). It applies from the tenant's next grant (its next entry
    /// into the ring or its next top-up).
    ///
    /// # Errors
    /// [`RejectReason::TooManyTenants`] if the tenant is new and `max_tenants` are tracked.
    pub fn set_quantum(&self, tenant: TenantKey, quantum: NonZeroU32) -> Result<(), RejectReason> {
        let hash = tenant.stable_hash();
        self.shard(self.shard_index(hash))
            .lock()
            .set_quantum(&self.shared, hash, tenant, quantum)
    }

    /// One tenant's counters, if it is tracked (locks its shard briefly).
    #[must_use]
    pub fn tenant_stats(&self, tenant: TenantKey) -> Option<TenantStats> {
        let hash = tenant.stable_hash();
        self.shard(self.shard_index(hash)).lock().tenant_stats(hash)
    }

    /// Takes out `tenant`'s most recently queued task whose payload matches `pred` (its normal
    /// lane searched from the back, then its urgent lane), counted as removed: how a router
    /// withdraws an order its cancel caught before dispatch. `None` if no queued task matches.
    pub fn remove_last_where(
        &self,
        tenant: TenantKey,
        pred: impl FnMut(&T) -> bool,
    ) -> Option<Task<T>> {
        let hash = tenant.stable_hash();
        let shard = self.shard(self.shard_index(hash));
        shard
            .lock()
            .remove_last_where(&self.shared, &shard.counters, hash, pred)
    }

    /// Removes every active tenant's expired head tasks now instead of at their turns;
    /// returns how many (locks each shard in turn).
    pub fn purge_expired_at(&self, now: Instant) -> usize {
        (0..self.shard_count())
            .map(|i| {
                let shard = self.shard(i);
                shard
                    .lock()
                    .purge_expired(&self.shared, &shard.counters, now)
            })
            .sum()
    }

    /// With [`SchedulerConfig::keep_expired`], moves the expired tasks collected so far into
    /// `out` (with their tenants), so each can be answered; otherwise there are none.
    pub fn drain_expired(&self, out: &mut Vec<(TenantKey, Task<T>)>) {
        for i in 0..self.shard_count() {
            self.shard(i).lock().drain_expired(out);
        }
    }

    /// The scheduler-wide counters, lock-free.
    #[must_use]
    pub fn counters(&self) -> SchedulerCounters {
        let mut c = SchedulerCounters::default();
        for i in 0..self.shard_count() {
            self.shard(i).counters.snapshot(&mut c);
        }
        c.queue_len = self.queue_len();
        c
    }

    /// The queue-time histogram (nanoseconds) of all dispatches so far, merged over the shards
    /// (each shard locked in turn, for the copy of its histogram).
    #[must_use]
    pub fn queue_time_histogram(&self) -> Histogram<u64> {
        let mut merged = self.first.lock().histogram().clone();
        for shard in &self.rest {
            let h = shard.lock().histogram().clone();
            // Every shard's histogram has the same bounds, so the addition cannot go out of
            // range; a failure would only leave that shard out of the merge.
            let _same_bounds = merged.add(&h);
        }
        merged
    }

    /// A full snapshot: counters, queue-time percentiles and the busiest tenants. Locks one shard at
    /// a time, briefly; the scheduler keeps running.
    #[must_use]
    pub fn stats(&self) -> SchedulerStats {
        let counters = self.counters();
        let queue_time = QueueTimeSummary::from_histogram(&self.queue_time_histogram());
        let mut top = Vec::new();
        let mut tenants = 0;
        for i in 0..self.shard_count() {
            let st = self.shard(i).lock();
            tenants += st.tenant_count();
            st.collect_tenants(&mut top);
            drop(st);
            if top.len() > self.top_tenants {
                top.sort_unstable_by(TenantStats::busiest_first);
                top.truncate(self.top_tenants);
            }
        }
        top.sort_unstable_by(TenantStats::busiest_first);
        top.truncate(self.top_tenants);
        SchedulerStats {
            counters,
            queue_time,
            tenants,
            top_tenants: top,
        }
    }
}
