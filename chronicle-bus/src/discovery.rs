//! Router-side discovery of strategy endpoints.
//!
//! [`RouterDiscovery::poll`] keeps the set of *attached* endpoints and returns the changes to it
//! as [`DiscoveryEvent`]s. A strategy `<id>` is attachable when all of these hold:
//!
//! - `strategies/<id>` is a real directory (a symlink is ignored: nothing outside the bus is
//!   ever attached) and `<id>` is a valid bus name;
//! - `strategies/<id>/READY` parses (see [`markers`](crate::markers));
//! - `strategies/<id>/orders/queue.meta` exists;
//! - `strategies/<id>/LEASE` parses and is [`LeaseState::Live`].
//!
//! **De-duplication.** Events are never forwarded from inotify. inotify (and the periodic
//! rescan) only mark strategy ids *dirty*; `poll` then re-evaluates each dirty id from the files
//! and compares the result with the attached set. So an event is emitted only on a transition:
//! `Added` exactly when an id goes from not attached to attached, `Removed` exactly when it
//! goes back, strictly alternating per id. An endpoint's identity is (id, queue uid): a READY
//! naming a different queue uid (the queue was re-created from scratch) gives
//! `Removed(.., QueueReplaced)` then `Added`. A strategy that restarts (new pid, new lease,
//! READY rewritten) without the router seeing it down stays attached with no event: its queue
//! and the router's position in it are unchanged.
//!
//! **Mechanisms.** inotify watches `strategies/` (entries created, deleted, moved) and every
//! strategy directory (READY/LEASE renamed in or deleted, the directory deleted). A full rescan
//! runs every `rescan_interval` regardless: it is what notices a lease whose holder died or
//! expired (no file changes then), it recovers from an inotify queue overflow (`IN_Q_OVERFLOW`
//! forces a rescan at the next poll), and it is the only mechanism when inotify cannot be
//! initialized or a watch cannot be added (watch limit).
//!
//! **Races.** A directory or queue that vanishes between the listing and the evaluation is just
//! not attachable: no error, no event unless it was attached. A READY created before the watch
//! on a new directory is added is still seen: the directory is evaluated after its watch is in
//! place.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::ffi::OsStr;
use std::fs;
use std::io;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use inotify::{EventMask, Inotify, WatchDescriptor, WatchMask};

use crate::error::{BusError, Result};
use crate::layout::{BusLayout, LEASE, ORDERS, READY, SourceId, validate_name};
use crate::markers::{Lease, LeaseState, Ready};

/// Settings of [`RouterDiscovery`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DiscoveryConfig {
    /// A full rescan runs at least this often (lease staleness is only noticed by rescans).
    pub rescan_interval: Duration,
    /// Use inotify when available (otherwise rescans only).
    pub use_inotify: bool,
}

impl Default for DiscoveryConfig {
    fn default() -> Self {
        DiscoveryConfig {
            rescan_interval: Duration::from_millis(100),
            use_inotify: true,
        }
    }
}

/// An attached strategy endpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    /// The strategy id (directory name).
    pub id: String,
    /// Stable merge source id derived from `id` ([`SourceId::of`]).
    pub source_id: SourceId,
    /// The order queue directory.
    pub orders: PathBuf,
    /// The queue uid named by READY.
    pub queue_uid: u64,
    /// Pid of the lease holder when it was attached.
    pub lease_pid: u32,
}

/// Why an endpoint was detached.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum RemoveReason {
    /// READY was removed (clean shutdown, or a restart in progress).
    ReadyRemoved,
    /// The strategy directory (or its order queue) was deleted.
    DirectoryRemoved,
    /// The lease is stale (holder gone or expired).
    LeaseStale(LeaseState),
    /// The LEASE file is missing.
    LeaseMissing,
    /// READY or LEASE became unreadable or malformed.
    MarkerInvalid,
    /// READY now names a different queue (the queue was re-created).
    QueueReplaced,
}

/// A change of the attached set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DiscoveryEvent {
    /// The endpoint became attachable.
    Added(Endpoint),
    /// The endpoint is no longer attachable.
    Removed(Endpoint, RemoveReason),
}

/// Counters, for monitoring and tests.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DiscoveryStats {
    /// Full rescans run.
    pub rescans: u64,
    /// inotify events read.
    pub inotify_events: u64,
    /// inotify queue overflows seen.
    pub overflows: u64,
    /// Watches that could not be added (covered by rescans).
    pub watch_failures: u64,
}

/// Watches `strategies/` and reports endpoints appearing and disappearing. See the module docs.
#[derive(Debug)]
pub struct RouterDiscovery {
    layout: BusLayout,
    config: DiscoveryConfig,
    inotify: Option<Inotify>,
    root_wd: Option<WatchDescriptor>,
    by_wd: HashMap<WatchDescriptor, String>,
    by_id: HashMap<String, WatchDescriptor>,
    attached: BTreeMap<String, Endpoint>,
    dirty: BTreeSet<String>,
    need_rescan: bool,
    last_rescan: Option<Instant>,
    buf: Vec<u8>,
    stats: DiscoveryStats,
}

const ROOT_MASK: WatchMask = WatchMask::CREATE
    .union(WatchMask::DELETE)
    .union(WatchMask::MOVED_FROM)
    .union(WatchMask::MOVED_TO)
    .union(WatchMask::DELETE_SELF)
    .union(WatchMask::MOVE_SELF)
    .union(WatchMask::ONLYDIR);

const DIR_MASK: WatchMask = WatchMask::CREATE
    .union(WatchMask::DELETE)
    .union(WatchMask::MOVED_FROM)
    .union(WatchMask::MOVED_TO)
    .union(WatchMask::CLOSE_WRITE)
    .union(WatchMask::DELETE_SELF)
    .union(WatchMask::MOVE_SELF)
    .union(WatchMask::ONLYDIR)
    .union(WatchMask::DONT_FOLLOW);

impl RouterDiscovery {
    /// Starts discovery on `layout` (its `strategies/` directory is created if missing). The
    /// first `poll` reports every endpoint already attachable.
    pub fn new(layout: &BusLayout, config: DiscoveryConfig) -> Result<RouterDiscovery> {
        crate::layout::create_dir_all(&layout.strategies_dir())?;
        let inotify = if config.use_inotify {
            Inotify::init().ok()
        } else {
            None
        };
        let mut d = RouterDiscovery {
            layout: layout.clone(),
            config,
            inotify,
            root_wd: None,
            by_wd: HashMap::new(),
            by_id: HashMap::new(),
            attached: BTreeMap::new(),
            dirty: BTreeSet::new(),
            need_rescan: true,
            last_rescan: None,
            buf: vec![0u8; 64 * 1024],
            stats: DiscoveryStats::default(),
        };
        d.watch_root();
        Ok(d)
    }

    /// True when inotify is in use (otherwise discovery relies on rescans).
    pub fn inotify_active(&self) -> bool {
        self.inotify.is_some() && self.root_wd.is_some()
    }

    /// The currently attached endpoints, by id.
    pub fn attached(&self) -> impl Iterator<Item = &Endpoint> {
        self.attached.values()
    }

    /// Counters.
    pub fn stats(&self) -> DiscoveryStats {
        self.stats
    }

    /// Forces a full rescan at the next `poll`.
    pub fn request_rescan(&mut self) {
        self.need_rescan = true;
    }

    fn watch_root(&mut self) {
        let dir = self.layout.strategies_dir();
        if let Some(ino) = &mut self.inotify {
            match ino.watches().add(&dir, ROOT_MASK) {
                Ok(wd) => self.root_wd = Some(wd),
                Err(_) => {
                    self.stats.watch_failures += 1;
                    self.root_wd = None;
                }
            }
        }
    }

    fn watch_dir(&mut self, id: &str) {
        if self.by_id.contains_key(id) {
            return;
        }
        let Some(ino) = &mut self.inotify else {
            return;
        };
        let dir = self.layout.strategies_dir().join(id);
        match ino.watches().add(&dir, DIR_MASK) {
            Ok(wd) => {
                // inotify returns the same descriptor for the same inode: drop a stale mapping.
                if let Some(old) = self.by_wd.insert(wd.clone(), id.to_string()) {
                    if old != id {
                        self.by_id.remove(&old);
                    }
                }
                self.by_id.insert(id.to_string(), wd);
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(_) => self.stats.watch_failures += 1,
        }
    }

    fn drain_inotify(&mut self) {
        let Some(ino) = &mut self.inotify else {
            return;
        };
        let mut names: Vec<(Option<WatchDescriptor>, Option<String>, EventMask)> = Vec::new();
        loop {
            match ino.read_events(&mut self.buf) {
                Ok(events) => {
                    let mut any = false;
                    for ev in events {
                        any = true;
                        let name = ev.name.and_then(OsStr::to_str).map(str::to_string);
                        names.push((Some(ev.wd.clone()), name, ev.mask));
                    }
                    if !any {
                        break;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => {
                    // The inotify fd is unusable: fall back to rescans from now on.
                    self.inotify = None;
                    self.root_wd = None;
                    self.by_wd.clear();
                    self.by_id.clear();
                    self.need_rescan = true;
                    break;
                }
            }
        }
        self.stats.inotify_events += names.len() as u64;
        for (wd, name, mask) in names {
            if mask.contains(EventMask::Q_OVERFLOW) {
                self.stats.overflows += 1;
                self.need_rescan = true;
                continue;
            }
            let Some(wd) = wd else { continue };
            if Some(&wd) == self.root_wd.as_ref() {
                if mask
                    .intersects(EventMask::DELETE_SELF | EventMask::MOVE_SELF | EventMask::IGNORED)
                {
                    // strategies/ itself went away: rescans until it is back.
                    self.root_wd = None;
                    self.need_rescan = true;
                } else if let Some(n) = name {
                    self.dirty.insert(n);
                }
                continue;
            }
            let Some(id) = self.by_wd.get(&wd).cloned() else {
                continue;
            };
            if mask.contains(EventMask::IGNORED) {
                self.by_wd.remove(&wd);
                if self.by_id.get(&id) == Some(&wd) {
                    self.by_id.remove(&id);
                }
            }
            self.dirty.insert(id);
        }
    }

    fn rescan(&mut self) -> Result<()> {
        self.stats.rescans += 1;
        self.need_rescan = false;
        self.last_rescan = Some(Instant::now());
        if self.inotify.is_some() && self.root_wd.is_none() {
            self.watch_root();
        }
        let dir = self.layout.strategies_dir();
        match fs::read_dir(&dir) {
            Ok(rd) => {
                for e in rd.flatten() {
                    if let Some(n) = e.file_name().to_str() {
                        self.dirty.insert(n.to_string());
                    }
                }
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(BusError::io(&dir, "read directory", e)),
        }
        let attached: Vec<String> = self.attached.keys().cloned().collect();
        self.dirty.extend(attached);
        Ok(())
    }

    /// Reads inotify events, rescans if due, re-evaluates changed strategies and returns the
    /// resulting transitions (ordered by strategy id within one call).
    pub fn poll(&mut self) -> Result<Vec<DiscoveryEvent>> {
        let mut out = Vec::new();
        self.poll_into(&mut out)?;
        Ok(out)
    }

    /// Like [`poll`](Self::poll), appending to `out`.
    pub fn poll_into(&mut self, out: &mut Vec<DiscoveryEvent>) -> Result<()> {
        self.drain_inotify();
        let due = self
            .last_rescan
            .is_none_or(|t| t.elapsed() >= self.config.rescan_interval);
        if self.need_rescan || due || !self.inotify_active() && self.last_rescan.is_none() {
            self.rescan()?;
        }
        let dirty = std::mem::take(&mut self.dirty);
        let now = chronicle_core::os::realtime_ns();
        for id in dirty {
            if validate_name(&id).is_err() {
                continue;
            }
            let desired = self.evaluate(&id, now);
            match (desired, self.attached.get(&id)) {
                (Ok(ep), None) => {
                    self.attached.insert(id, ep.clone());
                    out.push(DiscoveryEvent::Added(ep));
                }
                (Ok(ep), Some(old)) => {
                    if old.queue_uid != ep.queue_uid {
                        out.push(DiscoveryEvent::Removed(
                            old.clone(),
                            RemoveReason::QueueReplaced,
                        ));
                        out.push(DiscoveryEvent::Added(ep.clone()));
                        self.attached.insert(id, ep);
                    }
                }
                (Err(reason), Some(_)) => {
                    if let Some(old) = self.attached.remove(&id) {
                        out.push(DiscoveryEvent::Removed(old, reason));
                    }
                }
                (Err(_), None) => {}
            }
        }
        Ok(())
    }

    /// Decides whether strategy `id` is attachable right now.
    fn evaluate(&mut self, id: &str, now_ns: u64) -> std::result::Result<Endpoint, RemoveReason> {
        let dir = self.layout.strategies_dir().join(id);
        match fs::symlink_metadata(&dir) {
            Ok(md) if md.file_type().is_dir() => {}
            _ => return Err(RemoveReason::DirectoryRemoved),
        }
        // Watch first, then read: a marker written after this point produces an event.
        self.watch_dir(id);
        let ready = match Ready::read(&dir.join(READY)) {
            Ok(r) => r,
            Err(e) if e.is_gone() => return Err(RemoveReason::ReadyRemoved),
            Err(_) => return Err(RemoveReason::MarkerInvalid),
        };
        let orders = dir.join(ORDERS);
        match fs::symlink_metadata(orders.join("queue.meta")) {
            Ok(md) if md.file_type().is_file() => {}
            _ => return Err(RemoveReason::DirectoryRemoved),
        }
        let lease = match Lease::read(&dir.join(LEASE)) {
            Ok(l) => l,
            Err(e) if e.is_gone() => return Err(RemoveReason::LeaseMissing),
            Err(_) => return Err(RemoveReason::MarkerInvalid),
        };
        match lease.state(now_ns) {
            LeaseState::Live => {}
            s => return Err(RemoveReason::LeaseStale(s)),
        }
        Ok(Endpoint {
            id: id.to_string(),
            source_id: SourceId::of(id),
            orders,
            queue_uid: ready.queue_uid,
            lease_pid: lease.pid,
        })
    }
}
