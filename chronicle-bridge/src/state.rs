//! The in-bridge's memory of what it imported: per source queue, the next source sequence number
//! it expects, kept exactly in step with the local queue.
//!
//! The state holds the table as it was *before* the last batch, plus that batch as a
//! write-ahead intent: the local sequence number its first record gets and the source records
//! in append order (as runs of consecutive sequence numbers). The state is written before the
//! batch is appended, never after. On load, the local queue says how much of the intent
//! happened: `queue.next_seq - first_local_seq` records of it were appended (the in-bridge is
//! the queue's only writer), so exactly those are applied. A crash at any point therefore
//! leaves a state that matches the queue:
//!
//! - before the state write completes: the previous state, whose intent the queue shows
//!   complete;
//! - after it, before or during the appends: the new intent, applied as far as the queue shows
//!   records;
//! - after the appends, before the acks: the whole intent is applied; JetStream redelivers the
//!   unacknowledged messages and they are recognized as already imported.
//!
//! ```text
//! state file: two slots, written alternately with one pwrite each (no rename, no fsync)
//!   offset 0         slot 0
//!   offset SLOT_SIZE slot 1
//! slot: magic "CBS1" u32 LE | generation u64 LE | len u32 LE | crc32c(json) u32 LE | json[len]
//! ```
//! Load takes the valid slot (magic, length, CRC) with the highest generation, so a write torn
//! by a crash falls back to the previous state, which is still correct (the batch it announced
//! had not started). A rename per batch would cost far more than the batch itself.

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{BridgeError, Result};

const VERSION: u32 = 1;
const MAGIC: u32 = u32::from_le_bytes(*b"CBS1");
/// Bytes reserved per slot (the file is sparse: only what is written takes room).
pub const SLOT_SIZE: u64 = 1 << 20;
const SLOT_HEADER: usize = 20;

/// A run of consecutive source sequence numbers of one source, appended in order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Run {
    /// `<host>/<queue>`.
    pub source: String,
    /// First source sequence number.
    pub first: u64,
    /// Number of records.
    pub count: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Intent {
    first_local_seq: u64,
    runs: Vec<Run>,
    /// Lowest JetStream stream sequence of the messages of this intent and of those held
    /// when it was written: where a re-read of the stream starts if the next intent is lost.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    stream_floor: Option<u64>,
}

#[derive(Debug, Serialize, Deserialize)]
struct FileImage {
    version: u32,
    sources: BTreeMap<String, u64>,
    intent: Option<Intent>,
}

/// What loading found.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Recovered {
    /// Records of the last intent found in the queue (applied).
    pub applied: u64,
    /// Records of the last intent not found in the queue (dropped: they will be redelivered).
    pub dropped: u64,
    /// Records in the queue after the intent that the bridge did not write.
    pub foreign: u64,
    /// The intent's stream floor (see [`ImportState::set_stream_floor`]), if it had one.
    pub stream_floor: Option<u64>,
}

/// The import table and its file.
#[derive(Debug)]
pub struct ImportState {
    path: PathBuf,
    file: Option<fs::File>,
    generation: u64,
    sources: BTreeMap<String, u64>,
    /// The table moved (by [`ImportState::adopt`]) since the last write.
    dirty: bool,
    stream_floor: Option<u64>,
}

impl ImportState {
    /// Loads the state at `path` (empty when the file does not exist) and reconciles its last
    /// intent with the local queue, whose next sequence number is `queue_next_seq`.
    pub fn load(path: &Path, queue_next_seq: u64) -> Result<(ImportState, Recovered)> {
        let mut st = ImportState {
            path: path.to_path_buf(),
            file: None,
            generation: 0,
            sources: BTreeMap::new(),
            dirty: false,
            stream_floor: None,
        };
        let bytes = match fs::read(path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Ok((st, Recovered::default()));
            }
            Err(source) => {
                return Err(BridgeError::State {
                    path: path.to_path_buf(),
                    op: "read",
                    source,
                });
            }
        };
        let best = [0u64, SLOT_SIZE]
            .iter()
            .filter_map(|&off| parse_slot(&bytes, off))
            .max_by_key(|(generation, _)| *generation);
        let Some((generation, json)) = best else {
            return Err(BridgeError::StateCorrupted {
                path: path.to_path_buf(),
                what: "no valid slot (wrong magic, length or checksum)".to_string(),
            });
        };
        st.generation = generation;
        let image: FileImage =
            serde_json::from_slice(json).map_err(|e| BridgeError::StateCorrupted {
                path: path.to_path_buf(),
                what: e.to_string(),
            })?;
        if image.version != VERSION {
            return Err(BridgeError::StateCorrupted {
                path: path.to_path_buf(),
                what: format!(
                    "format version {} (this build reads {VERSION})",
                    image.version
                ),
            });
        }
        st.sources = image.sources;
        let mut rec = Recovered::default();
        if let Some(intent) = image.intent {
            let total: u64 = intent.runs.iter().map(|r| r.count).sum();
            let Some(appended) = queue_next_seq.checked_sub(intent.first_local_seq) else {
                return Err(BridgeError::StateMismatch {
                    path: path.to_path_buf(),
                    what: format!(
                        "the state expects the queue to hold records up to {} but its next sequence \
                         number is {queue_next_seq} (was the queue deleted? remove the state file to \
                         import from scratch)",
                        intent.first_local_seq
                    ),
                });
            };
            rec.applied = appended.min(total);
            rec.dropped = total - rec.applied;
            rec.foreign = appended.saturating_sub(total);
            rec.stream_floor = intent.stream_floor;
            st.stream_floor = intent.stream_floor;
            st.apply(&intent.runs, rec.applied);
            // A source the intent introduced keeps the start it was given even when none of
            // its records reached the queue: records from there on are expected, so any that
            // cannot come again (acknowledged, then lost with the queue's pages in a power
            // cut) are a visible gap rather than a silent new start further on.
            for r in &intent.runs {
                if !st.sources.contains_key(&r.source) {
                    st.sources.insert(r.source.clone(), r.first);
                }
            }
        }
        Ok((st, rec))
    }

    /// The next source sequence number expected from `source`, if it was ever seen.
    pub fn expected(&self, source: &str) -> Option<u64> {
        self.sources.get(source).copied()
    }

    /// All sources and their next expected sequence numbers.
    pub fn sources(&self) -> &BTreeMap<String, u64> {
        &self.sources
    }

    /// Persists the intent to append `runs` starting at local sequence number
    /// `first_local_seq`. Call before appending; call [`ImportState::commit`] after.
    pub fn begin(&mut self, first_local_seq: u64, runs: &[Run]) -> Result<()> {
        let image = FileImage {
            version: VERSION,
            sources: self.sources.clone(),
            intent: Some(Intent {
                first_local_seq,
                runs: runs.to_vec(),
                stream_floor: self.stream_floor,
            }),
        };
        let json = serde_json::to_vec(&image).map_err(|e| BridgeError::StateCorrupted {
            path: self.path.clone(),
            what: e.to_string(),
        })?;
        if json.len() + SLOT_HEADER > SLOT_SIZE as usize {
            return Err(BridgeError::StateCorrupted {
                path: self.path.clone(),
                what: format!(
                    "state of {} bytes exceeds a slot ({} sources)",
                    json.len(),
                    self.sources.len()
                ),
            });
        }
        let generation = self.generation + 1;
        let crc = chronicle_core::crc32c(&json);
        let len = u32::try_from(json.len()).unwrap_or(u32::MAX);
        let mut buf = Vec::with_capacity(SLOT_HEADER + json.len());
        buf.extend_from_slice(&MAGIC.to_le_bytes());
        buf.extend_from_slice(&generation.to_le_bytes());
        buf.extend_from_slice(&len.to_le_bytes());
        buf.extend_from_slice(&crc.to_le_bytes());
        buf.extend_from_slice(&json);
        let mut created = false;
        if self.file.is_none() {
            created = !self.path.exists();
            let f = fs::OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(false)
                .open(&self.path)
                .map_err(|source| BridgeError::State {
                    path: self.path.clone(),
                    op: "open",
                    source,
                })?;
            self.file = Some(f);
        }
        let Some(f) = &self.file else {
            return Ok(());
        };
        // Alternate slots: the one not holding the current generation is overwritten.
        let offset = (generation % 2) * SLOT_SIZE;
        f.write_all_at(&buf, offset)
            .map_err(|source| BridgeError::State {
                path: self.path.clone(),
                op: "write",
                source,
            })?;
        if created {
            // Once per state file: its first slot and its name reach the disk before anything
            // is appended, so a power cut never leaves a queue with records and no state file
            // (which would import them again). Later writes are synced only by `sync`.
            self.sync()?;
            if let Some(dir) = self.path.parent().filter(|d| !d.as_os_str().is_empty()) {
                chronicle_core::os::fsync_path(dir).map_err(|source| BridgeError::State {
                    path: dir.to_path_buf(),
                    op: "sync the directory of",
                    source,
                })?;
            }
        }
        self.generation = generation;
        self.dirty = false;
        Ok(())
    }

    /// Forces the last write to stable storage (fdatasync).
    pub fn sync(&self) -> Result<()> {
        match &self.file {
            Some(f) => {
                f.sync_data().map_err(|source| BridgeError::State {
                    path: self.path.clone(),
                    op: "sync",
                    source,
                })?;
                // The power-loss simulator's log (a no-op unless a test enabled it).
                chronicle_core::testing::powercut::record_file(&self.path);
                Ok(())
            }
            None => Ok(()),
        }
    }

    /// Records that `source` is imported up to `next` (exclusive) by records already in the
    /// queue before the next intent; written with the next [`ImportState::begin`].
    pub fn adopt(&mut self, source: &str, next: u64) {
        if self.sources.get(source).is_none_or(|&n| n < next) {
            self.sources.insert(source.to_string(), next);
            self.dirty = true;
        }
    }

    /// Sets the stream floor written with the next intents: the lowest JetStream stream
    /// sequence of the messages about to be appended and of those held back.
    pub fn set_stream_floor(&mut self, floor: Option<u64>) {
        if floor.is_some() {
            self.stream_floor = floor;
        }
    }

    /// Whether [`ImportState::adopt`] moved the table since the last write.
    pub fn dirty(&self) -> bool {
        self.dirty
    }

    /// Records that all of `runs` (the argument of the last `begin`) were appended.
    pub fn commit(&mut self, runs: &[Run]) {
        self.apply(runs, u64::MAX);
    }

    fn apply(&mut self, runs: &[Run], mut budget: u64) {
        for r in runs {
            if budget == 0 {
                break;
            }
            let n = r.count.min(budget);
            budget -= n;
            if n > 0 {
                self.sources
                    .insert(r.source.clone(), r.first.saturating_add(n));
            }
        }
    }
}

/// The generation and JSON of the slot at `offset`, if it is whole and valid.
fn parse_slot(bytes: &[u8], offset: u64) -> Option<(u64, &[u8])> {
    let start = usize::try_from(offset).ok()?;
    let head = bytes.get(start..start.checked_add(SLOT_HEADER)?)?;
    let word = |r: std::ops::Range<usize>| head.get(r);
    let magic = u32::from_le_bytes(word(0..4)?.try_into().ok()?);
    let generation = u64::from_le_bytes(word(4..12)?.try_into().ok()?);
    let len = u32::from_le_bytes(word(12..16)?.try_into().ok()?) as usize;
    let crc = u32::from_le_bytes(word(16..20)?.try_into().ok()?);
    if magic != MAGIC || len + SLOT_HEADER > SLOT_SIZE as usize {
        return None;
    }
    let body = start + SLOT_HEADER;
    let json = bytes.get(body..body.checked_add(len)?)?;
    (chronicle_core::crc32c(json) == crc).then_some((generation, json))
}

/// Groups `(source, seq)` pairs, in append order, into runs.
pub fn runs_of<'a>(records: impl IntoIterator<Item = (&'a str, u64)>) -> Vec<Run> {
    let mut runs: Vec<Run> = Vec::new();
    for (source, seq) in records {
        if let Some(last) = runs.last_mut() {
            if last.source == source && last.first.saturating_add(last.count) == seq {
                last.count += 1;
                continue;
            }
        }
        runs.push(Run {
            source: source.to_string(),
            first: seq,
            count: 1,
        });
    }
    runs
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runs_group_consecutive_records() {
        let r = runs_of([("a", 5), ("a", 6), ("b", 1), ("a", 7), ("a", 9)]);
        assert_eq!(r.len(), 4);
        assert_eq!((r[0].first, r[0].count), (5, 2));
        assert_eq!((r[3].first, r[3].count), (9, 1));
    }

    #[test]
    fn intent_is_applied_as_far_as_the_queue_shows() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.state");
        let (mut st, rec) = ImportState::load(&path, 10).unwrap();
        assert_eq!(rec, Recovered::default());
        let runs = runs_of([("h/q", 100), ("h/q", 101), ("g/q", 7)]);
        st.begin(10, &runs).unwrap();
        // Crash before any append: the sources the intent introduced keep their starts.
        let (st0, rec) = ImportState::load(&path, 10).unwrap();
        assert_eq!(st0.expected("h/q"), Some(100));
        assert_eq!(st0.expected("g/q"), Some(7));
        assert_eq!(rec.dropped, 3);
        // Crash after two appends.
        let (st2, rec) = ImportState::load(&path, 12).unwrap();
        assert_eq!(st2.expected("h/q"), Some(102));
        assert_eq!(st2.expected("g/q"), Some(7));
        assert_eq!((rec.applied, rec.dropped), (2, 1));
        // All appended, and later someone else appended two more.
        let (st3, rec) = ImportState::load(&path, 15).unwrap();
        assert_eq!(st3.expected("g/q"), Some(8));
        assert_eq!(rec.foreign, 2);
        // A queue shorter than the intent is refused.
        assert!(matches!(
            ImportState::load(&path, 3),
            Err(BridgeError::StateMismatch { .. })
        ));
        // Next batch carries the committed table.
        st.commit(&runs);
        st.begin(13, &runs_of([("h/q", 102)])).unwrap();
        let (st4, _) = ImportState::load(&path, 13).unwrap();
        assert_eq!(st4.expected("h/q"), Some(102));
        assert_eq!(st4.expected("g/q"), Some(8));
    }

    #[test]
    fn the_stream_floor_travels_with_the_intent() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.state");
        let (mut st, _) = ImportState::load(&path, 0).unwrap();
        st.set_stream_floor(Some(41));
        st.begin(0, &runs_of([("h/q", 0)])).unwrap();
        let (_, rec) = ImportState::load(&path, 3).unwrap();
        assert_eq!((rec.stream_floor, rec.foreign), (Some(41), 2));
        // A state written before the field existed loads without it.
        let old = br#"{"version":1,"sources":{},"intent":{"first_local_seq":0,"runs":[]}}"#;
        let crc = chronicle_core::crc32c(old);
        let mut buf = Vec::new();
        buf.extend_from_slice(&MAGIC.to_le_bytes());
        buf.extend_from_slice(&7u64.to_le_bytes());
        buf.extend_from_slice(&(old.len() as u32).to_le_bytes());
        buf.extend_from_slice(&crc.to_le_bytes());
        buf.extend_from_slice(old);
        fs::write(&path, &buf).unwrap();
        let (_, rec) = ImportState::load(&path, 0).unwrap();
        assert_eq!(rec.stream_floor, None);
    }

    #[test]
    fn garbage_is_reported() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.state");
        fs::write(&path, b"{not json").unwrap();
        assert!(matches!(
            ImportState::load(&path, 0),
            Err(BridgeError::StateCorrupted { .. })
        ));
    }

    #[test]
    fn a_torn_newest_slot_falls_back_to_the_previous_state() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.state");
        let (mut st, _) = ImportState::load(&path, 0).unwrap();
        let r1 = runs_of([("h/q", 0), ("h/q", 1)]);
        st.begin(0, &r1).unwrap(); // generation 1, slot 1
        st.commit(&r1);
        let r2 = runs_of([("h/q", 2)]);
        st.begin(2, &r2).unwrap(); // generation 2, slot 0
        let (ok, _) = ImportState::load(&path, 3).unwrap();
        assert_eq!(ok.expected("h/q"), Some(3));
        // Tear the newest slot (slot 0): a crash in the middle of its write.
        let mut bytes = fs::read(&path).unwrap();
        bytes[SLOT_HEADER + 3] ^= 0xff;
        fs::write(&path, &bytes).unwrap();
        // The batch it announced never started: the queue holds 2 records.
        let (back, rec) = ImportState::load(&path, 2).unwrap();
        assert_eq!(back.expected("h/q"), Some(2));
        assert_eq!(rec.applied, 2);
        // Writing continues from the surviving generation.
        let (mut again, _) = ImportState::load(&path, 2).unwrap();
        again.begin(2, &r2).unwrap();
        let (last, _) = ImportState::load(&path, 3).unwrap();
        assert_eq!(last.expected("h/q"), Some(3));
    }
}
