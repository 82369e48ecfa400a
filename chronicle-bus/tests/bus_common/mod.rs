//! Helpers shared by the bus tests: small endpoint configs, discovery polling, a dead pid.
#![allow(dead_code)]

use std::time::{Duration, Instant};

use chronicle_bus::{DiscoveryEvent, RemoveReason, RouterDiscovery, StrategyConfig};
use chronicle_core::{Preallocate, WriterConfig};

/// 64 KiB segments, an index entry every KiB, preallocated inline: small queues that roll often.
pub fn small_writer() -> WriterConfig {
    WriterConfig {
        segment_size: 64 << 10,
        index_stride: 1024,
        preallocate: Preallocate::Inline,
        ..WriterConfig::default()
    }
}

/// Strategy endpoints on `small_writer` queues.
pub fn small_strategy() -> StrategyConfig {
    StrategyConfig {
        writer: small_writer(),
        ..StrategyConfig::default()
    }
}

/// Polls until `pred` accepts the events gathered so far (watchdog: 10 s). With `force_rescan`
/// each poll first asks for a rescan (for discovery that only rescans when told to).
pub fn poll_until(
    d: &mut RouterDiscovery,
    force_rescan: bool,
    what: &str,
    mut pred: impl FnMut(&[DiscoveryEvent]) -> bool,
) -> Vec<DiscoveryEvent> {
    let end = Instant::now() + Duration::from_secs(10);
    let pause = if force_rescan {
        Duration::from_millis(1)
    } else {
        Duration::from_micros(200)
    };
    let mut all = Vec::new();
    loop {
        if force_rescan {
            d.request_rescan();
        }
        d.poll_into(&mut all).unwrap();
        if pred(&all) {
            return all;
        }
        assert!(
            Instant::now() < end,
            "timed out waiting for {what}: {all:?}"
        );
        std::thread::sleep(pause);
    }
}

/// Why the endpoint `id` was removed, if `ev` says it was.
pub fn removed(ev: &[DiscoveryEvent], id: &str) -> Option<RemoveReason> {
    ev.iter().find_map(|e| match e {
        DiscoveryEvent::Removed(ep, r) if ep.id == id => Some(*r),
        _ => None,
    })
}

/// The pid of a process that has exited and been reaped.
pub fn dead_pid() -> u32 {
    let mut c = std::process::Command::new("true").spawn().unwrap();
    let pid = c.id();
    c.wait().unwrap();
    pid
}
