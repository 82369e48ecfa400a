//! `audit`: reconciles a bus's order path from its files: every order and cancel of every
//! strategy has exactly one fate, every routed fate is in `router/out` exactly once and nothing
//! else is there, nothing in `router/out` was written after its deadline. One line per problem
//! naming the strategy, the order id and the sequence numbers; exit 1 if there is any. Reads
//! everything without a lock and never writes (`chronicle_bus::orders::audit`).

use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use chronicle_bus::BusLayout;
use chronicle_bus::orders::{AuditReport, FateCode, audit};
use serde_json::{Value, json};

use crate::output::{self, duration_ns};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The bus directory (with strategies/ and router/).
    bus: PathBuf,
    /// Machine-readable output (one JSON object).
    #[arg(long)]
    json: bool,
}

pub fn run(a: Args) -> Result<u8> {
    crate::queue::check_dir(&a.bus, "a bus directory")?;
    if crate::queue::is_queue(&a.bus) {
        bail!(
            "{} is a queue, not a bus: audit takes a bus root (the directory holding strategies/ and router/)",
            a.bus.display()
        );
    }
    if !a.bus.join("strategies").is_dir() {
        bail!(
            "{} is not a chronicle bus (no strategies/ directory): pass the bus root the router or `chron-cli demo` ran on",
            a.bus.display()
        );
    }
    let report = audit(&BusLayout::new(&a.bus))
        .with_context(|| format!("cannot audit {}", a.bus.display()))?;
    if a.json {
        output::print_json(&to_json(&report))?;
    } else {
        print_text(&report);
    }
    Ok(if report.is_clean() { 0 } else { 1 })
}

fn q(h: &hdrhistogram::Histogram<u64>, p: f64) -> u64 {
    if h.is_empty() {
        0
    } else {
        h.value_at_quantile(p)
    }
}

fn to_json(r: &AuditReport) -> Value {
    let per: Vec<Value> = r
        .strategies
        .iter()
        .map(|s| {
            let mut fates = serde_json::Map::new();
            for c in FateCode::ALL {
                fates.insert(c.name().to_string(), json!(s.fates.get(c)));
            }
            json!({"id": s.id, "orders": s.orders, "first_seq": s.first_seq,
                "answered": s.answered, "unanswered": s.unanswered,
                "answered_twice": s.answered_twice, "sent_twice": s.sent_twice,
                "voided": s.voided, "fates": fates,
                "origin_to_route_ns": {"p50": q(&s.latency, 0.5), "p99": q(&s.latency, 0.99),
                    "max": s.latency.max()}})
        })
        .collect();
    json!({"clean": r.is_clean(), "router_running": r.router_running,
        "out_records": r.out_records, "strategies": per,
        "problems": r.problems.iter().map(ToString::to_string).collect::<Vec<_>>()})
}

fn print_text(r: &AuditReport) {
    for p in &r.problems {
        println!("{p}");
    }
    for s in r.strategies.iter().filter(|s| s.voided > 0) {
        println!(
            "{}: {} fates of orders lost in a power cut (the order queue's history was rewritten) are void, not checked",
            s.id, s.voided
        );
    }
    // One column per fate, in the order of the rows' cells.
    let mut header: Vec<String> = [
        "strategy",
        "orders",
        "answered",
        "unanswered",
        "twice",
        "sent twice",
    ]
    .map(String::from)
    .to_vec();
    header.extend(FateCode::ALL.iter().map(|c| c.name().to_string()));
    header.extend(["o2r p50", "o2r p99"].map(String::from));
    let mut rows = vec![header];
    for s in &r.strategies {
        let mut row = vec![
            s.id.clone(),
            s.orders.to_string(),
            s.answered.to_string(),
            s.unanswered.to_string(),
            s.answered_twice.to_string(),
            s.sent_twice.to_string(),
        ];
        row.extend(FateCode::ALL.iter().map(|c| s.fates.get(*c).to_string()));
        row.push(duration_ns(q(&s.latency, 0.5)));
        row.push(duration_ns(q(&s.latency, 0.99)));
        rows.push(row);
    }
    let numeric: Vec<bool> = (0..14).map(|i| i > 0).collect();
    print!("{}", output::table(&rows, &numeric, ""));
    println!(
        "router/out: {} records{}",
        r.out_records,
        if r.router_running {
            " (a router is running: orders it is working on show as unanswered)"
        } else {
            ""
        }
    );
    if r.is_clean() {
        println!("audit: clean");
    } else {
        println!("audit: {} problems", r.problems.len());
    }
}
