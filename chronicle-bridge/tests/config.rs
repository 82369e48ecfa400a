//! `chron-bridge out|in --config FILE` with real processes: both bridges configured by TOML
//! files alone carry records from host A's queue through a real `nats-server` into host B's
//! queue, with the files' settings in force (JSON logs, batch size, lz4, JSON stats); a file
//! with an unknown key or a bad value, a missing file and a flag given beside `--config` are
//! refused at start with exit code 2 and one sentence naming the file and the key.
//!
//! Size: `CHRONICLE_BRIDGE_CONFIG_RECORDS` (default 5000).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

mod common;

use std::path::Path;

use chronicle_core::QueueWriter;
use common::args::{SUBJECT, closed_empty_queue, diag, finish_transfer, p, run, strings};
use common::{
    Bridge, NatsServer, SEGMENT, TRANSFER_DEADLINE, env_u64, hosts, nats_server_bin,
    verify_arrival, write_records, writer_config,
};

fn out_file(url: &str, queue: &Path) -> String {
    format!(
        r#"# chron-bridge out --config THIS_FILE
[nats]
url = ["{url}"]
reconnect_max_ms = 500
timeout_ms = 2000

[stream]
name = "CHRONCFG"
subject = "{SUBJECT}"
create = true
storage = "file"

[out]
queue = "{}"
host_id = "hostA"
batch = 32
linger_us = 200
compress = "lz4"
exit_at_end = true

[stats]
interval = 1

[log]
format = "json"
"#,
        p(queue)
    )
}

fn in_file(url: &str, queue: &Path) -> String {
    format!(
        r#"[nats]
url = "{url}"
reconnect_max_ms = 500
timeout_ms = 2000

[stream]
name = "CHRONCFG"
subject = "{SUBJECT}"
create = true

[in]
consumer = "hostB"
queue = "{}"
segment_size = {SEGMENT}
sync_batches = true

[stats]
interval = 1
json = true
"#,
        p(queue)
    )
}

#[test]
fn bridges_configured_by_files_alone_carry_records() {
    let Some(bin) = nats_server_bin() else { return };
    let h = hosts();
    let server = NatsServer::single(&bin, &h.root, &[]);
    let n = env_u64("CHRONICLE_BRIDGE_CONFIG_RECORDS", 5000);
    let out_cfg = h.root.join("out.toml");
    let in_cfg = h.root.join("in.toml");
    std::fs::write(&out_cfg, out_file(&server.url(), &h.a)).unwrap();
    std::fs::write(&in_cfg, in_file(&server.url(), &h.b)).unwrap();

    let mut w = QueueWriter::open(&h.a, writer_config()).unwrap();
    write_records(&mut w, 0, n / 2, 0);
    let mut out = Bridge::new(
        &strings(&["out", "--config", &p(&out_cfg)]),
        h.root.join("out.log"),
    );
    let mut inb = Bridge::new(
        &strings(&["in", "--config", &p(&in_cfg)]),
        h.root.join("in.log"),
    );
    out.start();
    inb.start();
    write_records(&mut w, n / 2, n, 50);
    w.close().unwrap();
    verify_arrival(&h.b, n, TRANSFER_DEADLINE, &|| diag(&out, &inb, &server));
    // exit_at_end from the file: the out-bridge stops by itself.
    finish_transfer(&mut out, &mut inb, &server, &h.b, n);

    // The out-bridge's log is JSON ([log] format) and its start event shows [out]'s settings.
    let log = out.log_text();
    let events: Vec<serde_json::Value> = log
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    let read = events
        .iter()
        .find(|e| e["fields"]["config"] == p(&out_cfg).as_str())
        .unwrap_or_else(|| panic!("no config event:\n{log}"));
    assert_eq!(read["level"], "INFO", "{read}");
    let started = events
        .iter()
        .find(|e| {
            e["fields"]["message"]
                .as_str()
                .is_some_and(|m| m.starts_with("out-bridge started"))
        })
        .unwrap_or_else(|| panic!("no start event:\n{log}"));
    assert_eq!(started["fields"]["batch"], 32, "{started}");
    assert_eq!(started["fields"]["stream"], "CHRONCFG", "{started}");
    let msg = started["fields"]["message"].as_str().unwrap();
    assert!(msg.contains("linger 200 us, lz4"), "{msg}");
    // The in-bridge's stats are bare JSON lines ([stats] json) accounting for every record.
    let log = inb.log_text();
    let last = common::last_json_line(&log);
    assert_eq!(last["direction"], "in", "{last}");
    assert_eq!(last["done"], n, "{last}");
}

/// Exit code 2 and one line on stderr containing `needle`.
fn assert_refused(args: &[&str], needle: &str) {
    let (code, err) = run(&strings(args), &[]);
    assert_eq!(code, 2, "{args:?}: {err}");
    assert!(
        err.contains(needle),
        "{args:?}:\n got  {err}\n want {needle}"
    );
}

#[test]
fn bad_files_and_flags_beside_config_are_refused_at_start() {
    let h = hosts();
    let cfg = h.root.join("bridge.toml");
    let c = p(&cfg);
    // No server is needed: each is refused before connecting.
    let base = format!(
        "[nats]\nurl = \"nats://127.0.0.1:1\"\n[stream]\nname = \"S\"\nsubject = \"s.x\"\n[out]\nqueue = \"{}\"\n",
        p(&h.a)
    );
    for (text, needle) in [
        (
            format!("{base}windw = 8\n"),
            "key `out.windw`: unknown key (known here: queue, reader, from,",
        ),
        (
            format!("{base}window = 0\n"),
            "key `out.window`: expected an integer from 1 to 4096, found 0 (integer)",
        ),
        (
            format!("{base}compress = \"zstd\"\n"),
            "key `out.compress`: expected \"none\" or \"lz4\", found \"zstd\" (string)",
        ),
        (
            format!("{base}[tls]\nrequired = \"yes\"\n"),
            "key `tls.required`: expected true or false, found \"yes\" (string)",
        ),
        (
            format!("{base}[metrics]\nlisten = 9466\n"),
            "key `metrics.listen`: expected an address \"HOST:PORT\", found 9466 (integer)",
        ),
        (
            format!("{base}[in]\nconsumer = \"c\"\n"),
            "key `in`: the section of `chron-bridge in`",
        ),
        (
            "[out]\nqueue = \"/q\"\n".to_string(),
            "key `stream.name`: missing",
        ),
        ("[out\n".to_string(), "not valid TOML"),
    ] {
        std::fs::write(&cfg, &text).unwrap();
        let (code, err) = run(&strings(&["out", "--config", &c]), &[]);
        assert_eq!(code, 2, "{text}: {err}");
        let want = format!("chron-bridge: error: {c}: {needle}");
        assert!(err.starts_with(&want), "{text}:\n got  {err}\n want {want}");
        assert_eq!(err.trim_end().lines().count(), 1, "one sentence: {err}");
    }
    // The in-bridge reads the same walker; its own section's keys are checked too.
    std::fs::write(
        &cfg,
        "[stream]\nname = \"S\"\n[in]\nconsumer = \"c\"\nqueue = \"/q\"\nack_wait = 0\n",
    )
    .unwrap();
    assert_refused(
        &["in", "--config", &c],
        &format!("{c}: key `in.ack_wait`: expected a positive integer, found 0"),
    );
    assert_refused(
        &["in", "--config", &p(&h.root.join("none.toml"))],
        "cannot read the bridge config",
    );
    // A flag beside --config: a usage error naming the file key to use, not a silent override.
    std::fs::write(&cfg, &base).unwrap();
    assert_refused(
        &["out", "--config", &c, "--batch", "8"],
        &format!("'--config <FILE>' cannot be used with '--batch': set `out.batch` in {c} instead"),
    );
    assert_refused(
        &["--log-format", "json", "out", "--config", &c],
        "cannot be used with '--log-format': set `log.format`",
    );
    // An environment variable is not a flag: the file may override it (here the file's URL,
    // which refuses connections, is used: the bridge gets past the config and fails to connect).
    closed_empty_queue(&h.a);
    let (code, err) = run(
        &strings(&["out", "--config", &c]),
        &[
            ("NATS_URL", "nats://127.0.0.1:2"),
            ("CHRONICLE_LOG", "error"),
        ],
    );
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("127.0.0.1:1"), "{err}");
}
