//! The soak framework behind `chron-cli bench --soak`: [`run`] (in `parent.rs`) starts the roles
//! below, each as its own OS process (the calling executable re-executed with a hidden
//! subcommand, as the demo runs the trading topology), reads their reports and gives the verdict.
//! The executable must therefore dispatch the subcommands `soak-writer`, `soak-reader` and
//! `soak-fanin` to [`writer::run`], [`reader::run`] and [`fanin::run`] with their [`clap`]
//! arguments ([`writer::Args`], ...):
//!
//! - `soak-writer`: appends paced records of a deterministic pattern to one queue, heartbeats,
//!   and ends with an end record that carries the number of records written;
//! - `soak-reader`: a named reader that checks every record (contiguous seq, payload pattern)
//!   and counts losses, duplicates and corrupt payloads; optionally slow (it stalls on purpose);
//! - `soak-fanin`: a live timestamp merge of several writers' queues that checks the global key
//!   order and each source's order and completeness.
//!
//! Every role prints one JSON line per interval on stdout (and a last one with `"final":true`),
//! with the latency of that interval as HdrHistogram buckets for the parent to merge.

pub mod fanin;
mod parent;
pub mod reader;
pub mod writer;

pub use parent::{Opts, run};

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, anyhow};
use hdrhistogram::Histogram;
use serde_json::{Value, json};

/// The arguments a soak writer and a soak reader share: the queue, the role's name and the
/// writer's tag.
#[derive(Debug, clap::Args)]
pub struct Endpoint {
    /// Queue directory (the writer creates it).
    #[arg(long)]
    pub queue: PathBuf,
    /// Name in the reports; a reader's name is also its position's name in the queue (the
    /// position persists and holds retention back).
    #[arg(long)]
    pub name: String,
    /// The writer's tag, written into every payload (readers check it).
    #[arg(long)]
    pub tag: u64,
}

impl Endpoint {
    /// Opens the queue with `open` and tells the parent that the `role` is ready.
    fn open<T>(
        &self,
        role: &str,
        open: impl FnOnce(&Path) -> chronicle_core::Result<T>,
    ) -> Result<T> {
        let q = open(&self.queue)
            .with_context(|| format!("cannot open queue {}", self.queue.display()))?;
        crate::emit(&json!({"role": role, "name": self.name, "ready": true}));
        Ok(q)
    }
}

/// Type id of a data record.
pub const DATA: u32 = 1;
/// Type id of the end record: payload = number of data records before it, then the tag.
pub const END: u32 = 2;
/// Bytes of a payload's header: the record's seq, then the writer's tag (both u64 LE).
pub const HEADER: usize = 16;
/// Smallest payload: the header and at least 8 pattern bytes.
pub const MIN_SIZE: usize = 24;

/// Pattern byte `i` of the body of record `seq`: depends on both, so a record that carries
/// another record's bytes, or bytes shifted by any amount, does not pass.
#[inline]
fn pattern(seq: u64, i: usize) -> u8 {
    let x = seq
        .wrapping_add(1)
        .wrapping_mul(0x9E37_79B9_7F4A_7C15)
        .rotate_left((i % 64) as u32);
    (x as u8) ^ (i as u8)
}

/// Fills a payload for record `seq` of the writer tagged `tag`.
pub fn fill(buf: &mut [u8], seq: u64, tag: u64) {
    let (head, body) = buf.split_at_mut(HEADER.min(buf.len()));
    let mut words = seq.to_le_bytes().into_iter().chain(tag.to_le_bytes());
    for b in head {
        *b = words.next().unwrap_or(0);
    }
    for (i, b) in body.iter_mut().enumerate() {
        *b = pattern(seq, i);
    }
}

/// The little-endian u64 at `at`, if the payload is long enough.
pub fn read_u64(payload: &[u8], at: usize) -> Option<u64> {
    payload
        .get(at..at.checked_add(8)?)
        .and_then(|b| <[u8; 8]>::try_from(b).ok())
        .map(u64::from_le_bytes)
}

/// Whether `payload` is exactly what `fill` wrote for record `seq` of writer `tag`.
pub fn check(payload: &[u8], seq: u64, tag: u64, size: usize) -> bool {
    payload.len() == size
        && read_u64(payload, 0) == Some(seq)
        && read_u64(payload, 8) == Some(tag)
        && payload
            .get(HEADER..)
            .is_some_and(|body| body.iter().enumerate().all(|(i, &b)| b == pattern(seq, i)))
}

/// A latency histogram in ns, 1 ns to 1 h, 3 significant digits.
pub fn histogram() -> Result<Histogram<u64>> {
    Histogram::new_with_bounds(1, 3_600_000_000_000, 3)
        .map_err(|e| anyhow!("cannot create a histogram: {e}"))
}

/// The recorded buckets of `h` as `[[value, count], ...]` (how a role ships an interval's
/// histogram to the parent).
pub fn buckets(h: &Histogram<u64>) -> Value {
    Value::Array(
        h.iter_recorded()
            .map(|v| {
                Value::Array(vec![
                    Value::from(v.value_iterated_to()),
                    Value::from(v.count_at_value()),
                ])
            })
            .collect(),
    )
}

/// Adds buckets shipped by [`buckets`] to `h`.
pub fn add_buckets(h: &mut Histogram<u64>, v: &Value) {
    for pair in v.as_array().into_iter().flatten() {
        let mut it = pair
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_u64);
        if let (Some(value), Some(count)) = (it.next(), it.next()) {
            h.saturating_record_n(value, count);
        }
    }
}

/// Nanoseconds in a duration, saturating.
pub fn nanos(d: std::time::Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pattern_round_trips_and_detects_changes() {
        let mut buf = vec![0u8; 64];
        fill(&mut buf, 42, 7);
        assert!(check(&buf, 42, 7, 64));
        assert!(!check(&buf, 43, 7, 64));
        assert!(!check(&buf, 42, 8, 64));
        assert!(!check(&buf[..63], 42, 7, 64));
        let mut other = vec![0u8; 64];
        fill(&mut other, 43, 7);
        other[..8].copy_from_slice(&42u64.to_le_bytes());
        assert!(!check(&other, 42, 7, 64));
        buf[40] ^= 1;
        assert!(!check(&buf, 42, 7, 64));
    }

    #[test]
    fn buckets_round_trip() {
        let mut h = histogram().unwrap();
        for v in [100, 200, 200, 5_000, 1_000_000] {
            h.record(v).unwrap();
        }
        let mut g = histogram().unwrap();
        add_buckets(&mut g, &buckets(&h));
        assert_eq!(g.len(), 5);
        assert_eq!(g.value_at_quantile(0.5), h.value_at_quantile(0.5));
        assert_eq!(g.max(), h.max());
    }
}
