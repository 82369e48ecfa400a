//! A small tmpfs mounted for one test (a real ENOSPC), unmounted when the guard drops. Needs
//! root; without it the test is skipped with a message (but not as root under CI).
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::Path;
use std::process::Command;
use std::time::Duration;

pub fn mount_tmpfs(at: &Path, size: &str) -> bool {
    Command::new("mount")
        .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
        .arg(at)
        .status()
        .is_ok_and(|s| s.success())
}

pub fn remount(at: &Path, size: &str) -> bool {
    Command::new("mount")
        .args(["-o", &format!("remount,size={size}")])
        .arg(at)
        .status()
        .is_ok_and(|s| s.success())
}

pub struct Unmount<'a>(&'a Path);
impl Drop for Unmount<'_> {
    fn drop(&mut self) {
        // A writer's maintenance thread may still be unmapping a retired segment: retry, then
        // detach lazily rather than leave the mount behind.
        for _ in 0..50 {
            let ok = Command::new("umount")
                .arg(self.0)
                .stderr(std::process::Stdio::null())
                .status()
                .is_ok_and(|s| s.success());
            if ok {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = Command::new("umount").arg("-l").arg(self.0).status();
    }
}

fn is_root() -> bool {
    // SAFETY: geteuid(2) has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// Mounts a 1 MiB tmpfs at `at`, or says that `what` is skipped and returns `None`.
pub fn mount_or_skip<'a>(at: &'a Path, what: &str) -> Option<Unmount<'a>> {
    if mount_tmpfs(at, "1M") {
        return Some(Unmount(at));
    }
    eprintln!("SKIPPED {what}: cannot mount a tmpfs here (needs root)");
    assert!(
        !(std::env::var("CI").is_ok_and(|v| v == "true") && is_root()),
        "running as root under CI but mount failed"
    );
    None
}
