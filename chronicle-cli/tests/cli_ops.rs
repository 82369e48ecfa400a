//! Operating the router: structured logs (`--log-format json`, the `CHRONICLE_LOG` filter) and
//! the TOML topology config (`router --config`), reloaded on SIGHUP, with real processes.
#![allow(clippy::unwrap_used, clippy::indexing_slicing, clippy::panic)]

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use common::*;
use serde_json::Value;

/// Every line of `path` as a JSON object; panics on a line that is not one.
fn json_lines(path: &Path) -> Vec<Value> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    text.lines()
        .map(|l| {
            serde_json::from_str::<Value>(l)
                .unwrap_or_else(|e| panic!("not a JSON log line ({e}): {l:?}\nin:\n{text}"))
        })
        .collect()
}

/// The first JSON log event of `path` whose message is `msg` (and that `pred` accepts).
fn event(path: &Path, msg: &str, pred: impl Fn(&Value) -> bool) -> Option<Value> {
    json_lines(path)
        .into_iter()
        .find(|v| v["fields"]["message"] == msg && pred(v))
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

/// Waits for the JSON log event `msg` in `err`; `log` is shown if it never comes.
fn await_event(err: &Path, msg: &str, log: &dyn Fn() -> String) -> Value {
    poll(msg, log, || event(err, msg, |_| true))
}

/// Like [`await_event`], and asserts the event's level.
fn await_event_at(err: &Path, level: &str, msg: &str, log: &dyn Fn() -> String) -> Value {
    let ev = await_event(err, msg, log);
    assert_eq!(ev["level"], level, "{ev}");
    ev
}

/// A router on `tmp/bus` with JSON logs, `extra` arguments and, if given, `CHRONICLE_LOG`;
/// returns it with its stdout and stderr files, `tmp/<name>.out` and `tmp/<name>.err`.
fn json_router(
    tmp: &Path,
    name: &str,
    extra: &[&str],
    filter: Option<&str>,
) -> (Proc, PathBuf, PathBuf) {
    let (out, err) = (
        tmp.join(format!("{name}.out")),
        tmp.join(format!("{name}.err")),
    );
    let mut cmd = bin();
    cmd.args([
        "router",
        "--bus",
        p(&tmp.join("bus")),
        "--log-format",
        "json",
    ])
    .args(extra);
    if let Some(filter) = filter {
        cmd.env("CHRONICLE_LOG", filter);
    }
    let r = Proc::spawn_split(&mut cmd, &out, &err);
    (r, out, err)
}

/// A router on `bus` with JSON logs and `CHRONICLE_LOG=filter`, stopped after its first
/// status line; returns its stderr's file.
fn router_run(tmp: &Path, name: &str, filter: &str) -> PathBuf {
    let (mut r, out, err) = json_router(tmp, name, &[], Some(filter));
    let log = || logs(&[&out, &err]);
    // The first once-a-second status line on stdout: the router ran its loop for a second.
    poll("router status", &log, || {
        read(&out).contains("\"final\":false").then_some(())
    });
    r.stop_ok(&log);
    err
}

#[test]
fn json_logs_are_one_object_per_line_and_the_filter_applies() {
    let tmp = tempfile::tempdir().unwrap();
    let err = router_run(tmp.path(), "debug", "debug");
    let lines = json_lines(&err);
    assert!(!lines.is_empty(), "no log lines");
    for v in &lines {
        assert!(v["timestamp"].is_string(), "{v}");
        assert!(
            ["ERROR", "WARN", "INFO", "DEBUG", "TRACE"].contains(&v["level"].as_str().unwrap()),
            "{v}"
        );
        assert!(v["target"].is_string(), "{v}");
        assert!(v["fields"]["message"].is_string(), "{v}");
    }
    let start = event(&err, "router started", |_| true).expect("no start event");
    assert_eq!(start["level"], "INFO");
    assert_eq!(start["target"], "chron_cli::topology::router");
    assert_eq!(start["fields"]["bus"], p(&tmp.path().join("bus")));
    assert_eq!(start["fields"]["out_seq"], 0);
    assert_eq!(start["fields"]["rate_limit"], 20_000);
    let status = event(&err, "status", |_| true).expect("no status event at debug");
    assert_eq!(status["level"], "DEBUG");
    assert_eq!(status["fields"]["routed"], 0);
    assert!(event(&err, "router stopped, drained", |_| true).is_some());

    // info: no debug events; warn: nothing at all from a clean start and stop.
    let err = router_run(tmp.path(), "info", "info");
    assert!(event(&err, "router started", |_| true).is_some());
    assert!(json_lines(&err).iter().all(|v| v["level"] != "DEBUG"));
    let err = router_run(tmp.path(), "warn", "warn");
    assert_eq!(read(&err), "", "CHRONICLE_LOG=warn logged lifecycle events");
    // A target filter: this module at debug, the rest at warn.
    let err = router_run(
        tmp.path(),
        "target",
        "warn,chron_cli::topology::router=debug",
    );
    assert!(event(&err, "status", |_| true).is_some());
}

#[test]
fn human_logs_by_default_and_errors_as_json_events_with_json_logs() {
    let tmp = tempfile::tempdir().unwrap();
    let (out, err) = (tmp.path().join("r.out"), tmp.path().join("r.err"));
    let mut r = Proc::spawn_split(
        bin().args(["router", "--bus", p(&tmp.path().join("bus"))]),
        &out,
        &err,
    );
    poll("router start", &|| read(&err), || {
        read(&err).contains("router started").then_some(())
    });
    r.stop();
    let text = read(&err);
    let line = text.lines().find(|l| l.contains("router started")).unwrap();
    assert!(
        line.contains(" INFO chron_cli::topology::router: router started")
            && line.contains("out_seq=0"),
        "{text}"
    );
    assert!(serde_json::from_str::<Value>(line).is_err());

    // A failing one-shot command: with JSON logs its error is an ERROR event, stdout empty.
    let o = run(
        &[
            "inspect",
            p(&tmp.path().join("nothing")),
            "--log-format",
            "json",
        ],
        b"",
    );
    assert_eq!(o.code, 1, "{o:?}");
    let lines: Vec<Value> = o
        .stderr
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 1, "{o:?}");
    assert_eq!(lines[0]["level"], "ERROR");
    assert!(
        lines[0]["fields"]["error"]
            .as_str()
            .unwrap()
            .contains("nothing"),
        "{o:?}"
    );
    // CHRONICLE_LOG_FORMAT is the flag's environment variable.
    let o = {
        let mut c = bin();
        c.args(["inspect", p(&tmp.path().join("nothing"))])
            .env("CHRONICLE_LOG_FORMAT", "json");
        let out = c.output().unwrap();
        String::from_utf8(out.stderr).unwrap()
    };
    assert!(serde_json::from_str::<Value>(o.trim()).is_ok(), "{o}");

    // A filter that is not one is refused at start, naming the variable.
    let mut c = bin();
    let o = c
        .args(["inspect", p(tmp.path())])
        .env("CHRONICLE_LOG", "chron_cli=loud")
        .output()
        .unwrap();
    let e = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{e}");
    assert!(
        e.starts_with("chron-cli: CHRONICLE_LOG=\"chron_cli=loud\" is not a log filter"),
        "{e}"
    );
    // And a format that is not one, by clap.
    let o = run(&["inspect", p(tmp.path()), "--log-format", "xml"], b"");
    assert_eq!(o.code, 2, "{o:?}");
    assert!(o.stderr.contains("human or json"), "{o:?}");
}

const CONFIG: &str = r#"
[router]
rate_limit = 1000
hold_us = 400

[scheduler]
max_per_tenant = 512

[metrics]
listen = "127.0.0.1:0"

[strategies.alpha]
weight = 1
"#;

/// The metrics address the router logged (`serving metrics`, field `addr`).
fn metrics_port(err: &Path, log: &dyn Fn() -> String) -> u16 {
    poll("metrics address in the log", log, || {
        let ev = json_lines(err).into_iter().find(|v| {
            v["fields"]["message"]
                .as_str()
                .is_some_and(|m| m.starts_with("serving metrics"))
        })?;
        ev["fields"]["addr"]
            .as_str()?
            .rsplit(':')
            .next()?
            .parse()
            .ok()
    })
}

/// Polls the router's endpoint until `series` is `want`.
fn until_value(port: u16, series: &str, want: &str, log: &dyn Fn() -> String) -> String {
    poll(&format!("{series} = {want}"), log, || {
        http_get(port, "/metrics").filter(|m| value(m, series).as_deref() == Some(want))
    })
}

#[test]
fn config_sets_the_router_and_sighup_reloads_weights_and_rate_limit() {
    let tmp = tempfile::tempdir().unwrap();
    let bus = tmp.path().join("bus");
    let cfg = tmp.path().join("router.toml");
    std::fs::write(&cfg, CONFIG).unwrap();
    let (mut router, rout, rerr) = json_router(tmp.path(), "router", &["--config", p(&cfg)], None);
    let (flog, slog) = (tmp.path().join("feed.log"), tmp.path().join("alpha.log"));
    let log = || logs(&[&rerr, &rout, &flog, &slog]);
    let port = metrics_port(&rerr, &log);
    let start = event(&rerr, "router started", |_| true).unwrap();
    assert_eq!(start["fields"]["rate_limit"], 1000, "{start}");
    assert_eq!(start["fields"]["weights"], "alpha=1", "{start}");
    let mut feed = spawn_feed(&bus, "1000", &flog);
    let mut alpha = spawn_strategy(&bus, "alpha", &slog);
    let weight = "chronicle_router_strategy_weight{strategy=\"alpha\"}";
    let rate = "chronicle_router_rate_limit_orders_per_second";
    let m = until_value(port, weight, "1", &log);
    assert_eq!(value(&m, rate).as_deref(), Some("1000"));

    // New weights and rate limit, then SIGHUP: applied without a restart, and logged.
    let changed = CONFIG
        .replace("weight = 1", "weight = 5")
        .replace("rate_limit = 1000", "rate_limit = 2500")
        .replace("hold_us = 400", "hold_us = 300");
    std::fs::write(&cfg, changed).unwrap();
    router.signal(libc::SIGHUP);
    let m = until_value(port, weight, "5", &log);
    let m = if value(&m, rate).as_deref() == Some("2500") {
        m
    } else {
        until_value(port, rate, "2500", &log)
    };
    assert_eq!(value(&m, weight).as_deref(), Some("5"));
    let reloaded = await_event_at(&rerr, "INFO", "config reloaded", &log);
    assert_eq!(reloaded["fields"]["rate_limit"], 2500);
    assert_eq!(reloaded["fields"]["weights"], "alpha=5");
    assert_eq!(reloaded["fields"]["config"], p(&cfg));
    // A key read only at start is named, not applied.
    let restart = await_event_at(
        &rerr,
        "WARN",
        "changed in the config: takes effect at the next start",
        &log,
    );
    assert_eq!(restart["fields"]["key"], "router.hold_us");

    // A bad file on reload: refused, the reason names the key, the old config stays.
    std::fs::write(&cfg, CONFIG.replace("weight = 1", "weight = 0")).unwrap();
    router.signal(libc::SIGHUP);
    let refused = await_event_at(
        &rerr,
        "ERROR",
        "config reload refused; the running config is kept",
        &log,
    );
    let why = refused["fields"]["error"].as_str().unwrap();
    assert!(
        why.contains("key `strategies.alpha.weight`: expected a positive integer")
            && why.contains(p(&cfg)),
        "{refused}"
    );
    // Two refreshes of the exposition later, weight and rate are still the reloaded ones.
    let mut refreshes = 0;
    let mut last = String::new();
    poll("two exposition refreshes", &log, || {
        let m = http_get(port, "/metrics")?;
        if m != last {
            refreshes += 1;
            last = m;
        }
        (refreshes >= 3).then_some(())
    });
    assert_eq!(value(&last, weight).as_deref(), Some("5"), "{last}");
    assert_eq!(value(&last, rate).as_deref(), Some("2500"), "{last}");
    assert!(router.0.try_wait().unwrap().is_none(), "the router died");

    alpha.stop();
    feed.stop();
    router.stop_ok(&log);
}

#[test]
fn a_router_without_config_logs_and_survives_sighup() {
    let tmp = tempfile::tempdir().unwrap();
    let (mut r, _out, err) = json_router(tmp.path(), "r", &[], None);
    let log = || read(&err);
    await_event(&err, "router started", &log);
    r.signal(libc::SIGHUP);
    await_event_at(
        &err,
        "WARN",
        "SIGHUP ignored: the router was started without --config",
        &log,
    );
    std::thread::sleep(Duration::from_millis(200));
    assert!(
        r.0.try_wait().unwrap().is_none(),
        "SIGHUP killed the router"
    );
    r.stop_ok(&log);
}

#[test]
fn a_bad_config_fails_the_start_naming_the_key() {
    let tmp = tempfile::tempdir().unwrap();
    let bus = tmp.path().join("bus");
    let cfg = tmp.path().join("router.toml");
    for (text, needle) in [
        (
            "[strategies.alpha]\nweight = 0\n",
            "key `strategies.alpha.weight`: expected a positive integer (1 to 4294967295), found 0",
        ),
        (
            "[router]\nrate_limit = 10\nburst = 3\n",
            "key `router.burst`: unknown key (known here: rate_limit, hold_us, drain_timeout_ms)",
        ),
        (
            "[scheduler]\nbackpressure = \"drop\"\n",
            "key `scheduler.backpressure`: expected \"reject\" or \"evict_oldest\", found \"drop\" (string)",
        ),
        ("[router\n", "not valid TOML"),
    ] {
        std::fs::write(&cfg, text).unwrap();
        let o = run(&["router", "--bus", p(&bus), "--config", p(&cfg)], b"");
        assert_one_sentence(&o, 1, &format!("{}: {needle}", p(&cfg)));
        assert_eq!(o.stdout, "", "{o:?}");
    }
    let o = run(
        &[
            "router",
            "--bus",
            p(&bus),
            "--config",
            p(&tmp.path().join("none.toml")),
        ],
        b"",
    );
    assert_one_sentence(&o, 1, "cannot read the router config");
    assert!(
        o.stderr.contains("check the path given to --config"),
        "{o:?}"
    );
    // A tuning flag and --config together: a usage error, not a silent override.
    std::fs::write(&cfg, "").unwrap();
    let o = run(
        &[
            "router",
            "--bus",
            p(&bus),
            "--config",
            p(&cfg),
            "--rate-limit",
            "5",
        ],
        b"",
    );
    assert_eq!(o.code, 2, "{o:?}");
    assert!(
        o.stderr
            .contains("'--config <FILE>' cannot be used with '--rate-limit <RATE_LIMIT>'"),
        "{o:?}"
    );
}

#[test]
fn a_changed_config_file_is_reloaded_without_a_signal() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = tmp.path().join("router.toml");
    std::fs::write(&cfg, CONFIG).unwrap();
    let (mut r, out, err) = json_router(tmp.path(), "r", &["--config", p(&cfg)], None);
    let log = || logs(&[&out, &err]);
    let port = metrics_port(&err, &log);
    let rate = "chronicle_router_rate_limit_orders_per_second";
    until_value(port, rate, "1000", &log);
    // Only the file changes (its size too, so a coarse modification time cannot hide it).
    std::fs::write(
        &cfg,
        CONFIG.replace("rate_limit = 1000", "rate_limit = 12345"),
    )
    .unwrap();
    until_value(port, rate, "12345", &log);
    let ev = await_event(&err, "config reloaded", &log);
    assert_eq!(ev["fields"]["trigger"], "file changed", "{ev}");
    assert_eq!(ev["fields"]["rate_limit"], 12345, "{ev}");
    r.stop_ok(&log);
}
