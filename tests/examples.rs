//! The programs in `examples/` run, so they cannot rot: the quickstart with a small count, and
//! the feed, two strategies and the router together on one bus for a few seconds, after which
//! the bus's audit must be clean (every order answered exactly once, nothing sent twice).
//!
//! `cargo test` builds the examples before it runs this; the binaries sit in
//! `target/<profile>/examples/`, next to this test's own `deps/` directory.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use chronicle::bus::BusLayout;
use chronicle::bus::orders::audit;

fn example(name: &str) -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let profile_dir = exe.parent().and_then(|d| d.parent()).unwrap();
    let path = profile_dir.join("examples").join(name);
    assert!(
        path.exists(),
        "{} is missing: cargo test builds the examples first",
        path.display()
    );
    path
}

fn spawn(name: &str, args: &[&str]) -> Child {
    Command::new(example(name))
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

/// Waits for a child with a watchdog (a hang is a failure; no timing is asserted).
fn finish(child: Child, name: &str) -> Output {
    let pid = child.id();
    let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let flag = done.clone();
    std::thread::spawn(move || {
        let end = Instant::now() + Duration::from_secs(120);
        while Instant::now() < end {
            if flag.load(std::sync::atomic::Ordering::Relaxed) {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        // SAFETY: kill(2) on our own child's pid; at worst it has exited and the call fails.
        unsafe {
            libc::kill(pid as i32, libc::SIGKILL);
        }
    });
    let out = child.wait_with_output().unwrap();
    done.store(true, std::sync::atomic::Ordering::Relaxed);
    assert!(
        out.status.success(),
        "{name} failed: {:?}\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

#[test]
fn quickstart_runs() {
    let out = finish(spawn("quickstart", &["20000"]), "quickstart");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("read 20000 records"), "{text}");
}

#[test]
fn feed_strategies_and_router_run_together_and_the_audit_is_clean() {
    let dir = tempfile::tempdir().unwrap();
    let bus = dir.path().join("bus");
    let b = bus.to_str().unwrap();
    let feed = spawn("feed", &["--bus", b, "--rate", "2000", "--secs", "4"]);
    let router = spawn(
        "router",
        &["--bus", b, "--rate-limit", "1000", "--secs", "5"],
    );
    let s1 = spawn(
        "strategy",
        &["--bus", b, "--id", "s1", "--every", "2", "--secs", "3"],
    );
    let hot = spawn(
        "strategy",
        &["--bus", b, "--id", "hot", "--hot", "--secs", "3"],
    );
    let out_s1 = String::from_utf8_lossy(&finish(s1, "strategy s1").stdout).to_string();
    let out_hot = String::from_utf8_lossy(&finish(hot, "strategy hot").stdout).to_string();
    let out_feed = String::from_utf8_lossy(&finish(feed, "feed").stdout).to_string();
    let out_router = String::from_utf8_lossy(&finish(router, "router").stdout).to_string();
    assert!(out_feed.contains("sent"), "{out_feed}");
    assert!(out_s1.contains("fates read:"), "{out_s1}");
    assert!(out_hot.contains("fates read:"), "{out_hot}");
    assert!(out_router.contains("merged"), "{out_router}");
    let report = audit(&BusLayout::new(&bus)).unwrap();
    assert!(report.is_clean(), "{:#?}", report.problems);
    assert!(report.out_records > 0, "nothing was routed");
    assert_eq!(report.strategies.len(), 2);
    for s in &report.strategies {
        assert!(s.orders > 0, "{} wrote no orders", s.id);
        assert_eq!(s.answered, s.orders, "{}", s.id);
    }
}
