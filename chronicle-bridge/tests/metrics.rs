//! `--metrics-listen`: both bridges serve their counters in the Prometheus text format while
//! they run, and the numbers match what was transferred; a taken address fails the start.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

mod common;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::time::{Duration, Instant};

use chronicle_core::QueueWriter;
use common::args::{FAIL_DEADLINE, in_args, out_args, p};
use common::{
    Bridge, NatsServer, TRANSFER_DEADLINE, free_port, hosts, nats_server_bin, run_bridge,
    verify_arrival, write_records, writer_config,
};

/// The body of `GET /metrics` on 127.0.0.1:`port`, or None while nothing answers.
fn scrape(port: u16) -> Option<String> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(b"GET /metrics HTTP/1.0\r\n\r\n").ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    let (head, body) = out.split_once("\r\n\r\n")?;
    head.starts_with("HTTP/1.1 200 ").then(|| body.to_string())
}

/// The value of the sample `name{direction="..",queue=".."}`.
fn sample(m: &str, name: &str, direction: &str, queue: &str) -> Option<u64> {
    let series = format!("{name}{{direction=\"{direction}\",queue=\"{queue}\"}} ");
    m.lines()
        .find_map(|l| l.strip_prefix(&series))
        .and_then(|v| v.parse().ok())
}

#[test]
fn both_bridges_serve_their_counters() {
    let Some(bin) = nats_server_bin() else { return };
    let h = hosts();
    let server = NatsServer::single(&bin, &h.root, &[]);
    let n = 2_000;
    let mut w = QueueWriter::open(&h.a, writer_config()).unwrap();
    write_records(&mut w, 0, n, 0);
    let (oport, iport) = (free_port(), free_port());
    let mut out = Bridge::new(
        &out_args(
            &server.url(),
            &h.a,
            &["--metrics-listen", &format!("127.0.0.1:{oport}")],
        ),
        h.root.join("out.log"),
    );
    let mut inb = Bridge::new(
        &in_args(
            &server.url(),
            &h.b,
            &["--metrics-listen", &format!("127.0.0.1:{iport}")],
        ),
        h.root.join("in.log"),
    );
    out.start();
    inb.start();
    let (olog, ilog) = (out.log.clone(), inb.log.clone());
    let diag = || {
        format!(
            "--- out\n{}\n--- in\n{}\n--- nats\n{}",
            common::tail(&olog, 40),
            common::tail(&ilog, 40),
            server.log_tail()
        )
    };
    verify_arrival(&h.b, n, TRANSFER_DEADLINE, &diag);
    // Everything arrived; the endpoints catch up within the out-bridge's 1 s lag refresh.
    let (qa, qb) = (p(&h.a), p(&h.b));
    let deadline = Instant::now() + TRANSFER_DEADLINE;
    let (mo, mi) = loop {
        let (mo, mi) = (scrape(oport), scrape(iport));
        if let (Some(mo), Some(mi)) = (&mo, &mi) {
            let out_done = sample(mo, "chronicle_bridge_done_records_total", "out", &qa);
            let out_lag = sample(mo, "chronicle_bridge_lag_records", "out", &qa);
            let in_done = sample(mi, "chronicle_bridge_done_records_total", "in", &qb);
            if out_done == Some(n) && out_lag == Some(0) && in_done == Some(n) {
                break (mo.clone(), mi.clone());
            }
        }
        assert!(
            Instant::now() < deadline,
            "metrics never showed {n} records done and no lag:\nout: {mo:?}\nin: {mi:?}\n{}",
            diag()
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    let get = |m: &str, name: &str, d: &str, q: &str| {
        sample(m, name, d, q).unwrap_or_else(|| panic!("no {name} for {d} in\n{m}"))
    };
    assert_eq!(get(&mo, "chronicle_bridge_position_records", "out", &qa), n);
    assert_eq!(
        get(&mo, "chronicle_bridge_in_flight_messages", "out", &qa),
        0
    );
    // Messages, not records: a batch envelope carries several.
    let sent = get(&mo, "chronicle_bridge_sent_messages_total", "out", &qa);
    assert!((1..=n).contains(&sent), "{sent} messages for {n} records");
    assert_eq!(get(&mo, "chronicle_bridge_lag_seconds", "out", &qa), 0);
    assert_eq!(
        get(&mo, "chronicle_bridge_connections_total", "out", &qa),
        1
    );
    assert_eq!(get(&mi, "chronicle_bridge_position_records", "in", &qb), n);
    assert_eq!(
        get(&mi, "chronicle_bridge_lost_records_total", "in", &qb),
        0
    );
    assert_eq!(get(&mi, "chronicle_bridge_errors_total", "in", &qb), 0);
    assert!(mo.contains("# TYPE chronicle_bridge_done_records_total counter\n"));
    // Prometheus's own parser and linter, where installed (CI installs it for chronicle-cli).
    if let Some(promtool) = ["/usr/bin/promtool", "/usr/local/bin/promtool"]
        .iter()
        .map(std::path::Path::new)
        .find(|p| p.is_file())
    {
        for m in [&mo, &mi] {
            let mut c = std::process::Command::new(promtool)
                .args(["check", "metrics"])
                .stdin(std::process::Stdio::piped())
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap();
            c.stdin.take().unwrap().write_all(m.as_bytes()).unwrap();
            let o = c.wait_with_output().unwrap();
            assert!(
                o.status.success() && o.stdout.is_empty() && o.stderr.is_empty(),
                "promtool: {o:?}\n{m}"
            );
        }
    }
    let st_out = out.terminate();
    let st_in = inb.terminate();
    assert!(
        st_out.is_some_and(|s| s.success()) && st_in.is_some_and(|s| s.success()),
        "{st_out:?} {st_in:?}\n{}",
        diag()
    );
    w.close().unwrap();
}

#[test]
fn a_taken_metrics_address_fails_the_start() {
    let h = hosts();
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    // No server is needed: the endpoint is bound before connecting.
    let args = out_args(
        "nats://127.0.0.1:1",
        &h.a,
        &["--metrics-listen", addr.as_str()],
    );
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let (code, log) = run_bridge(&args, &[], FAIL_DEADLINE);
    assert_ne!(code, 0, "{log}");
    assert!(
        log.contains(&format!("cannot listen for metrics on \"{addr}\"")),
        "{log}"
    );
}
