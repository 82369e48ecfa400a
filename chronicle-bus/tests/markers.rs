//! READY/LEASE markers, strategy endpoints and reader registrations.
#![allow(clippy::unwrap_used)]

mod bus_common;

use std::path::Path;
use std::time::Duration;

use bus_common::{dead_pid, small_strategy};
use chronicle_bus::{
    BusError, BusLayout, Lease, LeaseState, ReaderRegistration, Ready, StrategyEndpoints,
};
use chronicle_core::{QueueDir, QueueReader, ReaderConfig, StartAt, list_readers};

#[test]
fn markers_round_trip_and_bad_input_is_a_typed_error() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path().join("LEASE");
    let l = Lease::for_current_process(1_000, 500);
    l.write(&p, 0o660).unwrap();
    assert_eq!(Lease::read(&p).unwrap(), l);
    let r = Ready::new(0xdead_beef, 42);
    let rp = d.path().join("READY");
    r.write(&rp, 0o660).unwrap();
    assert_eq!(Ready::read(&rp).unwrap(), r);
    // No temporary file is left behind.
    let names: Vec<_> = std::fs::read_dir(d.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names.len(), 2, "{names:?}");

    let bad: &[&[u8]] = &[
        b"",
        b"chronicle-lease 2\npid 1\nstart_time 1\nheartbeat_ns 1\nexpiry_ns 1\n",
        b"chronicle-lease 1\npid 1\nstart_time 1\nheartbeat_ns 1\n",
        b"chronicle-lease 1\npid 1\npid 2\nstart_time 1\nheartbeat_ns 1\nexpiry_ns 1\n",
        b"chronicle-lease 1\npid -1\nstart_time 1\nheartbeat_ns 1\nexpiry_ns 1\n",
        b"chronicle-lease 1\npid 99999999999\nstart_time 1\nheartbeat_ns 1\nexpiry_ns 1\n",
        b"chronicle-lease 1\npid 1\nstart_time 99999999999999999999999\nheartbeat_ns 1\nexpiry_ns 1\n",
        b"chronicle-lease 1\npid\n",
        b"\xff\xfe",
    ];
    for (i, b) in bad.iter().enumerate() {
        std::fs::write(&p, b).unwrap();
        match Lease::read(&p) {
            Err(BusError::BadMarker { path, .. }) => assert_eq!(path, p),
            other => panic!("case {i}: {other:?}"),
        }
    }
    // Oversized.
    std::fs::write(&p, vec![b'a'; 5000]).unwrap();
    assert!(matches!(Lease::read(&p), Err(BusError::BadMarker { .. })));
    // Unknown keys are ignored.
    std::fs::write(
        &p,
        b"chronicle-lease 1\nfuture 7\npid 1\nstart_time 1\nheartbeat_ns 1\nexpiry_ns 1\n",
    )
    .unwrap();
    assert_eq!(Lease::read(&p).unwrap().pid, 1);
    // Bad READY uid.
    std::fs::write(
        &rp,
        b"chronicle-ready 1\nqueue_uid xyz\ncreated_ns 1\npid 1\n",
    )
    .unwrap();
    assert!(matches!(Ready::read(&rp), Err(BusError::BadMarker { .. })));
    // A symlink is refused, not followed.
    let target = d.path().join("target");
    l.write(&target, 0o660).unwrap();
    let link = d.path().join("link");
    std::os::unix::fs::symlink(&target, &link).unwrap();
    assert!(matches!(
        Lease::read(&link),
        Err(BusError::BadMarker { .. })
    ));
    // A directory is refused.
    let dir = d.path().join("dir");
    std::fs::create_dir(&dir).unwrap();
    assert!(Lease::read(&dir).is_err());
    // Missing is "gone".
    assert!(Lease::read(&d.path().join("nope")).unwrap_err().is_gone());
}

#[test]
fn lease_staleness() {
    let now = chronicle_core::os::realtime_ns();
    let live = Lease::for_current_process(now, 1_000_000_000);
    assert_eq!(live.state(now), LeaseState::Live);
    assert_eq!(live.state(now + 2_000_000_000), LeaseState::Expired);
    let reused = Lease {
        start_time: live.start_time + 1,
        ..live
    };
    assert_eq!(reused.state(now), LeaseState::HolderGone);
    let dead = Lease {
        pid: dead_pid(),
        ..live
    };
    assert_eq!(dead.state(now), LeaseState::HolderGone);
    assert!(dead.is_stale(now));
}

#[test]
fn strategy_lifecycle_writes_markers_in_order() {
    let d = tempfile::tempdir().unwrap();
    let layout = BusLayout::create(d.path()).unwrap();
    assert!(StrategyEndpoints::open(&layout, "../x", small_strategy()).is_err());
    let mut s = StrategyEndpoints::open(&layout, "s1", small_strategy()).unwrap();
    let ready = layout.strategy_ready("s1").unwrap();
    let lease = layout.strategy_lease("s1").unwrap();
    assert!(!ready.exists(), "READY before mark_ready");
    assert!(
        layout
            .strategy_orders("s1")
            .unwrap()
            .join("queue.meta")
            .exists()
    );
    assert!(layout.doorbell().exists());
    let l = Lease::read(&lease).unwrap();
    assert_eq!(l.pid, std::process::id());
    s.writer().append(1, b"x").unwrap();
    s.mark_ready().unwrap();
    let r = Ready::read(&ready).unwrap();
    assert_eq!(r.queue_uid, s.writer().geometry().queue_uid);
    std::thread::sleep(Duration::from_millis(2));
    s.renew_lease().unwrap();
    assert!(Lease::read(&lease).unwrap().heartbeat_ns > l.heartbeat_ns);
    // Another (simulated) live holder: a lease of this process is "ours", so forge one held by
    // the parent of this process (alive, different pid).
    let ppid = std::os::unix::process::parent_id();
    s.close().unwrap();
    assert!(!ready.exists() && !lease.exists());
    let now = chronicle_core::os::realtime_ns();
    let foreign = Lease {
        pid: ppid,
        start_time: chronicle_core::os::process_start_time(ppid).unwrap(),
        heartbeat_ns: now,
        expiry_ns: now + 60_000_000_000,
    };
    foreign.write(&lease, 0o660).unwrap();
    match StrategyEndpoints::open(&layout, "s1", small_strategy()) {
        Err(BusError::LeaseHeld { pid, .. }) => assert_eq!(pid, ppid),
        other => panic!("{other:?}"),
    }
    // A stale lease (dead holder) is taken over; a stale READY is removed on open.
    Lease {
        pid: dead_pid(),
        ..foreign
    }
    .write(&lease, 0o660)
    .unwrap();
    Ready::new(1, 1).write(&ready, 0o660).unwrap();
    let mut s = StrategyEndpoints::open(&layout, "s1", small_strategy()).unwrap();
    assert!(!ready.exists());
    assert_eq!(Lease::read(&lease).unwrap().pid, std::process::id());
    assert_eq!(
        s.writer().next_seq(),
        1,
        "queue recovered, sequence continues"
    );
    s.close().unwrap();
}

fn readers(q: &Path) -> Vec<String> {
    list_readers(&QueueDir::new(q))
        .unwrap()
        .into_iter()
        .map(|r| r.unwrap().name)
        .collect()
}

#[test]
fn reader_registration_registers_and_unregisters() {
    let d = tempfile::tempdir().unwrap();
    let layout = BusLayout::create(d.path()).unwrap();
    let mut s = StrategyEndpoints::open(&layout, "s1", small_strategy()).unwrap();
    s.writer().append(1, b"a").unwrap();
    let q = layout.strategy_orders("s1").unwrap();
    {
        let mut reg = ReaderRegistration::register(&q, "audit", StartAt::Earliest).unwrap();
        assert_eq!(readers(&q), vec!["audit".to_string()]);
        // Exclusive while registered.
        assert!(ReaderRegistration::register(&q, "audit", StartAt::Earliest).is_err());
        assert!(QueueReader::open(&q, ReaderConfig::named("audit")).is_err());
        reg.keepalive();
        assert_eq!(
            reg.reader().unwrap().next().unwrap().unwrap().payload(),
            b"a"
        );
        assert!(ReaderRegistration::register(&q, "bad/name", StartAt::Earliest).is_err());
    }
    assert!(readers(&q).is_empty());
    s.close().unwrap();
}
