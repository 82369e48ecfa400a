//! [`audit`]: the reconciliation an operator runs after a bad day, from the files alone.
//!
//! For every strategy of the bus it reads the order queue, the fates queue and `router/out`
//! (anonymous readers: no lock is taken, nothing is written) and checks that
//!
//! - every order and cancel has exactly one fate;
//! - every `routed` fate names a record of `router/out` that carries that very order, and every
//!   record of `router/out` has a `routed` fate: nothing else is there, nothing is there twice;
//! - nothing in `router/out` was written after its order's deadline.
//!
//! After a power cut rewrote a strategy's order queue's history (DESIGN.md section 8), fates of
//! an older history epoch at or past the rewrite point answer orders that are gone: they are
//! counted as `voided` (with the `router/out` records they name) and checked no further.
//!
//! Orders that retention has already deleted from a strategy's queue are not checked. While a
//! router runs, the orders it is working on are legitimately unanswered: audit a stopped bus (the
//! report says whether `router/out` had a live writer).

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};

use chronicle_core::{QueueReader, ReaderConfig, StartAt, WriterStatus};
use hdrhistogram::Histogram;

use super::fates::FateCounts;
use super::record::{FATE, Fate, FateCode, Order, ROUTED, Routed};
use crate::error::{BusError, Result};
use crate::layout::{BusLayout, SourceId};

/// One problem found, with what an operator needs to look it up.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Problem {
    /// An order (or cancel) without a fate.
    Unanswered {
        /// Strategy id.
        strategy: String,
        /// The order's id.
        order_id: u64,
        /// Its seq in the order queue.
        order_seq: u64,
    },
    /// An order with more than one fate.
    AnsweredTwice {
        /// Strategy id.
        strategy: String,
        /// The order's id.
        order_id: u64,
        /// Its seq in the order queue.
        order_seq: u64,
        /// Seqs of its fates.
        fate_seqs: Vec<u64>,
    },
    /// A fate for an order seq the strategy never wrote.
    FateForNoOrder {
        /// Strategy id.
        strategy: String,
        /// The order seq it names.
        order_seq: u64,
        /// The fate's seq.
        fate_seq: u64,
    },
    /// A `routed` fate whose `router/out` record is missing or carries another order.
    RoutedNotSent {
        /// Strategy id.
        strategy: String,
        /// The order's id.
        order_id: u64,
        /// Its seq in the order queue.
        order_seq: u64,
        /// The `router/out` seq the fate names.
        out_seq: u64,
    },
    /// An order in `router/out` more than once.
    SentTwice {
        /// Strategy id.
        strategy: String,
        /// The order's id.
        order_id: u64,
        /// Its seq in the order queue.
        order_seq: u64,
        /// Its `router/out` seqs.
        out_seqs: Vec<u64>,
    },
    /// A record of `router/out` without a `routed` fate naming it.
    SentWithoutFate {
        /// Strategy id.
        strategy: String,
        /// The order's id.
        order_id: u64,
        /// Its seq in the order queue.
        order_seq: u64,
        /// Its `router/out` seq.
        out_seq: u64,
    },
    /// A record of `router/out` written after its order's deadline.
    SentLate {
        /// Strategy id.
        strategy: String,
        /// The order's id.
        order_id: u64,
        /// Its `router/out` seq.
        out_seq: u64,
        /// How late, ns.
        late_ns: u64,
    },
    /// A record of `router/out` that is not a routed order of a strategy of this bus.
    UnknownRecord {
        /// Its `router/out` seq.
        out_seq: u64,
        /// What it is.
        what: &'static str,
    },
    /// A queue could not be read.
    Unreadable {
        /// The queue.
        path: PathBuf,
        /// The error.
        error: String,
    },
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Problem::Unanswered {
                strategy,
                order_id,
                order_seq,
            } => write!(
                f,
                "strategy {strategy}: order {order_id} (seq {order_seq}) has no fate"
            ),
            Problem::AnsweredTwice {
                strategy,
                order_id,
                order_seq,
                fate_seqs,
            } => write!(
                f,
                "strategy {strategy}: order {order_id} (seq {order_seq}) has {} fates (fate seqs {fate_seqs:?})",
                fate_seqs.len()
            ),
            Problem::FateForNoOrder {
                strategy,
                order_seq,
                fate_seq,
            } => write!(
                f,
                "strategy {strategy}: fate seq {fate_seq} answers order seq {order_seq}, which was never written"
            ),
            Problem::RoutedNotSent {
                strategy,
                order_id,
                order_seq,
                out_seq,
            } => write!(
                f,
                "strategy {strategy}: order {order_id} (seq {order_seq}) is answered routed as router/out seq {out_seq}, which does not carry it"
            ),
            Problem::SentTwice {
                strategy,
                order_id,
                order_seq,
                out_seqs,
            } => write!(
                f,
                "strategy {strategy}: order {order_id} (seq {order_seq}) was sent {} times (router/out seqs {out_seqs:?})",
                out_seqs.len()
            ),
            Problem::SentWithoutFate {
                strategy,
                order_id,
                order_seq,
                out_seq,
            } => write!(
                f,
                "strategy {strategy}: order {order_id} (seq {order_seq}) is in router/out (seq {out_seq}) without a routed fate"
            ),
            Problem::SentLate {
                strategy,
                order_id,
                out_seq,
                late_ns,
            } => write!(
                f,
                "strategy {strategy}: order {order_id} was written to router/out (seq {out_seq}) {late_ns} ns after its deadline"
            ),
            Problem::UnknownRecord { out_seq, what } => {
                write!(f, "router/out seq {out_seq}: {what}")
            }
            Problem::Unreadable { path, error } => {
                write!(f, "cannot read {}: {error}", path.display())
            }
        }
    }
}

/// What the audit found for one strategy.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct StrategyAudit {
    /// Strategy id.
    pub id: String,
    /// Orders and cancels checked (those retention has not deleted).
    pub orders: u64,
    /// Seq of the oldest order checked.
    pub first_seq: u64,
    /// Orders with at least one fate.
    pub answered: u64,
    /// Orders without a fate.
    pub unanswered: u64,
    /// Orders with more than one fate.
    pub answered_twice: u64,
    /// Orders in `router/out` more than once.
    pub sent_twice: u64,
    /// Fates (and the `router/out` records they name) of orders that a power cut took from the
    /// order queue, written before its history was rewritten: not checked, not a problem.
    pub voided: u64,
    /// The (first) fate of each checked order, by code.
    pub fates: FateCounts,
    /// Origin-to-route latency of its orders in `router/out` (the record's timestamp minus the
    /// order's `origin_ns`), ns.
    pub latency: Histogram<u64>,
}

/// The result of [`audit`].
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct AuditReport {
    /// Per strategy, ordered by id.
    pub strategies: Vec<StrategyAudit>,
    /// Records in `router/out`.
    pub out_records: u64,
    /// Whether `router/out` had a live writer (a running router) during the audit.
    pub router_running: bool,
    /// Everything wrong, one entry per problem.
    pub problems: Vec<Problem>,
}

impl AuditReport {
    /// True when no problem was found.
    pub fn is_clean(&self) -> bool {
        self.problems.is_empty()
    }
}

#[derive(Debug, Clone, Copy)]
struct OrderInfo {
    order_id: u64,
}

/// Reads every record of a queue: `each(seq, timestamp, type, payload)`. Returns the reader's
/// first seq (the oldest record still there) and whether the writer is alive.
fn read_all(
    path: &Path,
    mut each: impl FnMut(u64, u64, u32, &[u8]),
) -> std::result::Result<(u64, bool), chronicle_core::Error> {
    let mut r = QueueReader::open(path, ReaderConfig::default().start(StartAt::Earliest))?;
    let first = r.next_seq();
    while let Some(m) = r.next()? {
        each(m.seq(), m.timestamp_ns(), m.type_id(), m.payload());
    }
    let alive = r.writer_status() == WriterStatus::Alive;
    Ok((first, alive))
}

fn latency_histogram() -> Result<Histogram<u64>> {
    Histogram::new_with_bounds(1, 60_000_000_000, 3).map_err(|_| BusError::InvalidConfig {
        what: "latency histogram bounds",
    })
}

struct Side {
    id: String,
    orders: HashMap<u64, OrderInfo>,
    first_seq: u64,
    next_seq: u64,
    /// order seq -> (fate seqs, first fate)
    fates: HashMap<u64, (Vec<u64>, Fate)>,
    /// order seq -> out seqs
    sent: HashMap<u64, Vec<u64>>,
    /// Fates of orders a rewrite of the order queue's history took away.
    voided: u64,
    /// The `router/out` seqs those fates name.
    voided_out: std::collections::HashSet<u64>,
    latency: Histogram<u64>,
}

/// Audits the order path of the bus at `layout`. Errors only when the bus cannot be listed;
/// queues that cannot be read are reported as [`Problem::Unreadable`].
pub fn audit(layout: &BusLayout) -> Result<AuditReport> {
    let dir = layout.strategies_dir();
    let mut ids: Vec<String> = match std::fs::read_dir(&dir) {
        Ok(entries) => entries
            .flatten()
            .filter_map(|e| e.file_name().into_string().ok())
            .filter(|n| crate::layout::validate_name(n).is_ok())
            .collect(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
        Err(e) => return Err(BusError::io(&dir, "list", e)),
    };
    ids.sort();
    let mut problems = Vec::new();
    let mut sides: Vec<Side> = Vec::new();
    for id in ids {
        let orders_path = layout.strategy_orders(&id)?;
        if !orders_path.exists() {
            continue;
        }
        let mut side = Side {
            id: id.clone(),
            orders: HashMap::new(),
            first_seq: 0,
            next_seq: 0,
            fates: HashMap::new(),
            sent: HashMap::new(),
            voided: 0,
            voided_out: std::collections::HashSet::new(),
            latency: latency_histogram()?,
        };
        let mut next = 0;
        let read = read_all(&orders_path, |seq, _, _, p| {
            let (order_id, _) = Order::id_and_kind_of(p);
            side.orders.insert(seq, OrderInfo { order_id });
            next = seq + 1;
        });
        match read {
            Ok((first, _)) => {
                side.first_seq = first;
                side.next_seq = next.max(first);
            }
            Err(error) => {
                problems.push(Problem::Unreadable {
                    path: orders_path,
                    error: error.to_string(),
                });
                continue;
            }
        }
        let history = QueueReader::open(&orders_path, ReaderConfig::default())
            .map(|r| r.history())
            .unwrap_or_default();
        let fates_path = layout.strategy_fates(&id)?;
        if fates_path.exists() {
            let read = read_all(&fates_path, |fate_seq, _, ty, p| {
                let Some(f) = (ty == FATE).then(|| Fate::decode(p)).flatten() else {
                    return;
                };
                if history
                    .rewritten_since(u64::from(f.order_epoch))
                    .is_some_and(|from| f.order_seq >= from)
                {
                    side.voided += 1;
                    side.voided_out.extend(f.out_seq);
                    return;
                }
                side.fates
                    .entry(f.order_seq)
                    .and_modify(|(seqs, _)| seqs.push(fate_seq))
                    .or_insert((vec![fate_seq], f));
            });
            match read {
                Ok(_) => {}
                // The router died while creating it: no fate was ever written there (its
                // orders, if any, are reported unanswered).
                Err(
                    chronicle_core::Error::NotAQueue { .. }
                    | chronicle_core::Error::NotYetInitialized { .. },
                ) => {}
                Err(error) => problems.push(Problem::Unreadable {
                    path: fates_path,
                    error: error.to_string(),
                }),
            }
        }
        sides.push(side);
    }

    // router/out: who sent what, and when.
    let by_source: HashMap<u64, usize> = sides
        .iter()
        .enumerate()
        .map(|(i, s)| (SourceId::of(&s.id).0, i))
        .collect();
    let mut out_records = 0;
    let mut router_running = false;
    let mut out_orders: HashMap<u64, (usize, u64, u64)> = HashMap::new(); // out seq -> (side, order seq, order id)
    let out_path = layout.router_out();
    if out_path.exists() {
        let read = read_all(&out_path, |out_seq, ts, ty, p| {
            out_records += 1;
            let Some(r) = (ty == ROUTED).then(|| Routed::decode(p)).flatten() else {
                problems.push(Problem::UnknownRecord {
                    out_seq,
                    what: "not a routed order",
                });
                return;
            };
            let Some(&i) = by_source.get(&r.source_id) else {
                problems.push(Problem::UnknownRecord {
                    out_seq,
                    what: "sent for a strategy that is not on this bus",
                });
                return;
            };
            let Some(side) = sides.get_mut(i) else { return };
            if side.voided_out.contains(&out_seq) {
                return; // its order is gone (the order queue's history was rewritten)
            }
            out_orders.insert(out_seq, (i, r.order_seq, r.order.order_id));
            if r.order_seq < side.first_seq {
                return; // its order is gone (retention)
            }
            side.sent.entry(r.order_seq).or_default().push(out_seq);
            if r.order.expired_at(ts) {
                problems.push(Problem::SentLate {
                    strategy: side.id.clone(),
                    order_id: r.order.order_id,
                    out_seq,
                    late_ns: ts - r.order.deadline_ns,
                });
            }
            side.latency
                .saturating_record(ts.saturating_sub(r.order.origin_ns).max(1));
        });
        match read {
            Ok((_, alive)) => router_running = alive,
            Err(error) => problems.push(Problem::Unreadable {
                path: out_path,
                error: error.to_string(),
            }),
        }
    }

    let mut strategies = Vec::new();
    for (i, side) in sides.into_iter().enumerate() {
        let mut a = StrategyAudit {
            id: side.id.clone(),
            orders: 0,
            first_seq: side.first_seq,
            answered: 0,
            unanswered: 0,
            answered_twice: 0,
            sent_twice: 0,
            voided: side.voided,
            fates: FateCounts::default(),
            latency: side.latency,
        };
        let strategy = || side.id.clone();
        let mut seqs: Vec<u64> = side.orders.keys().copied().collect();
        seqs.sort_unstable();
        for seq in seqs {
            let Some(info) = side.orders.get(&seq) else {
                continue;
            };
            a.orders += 1;
            match side.fates.get(&seq) {
                None => {
                    a.unanswered += 1;
                    problems.push(Problem::Unanswered {
                        strategy: strategy(),
                        order_id: info.order_id,
                        order_seq: seq,
                    });
                }
                Some((fate_seqs, first)) => {
                    a.answered += 1;
                    a.fates.add(first.code);
                    if fate_seqs.len() > 1 {
                        a.answered_twice += 1;
                        problems.push(Problem::AnsweredTwice {
                            strategy: strategy(),
                            order_id: info.order_id,
                            order_seq: seq,
                            fate_seqs: fate_seqs.clone(),
                        });
                    }
                }
            }
            let sent = side.sent.get(&seq).map_or(&[][..], Vec::as_slice);
            if sent.len() > 1 {
                a.sent_twice += 1;
                problems.push(Problem::SentTwice {
                    strategy: strategy(),
                    order_id: info.order_id,
                    order_seq: seq,
                    out_seqs: sent.to_vec(),
                });
            }
            let routed_fate = side
                .fates
                .get(&seq)
                .filter(|(_, f)| f.code == FateCode::Routed)
                .map(|(_, f)| f);
            match routed_fate {
                Some(f) => {
                    let names_this = f
                        .out_seq
                        .and_then(|o| out_orders.get(&o))
                        .is_some_and(|&(s, q, id)| s == i && q == seq && id == info.order_id);
                    if !names_this {
                        problems.push(Problem::RoutedNotSent {
                            strategy: strategy(),
                            order_id: info.order_id,
                            order_seq: seq,
                            out_seq: f.out_seq.unwrap_or(u64::MAX),
                        });
                    }
                }
                None => {
                    for &out_seq in sent {
                        problems.push(Problem::SentWithoutFate {
                            strategy: strategy(),
                            order_id: info.order_id,
                            order_seq: seq,
                            out_seq,
                        });
                    }
                }
            }
        }
        let mut strays: Vec<(u64, u64)> = side
            .fates
            .iter()
            .filter(|(seq, _)| **seq >= side.next_seq)
            .map(|(seq, (fs, _))| (*seq, fs.first().copied().unwrap_or(0)))
            .collect();
        strays.sort_unstable();
        for (order_seq, fate_seq) in strays {
            problems.push(Problem::FateForNoOrder {
                strategy: strategy(),
                order_seq,
                fate_seq,
            });
        }
        // Sent for seqs that are not orders at all.
        let mut ghost: Vec<(u64, u64)> = side
            .sent
            .iter()
            .filter(|(seq, _)| !side.orders.contains_key(seq))
            .flat_map(|(seq, outs)| outs.iter().map(move |o| (*seq, *o)))
            .collect();
        ghost.sort_unstable();
        for (_, out_seq) in ghost {
            problems.push(Problem::UnknownRecord {
                out_seq,
                what: "sent for an order seq its strategy never wrote",
            });
        }
        strategies.push(a);
    }
    Ok(AuditReport {
        strategies,
        out_records,
        router_running,
        problems,
    })
}
