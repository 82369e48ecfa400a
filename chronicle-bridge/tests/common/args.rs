//! Command lines and small helpers shared by the bridge test files that run `chron-bridge`
//! against one server (`tls.rs`, `jwt.rs`).

use std::path::Path;
use std::time::Duration;

use chronicle_core::QueueWriter;

use super::{Bridge, NatsServer, count_records, run_bridge, writer_config};

pub const STREAM: &str = "CHRON";
pub const SUBJECT: &str = "chron.hostA.feed";
/// Bound on a bridge run that is expected to fail at start; a hang fails the test.
pub const FAIL_DEADLINE: Duration = Duration::from_secs(60);

pub fn p(path: &Path) -> String {
    path.display().to_string()
}

pub fn strings(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

/// Options both directions take here: create the stream, a stats line every second, quick
/// reconnects and request timeouts.
const SHARED_OPTIONS: [&str; 7] = [
    "--create-stream",
    "--stats-interval",
    "1",
    "--reconnect-max-ms",
    "500",
    "--timeout-ms",
    "2000",
];

pub fn out_args<S: AsRef<str>>(url: &str, queue: &Path, extra: &[S]) -> Vec<String> {
    let mut v = strings(&[
        "out",
        "--url",
        url,
        "--queue",
        &p(queue),
        "--stream",
        STREAM,
        "--subject",
        SUBJECT,
        "--host-id",
        "hostA",
    ]);
    v.extend(strings(&SHARED_OPTIONS));
    v.extend(extra.iter().map(|e| e.as_ref().to_string()));
    v
}

pub fn in_args<S: AsRef<str>>(url: &str, queue: &Path, extra: &[S]) -> Vec<String> {
    let mut v = strings(&[
        "in",
        "--url",
        url,
        "--stream",
        STREAM,
        "--consumer",
        "hostB",
        "--subject",
        SUBJECT,
        "--queue",
        &p(queue),
        "--segment-size",
        &super::SEGMENT.to_string(),
    ]);
    v.extend(strings(&SHARED_OPTIONS));
    v.extend(extra.iter().map(|e| e.as_ref().to_string()));
    v
}

/// Runs a bridge that is expected to stop by itself; returns (exit code, stderr).
pub fn run(args: &[String], envs: &[(&str, &str)]) -> (i32, String) {
    let a: Vec<&str> = args.iter().map(String::as_str).collect();
    let (code, err) = run_bridge(&a, envs, FAIL_DEADLINE);
    // Shown with --nocapture: what an operator would read.
    eprintln!("exit {code}: {}", err.trim_end());
    (code, err)
}

pub fn diag(out: &Bridge, inb: &Bridge, server: &NatsServer) -> String {
    format!(
        "--- out-bridge log (tail)\n{}\n--- in-bridge log (tail)\n{}\n--- nats-server log (tail)\n{}",
        super::tail(&out.log, 40),
        super::tail(&inb.log, 40),
        server.log_tail()
    )
}

/// An empty queue whose writer has closed (an out-bridge with --exit-at-end finishes at once
/// once connected).
pub fn closed_empty_queue(q: &Path) {
    QueueWriter::open(q, writer_config())
        .unwrap()
        .close()
        .unwrap();
}

/// The end of a transfer: the out-bridge (run with `--exit-at-end`) exits by itself and
/// successfully, the in-bridge stops cleanly on SIGTERM, and queue `b` holds exactly `n` records.
pub fn finish_transfer(out: &mut Bridge, inb: &mut Bridge, server: &NatsServer, b: &Path, n: u64) {
    let st = out.wait_exit(Duration::from_secs(60));
    assert!(
        st.is_some_and(|st| st.success()),
        "out-bridge with --exit-at-end: {st:?}\n{}",
        diag(out, inb, server)
    );
    let st = inb.terminate();
    assert!(
        st.is_some_and(|st| st.success()),
        "in-bridge exit: {st:?}\n{}",
        diag(out, inb, server)
    );
    assert_eq!(count_records(b), n);
}
