//! The order path: strategies' orders in, one answer (a *fate*) per order out, and what the
//! router sends in `router/out`.
//!
//! ```text
//! strategies/<id>/orders  --(fan-in, DRR, rate limit)-->  router/out        (the router writes)
//!          ^ strategy writes          |
//!          |                          +------------------>  strategies/<id>/fates
//!   strategy reads its fates  <-------------------------------'  (the router writes)
//! ```
//!
//! # Fates
//! The [`Router`] answers every record of every strategy's order queue exactly once, in that
//! strategy's fates queue ([`record`] has the byte layout): `routed` (with its seq in
//! `router/out`), `rejected` (with the reason), `expired` (deadline passed before it could be
//! sent; it never is), `evicted` (pushed out by a newer order under the evict-oldest policy),
//! `cancelled` (taken out of the router's queue by its cancel) or `malformed`.
//! A strategy reads them with [`FateReader`].
//!
//! # Cancels
//! A cancel goes ahead of its strategy's new orders (urgent lane) and has a reserve of its own
//! beyond the strategy's and the router's limits ([`RouterConfig::cancel_reserve`]), so new
//! orders can never crowd it out. A cancel whose order is still queued in the router takes it out:
//! the order and the cancel are both answered `cancelled` and nothing is sent. Otherwise the
//! cancel is sent to `router/out` like an order (the venue holds the order, or knows it does not),
//! and answered like one.
//!
//! # Crash safety
//! Each strategy's position in its order queue (named reader `router`) is committed only up to
//! the first order without a fate, so an order is never lost by a crash: it is read again. It is
//! never answered twice either: the fates queue doubles as the router's journal (the `frontier`
//! and `scan_from` fields of each fate, see [`Fate`]), and a restarted router skips every order
//! the journal says is answered. The one step that is not atomic, sending (append to
//! `router/out`) and then answering, can leave exactly one order without its fate: the last
//! record of `router/out`, which [`Router::open`] answers `routed` before anything else. So after
//! a crash of the router process at any instant, every order is answered exactly once and
//! `router/out` holds no order twice. Orders whose deadline passed while the router was down are
//! answered `expired` and never sent, since each order's deadline is checked when it is sent.
//!
//! [`audit`](audit::audit) checks all of this from the files.

pub mod audit;
pub mod fates;
mod journal;
pub mod record;
pub mod router;

pub use audit::{AuditReport, Problem, StrategyAudit, audit};
pub use fates::{FateCounts, FateReader};
pub use record::{Fate, FateCode, Kind, Order, RejectCode, Routed};
pub use router::{
    ROUTER_READER, Rejections, Router, RouterConfig, RouterEvent, Stages, StrategyStats,
};
