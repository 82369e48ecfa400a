//! The writer's maintenance thread follows `WriterConfig::maintenance_cpus` and
//! `QueueWriter::pin_maintenance`. Its own test binary: no other writer's thread shares the name.

use std::time::Duration;

use chronicle_core::{Preallocate, QueueWriter, WriterConfig};

fn small() -> WriterConfig {
    WriterConfig {
        segment_size: 64 << 10,
        preallocate: Preallocate::Background,
        ..WriterConfig::default()
    }
}

/// The CPU list of this process's thread named `name`, from /proc.
fn thread_cpus(name: &str) -> Option<String> {
    for t in std::fs::read_dir("/proc/self/task").ok()?.flatten() {
        let comm = std::fs::read_to_string(t.path().join("comm")).unwrap_or_default();
        if comm.trim() == name {
            let status = std::fs::read_to_string(t.path().join("status")).ok()?;
            return status
                .lines()
                .find_map(|l| l.strip_prefix("Cpus_allowed_list:"))
                .map(|s| s.trim().to_string());
        }
    }
    None
}

#[test]
fn maintenance_thread_runs_on_the_configured_cpus() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = WriterConfig {
        maintenance_cpus: Some(vec![0]),
        ..small()
    };
    let mut w = QueueWriter::open(dir.path().join("q"), cfg).unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while thread_cpus("chronicle-maint").as_deref() != Some("0") {
        assert!(
            std::time::Instant::now() < deadline,
            "maintenance thread mask: {:?}",
            thread_cpus("chronicle-maint")
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    // Re-pinned at run time (to every CPU this thread may use).
    let all = chronicle_core::os::thread_affinity().unwrap();
    w.pin_maintenance(&all);
    let want = if all.len() == 1 {
        all[0].to_string()
    } else {
        format!("{}-{}", all[0], all[all.len() - 1])
    };
    while thread_cpus("chronicle-maint").as_deref() != Some(want.as_str()) {
        assert!(std::time::Instant::now() < deadline, "not re-pinned");
        std::thread::sleep(Duration::from_millis(5));
    }
    w.append(1, b"x").unwrap();
}
