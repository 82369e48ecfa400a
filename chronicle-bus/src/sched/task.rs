//! The unit of work ([`Task`]) and the key that names its owner ([`TenantKey`]).

use std::fmt;
use std::num::NonZeroU32;
use std::time::Instant;

/// Names a tenant (in the router: a strategy or an account).
///
/// A plain 64-bit id: `Copy`, `Eq`, `Ord`, `Hash`. Its [`stable_hash`](Self::stable_hash) is a
/// fixed function of the id (no per-process random seed), so a tenant maps to the same shard in
/// every run and in every process.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct TenantKey(u64);

impl TenantKey {
    /// A key from a numeric id.
    #[inline]
    #[must_use]
    pub const fn new(id: u64) -> Self {
        Self(id)
    }

    /// A key derived from a name with 64-bit FNV-1a: stable across runs, processes and platforms.
    ///
    /// Distinct names can collide (with probability about n²/2⁶⁵); give numeric ids with
    /// [`new`](Self::new) where that matters.
    #[must_use]
    pub const fn from_name(name: &str) -> Self {
        const OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
        const PRIME: u64 = 0x0000_0100_0000_01b3;
        let mut rest = name.as_bytes();
        let mut hash = OFFSET;
        while let [b, tail @ ..] = rest {
            hash ^= *b as u64;
            hash = hash.wrapping_mul(PRIME);
            rest = tail;
        }
        Self(hash)
    }

    /// The numeric id.
    #[inline]
    #[must_use]
    pub const fn id(self) -> u64 {
        self.0
    }

    /// A well-mixed, seed-free hash of the id (the splitmix64 finalizer).
    ///
    /// The mix is a bijection on `u64`, so two keys have equal hashes exactly when they are equal;
    /// the scheduler uses it both to pick the shard and as the key of its tenant table, hashing
    /// each key once per operation.
    #[inline]
    #[must_use]
    pub const fn stable_hash(self) -> u64 {
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
}

impl fmt::Debug for TenantKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TenantKey({})", self.0)
    }
}

impl fmt::Display for TenantKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

impl From<u64> for TenantKey {
    #[inline]
    fn from(id: u64) -> Self {
        Self(id)
    }
}

/// One unit of work (in the router: an order or a cancel) and its scheduling attributes.
///
/// - `cost` (at least 1) is what a dispatch charges against its tenant's deficit: 1 per order for
///   fairness in orders, or a notional / byte size for fairness in that unit.
/// - `deadline`: the task is never dispatched at or after this instant; it is dropped inside the
///   scheduler and counted as expired.
/// - `urgent`: dispatched ahead of its tenant's normal tasks (see the module documentation for the
///   exact rule and why it keeps tenants' shares fair).
/// - `enqueue_ts`: stamped by the scheduler when it accepts the task; the queue time reported in
///   the statistics is measured from it.
pub struct Task<T> {
    payload: T,
    enqueue_ts: Option<Instant>,
    deadline: Option<Instant>,
    cost: NonZeroU32,
    urgent: bool,
}

impl<T> Task<T> {
    /// A normal task with cost 1, no deadline, not yet enqueued.
    #[inline]
    #[must_use]
    pub const fn new(payload: T) -> Self {
        Self {
            payload,
            enqueue_ts: None,
            deadline: None,
            cost: NonZeroU32::MIN,
            urgent: false,
        }
    }

    /// Sets the cost charged against the tenant's deficit when this task is dispatched.
    #[inline]
    #[must_use]
    pub const fn with_cost(mut self, cost: NonZeroU32) -> Self {
        self.cost = cost;
        self
    }

    /// Sets the instant from which the task must not be dispatched any more.
    #[inline]
    #[must_use]
    pub const fn with_deadline(mut self, deadline: Instant) -> Self {
        self.deadline = Some(deadline);
        self
    }

    /// Marks the task urgent (an order cancel): it goes ahead of its tenant's normal tasks.
    #[inline]
    #[must_use]
    pub const fn urgent(mut self) -> Self {
        self.urgent = true;
        self
    }

    /// The payload.
    #[inline]
    pub const fn payload(&self) -> &T {
        &self.payload
    }

    /// The payload, mutably.
    #[inline]
    pub const fn payload_mut(&mut self) -> &mut T {
        &mut self.payload
    }

    /// Consumes the task and returns its payload.
    #[inline]
    pub fn into_payload(self) -> T {
        self.payload
    }

    /// When the scheduler accepted the task; `None` before it was accepted.
    #[inline]
    #[must_use]
    pub const fn enqueue_ts(&self) -> Option<Instant> {
        self.enqueue_ts
    }

    /// The deadline, if any.
    #[inline]
    #[must_use]
    pub const fn deadline(&self) -> Option<Instant> {
        self.deadline
    }

    /// The cost (at least 1).
    #[inline]
    #[must_use]
    pub const fn cost(&self) -> u32 {
        self.cost.get()
    }

    /// Whether the task is urgent.
    #[inline]
    #[must_use]
    pub const fn is_urgent(&self) -> bool {
        self.urgent
    }

    /// True when the deadline is set and `now` is at or past it.
    #[inline]
    #[must_use]
    pub fn is_expired_at(&self, now: Instant) -> bool {
        match self.deadline {
            Some(d) => now >= d,
            None => false,
        }
    }

    #[inline]
    pub(super) const fn stamp(&mut self, now: Instant) {
        self.enqueue_ts = Some(now);
    }
}

impl<T> fmt::Debug for Task<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Task")
            .field("enqueue_ts", &self.enqueue_ts)
            .field("deadline", &self.deadline)
            .field("cost", &self.cost)
            .field("urgent", &self.urgent)
            .finish_non_exhaustive()
    }
}
