//! The in-bridge's memory of what it imported: per source queue, the next source sequence number
//! it expects, kept exactly in step with the local queue.
//!
//! The state file holds the table as it was *before* the last batch, plus that batch as a
//! write-ahead intent: the local sequence number its first record gets and the source records
//! in append order (as runs of consecutive sequence numbers). The file is replaced (write to a
//! temporary file, rename) before the batch is appended, never after. On load, the local queue
//! says how much of the intent happened: `queue.next_seq - first_local_seq` records of it were
//! appended (the in-bridge is the queue's only writer), so exactly those are applied. A crash at
//! any point therefore leaves a state that matches the queue:
//!
//! - before the rename: the old file, whose intent the queue shows complete;
//! - after the rename, before or during the appends: the new intent, applied as far as the queue
//!   shows records;
//! - after the appends, before the acks: the whole intent is applied; JetStream redelivers the
//!   unacknowledged messages and they are recognized as already imported.

use std::collections::BTreeMap;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{BridgeError, Result};

const VERSION: u32 = 1;

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
}

/// The import table and its file.
#[derive(Debug)]
pub struct ImportState {
    path: PathBuf,
    tmp: PathBuf,
    sources: BTreeMap<String, u64>,
}

impl ImportState {
    /// Loads the state at `path` (empty when the file does not exist) and reconciles its last
    /// intent with the local queue, whose next sequence number is `queue_next_seq`.
    pub fn load(path: &Path, queue_next_seq: u64) -> Result<(ImportState, Recovered)> {
        let mut tmp = path.as_os_str().to_owned();
        tmp.push(".tmp");
        let mut st = ImportState {
            path: path.to_path_buf(),
            tmp: PathBuf::from(tmp),
            sources: BTreeMap::new(),
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
        let image: FileImage =
            serde_json::from_slice(&bytes).map_err(|e| BridgeError::StateCorrupted {
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
            st.apply(&intent.runs, rec.applied);
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
            }),
        };
        let bytes = serde_json::to_vec(&image).map_err(|e| BridgeError::StateCorrupted {
            path: self.path.clone(),
            what: e.to_string(),
        })?;
        let io = |op: &'static str, source: std::io::Error| BridgeError::State {
            path: self.tmp.clone(),
            op,
            source,
        };
        let mut f = fs::File::create(&self.tmp).map_err(|e| io("create", e))?;
        f.write_all(&bytes).map_err(|e| io("write", e))?;
        drop(f);
        fs::rename(&self.tmp, &self.path).map_err(|source| BridgeError::State {
            path: self.path.clone(),
            op: "replace",
            source,
        })
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
        // Crash before any append.
        let (st0, rec) = ImportState::load(&path, 10).unwrap();
        assert_eq!(st0.expected("h/q"), None);
        assert_eq!(rec.dropped, 3);
        // Crash after two appends.
        let (st2, rec) = ImportState::load(&path, 12).unwrap();
        assert_eq!(st2.expected("h/q"), Some(102));
        assert_eq!(st2.expected("g/q"), None);
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
    fn garbage_is_reported() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.state");
        fs::write(&path, b"{not json").unwrap();
        assert!(matches!(
            ImportState::load(&path, 0),
            Err(BridgeError::StateCorrupted { .. })
        ));
    }
}
