//! `chronicle-compare instructions`: instruction counts of the hot operations under
//! valgrind's callgrind, checked against a baseline kept in the repository.
//!
//! Wall-clock numbers on a shared, virtualised machine move by tens of percent from one run
//! to the next; the number of instructions an operation retires does not. This gate counts,
//! per operation, the instructions of `N` calls made from one `#[no_mangle]` function that
//! callgrind collects alone (`--toggle-collect`), after `N` untimed warm-up calls:
//!
//! | operation | what one call is |
//! |---|---|
//! | `append_64` | `QueueWriter::append` of a 64-byte payload (default `WriterConfig`, no roll) |
//! | `batch16_64` | one record of a `QueueWriter::batch` of 16 records of 64 bytes |
//! | `read_64` | `QueueReader::next` of a 64-byte record, CRC checked, payload folded |
//! | `drr_pair` | `LocalScheduler::enqueue` + `try_dequeue` against 8 tenants' backlog |
//! | `fanin_step` | `FanInReader::next` (live merge) over 4 sources with interleaved stamps |
//!
//! ```text
//! cargo run --release --manifest-path benches/compare/Cargo.toml -- instructions          # check
//! cargo run --release --manifest-path benches/compare/Cargo.toml -- instructions --write  # rebaseline
//! ```
//!
//! The check fails (exit status 1) when any operation costs more than 10 % over its
//! baseline and names the operation; it reports a drop of more than 10 % too, so that an
//! improvement is locked in by rebaselining. Counts depend on the compiler: rebaseline
//! after a toolchain change, in the same commit.

use std::fmt::Write as _;
use std::hint::black_box;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context as _, Result, anyhow, bail};
use chronicle_bus::sched::{LocalScheduler, SchedulerConfig, Task, TenantKey};
use chronicle_bus::{FanInConfig, FanInReader, MergeMode};
use chronicle_core::{QueueReader, QueueWriter, ReaderConfig, WriterConfig};

/// `--help` text.
pub const HELP: &str = "\
chronicle-compare instructions: instruction counts of the hot operations under callgrind

usage: chronicle-compare instructions [--baseline FILE] [--write] [--iters N]

  --baseline FILE   baseline file (default benches/compare/instructions.baseline)
  --write           measure and write the baseline instead of checking against it
  --iters N         measured calls per operation (default 20000)
  --help            this text

Needs valgrind (Debian package valgrind). Exit status 1 when an operation costs more
than 10 % over its baseline (or its baseline is missing), 2 on a usage error.
";

/// The operations, in report order.
pub const OPS: [&str; 5] = [
    "append_64",
    "batch16_64",
    "read_64",
    "drr_pair",
    "fanin_step",
];

/// Records per batch in `batch16_64`.
const BATCH: u64 = 16;

/// The allowed rise (and the drop that asks for a rebaseline), as a fraction.
const TOLERANCE: f64 = 0.10;

const PAYLOAD: [u8; 64] = [0x5a; 64];
const FANIN_SOURCES: u64 = 4;
const TENANTS: u64 = 8;

/// Parsed options.
#[derive(Debug, Clone)]
pub struct Options {
    /// The baseline file.
    pub baseline: PathBuf,
    /// Write the baseline instead of checking.
    pub write: bool,
    /// Measured calls per operation.
    pub iters: u64,
}

impl Options {
    /// Parses the arguments after `instructions`; `Ok(None)` for `--help`.
    ///
    /// # Errors
    /// An unknown option or a bad value.
    pub fn parse(args: impl Iterator<Item = String>) -> Result<Option<Self>> {
        let mut o = Self {
            baseline: Path::new(env!("CARGO_MANIFEST_DIR")).join("instructions.baseline"),
            write: false,
            iters: 20_000,
        };
        let mut args = args.peekable();
        while let Some(a) = args.next() {
            match a.as_str() {
                "--help" | "-h" => return Ok(None),
                "--write" => o.write = true,
                "--baseline" => {
                    o.baseline = args.next().context("--baseline needs a file")?.into();
                }
                "--iters" => {
                    let v = args.next().context("--iters needs a number")?;
                    o.iters = v
                        .parse()
                        .ok()
                        .filter(|&n| n > 0)
                        .with_context(|| format!("--iters: `{v}` is not a positive number"))?;
                }
                other => bail!("unknown option `{other}`"),
            }
        }
        Ok(Some(o))
    }
}

/// Runs the gate: measures every operation under callgrind, then writes or checks the
/// baseline. `Ok(false)` when the check failed.
///
/// # Errors
/// valgrind missing or failing, an unreadable callgrind output or baseline.
pub fn run(o: &Options) -> Result<bool> {
    let exe = std::env::current_exe().context("locating this executable")?;
    let work = std::env::temp_dir().join(format!("chronicle-instr-{}", std::process::id()));
    std::fs::create_dir_all(&work).with_context(|| format!("creating {}", work.display()))?;
    let measured = OPS
        .iter()
        .map(|op| measure(&exe, &work, op, o.iters).map(|n| (*op, n)))
        .collect::<Result<Vec<_>>>();
    let _ = std::fs::remove_dir_all(&work);
    let measured = measured?;
    if o.write {
        write_baseline(&o.baseline, &measured)?;
        print!("{}", table(&measured, None));
        println!("baseline written to {}", o.baseline.display());
        return Ok(true);
    }
    let text = std::fs::read_to_string(&o.baseline).with_context(|| {
        format!(
            "reading the baseline {} (create it with `instructions --write`)",
            o.baseline.display()
        )
    })?;
    let baseline = parse_baseline(&text)
        .with_context(|| format!("parsing the baseline {}", o.baseline.display()))?;
    print!("{}", table(&measured, Some(&baseline)));
    for note in provenance_notes(&text) {
        println!("{note}");
    }
    let verdict = check(&measured, &baseline);
    for line in &verdict.lines {
        println!("{line}");
    }
    if !verdict.ok {
        println!(
            "to accept new counts: cargo run --release --manifest-path benches/compare/Cargo.toml \
             -- instructions --write, and commit {} with the reason",
            o.baseline.display()
        );
    }
    Ok(verdict.ok)
}

/// Instructions per call of `op`, from one callgrind run of this executable.
fn measure(exe: &Path, work: &Path, op: &str, iters: u64) -> Result<f64> {
    let out = work.join(format!("{op}.callgrind"));
    let data = work.join(op);
    let status = Command::new("valgrind")
        .arg("--tool=callgrind")
        .arg(format!("--callgrind-out-file={}", out.display()))
        .arg(format!("--toggle-collect=chronicle_gate_{op}"))
        .arg("--quiet")
        .arg(exe)
        .args(["instructions-child", op, &iters.to_string()])
        .arg(&data)
        .status();
    let status = match status {
        Ok(s) => s,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            bail!("valgrind is not installed (Debian package `valgrind`)")
        }
        Err(e) => return Err(anyhow!(e).context("starting valgrind")),
    };
    if !status.success() {
        bail!("{op}: the callgrind run failed ({status})");
    }
    let text = std::fs::read_to_string(&out)
        .with_context(|| format!("reading callgrind output {}", out.display()))?;
    let total = callgrind_total(&text)
        .with_context(|| format!("{}: no `summary:` or `totals:` line", out.display()))?;
    if total == 0 {
        bail!("{op}: callgrind collected no instructions (was chronicle_gate_{op} inlined away?)");
    }
    // u64 -> f64: counts far below 2^53.
    Ok(total as f64 / iters as f64)
}

/// The collected instruction count (`Ir`, the first event) of a callgrind output file.
fn callgrind_total(text: &str) -> Option<u64> {
    let line = text
        .lines()
        .find(|l| l.starts_with("totals:"))
        .or_else(|| text.lines().find(|l| l.starts_with("summary:")))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

fn write_baseline(path: &Path, measured: &[(&str, f64)]) -> Result<()> {
    let mut out = String::from(
        "# Instructions per call under callgrind, checked by\n\
         #   cargo run --release --manifest-path benches/compare/Cargo.toml -- instructions\n\
         # and rewritten with `-- instructions --write` (see benches/compare/src/instr.rs).\n",
    );
    let _ = writeln!(out, "# rustc: {}", rustc_version());
    let _ = writeln!(out, "# cpu: {}", cpu_model());
    for (op, n) in measured {
        let _ = writeln!(out, "{op} {n:.1}");
    }
    std::fs::write(path, out).with_context(|| format!("writing {}", path.display()))
}

fn rustc_version() -> String {
    Command::new("rustc")
        .arg("--version")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .map_or_else(|| "unknown".to_owned(), |s| s.trim().to_owned())
}

/// The CPU's model name: glibc picks its `memcpy` by CPU features, so counts can move a
/// little between machines.
fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|t| {
            t.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|m| m.trim().to_owned())
        })
        .unwrap_or_else(|| "unknown".to_owned())
}

/// Where this run's toolchain or CPU differs from the one the baseline names.
fn provenance_notes(text: &str) -> Vec<String> {
    let mut notes = Vec::new();
    for (key, now) in [("# rustc:", rustc_version()), ("# cpu:", cpu_model())] {
        if let Some(then) = text.lines().find_map(|l| l.strip_prefix(key)) {
            let then = then.trim();
            if then != now {
                notes.push(format!(
                    "note: the baseline was measured with {} `{then}`, this run uses `{now}`",
                    key.trim_start_matches("# ").trim_end_matches(':')
                ));
            }
        }
    }
    notes
}

/// `op count` lines; `#` starts a comment.
fn parse_baseline(text: &str) -> Result<Vec<(String, f64)>> {
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.split('#').next().unwrap_or("").trim();
        if line.is_empty() {
            continue;
        }
        let mut words = line.split_whitespace();
        let (Some(op), Some(n), None) = (words.next(), words.next(), words.next()) else {
            bail!("line {}: expected `operation instructions`", i + 1);
        };
        let n: f64 = n
            .parse()
            .ok()
            .filter(|n: &f64| n.is_finite() && *n > 0.0)
            .with_context(|| format!("line {}: `{n}` is not a positive number", i + 1))?;
        out.push((op.to_owned(), n));
    }
    Ok(out)
}

struct Verdict {
    ok: bool,
    lines: Vec<String>,
}

fn check(measured: &[(&str, f64)], baseline: &[(String, f64)]) -> Verdict {
    let mut v = Verdict {
        ok: true,
        lines: Vec::new(),
    };
    for (op, n) in measured {
        let Some((_, base)) = baseline.iter().find(|(b, _)| b == op) else {
            v.ok = false;
            v.lines.push(format!("FAIL {op}: no baseline"));
            continue;
        };
        let ratio = n / base;
        if ratio > 1.0 + TOLERANCE {
            v.ok = false;
            v.lines.push(format!(
                "FAIL {op}: {n:.1} instructions per call, {:+.1} % over the baseline {base:.1} \
                 (allowed +{:.0} %)",
                (ratio - 1.0) * 100.0,
                TOLERANCE * 100.0
            ));
        } else if ratio < 1.0 - TOLERANCE {
            v.lines.push(format!(
                "note {op}: {:.1} % under the baseline: rebaseline to keep the gain",
                (1.0 - ratio) * 100.0
            ));
        }
    }
    if v.ok {
        v.lines.push(format!(
            "ok: every operation within +{:.0} % of its baseline",
            TOLERANCE * 100.0
        ));
    }
    v
}

fn table(measured: &[(&str, f64)], baseline: Option<&[(String, f64)]>) -> String {
    let mut out = String::from("operation     instructions/call   baseline   change\n");
    for (op, n) in measured {
        let base = baseline.and_then(|b| b.iter().find(|(o, _)| o == op).map(|(_, v)| *v));
        let _ = match base {
            Some(b) => writeln!(
                out,
                "{op:<13} {n:>17.1} {b:>10.1} {:>+7.1} %",
                (n / b - 1.0) * 100.0
            ),
            None => writeln!(out, "{op:<13} {n:>17.1} {:>10} {:>9}", "-", "-"),
        };
    }
    out
}

/// The child: `instructions-child OP ITERS DIR`, run under callgrind by [`run`].
///
/// # Errors
/// A bad argument or any error of the operation's setup.
pub fn child(mut args: impl Iterator<Item = String>) -> Result<()> {
    let op = args.next().context("missing operation")?;
    let iters: u64 = args
        .next()
        .context("missing count")?
        .parse()
        .context("bad count")?;
    let dir = PathBuf::from(args.next().context("missing directory")?);
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    match op.as_str() {
        "append_64" => {
            let mut w = writer(&dir.join("q"))?;
            append_loop(&mut w, iters)?;
            chronicle_gate_append_64(&mut w, iters)
        }
        "batch16_64" => {
            let mut w = writer(&dir.join("q"))?;
            let iters = iters.div_ceil(BATCH) * BATCH;
            batch_loop(&mut w, iters)?;
            chronicle_gate_batch16_64(&mut w, iters)
        }
        "read_64" => {
            let path = dir.join("q");
            let mut w = writer(&path)?;
            append_loop(&mut w, 2 * iters)?;
            let mut r = QueueReader::open(&path, ReaderConfig::default())?;
            read_loop(&mut r, iters)?;
            chronicle_gate_read_64(&mut r, iters)
        }
        "drr_pair" => {
            let mut s = LocalScheduler::new(
                SchedulerConfig::default()
                    .with_max_global(1 << 20)
                    .with_max_per_tenant(1 << 16),
            )
            .map_err(|e| anyhow!("{e:?}"))?;
            for t in 0..TENANTS {
                for j in 0..8 {
                    let _queued = s
                        .enqueue(TenantKey::new(t), Task::new(j))
                        .map_err(|e| anyhow!("{:?}", e.reason()))?;
                }
            }
            drr_loop(&mut s, iters)?;
            chronicle_gate_drr_pair(&mut s, iters)
        }
        "fanin_step" => {
            let mut paths = Vec::new();
            let mut ws = Vec::new();
            for i in 0..FANIN_SOURCES {
                let p = dir.join(format!("s{i}"));
                ws.push(writer(&p)?);
                paths.push(p);
            }
            // Interleaved stamps, a different source every step, one spare round at the end
            // so the measured steps never wait for the last source.
            let rounds = (2 * iters).div_ceil(FANIN_SOURCES) + 1;
            for k in 0..rounds {
                for (i, w) in (0u64..).zip(ws.iter_mut()) {
                    w.append_at(1, 1_000_000 + k * FANIN_SOURCES + i, &PAYLOAD)?;
                }
            }
            let mut f = FanInReader::new(FanInConfig {
                mode: MergeMode::Live,
                max_hold: None,
                ..FanInConfig::default()
            })?;
            for (i, p) in paths.iter().enumerate() {
                f.add_source(&format!("s{i}"), p)?;
            }
            fanin_loop(&mut f, iters)?;
            chronicle_gate_fanin_step(&mut f, iters)
        }
        other => bail!("unknown operation `{other}`"),
    }
}

fn writer(path: &Path) -> Result<QueueWriter> {
    Ok(QueueWriter::open(
        path,
        WriterConfig {
            segment_size: 64 << 20,
            ..WriterConfig::default()
        },
    )?)
}

#[inline(always)]
fn append_loop(w: &mut QueueWriter, iters: u64) -> Result<()> {
    for _ in 0..iters {
        black_box(w.append(1, black_box(&PAYLOAD))?);
    }
    Ok(())
}

#[inline(always)]
fn batch_loop(w: &mut QueueWriter, iters: u64) -> Result<()> {
    for _ in 0..iters / BATCH {
        let mut b = w.batch();
        for _ in 0..BATCH {
            black_box(b.append(1, black_box(&PAYLOAD))?);
        }
    }
    Ok(())
}

#[inline(always)]
fn read_loop(r: &mut QueueReader, iters: u64) -> Result<()> {
    for _ in 0..iters {
        let m = r.next()?.context("queue ended early")?;
        black_box(m.payload());
    }
    Ok(())
}

#[inline(always)]
fn drr_loop(s: &mut LocalScheduler<u64>, iters: u64) -> Result<()> {
    for i in 0..iters {
        let queued = s
            .enqueue(TenantKey::new(i % TENANTS), Task::new(i))
            .map_err(|e| anyhow!("{:?}", e.reason()))?;
        let _queued = black_box(queued);
        let _dispatched = black_box(s.try_dequeue());
    }
    Ok(())
}

#[inline(always)]
fn fanin_loop(f: &mut FanInReader, iters: u64) -> Result<()> {
    for _ in 0..iters {
        let m = f.next()?.context("merge ended early")?;
        black_box(m.payload().len());
    }
    Ok(())
}

// The measured functions: callgrind collects only inside these (by their unmangled names).

#[unsafe(no_mangle)]
#[inline(never)]
fn chronicle_gate_append_64(w: &mut QueueWriter, iters: u64) -> Result<()> {
    append_loop(w, iters)
}

#[unsafe(no_mangle)]
#[inline(never)]
fn chronicle_gate_batch16_64(w: &mut QueueWriter, iters: u64) -> Result<()> {
    batch_loop(w, iters)
}

#[unsafe(no_mangle)]
#[inline(never)]
fn chronicle_gate_read_64(r: &mut QueueReader, iters: u64) -> Result<()> {
    read_loop(r, iters)
}

#[unsafe(no_mangle)]
#[inline(never)]
fn chronicle_gate_drr_pair(s: &mut LocalScheduler<u64>, iters: u64) -> Result<()> {
    drr_loop(s, iters)
}

#[unsafe(no_mangle)]
#[inline(never)]
fn chronicle_gate_fanin_step(f: &mut FanInReader, iters: u64) -> Result<()> {
    fanin_loop(f, iters)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::indexing_slicing)]
    use super::*;

    #[test]
    fn baseline_round_trip_and_check() {
        let text = "# comment\nappend_64 100.0\nread_64 50.5 # trailing\n\n";
        let b = parse_baseline(text).unwrap();
        assert_eq!(
            b,
            vec![("append_64".into(), 100.0), ("read_64".into(), 50.5)]
        );
        assert!(parse_baseline("append_64").is_err());
        assert!(parse_baseline("append_64 -3").is_err());
        assert!(parse_baseline("append_64 1 2").is_err());

        let ok = check(&[("append_64", 109.0), ("read_64", 30.0)], &b);
        assert!(ok.ok);
        assert!(ok.lines.iter().any(|l| l.starts_with("note read_64")));
        let rise = check(&[("append_64", 111.0)], &b);
        assert!(!rise.ok);
        assert!(
            rise.lines[0].starts_with("FAIL append_64"),
            "{:?}",
            rise.lines
        );
        let missing = check(&[("drr_pair", 1.0)], &b);
        assert!(!missing.ok);
    }

    #[test]
    fn reads_the_collected_total() {
        let text = "version: 1\ncmd: x\nevents: Ir\nfn=(1) f\n0 12\nsummary: 4242\ntotals: 4242\n";
        assert_eq!(callgrind_total(text), Some(4242));
        assert_eq!(callgrind_total("summary: 7\n"), Some(7));
        assert_eq!(callgrind_total("events: Ir\n"), None);
    }

    #[test]
    fn every_operation_runs_outside_callgrind() {
        let dir = std::env::temp_dir().join(format!("chronicle-instr-test-{}", std::process::id()));
        for op in OPS {
            let args = [
                op.to_owned(),
                "50".into(),
                dir.join(op).display().to_string(),
            ];
            child(args.into_iter()).unwrap();
        }
        let _ = std::fs::remove_dir_all(&dir);
    }
}
