//! End-to-end tests of `chron-bridge` against real `nats-server` processes: two queue
//! directories stand for two hosts; records go out of host A's queue through JetStream into
//! host B's queue. Bridges are real processes, SIGKILLed and restarted; servers are restarted
//! and cluster nodes killed mid-stream. Every test checks that B ends up holding exactly A's
//! records, byte for byte, in order, with their type ids and timestamps.
//!
//! Sizes: `CHRONICLE_BRIDGE_RECORDS` (default 100000) for the plain transfer,
//! `CHRONICLE_BRIDGE_FAULT_RECORDS` (default 20000) for the fault tests,
//! `CHRONICLE_BRIDGE_KILLS` (default 6) kills per bridge in the SIGKILL test.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

mod common;

use std::path::Path;
use std::time::Duration;

use chronicle_core::QueueWriter;
use common::args::{STREAM, SUBJECT, out_args};
use common::{
    Bridge, Hosts, Mode, NatsServer, Rng, TRANSFER_DEADLINE, count_records, env_u64, hosts,
    nats_server_bin, run_bridge, spawn_writer, verify_arrival, write_records, writer_config,
};

/// The in-bridge's command line here: the shared one with a short acknowledgement wait, so
/// redeliveries after a kill come quickly.
fn in_args(url: &str, queue: &Path, extra: &[&str]) -> Vec<String> {
    let mut v = common::args::in_args(url, queue, &["--ack-wait", "5"]);
    v.extend(extra.iter().map(|e| e.to_string()));
    v
}

/// The out-bridge from host A's queue and the in-bridge into host B's, both against `url`,
/// logging to `out.log` and `in.log` under the hosts' root; not started.
fn bridge_pair(h: &Hosts, url: &str, out_extra: &[String], in_extra: &[&str]) -> (Bridge, Bridge) {
    let out = Bridge::new(&out_args(url, &h.a, out_extra), h.root.join("out.log"));
    let inb = Bridge::new(&in_args(url, &h.b, in_extra), h.root.join("in.log"));
    (out, inb)
}

fn diag(out: &Bridge, inb: &Bridge, servers: &[&NatsServer]) -> String {
    let mut s = format!(
        "--- out-bridge log (tail)\n{}\n--- in-bridge log (tail)\n{}",
        common::tail(&out.log, 40),
        common::tail(&inb.log, 40)
    );
    for srv in servers {
        s.push_str(&format!(
            "\n--- nats-server {} log (tail)\n{}",
            srv.name,
            srv.log_tail()
        ));
    }
    s
}

/// Stops both bridges cleanly and checks that B holds exactly `n` records.
fn finish(out: &mut Bridge, inb: &mut Bridge, b: &Path, n: u64, servers: &[&NatsServer]) {
    let st_out = out.terminate();
    let st_in = inb.terminate();
    // Shown with --nocapture: what the bridges went through.
    eprintln!("{}", diag(out, inb, &[]));
    let got = count_records(b);
    assert_eq!(
        got,
        n,
        "B holds {got} records, expected exactly {n}\n{}",
        diag(out, inb, servers)
    );
    assert!(
        st_out.is_some_and(|s| s.success()) && st_in.is_some_and(|s| s.success()),
        "bridges did not exit cleanly on SIGTERM: out {st_out:?}, in {st_in:?}\n{}",
        diag(out, inb, servers)
    );
}

/// Stops the in-bridge (SIGTERM), checks that it exits cleanly, and returns its log.
fn stop_in(inb: &mut Bridge) -> String {
    let st = inb.terminate();
    assert!(st.is_some_and(|s| s.success()), "in-bridge exit: {st:?}");
    inb.log_text()
}

/// The hosts, one server and a runtime to publish with, for the scenarios of an in-bridge on
/// its own; None without `nats-server`.
fn alone_setup() -> Option<(Hosts, NatsServer, tokio::runtime::Runtime)> {
    let bin = nats_server_bin()?;
    let h = hosts();
    let server = NatsServer::single(&bin, &h.root, &[]);
    Some((h, server, runtime()))
}

/// Starts an in-bridge into host B's queue on its own, with `extra` options: the test publishes
/// what an out-bridge would.
fn in_alone(h: &Hosts, server: &NatsServer, extra: &[&str]) -> Bridge {
    let mut inb = Bridge::new(&in_args(&server.url(), &h.b, extra), h.root.join("in.log"));
    inb.start();
    inb
}

/// [`diag`] of an in-bridge on its own (no out-bridge log).
fn diag_alone(h: &Hosts, inb: &Bridge, server: &NatsServer) -> String {
    let no_out = Bridge::new(&[], h.root.join("none.log"));
    diag(&no_out, inb, &[server])
}

/// Waits until host B's queue holds records 0..n, brought by an in-bridge on its own.
fn arrival_alone(h: &Hosts, inb: &Bridge, server: &NatsServer, n: u64) {
    verify_arrival(&h.b, n, TRANSFER_DEADLINE, &|| diag_alone(h, inb, server));
}

both_modes!(
    transfers_records_byte_identical_in_order,
    sigkilled_bridges_restart_without_loss_or_duplicates,
    nats_server_restart_mid_stream_loses_nothing,
    cluster_node_loss_with_three_replicas_loses_nothing,
);

fn transfers_records_byte_identical_in_order(mode: Mode) {
    let Some(bin) = nats_server_bin() else { return };
    let h = hosts();
    let server = NatsServer::single(&bin, &h.root, &[]);
    let n = env_u64("CHRONICLE_BRIDGE_RECORDS", 100_000);

    // Half the records exist before the bridges start, half are written while they run.
    let mut w = QueueWriter::open(&h.a, writer_config()).unwrap();
    write_records(&mut w, 0, n / 2, 0);
    let (mut out, mut inb) = bridge_pair(
        &h,
        &server.url(),
        // Batched, the envelopes are also LZ4-compressed here (where that makes them smaller).
        &mode.with(if mode == Mode::Batched {
            &["--exit-at-end", "--compress", "lz4"]
        } else {
            &["--exit-at-end"]
        }),
        // --sync-batches: the durable path (fdatasync of the state, msync of the records).
        &["--stats-json", "--sync-batches"],
    );
    out.start();
    inb.start();
    let writer = spawn_writer(w, n / 2, n, 50);
    verify_arrival(&h.b, n, TRANSFER_DEADLINE, &|| diag(&out, &inb, &[&server]));
    writer.join().unwrap();
    // The writer closed and everything is acknowledged: --exit-at-end stops the out-bridge.
    let st = out.wait_exit(Duration::from_secs(60));
    assert!(
        st.is_some_and(|s| s.success()),
        "out-bridge with --exit-at-end: {st:?}\n{}",
        diag(&out, &inb, &[&server])
    );
    let log = stop_in(&mut inb);
    assert_eq!(count_records(&h.b), n);
    // The in-bridge's last JSON stats line accounts for every record.
    let last = common::last_json_line(&log);
    assert_eq!(last["direction"], "in", "{last}");
    assert_eq!(last["done"], n, "{last}");
    assert_eq!(last["position"], n, "{last}");
    assert_eq!(last["lag"], 0, "{last}");
    // A restarted out-bridge resumes after the last acknowledged record: nothing to send.
    out.start();
    let st = out.wait_exit(Duration::from_secs(60));
    assert!(
        st.is_some_and(|s| s.success()),
        "restarted out-bridge: {st:?}"
    );
    let log = out.log_text();
    assert!(log.contains(&format!("from seq {n} ")), "{log}");
}

fn sigkilled_bridges_restart_without_loss_or_duplicates(mode: Mode) {
    let Some(bin) = nats_server_bin() else { return };
    let h = hosts();
    let server = NatsServer::single(&bin, &h.root, &[]);
    let n = env_u64("CHRONICLE_BRIDGE_FAULT_RECORDS", 20_000);
    let kills = env_u64("CHRONICLE_BRIDGE_KILLS", 6);
    let mut rng = Rng::from_env();

    let w = QueueWriter::open(&h.a, writer_config()).unwrap();
    let (mut out, mut inb) = bridge_pair(&h, &server.url(), &mode.with(&["--window", "512"]), &[]);
    out.start();
    inb.start();
    // Paced so that kills land while records are flowing.
    let writer = spawn_writer(w, 0, n, 4);
    for round in 0..kills * 2 {
        std::thread::sleep(Duration::from_millis(rng.range(150, 700)));
        let which = rng.range(0, 3);
        eprintln!(
            "round {round}: SIGKILL {} ({} records in B so far)",
            ["out-bridge", "in-bridge", "both bridges"][which as usize],
            if h.b.join("queue.meta").exists() {
                count_records(&h.b)
            } else {
                0
            }
        );
        if which != 1 {
            out.kill9();
        }
        if which != 0 {
            inb.kill9();
        }
        std::thread::sleep(Duration::from_millis(rng.range(0, 300)));
        if which != 1 {
            out.start();
        }
        if which != 0 {
            inb.start();
        }
    }
    writer.join().unwrap();
    verify_arrival(&h.b, n, TRANSFER_DEADLINE, &|| diag(&out, &inb, &[&server]));
    finish(&mut out, &mut inb, &h.b, n, &[&server]);
}

fn nats_server_restart_mid_stream_loses_nothing(mode: Mode) {
    let Some(bin) = nats_server_bin() else { return };
    let h = hosts();
    let mut server = NatsServer::single(&bin, &h.root, &[]);
    let n = env_u64("CHRONICLE_BRIDGE_FAULT_RECORDS", 20_000);

    let w = QueueWriter::open(&h.a, writer_config()).unwrap();
    let (mut out, mut inb) = bridge_pair(&h, &server.url(), &mode.with(&[]), &[]);
    out.start();
    inb.start();
    let writer = spawn_writer(w, 0, n, 4);
    for _ in 0..2 {
        std::thread::sleep(Duration::from_millis(1200));
        eprintln!(
            "SIGKILL nats-server ({} records in B so far)",
            if h.b.join("queue.meta").exists() {
                count_records(&h.b)
            } else {
                0
            }
        );
        server.kill();
        std::thread::sleep(Duration::from_millis(800));
        server.start();
    }
    writer.join().unwrap();
    verify_arrival(&h.b, n, TRANSFER_DEADLINE, &|| diag(&out, &inb, &[&server]));
    let log = out.log_text();
    assert!(
        log.contains("disconnected"),
        "the out-bridge never noticed the restart:\n{log}"
    );
    finish(&mut out, &mut inb, &h.b, n, &[&server]);
}

/// A single-threaded runtime for the tests' own NATS client calls.
fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// The name of the stream's current leader, asked through `url`.
fn stream_leader(url: &str) -> Option<String> {
    let rt = runtime();
    rt.block_on(async {
        let client = async_nats::connect(url).await.ok()?;
        let js = async_nats::jetstream::new(client);
        let mut s = js.get_stream(STREAM).await.ok()?;
        let info = s.info().await.ok()?;
        info.cluster.as_ref().and_then(|c| c.leader.clone())
    })
}

/// Waits until the cluster's JetStream answers API requests (a meta leader is elected).
fn wait_jetstream_ready(url: &str) {
    let rt = runtime();
    let end = std::time::Instant::now() + Duration::from_secs(60);
    rt.block_on(async {
        loop {
            if let Ok(client) = async_nats::connect(url).await {
                // A "stream not found" answer means the JetStream API is up.
                let js = async_nats::jetstream::new(client);
                match js.get_stream("NO_SUCH_STREAM").await {
                    Err(e) if e.to_string().contains("not found") => return,
                    Err(e) => eprintln!("JetStream not ready yet: {e}"),
                    Ok(_) => return,
                }
            }
            assert!(
                std::time::Instant::now() < end,
                "JetStream cluster not ready within 60 s"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    });
}

fn cluster_node_loss_with_three_replicas_loses_nothing(mode: Mode) {
    let Some(bin) = nats_server_bin() else { return };
    let h = hosts();
    let mut nodes = NatsServer::cluster(&bin, &h.root);
    let urls = nodes.iter().map(|s| s.url()).collect::<Vec<_>>().join(",");
    wait_jetstream_ready(&nodes[0].url());
    let n = env_u64("CHRONICLE_BRIDGE_FAULT_RECORDS", 20_000);

    let w = QueueWriter::open(&h.a, writer_config()).unwrap();
    let mut out = Bridge::new(
        &out_args(&urls, &h.a, &mode.with(&["--replicas", "3"])),
        h.root.join("out.log"),
    );
    out.start();
    // The in-bridge starts once the out-bridge has created the stream (R3).
    let end = std::time::Instant::now() + Duration::from_secs(60);
    while stream_leader(&nodes[0].url()).is_none() {
        assert!(
            std::time::Instant::now() < end,
            "stream never got a leader\n{}",
            common::tail(&out.log, 40)
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let mut inb = Bridge::new(
        &in_args(&urls, &h.b, &["--replicas", "3"]),
        h.root.join("in.log"),
    );
    inb.start();
    let writer = spawn_writer(w, 0, n, 4);
    std::thread::sleep(Duration::from_millis(1500));
    // Kill the node that leads the stream: the hardest one to lose.
    let leader = stream_leader(&nodes[0].url()).unwrap_or_else(|| "n0".to_string());
    let victim = nodes.iter().position(|s| s.name == leader).unwrap_or(0);
    eprintln!(
        "SIGKILL cluster node {} (stream leader {leader}); {} records in B so far",
        nodes[victim].name,
        if h.b.join("queue.meta").exists() {
            count_records(&h.b)
        } else {
            0
        }
    );
    nodes[victim].kill();
    writer.join().unwrap();
    let refs: Vec<&NatsServer> = nodes.iter().collect();
    verify_arrival(&h.b, n, TRANSFER_DEADLINE, &|| diag(&out, &inb, &refs));
    finish(&mut out, &mut inb, &h.b, n, &refs);
}

#[test]
fn clear_errors_for_bad_url_missing_stream_and_auth() {
    let Some(bin) = nats_server_bin() else { return };
    let h = hosts();
    let q = h.a.display().to_string();
    QueueWriter::open(&h.a, writer_config())
        .unwrap()
        .close()
        .unwrap();
    let deadline = Duration::from_secs(60);
    let out = |url: &str, extra: &[&str]| -> Vec<String> {
        let mut v: Vec<String> = [
            "out",
            "--url",
            url,
            "--queue",
            &q,
            "--stream",
            STREAM,
            "--subject",
            SUBJECT,
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        v.extend(extra.iter().map(|s| s.to_string()));
        v
    };
    let run = |args: &[String], env: &[(&str, &str)]| {
        let a: Vec<&str> = args.iter().map(String::as_str).collect();
        run_bridge(&a, env, deadline)
    };

    let (code, err) = run(&out("nats://127.0.0.1:notaport", &[]), &[]);
    assert_ne!(code, 0);
    assert!(err.contains("invalid NATS server URL"), "{err}");

    // Port 1: nothing listens there (a "free" port could be taken by a parallel test's server).
    let dead = "nats://127.0.0.1:1".to_string();
    let (code, err) = run(&out(&dead, &[]), &[]);
    assert_ne!(code, 0);
    assert!(err.contains("cannot connect to NATS"), "{err}");

    // Batching options out of range are refused before connecting.
    for (opt, val, says) in [
        ("--batch", "0", "--batch must be between 1 and 65536"),
        (
            "--batch-bytes",
            "100",
            "--batch-bytes must be between 1024 and 1048576",
        ),
        (
            "--linger-us",
            "5000000",
            "--linger-us must be at most 1000000",
        ),
    ] {
        let (code, err) = run(&out(&dead, &[opt, val]), &[]);
        assert_ne!(code, 0);
        assert!(err.contains(says), "{err}");
    }

    let server = NatsServer::single(&bin, &h.root, &["--user", "alice", "--pass", "s3cret"]);
    let (code, err) = run(
        &out(&server.url(), &[]),
        &[("NATS_USER", "alice"), ("NATS_PASSWORD", "wrong")],
    );
    assert_ne!(code, 0);
    assert!(err.contains("refused the credentials"), "{err}");

    // Right credentials: the connection succeeds and the missing stream is named.
    let (code, err) = run(
        &out(&server.url(), &[]),
        &[("NATS_USER", "alice"), ("NATS_PASSWORD", "s3cret")],
    );
    assert_ne!(code, 0);
    assert!(
        err.contains("stream \"CHRON\" does not exist") && err.contains("--create-stream"),
        "{err}"
    );

    let (code, err) = run(
        &out(&server.url(), &["--creds", "/nonexistent/user.creds"]),
        &[],
    );
    assert_ne!(code, 0);
    assert!(err.contains("cannot read credentials file"), "{err}");
    drop(server);

    // Token authentication, from NATS_TOKEN.
    let dir = tempfile::tempdir().unwrap();
    let server = NatsServer::single(&bin, dir.path(), &["--auth", "t0ken"]);
    let (code, err) = run(&out(&server.url(), &[]), &[("NATS_TOKEN", "wrong")]);
    assert_ne!(code, 0);
    assert!(err.contains("refused the credentials"), "{err}");
    // Right token: connects, creates the stream, publishes the (empty, closed) queue and exits.
    let (code, err) = run(
        &out(&server.url(), &["--create-stream", "--exit-at-end"]),
        &[("NATS_TOKEN", "t0ken")],
    );
    assert_eq!(code, 0, "{err}");
    // A --queue that is not a queue: says so and what --queue takes, once.
    let not_a_queue = h.root.join("not-a-queue");
    std::fs::create_dir_all(&not_a_queue).unwrap();
    let (code, err) = run(
        &out_args(&server.url(), &not_a_queue, &["--exit-at-end"]),
        &[("NATS_TOKEN", "t0ken")],
    );
    assert_ne!(code, 0);
    let last = err.lines().last().unwrap_or_default();
    assert!(
        last.starts_with("chron-bridge: error: open reader on queue ")
            && last.contains("is not a chronicle queue (no queue.meta) (--queue takes a queue directory, the one holding queue.meta)")
            && last.matches("is not a chronicle queue").count() == 1,
        "{err}"
    );
}

/// Local mistakes are reported before any network wait: a `--queue` that is not a queue, with
/// a URL where nothing listens, names the queue, not the connection.
#[test]
fn a_bad_queue_is_reported_before_connecting() {
    let h = hosts();
    std::fs::create_dir_all(&h.a).unwrap();
    let args = out_args("nats://127.0.0.1:1", &h.a, &[] as &[&str]);
    let a: Vec<&str> = args.iter().map(String::as_str).collect();
    let (code, err) = run_bridge(&a, &[], Duration::from_secs(60));
    assert_ne!(code, 0);
    assert!(
        err.contains("is not a chronicle queue (no queue.meta) (--queue takes a queue directory")
            && !err.contains("cannot connect"),
        "{err}"
    );
    let file = h.root.join("file");
    std::fs::write(&file, b"x").unwrap();
    let args = common::args::in_args("nats://127.0.0.1:1", &file, &[] as &[&str]);
    let a: Vec<&str> = args.iter().map(String::as_str).collect();
    let (code, err) = run_bridge(&a, &[], Duration::from_secs(60));
    assert_ne!(code, 0);
    assert!(
        err.contains("open writer on queue")
            && err.contains("(--queue takes a queue directory, not a file)")
            && !err.contains("cannot connect"),
        "{err}"
    );
}

/// `--log-format json`: every stderr line is a JSON object with timestamp, level, target and
/// fields, the final error included; `CHRONICLE_LOG` filters, but never hides the final error.
#[test]
fn json_logs_and_the_final_error_as_an_event() {
    let h = hosts();
    QueueWriter::open(&h.a, writer_config())
        .unwrap()
        .close()
        .unwrap();
    // Port 1: nothing listens there; the bridge fails to connect and exits.
    let args = out_args("nats://127.0.0.1:1", &h.a, &["--log-format", "json"]);
    let a: Vec<&str> = args.iter().map(String::as_str).collect();
    let (code, err) = run_bridge(&a, &[], Duration::from_secs(60));
    assert_ne!(code, 0, "{err}");
    let lines: Vec<serde_json::Value> = err
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l:?}\n{err}")))
        .collect();
    for v in &lines {
        assert!(v["timestamp"].is_string() && v["target"].is_string(), "{v}");
        assert!(v["fields"]["message"].is_string(), "{v}");
    }
    let last = lines.last().unwrap();
    assert_eq!(last["level"], "ERROR", "{err}");
    assert_eq!(last["fields"]["message"], "chron-bridge failed", "{err}");
    assert!(
        last["fields"]["error"]
            .as_str()
            .unwrap()
            .contains("cannot connect to NATS at nats://127.0.0.1:1"),
        "{err}"
    );
    // With every event filtered out, the final error is still said, as a plain line.
    let (code, err) = run_bridge(&a, &[("CHRONICLE_LOG", "off")], Duration::from_secs(60));
    assert_ne!(code, 0);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.starts_with("chron-bridge: error: cannot connect to NATS"),
        "{err}"
    );
}

/// Publishes source record `seq` of hostA/feed directly (as an out-bridge would), with an
/// optional message-id suffix so JetStream does not de-duplicate a deliberate re-send.
async fn publish_raw(js: &async_nats::jetstream::Context, seq: u64, id_suffix: &str) {
    let mut h = chronicle_bridge::headers::encode(
        "hostA",
        "feed",
        seq,
        common::timestamp(seq),
        common::type_id(seq),
    );
    h.insert(
        chronicle_bridge::headers::MSG_ID,
        format!("hostA/feed/{seq}{id_suffix}"),
    );
    js.publish_with_headers(SUBJECT, h, common::payload(seq).into())
        .await
        .unwrap()
        .await
        .unwrap();
}

#[test]
fn in_bridge_restores_source_order_skips_duplicates_and_reports_gaps() {
    let Some((h, server, rt)) = alone_setup() else {
        return;
    };
    let js = rt.block_on(async {
        let js = stream_on(&server.url()).await;
        // Out of source order (as after a publish lost in a failover and re-sent later), a
        // re-send outside the de-dup window, and a message that is not a bridged record.
        for seq in [0, 1, 3, 4] {
            publish_raw(&js, seq, "").await;
        }
        publish_raw(&js, 1, "-resent").await;
        js.publish(SUBJECT, "not a record".into())
            .await
            .unwrap()
            .await
            .unwrap();
        publish_raw(&js, 2, "").await;
        publish_raw(&js, 5, "").await;
        js
    });
    let mut inb = in_alone(&h, &server, &["--gap-timeout", "1"]);
    arrival_alone(&h, &inb, &server, 6);

    // A hole that is never filled: 6 is missing, 7 waits behind it until the gap timeout.
    rt.block_on(publish_raw(&js, 7, ""));
    let end = std::time::Instant::now() + Duration::from_secs(60);
    while count_records(&h.b) < 7 {
        assert!(
            std::time::Instant::now() < end,
            "record 7 was never released after the gap timeout\n{}",
            diag_alone(&h, &inb, &server)
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let log = stop_in(&mut inb);
    assert!(log.contains("not a bridged record"), "{log}");
    assert!(
        log.contains("records 6..7 did not arrive") && log.contains("lost=1"),
        "{log}"
    );
    assert!(log.contains("dup=1"), "the re-send was not counted:\n{log}");
    assert_eq!(count_records(&h.b), 7);
    assert_eq!(seqs_in(&h.b), vec![0, 1, 2, 3, 4, 5, 7]);
}

/// Publishes source records `seqs` of hostA/feed as one batch envelope, with message id
/// `hostA/feed/<first>-<last><id_suffix>`.
async fn publish_envelope(js: &async_nats::jetstream::Context, seqs: &[u64], id_suffix: &str) {
    publish_envelope_as(js, seqs, id_suffix, false).await;
}

async fn publish_envelope_as(
    js: &async_nats::jetstream::Context,
    seqs: &[u64],
    id_suffix: &str,
    lz4: bool,
) {
    use chronicle_bridge::{envelope, headers};
    let mut e = envelope::Encoder::new(4096);
    for &seq in seqs {
        assert!(e.push(
            seq,
            common::timestamp(seq),
            common::type_id(seq),
            &common::payload(seq)
        ));
    }
    let (first, last) = e.range();
    let mut h = headers::encode_batch("hostA", "feed", first, last);
    h.insert(
        headers::MSG_ID,
        format!("hostA/feed/{first}-{last}{id_suffix}"),
    );
    let body = if lz4 { e.finish_lz4() } else { e.finish() };
    if lz4 {
        assert_eq!(body[6], 1, "the test records did not compress");
    }
    js.publish_with_headers(SUBJECT, h, body)
        .await
        .unwrap()
        .await
        .unwrap();
}

/// Creates the test stream on `url` and returns a JetStream context on it.
async fn stream_on(url: &str) -> async_nats::jetstream::Context {
    let client = async_nats::connect(url).await.unwrap();
    let js = async_nats::jetstream::new(client);
    js.create_stream(async_nats::jetstream::stream::Config {
        name: STREAM.to_string(),
        subjects: vec![SUBJECT.to_string()],
        ..Default::default()
    })
    .await
    .unwrap();
    js
}

/// The source seqs found in queue `q`, in order (record payloads start with their seq).
fn seqs_in(q: &Path) -> Vec<u64> {
    let mut r =
        chronicle_core::QueueReader::open(q, chronicle_core::ReaderConfig::default()).unwrap();
    std::iter::from_fn(|| {
        r.next()
            .unwrap()
            .map(|m| u64::from_le_bytes(m.payload()[..8].try_into().unwrap()))
    })
    .collect()
}

#[test]
fn in_bridge_reads_envelopes_and_drops_overlapping_batches() {
    let Some((h, server, rt)) = alone_setup() else {
        return;
    };
    rt.block_on(async {
        let js = stream_on(&server.url()).await;
        publish_envelope(&js, &[0, 1, 2, 3], "").await;
        // Re-sent with other boundaries (an out-bridge restarted): 2 and 3 are already in.
        publish_envelope(&js, &[2, 3, 4, 5], "").await;
        // One record per message, mixed in.
        publish_raw(&js, 6, "").await;
        // Out of order: 9-10 (compressed) waits for 7-8.
        publish_envelope_as(&js, &[9, 10], "", true).await;
        // An envelope header on a body that is not an envelope.
        let mut bad = chronicle_bridge::headers::encode_batch("hostA", "feed", 7, 8);
        bad.insert(chronicle_bridge::headers::MSG_ID, "bad");
        // A whole header announcing two records, and no record.
        let body = bytes::Bytes::from_static(b"CHRB\x01\x00\x00\x00\x02\x00\x00\x00");
        js.publish_with_headers(SUBJECT, bad, body)
            .await
            .unwrap()
            .await
            .unwrap();
        publish_envelope(&js, &[7, 8], "").await;
        // Everything again, past the de-dup window (another id): all duplicates.
        publish_envelope(&js, &(0..=10).collect::<Vec<_>>(), "-resent").await;
    });
    let mut inb = in_alone(&h, &server, &[]);
    arrival_alone(&h, &inb, &server, 11);
    // Let the last (duplicate) message be handled, then stop.
    std::thread::sleep(Duration::from_millis(1500));
    let log = stop_in(&mut inb);
    assert!(
        log.contains("not a bridged record") && log.contains("runs past the end"),
        "{log}"
    );
    assert_eq!(seqs_in(&h.b), (0..=10).collect::<Vec<_>>());
}

#[test]
fn a_state_file_that_lost_its_newest_write_imports_nothing_twice() {
    lost_state_write(false);
}

#[test]
fn a_lost_state_write_whose_acks_reached_the_server_neither_duplicates_nor_stalls() {
    lost_state_write(true);
}

/// The in-bridge's state file loses its newest write (a power cut: two slots written without
/// fsync) while the queue keeps the batch that write announced. Either the batch's messages come
/// again (their acknowledgements were lost too) or not (they reached the server). The records
/// are recognized in the queue (re-read from the stream) and not appended twice; later records
/// follow them without a wait.
fn lost_state_write(acks_delivered: bool) {
    let Some((h, server, rt)) = alone_setup() else {
        return;
    };
    let (n1, n2) = (600u64, 900u64);
    let js = rt.block_on(async {
        let js = stream_on(&server.url()).await;
        for first in (0..n1).step_by(50) {
            publish_envelope(&js, &(first..first + 50).collect::<Vec<_>>(), "").await;
        }
        js
    });
    // Small chunks (3 messages, 150 records): several state writes.
    let mut inb = in_alone(&h, &server, &["--batch", "3"]);
    arrival_alone(&h, &inb, &server, n1);
    stop_in(&mut inb);

    // Tear the slot with the highest generation: the older one (one batch behind) is current.
    let state = chronicle_bridge::inbound::InConfig::default_state_path(&h.b);
    let mut bytes = std::fs::read(&state).unwrap();
    let slot = chronicle_bridge::state::SLOT_SIZE as usize;
    let generation = |at: usize| u64::from_le_bytes(bytes[at + 4..at + 12].try_into().unwrap());
    let newest = if bytes.len() > slot && generation(slot) > generation(0) {
        slot
    } else {
        0
    };
    bytes[newest + 24] ^= 0xff;
    std::fs::write(&state, &bytes).unwrap();
    rt.block_on(async {
        if !acks_delivered {
            // Every message comes again, as if no acknowledgement had reached the server.
            let stream = js.get_stream(STREAM).await.unwrap();
            stream.delete_consumer("hostB").await.unwrap();
        }
        for first in (n1..n2).step_by(50) {
            publish_envelope(&js, &(first..first + 50).collect::<Vec<_>>(), "").await;
        }
    });
    inb.start();
    arrival_alone(&h, &inb, &server, n2);
    std::thread::sleep(Duration::from_millis(500));
    let log = stop_in(&mut inb);
    assert!(
        log.contains("records follow the state's last batch")
            && log.contains("none imported twice"),
        "{log}"
    );
    assert_eq!(seqs_in(&h.b), (0..n2).collect::<Vec<_>>());
}

#[cfg(feature = "crash-points")]
both_modes!(kills_inside_a_batch_lose_and_duplicate_nothing);

/// Both bridges die at exact points inside a batch (crash points, the same death as SIGKILL):
/// the out-bridge after publishing a message whose acknowledgement it never handles (its restart
/// forms batches with other boundaries, overlapping what the server stored), the in-bridge
/// after appending the first record of a chunk. Restarted, B holds exactly A's records.
#[cfg(feature = "crash-points")]
fn kills_inside_a_batch_lose_and_duplicate_nothing(mode: Mode) {
    let Some(bin) = nats_server_bin() else { return };
    let h = hosts();
    let server = NatsServer::single(&bin, &h.root, &[]);
    let n = env_u64("CHRONICLE_BRIDGE_FAULT_RECORDS", 20_000) / 2;
    let mut w = QueueWriter::open(&h.a, writer_config()).unwrap();
    write_records(&mut w, 0, n, 0);
    w.close().unwrap();
    let (mut out, mut inb) = bridge_pair(&h, &server.url(), &mode.with(&["--exit-at-end"]), &[]);
    let published = if mode == Mode::Batched { "7" } else { "700" };
    out.envs.push((
        "CHRONICLE_CRASH_AT".to_string(),
        format!("bridge.out.published:{published}"),
    ));
    inb.envs.push((
        "CHRONICLE_CRASH_AT".to_string(),
        "bridge.in.first_append:3".to_string(),
    ));
    // One after the other, so that each meets its crash point for sure: the out-bridge dies,
    // comes back without the crash point and publishes the rest; then the in-bridge.
    for (b, what) in [(&mut out, "out-bridge"), (&mut inb, "in-bridge")] {
        b.start();
        let st = b.wait_exit(Duration::from_secs(120));
        assert!(
            st.is_some_and(|s| !s.success()),
            "the {what} did not die at its crash point: {st:?}\n{}",
            b.log_text()
        );
        b.envs.clear();
        b.start();
    }
    verify_arrival(&h.b, n, TRANSFER_DEADLINE, &|| diag(&out, &inb, &[&server]));
    let st = out.wait_exit(Duration::from_secs(60));
    assert!(st.is_some_and(|s| s.success()), "out-bridge: {st:?}");
    let log = stop_in(&mut inb);
    assert_eq!(count_records(&h.b), n);
    // The restarted in-bridge found the chunk half appended.
    assert!(
        log.contains("state recovered: 1 records of the last batch are in the queue"),
        "{log}"
    );
}
