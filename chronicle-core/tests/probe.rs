//! The read-only probe against real processes: a live writer in another process, the same
//! writer SIGKILLed (a stale `writer.lock`), and one killed in the middle of a record.
#![allow(clippy::unwrap_used)]

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use chronicle_core::probe::{self, QueueProbe, WriterState};
use chronicle_core::{QueueDir, QueueWriter, WriterStatus};
use common::{Lines, ROLE, kill9, small_inline_segments, spawn_child};

/// Entry point of every child process (ignored in normal runs).
#[test]
#[ignore = "child process entry, run by the probe tests"]
fn child_entry() {
    let Ok(role) = std::env::var(ROLE) else {
        return;
    };
    let q = PathBuf::from(std::env::var("Q").unwrap());
    let mut w = QueueWriter::open(&q, small_inline_segments()).unwrap();
    for i in 0..5u32 {
        w.append(i, &i.to_le_bytes()).unwrap();
    }
    match role.as_str() {
        // Five records appended, then idle with the queue open.
        "writer" => println!("ready"),
        // Five records, then a sixth whose payload is written but never committed.
        "mid_record" => {
            let mut c = w.claim(9, 64).unwrap();
            c.payload_mut().fill(0xAB);
            println!("ready");
            std::mem::forget(c);
        }
        other => panic!("unknown role {other}"),
    }
    loop {
        std::thread::sleep(Duration::from_secs(1));
    }
}

fn spawn(role: &str, q: &Path) -> (std::process::Child, Lines) {
    let mut child = spawn_child(role, &[("Q", q.display().to_string())]);
    let lines = Lines::new(child.stdout.take().unwrap());
    lines.expect("ready", Duration::from_secs(60));
    (child, lines)
}

#[test]
fn live_writer_then_killed_writer() {
    let tmp = tempfile::tempdir().unwrap();
    let q = tmp.path().join("q");
    let dir = QueueDir::new(&q);
    let (mut child, _lines) = spawn("writer", &q);
    let pid = child.id();

    let p = QueueProbe::read(&dir).unwrap();
    assert!(p.lock.held, "the writer process holds writer.lock");
    assert_eq!(p.lock.pid, Some(pid));
    assert_eq!(p.lock.pid_alive, Some(true));
    assert_eq!(p.meta.writer_pid, pid);
    assert_eq!(p.meta.writer_state, WriterState::Open);
    assert_eq!(p.writer_status(), Some(WriterStatus::Alive));
    assert_eq!(p.meta.tail.next_seq, 5);

    kill9(&mut child);
    let p = QueueProbe::read(&dir).unwrap();
    assert!(
        !p.lock.held,
        "the kernel released the lock with the process"
    );
    assert_eq!(
        p.lock.pid,
        Some(pid),
        "writer.lock still names the dead writer"
    );
    assert_eq!(p.lock.pid_alive, Some(false));
    assert_eq!(p.meta.writer_state, WriterState::Open);
    assert_eq!(p.writer_status(), Some(WriterStatus::Dead));
    assert_eq!(p.meta.tail.next_seq, 5);
    let c = probe::check_tail(&dir, &p.meta).unwrap();
    assert_eq!((c.next_seq, c.torn), (5, None));

    // Recovery by the next writer, which then closes: the probe sees a clean close.
    QueueWriter::open(&q, small_inline_segments())
        .unwrap()
        .close()
        .unwrap();
    let p = QueueProbe::read(&dir).unwrap();
    assert_eq!(p.writer_status(), Some(WriterStatus::Closed));
    assert_eq!(p.lock.pid, Some(std::process::id()));
}

#[test]
fn writer_killed_mid_record_leaves_a_torn_tail() {
    let tmp = tempfile::tempdir().unwrap();
    let q = tmp.path().join("q");
    let dir = QueueDir::new(&q);
    let (mut child, _lines) = spawn("mid_record", &q);
    kill9(&mut child);

    let meta = probe::read_meta(&dir).unwrap();
    assert_eq!(meta.tail.next_seq, 5);
    let c = probe::check_tail(&dir, &meta).unwrap();
    assert_eq!(
        (c.tail_segment, c.tail_offset),
        (meta.tail.segment, meta.tail.offset)
    );
    assert_eq!(c.next_seq, 5);
    let (at, len) = c.torn.expect("the uncommitted payload follows the tail");
    assert_eq!(at, meta.tail.offset);
    assert!(
        len > 32 && len <= 32 + 64,
        "header and payload bytes: {len}"
    );
}
