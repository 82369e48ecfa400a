//! One shard's DRR state: its tenants, their queues and deficits, and its active ring.
//!
//! Everything here runs with the shard lock held; the only shared state it touches is the shard's
//! counters and the scheduler-wide [`Shared`] words (through their own atomics).

use std::collections::hash_map::Entry;
use std::collections::{HashMap, VecDeque};
use std::hash::{BuildHasherDefault, Hasher};
use std::num::NonZeroU32;
use std::sync::atomic::Ordering;
use std::time::Instant;

use hdrhistogram::Histogram;

use super::Shared;
use super::config::Backpressure;
use super::outcome::{Enqueued, RejectReason, Rejected};
use super::stats::{ShardCounters, TenantCounters, TenantStats};
use super::task::{Task, TenantKey};

/// Hasher for keys that are already [`TenantKey::stable_hash`] values: passes them through.
///
/// `stable_hash` is a bijection, so the tenant table keyed by it needs no second hash.
#[derive(Default, Clone, Copy, Debug)]
pub(super) struct PremixedHasher(u64);

impl Hasher for PremixedHasher {
    #[inline]
    fn finish(&self) -> u64 {
        self.0
    }

    #[inline]
    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }

    /// Only `u64` keys are used; other input is folded in (FNV-1a) so the hasher stays total.
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0 ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
}

type TenantIndex = HashMap<u64, u32, BuildHasherDefault<PremixedHasher>>;

/// One tenant: two FIFO lanes and its DRR deficit.
#[derive(Debug)]
struct TenantSlot<T> {
    key: TenantKey,
    urgent: VecDeque<Task<T>>,
    normal: VecDeque<Task<T>>,
    /// Credit in cost units. Granted one quantum when the tenant enters the ring and one more each
    /// time its head does not fit; reset to 0 when it leaves the ring.
    deficit: u64,
    quantum: NonZeroU32,
    in_ring: bool,
    counters: TenantCounters,
}

/// What one step of a tenant's turn did (see `DrrState::step`).
enum Step<T> {
    /// It was empty (after dropping expired heads) and left.
    Left,
    /// It took this task; `true` if that emptied it.
    Took(TenantKey, Task<T>, bool),
    /// Its head did not fit: it was granted a quantum.
    Granted,
}

/// What one serving step of a tenant came to.
enum Turn<T> {
    /// A task to dispatch.
    Dispatch(TenantKey, Task<T>),
    /// The tenant's turn is over (it left, or went to the back).
    Over,
}

impl<T> TenantSlot<T> {
    fn new(key: TenantKey, quantum: NonZeroU32) -> Self {
        Self {
            key,
            urgent: VecDeque::new(),
            normal: VecDeque::new(),
            deficit: 0,
            quantum,
            in_ring: false,
            counters: TenantCounters::default(),
        }
    }

    #[inline]
    fn len(&self) -> usize {
        self.urgent.len() + self.normal.len()
    }

    /// The next task of this tenant: the oldest urgent one, else the oldest normal one.
    #[inline]
    fn head(&self) -> Option<&Task<T>> {
        match self.urgent.front() {
            Some(t) => Some(t),
            None => self.normal.front(),
        }
    }

    #[inline]
    fn pop_head(&mut self) -> Option<Task<T>> {
        match self.urgent.pop_front() {
            Some(t) => Some(t),
            None => self.normal.pop_front(),
        }
    }

    /// Top-ups this tenant still needs before its head fits (0: it fits, or its head is expired
    /// and will be purged); `None` when it holds nothing.
    fn need(&self, now: Instant) -> Option<u64> {
        let head = self.head()?;
        if head.is_expired_at(now) {
            return Some(0);
        }
        let cost = u64::from(head.cost());
        if cost <= self.deficit {
            return Some(0);
        }
        Some((cost - self.deficit).div_ceil(u64::from(self.quantum.get())))
    }

    fn stats(&self) -> TenantStats {
        TenantStats {
            tenant: self.key,
            quantum: self.quantum.get(),
            queued: self.len(),
            enqueued: self.counters.enqueued,
            dequeued: self.counters.dequeued,
            expired: self.counters.expired,
            evicted: self.counters.evicted,
            removed: self.counters.removed,
            rejected: self.counters.rejected,
        }
    }
}

/// Drops `slot`'s expired head tasks, accounting for each one (tenant and shard counters, the
/// shard's count, the global count) *before* dropping it, so a panicking `Drop` of a payload leaves
/// every count exact. With `keep_expired` the tasks go to `kept` instead of being dropped.
fn purge_expired_head<T>(
    slot: &mut TenantSlot<T>,
    queued: &mut usize,
    shared: &Shared,
    counters: &ShardCounters,
    now: Instant,
    kept: &mut Vec<(TenantKey, Task<T>)>,
) {
    while slot.head().is_some_and(|t| t.is_expired_at(now)) {
        let Some(expired) = slot.pop_head() else {
            break;
        };
        slot.counters.expired += 1;
        *queued = queued.saturating_sub(1);
        counters.on_expired(1);
        counters.set_queued(*queued);
        shared.release(1);
        if shared.keep_expired {
            kept.push((slot.key, expired));
        } else {
            drop(expired);
        }
    }
}

/// A shard's DRR state (guarded by the shard's mutex).
#[derive(Debug)]
pub(super) struct DrrState<T> {
    slots: Vec<TenantSlot<T>>,
    index: TenantIndex,
    /// Active tenants (holding at least one task, or emptied by a purge outside `serve` and not yet
    /// reached), as indices into `slots`, in service order. Only the front leaves.
    ring: VecDeque<u32>,
    /// Tenants that became active and are served before the ring for one quantum
    /// (`new_tenants_first`); they are also `in_ring`.
    fresh: VecDeque<u32>,
    /// Turns left in the shard's current round (the tenants that were in the ring when the round
    /// began and have not had their turn yet). Always `<= ring.len()`.
    turns_left: usize,
    /// Tasks held by the shard.
    queued: usize,
    /// Queue time of every dispatch from this shard, in nanoseconds.
    hist: Histogram<u64>,
    /// Expired tasks waiting to be handed back (`keep_expired`).
    expired: Vec<(TenantKey, Task<T>)>,
}

impl<T> DrrState<T> {
    pub(super) fn new(hist: Histogram<u64>) -> Self {
        Self {
            slots: Vec::new(),
            index: TenantIndex::default(),
            ring: VecDeque::new(),
            fresh: VecDeque::new(),
            turns_left: 0,
            queued: 0,
            hist,
            expired: Vec::new(),
        }
    }

    /// Finds the tenant's slot, creating it (if `shared` admits one more tenant).
    #[inline]
    fn slot_index(&mut self, shared: &Shared, hash: u64, key: TenantKey) -> Option<usize> {
        match self.index.entry(hash) {
            Entry::Occupied(e) => Some(*e.get() as usize),
            Entry::Vacant(e) => {
                let idx = u32::try_from(self.slots.len()).ok()?;
                if !shared.try_add_tenant() {
                    return None;
                }
                self.slots
                    .push(TenantSlot::new(key, shared.default_quantum));
                e.insert(idx);
                Some(idx as usize)
            }
        }
    }

    /// Accepts or refuses `task` for `key` (whose stable hash is `hash`).
    pub(super) fn enqueue(
        &mut self,
        shared: &Shared,
        counters: &ShardCounters,
        hash: u64,
        key: TenantKey,
        task: Task<T>,
        now: Instant,
    ) -> Result<Enqueued<T>, Rejected<T>> {
        // Relaxed: `close` writes the flag with every shard lock held, this one included.
        if shared.closed.load(Ordering::Relaxed) {
            return Err(Rejected::new(RejectReason::Closed, task));
        }
        let Some(idx) = self.slot_index(shared, hash, key) else {
            return Err(Rejected::new(RejectReason::TooManyTenants, task));
        };
        let Some(slot) = self.slots.get_mut(idx) else {
            // Unreachable: the index only holds positions of `slots`.
            return Err(Rejected::new(RejectReason::TooManyTenants, task));
        };

        // An urgent task within its tenant's reserve is admitted whatever the occupancy.
        let in_reserve = task.is_urgent() && slot.urgent.len() < shared.urgent_reserve;
        let mut evicted = None;
        if !in_reserve && slot.len() >= shared.max_per_tenant {
            // Expired heads are dead weight: drop them before refusing anyone.
            purge_expired_head(
                slot,
                &mut self.queued,
                shared,
                counters,
                now,
                &mut self.expired,
            );
            if slot.len() >= shared.max_per_tenant {
                let victim = match shared.backpressure {
                    Backpressure::EvictOldest => slot.normal.pop_front(),
                    Backpressure::Reject => None,
                };
                let Some(victim) = victim else {
                    slot.counters.rejected += 1;
                    counters.set_queued(self.queued);
                    return Err(Rejected::new(RejectReason::TenantFull, task));
                };
                slot.counters.evicted += 1;
                counters.on_evicted();
                evicted = Some(victim);
            }
        }

        if in_reserve {
            shared.reserve_urgent();
            self.queued += 1;
        } else if evicted.is_none() {
            if let Err(reason) = shared.reserve(self.queued) {
                slot.counters.rejected += 1;
                counters.set_queued(self.queued);
                return Err(Rejected::new(reason, task));
            }
            self.queued += 1;
        }
        if task.is_urgent() {
            slot.urgent.push_back(task);
        } else {
            slot.normal.push_back(task);
        }
        slot.counters.enqueued += 1;
        counters.on_enqueued();
        counters.set_queued(self.queued);
        if !slot.in_ring {
            // Entering the ring grants the credit of the first turn.
            slot.in_ring = true;
            slot.deficit = u64::from(slot.quantum.get());
            // `idx` came from a `u32` in `slot_index`.
            if shared.new_tenants_first {
                self.fresh.push_back(idx as u32);
            } else {
                self.ring.push_back(idx as u32);
            }
        }
        Ok(match evicted {
            Some(victim) => Enqueued::Evicted(victim),
            None => Enqueued::Queued,
        })
    }

    /// Serves the shard's current round until one task is dispatched or the round ends.
    ///
    /// DRR, one turn at a time: the front tenant first drops its expired heads; if it is then
    /// empty it leaves the ring (deficit reset); if its head's cost fits its deficit the head is
    /// dispatched and charged (the tenant keeps the front, its turn continues on the next call,
    /// unless it is now empty and leaves); otherwise its deficit grows by its quantum and it moves
    /// to the back. Each leave or move-to-back ends a turn; a round is `ring.len()` turns counted
    /// from its start, so tenants that arrive during a round are served from the next one.
    pub(super) fn serve(
        &mut self,
        shared: &Shared,
        now: Instant,
        counters: &ShardCounters,
    ) -> Option<(TenantKey, Task<T>)> {
        let mut task = None;
        while task.is_none() {
            let Some(&idx) = self.fresh.front() else {
                break;
            };
            match self.serve_fresh(idx, shared, now, counters) {
                Turn::Dispatch(key, t) => task = Some((key, t)),
                Turn::Over => {}
            }
        }
        if task.is_none() {
            task = self.serve_ring(shared, now, counters);
        }
        if task.is_some() {
            counters.on_dequeued();
            self.queued = self.queued.saturating_sub(1);
            shared.release(1);
            counters.set_queued(self.queued);
        }
        task
    }

    /// One step of tenant `idx`'s turn, the part the fresh list and the ring share: drop its
    /// expired heads; if it is then empty it leaves (deficit reset, out of the ring); if its head
    /// fits its deficit the head is taken and charged; otherwise it is granted a quantum.
    /// `None` if `idx` names no tenant (the caller drops the entry).
    fn step(
        &mut self,
        idx: u32,
        shared: &Shared,
        now: Instant,
        counters: &ShardCounters,
    ) -> Option<Step<T>> {
        let slot = self.slots.get_mut(idx as usize)?;
        purge_expired_head(
            slot,
            &mut self.queued,
            shared,
            counters,
            now,
            &mut self.expired,
        );
        Some(match slot.head().map(|t| u64::from(t.cost())) {
            None => {
                slot.deficit = 0;
                slot.in_ring = false;
                Step::Left
            }
            Some(cost) if cost <= slot.deficit => match slot.pop_head() {
                Some(task) => {
                    slot.deficit -= cost;
                    slot.counters.dequeued += 1;
                    let key = slot.key;
                    let emptied = slot.len() == 0;
                    self.record_queue_time(&task, now);
                    Step::Took(key, task, emptied)
                }
                // Unreachable: `head()` was `Some`.
                None => Step::Left,
            },
            Some(_) => {
                slot.deficit = slot.deficit.saturating_add(u64::from(slot.quantum.get()));
                Step::Granted
            }
        })
    }

    /// One step of the front tenant of `fresh`: like a ring turn, but a tenant that runs out of
    /// work or of deficit goes to the back of the ring (it leaves at its ring turn if empty then,
    /// so it becomes fresh again only after a whole round).
    fn serve_fresh(
        &mut self,
        idx: u32,
        shared: &Shared,
        now: Instant,
        counters: &ShardCounters,
    ) -> Turn<T> {
        match self.step(idx, shared, now, counters) {
            None | Some(Step::Left) => {
                let _left = self.fresh.pop_front();
                Turn::Over
            }
            Some(Step::Took(key, task, emptied)) => {
                if emptied {
                    let _moved = self.fresh.pop_front();
                    self.ring.push_back(idx);
                }
                Turn::Dispatch(key, task)
            }
            Some(Step::Granted) => {
                let _moved = self.fresh.pop_front();
                self.ring.push_back(idx);
                Turn::Over
            }
        }
    }

    fn record_queue_time(&mut self, task: &Task<T>, now: Instant) {
        if let Some(ts) = task.enqueue_ts() {
            let waited = now.saturating_duration_since(ts);
            let ns = waited
                .as_secs()
                .saturating_mul(1_000_000_000)
                .saturating_add(u64::from(waited.subsec_nanos()));
            self.hist.saturating_record(ns);
        }
    }

    /// The ring part of [`serve`](Self::serve): turns until a dispatch or the round's end. A
    /// tenant that takes a task keeps the front (its turn continues at the next call) unless
    /// that emptied it, when it leaves; leaving or being granted a quantum ends a turn.
    fn serve_ring(
        &mut self,
        shared: &Shared,
        now: Instant,
        counters: &ShardCounters,
    ) -> Option<(TenantKey, Task<T>)> {
        if self.turns_left == 0 {
            self.turns_left = self.ring.len();
        }
        loop {
            if self.turns_left == 0 {
                break None;
            }
            let Some(&idx) = self.ring.front() else {
                self.turns_left = 0;
                break None;
            };
            match self.step(idx, shared, now, counters) {
                None | Some(Step::Left) => {
                    let _left = self.ring.pop_front();
                    self.turns_left -= 1;
                }
                Some(Step::Took(key, task, emptied)) => {
                    if emptied {
                        if let Some(slot) = self.slots.get_mut(idx as usize) {
                            slot.deficit = 0;
                            slot.in_ring = false;
                        }
                        let _left = self.ring.pop_front();
                        self.turns_left -= 1;
                    }
                    break Some((key, task));
                }
                Some(Step::Granted) => {
                    self.ring.rotate_left(1);
                    self.turns_left -= 1;
                }
            }
        }
    }

    /// Whether a tenant waits in the fresh list with a task (`new_tenants_first`): the next
    /// dispatch serves it.
    pub(super) fn has_fresh_work(&self) -> bool {
        self.fresh
            .iter()
            .any(|&i| self.slots.get(i as usize).is_some_and(|s| s.len() > 0))
    }

    /// Takes out the last task of tenant `hash` (normal lane from the back, then the urgent
    /// lane) whose payload matches `pred`, accounting for it as removed. A tenant left empty stays
    /// in the ring until its next turn (as after a purge).
    pub(super) fn remove_last_where(
        &mut self,
        shared: &Shared,
        counters: &ShardCounters,
        hash: u64,
        mut pred: impl FnMut(&T) -> bool,
    ) -> Option<Task<T>> {
        let &idx = self.index.get(&hash)?;
        let slot = self.slots.get_mut(idx as usize)?;
        let task = match slot.normal.iter().rposition(|t| pred(t.payload())) {
            Some(i) => slot.normal.remove(i),
            None => {
                let i = slot.urgent.iter().rposition(|t| pred(t.payload()))?;
                slot.urgent.remove(i)
            }
        }?;
        slot.counters.removed += 1;
        counters.on_removed();
        self.queued = self.queued.saturating_sub(1);
        shared.release(1);
        counters.set_queued(self.queued);
        Some(task)
    }

    /// Drops (or keeps, with `keep_expired`) the expired head tasks of every active tenant, as
    /// their turns would; returns how many left. Tenants stay in the ring until their turn.
    pub(super) fn purge_expired(
        &mut self,
        shared: &Shared,
        counters: &ShardCounters,
        now: Instant,
    ) -> usize {
        let before = self.queued;
        for &idx in self.ring.iter().chain(self.fresh.iter()) {
            if let Some(slot) = self.slots.get_mut(idx as usize) {
                purge_expired_head(
                    slot,
                    &mut self.queued,
                    shared,
                    counters,
                    now,
                    &mut self.expired,
                );
            }
        }
        before - self.queued
    }

    /// Moves the expired tasks kept so far (`keep_expired`) into `out`.
    pub(super) fn drain_expired(&mut self, out: &mut Vec<(TenantKey, Task<T>)>) {
        out.append(&mut self.expired);
    }

    /// Tasks held by the shard (exact: the caller holds the lock).
    #[inline]
    pub(super) fn queued(&self) -> usize {
        self.queued
    }

    /// True when the current round is over: the next `serve` starts a new one.
    #[inline]
    pub(super) fn round_over(&self) -> bool {
        self.turns_left == 0
    }

    /// The fewest top-ups any active tenant needs before its head fits; `None` if no tenant holds
    /// a task.
    pub(super) fn min_need(&self, now: Instant) -> Option<u64> {
        self.ring
            .iter()
            .filter_map(|&i| self.slots.get(i as usize).and_then(|s| s.need(now)))
            .min()
    }

    /// Grants every active tenant `rounds` quanta at once: the effect of `rounds` full rounds in
    /// which no head fits (the ring order and the round position are unchanged by whole rounds).
    pub(super) fn fast_forward(&mut self, rounds: u64) {
        for &i in &self.ring {
            if let Some(s) = self.slots.get_mut(i as usize) {
                let grant = rounds.saturating_mul(u64::from(s.quantum.get()));
                s.deficit = s.deficit.saturating_add(grant);
            }
        }
    }

    /// Sets a tenant's quantum (creating its slot if needed); it applies from the next grant.
    pub(super) fn set_quantum(
        &mut self,
        shared: &Shared,
        hash: u64,
        key: TenantKey,
        quantum: NonZeroU32,
    ) -> Result<(), RejectReason> {
        let idx = self
            .slot_index(shared, hash, key)
            .ok_or(RejectReason::TooManyTenants)?;
        let slot = self
            .slots
            .get_mut(idx)
            .ok_or(RejectReason::TooManyTenants)?;
        slot.quantum = quantum;
        Ok(())
    }

    /// One tenant's counters.
    pub(super) fn tenant_stats(&self, hash: u64) -> Option<TenantStats> {
        let &idx = self.index.get(&hash)?;
        self.slots.get(idx as usize).map(TenantSlot::stats)
    }

    /// Appends every tenant's counters to `out`.
    pub(super) fn collect_tenants(&self, out: &mut Vec<TenantStats>) {
        out.extend(self.slots.iter().map(TenantSlot::stats));
    }

    /// Tenants tracked by this shard.
    pub(super) fn tenant_count(&self) -> usize {
        self.slots.len()
    }

    /// The shard's queue-time histogram.
    pub(super) fn histogram(&self) -> &Histogram<u64> {
        &self.hist
    }
}
