//! chron-cli as a read-only user (a real unprivileged process, user `nobody`, when the tests run
//! as root): `inspect`, `tail` and `doctor` work on a queue it may only read; `append` is refused
//! with one clear sentence; no queue byte changes.
#![allow(clippy::unwrap_used)]

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use chronicle_core::{QueueWriter, WriterConfig};
use common::*;

fn files(q: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut v = Vec::new();
    let mut stack = vec![q.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            if e.file_type().unwrap().is_dir() {
                stack.push(e.path());
            } else {
                v.push((e.path(), std::fs::read(e.path()).unwrap()));
            }
        }
    }
    v.sort();
    v
}

#[test]
fn read_only_user_can_inspect_tail_and_check_but_not_append() {
    let Some((tmp, exe)) = nobody_setup() else {
        return;
    };
    let q = tmp.path().join("q");
    let mut w = QueueWriter::open(
        &q,
        WriterConfig {
            file_mode: 0o640,
            ..small()
        },
    )
    .unwrap();
    for i in 0..5u64 {
        w.append_at(1, T0 + i, format!("rec-{i}").as_bytes())
            .unwrap();
    }
    w.close().unwrap();
    assert!(
        Command::new("chgrp")
            .args(["-R", "nogroup"])
            .arg(&q)
            .status()
            .unwrap()
            .success()
    );
    chmod(&q.join("readers"), 0o3770);
    let before = files(&q);

    let o = as_nobody(&exe, &["inspect", p(&q)]);
    assert_success(&o, "tail         next seq 5,");
    let o = as_nobody(&exe, &["tail", p(&q)]);
    assert_eq!(o.code, 0, "{o:?}");
    for i in 0..5 {
        assert!(o.stdout.contains(&format!("rec-{i}")), "{o:?}");
    }
    let o = as_nobody(&exe, &["doctor", p(&q), "--verify"]);
    assert_success(&o, "5 records verified");
    let o = as_nobody(&exe, &["append", p(&q)]);
    assert_ne!(o.code, 0, "{o:?}");
    assert_eq!(o.stderr.lines().count(), 1, "one sentence: {o:?}");
    assert!(o.stderr.contains("ermission denied"), "{o:?}");
    assert_eq!(files(&q), before, "a read-only user changed the queue");
}
