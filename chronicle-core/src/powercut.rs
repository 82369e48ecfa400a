//! A log of what reached stable storage, for the power-loss simulator (tests only).
//!
//! A power cut keeps, of every page, some version written since the last time the page was
//! made durable (msync of a mapping, fsync of a file). To model that, a test must know what was
//! made durable and when: with the cargo feature `power-model`, once a test called [`enable`],
//! every successful msync (`Map::flush_range`) and fsync (`sys::fsync_path`) the library issues
//! appends the bytes it made durable to a process-wide log, which the test drains with
//! [`take_under`]. Without the feature [`record`] is an empty inline function; with it but not
//! enabled (other tests of a build with all features), one relaxed load. Tests only.

use std::path::{Path, PathBuf};

/// Bytes of one file that one msync or fsync made durable, or the names of a directory that
/// one fsync made durable.
#[derive(Debug, Clone)]
pub struct Synced {
    /// The file (or directory).
    pub path: PathBuf,
    /// Offset of `bytes` in it.
    pub offset: u64,
    /// The content made durable (empty for a directory).
    pub bytes: Vec<u8>,
    /// For a directory: the names in it when it was fsynced (they survive a power cut).
    pub entries: Option<Vec<String>>,
}

#[cfg(feature = "power-model")]
static LOG: std::sync::Mutex<Vec<Synced>> = std::sync::Mutex::new(Vec::new());

#[cfg(feature = "power-model")]
static ENABLED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Starts logging (for the rest of the process). Without `power-model`, nothing is ever logged.
pub fn enable() {
    // Relaxed: the flag orders nothing; the log itself is behind a mutex.
    #[cfg(feature = "power-model")]
    ENABLED.store(true, std::sync::atomic::Ordering::Relaxed);
}

/// Whether [`enable`] was called (callers skip gathering bytes otherwise).
#[cfg(feature = "power-model")]
pub(crate) fn enabled() -> bool {
    ENABLED.load(std::sync::atomic::Ordering::Relaxed)
}

/// Records that `bytes` at `offset` of `path` are durable now.
#[cfg(feature = "power-model")]
pub(crate) fn record(path: &Path, offset: u64, bytes: &[u8]) {
    if !enabled() {
        return;
    }
    if let Ok(mut log) = LOG.lock() {
        log.push(Synced {
            path: path.to_path_buf(),
            offset,
            bytes: bytes.to_vec(),
            entries: None,
        });
    }
}

/// Records that the names in directory `path` are durable now.
#[cfg(feature = "power-model")]
pub(crate) fn record_dir(path: &Path) {
    if !enabled() {
        return;
    }
    let Ok(rd) = std::fs::read_dir(path) else {
        return;
    };
    let entries = rd
        .filter_map(|e| e.ok())
        .filter_map(|e| e.file_name().into_string().ok())
        .collect();
    if let Ok(mut log) = LOG.lock() {
        log.push(Synced {
            path: path.to_path_buf(),
            offset: 0,
            bytes: Vec::new(),
            entries: Some(entries),
        });
    }
}

/// Records that the whole of file `path` is durable now: for a test of another crate whose
/// code made it so (an `fdatasync` of its own file, like the bridge's state file). A no-op
/// unless the feature is on and [`enable`] was called; the file is read to take its bytes.
pub fn record_file(path: &Path) {
    #[cfg(feature = "power-model")]
    if enabled() {
        if let Ok(bytes) = std::fs::read(path) {
            record(path, 0, &bytes);
        }
    }
    let _ = path;
}

/// Records that `bytes` at `offset` of `path` are durable now (no-op without `power-model`).
#[cfg(not(feature = "power-model"))]
#[inline(always)]
pub(crate) fn record(_path: &Path, _offset: u64, _bytes: &[u8]) {}

/// Removes and returns the log entries of files under `dir`, oldest first (tests running in
/// parallel each drain their own directory). Always empty without `power-model`.
pub fn take_under(dir: &Path) -> Vec<Synced> {
    #[cfg(feature = "power-model")]
    if let Ok(mut log) = LOG.lock() {
        let (mine, rest): (Vec<Synced>, Vec<Synced>) =
            log.drain(..).partition(|s| s.path.starts_with(dir));
        *log = rest;
        return mine;
    }
    let _ = dir;
    Vec::new()
}

#[cfg(feature = "power-model")]
pub use model::{Cut, Recorder, Rng};

/// The disk model of the power-loss simulators (`chronicle-core/tests/powercut.rs`,
/// `chronicle-bus/tests/powercut.rs`): a [`Recorder`] remembers every version of every file
/// under a directory (a snapshot after each step of a test) and what the library made durable
/// (this module's log); [`Recorder::compose`] builds the disk image a power cut can leave.
///
/// - **Pages.** Each 4 KiB page of each file is its latest content, or any version at or after
///   the last time it was made durable (msync, fsync), or zeroes if it never was: lost
///   suffixes, stale pages and zeroed pages, in any combination across files.
/// - **Names.** A file whose name no fsync of its directory has recorded may be missing from
///   the image (created since the directory was last made durable); a file removed since a
///   fsync of its directory recorded its name may be back (retention's unlinks, recovery's
///   removals), with some version of its pages. Files the caller names as durable at birth
///   (built under a temporary name, synced, renamed, and the directory synced by the caller's
///   mode, like `queue.meta` in a sync mode) only follow the page rules.
/// - **Small files written whole** (markers, written to a temporary file and renamed without
///   fsync, see `chronicle-bus`'s `markers.rs`): the caller chooses which paths; each may be
///   any version it had, missing, empty, or zero-filled at its latest length (data not yet
///   allocated when the rename reached the disk, as delayed allocation allows).
#[cfg(feature = "power-model")]
mod model {
    use std::collections::{BTreeMap, BTreeSet};
    use std::path::{Path, PathBuf};

    const PAGE: usize = 4096;

    /// splitmix64: small, seeded, replayable.
    #[derive(Debug, Clone)]
    pub struct Rng(pub u64);

    impl Rng {
        /// The next 64 random bits.
        pub fn next_u64(&mut self) -> u64 {
            self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = self.0;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            z ^ (z >> 31)
        }
        /// Uniform in `0..n` (0 when `n` is 0).
        pub fn below(&mut self, n: u64) -> u64 {
            self.next_u64() % n.max(1)
        }
        /// True with probability `percent` / 100.
        pub fn chance(&mut self, percent: u64) -> bool {
            self.below(100) < percent
        }
    }

    type Files = BTreeMap<PathBuf, Vec<u8>>;

    /// What [`Recorder::compose`] did to names.
    #[derive(Debug, Default, Clone)]
    pub struct Cut {
        /// Files of the last snapshot missing from the image (name never made durable).
        pub vanished: Vec<PathBuf>,
        /// Files removed before the cut that are back in the image.
        pub reappeared: Vec<PathBuf>,
    }

    /// Every version of every file under a directory, and what was made durable when.
    #[derive(Debug)]
    pub struct Recorder {
        root: PathBuf,
        /// `snaps[k]`: the files after step `k` (`snaps[0]`: when the recorder was made).
        snaps: Vec<Files>,
        /// Durable bytes: (index of the first snapshot taken after it, file, offset, bytes).
        durable: Vec<(usize, PathBuf, u64, Vec<u8>)>,
        /// Durable names: (index of the first snapshot after it, directory, names).
        dir_syncs: Vec<(usize, PathBuf, BTreeSet<String>)>,
    }

    impl Recorder {
        /// Starts recording the files under `root` (snapshot 0 now). Call [`super::enable`]
        /// first.
        pub fn new(root: &Path) -> Recorder {
            let mut r = Recorder {
                root: root.to_path_buf(),
                snaps: Vec::new(),
                durable: Vec::new(),
                dir_syncs: Vec::new(),
            };
            r.step();
            r
        }

        /// Takes the log of what was made durable since the last step, then a snapshot.
        pub fn step(&mut self) {
            let k = self.snaps.len();
            for s in super::take_under(&self.root) {
                let Ok(rel) = s.path.strip_prefix(&self.root) else {
                    continue;
                };
                match s.entries {
                    Some(names) => {
                        self.dir_syncs
                            .push((k, rel.to_path_buf(), names.into_iter().collect()));
                    }
                    None => self.durable.push((k, rel.to_path_buf(), s.offset, s.bytes)),
                }
            }
            self.snaps.push(snapshot(&self.root));
        }

        /// Drops the log of what was made durable after the last step (the power is gone).
        pub fn finish(&mut self) {
            let _ = super::take_under(&self.root);
        }

        /// Whether the name of `rel` (relative) was made durable by a fsync of its directory
        /// at or before snapshot `k`, and not dropped by a later one before it.
        fn name_durable(&self, rel: &Path, k: usize) -> bool {
            let (Some(parent), Some(name)) = (rel.parent(), rel.file_name()) else {
                return false;
            };
            let name = name.to_string_lossy();
            self.dir_syncs
                .iter()
                .rfind(|(at, d, _)| *at <= k && d == parent)
                .is_some_and(|(_, _, names)| names.contains(name.as_ref()))
        }

        /// Composes the disk image after a cut into `out`. `born_durable`: relative paths
        /// that are never missing and whose first version is durable (see the module docs);
        /// `whole`: relative paths of small files replaced whole by rename without fsync.
        pub fn compose(
            &self,
            rng: &mut Rng,
            out: &Path,
            born_durable: &[&Path],
            whole: &[&Path],
        ) -> Cut {
            let last_k = self.snaps.len() - 1;
            let mut cut = Cut::default();
            // Every file that ever existed, with the index of the last snapshot holding it.
            let mut files: BTreeMap<&Path, usize> = BTreeMap::new();
            for (k, s) in self.snaps.iter().enumerate() {
                for rel in s.keys() {
                    files.insert(rel.as_path(), k);
                }
            }
            let keep = 30 + rng.below(70); // percent of pages that reached the disk at their latest
            for (rel, last_seen) in files {
                let born = born_durable.contains(&rel);
                let present = last_seen == last_k;
                if whole.contains(&rel) {
                    if let Some(bytes) = self.whole_version(rel, rng) {
                        write(out, rel, &bytes);
                    }
                    continue;
                }
                if present {
                    if !born && !self.name_durable(rel, last_k + 1) && rng.chance(25) {
                        cut.vanished.push(rel.to_path_buf());
                        continue;
                    }
                } else {
                    // Removed: back if its name was durable when it was removed, and no later
                    // fsync of the directory recorded the removal.
                    if !self.name_durable(rel, last_k + 1) || !rng.chance(50) {
                        continue;
                    }
                    cut.reappeared.push(rel.to_path_buf());
                }
                let image = self.pages(rel, last_seen, keep, born, rng);
                write(out, rel, &image);
            }
            cut
        }

        /// A small file written whole: any version, missing, empty, or zero-filled.
        fn whole_version(&self, rel: &Path, rng: &mut Rng) -> Option<Vec<u8>> {
            let mut versions: Vec<Option<Vec<u8>>> = Vec::new();
            for s in &self.snaps {
                let v = s.get(rel).cloned();
                if versions.last() != Some(&v) {
                    versions.push(v);
                }
            }
            // Durable once its name and bytes were synced: only the versions from then on.
            let latest = self.snaps.last().and_then(|s| s.get(rel));
            match rng.below(8) {
                0 => None,
                1 => Some(Vec::new()),
                2 => latest.map(|b| vec![0; b.len()]),
                _ => versions
                    .get(rng.below(versions.len() as u64) as usize)
                    .cloned()
                    .flatten(),
            }
        }

        /// The pages of `rel` as a cut leaves them; `last_seen`: its latest snapshot.
        fn pages(
            &self,
            rel: &Path,
            last_seen: usize,
            keep: u64,
            born: bool,
            rng: &mut Rng,
        ) -> Vec<u8> {
            let Some(cur) = self.snaps.get(last_seen).and_then(|s| s.get(rel)) else {
                return Vec::new();
            };
            let mut image = cur.clone();
            for p in 0..cur.len().div_ceil(PAGE) {
                if rng.chance(keep) {
                    continue;
                }
                let (lo, hi) = (p * PAGE, ((p + 1) * PAGE).min(cur.len()));
                // The durable version of this page and the snapshot it precedes.
                let first = self
                    .snaps
                    .iter()
                    .position(|s| s.contains_key(rel))
                    .unwrap_or(0);
                let mut floor: (usize, Option<Vec<u8>>) = if born {
                    (
                        first,
                        self.snaps
                            .get(first)
                            .and_then(|s| s.get(rel))
                            .and_then(|b| b.get(lo..hi))
                            .map(<[u8]>::to_vec),
                    )
                } else {
                    (first, None)
                };
                for (k, f, off, bytes) in &self.durable {
                    let (off, end) = (*off as usize, *off as usize + bytes.len());
                    if f == rel && *k <= last_seen + 1 && off < hi && end > lo {
                        let mut page = floor.1.clone().unwrap_or_else(|| vec![0; hi - lo]);
                        let (a, b) = (lo.max(off), hi.min(end));
                        copy(&mut page, a - lo, bytes.get(a - off..b - off));
                        floor = (*k, Some(page));
                    }
                }
                // Candidates: the durable version (zeroes if never made durable), then every
                // snapshot taken after it that holds the page.
                let mut cands: Vec<Vec<u8>> = vec![floor.1.unwrap_or_else(|| vec![0; hi - lo])];
                for s in self.snaps.get(floor.0..=last_seen).unwrap_or(&[]) {
                    if let Some(b) = s.get(rel).and_then(|b| b.get(lo..hi)) {
                        cands.push(b.to_vec());
                    }
                }
                let pick = cands.get(rng.below(cands.len() as u64) as usize);
                copy(&mut image, lo, pick.map(Vec::as_slice));
            }
            image
        }
    }

    /// Copies `src` into `dst` at `at` (nothing if it does not fit).
    fn copy(dst: &mut [u8], at: usize, src: Option<&[u8]>) {
        if let Some(src) = src {
            if let Some(d) = dst.get_mut(at..at + src.len()) {
                d.copy_from_slice(src);
            }
        }
    }

    fn write(out: &Path, rel: &Path, bytes: &[u8]) {
        let path = out.join(rel);
        if let Some(parent) = path.parent() {
            let _ = std::fs::create_dir_all(parent);
        }
        let _ = std::fs::write(&path, bytes);
    }

    /// Every regular file under `root` except lock files (`writer.lock`: not data).
    fn snapshot(root: &Path) -> Files {
        let mut out = Files::new();
        let mut dirs = vec![root.to_path_buf()];
        while let Some(d) = dirs.pop() {
            let Ok(rd) = std::fs::read_dir(&d) else {
                continue;
            };
            for e in rd.flatten() {
                let p = e.path();
                let Ok(ft) = e.file_type() else { continue };
                if ft.is_dir() {
                    dirs.push(p);
                } else if ft.is_file() && p.file_name().is_some_and(|n| n != "writer.lock") {
                    // A file may be removed between listing and reading (recovery, retention).
                    if let (Ok(rel), Ok(b)) = (p.strip_prefix(root), std::fs::read(&p)) {
                        out.insert(rel.to_path_buf(), b);
                    }
                }
            }
        }
        out
    }
}
