//! Presentation of what `chronicle_core::probe` reads from a queue (states in words), and the
//! checks of paths given on the command line (a queue, a bus, neither, not readable) with the
//! one sentence that says what to pass instead. No file format is known here: the probe reads
//! the files.

use std::path::{Path, PathBuf};

use chronicle_core::probe::ReaderState;
use chronicle_core::{QueueDir, WriterStatus};

/// The writer's state in words, for humans and JSON: `alive`, `closed`, `dead`, `never`, or
/// `unknown` (a damaged state word).
pub fn writer_word(status: Option<WriterStatus>) -> &'static str {
    match status {
        Some(WriterStatus::Alive) => "alive",
        Some(WriterStatus::Closed) => "closed",
        Some(WriterStatus::Dead) => "dead",
        Some(WriterStatus::Never) => "never",
        _ => "unknown",
    }
}

/// A named reader's state in words: `active` (its meta is locked by a process), `idle` (its
/// last process still runs) or `gone`.
pub fn reader_word(state: ReaderState) -> &'static str {
    match state {
        ReaderState::Active => "active",
        ReaderState::Idle => "idle",
        ReaderState::Gone => "gone",
    }
}

/// True when `path` is a queue directory (has `queue.meta`).
pub fn is_queue(path: &Path) -> bool {
    QueueDir::new(path).control().exists()
}

/// What a path given on the command line is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    Queue,
    Bus,
}

/// The one-sentence refusal of a path this user may not read, with what to do.
pub fn permission_denied(path: &Path) -> anyhow::Error {
    // SAFETY: geteuid(2) has no preconditions and cannot fail.
    let uid = unsafe { libc::geteuid() };
    anyhow::anyhow!(
        "{}: permission denied (uid {uid} may not read it or a directory above it); run as its \
         owner or a member of its group, or have read access granted (chmod -R g+rX)",
        path.display()
    )
}

/// Checks that `path` is a directory this user may read (and, if it holds a `queue.meta`,
/// that the file may be read): one sentence saying what is wrong and what to do otherwise.
/// `wants` completes "X is a file, not ..." (e.g. "a queue directory").
pub fn check_dir(path: &Path, wants: &str) -> anyhow::Result<()> {
    if let Some(denied) = denied_path(path) {
        return Err(permission_denied(&denied));
    }
    match std::fs::metadata(path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            anyhow::bail!(
                "{}: no such file or directory (check the path)",
                path.display()
            )
        }
        Err(e) => anyhow::bail!("{}: {e}", path.display()),
        Ok(m) if !m.is_dir() => anyhow::bail!("{} is a file, not {wants}", path.display()),
        Ok(_) => Ok(()),
    }
}

/// Tells a queue from a bus, or says in one sentence why `path` is neither (missing, a file,
/// not readable by this user, or a directory that is neither) and what to pass instead.
pub fn classify(path: &Path) -> anyhow::Result<Target> {
    check_dir(path, "a queue or bus directory")?;
    if is_queue(path) {
        Ok(Target::Queue)
    } else if ["feeds", "strategies", "router"]
        .iter()
        .any(|d| path.join(d).is_dir())
    {
        Ok(Target::Bus)
    } else {
        anyhow::bail!(
            "{} is neither a chronicle queue (no queue.meta) nor a bus (no feeds/, strategies/ or router/): pass a queue directory or a bus root",
            path.display()
        );
    }
}

/// Checks a `--bus` directory of a topology role before it is created or opened: missing is
/// fine (it is created), otherwise it must be a readable directory that is not a queue.
pub fn check_bus_dir(path: &Path) -> anyhow::Result<()> {
    if matches!(std::fs::metadata(path), Err(e) if e.kind() == std::io::ErrorKind::NotFound) {
        return Ok(());
    }
    check_dir(
        path,
        "a bus directory (--bus takes a directory; it is created if missing)",
    )?;
    if is_queue(path) {
        anyhow::bail!(
            "{} is a queue, not a bus: --bus takes a bus root (a directory holding feeds/, strategies/ and router/, created if missing)",
            path.display()
        );
    }
    Ok(())
}

/// Checks that `path` is one queue (for `inspect`, `tail`, `append`): a bus is refused naming
/// one of its queues to pass instead.
pub fn check_queue(path: &Path) -> anyhow::Result<()> {
    check_dir(path, "a queue directory (the directory holding queue.meta)")?;
    if is_queue(path) {
        return Ok(());
    }
    if ["feeds", "strategies", "router"]
        .iter()
        .any(|d| path.join(d).is_dir())
    {
        let example = bus_queues(path).first().map_or_else(
            || format!("{}/feeds/NAME", path.display()),
            |q| q.display().to_string(),
        );
        anyhow::bail!(
            "{} is a bus, not a queue: pass one of its queues (e.g. {example}); `chron-cli doctor` and `metrics` take a whole bus",
            path.display()
        );
    }
    anyhow::bail!(
        "{} is not a chronicle queue (no queue.meta): pass the directory that holds queue.meta",
        path.display()
    )
}

/// Every queue of a bus, in a stable order: feeds, then each strategy's orders and fates, then
/// the router's queues (`router/out`). Symbolic links are not followed.
pub fn bus_queues(root: &Path) -> Vec<PathBuf> {
    let bus = chronicle_bus::BusLayout::new(root);
    let mut v: Vec<PathBuf> = subdirs(&bus.feeds_dir());
    for s in subdirs(&bus.strategies_dir()) {
        v.push(s.join(chronicle_bus::layout::ORDERS));
        v.push(s.join(chronicle_bus::layout::FATES));
    }
    v.extend(subdirs(&bus.router_dir()));
    v.retain(|q| maybe_queue(q));
    v
}

/// True when `path` is a queue, or may be one this user cannot look into: kept in a bus walk
/// (its check then says permission denied), not skipped as if it were not there.
pub fn maybe_queue(path: &Path) -> bool {
    !matches!(
        std::fs::metadata(QueueDir::new(path).control()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound
    )
}

/// The first of `path`, its listing and its `queue.meta` that this user may not read, if any.
pub fn denied_path(path: &Path) -> Option<PathBuf> {
    let denied = |e: &std::io::Error| e.kind() == std::io::ErrorKind::PermissionDenied;
    match std::fs::metadata(path) {
        Err(e) if denied(&e) => return Some(path.to_path_buf()),
        Err(_) => return None,
        Ok(m) if !m.is_dir() => return None,
        Ok(_) => {}
    }
    if std::fs::read_dir(path).is_err_and(|e| denied(&e)) {
        return Some(path.to_path_buf());
    }
    let meta = QueueDir::new(path).control();
    std::fs::File::open(&meta)
        .is_err_and(|e| denied(&e))
        .then_some(meta)
}

/// Sub-directories of `dir` (not links, not hidden), sorted; empty if it cannot be read.
pub fn subdirs(dir: &Path) -> Vec<PathBuf> {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut v: Vec<PathBuf> = rd
        .filter_map(|e| e.ok())
        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
        .filter(|e| !e.file_name().to_string_lossy().starts_with('.'))
        .map(|e| e.path())
        .collect();
    v.sort();
    v
}

/// Bytes available to unprivileged users on the file system holding `path`.
pub fn free_bytes(path: &Path) -> Option<u64> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(path.as_os_str().as_bytes()).ok()?;
    // SAFETY: zeroed statvfs is valid plain data; `c` is a NUL-terminated path living across
    // the call, and `st` is a live local the kernel fills in.
    let (r, st) = unsafe {
        let mut st: libc::statvfs = std::mem::zeroed();
        let r = libc::statvfs(c.as_ptr(), &mut st);
        (r, st)
    };
    let (avail, frsize): (u64, u64) = (st.f_bavail, st.f_frsize);
    (r == 0).then(|| avail.saturating_mul(frsize))
}
