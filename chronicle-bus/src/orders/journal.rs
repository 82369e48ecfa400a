//! The router's per-strategy ledger of answered orders, kept in the strategy's fates queue.
//!
//! The router is the single writer of `strategies/<id>/fates`, and every fate it writes carries
//! two journal fields besides the answer itself (see [`Fate`]):
//!
//! - `frontier`: every order of the strategy with a seq below it had its fate when the record was
//!   written;
//! - `scan_from`: the fates-queue seq from which every fate of an order at or above `frontier`
//!   can be found.
//!
//! So the last fate record says, without any other state file, which orders are answered:
//! those below its `frontier`, and those whose fates lie at or after its `scan_from`. A restarted
//! router reads exactly that and never answers an order twice. The router commits its position
//! in a strategy's order queue only up to the first order without a fate ([`Journal::hold`]),
//! so whatever is not answered is read again after a crash.
//!
//! The ledger is keyed by order seq, and a power cut can make the order queue assign a seq
//! again (its history is rewritten, DESIGN.md section 8). So every fate also carries the order
//! queue's history epoch under which the order was read (`order_epoch`), and the ledger is
//! checked against the queue's [`History`] when the source attaches and whenever the queue's
//! epoch moves ([`Journal::rebase`]): a fate of an older epoch at or past the point from which
//! seqs were assigned again answers an order that is gone, so it no longer counts (the frontier
//! drops to that point); the fate stays in the queue for the audit.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use chronicle_core::{
    History, Position, QueueReader, QueueWriter, ReaderConfig, StartAt, WriterConfig,
};

use super::record::{FATE, Fate, FateCode, RejectCode};
use crate::error::{BusError, Result};
use crate::layout::BusLayout;

/// What the router does with an order it merges.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Merge {
    /// Answered already (or waiting in the scheduler): do nothing.
    Skip,
    /// New: decide its fate.
    Take,
}

/// The answer to write for one order.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Answer {
    pub(crate) order_id: u64,
    pub(crate) kind: u8,
    pub(crate) code: FateCode,
    pub(crate) reason: Option<RejectCode>,
    pub(crate) order_seq: u64,
    pub(crate) out_seq: Option<u64>,
}

/// One strategy's fates writer and ledger.
#[derive(Debug)]
pub(crate) struct Journal {
    fates: QueueWriter,
    path: PathBuf,
    /// Every order below this has a fate.
    frontier: u64,
    /// The seq after the last order merged (or skipped): every order below it is answered or
    /// pending.
    merged_next: u64,
    /// Merged, not yet answered: seq -> where it starts in the order queue.
    pending: BTreeMap<u64, Position>,
    /// The order queue's history epoch `frontier` is valid under.
    frontier_epoch: u64,
    /// The order queue's history epoch the ledger was last checked against (and that new
    /// fates carry).
    epoch: u64,
    /// Answered, at or above the frontier: seq -> (seq of its fate, its order epoch).
    ahead: BTreeMap<u64, (u64, u64)>,
    /// The fate seqs of `ahead`.
    ahead_fates: BTreeSet<u64>,
}

impl Journal {
    /// Opens (creates or recovers) the fates queue of strategy `id` and rebuilds the ledger from
    /// its last record.
    pub(crate) fn open(layout: &BusLayout, id: &str, config: WriterConfig) -> Result<Journal> {
        let path = layout.strategy_fates(id)?;
        let fates = QueueWriter::open(&path, config).map_err(|e| BusError::queue(&path, e))?;
        let mut j = Journal {
            fates,
            path,
            frontier: 0,
            merged_next: 0,
            frontier_epoch: 0,
            epoch: 0,
            pending: BTreeMap::new(),
            ahead: BTreeMap::new(),
            ahead_fates: BTreeSet::new(),
        };
        let next = j.fates.next_seq();
        if next > 0 {
            let last = read_fates(&j.path, next - 1, Some(next))?;
            let Some((_, last)) = last.last().copied() else {
                return Err(BusError::BadRecord {
                    path: j.path.clone(),
                    seq: next - 1,
                    what: "the last fate cannot be read",
                });
            };
            j.frontier = last.frontier;
            j.merged_next = last.frontier;
            j.frontier_epoch = u64::from(last.order_epoch);
            j.epoch = j.frontier_epoch;
            for (fate_seq, f) in read_fates(&j.path, last.scan_from.min(next - 1), Some(next))? {
                let entry = (fate_seq, u64::from(f.order_epoch));
                if f.order_seq >= j.frontier && j.ahead.insert(f.order_seq, entry).is_none() {
                    j.ahead_fates.insert(fate_seq);
                }
            }
        }
        Ok(j)
    }

    /// The order queue's history epoch the ledger was last checked against.
    pub(crate) fn epoch(&self) -> u64 {
        self.epoch
    }

    /// Checks the ledger against the order queue's history `h` (a no-op when its epoch is the
    /// one checked last). What the ledger says about seqs that were assigned again since the
    /// epoch it was written under is void: the frontier drops to the rewrite point and answers
    /// of older epochs at or past it are forgotten (their orders are gone). Returns the number
    /// of answers forgotten.
    pub(crate) fn rebase(&mut self, h: &History) -> usize {
        if h.epoch == self.epoch {
            return 0;
        }
        let mut voided = 0;
        if let Some(from) = h.rewritten_since(self.frontier_epoch) {
            if self.frontier > from {
                voided += usize::try_from(self.frontier - from).unwrap_or(usize::MAX);
                self.frontier = from;
            }
            self.merged_next = self.merged_next.min(from);
        }
        let gone: Vec<(u64, u64)> = self
            .ahead
            .iter()
            .filter(|(seq, (_, e))| h.rewritten_since(*e).is_some_and(|from| **seq >= from))
            .map(|(seq, (fate_seq, _))| (*seq, *fate_seq))
            .collect();
        for (seq, fate_seq) in gone {
            self.ahead.remove(&seq);
            self.ahead_fates.remove(&fate_seq);
            voided += 1;
        }
        self.frontier_epoch = h.epoch;
        self.epoch = h.epoch;
        voided
    }

    /// Classifies the order at `seq` that the merge handed on.
    pub(crate) fn classify(&mut self, seq: u64) -> Merge {
        if seq < self.merged_next {
            return Merge::Skip;
        }
        if self.ahead.contains_key(&seq) {
            self.merged_next = seq + 1;
            self.refresh();
            return Merge::Skip;
        }
        Merge::Take
    }

    /// Records that the order at `seq` (starting at `pos`) was taken and waits for its fate.
    pub(crate) fn take(&mut self, seq: u64, pos: Position) {
        self.pending.insert(seq, pos);
        self.merged_next = self.merged_next.max(seq + 1);
        self.refresh();
    }

    /// Whether the order at `seq` has its fate.
    pub(crate) fn is_answered(&self, seq: u64) -> bool {
        (seq < self.frontier && !self.pending.contains_key(&seq)) || self.ahead.contains_key(&seq)
    }

    /// Writes the fate of one order and updates the ledger; returns the fate's seq.
    pub(crate) fn answer(&mut self, a: Answer) -> Result<u64> {
        self.pending.remove(&a.order_seq);
        self.refresh();
        let fate_seq = self.fates.next_seq();
        let entry = (fate_seq, self.epoch);
        if a.order_seq >= self.frontier && self.ahead.insert(a.order_seq, entry).is_none() {
            self.ahead_fates.insert(fate_seq);
        }
        let scan_from = self
            .ahead_fates
            .first()
            .copied()
            .unwrap_or(fate_seq + 1)
            .min(fate_seq + 1);
        let fate = Fate {
            order_id: a.order_id,
            kind: a.kind,
            code: a.code,
            reason: a.reason,
            order_seq: a.order_seq,
            out_seq: a.out_seq,
            frontier: self.frontier,
            scan_from,
            // An epoch past u32::MAX (four billion rewrites) saturates: still newer than any
            // fate before it.
            order_epoch: u32::try_from(self.epoch).unwrap_or(u32::MAX),
        };
        self.fates
            .append(FATE, &fate.encode())
            .map_err(|e| BusError::queue(&self.path, e))
    }

    /// Where the router may commit its position in this strategy's order queue: the first order
    /// without a fate, or `None` when every order it took is answered.
    pub(crate) fn hold(&self) -> Option<Position> {
        self.pending.first_key_value().map(|(_, p)| *p)
    }

    /// Orders taken and not yet answered.
    pub(crate) fn pending(&self) -> usize {
        self.pending.len()
    }

    /// Publishes the fates queue's watermark (an idle router keeps it fresh for tools).
    pub(crate) fn heartbeat(&mut self) {
        self.fates.heartbeat();
    }

    /// Closes the fates writer cleanly.
    pub(crate) fn close(self) -> Result<()> {
        let path = self.path;
        self.fates.close().map_err(|e| BusError::queue(&path, e))
    }

    fn refresh(&mut self) {
        let f = self
            .pending
            .first_key_value()
            .map_or(self.merged_next, |(s, _)| *s);
        self.frontier = self.frontier.max(f);
        while let Some((&seq, &(fate_seq, _))) = self.ahead.first_key_value() {
            if seq >= self.frontier {
                break;
            }
            self.ahead.remove(&seq);
            self.ahead_fates.remove(&fate_seq);
        }
    }
}

/// Reads the fates of a fates queue from seq `from` (or its oldest record, if `from` is gone)
/// to `until` (exclusive) or its end: (fate seq, fate). Records that are not fates are skipped.
pub(crate) fn read_fates(path: &Path, from: u64, until: Option<u64>) -> Result<Vec<(u64, Fate)>> {
    let open = |at| QueueReader::open(path, ReaderConfig::default().start(at));
    let mut r = match open(StartAt::Seq(from)) {
        Ok(r) => r,
        Err(e) if e.is_not_found() => return Err(BusError::queue(path, e)),
        Err(_) => open(StartAt::Earliest).map_err(|e| BusError::queue(path, e))?,
    };
    let mut out = Vec::new();
    while let Some(m) = r.next().map_err(|e| BusError::queue(path, e))? {
        if until.is_some_and(|u| m.seq() >= u) {
            break;
        }
        if m.type_id() == FATE {
            if let Some(f) = Fate::decode(m.payload()) {
                out.push((m.seq(), f));
            }
        }
    }
    Ok(out)
}
