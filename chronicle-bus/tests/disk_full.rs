//! Markers on a full file system (a real ENOSPC on a small tmpfs; needs root, skipped with a
//! message otherwise): renewing a LEASE or writing READY fails with an error, the previous marker
//! stays intact and parseable, no temporary is left, and it works again once space is freed.

#[path = "../../chronicle-core/tests/tmpfs/mod.rs"]
mod tmpfs;

use std::io::Write as _;
use std::time::Duration;

use chronicle_bus::{BusLayout, Lease, StrategyConfig, StrategyEndpoints};
use chronicle_core::{Preallocate, WriterConfig};

#[test]
fn markers_on_a_full_disk_fail_cleanly_and_keep_the_previous_version() {
    let dir = tempfile::tempdir().unwrap();
    let Some(_guard) = tmpfs::mount_or_skip(dir.path(), "disk-full marker test") else {
        return;
    };
    let layout = BusLayout::create(dir.path().join("bus")).unwrap();
    let mut ep = StrategyEndpoints::open(
        &layout,
        "s1",
        StrategyConfig {
            writer: WriterConfig {
                segment_size: 64 << 10,
                preallocate: Preallocate::Inline,
                ..WriterConfig::default()
            },
            lease_ttl: Duration::from_secs(60),
            file_mode: 0o660,
        },
    )
    .unwrap();
    let before = Lease::read(&layout.strategy_lease("s1").unwrap()).unwrap();
    // Fill the file system to the last byte.
    let filler = dir.path().join("filler");
    let mut f = std::fs::File::create(&filler).unwrap();
    while f.write(&[0xEE; 4096]).is_ok_and(|n| n > 0) {}
    while f.write(&[0xEE]).is_ok_and(|n| n == 1) {}
    let e = ep.renew_lease().unwrap_err();
    assert!(e.to_string().contains("No space left"), "{e}");
    let e = ep.mark_ready().unwrap_err();
    assert!(e.to_string().contains("No space left"), "{e}");
    // The previous LEASE is intact, READY absent (never half-written), no temporaries.
    assert_eq!(
        Lease::read(&layout.strategy_lease("s1").unwrap()).unwrap(),
        before
    );
    assert!(!layout.strategy_ready("s1").unwrap().exists());
    let strays: Vec<_> = std::fs::read_dir(layout.strategy_dir("s1").unwrap())
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().contains(".tmp."))
        .collect();
    assert!(strays.is_empty(), "{strays:?}");
    // Space back: both work.
    drop(f);
    std::fs::remove_file(&filler).unwrap();
    ep.renew_lease().unwrap();
    ep.mark_ready().unwrap();
    assert!(
        Lease::read(&layout.strategy_lease("s1").unwrap())
            .unwrap()
            .heartbeat_ns
            >= before.heartbeat_ns
    );
    ep.close().unwrap();
}
