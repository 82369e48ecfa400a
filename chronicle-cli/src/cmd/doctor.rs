//! `doctor`: walks a bus (or one queue), reports problems one line each with severity and fix,
//! and with `--fix` applies the safe fixes.

use std::io::IsTerminal;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Result;
use chronicle_bus::markers::{Lease, LeaseState, Ready};
use chronicle_bus::{BusLayout, layout};
use chronicle_core::probe::{self, QueueMeta, ReaderState};
use chronicle_core::{
    Error, Preallocate, QueueDir, QueueReader, QueueWriter, ReaderConfig, RecoveryAction,
    RetentionPolicy, WriterConfig, WriterStatus, find_damage, os, plan_retention, quarantine,
    remove_reader,
};
use serde::Serialize;

use crate::output::{self, Style};
use crate::queue;

/// CRC failures reported per queue before summarising the rest.
const MAX_CRC_FINDINGS: u64 = 10;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// A bus directory (with feeds/, strategies/, router/) or one queue directory.
    path: PathBuf,
    /// Read every record and check its CRC.
    #[arg(long)]
    verify: bool,
    /// Apply the safe fixes: run recovery on queues whose writer died (repairs torn tails),
    /// remove stale LEASE markers and READY markers without a queue.
    #[arg(long)]
    fix: bool,
    /// With --fix, also delete orphan reader metas (their consumers' positions are lost).
    #[arg(long, requires = "fix")]
    remove_orphans: bool,
    /// With --fix, also move damaged old segments (and every older one) aside to
    /// `<queue>/quarantine/` and move the queue's oldest seq past them; nothing is deleted.
    #[arg(long, requires = "fix")]
    quarantine: bool,
    /// A reader whose process is gone and whose heartbeat is older than this is an orphan
    /// (also the retention reader TTL used for the retention report).
    #[arg(long, value_name = "DURATION", value_parser = output::parse_duration, default_value = "1h")]
    reader_ttl: Duration,
    /// Report segments a `max_bytes` retention cap of this size would delete (default: every
    /// segment behind the tail and all live readers).
    #[arg(long, value_name = "SIZE", value_parser = output::parse_size)]
    max_bytes: Option<u64>,
    /// Report segments a `max_age` retention cap would delete.
    #[arg(long, value_name = "DURATION", value_parser = output::parse_duration)]
    max_age: Option<Duration>,
    /// Machine-readable output (one JSON object).
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
enum Severity {
    Error,
    Warning,
    Info,
}

/// What `--fix` may do about a finding.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Action {
    /// Open a writer (recovery) and close it.
    Recover(PathBuf),
    /// Delete a stale marker file.
    RemoveMarker(PathBuf),
    /// Delete an orphan reader meta (only with --remove-orphans).
    RemoveReader(PathBuf, String),
    /// Move segments up to and including this one aside (only with --quarantine).
    Quarantine(PathBuf, u64),
}

#[derive(Debug, Serialize)]
struct Finding {
    severity: Severity,
    kind: &'static str,
    path: String,
    message: String,
    fix: String,
    /// What --fix did about it.
    fixed: Option<String>,
    #[serde(skip)]
    action: Option<Action>,
}

#[derive(Debug, Serialize)]
struct Report {
    path: String,
    kind: &'static str,
    queues_checked: u64,
    strategies_checked: u64,
    records_verified: u64,
    findings: Vec<Finding>,
    errors: u64,
    warnings: u64,
}

struct Doctor<'a> {
    args: &'a Args,
    now: u64,
    findings: Vec<Finding>,
    queues: u64,
    strategies: u64,
    verified: u64,
}

impl Doctor<'_> {
    fn add(
        &mut self,
        severity: Severity,
        kind: &'static str,
        path: &Path,
        message: String,
        fix: impl Into<String>,
        action: Option<Action>,
    ) {
        self.findings.push(Finding {
            severity,
            kind,
            path: path.display().to_string(),
            message,
            fix: fix.into(),
            fixed: None,
            action,
        });
    }

    /// A marker file that does not parse (`e`): an error whose fix is to remove it; `after`
    /// says who writes it again.
    fn bad_marker(&mut self, marker: &Path, e: &dyn std::fmt::Display, after: &str) {
        self.add(
            Severity::Error,
            "bad-marker",
            marker,
            e.to_string(),
            format!("rm {} ({after})", marker.display()),
            None,
        );
    }

    /// Flags files and directories other users may write (a directory with the sticky bit is
    /// fine: others cannot delete or rename what they do not own).
    fn check_perms(&mut self, path: &Path) {
        let Ok(m) = std::fs::symlink_metadata(path) else {
            return;
        };
        let mode = m.permissions().mode();
        let sticky_dir = m.is_dir() && mode & 0o1000 != 0;
        if mode & 0o002 != 0 && !sticky_dir && !m.file_type().is_symlink() {
            self.add(
                Severity::Error,
                "world-writable",
                path,
                format!(
                    "{} is writable by every user (mode {:04o})",
                    if m.is_dir() { "directory" } else { "file" },
                    mode & 0o7777
                ),
                format!("chmod o-w {}", path.display()),
                None,
            );
        }
    }

    fn check_tree_perms(&mut self, dir: &Path) {
        self.check_perms(dir);
        let Ok(rd) = std::fs::read_dir(dir) else {
            return;
        };
        let mut entries: Vec<PathBuf> = rd.filter_map(|e| e.ok()).map(|e| e.path()).collect();
        entries.sort();
        for p in entries {
            match std::fs::symlink_metadata(&p) {
                Ok(m) if m.is_dir() => self.check_tree_perms(&p),
                Ok(_) => self.check_perms(&p),
                Err(_) => {}
            }
        }
    }

    fn check_queue(&mut self, q: &Path) {
        self.queues += 1;
        if let Some(denied) = queue::denied_path(q) {
            self.add(
                Severity::Error,
                "unreadable",
                &denied,
                "permission denied: this user may not read it, so the queue was not checked"
                    .to_string(),
                "run chron-cli doctor as the queue's owner or a member of its group, or grant read access (chmod -R g+rX)",
                None,
            );
            return;
        }
        let dir = QueueDir::new(q);
        self.check_tree_perms(q);
        let meta = match probe::read_meta(&dir) {
            Ok(m) => m,
            Err(e) => {
                self.add(
                    Severity::Error,
                    "bad-queue-meta",
                    &dir.control(),
                    e.to_string(),
                    "no automatic fix: restore queue.meta from a backup",
                    None,
                );
                return;
            }
        };
        let geom = meta.geometry;
        // Segment files of the wrong size.
        let files = match probe::segments(&dir, &meta) {
            Ok(s) => s.files,
            Err(e) => {
                self.add(
                    Severity::Error,
                    "unreadable",
                    &dir.segments(),
                    e.to_string(),
                    "check the directory's permissions",
                    None,
                );
                Vec::new()
            }
        };
        let mut truncated_tail = false;
        for s in &files {
            let (id, p) = (s.id, &s.path);
            match &s.size {
                Ok(len) if s.short.is_some() => {
                    truncated_tail |= id >= meta.tail.segment;
                    self.add(
                        Severity::Error,
                        "truncated-segment",
                        p,
                        format!(
                            "segment {id} is {} but the queue's segments are {} (truncated)",
                            output::bytes(*len),
                            output::bytes(geom.segment_size)
                        ),
                        "no automatic fix: restore the file, or copy the readable records to a new queue (chron-cli tail --json | chron-cli append --create --format json)",
                        None,
                    );
                }
                Ok(_) => {}
                Err(e) => {
                    let why = match e {
                        Error::Io { source, .. } => source.to_string(),
                        other => other.to_string(),
                    };
                    self.add(
                        Severity::Error,
                        "unreadable",
                        p,
                        format!("cannot stat segment {id}: {why}"),
                        "check the file's permissions",
                        None,
                    );
                }
            }
            // The sparse index only speeds seeks up: a bad one is a warning.
            if let Err(e) = chronicle_core::check_index(&dir, id) {
                let msg = if e.is_not_found() {
                    format!("segment {id} has no index file")
                } else {
                    e.to_string()
                };
                self.add(
                    Severity::Warning,
                    "bad-index",
                    &dir.index_file(id),
                    format!("{msg}; seeks in segment {id} fall back to scanning"),
                    "none needed (a writer rebuilds the tail segment's index when it recovers); restore the file to make seeks fast again",
                    None,
                );
            }
        }
        self.check_history(&dir, &geom, meta.tail.segment);
        // Writer: a crashed one leaves queue.meta saying "open" with a free lock.
        let lock = probe::writer_lock(&dir);
        if meta.writer_status(&lock) == Some(WriterStatus::Dead) {
            let pid = lock
                .pid
                .map_or("its writer".to_string(), |p| format!("writer pid {p}"));
            self.add(
                Severity::Error,
                "stale-writer-lock",
                &dir.lock(),
                format!(
                    "{pid} died without closing the queue (queue.meta says open, writer.lock is free)"
                ),
                "run recovery by opening a writer: chron-cli doctor --fix",
                Some(Action::Recover(q.to_path_buf())),
            );
        }
        // Torn tail (only meaningful with no live writer).
        if !lock.held && !truncated_tail && !files.is_empty() {
            match probe::check_tail(&dir, &meta) {
                Ok(c) => {
                    if let Some((off, n)) = c.torn {
                        self.add(
                            Severity::Error,
                            "torn-tail",
                            &dir.segment(c.tail_segment),
                            format!(
                                "torn record after the tail at segment {} offset {off}: {n} bytes written but never committed",
                                c.tail_segment
                            ),
                            "recovery fences it off with an ABORTED record: chron-cli doctor --fix",
                            Some(Action::Recover(q.to_path_buf())),
                        );
                    }
                }
                Err(e) => self.add(
                    Severity::Error,
                    "bad-tail",
                    q,
                    format!("the tail cannot be found: {e}"),
                    "no automatic fix: copy the readable records to a new queue",
                    None,
                ),
            }
        }
        if self.args.verify {
            self.verify(q, &meta);
        }
        self.check_readers(&dir, &meta, files.first().map(|s| s.id));
        self.check_retention(&dir, &meta);
        self.check_space(q, geom.segment_size);
    }

    /// Damage in segments before the tail (a lost page, a truncated or damaged file): what
    /// seqs it takes and where readers are unaffected again.
    fn check_history(&mut self, dir: &QueueDir, geom: &chronicle_core::Geometry, tail: u64) {
        let found = match find_damage(dir, geom, tail) {
            Ok(f) => f,
            Err(e) => {
                self.add(
                    Severity::Error,
                    "unreadable",
                    &dir.segments(),
                    format!("cannot walk the segments: {e}"),
                    "check the directory's permissions",
                    None,
                );
                return;
            }
        };
        for d in found {
            let from = d
                .first_seq
                .map_or(String::new(), |s| format!(" from seq {s}"));
            let (range, fix, action) = match (d.resume_seq, d.resume_segment) {
                (Some(r), Some(rs)) => (
                    format!(
                        "records{from} up to seq {} cannot be read; readers starting at seq {r} (segment {rs}) or later are not affected",
                        r.saturating_sub(1)
                    ),
                    format!(
                        "restore the segment from a backup, or move it and every older segment aside and start the queue at seq {r}: chron-cli doctor --fix --quarantine (moves segments up to {} to {}/quarantine/, deletes nothing)",
                        d.segment,
                        dir.root.display()
                    ),
                    Some(Action::Quarantine(dir.root.clone(), d.segment)),
                ),
                _ => (
                    format!("records{from} on cannot be read"),
                    "no automatic fix: restore the segment from a backup".to_string(),
                    None,
                ),
            };
            self.add(
                Severity::Error,
                "damaged-history",
                &dir.segment(d.segment),
                format!("segment {}: {}; {range}", d.segment, d.error),
                &fix,
                action,
            );
        }
    }

    fn verify(&mut self, q: &Path, meta: &QueueMeta) {
        let cfg = ReaderConfig {
            verify_crc: true,
            ..ReaderConfig::default()
        };
        let mut r = match QueueReader::open(q, cfg) {
            Ok(r) => r,
            Err(e) => {
                self.add(
                    Severity::Error,
                    "unreadable",
                    q,
                    format!("cannot read the queue: {e}"),
                    "see the other findings for this queue",
                    None,
                );
                return;
            }
        };
        let total = meta.tail.next_seq.saturating_sub(meta.oldest_seq);
        let bar = if std::io::stderr().is_terminal() && total > 100_000 {
            let b = indicatif::ProgressBar::new(total);
            b.set_message(format!("verifying {}", q.display()));
            b
        } else {
            indicatif::ProgressBar::hidden()
        };
        let mut bad = 0u64;
        let mut n = 0u64;
        loop {
            match r.next() {
                Ok(Some(_)) => {
                    n += 1;
                    if n % 4096 == 0 {
                        bar.set_position(n);
                    }
                }
                Ok(None) => break,
                Err(e) => {
                    bad += 1;
                    let seq = r.next_seq();
                    if bad <= MAX_CRC_FINDINGS {
                        let (path, msg) = match &e {
                            Error::Corrupted { path, .. } => {
                                (path.clone(), format!("record seq {seq}: {e}"))
                            }
                            _ => (q.to_path_buf(), format!("record seq {seq}: {e}")),
                        };
                        self.add(
                            Severity::Error,
                            "bad-record",
                            &path,
                            msg,
                            "no automatic fix: readers stop at this record (skip it with QueueReader::skip_record, or restore the segment)",
                            None,
                        );
                    }
                    if r.skip_record().is_err() {
                        break;
                    }
                }
            }
        }
        bar.finish_and_clear();
        if bad > MAX_CRC_FINDINGS {
            self.add(
                Severity::Error,
                "bad-record",
                q,
                format!(
                    "{} more records failed verification",
                    bad - MAX_CRC_FINDINGS
                ),
                "see above",
                None,
            );
        }
        self.verified += n;
    }

    /// The named readers of the queue; `oldest` is its oldest segment on disk.
    fn check_readers(&mut self, dir: &QueueDir, meta: &QueueMeta, oldest: Option<u64>) {
        let readers = match probe::readers(dir, meta) {
            Ok(r) => r,
            Err(e) => {
                self.add(
                    Severity::Error,
                    "unreadable",
                    &dir.readers(),
                    e.to_string(),
                    "check the directory's permissions",
                    None,
                );
                return;
            }
        };
        let ttl = u64::try_from(self.args.reader_ttl.as_nanos()).unwrap_or(u64::MAX);
        for r in readers {
            let (info, state) = match r {
                Ok(r) => (r.info, r.state),
                Err(e) => {
                    let path = match &e {
                        Error::Corrupted { path, .. }
                        | Error::NotYetInitialized { path }
                        | Error::VersionMismatch { path, .. }
                        | Error::Io { path, .. } => path.clone(),
                        _ => dir.readers(),
                    };
                    self.add(
                        Severity::Error,
                        "bad-reader-meta",
                        &path,
                        e.to_string(),
                        format!(
                            "if its consumer is retired, delete it: rm {}",
                            path.display()
                        ),
                        None,
                    );
                    continue;
                }
            };
            let path = dir.reader_meta(&info.name);
            let alive = state != ReaderState::Gone;
            let idle_ns = self.now.saturating_sub(info.heartbeat_ns);
            if !alive && idle_ns > ttl {
                let at = info.position.map_or("no position".to_string(), |p| {
                    format!("position seq {}", p.next_seq)
                });
                self.add(
                    Severity::Error,
                    "orphan-reader",
                    &path,
                    format!(
                        "orphan reader '{}': pid {} is gone and its last heartbeat was {} ({at})",
                        info.name,
                        info.pid,
                        output::ago(self.now, info.heartbeat_ns)
                    ),
                    "if its consumer is retired: chron-cli doctor --fix --remove-orphans (the position is lost)",
                    Some(Action::RemoveReader(dir.root.clone(), info.name.clone())),
                );
            }
            if let Some(from) = info.position.and_then(|p| {
                meta.history
                    .rewritten_since(info.history_epoch)
                    .filter(|&from| p.next_seq > from)
            }) {
                self.add(
                    Severity::Error,
                    "history-rewritten",
                    &path,
                    format!(
                        "reader '{}' saw records lost in a power cut: its position (seq {}) is past seq {from}, from which the queue's history was rewritten (epoch {}); it will be refused (HistoryRewritten)",
                        info.name,
                        info.position.map_or(0, |p| p.next_seq),
                        meta.history.epoch
                    ),
                    format!(
                        "decide what its consumer missed, then reset it once it is stopped: rm {} (it starts over at its configured start)",
                        path.display()
                    ),
                    None,
                );
            }
            if let (Some(p), Some(oldest)) = (info.position, oldest) {
                if p.segment < oldest {
                    self.add(
                        Severity::Warning,
                        "reader-position-lost",
                        &path,
                        format!(
                            "reader '{}' wants seq {} in segment {}, deleted by retention (oldest is segment {oldest}, seq {})",
                            info.name, p.next_seq, p.segment, meta.oldest_seq
                        ),
                        "the consumer must restart from the oldest record (OnLost::Earliest)",
                        None,
                    );
                }
            }
        }
    }

    fn check_retention(&mut self, dir: &QueueDir, meta: &QueueMeta) {
        let policy = RetentionPolicy {
            max_bytes: match (self.args.max_bytes, self.args.max_age) {
                (None, None) => Some(0),
                (b, _) => b,
            },
            max_age: self.args.max_age,
            reader_ttl: self.args.reader_ttl,
        };
        match plan_retention(dir, &meta.geometry, meta.tail.segment, &policy, self.now) {
            Ok((victims, held)) if !victims.is_empty() => {
                let (first, last) = (
                    victims.first().copied().unwrap_or(0),
                    victims.last().copied().unwrap_or(0),
                );
                let bytes = victims.len() as u64 * meta.geometry.segment_size;
                let held = held.map_or(String::new(), |(s, name)| {
                    format!("; reader '{name}' holds segment {s}")
                });
                self.add(
                    Severity::Info,
                    "retention-candidates",
                    &dir.segments(),
                    format!(
                        "{} segments ({first}..={last}, {}) are eligible for retention{held}",
                        victims.len(),
                        output::bytes(bytes)
                    ),
                    "set WriterConfig::retention (max_bytes / max_age) on the writer to reclaim them",
                    None,
                );
            }
            Ok(_) => {}
            Err(e) => self.add(
                Severity::Warning,
                "retention",
                &dir.segments(),
                format!("retention plan failed: {e}"),
                "see the other findings for this queue",
                None,
            ),
        }
    }

    fn check_space(&mut self, q: &Path, segment_size: u64) {
        let Some(free) = queue::free_bytes(q) else {
            return;
        };
        // A writer needs the next segment, and prepares one more ahead in the background.
        let (severity, need) = if free < segment_size {
            (Severity::Error, segment_size)
        } else if free < 2 * segment_size {
            (Severity::Warning, 2 * segment_size)
        } else {
            return;
        };
        self.add(
            severity,
            "disk-space",
            q,
            format!(
                "only {} free on the file system; the writer needs {} for its next segments",
                output::bytes(free),
                output::bytes(need)
            ),
            "free space, or apply a retention cap",
            None,
        );
    }

    fn check_strategy(&mut self, sdir: &Path) {
        self.strategies += 1;
        let orders = sdir.join(layout::ORDERS);
        let ready = sdir.join(layout::READY);
        let lease = sdir.join(layout::LEASE);
        let has_queue = queue::maybe_queue(&orders);
        if has_queue {
            self.check_queue(&orders);
        } else {
            self.check_perms(sdir);
        }
        // The router's answers to this strategy (created by the router when it attaches it).
        let fates = sdir.join(layout::FATES);
        if queue::maybe_queue(&fates) {
            self.check_queue(&fates);
        }
        self.check_stale_temporaries(sdir);
        let ready_link = self.refuse_link(&ready, "READY marker");
        let lease_link = self.refuse_link(&lease, "LEASE marker");
        if !ready_link && ready.exists() {
            self.check_perms(&ready);
            match Ready::read(&ready) {
                Err(e) => self.bad_marker(&ready, &e, "the strategy rewrites it when ready"),
                Ok(r) if !has_queue => self.add(
                    Severity::Warning,
                    "ready-without-queue",
                    &ready,
                    format!(
                        "READY (pid {}) but there is no order queue at {}",
                        r.pid,
                        orders.display()
                    ),
                    "remove the READY marker: chron-cli doctor --fix",
                    Some(Action::RemoveMarker(ready.clone())),
                ),
                Ok(r) => {
                    if let Ok(m) = probe::read_meta(&QueueDir::new(&orders)) {
                        if m.geometry.queue_uid != r.queue_uid {
                            self.add(
                                Severity::Warning,
                                "ready-without-queue",
                                &ready,
                                format!(
                                    "READY names queue uid {:016x} but the order queue has uid {:016x} (re-created)",
                                    r.queue_uid, m.geometry.queue_uid
                                ),
                                "remove the READY marker: chron-cli doctor --fix (the strategy writes a new one)",
                                Some(Action::RemoveMarker(ready.clone())),
                            );
                        }
                    }
                }
            }
        }
        if !lease_link && lease.exists() {
            self.check_perms(&lease);
            match Lease::read(&lease) {
                Err(e) => self.bad_marker(&lease, &e, "the strategy rewrites it"),
                Ok(l) => match l.state(self.now) {
                    LeaseState::Live => {}
                    LeaseState::HolderGone => self.add(
                        Severity::Warning,
                        "stale-lease",
                        &lease,
                        format!(
                            "lease holder pid {} is gone (last renewed {})",
                            l.pid,
                            output::ago(self.now, l.heartbeat_ns)
                        ),
                        "remove the stale LEASE: chron-cli doctor --fix",
                        Some(Action::RemoveMarker(lease.clone())),
                    ),
                    _ => self.add(
                        Severity::Warning,
                        "expired-lease",
                        &lease,
                        format!(
                            "lease of pid {} expired {} but the process is alive (hung?)",
                            l.pid,
                            output::ago(self.now, l.expiry_ns)
                        ),
                        format!(
                            "check process {}; doctor leaves a live holder's lease alone",
                            l.pid
                        ),
                        None,
                    ),
                },
            }
        }
    }

    /// Reports `path` if it is a symbolic link (dangling or not): the bus never follows a link
    /// where a marker or a directory belongs. Returns whether it was one.
    fn refuse_link(&mut self, path: &Path, what: &str) -> bool {
        let Ok(m) = std::fs::symlink_metadata(path) else {
            return false;
        };
        if !m.file_type().is_symlink() {
            return false;
        }
        let target = std::fs::read_link(path)
            .map(|t| t.display().to_string())
            .unwrap_or_else(|_| "?".to_string());
        let dangling = if path.exists() { "" } else { " (dangling)" };
        let (detail, fix, action) = if what.ends_with("marker") {
            (
                "discovery refuses it; the strategy writes a real file in its place",
                "remove the link (not its target): chron-cli doctor --fix".to_string(),
                Some(Action::RemoveMarker(path.to_path_buf())),
            )
        } else {
            (
                "discovery never follows it, so nothing behind it is routed",
                format!(
                    "replace the link with the directory itself, or remove the link: rm {}",
                    path.display()
                ),
                None,
            )
        };
        self.add(
            Severity::Error,
            "symlink",
            path,
            format!("{what} is a symbolic link to {target}{dangling}: {detail}"),
            fix,
            action,
        );
        true
    }

    /// Marker temporaries (`.READY.tmp.<pid>.<n>`, `.LEASE.tmp.<pid>.<n>`) of processes that
    /// died between writing and renaming. The strategy removes them when it reopens.
    fn check_stale_temporaries(&mut self, sdir: &Path) {
        let Ok(rd) = std::fs::read_dir(sdir) else {
            return;
        };
        let mut found: Vec<(PathBuf, Option<u32>)> = rd
            .filter_map(|e| e.ok())
            .filter_map(|e| {
                let name = e.file_name().to_str()?.to_string();
                let rest = [layout::READY, layout::LEASE]
                    .iter()
                    .find_map(|m| name.strip_prefix(&format!(".{m}.tmp.")))?;
                let pid = rest.split('.').next().and_then(|p| p.parse::<u32>().ok());
                Some((e.path(), pid))
            })
            .collect();
        found.sort();
        for (path, pid) in found {
            let alive = pid.is_some_and(|p| chronicle_core::os::process_start_time(p).is_some());
            if alive {
                continue;
            }
            let who = pid.map_or_else(|| "an unknown process".to_string(), |p| format!("pid {p}"));
            self.add(
                Severity::Warning,
                "stale-temporary",
                &path,
                format!("marker temporary left by {who}, which died before renaming it"),
                "remove it: chron-cli doctor --fix (the strategy also removes it when it reopens)",
                Some(Action::RemoveMarker(path.clone())),
            );
        }
    }

    fn check_bus(&mut self, root: &Path) {
        let bus = BusLayout::new(root);
        for d in [
            bus.root().to_path_buf(),
            bus.feeds_dir(),
            bus.strategies_dir(),
            bus.router_dir(),
            bus.doorbell(),
        ] {
            self.check_perms(&d);
        }
        for q in queue::subdirs(&bus.feeds_dir()) {
            if queue::maybe_queue(&q) {
                self.check_queue(&q);
            }
        }
        for (dir, what) in [
            (bus.feeds_dir(), "feed queue"),
            (bus.strategies_dir(), "strategy directory"),
            (bus.router_dir(), "router queue"),
        ] {
            for link in sublinks(&dir) {
                self.refuse_link(&link, what);
            }
        }
        for s in queue::subdirs(&bus.strategies_dir()) {
            self.check_strategy(&s);
        }
        for q in queue::subdirs(&bus.router_dir()) {
            if queue::maybe_queue(&q) {
                self.check_queue(&q);
            }
        }
    }

    /// Applies the safe fixes, each once, recording what was done on the findings.
    fn apply_fixes(&mut self) {
        let mut done: Vec<(Action, std::result::Result<String, String>)> = Vec::new();
        for i in 0..self.findings.len() {
            let Some(action) = self.findings.get(i).and_then(|f| f.action.clone()) else {
                continue;
            };
            if matches!(action, Action::RemoveReader(..)) && !self.args.remove_orphans {
                continue;
            }
            if matches!(action, Action::Quarantine(..)) && !self.args.quarantine {
                continue;
            }
            let outcome = match done.iter().find(|(a, _)| *a == action) {
                Some((_, o)) => o.clone(),
                None => {
                    let o = apply(&action);
                    done.push((action, o.clone()));
                    o
                }
            };
            if let Some(f) = self.findings.get_mut(i) {
                match outcome {
                    Ok(what) => f.fixed = Some(what),
                    Err(e) => f.fix = format!("{} (--fix failed: {e})", f.fix),
                }
            }
        }
    }
}

fn apply(action: &Action) -> std::result::Result<String, String> {
    match action {
        Action::Recover(q) => {
            let cfg = WriterConfig {
                preallocate: Preallocate::Inline,
                ..WriterConfig::default()
            };
            let w = QueueWriter::open(q, cfg).map_err(|e| e.to_string())?;
            let r = w.recovery_report().clone();
            w.close().map_err(|e| e.to_string())?;
            let what = match r.action {
                RecoveryAction::Unblocked {
                    segment,
                    offset,
                    len,
                } => format!(
                    "fenced off a torn record of {len} bytes at segment {segment} offset {offset}"
                ),
                _ => "the tail was clean".to_string(),
            };
            Ok(format!(
                "ran recovery: {what}; next seq {} at segment {} offset {}; writer closed",
                r.next_seq, r.tail_segment, r.tail_offset
            ))
        }
        Action::RemoveMarker(p) => std::fs::remove_file(p)
            .map(|()| format!("removed {}", p.display()))
            .map_err(|e| e.to_string()),
        Action::Quarantine(q, through) => quarantine(&QueueDir::new(q), *through)
            .map(|r| {
                format!(
                    "moved segments {:?} to {}/quarantine/; the queue now starts at seq {} (segment {})",
                    r.moved,
                    q.display(),
                    r.oldest_seq,
                    r.oldest_segment
                )
            })
            .map_err(|e| e.to_string()),
        Action::RemoveReader(q, name) => remove_reader(&QueueDir::new(q), name)
            .map(|()| format!("removed reader '{name}'"))
            .map_err(|e| e.to_string()),
    }
}

/// Entries of `dir` that are symbolic links (not followed), sorted.
fn sublinks(dir: &Path) -> Vec<PathBuf> {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut v: Vec<PathBuf> = rd
        .filter_map(|e| e.ok())
        .filter(|e| e.file_type().is_ok_and(|t| t.is_symlink()))
        .map(|e| e.path())
        .collect();
    v.sort();
    v
}

pub fn run(args: Args) -> Result<u8> {
    let path = &args.path;
    let kind = match queue::classify(path)? {
        queue::Target::Queue => "queue",
        queue::Target::Bus => "bus",
    };
    let mut d = Doctor {
        args: &args,
        now: os::realtime_ns(),
        findings: Vec::new(),
        queues: 0,
        strategies: 0,
        verified: 0,
    };
    if kind == "queue" {
        d.check_queue(path);
    } else {
        d.check_bus(path);
    }
    if args.fix {
        d.apply_fixes();
    }
    d.findings.sort_by_key(|f| f.severity);
    let open = |s: Severity| {
        d.findings
            .iter()
            .filter(|f| f.severity == s && f.fixed.is_none())
            .count() as u64
    };
    let report = Report {
        path: path.display().to_string(),
        kind,
        queues_checked: d.queues,
        strategies_checked: d.strategies,
        records_verified: d.verified,
        errors: open(Severity::Error),
        warnings: open(Severity::Warning),
        findings: d.findings,
    };
    if args.json {
        output::print_json(&report)?;
    } else {
        print!("{}", render(&report, Style::detect()));
    }
    Ok(if report.errors > 0 { 1 } else { 0 })
}

fn render(r: &Report, st: Style) -> String {
    use std::fmt::Write as _;
    let mut s = String::new();
    for f in &r.findings {
        let sev = match f.severity {
            Severity::Error => st.red("error  "),
            Severity::Warning => st.yellow("warning"),
            Severity::Info => "info   ".to_string(),
        };
        let _ = writeln!(s, "{sev} {}: {}; fix: {}", f.path, f.message, f.fix);
        if let Some(what) = &f.fixed {
            let _ = writeln!(s, "{} {}: {what}", st.green("fixed  "), f.path);
        }
    }
    let mut what = format!(
        "{} {}",
        r.queues_checked,
        if r.queues_checked == 1 {
            "queue"
        } else {
            "queues"
        }
    );
    if r.kind == "bus" {
        let _ = write!(what, " and {} strategies", r.strategies_checked);
    }
    let _ = write!(what, " checked");
    if r.records_verified > 0 {
        let _ = write!(what, ", {} records verified", r.records_verified);
    }
    let fixed = r.findings.iter().filter(|f| f.fixed.is_some()).count();
    let fixed = if fixed > 0 {
        format!(", {fixed} fixed")
    } else {
        String::new()
    };
    if r.findings.is_empty() {
        let _ = writeln!(s, "{} {what}: no problems found", st.green("ok"));
    } else {
        let _ = writeln!(
            s,
            "{what}: {} open{fixed}",
            counted(&[(r.errors, "error"), (r.warnings, "warning")])
        );
    }
    s
}

/// `1 error, 2 warnings`.
fn counted(items: &[(u64, &str)]) -> String {
    items
        .iter()
        .map(|(n, what)| format!("{n} {what}{}", if *n == 1 { "" } else { "s" }))
        .collect::<Vec<_>>()
        .join(", ")
}
