//! `append` and `tail` against real queues: golden output, byte-exact round trips, start
//! positions, `-f` following (new records, Ctrl-C, writer close and death), and error handling.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

mod common;

use std::io::{BufRead, BufReader};
use std::process::Stdio;
use std::sync::mpsc;

use chronicle_core::QueueWriter;
use common::*;

/// `append` into a new queue at `q` (64 KiB segments) with `extra` arguments, fed `input`.
fn append_new(q: &std::path::Path, extra: &[&str], input: &[u8]) -> Out {
    let mut args = vec!["append", p(q), "--create", "--segment-size", "64K"];
    args.extend_from_slice(extra);
    run(&args, input)
}

#[test]
fn tail_text_and_json_golden() {
    let (_tmp, q) = temp_queue(4);
    let o = run(&["tail", p(&q)], b"");
    assert_eq!(o.code, 0, "{o:?}");
    assert_eq!(
        o.stdout,
        "0 2023-11-14T22:13:20.000000000Z type=0 len=5 rec-0\n\
         1 2023-11-14T22:13:20.001000000Z type=1 len=5 rec-1\n\
         2 2023-11-14T22:13:20.002000000Z type=2 len=5 rec-2\n\
         3 2023-11-14T22:13:20.003000000Z type=0 len=5 rec-3\n"
    );
    let o = run(&["tail", p(&q), "--format", "json", "-n", "2"], b"");
    assert_eq!(o.code, 0, "{o:?}");
    assert_eq!(
        o.stdout,
        "{\"seq\":0,\"timestamp_ns\":1700000000000000000,\"type\":0,\"len\":5,\"payload_hex\":\"7265632d30\"}\n\
         {\"seq\":1,\"timestamp_ns\":1700000000001000000,\"type\":1,\"len\":5,\"payload_hex\":\"7265632d31\"}\n"
    );
    let o = run(
        &["tail", p(&q), "--format", "hex", "--from", "end", "-n", "1"],
        b"",
    );
    assert_eq!(
        o.stdout,
        "3 2023-11-14T22:13:20.003000000Z type=0 len=5 7265632d33\n"
    );
}

#[test]
fn tail_start_positions() {
    let (_tmp, q) = temp_queue(10);
    let seqs = |args: &[&str]| -> Vec<u64> {
        let mut a = vec!["tail", p(&q), "--json"];
        a.extend_from_slice(args);
        let o = run(&a, b"");
        assert_eq!(o.code, 0, "{o:?}");
        o.stdout
            .lines()
            .map(|l| {
                serde_json::from_str::<serde_json::Value>(l).unwrap()["seq"]
                    .as_u64()
                    .unwrap()
            })
            .collect()
    };
    assert_eq!(seqs(&["--from", "seq:7"]), vec![7, 8, 9]);
    assert_eq!(seqs(&["--from", "seq:2", "-n", "2"]), vec![2, 3]);
    assert_eq!(seqs(&["--from", "end"]), Vec::<u64>::new());
    assert_eq!(seqs(&["--from", "end", "-n", "3"]), vec![7, 8, 9]);
    assert_eq!(
        seqs(&["--from", "end", "-n", "50"]),
        (0..10).collect::<Vec<_>>()
    );
    assert_eq!(
        seqs(&["--from", "time:2023-11-14T22:13:20.005Z"]),
        vec![5, 6, 7, 8, 9]
    );
    assert_eq!(
        seqs(&["--from", "time:2023-11-14T23:13:20.0055+01:00"]),
        vec![6, 7, 8, 9]
    );
    let o = run(&["tail", p(&q), "--from", "seq:99"], b"");
    assert_one_sentence(&o, 1, "has not been written yet");
}

#[test]
fn append_then_tail_round_trips_bytes_exactly() {
    let (tmp, q) = temp_queue_path();
    // Binary payloads through hex: every byte value, empty, newlines.
    let payloads: Vec<Vec<u8>> = vec![
        (0u8..=255).collect(),
        Vec::new(),
        b"line\nbreak\r\n".to_vec(),
        vec![0; 1000],
    ];
    let input: String = payloads
        .iter()
        .map(|p| format!("{}\n", chronicle_hex(p)))
        .collect();
    let o = append_new(
        &q,
        &["--format", "hex", "--type", "9", "--print-seq"],
        input.as_bytes(),
    );
    assert_eq!(o.code, 0, "{o:?}");
    assert_eq!(o.stdout, "0\n1\n2\n3\n");
    let o = run(&["tail", p(&q), "--format", "json"], b"");
    let got: Vec<serde_json::Value> = o
        .stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(got.len(), payloads.len());
    for (g, want) in got.iter().zip(&payloads) {
        assert_eq!(g["payload_hex"].as_str().unwrap(), chronicle_hex(want));
        assert_eq!(g["len"].as_u64().unwrap(), want.len() as u64);
        assert_eq!(g["type"].as_u64().unwrap(), 9);
    }
    // tail's JSON lines feed append as they are: a copy keeps seq, type, time and payload.
    let copy = tmp.path().join("copy");
    let o2 = append_new(&copy, &["--format", "json", "--json"], o.stdout.as_bytes());
    assert_eq!(o2.code, 0, "{o2:?}");
    let summary: serde_json::Value = serde_json::from_str(o2.stdout.trim()).unwrap();
    assert_eq!(summary["appended"], 4);
    assert_eq!(summary["last_seq"], 3);
    let o3 = run(&["tail", p(&copy), "--format", "json"], b"");
    assert_eq!(o3.stdout, o.stdout);
    // Text lines: payload is the line without its newline, bytes kept as they are.
    let t = tmp.path().join("t");
    let o = append_new(&t, &[], b"caf\xc3\xa9 \\ ok\n\nlast");
    assert_eq!(o.code, 0, "{o:?}");
    let o = run(&["tail", p(&t), "--format", "hex"], b"");
    let hexes: Vec<&str> = o
        .stdout
        .lines()
        .map(|l| l.split(' ').nth(4).unwrap_or(""))
        .collect();
    assert_eq!(
        hexes,
        vec![
            chronicle_hex(b"caf\xc3\xa9 \\ ok"),
            String::new(),
            chronicle_hex(b"last")
        ]
    );
}

fn chronicle_hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

#[test]
fn errors_are_one_sentence_with_exit_codes() {
    let tmp = tempfile::tempdir().unwrap();
    let missing = tmp.path().join("missing");
    assert_one_sentence(&run(&["tail", p(&missing)], b""), 1, p(&missing));
    assert_one_sentence(&run(&["inspect", p(&missing)], b""), 1, p(&missing));
    // A directory that is not a queue.
    assert_one_sentence(
        &run(&["tail", p(tmp.path())], b""),
        1,
        "is not a chronicle queue",
    );
    // append without --create refuses to make a queue.
    assert_one_sentence(&run(&["append", p(&missing)], b"x\n"), 1, "--create");
    assert!(!missing.exists());
    // Bad input names its line; earlier lines are kept.
    let q = tmp.path().join("q");
    let o = append_new(&q, &["--format", "hex"], b"00\n0g\n");
    assert_one_sentence(&o, 1, "stdin line 2");
    assert_eq!(run(&["tail", p(&q)], b"").stdout.lines().count(), 1);
    let o = run(&["append", p(&q), "--format", "json"], b"{\"type\":1}\n");
    assert_one_sentence(&o, 1, "payload_hex");
    // A corrupt queue.meta.
    std::fs::write(q.join("queue.meta"), b"short").unwrap();
    assert_one_sentence(&run(&["tail", p(&q)], b""), 1, "truncated");
    // Usage errors exit 2.
    assert_eq!(run(&["tail"], b"").code, 2);
    assert_eq!(run(&["tail", p(&q), "--from", "yesterday"], b"").code, 2);
    assert_eq!(run(&["frobnicate"], b"").code, 2);
}

/// Spawns `tail -f --json` and returns the child and a channel of its stdout lines.
fn follow(q: &std::path::Path) -> (std::process::Child, mpsc::Receiver<String>) {
    let mut child = bin()
        .args(["tail", p(q), "-f", "--json"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let so = child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(so).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    (child, rx)
}

fn next_seq(rx: &mpsc::Receiver<String>) -> u64 {
    let line = rx
        .recv_timeout(WATCHDOG)
        .expect("tail -f printed nothing in time");
    serde_json::from_str::<serde_json::Value>(&line).unwrap()["seq"]
        .as_u64()
        .unwrap()
}

fn stderr_of(child: &mut std::process::Child) -> String {
    let mut s = String::new();
    use std::io::Read;
    child.stderr.take().unwrap().read_to_string(&mut s).unwrap();
    s
}

/// A queue whose open writer has appended one record (type 1, `payload`), and a `tail -f` on
/// it that has printed that record: it is running and caught up.
fn writer_and_follower(
    payload: &[u8],
) -> (
    tempfile::TempDir,
    QueueWriter,
    std::process::Child,
    mpsc::Receiver<String>,
) {
    let (tmp, q) = temp_queue_path();
    let mut w = QueueWriter::open(&q, small()).unwrap();
    w.append(1, payload).unwrap();
    let (child, rx) = follow(&q);
    assert_eq!(next_seq(&rx), 0);
    (tmp, w, child, rx)
}

#[test]
fn tail_follow_sees_new_records_and_stops_on_sigint() {
    let (_tmp, mut w, mut child, rx) = writer_and_follower(b"before");
    for i in 0..3u32 {
        w.append(2, &i.to_le_bytes()).unwrap();
    }
    assert_eq!([next_seq(&rx), next_seq(&rx), next_seq(&rx)], [1, 2, 3]);
    // SAFETY: sending a signal to our own child process.
    unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGINT) };
    let st = wait(&mut child);
    assert_eq!(st.code(), Some(0), "{}", stderr_of(&mut child));
    w.close().unwrap();
}

#[test]
fn tail_follow_stops_when_the_writer_closes() {
    let (_tmp, mut w, mut child, rx) = writer_and_follower(b"a");
    w.append(1, b"b").unwrap();
    w.close().unwrap();
    assert_eq!(next_seq(&rx), 1);
    let st = wait(&mut child);
    let err = stderr_of(&mut child);
    assert_eq!(st.code(), Some(0), "{err}");
    assert!(err.contains("closed it; stopped at seq 2"), "{err}");
}

#[test]
fn tail_follow_reports_writer_death() {
    let (_tmp, q) = temp_queue(1);
    // A writer in another process: `append` holds the queue open while stdin is open.
    let mut writer = spawn_append(&q, &[], Stdio::null(), b"from-writer\n");
    let (mut child, rx) = follow(&q);
    assert_eq!(next_seq(&rx), 0);
    assert_eq!(next_seq(&rx), 1); // the writer's record: it is alive and committing
    writer.kill().unwrap();
    writer.wait().unwrap();
    let st = wait(&mut child);
    let err = stderr_of(&mut child);
    assert_eq!(st.code(), Some(1), "{err}");
    assert!(err.contains("died without closing it"), "{err}");
    assert!(!err.contains("panicked"), "{err}");
}
