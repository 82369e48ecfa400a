//! `inspect` golden output (text and JSON) on a queue with fixed timestamps, two readers with
//! fixed liveness, and an evaluation time given with --now.
#![allow(clippy::unwrap_used, clippy::indexing_slicing)]

mod common;

use common::*;

/// Builds the queue and returns (queue path, text to mask → mask) pairs.
fn fixture(tmp: &std::path::Path) -> (std::path::PathBuf, Vec<(String, String)>) {
    let q = tmp.join("q");
    make_queue(&q, 10);
    make_reader(&q, "audit", 4);
    make_reader(&q, "risk", 10);
    set_reader_liveness(
        &q.join("readers/audit.meta"),
        NO_SUCH_PID,
        1,
        T0 + 2_000_000,
    );
    set_reader_liveness(&q.join("readers/risk.meta"), NO_SUCH_PID, 1, T0 + 9_000_000);
    let meta = std::fs::read(q.join("queue.meta")).unwrap();
    let uid = u64::from_le_bytes(meta[40..48].try_into().unwrap());
    let masks = vec![
        (p(&q).to_string(), "<Q>".to_string()),
        (format!("{uid:016x}"), "<UID>".to_string()),
        (
            format!("pid {}", std::process::id()),
            "pid <PID>".to_string(),
        ),
    ];
    (q, masks)
}

fn mask(s: &str, masks: &[(String, String)]) -> String {
    let mut s = s.to_string();
    for (from, to) in masks {
        s = s.replace(from, to);
    }
    // The creation time is real; everything else is fixed.
    s.lines()
        .map(|l| {
            if l.starts_with("created") {
                "created      <CREATED>".to_string()
            } else {
                l.to_string()
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
        + "\n"
}

const NOW: &str = "2023-11-14T22:13:21Z"; // T0 + 1 s

#[test]
fn inspect_text_golden() {
    let tmp = tempfile::tempdir().unwrap();
    let (q, masks) = fixture(tmp.path());
    let o = run(&["inspect", p(&q), "--now", NOW], b"");
    assert_eq!(o.code, 0, "{o:?}");
    let got = mask(&o.stdout, &masks);
    let want = "\
queue        <Q>
format       version 1
uid          <UID>
created      <CREATED>
geometry     segment 64.0 KiB, max payload 16.0 KiB, index every 64.0 KiB, file mode 0660
segments     1 (64.0 KiB), oldest 0 (first seq 0), newest 0
writer       closed cleanly (last pid <PID>)
tail         next seq 10, segment 0 offset 528
last write   2023-11-14T22:13:20.009000000Z (991.0 ms ago)
append rate  2.0 msgs/s over the last 5 s
readers      2
  NAME   NEXT SEQ  LAG  LAG BYTES  LAG TIME     HEARTBEAT         PID  STATE
  audit         4    6      240 B    6.0 ms  998.0 ms ago  2147483632  gone
  risk         10    0        0 B      0 ns  991.0 ms ago  2147483632  gone
";
    assert_eq!(got, want, "\n--- got ---\n{got}");
}

#[test]
fn inspect_json_golden() {
    let tmp = tempfile::tempdir().unwrap();
    let (q, masks) = fixture(tmp.path());
    let o = run(&["inspect", p(&q), "--now", NOW, "--json"], b"");
    assert_eq!(o.code, 0, "{o:?}");
    let mut got: serde_json::Value = serde_json::from_str(&mask(&o.stdout, &masks)).unwrap();
    // The creation time and the writer's pid are real; everything else is fixed.
    assert!(got["created_ns"].as_u64().unwrap() > T0);
    got["created_ns"] = "<CREATED_NS>".into();
    assert_eq!(got["writer"]["pid"], std::process::id());
    got["writer"]["pid"] = "<PID>".into();
    let want: serde_json::Value = serde_json::from_str(
        r#"{
  "queue": "<Q>",
  "format_version": 1,
  "queue_uid": "<UID>",
  "created_ns": <CREATED_NS>,
  "geometry": {"segment_size": 65536, "max_payload": 16384, "index_stride": 65536, "file_mode": "0660"},
  "segments": {"count": 1, "bytes": 65536, "oldest": 0, "newest": 0, "oldest_seq": 0},
  "writer": {"status": "closed", "lock_held": false, "pid": "<PID>", "pid_alive": true},
  "tail": {"segment": 0, "offset": 528, "next_seq": 10, "last_timestamp_ns": 1700000000009000000},
  "append_rate_msgs_per_s": 2.0,
  "append_rate_window_s": 5,
  "readers": [
    {"name": "audit", "next_seq": 4, "segment": 0, "offset": 288, "lag_records": 6, "lag_bytes": 240,
     "lag_ns": 6000000, "heartbeat_ns": 1700000000002000000, "heartbeat_age_ns": 998000000,
     "pid": 2147483632, "in_use": false, "state": "gone"},
    {"name": "risk", "next_seq": 10, "segment": 0, "offset": 528, "lag_records": 0, "lag_bytes": 0,
     "lag_ns": 0, "heartbeat_ns": 1700000000009000000, "heartbeat_age_ns": 991000000,
     "pid": 2147483632, "in_use": false, "state": "gone"}
  ],
  "reader_errors": [],
  "history_epoch": 0,
  "history_rewritten_from": null
}"#
        .replace("<CREATED_NS>", "\"<CREATED_NS>\"")
        .as_str(),
    )
    .unwrap();
    assert_eq!(got, want, "\n--- got ---\n{}", o.stdout);
}

#[test]
fn inspect_shows_a_live_writer_and_a_dead_one() {
    let (_tmp, q) = temp_queue(1);
    // One record through the writer, so it is fully open (not just holding the lock) when it
    // is killed below.
    let mut writer = spawn_append(&q, &[], std::process::Stdio::null(), b"one more\n");
    // Wait (watchdog) until the writer holds the lock and has appended.
    let deadline = std::time::Instant::now() + WATCHDOG;
    let json = loop {
        let o = run(&["inspect", p(&q), "--json"], b"");
        let v: serde_json::Value = serde_json::from_str(&o.stdout).unwrap();
        if v["writer"]["status"] == "alive"
            && v["writer"]["pid"] == writer.id()
            && v["tail"]["next_seq"] == 2
        {
            break v;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "writer never seen alive"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    };
    assert_eq!(json["writer"]["lock_held"], true);
    assert_eq!(json["writer"]["pid_alive"], true);
    writer.kill().unwrap();
    writer.wait().unwrap();
    let o = run(&["inspect", p(&q)], b"");
    assert_success(
        &o,
        &format!(
            "dead: pid {} died without closing (writer.lock free)",
            writer.id()
        ),
    );
}
