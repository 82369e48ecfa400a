//! Errors a person can act on: every subcommand given what a new user would give it by
//! mistake (a missing path, a file, a directory that is not a queue, a bus where a queue is
//! wanted and the other way round), a damaged queue, and (as user `nobody`, when the tests run
//! as root) queues it may not read. Each answer is one sentence saying what is wrong and what
//! to do.
#![allow(clippy::unwrap_used)]

mod common;

use std::path::Path;

use common::*;

/// The subcommands that read the queue or bus at the path given them (with the arguments
/// that make them return).
const PATH_COMMANDS: [&[&str]; 4] = [&["inspect"], &["tail"], &["doctor"], &["metrics", "--once"]];

/// The names in directory `dir`.
fn entries(dir: &Path) -> Vec<std::ffi::OsString> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect()
}

/// A bus with feed `md` (5 records) and an empty `router/` and `strategies/`.
fn bus(root: &Path) -> std::path::PathBuf {
    let bus = root.join("bus");
    make_queue(&bus.join("feeds/md"), 5);
    std::fs::create_dir_all(bus.join("strategies")).unwrap();
    std::fs::create_dir_all(bus.join("router")).unwrap();
    bus
}

#[test]
fn foreign_and_missing_inputs_say_what_to_pass() {
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let missing = t.join("missing");
    let file = t.join("file");
    std::fs::write(&file, b"not a queue").unwrap();
    let empty = t.join("empty");
    std::fs::create_dir(&empty).unwrap();
    let bus = bus(t);
    let queue = bus.join("feeds/md");

    for cmd in PATH_COMMANDS.into_iter().chain([&["audit"][..]]) {
        let run_on = |path: &Path| run(&[cmd, &[p(path)]].concat(), b"");
        let o = run_on(&missing);
        assert_one_sentence(
            &o,
            1,
            &format!(
                "{}: no such file or directory (check the path)",
                p(&missing)
            ),
        );
        let o = run_on(&file);
        assert_one_sentence(&o, 1, &format!("{} is a file, not a ", p(&file)));
        let o = run_on(&empty);
        assert_eq!(o.code, 1, "{cmd:?}: {o:?}");
        assert!(
            o.stderr
                .contains(&format!("{} is not a chronicle ", p(&empty)))
                || o.stderr
                    .contains(&format!("{} is neither a chronicle queue", p(&empty))),
            "{cmd:?}: {o:?}"
        );
        assert!(
            o.stderr.contains(": pass "),
            "says what to pass: {cmd:?}: {o:?}"
        );
    }
    // A bus where one queue is wanted: names one of its queues.
    for cmd in ["inspect", "tail"] {
        let o = run(&[cmd, p(&bus)], b"");
        assert_one_sentence(
            &o,
            1,
            &format!(
                "{} is a bus, not a queue: pass one of its queues (e.g. {})",
                p(&bus),
                p(&queue)
            ),
        );
    }
    // A queue where a bus is wanted.
    let o = run(&["audit", p(&queue)], b"");
    assert_one_sentence(&o, 1, "is a queue, not a bus: audit takes a bus root");
    // append: a missing queue points at --create; a file does not.
    let o = run(&["append", p(&missing)], b"x\n");
    assert_one_sentence(
        &o,
        1,
        "no such queue (check the path, or pass --create to create a queue there)",
    );
    let o = run(&["append", p(&file)], b"x\n");
    assert_one_sentence(&o, 1, "is a file, not a queue directory");
    assert!(!o.stderr.contains("--create"), "{o:?}");
    let o = run(&["append", p(&empty)], b"x\n");
    assert_one_sentence(&o, 1, "(or pass --create to create a queue there)");
}

#[test]
fn topology_roles_refuse_a_file_or_a_queue_as_bus() {
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("file");
    std::fs::write(&file, b"x").unwrap();
    let queue = tmp.path().join("q");
    make_queue(&queue, 1);
    let before = entries(&queue);
    for role in [
        &["router"][..],
        &["feed"],
        &["strategy", "--id", "x"],
        &["demo", "--secs", "2"],
    ] {
        let o = run(&[role, &["--bus", p(&file)]].concat(), b"");
        assert_one_sentence(
            &o,
            1,
            &format!(
                "{} is a file, not a bus directory (--bus takes a directory; it is created if missing)",
                p(&file)
            ),
        );
        let o = run(&[role, &["--bus", p(&queue)]].concat(), b"");
        assert_one_sentence(
            &o,
            1,
            &format!(
                "{} is a queue, not a bus: --bus takes a bus root",
                p(&queue)
            ),
        );
    }
    // Nothing was created inside the queue.
    assert_eq!(before, entries(&queue));
}

#[test]
fn a_truncated_segment_says_why_and_points_at_doctor() {
    let (_tmp, q) = temp_queue(100);
    let seg = std::fs::read_dir(q.join("segments"))
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&seg)
        .unwrap()
        .set_len(100)
        .unwrap();
    // The records are stamped T0 + i ms: "now" one second later puts them in the rate window.
    let o = run(&["inspect", p(&q), "--now", "2023-11-14T22:13:21Z"], b"");
    assert_eq!(o.code, 0, "{o:?}");
    let line = o
        .stdout
        .lines()
        .find(|l| l.starts_with("append rate"))
        .unwrap();
    assert!(
        line.contains("unknown: the last 5 s of records could not be read (")
            && line.contains("shorter than the segment size")
            && line.contains(&format!("run `chron-cli doctor {}`", p(&q))),
        "{line}"
    );
    let o = run(
        &["inspect", "--json", p(&q), "--now", "2023-11-14T22:13:21Z"],
        b"",
    );
    let v: serde_json::Value = serde_json::from_str(&o.stdout).unwrap();
    assert!(v["append_rate_msgs_per_s"].is_null(), "{v}");
    assert!(
        v["append_rate_error"]
            .as_str()
            .unwrap()
            .contains("shorter than the segment size"),
        "{v}"
    );
    let o = run(&["tail", p(&q)], b"");
    assert_one_sentence(&o, 1, "run `chron-cli doctor` on the queue");
    assert!(o.stderr.contains("corrupted"), "{o:?}");
}

#[test]
fn unreadable_queues_say_permission_denied_with_the_path() {
    let Some((tmp, exe)) = nobody_setup() else {
        return;
    };
    let t = tmp.path();
    // A private queue (0700, root's).
    let private = t.join("private");
    make_queue(&private, 3);
    chmod(&private, 0o700);
    // A queue nobody may enter because its bus is private.
    let closed_bus = bus(&t.join("closed"));
    chmod(&t.join("closed"), 0o755);
    chmod(&closed_bus, 0o700);
    let behind = closed_bus.join("feeds/md");
    // A queue directory anyone may list whose queue.meta only root may read.
    let meta_only = t.join("meta-only");
    make_queue(&meta_only, 3);
    chmod(&meta_only, 0o755);
    chmod(&meta_only.join("queue.meta"), 0o600);

    for (path, denied) in [
        (&private, private.clone()),
        (&behind, behind.clone()),
        (&meta_only, meta_only.join("queue.meta")),
    ] {
        for cmd in PATH_COMMANDS.into_iter().chain([&["append"][..]]) {
            let o = as_nobody(&exe, &[cmd, &[p(path)]].concat());
            assert_one_sentence(
                &o,
                1,
                &format!(
                    "{}: permission denied (uid {NOBODY} may not read it",
                    p(&denied)
                ),
            );
            assert!(
                o.stderr
                    .contains("run as its owner or a member of its group"),
                "{o:?}"
            );
        }
    }
    let o = as_nobody(&exe, &["audit", p(&closed_bus)]);
    assert_one_sentence(&o, 1, &format!("{}: permission denied", p(&closed_bus)));
    // A router whose bus would be created where this user may not write.
    let o = as_nobody(&exe, &["router", "--bus", p(&private.join("bus"))]);
    assert_one_sentence(&o, 1, "permission denied");
    assert!(o.stderr.contains("run as "), "{o:?}");

    // A bus this user may read with one queue it may not: doctor reports that queue instead
    // of skipping it, metrics reports it down.
    let open_bus = bus(&t.join("open"));
    for d in [t.join("open"), open_bus.clone(), open_bus.join("feeds")] {
        chmod(&d, 0o755);
    }
    chmod(&open_bus.join("router"), 0o755);
    chmod(&open_bus.join("strategies"), 0o755);
    let feed = open_bus.join("feeds/md");
    chmod(&feed, 0o700);
    let o = as_nobody(&exe, &["doctor", p(&open_bus)]);
    assert_eq!(o.code, 1, "{o:?}");
    assert!(
        o.stdout.contains(&format!(
            "{}: permission denied: this user may not read it, so the queue was not checked; fix: run chron-cli doctor as the queue's owner",
            p(&feed)
        )),
        "{o:?}"
    );
    let o = as_nobody(&exe, &["metrics", "--once", p(&open_bus)]);
    assert_eq!(o.code, 0, "{o:?}");
    let series = format!(
        "chronicle_queue_up{{bus=\"{}\",queue=\"feeds/md\"}}",
        p(&open_bus)
    );
    assert_eq!(value(&o.stdout, &series).as_deref(), Some("0"), "{o:?}");
}
