//! A strategy's side of the bus ([`StrategyEndpoints`]) and reader registrations.
//!
//! Life of a strategy directory `strategies/<id>/`:
//!
//! 1. [`StrategyEndpoints::open`] refuses to start if a *live* lease of another process exists
//!    ([`BusError::LeaseHeld`]), removes a READY left by a previous incarnation (so no router
//!    attaches before this incarnation has initialized its queue), writes its LEASE, then opens
//!    (creates or recovers) the order queue with the bus doorbell configured.
//! 2. The strategy finishes its own initialization and calls
//!    [`mark_ready`](StrategyEndpoints::mark_ready): READY is renamed into place.
//! 3. While running it calls [`heartbeat`](StrategyEndpoints::heartbeat) from its loop: that
//!    publishes the queue watermark (so a fan-in merger does not wait on an idle strategy) and
//!    renews the lease when a third of its time-to-live has passed.
//!    [`router_attached`](StrategyEndpoints::router_attached) says whether a router has the
//!    order queue open (like a publication's "connected"): orders written while none has wait
//!    for the next router and may expire on the way.
//! 4. [`close`](StrategyEndpoints::close) removes READY (the router drains and detaches), closes
//!    the writer, and removes the LEASE. A strategy that dies leaves READY and a LEASE whose
//!    holder is gone: discovery reports it stale.

use std::path::{Path, PathBuf};
use std::time::Duration;

use chronicle_core::{
    QueueDir, QueueReader, QueueWriter, ReaderConfig, StartAt, WriterConfig, list_readers, os,
};

use crate::error::{BusError, Result};
use crate::layout::{BusLayout, create_dir_all, validate_name};
use crate::markers::{Lease, LeaseState, Ready, remove_marker};

/// Settings of [`StrategyEndpoints`].
#[derive(Debug, Clone)]
pub struct StrategyConfig {
    /// Configuration of the order-queue writer. If `doorbell` is `None` the bus doorbell is used.
    pub writer: WriterConfig,
    /// Lease time-to-live: a lease not renewed within this is expired.
    pub lease_ttl: Duration,
    /// Mode of the marker files.
    pub file_mode: u32,
}

impl Default for StrategyConfig {
    fn default() -> Self {
        StrategyConfig {
            writer: WriterConfig::default(),
            lease_ttl: Duration::from_secs(3),
            file_mode: 0o660,
        }
    }
}

/// A strategy's endpoints on the bus: its order queue writer and its READY/LEASE markers.
#[derive(Debug)]
pub struct StrategyEndpoints {
    id: String,
    writer: QueueWriter,
    ready_path: PathBuf,
    lease_path: PathBuf,
    lease: Lease,
    ttl_ns: u64,
    mode: u32,
}

impl StrategyEndpoints {
    /// Opens strategy `id` on the bus: see the module docs for the steps.
    pub fn open(layout: &BusLayout, id: &str, config: StrategyConfig) -> Result<StrategyEndpoints> {
        validate_name(id)?;
        let dir = layout.strategy_dir(id)?;
        create_dir_all(&dir)?;
        let ready_path = layout.strategy_ready(id)?;
        let lease_path = layout.strategy_lease(id)?;
        let now = os::realtime_ns();
        match Lease::read(&lease_path) {
            Ok(l) if l.pid != std::process::id() && l.state(now) == LeaseState::Live => {
                return Err(BusError::LeaseHeld {
                    path: lease_path,
                    pid: l.pid,
                });
            }
            // Absent, stale, ours, or unreadable (overwritten below): we take over.
            _ => {}
        }
        remove_marker(&ready_path)?;
        remove_stale_temporaries(&dir, &[&ready_path, &lease_path]);
        let ttl_ns = u64::try_from(config.lease_ttl.as_nanos()).unwrap_or(u64::MAX);
        let lease = Lease::for_current_process(now, ttl_ns);
        lease.write(&lease_path, config.file_mode)?;
        let mut wc = config.writer;
        if wc.doorbell.is_none() {
            wc.doorbell = Some(layout.doorbell());
        }
        let orders = layout.strategy_orders(id)?;
        let writer = match QueueWriter::open(&orders, wc) {
            Ok(w) => w,
            Err(e) => {
                let _ = remove_marker(&lease_path);
                return Err(BusError::queue(&orders, e));
            }
        };
        Ok(StrategyEndpoints {
            id: id.to_string(),
            writer,
            ready_path,
            lease_path,
            lease,
            ttl_ns,
            mode: config.file_mode,
        })
    }

    /// The strategy id.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The order-queue writer.
    pub fn writer(&mut self) -> &mut QueueWriter {
        &mut self.writer
    }

    /// The order queue's directory.
    pub fn orders_path(&self) -> &Path {
        self.writer.path()
    }

    /// Whether a router has this strategy's order queue open right now: the named reader
    /// `reader` of the queue (the router's, [`ROUTER_READER`](crate::orders::ROUTER_READER) by
    /// default) is held by a live process. Reads the reader metas (a directory listing and a
    /// lock probe each, microseconds): call it from a periodic check, not per record.
    pub fn router_attached(&self, reader: &str) -> Result<bool> {
        let path = self.writer.path();
        let readers = list_readers(&QueueDir::new(path)).map_err(|e| BusError::queue(path, e))?;
        Ok(readers
            .into_iter()
            .flatten()
            .any(|r| r.in_use && r.name == reader))
    }

    /// The lease as last written.
    pub fn lease(&self) -> Lease {
        self.lease
    }

    /// Publishes READY (atomically): routers may attach from now on. Call once the strategy is
    /// fully initialized; calling it again just rewrites it.
    pub fn mark_ready(&mut self) -> Result<()> {
        let ready = Ready::new(self.writer.geometry().queue_uid, os::realtime_ns());
        ready.write(&self.ready_path, self.mode)
    }

    /// Rewrites the lease with a fresh heartbeat and expiry.
    pub fn renew_lease(&mut self) -> Result<()> {
        let now = os::realtime_ns();
        self.lease.heartbeat_ns = now;
        self.lease.expiry_ns = now.saturating_add(self.ttl_ns);
        self.lease.write(&self.lease_path, self.mode)
    }

    /// Idle-loop duty: publishes the queue watermark ([`QueueWriter::heartbeat`]) and renews
    /// the lease once a third of its time-to-live has passed since the last renewal.
    pub fn heartbeat(&mut self) -> Result<()> {
        self.writer.heartbeat();
        let now = os::realtime_ns();
        if now.saturating_sub(self.lease.heartbeat_ns) >= self.ttl_ns / 3 {
            self.renew_lease()?;
        }
        Ok(())
    }

    /// Clean shutdown: removes READY, closes the writer, removes the LEASE.
    pub fn close(self) -> Result<()> {
        remove_marker(&self.ready_path)?;
        let path = self.writer.path().to_path_buf();
        self.writer.close().map_err(|e| BusError::queue(path, e))?;
        remove_marker(&self.lease_path)
    }
}

/// Removes marker temporaries (`.<NAME>.tmp.<pid>.<n>`) that an earlier incarnation killed
/// between writing and renaming left behind. Called while holding the lease, so no live writer
/// of these markers exists. Best effort: a failure leaves a harmless file that `doctor` lists.
fn remove_stale_temporaries(dir: &Path, markers: &[&Path]) {
    let prefixes: Vec<String> = markers
        .iter()
        .filter_map(|p| p.file_name().and_then(|n| n.to_str()))
        .map(|n| format!(".{n}.tmp."))
        .collect();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name();
        let Some(name) = name.to_str() else { continue };
        if prefixes.iter().any(|p| name.starts_with(p.as_str())) {
            // Unlinking removes the directory entry, never a link's target.
            let _ = std::fs::remove_file(e.path());
        }
    }
}

/// A named reader registered on a queue: while it exists (and is heartbeated within the queue's
/// retention `reader_ttl`) retention keeps every segment from its position on. Dropping it
/// unregisters the reader (its `readers/<name>.meta` is removed). For a reader whose position
/// must survive the process (the router's per-source positions), use a named
/// [`QueueReader`] directly instead: its registration outlives it.
#[derive(Debug)]
pub struct ReaderRegistration {
    reader: Option<QueueReader>,
    queue: PathBuf,
    name: String,
}

impl ReaderRegistration {
    /// Registers reader `name` on the queue at `queue`, positioned at `start` unless a position
    /// is already persisted. Fails with `Queue(ReaderInUse)` if a live process has it open.
    pub fn register(queue: impl AsRef<Path>, name: &str, start: StartAt) -> Result<Self> {
        validate_name(name)?;
        let queue = queue.as_ref().to_path_buf();
        let reader = QueueReader::open(&queue, ReaderConfig::named(name).start(start))
            .map_err(|e| BusError::queue(&queue, e))?;
        Ok(ReaderRegistration {
            reader: Some(reader),
            queue,
            name: name.to_string(),
        })
    }

    /// The registered reader (to read and commit through it).
    pub fn reader(&mut self) -> Option<&mut QueueReader> {
        self.reader.as_mut()
    }

    /// Refreshes the registration's heartbeat (call more often than the retention `reader_ttl`).
    pub fn keepalive(&mut self) {
        if let Some(r) = &mut self.reader {
            r.heartbeat();
        }
    }

    /// The reader name.
    pub fn name(&self) -> &str {
        &self.name
    }
}

impl Drop for ReaderRegistration {
    fn drop(&mut self) {
        // Release the exclusive lock first, then remove the file.
        self.reader = None;
        let _ =
            chronicle_core::remove_reader(&chronicle_core::QueueDir::new(&self.queue), &self.name);
    }
}
