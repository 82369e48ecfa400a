//! [`SchedulerConfig`], the [`Backpressure`] policy, and the setup-time [`ConfigError`].

use std::error::Error;
use std::fmt;
use std::num::NonZeroU32;
use std::time::Duration;

use hdrhistogram::Histogram;

use super::task::TenantKey;

/// Upper bound on [`SchedulerConfig::shards`].
pub const MAX_SHARDS: usize = 1024;

/// What `enqueue` does when a tenant is at `max_per_tenant`.
///
/// The global limit (`max_global`) always rejects: the scheduler never holds more than
/// `max_global` tasks, whatever the policy.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Backpressure {
    /// Refuse the new task and hand it back ([`RejectReason::TenantFull`](super::RejectReason)).
    #[default]
    Reject,
    /// Admit the new task by removing the tenant's oldest *normal* (non-urgent) task, which is
    /// handed back in [`Enqueued::Evicted`](super::Enqueued::Evicted) and counted as evicted.
    /// Urgent tasks are never evicted; if the tenant holds only urgent tasks the new task is
    /// refused with `TenantFull`. Suits flows where a newer task supersedes an older one (quotes).
    EvictOldest,
}

/// Configuration of a [`Scheduler`](super::Scheduler).
///
/// Build it from [`Default`] and the `with_*` methods; [`Scheduler::new`](super::Scheduler::new)
/// validates it.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct SchedulerConfig {
    /// Number of shards (each with its own lock and DRR ring); tenants are spread over them by
    /// [`TenantKey::stable_hash`]. More shards mean less contention between producers of different
    /// tenants. Default 4.
    pub shards: usize,
    /// Most tasks held at once, all tenants together. Default 65 536.
    pub max_global: usize,
    /// Most tasks held at once for one tenant (urgent and normal together). Default 4 096.
    pub max_per_tenant: usize,
    /// Most tenants tracked at once. A tenant is tracked from its first enqueue (or
    /// [`set_quantum`](super::Scheduler::set_quantum)) for the scheduler's life, which bounds the
    /// memory of the per-tenant state and counters. Default 1 024.
    pub max_tenants: usize,
    /// Quantum (credit added per DRR round, in cost units) of tenants without their own.
    /// Default 1.
    pub default_quantum: NonZeroU32,
    /// Quanta (weights) of named tenants at start; change them later with
    /// [`Scheduler::set_quantum`](super::Scheduler::set_quantum).
    pub quanta: Vec<(TenantKey, NonZeroU32)>,
    /// What to do when a tenant is full. Default [`Backpressure::Reject`].
    pub backpressure: Backpressure,
    /// How many tenants [`Scheduler::stats`](super::Scheduler::stats) reports (the busiest by
    /// offered tasks). Default 16.
    pub top_tenants: usize,
    /// Largest queue time the histogram resolves; larger values are recorded as this. Default 60 s.
    pub queue_time_max: Duration,
    /// Significant decimal digits of the queue-time histogram (1 to 5). Default 2 (1 % error).
    pub queue_time_sigfig: u8,
    /// Urgent tasks (cancels) a tenant may hold beyond its normal limits: while a tenant holds
    /// fewer urgent tasks than this, an urgent task is admitted whatever the tenant's and the
    /// scheduler's occupancy (so new orders can never crowd out cancels). Default 0 (urgent tasks
    /// obey the same limits as normal ones).
    pub urgent_reserve: usize,
    /// Serve a tenant that becomes active (its queue was empty) before the tenants already in the
    /// ring, for one quantum: the "sparse flow" rule of fq_codel. A tenant that asks for less
    /// than its share then waits for almost nothing, whatever the backlog of the others; one
    /// that stays backlogged is served in the ring as usual. A tenant regains the priority only
    /// after a whole round in the ring, so priority cannot be farmed. Default false.
    pub new_tenants_first: bool,
    /// Hand expired tasks back instead of dropping them: they collect inside the scheduler until
    /// [`LocalScheduler::drain_expired`](super::LocalScheduler::drain_expired) (or the shared
    /// scheduler's) takes them, so the owner can answer each one. Default false.
    pub keep_expired: bool,
}

impl Default for SchedulerConfig {
    fn default() -> Self {
        Self {
            shards: 4,
            max_global: 65_536,
            max_per_tenant: 4_096,
            max_tenants: 1_024,
            default_quantum: NonZeroU32::MIN,
            quanta: Vec::new(),
            backpressure: Backpressure::Reject,
            top_tenants: 16,
            queue_time_max: Duration::from_secs(60),
            queue_time_sigfig: 2,
            urgent_reserve: 0,
            new_tenants_first: false,
            keep_expired: false,
        }
    }
}

impl SchedulerConfig {
    /// Sets [`shards`](Self::shards).
    #[must_use]
    pub fn with_shards(mut self, shards: usize) -> Self {
        self.shards = shards;
        self
    }

    /// Sets [`max_global`](Self::max_global).
    #[must_use]
    pub fn with_max_global(mut self, max_global: usize) -> Self {
        self.max_global = max_global;
        self
    }

    /// Sets [`max_per_tenant`](Self::max_per_tenant).
    #[must_use]
    pub fn with_max_per_tenant(mut self, max_per_tenant: usize) -> Self {
        self.max_per_tenant = max_per_tenant;
        self
    }

    /// Sets [`max_tenants`](Self::max_tenants).
    #[must_use]
    pub fn with_max_tenants(mut self, max_tenants: usize) -> Self {
        self.max_tenants = max_tenants;
        self
    }

    /// Sets [`default_quantum`](Self::default_quantum).
    #[must_use]
    pub fn with_default_quantum(mut self, quantum: NonZeroU32) -> Self {
        self.default_quantum = quantum;
        self
    }

    /// Gives `tenant` its own quantum (weight); a later entry for the same tenant wins.
    #[must_use]
    pub fn with_quantum(mut self, tenant: TenantKey, quantum: NonZeroU32) -> Self {
        self.quanta.push((tenant, quantum));
        self
    }

    /// Sets [`backpressure`](Self::backpressure).
    #[must_use]
    pub fn with_backpressure(mut self, backpressure: Backpressure) -> Self {
        self.backpressure = backpressure;
        self
    }

    /// Sets [`top_tenants`](Self::top_tenants).
    #[must_use]
    pub fn with_top_tenants(mut self, top_tenants: usize) -> Self {
        self.top_tenants = top_tenants;
        self
    }

    /// Sets [`queue_time_max`](Self::queue_time_max) and
    /// [`queue_time_sigfig`](Self::queue_time_sigfig).
    #[must_use]
    pub fn with_queue_time_histogram(mut self, max: Duration, sigfig: u8) -> Self {
        self.queue_time_max = max;
        self.queue_time_sigfig = sigfig;
        self
    }

    /// Sets [`urgent_reserve`](Self::urgent_reserve).
    #[must_use]
    pub fn with_urgent_reserve(mut self, reserve: usize) -> Self {
        self.urgent_reserve = reserve;
        self
    }

    /// Sets [`new_tenants_first`](Self::new_tenants_first).
    #[must_use]
    pub fn with_new_tenants_first(mut self, on: bool) -> Self {
        self.new_tenants_first = on;
        self
    }

    /// Sets [`keep_expired`](Self::keep_expired).
    #[must_use]
    pub fn with_keep_expired(mut self, keep: bool) -> Self {
        self.keep_expired = keep;
        self
    }

    /// Checks the limits (the histogram bounds are checked when it is built).
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        if self.shards == 0 || self.shards > MAX_SHARDS {
            return Err(ConfigError::Shards {
                shards: self.shards,
            });
        }
        for (field, value) in [
            ("max_global", self.max_global),
            ("max_per_tenant", self.max_per_tenant),
            ("max_tenants", self.max_tenants),
        ] {
            if value == 0 {
                return Err(ConfigError::ZeroLimit { field });
            }
        }
        if self.quanta.len() > self.max_tenants {
            let mut keys: Vec<TenantKey> = self.quanta.iter().map(|&(k, _)| k).collect();
            keys.sort_unstable();
            keys.dedup();
            if keys.len() > self.max_tenants {
                return Err(ConfigError::TooManyQuanta {
                    quanta: keys.len(),
                    max_tenants: self.max_tenants,
                });
            }
        }
        Ok(())
    }

    /// An empty queue-time histogram (nanoseconds) with the configured bounds.
    pub(super) fn histogram(&self) -> Result<Histogram<u64>, ConfigError> {
        // At least 2: the histogram needs `high >= 2 * low`.
        let max_ns = u64::try_from(self.queue_time_max.as_nanos())
            .unwrap_or(u64::MAX)
            .max(2);
        Histogram::new_with_bounds(1, max_ns, self.queue_time_sigfig).map_err(|e| {
            ConfigError::QueueTimeHistogram {
                detail: format!("{e:?}"),
            }
        })
    }
}

/// A [`SchedulerConfig`] that cannot be used.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ConfigError {
    /// `shards` must be in `1..=MAX_SHARDS`.
    Shards {
        /// The value given.
        shards: usize,
    },
    /// `max_global`, `max_per_tenant` and `max_tenants` must be at least 1.
    ZeroLimit {
        /// Which limit.
        field: &'static str,
    },
    /// The per-tenant quanta name more tenants than `max_tenants` allows.
    TooManyQuanta {
        /// Number of tenants given a quantum.
        quanta: usize,
        /// The configured `max_tenants`.
        max_tenants: usize,
    },
    /// The queue-time histogram cannot be built with these bounds / significant figures.
    QueueTimeHistogram {
        /// The histogram library's message.
        detail: String,
    },
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Shards { shards } => {
                write!(f, "shards must be in 1..={}, got {shards}", MAX_SHARDS)
            }
            Self::ZeroLimit { field } => write!(f, "{field} must be at least 1"),
            Self::TooManyQuanta {
                quanta,
                max_tenants,
            } => {
                write!(
                    f,
                    "{quanta} per-tenant quanta exceed max_tenants = {max_tenants}"
                )
            }
            Self::QueueTimeHistogram { detail } => {
                write!(f, "queue-time histogram cannot be built: {detail}")
            }
        }
    }
}

impl Error for ConfigError {}
