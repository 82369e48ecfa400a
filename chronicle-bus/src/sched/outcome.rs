//! What the scheduler's operations answer: the task taken (`Enqueued`, `Dequeued`), or refused with
//! a small `Copy` reason on the hot path and the task handed back (`Rejected`).

use std::error::Error;
use std::fmt;

use super::task::{Task, TenantKey};

/// Why [`Scheduler::enqueue`](super::Scheduler::enqueue) refused a task.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum RejectReason {
    /// The scheduler holds `max_global` tasks.
    GlobalFull,
    /// The tenant holds `max_per_tenant` tasks (and the backpressure policy could not make room).
    TenantFull,
    /// The tenant is new and the scheduler already tracks `max_tenants` tenants.
    TooManyTenants,
    /// [`Scheduler::close`](super::Scheduler::close) was called.
    Closed,
}

impl RejectReason {
    /// A short, stable, lower-case name (for logs and metrics labels).
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::GlobalFull => "global_full",
            Self::TenantFull => "tenant_full",
            Self::TooManyTenants => "too_many_tenants",
            Self::Closed => "closed",
        }
    }
}

impl fmt::Display for RejectReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::GlobalFull => "scheduler is full",
            Self::TenantFull => "tenant queue is full",
            Self::TooManyTenants => "too many tenants",
            Self::Closed => "scheduler is closed",
        })
    }
}

/// A refused task, handed back to the caller together with the reason.
pub struct Rejected<T> {
    reason: RejectReason,
    task: Task<T>,
}

impl<T> Rejected<T> {
    #[inline]
    pub(super) const fn new(reason: RejectReason, task: Task<T>) -> Self {
        Self { reason, task }
    }

    /// Why the task was refused.
    #[inline]
    #[must_use]
    pub const fn reason(&self) -> RejectReason {
        self.reason
    }

    /// The refused task.
    #[inline]
    pub const fn task(&self) -> &Task<T> {
        &self.task
    }

    /// Gives the refused task back.
    #[inline]
    pub fn into_task(self) -> Task<T> {
        self.task
    }

    /// Both parts.
    #[inline]
    pub fn into_parts(self) -> (RejectReason, Task<T>) {
        (self.reason, self.task)
    }
}

impl<T> fmt::Debug for Rejected<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Rejected")
            .field("reason", &self.reason)
            .field("task", &self.task)
            .finish()
    }
}

impl<T> fmt::Display for Rejected<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "task rejected: {}", self.reason)
    }
}

impl<T> Error for Rejected<T> {}

/// A successful [`Scheduler::enqueue`](super::Scheduler::enqueue).
///
/// `#[must_use]`: under [`Backpressure::EvictOldest`](super::Backpressure::EvictOldest) the task
/// that made room is handed back here and should be answered (e.g. rejected towards its strategy).
#[must_use]
pub enum Enqueued<T> {
    /// The task is queued.
    Queued,
    /// The task is queued; to make room, the tenant's oldest normal task was removed and is
    /// returned here.
    Evicted(Task<T>),
}

impl<T> fmt::Debug for Enqueued<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Queued => f.write_str("Queued"),
            Self::Evicted(t) => f.debug_tuple("Evicted").field(t).finish(),
        }
    }
}

/// The outcome of a dequeue.
///
/// Exactly these three cases exist (closing is final and expired tasks never surface), so the enum is
/// exhaustive on purpose.
#[must_use]
pub enum Dequeued<T> {
    /// The next task by the DRR rule, with its tenant. Its deadline, if any, had not passed at the
    /// instant the dequeue used as "now".
    Task(TenantKey, Task<T>),
    /// Nothing is dispatchable now (or, from `dequeue_blocking`, nothing arrived before the timeout).
    Empty,
    /// The scheduler is closed and holds no task: nothing will ever be dispatched again.
    Closed,
}

impl<T> Dequeued<T> {
    /// The tenant and task, if one was dispatched.
    #[inline]
    pub fn into_task(self) -> Option<(TenantKey, Task<T>)> {
        match self {
            Self::Task(k, t) => Some((k, t)),
            Self::Empty | Self::Closed => None,
        }
    }

    /// True for [`Dequeued::Closed`].
    #[inline]
    #[must_use]
    pub const fn is_closed(&self) -> bool {
        matches!(self, Self::Closed)
    }

    /// True for [`Dequeued::Empty`].
    #[inline]
    #[must_use]
    pub const fn is_empty(&self) -> bool {
        matches!(self, Self::Empty)
    }
}

impl<T> fmt::Debug for Dequeued<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Task(k, t) => f.debug_tuple("Task").field(k).field(t).finish(),
            Self::Empty => f.write_str("Empty"),
            Self::Closed => f.write_str("Closed"),
        }
    }
}

/// The outcome of a batch dequeue
/// ([`Scheduler::try_dequeue_batch`](super::Scheduler::try_dequeue_batch)).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[must_use]
pub enum BatchDequeued {
    /// This many tasks (at least 1) were appended to the output.
    Tasks(usize),
    /// Nothing is dispatchable now.
    Empty,
    /// The scheduler is closed and holds no task.
    Closed,
}
