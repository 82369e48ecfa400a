//! `metrics` and `router --metrics-listen`: exact values of a bus with known records, the
//! exposition checked by `promtool check metrics`, a real Prometheus server scraping a live
//! queue through `metrics --listen`, and the router's own endpoint on a running topology.
//!
//! `promtool` and `prometheus` come from the Debian package `prometheus`. Without them these
//! tests skip with a message, except under CI (`CI` set), where a missing binary fails them.
#![allow(clippy::unwrap_used, clippy::indexing_slicing, clippy::panic)]

mod common;

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use common::*;

/// Path of a tool from the Debian package `prometheus`, or None (after saying why) when the
/// test should be skipped. Under CI (`CI` set) a missing binary is a failure, not a skip.
fn prometheus_tool(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    let dirs = std::env::split_paths(&path).chain(["/usr/bin".into(), "/usr/local/bin".into()]);
    for d in dirs {
        let c = d.join(name);
        if c.is_file() {
            return Some(c);
        }
    }
    if std::env::var_os("CI").is_some() {
        panic!("{name} is not installed (CI is set, so this is a failure, not a skip)");
    }
    eprintln!("SKIPPED: {name} not found (install the Debian package prometheus)");
    None
}

/// Percent-encodes a query parameter.
fn encode(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"_-.".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// A bus with feed `md` (10 records, readers `audit` at 4 and `risk` at 10, both gone), an
/// empty router directory and a strategy whose order queue is damaged (truncated queue.meta).
fn fixture(tmp: &Path) -> PathBuf {
    let bus = tmp.join("bus");
    let md = bus.join("feeds/md");
    make_queue(&md, 10);
    make_reader(&md, "audit", 4);
    make_reader(&md, "risk", 10);
    set_reader_liveness(&md.join("readers/audit.meta"), NO_SUCH_PID, 1, T0);
    set_reader_liveness(&md.join("readers/risk.meta"), NO_SUCH_PID, 1, T0);
    std::fs::create_dir_all(bus.join("router")).unwrap();
    let orders = bus.join("strategies/s9/orders");
    std::fs::create_dir_all(&orders).unwrap();
    std::fs::write(orders.join("queue.meta"), b"short").unwrap();
    bus
}

#[test]
fn once_reports_a_known_bus_exactly() {
    let tmp = tempfile::tempdir().unwrap();
    let bus = fixture(tmp.path());
    let md = bus.join("feeds/md");
    let since_t0 = || {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap();
        (now - Duration::from_nanos(T0)).as_secs_f64()
    };
    let before = since_t0();
    let o = run(&["metrics", "--once", p(&bus)], b"");
    let after = since_t0();
    assert_eq!(o.code, 0, "{o:?}");
    let m = &o.stdout;
    let q = format!("bus=\"{}\",queue=\"feeds/md\"", p(&bus));
    let at = |series: &str| value(m, series).unwrap_or_else(|| panic!("no {series} in\n{m}"));
    assert_eq!(at(&format!("chronicle_queue_up{{{q}}}")), "1");
    assert_eq!(
        at(&format!("chronicle_queue_appended_records_total{{{q}}}")),
        "10"
    );
    // The tail as the writer left it in queue.meta (segment at 136, offset at 144).
    let meta = std::fs::read(md.join("queue.meta")).unwrap();
    let word = |at: usize| u64::from_le_bytes(meta[at..at + 8].try_into().unwrap());
    assert_eq!(
        at(&format!("chronicle_queue_appended_bytes_total{{{q}}}")),
        (word(136) * (64 << 10) + word(144) - 128).to_string()
    );
    let on_disk: Vec<u64> = std::fs::read_dir(md.join("segments"))
        .unwrap()
        .map(|e| e.unwrap())
        .filter(|e| e.file_name().to_string_lossy().ends_with(".seg"))
        .map(|e| e.metadata().unwrap().len())
        .collect();
    assert!(!on_disk.is_empty());
    assert_eq!(
        at(&format!("chronicle_queue_segments{{{q}}}")),
        on_disk.len().to_string()
    );
    assert_eq!(
        at(&format!("chronicle_queue_segments_bytes{{{q}}}")),
        on_disk.iter().sum::<u64>().to_string()
    );
    assert_eq!(
        at(&format!("chronicle_queue_segment_size_bytes{{{q}}}")),
        "65536"
    );
    assert_eq!(
        at(&format!(
            "chronicle_queue_last_append_timestamp_seconds{{{q}}}"
        )),
        "1700000000.009"
    );
    assert_eq!(
        at(&format!(
            "chronicle_queue_writer_state{{{q},state=\"closed\"}}"
        )),
        "1"
    );
    assert_eq!(
        at(&format!(
            "chronicle_queue_writer_state{{{q},state=\"alive\"}}"
        )),
        "0"
    );
    let free: u64 = at(&format!("chronicle_queue_filesystem_free_bytes{{{q}}}"))
        .parse()
        .unwrap();
    assert!(free > 0);
    let audit = format!("{q},reader=\"audit\"");
    assert_eq!(
        at(&format!("chronicle_reader_position_records{{{audit}}}")),
        "4"
    );
    assert_eq!(at(&format!("chronicle_reader_lag_records{{{audit}}}")), "6");
    // Records are stamped T0 + i ms: audit consumed record 3, the last one is record 9.
    assert_eq!(
        at(&format!("chronicle_reader_lag_seconds{{{audit}}}")),
        "0.006"
    );
    assert_eq!(
        at(&format!("chronicle_reader_state{{{audit},state=\"gone\"}}")),
        "1"
    );
    let risk = format!("{q},reader=\"risk\"");
    assert_eq!(at(&format!("chronicle_reader_lag_records{{{risk}}}")), "0");
    assert_eq!(at(&format!("chronicle_reader_lag_bytes{{{risk}}}")), "0");
    assert_eq!(at(&format!("chronicle_reader_lag_seconds{{{risk}}}")), "0");
    // The heartbeat was set to T0: its age is the scrape's time since T0.
    let age: f64 = at(&format!("chronicle_reader_heartbeat_age_seconds{{{risk}}}"))
        .parse()
        .unwrap();
    assert!(
        before - 1e-3 <= age && age <= after + 1e-3,
        "{before} {age} {after}"
    );
    // The damaged queue is reported down, without failing the scrape or other series.
    let s9 = format!("bus=\"{}\",queue=\"strategies/s9/orders\"", p(&bus));
    assert_eq!(at(&format!("chronicle_queue_up{{{s9}}}")), "0");
    assert_eq!(m.matches(&s9).count(), 1, "{m}");
    // Each family is announced once, before its samples.
    assert_eq!(
        m.matches("# TYPE chronicle_queue_appended_records_total counter\n")
            .count(),
        1
    );
    // A queue named on its own is labelled by its path, with an empty bus; named twice, it
    // is served once.
    let o = run(&["metrics", "--once", p(&md), p(&md)], b"");
    assert_eq!(o.code, 0, "{o:?}");
    assert_eq!(
        value(
            &o.stdout,
            &format!(
                "chronicle_queue_appended_records_total{{bus=\"\",queue=\"{}\"}}",
                p(&md)
            )
        )
        .as_deref(),
        Some("10")
    );
    assert_eq!(
        o.stdout
            .matches("chronicle_queue_appended_records_total{")
            .count(),
        1,
        "{}",
        o.stdout
    );
}

#[test]
fn refuses_what_is_neither_a_queue_nor_a_bus() {
    let tmp = tempfile::tempdir().unwrap();
    let o = run(&["metrics", "--once", p(tmp.path())], b"");
    assert_one_sentence(&o, 1, "neither a chronicle queue");
    let o = run(&["metrics", p(tmp.path())], b"");
    assert_eq!(o.code, 2, "--listen or --once is required: {o:?}");
}

/// `promtool check metrics` on `text`: Prometheus's own parser and linter.
fn promtool_check(promtool: &Path, text: &str) {
    let mut child = Command::new(promtool)
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let st = wait(&mut child);
    let mut out = String::new();
    child
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut out)
        .unwrap();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut out)
        .unwrap();
    assert!(st.success(), "promtool check metrics: {out}\non:\n{text}");
    assert!(out.trim().is_empty(), "promtool lint findings: {out}");
}

#[test]
fn exposition_passes_promtool() {
    let Some(promtool) = prometheus_tool("promtool") else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let bus = fixture(tmp.path());
    let o = run(&["metrics", "--once", p(&bus)], b"");
    assert_success(&o, "chronicle_reader_lag_records");
    promtool_check(&promtool, &o.stdout);
}

/// The value of an instant query's first result, once Prometheus has one.
fn query(port: u16, q: &str) -> Option<String> {
    let body = http_get(port, &format!("/api/v1/query?query={}", encode(q)))?;
    let v: serde_json::Value = serde_json::from_str(&body).ok()?;
    v["data"]["result"][0]["value"][1]
        .as_str()
        .map(str::to_string)
}

#[test]
fn prometheus_scrapes_a_live_queue() {
    let Some(prometheus) = prometheus_tool("prometheus") else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let q = tmp.path().join("live");
    let mut w = chronicle_core::QueueWriter::open(&q, small()).unwrap();
    for i in 0..5u64 {
        w.append(1, format!("tick-{i}").as_bytes()).unwrap();
    }
    let mport = free_port();
    let mlog = tmp.path().join("metrics.log");
    let _metrics = Proc::spawn(
        bin()
            .args(["metrics", p(&q), "--listen"])
            .arg(format!("127.0.0.1:{mport}")),
        &mlog,
    );
    let logs = |paths: Vec<PathBuf>| {
        move || {
            paths
                .iter()
                .map(|f| {
                    let text = std::fs::read_to_string(f).unwrap_or_default();
                    let tail: String = text.chars().rev().take(3000).collect();
                    format!(
                        "--- {}:\n{}",
                        f.display(),
                        tail.chars().rev().collect::<String>()
                    )
                })
                .collect::<Vec<_>>()
                .join("\n")
        }
    };
    let plog = tmp.path().join("prometheus.log");
    let log = logs(vec![mlog.clone(), plog.clone()]);
    // Our endpoint answers before Prometheus is pointed at it.
    poll("metrics --listen", &log, || http_get(mport, "/metrics"));
    let pport = free_port();
    let config = tmp.path().join("prometheus.yml");
    std::fs::write(
        &config,
        format!(
            "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n\
             scrape_configs:\n  - job_name: chronicle\n    static_configs:\n\
             \x20     - targets: ['127.0.0.1:{mport}']\n"
        ),
    )
    .unwrap();
    let mut server = Proc::spawn(
        Command::new(&prometheus)
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                tmp.path().join("tsdb").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{pport}")),
        &plog,
    );
    let series = format!(
        "chronicle_queue_appended_records_total{{queue=\"{}\"}}",
        p(&q)
    );
    poll("5 records scraped", &log, || {
        query(pport, &series).filter(|v| v == "5")
    });
    let alive = format!(
        "chronicle_queue_writer_state{{queue=\"{}\",state=\"alive\"}}",
        p(&q)
    );
    poll("the writer scraped alive", &log, || {
        query(pport, &alive).filter(|v| v == "1")
    });
    // Later scrapes see later appends: the endpoint reads the live files each time.
    for i in 5..12u64 {
        w.append(1, format!("tick-{i}").as_bytes()).unwrap();
    }
    poll("12 records scraped", &log, || {
        query(pport, &series).filter(|v| v == "12")
    });
    assert_eq!(
        query(pport, &format!("up{{instance=\"127.0.0.1:{mport}\"}}")).as_deref(),
        Some("1")
    );
    server.stop();
    w.close().unwrap();
}

#[test]
fn router_serves_its_own_numbers() {
    let promtool = prometheus_tool("promtool");
    let tmp = tempfile::tempdir().unwrap();
    let bus = tmp.path().join("bus");
    let port = free_port();
    let rlog = tmp.path().join("router.log");
    let mut router = Proc::spawn(
        bin()
            .args(["router", "--bus", p(&bus), "--metrics-listen"])
            .arg(format!("127.0.0.1:{port}")),
        &rlog,
    );
    let flog = tmp.path().join("feed.log");
    let slog = tmp.path().join("strategy.log");
    let log = || logs(&[&rlog, &flog, &slog]);
    // Before any strategy: the endpoint answers with the router's table size.
    let first = poll("router metrics", &log, || http_get(port, "/metrics"));
    assert_eq!(
        value(&first, "chronicle_router_strategies").as_deref(),
        Some("0")
    );
    let mut feed = spawn_feed(&bus, "2000", &flog);
    let mut strategy = spawn_strategy(&bus, "s1", &slog);
    let routed = "chronicle_router_fates_total{strategy=\"s1\",fate=\"routed\"}";
    let m = poll("orders routed for s1", &log, || {
        http_get(port, "/metrics").filter(|m| {
            value(m, routed)
                .and_then(|v| v.parse::<u64>().ok())
                .is_some_and(|n| n > 0)
        })
    });
    let num = |series: &str| -> u64 {
        value(&m, series)
            .unwrap_or_else(|| panic!("no {series} in\n{m}"))
            .parse()
            .unwrap()
    };
    let h = "chronicle_router_tick_to_route_seconds";
    // Every routed order has its latency in the histogram, in the same snapshot.
    assert_eq!(num(&format!("{h}_count{{strategy=\"s1\"}}")), num(routed));
    assert_eq!(
        num(&format!("{h}_bucket{{strategy=\"s1\",le=\"+Inf\"}}")),
        num(routed)
    );
    let buckets: Vec<u64> = m
        .lines()
        .filter(|l| l.starts_with(&format!("{h}_bucket{{strategy=\"s1\"")))
        .map(|l| l.rsplit(' ').next().unwrap().parse().unwrap())
        .collect();
    assert_eq!(buckets.len(), 16, "{m}");
    assert!(buckets.windows(2).all(|w| w[0] <= w[1]), "{m}");
    let merged = num("chronicle_router_merged_total{strategy=\"s1\"}");
    let fates: u64 = chronicle_bus::orders::FateCode::ALL
        .iter()
        .map(|f| {
            num(&format!(
                "chronicle_router_fates_total{{strategy=\"s1\",fate=\"{}\"}}",
                f.name()
            ))
        })
        .sum();
    let queued = num("chronicle_router_queued_orders{strategy=\"s1\"}");
    // Each order taken is answered once or still queued.
    assert_eq!(merged, fates + queued, "{m}");
    assert_eq!(num("chronicle_router_strategies"), 1);
    // Each stage of a routed order is measured once.
    for stage in ["to_order", "merge", "queue", "send"] {
        assert_eq!(
            num(&format!(
                "chronicle_router_stage_seconds_count{{strategy=\"s1\",stage=\"{stage}\"}}"
            )),
            num(routed),
            "{stage}"
        );
    }
    // Every dispatch out of the scheduler has its queue time.
    assert_eq!(
        num("chronicle_router_scheduler_queue_time_seconds_count"),
        num("chronicle_router_scheduler_dispatched_total")
    );
    assert!(num("chronicle_router_merged_records_total") >= merged);
    // One strategy: its scheduler counters are the scheduler's, its refusals its rejected fates.
    for (tenant, all) in [
        ("queue_length", "queue_length"),
        ("enqueued_total", "enqueued_total"),
        ("dispatched_total", "dispatched_total"),
        ("expired_total", "expired_total"),
        ("evicted_total", "evicted_total"),
        ("removed_total", "removed_total"),
    ] {
        assert_eq!(
            num(&format!(
                "chronicle_router_scheduler_tenant_{tenant}{{strategy=\"s1\"}}"
            )),
            num(&format!("chronicle_router_scheduler_{all}")),
            "{tenant}: {m}"
        );
    }
    let reasons = ["tenant_full", "global_full", "too_many_tenants", "closed"];
    let tenant_rejected: u64 = reasons
        .iter()
        .map(|r| {
            num(&format!(
                "chronicle_router_scheduler_tenant_rejected_total{{strategy=\"s1\",reason=\"{r}\"}}"
            ))
        })
        .sum();
    let all_rejected: u64 = reasons
        .iter()
        .map(|r| {
            num(&format!(
                "chronicle_router_scheduler_rejected_total{{reason=\"{r}\"}}"
            ))
        })
        .sum();
    assert_eq!(tenant_rejected, all_rejected, "{m}");
    assert_eq!(
        tenant_rejected,
        num("chronicle_router_fates_total{strategy=\"s1\",fate=\"rejected\"}"),
        "{m}"
    );
    assert!(num("chronicle_router_merge_held_records") <= 1, "{m}");
    if let Some(promtool) = promtool {
        promtool_check(&promtool, &m);
    }
    // Every metric the Grafana dashboard queries is served by this running topology (the
    // router's endpoint or `metrics` on its bus).
    let bus_scrape = run(&["metrics", "--once", p(&bus)], b"");
    assert_eq!(bus_scrape.code, 0, "{bus_scrape:?}");
    let served = format!("{m}{}", bus_scrape.stdout);
    for name in dashboard_metrics() {
        assert!(
            served.contains(&format!("# TYPE {name} ")),
            "the dashboard queries {name}, which nothing serves:\n{served}"
        );
    }
    strategy.stop();
    feed.stop();
    router.stop();
}

/// The Grafana dashboard of the demo topology.
fn dashboard() -> serde_json::Value {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/grafana-demo.json");
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

/// The PromQL expressions of the dashboard's panels.
fn dashboard_exprs() -> Vec<String> {
    let d = dashboard();
    let exprs: Vec<String> = d["panels"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|p| p["targets"].as_array().unwrap().iter())
        .map(|t| t["expr"].as_str().unwrap().to_string())
        .collect();
    assert!(exprs.len() >= 10, "{exprs:?}");
    exprs
}

/// The metric families the dashboard queries (histogram series names reduced to the family).
fn dashboard_metrics() -> Vec<String> {
    let mut names: Vec<String> = Vec::new();
    for e in dashboard_exprs() {
        let mut rest = e.as_str();
        while let Some(at) = rest.find("chronicle_") {
            let tail = &rest[at..];
            let end = tail
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(tail.len());
            let name = &tail[..end];
            let family = ["_bucket", "_sum", "_count"]
                .iter()
                .find_map(|s| name.strip_suffix(s))
                .unwrap_or(name);
            if !names.iter().any(|n| n == family) {
                names.push(family.to_string());
            }
            rest = &tail[end..];
        }
    }
    names
}

#[test]
fn dashboard_expressions_are_valid_promql() {
    let Some(promtool) = prometheus_tool("promtool") else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    // Recording rules are the way promtool parses PromQL offline.
    let mut rules = String::from("groups:\n  - name: dashboard\n    rules:\n");
    for (i, e) in dashboard_exprs().iter().enumerate() {
        rules.push_str(&format!(
            "      - record: dashboard:expr{i}\n        expr: {}\n",
            serde_json::to_string(e).unwrap()
        ));
    }
    let file = tmp.path().join("rules.yml");
    std::fs::write(&file, &rules).unwrap();
    let o = Command::new(&promtool)
        .args(["check", "rules"])
        .arg(&file)
        .output()
        .unwrap();
    assert!(o.status.success(), "{o:?}\n{rules}");
}
