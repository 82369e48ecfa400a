//! Power-loss simulator for the in-bridge's import state (DESIGN.md sections 8 and 15,
//! "Durability and power loss"; the disk model is chronicle-core's `powercut::Recorder`).
//!
//! Each cut imports a stream of one source into a local queue the way the in-bridge does
//! (per chunk: the state's intent written with `ImportState::begin`, fdatasynced with
//! `--sync-batches`; the records appended with their timestamps; the queue synced with
//! `--sync-batches`; `commit`; then the chunk's messages acknowledged), in steps, and composes
//! the disk image a power cut can leave of the directory holding the queue and the state file:
//! any page of either written since it was last made durable lost, stale or zeroed, names
//! never made durable missing, in any combination. On the image it runs what the in-bridge
//! runs before it talks to the server (`inbound::Resume`: queue recovery, state load, the
//! fingerprints of records after the state's last intent), then delivers the stream as the
//! server would: a re-read from the surviving intent's stream floor when records follow the
//! intent (matched, never appended), then every message not acknowledged before the cut, each
//! classified as the import does (below the expected seq: a duplicate; above it: a gap, held;
//! otherwise the records matched as already imported are skipped and the rest appended).
//!
//! Checks: loading gives a state that was written (its table and intent are those of one
//! `begin` of the run) or a typed error; the recovered queue holds only stream records, in
//! order; after the deliveries no record is in the queue twice and none below the expected
//! seq is missing (never skipped silently). With `--sync-batches`: no error, and every record
//! of the stream is in the queue exactly once. Without it (page-cache mode) records that were
//! acknowledged can be lost with the queue's pages: then the import waits for them as a gap
//! (visible, counted), or `StateMismatch` says the queue is behind the state.
//!
//! Not modelled (needs a server): the re-read's own classification of held messages, the
//! server's redelivery timing, several sources interleaved in one chunk.
//!
//! `CHRONICLE_POWERCUT_CUTS` (default 60) and `CHRONICLE_POWERCUT_SEED` as in the queue
//! simulator.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use std::collections::BTreeSet;
use std::path::Path;

use bytes::Bytes;
use chronicle_bridge::BridgeError;
use chronicle_bridge::envelope::WireRecord;
use chronicle_bridge::inbound::{self, Resume};
use chronicle_bridge::state::{ImportState, runs_of};
use chronicle_core::testing::powercut::{self, Recorder, Rng};
use chronicle_core::{Preallocate, QueueReader, QueueWriter, ReaderConfig, StartAt, WriterConfig};

const SRC: &str = "host/q";

fn record(seq: u64) -> WireRecord {
    let len = (seq.wrapping_mul(2_654_435_761) % 400) as usize;
    let mut p = seq.to_le_bytes().to_vec();
    p.extend((0..len).map(|i| (seq as u8) ^ (i as u8).wrapping_mul(29)));
    WireRecord {
        seq,
        timestamp_ns: 1_000_000 + seq * 7,
        type_id: 9,
        payload: Bytes::from(p),
    }
}

/// The in-bridge's writer configuration (`inbound::writer_config`) on small segments.
fn writer_config(sync: bool) -> WriterConfig {
    inbound::writer_config(
        &WriterConfig {
            segment_size: 32 << 10,
            index_stride: 1024,
            preallocate: Preallocate::Inline,
            ..WriterConfig::default()
        },
        sync,
    )
}

/// A stream message: its stream seq and records.
#[derive(Debug, Clone)]
struct Msg {
    stream_seq: u64,
    records: Vec<WireRecord>,
}

/// One `begin` of the run: (first local seq, first source seq, count, table before).
type Intent = (u64, u64, u64, Option<u64>);

struct Before {
    rec: Recorder,
    stream: Vec<Msg>,
    acked: BTreeSet<u64>,
    intents: Vec<Intent>,
}

fn run_before_cut(dir: &Path, sync: bool, rng: &mut Rng) -> Before {
    let queue = dir.join("q");
    let state_path = dir.join("q.import-state");
    let mut writer = QueueWriter::open(&queue, writer_config(sync)).unwrap();
    let mut rec = Recorder::new(dir);
    let (mut state, _) = ImportState::load(&state_path, writer.next_seq()).unwrap();
    let mut stream: Vec<Msg> = Vec::new();
    let mut acked = BTreeSet::new();
    let mut intents = Vec::new();
    let mut next_seq = 0u64;
    let mut next_msg = 0usize;
    let chunks = 2 + rng.below(10);
    for c in 0..chunks {
        // Messages published meanwhile (1-4 records each), then a chunk of those not yet taken.
        for _ in 0..1 + rng.below(5) {
            let n = 1 + rng.below(4);
            stream.push(Msg {
                stream_seq: stream.len() as u64 + 1,
                records: (next_seq..next_seq + n).map(record).collect(),
            });
            next_seq += n;
        }
        let take = (1 + rng.below(4) as usize).min(stream.len() - next_msg);
        let chunk: Vec<Msg> = stream[next_msg..next_msg + take].to_vec();
        next_msg += take;
        let recs: Vec<&WireRecord> = chunk.iter().flat_map(|m| &m.records).collect();
        let runs = runs_of(recs.iter().map(|r| (SRC, r.seq)));
        state.set_stream_floor(chunk.first().map(|m| m.stream_seq));
        intents.push((
            writer.next_seq(),
            recs[0].seq,
            recs.len() as u64,
            state.expected(SRC),
        ));
        state.begin(writer.next_seq(), &runs).unwrap();
        if sync {
            state.sync().unwrap();
        }
        if rng.chance(50) {
            rec.step();
        }
        for r in &recs {
            writer
                .append_at(r.type_id, r.timestamp_ns, &r.payload)
                .unwrap();
        }
        if sync {
            writer.sync().unwrap();
        }
        state.commit(&runs);
        rec.step();
        // The acknowledgements of the last chunk may not have left before the cut.
        if c + 1 < chunks || rng.chance(50) {
            acked.extend(chunk.iter().map(|m| m.stream_seq));
        }
    }
    // The process dies with the power: nothing is closed.
    std::mem::forget(writer);
    rec.finish();
    Before {
        rec,
        stream,
        acked,
        intents,
    }
}

#[derive(Debug, Default)]
struct Outcome {
    refused_queue: u64,
    state_mismatch: u64,
    state_corrupted: u64,
    state_missing: u64,
    matched: u64,
    visible_gaps: u64,
    appended: u64,
}

fn one_cut(seed: u64) -> Outcome {
    let mut rng = Rng(seed);
    let sync = rng.chance(50);
    let ctx = format!(
        "bridge cut CHRONICLE_POWERCUT_SEED={seed:#x} CHRONICLE_POWERCUT_CUTS=1 (sync_batches {sync})"
    );
    let dir = tempfile::tempdir().unwrap();
    let live = dir.path().join("live");
    std::fs::create_dir_all(&live).unwrap();
    let b = run_before_cut(&live, sync, &mut rng);
    let img = dir.path().join("image");
    std::fs::create_dir_all(&img).unwrap();
    b.rec.compose(&mut rng, &img, &[], &[]);
    let queue = img.join("q");
    let state_path = img.join("q.import-state");
    let mut out = Outcome::default();

    let mut writer = match QueueWriter::open(&queue, writer_config(sync)) {
        Ok(w) => w,
        Err(e) => {
            assert!(
                !sync,
                "{ctx}: queue recovery refused with --sync-batches: {e}"
            );
            out.refused_queue += 1;
            return out;
        }
    };
    // The recovered queue: stream records only, in order, from seq 0.
    let mut queued: Vec<u64> = Vec::new();
    let mut r =
        QueueReader::open(&queue, ReaderConfig::default().start(StartAt::Earliest)).unwrap();
    while let Some(m) = r
        .next()
        .unwrap_or_else(|e| panic!("{ctx}: reading the queue: {e}"))
    {
        let want = record(queued.len() as u64);
        assert_eq!(
            (m.timestamp_ns(), m.type_id(), m.payload()),
            (want.timestamp_ns, want.type_id, &want.payload[..]),
            "{ctx}: queue seq {}",
            m.seq()
        );
        queued.push(want.seq);
    }
    drop(r);
    assert_eq!(queued.len() as u64, writer.next_seq(), "{ctx}");
    if !state_path.exists() {
        out.state_missing += 1;
    }
    let mut res = match Resume::load(&state_path, &queue, writer.next_seq()) {
        Ok(r) => r,
        Err(e @ (BridgeError::StateMismatch { .. } | BridgeError::StateCorrupted { .. })) => {
            assert!(!sync, "{ctx}: state refused with --sync-batches: {e}");
            if matches!(e, BridgeError::StateMismatch { .. }) {
                out.state_mismatch += 1;
            } else {
                out.state_corrupted += 1;
            }
            return out;
        }
        Err(e) => panic!("{ctx}: unexpected error loading the state: {e}"),
    };
    // A state that was written: the table and intent of one `begin` (or none, before the first).
    let rc = res.recovered;
    let expected = res.state.expected(SRC);
    if rc.applied + rc.dropped > 0 || expected.is_some() {
        let fits = b
            .intents
            .iter()
            .any(|&(first_local, first_seq, count, before)| {
                rc.applied + rc.dropped == count
                    && first_local + rc.applied + rc.foreign == writer.next_seq()
                    && expected
                        == if rc.applied > 0 {
                            Some(first_seq + rc.applied)
                        } else {
                            before.or(Some(first_seq))
                        }
            });
        assert!(
            fits,
            "{ctx}: loaded table {expected:?} / {rc:?} is no state that was written ({:?}; queue next {})",
            b.intents,
            writer.next_seq()
        );
    }
    // Never imported past what the queue holds.
    let e0 = expected.unwrap_or(0);
    assert!(
        e0 <= writer.next_seq(),
        "{ctx}: expects {e0}, queue has {}",
        writer.next_seq()
    );

    // The re-read from the stream floor: records from the expected one on, matched only.
    if res.unmatched() > 0 {
        if let Some(floor) = rc.stream_floor {
            for m in b.stream.iter().filter(|m| m.stream_seq >= floor) {
                if res.unmatched() == 0 {
                    break;
                }
                let e = res.state.expected(SRC).unwrap_or(0);
                let recs: Vec<WireRecord> =
                    m.records.iter().filter(|r| r.seq >= e).cloned().collect();
                if recs.is_empty() {
                    continue;
                }
                if recs[0].seq > e {
                    break;
                }
                let n = res.take_imported(SRC, &recs);
                out.matched += n as u64;
                if n < recs.len() {
                    break;
                }
            }
        }
    }
    // The durable consumer: every message not acknowledged, in stream order.
    let mut gap = false;
    for m in b.stream.iter().filter(|m| !b.acked.contains(&m.stream_seq)) {
        let e = res.state.expected(SRC);
        let last = m.records.last().unwrap().seq;
        let first = m.records[0].seq;
        match e {
            Some(e) if last < e => continue,
            Some(e) if first > e => {
                // Held: the records before it were acknowledged and lost with the queue's pages.
                assert!(!sync, "{ctx}: a gap at {e} with --sync-batches");
                gap = true;
                break;
            }
            _ => {}
        }
        let e = e.unwrap_or(first);
        let recs: Vec<WireRecord> = m.records.iter().filter(|r| r.seq >= e).cloned().collect();
        let n = res.take_imported(SRC, &recs);
        out.matched += n as u64;
        let rest = &recs[n..];
        if !rest.is_empty() {
            let runs = runs_of(rest.iter().map(|r| (SRC, r.seq)));
            res.state.begin(writer.next_seq(), &runs).unwrap();
            for r in rest {
                writer
                    .append_at(r.type_id, r.timestamp_ns, &r.payload)
                    .unwrap();
                queued.push(r.seq);
            }
            res.state.commit(&runs);
            out.appended += rest.len() as u64;
        }
    }
    if gap {
        out.visible_gaps += 1;
    }
    // Never twice; never skipped below the expected seq.
    let mut seen = BTreeSet::new();
    for (i, s) in queued.iter().enumerate() {
        assert!(
            seen.insert(*s),
            "{ctx}: source seq {s} imported twice (queue seq {i}): {queued:?}"
        );
    }
    let e = res.state.expected(SRC).unwrap_or(0);
    for s in 0..e {
        assert!(
            seen.contains(&s),
            "{ctx}: source seq {s} skipped (expected {e}): {queued:?}"
        );
    }
    if sync {
        let total: u64 = b.stream.iter().map(|m| m.records.len() as u64).sum();
        assert_eq!(
            queued,
            (0..total).collect::<Vec<_>>(),
            "{ctx}: with --sync-batches every record once"
        );
    }
    writer.close().unwrap();
    out
}

#[test]
fn import_state_and_queue_survive_power_cuts() {
    let cuts: u64 = std::env::var("CHRONICLE_POWERCUT_CUTS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(60);
    let base: u64 = std::env::var("CHRONICLE_POWERCUT_SEED")
        .ok()
        .and_then(|s| u64::from_str_radix(s.trim_start_matches("0x"), 16).ok())
        .unwrap_or_else(chronicle_core::os::realtime_ns);
    println!("bridge power cuts: {cuts}, CHRONICLE_POWERCUT_SEED={base:#x}");
    powercut::enable();
    let mut total = Outcome::default();
    for i in 0..cuts {
        let o = one_cut(base.wrapping_add(i));
        total.refused_queue += o.refused_queue;
        total.state_mismatch += o.state_mismatch;
        total.state_corrupted += o.state_corrupted;
        total.state_missing += o.state_missing;
        total.matched += o.matched;
        total.visible_gaps += o.visible_gaps;
        total.appended += o.appended;
    }
    println!("{total:?}");
}
