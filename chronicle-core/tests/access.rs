//! The permission model (DESIGN.md "Access"): modes independent of the umask, world-writable
//! queues refused unless allowed, and a read-only user (a real unprivileged process) who can read
//! and keep its own position but cannot write, move another reader's position or damage a file.
#![allow(clippy::unwrap_used)]

mod common;

use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use chronicle_core::{
    Error, QueueDir, QueueReader, QueueWriter, ReaderConfig, WaitOutcome, WriterConfig,
    list_readers, remove_reader,
};
use common::{ROLE, child_command, child_command_at, new_queue, payload};

const NOBODY: u32 = 65534;

fn env(k: &str) -> String {
    std::env::var(k).unwrap()
}

fn mode(p: &Path) -> u32 {
    std::fs::symlink_metadata(p).unwrap().permissions().mode() & 0o7777
}

fn cfg(file_mode: u32) -> WriterConfig {
    WriterConfig {
        segment_size: 64 << 10,
        file_mode,
        ..WriterConfig::default()
    }
}

/// The tests of this file run one at a time: a child forked by one test holds copies of the
/// other tests' open descriptors (writer locks included) until it execs, which can make a writer
/// lock look held for a moment.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn is_root() -> bool {
    // SAFETY: geteuid(2) has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// Entry point of the child processes (ignored in normal runs).
#[test]
#[ignore = "child process entry, run by the access tests"]
fn child_entry() {
    let Ok(role) = std::env::var(ROLE) else {
        return;
    };
    let q = PathBuf::from(env("Q"));
    match role.as_str() {
        "create" => {
            let mut w = QueueWriter::open(&q, cfg(0o660)).unwrap();
            w.append(1, b"x").unwrap();
            w.close().unwrap();
            println!("created");
        }
        "read-only-user" => read_only_user(&q),
        other => panic!("unknown role {other}"),
    }
}

fn child(role: &str, q: &Path) -> Command {
    child_command(role, &[("Q", q.display().to_string())])
}

#[test]
fn modes_are_exact_whatever_the_umask() {
    let _serial = serial();
    let dir = tempfile::tempdir().unwrap();
    let q = dir.path().join("q");
    let mut cmd = child("create", &q);
    // SAFETY: umask(2) is async-signal-safe; the closure touches nothing else.
    unsafe {
        cmd.pre_exec(|| {
            libc::umask(0o077);
            Ok(())
        });
    }
    let out = cmd.output().unwrap();
    assert!(out.status.success(), "{out:?}");
    assert_eq!(mode(&q), 0o770);
    assert_eq!(mode(&q.join("segments")), 0o770);
    assert_eq!(mode(&q.join("index")), 0o770);
    assert_eq!(mode(&q.join("queue.meta")), 0o660);
    assert_eq!(
        mode(
            &q.join("segments")
                .join(chronicle_core::testing::layout::segment_file_name(0))
        ),
        0o660
    );
    // readers/: group members may add their own meta (sticky: not remove another's), and
    // metas inherit the queue's group.
    assert_eq!(mode(&q.join("readers")), 0o3770);
}

#[test]
fn world_writable_queues_are_refused_unless_allowed() {
    let _serial = serial();
    let (_dir, q, mut w) = new_queue(cfg(0o660));
    w.append(1, b"hello").unwrap();
    w.close().unwrap();
    let chmod = |p: &Path, m: u32| std::fs::set_permissions(p, std::fs::Permissions::from_mode(m));
    for (path, restore) in [
        (q.clone(), 0o770),
        (q.join("queue.meta"), 0o660),
        (q.join("segments"), 0o770),
        (q.join("readers"), 0o3770),
        (
            q.join("segments")
                .join(chronicle_core::testing::layout::segment_file_name(0)),
            0o660,
        ),
    ] {
        chmod(&path, restore | 0o002).unwrap();
        let refused = |e: Error| match e {
            Error::WorldWritable { path: p, mode } => {
                assert_eq!(p, path);
                assert_eq!(mode & 0o002, 0o002);
                assert!(
                    Error::WorldWritable { path: p, mode }
                        .to_string()
                        .contains("lets any user write it")
                );
            }
            other => panic!("{}: expected WorldWritable, got {other}", path.display()),
        };
        refused(QueueReader::open(&q, ReaderConfig::default()).unwrap_err());
        refused(QueueWriter::open(&q, cfg(0o660)).unwrap_err());
        // Explicitly allowed: opens and reads.
        let mut r = QueueReader::open(
            &q,
            ReaderConfig {
                allow_world_writable: true,
                ..ReaderConfig::default()
            },
        )
        .unwrap();
        assert_eq!(r.next().unwrap().unwrap().payload(), b"hello");
        drop(r);
        let w = QueueWriter::open(
            &q,
            WriterConfig {
                allow_world_writable: true,
                ..cfg(0o660)
            },
        )
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        w.close().unwrap();
        chmod(&path, restore).unwrap();
    }
    QueueReader::open(&q, ReaderConfig::default()).unwrap();
}

/// As user nobody: everything a read-only user may do succeeds, everything else is refused.
fn read_only_user(q: &Path) {
    // SAFETY: getuid(2) has no preconditions.
    assert_eq!(unsafe { libc::getuid() }, NOBODY, "not running as nobody");
    let total: u64 = env("TOTAL").parse().unwrap();
    // Tail: an anonymous reader sees every record, and waiting at the end works (the control
    // block is mapped read-only for this user).
    let mut r = QueueReader::open(q, ReaderConfig::default()).unwrap();
    let mut n = 0;
    while let Some(m) = r.next().unwrap() {
        assert_eq!(m.payload(), &payload(n)[..]);
        n += 1;
    }
    assert_eq!(n, total);
    let out = r.wait(Duration::from_millis(20)).unwrap();
    assert!(
        matches!(out, WaitOutcome::TimedOut | WaitOutcome::WriterGone(_)),
        "{out:?}"
    );
    // Its own durable position: allowed (readers/ is group-writable and sticky).
    let mut mine = QueueReader::open(q, ReaderConfig::named("mine")).unwrap();
    for _ in 0..10 {
        mine.next().unwrap().unwrap();
    }
    mine.commit().unwrap();
    drop(mine);
    // Inspect: list readers.
    let dir = QueueDir::new(q);
    let names: Vec<String> = list_readers(&dir)
        .unwrap()
        .into_iter()
        .map(|r| r.unwrap().name)
        .collect();
    assert!(names.contains(&"theirs".to_string()) && names.contains(&"mine".to_string()));
    // Refused: writing, taking over another reader's position, removing it, touching files.
    let e = QueueWriter::open(q, cfg(0o640)).unwrap_err();
    assert!(e.to_string().contains("ermission denied"), "writer: {e}");
    let e = QueueReader::open(q, ReaderConfig::named("theirs")).unwrap_err();
    assert!(e.to_string().contains("ermission denied"), "theirs: {e}");
    let e = remove_reader(&dir, "theirs").unwrap_err().to_string();
    assert!(
        e.contains("not permitted") || e.contains("ermission denied"),
        "remove: {e}"
    );
    let seg = q
        .join("segments")
        .join(chronicle_core::testing::layout::segment_file_name(0));
    for p in [
        q.join("queue.meta"),
        seg.clone(),
        q.join("readers").join("theirs.meta"),
    ] {
        let e = std::fs::OpenOptions::new()
            .write(true)
            .open(&p)
            .unwrap_err();
        assert_eq!(e.kind(), std::io::ErrorKind::PermissionDenied, "{p:?}");
    }
    assert_eq!(
        std::fs::remove_file(&seg).unwrap_err().kind(),
        std::io::ErrorKind::PermissionDenied
    );
    assert!(std::fs::write(q.join("segments").join("planted"), b"x").is_err());
    println!("read-only checks passed");
}

fn snapshot(q: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut v = Vec::new();
    for sub in ["", "segments", "index"] {
        for e in std::fs::read_dir(q.join(sub)).unwrap().flatten() {
            if e.file_type().unwrap().is_file() {
                v.push((e.path(), std::fs::read(e.path()).unwrap()));
            }
        }
    }
    v.push((
        q.join("readers/theirs.meta"),
        std::fs::read(q.join("readers/theirs.meta")).unwrap(),
    ));
    v.sort();
    v
}

#[test]
fn read_only_user_reads_and_keeps_its_own_position_but_cannot_write_or_damage() {
    let _serial = serial();
    if !is_root() {
        eprintln!("skipped: needs root to run a child as user nobody");
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    // The test binary, where nobody can execute it (the checkout may sit under a private
    // directory).
    let exe = tmp.path().join("access-test");
    std::fs::copy(std::env::current_exe().unwrap(), &exe).unwrap();
    std::fs::set_permissions(&exe, std::fs::Permissions::from_mode(0o755)).unwrap();
    // Owner root, group nogroup: the group may read the data and add reader metas.
    let q = tmp.path().join("q");
    let total = 500u64;
    let mut w = QueueWriter::open(&q, cfg(0o640)).unwrap();
    for s in 0..total {
        w.append(s as u32, &payload(s)).unwrap();
    }
    w.close().unwrap();
    let mut theirs = QueueReader::open(&q, ReaderConfig::named("theirs")).unwrap();
    for _ in 0..7 {
        theirs.next().unwrap().unwrap();
    }
    theirs.commit().unwrap();
    drop(theirs);
    let status = Command::new("chgrp")
        .args(["-R", "nogroup"])
        .arg(&q)
        .status()
        .unwrap();
    assert!(status.success());
    // chgrp clears set-group-ID on some systems: restore the modes the writer set.
    std::fs::set_permissions(q.join("readers"), std::fs::Permissions::from_mode(0o3770)).unwrap();
    assert_eq!(mode(&q.join("queue.meta")), 0o640);
    let before = snapshot(&q);

    let env = [("Q", q.display().to_string()), ("TOTAL", total.to_string())];
    let out = child_command_at(&exe, "read-only-user", &env)
        .uid(NOBODY)
        .gid(NOBODY)
        .stderr(Stdio::inherit())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains("read-only checks passed"),
        "child as nobody failed: {out:?}"
    );
    // Nothing of the queue changed, and the other reader's position is where it was.
    assert_eq!(
        snapshot(&q),
        before,
        "a read-only user changed a queue file"
    );
    let infos = list_readers(&QueueDir::new(&q)).unwrap();
    let pos = |name: &str| {
        infos
            .iter()
            .flatten()
            .find(|r| r.name == name)
            .and_then(|r| r.position)
            .map(|p| p.next_seq)
    };
    assert_eq!(pos("theirs"), Some(7));
    assert_eq!(pos("mine"), Some(10));
    // The writer (root) still opens, reads the new meta and appends.
    let mut w = QueueWriter::open(&q, cfg(0o640)).unwrap();
    assert_eq!(w.append(0, b"after").unwrap(), total);
    w.close().unwrap();
}
