//! Hostile input for the bus: the property-test twin of the `markers` fuzz target (same check,
//! from `tests/fuzz_checks/`), a replay of its kept corpus, hostile names, and READY/LEASE
//! markers or strategy directories that are symlinks to files outside the bus.
#![allow(clippy::unwrap_used, clippy::indexing_slicing)]

mod bus_common;
#[path = "../../chronicle-core/tests/common/mod.rs"]
mod common;
mod fuzz_checks;

use std::path::Path;
use std::time::Duration;

use bus_common::{poll_until, removed, small_strategy};
use chronicle_bus::{
    BusError, BusLayout, DiscoveryConfig, DiscoveryEvent, NameProblem, RemoveReason,
    RouterDiscovery, StrategyConfig, StrategyEndpoints, validate_name,
};
use common::corpus;
use fuzz_checks::*;
use proptest::prelude::*;

const READY_TEXT: &str = "chronicle-ready 1\nqueue_uid 00000000deadbeef\ncreated_ns 17\npid 42\n";
const LEASE_TEXT: &str =
    "chronicle-lease 1\npid 42\nstart_time 7\nheartbeat_ns 100\nexpiry_ns 200\n";

/// Valid marker text with a few bytes changed, lines dropped or duplicated, or plain noise.
fn marker_bytes() -> impl Strategy<Value = Vec<u8>> {
    let base = prop_oneof![Just(READY_TEXT), Just(LEASE_TEXT)];
    prop_oneof![
        proptest::collection::vec(any::<u8>(), 0..64),
        proptest::collection::vec(any::<u8>(), 0..1100),
        (
            base.clone(),
            proptest::collection::vec((any::<usize>(), any::<u8>()), 1..6)
        )
            .prop_map(|(t, edits)| {
                let mut b = t.as_bytes().to_vec();
                for (i, v) in edits {
                    let n = b.len();
                    b[i % n] = v;
                }
                b
            }),
        (
            base.clone(),
            proptest::collection::vec(any::<usize>(), 1..8)
        )
            .prop_map(|(t, picks)| {
                let lines: Vec<&str> = t.lines().collect();
                let mut out = lines[0].to_string();
                for p in picks {
                    out.push('\n');
                    out.push_str(lines[p % lines.len()]);
                }
                out.into_bytes()
            }),
        (base, "[0-9a-zA-Z +-]{0,30}", any::<usize>()).prop_map(|(t, v, at)| {
            // A value replaced by an arbitrary token (overflow, signs, spaces, hex).
            let mut lines: Vec<String> = t.lines().map(str::to_string).collect();
            let i = 1 + at % (lines.len() - 1);
            let key = lines[i].split(' ').next().unwrap().to_string();
            lines[i] = format!("{key} {v}");
            lines.join("\n").into_bytes()
        }),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, .. ProptestConfig::default() })]

    /// `markers`: arbitrary or mutated marker bytes parse to a marker or `BadMarker`, reading a
    /// file gives the same, and what parses round-trips.
    #[test]
    fn markers_never_panic(data in marker_bytes()) {
        markers(&data);
    }
}

#[test]
fn marker_edge_cases() {
    let big = format!("{READY_TEXT}{}", "x".repeat(2000));
    let cases: Vec<Vec<u8>> = vec![
        Vec::new(),
        b"\n".to_vec(),
        READY_TEXT.as_bytes().to_vec(),
        LEASE_TEXT.as_bytes().to_vec(),
        READY_TEXT
            .replace("deadbeef", "ffffffffffffffff0")
            .into_bytes(),
        LEASE_TEXT.replace("pid 42", "pid 4294967296").into_bytes(),
        LEASE_TEXT
            .replace("100", "18446744073709551616")
            .into_bytes(),
        LEASE_TEXT.replace("100", "+100").into_bytes(),
        LEASE_TEXT.replace('\n', "\r\n").into_bytes(),
        format!("{LEASE_TEXT}pid 43\n").into_bytes(),
        vec![0xff, 0xfe, 0x00],
        big.into_bytes(),
    ];
    for c in cases {
        markers(&c);
    }
}

/// The kept corpus of the fuzz target replays without a panic.
#[test]
fn corpus_markers() {
    for (path, bytes) in corpus("markers") {
        eprintln!("replaying {}", path.display());
        markers(&bytes);
    }
}

/// Names with `..`, `/`, control characters, a leading `.`, empty or overlong are refused with
/// `InvalidName` by every layout accessor and by `StrategyEndpoints::open`, and nothing is
/// created.
#[test]
fn hostile_bus_names_are_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let l = BusLayout::create(tmp.path().join("bus")).unwrap();
    let long = "s".repeat(65);
    let bad: Vec<(&str, NameProblem)> = vec![
        ("", NameProblem::Empty),
        (".", NameProblem::LeadingDot),
        ("..", NameProblem::LeadingDot),
        ("../evil", NameProblem::LeadingDot),
        (".READY", NameProblem::LeadingDot),
        ("a/../../b", NameProblem::BadCharacter),
        ("a/b", NameProblem::BadCharacter),
        ("/etc", NameProblem::BadCharacter),
        ("a\nb", NameProblem::BadCharacter),
        ("a\0b", NameProblem::BadCharacter),
        ("\x1b[31mred", NameProblem::BadCharacter),
        ("a\rb", NameProblem::BadCharacter),
        ("tab\t", NameProblem::BadCharacter),
        ("sp ace", NameProblem::BadCharacter),
        ("ünï", NameProblem::BadCharacter),
        (&long, NameProblem::TooLong),
    ];
    let invalid = |r: Result<std::path::PathBuf, BusError>, name: &str, want: NameProblem| match r {
        Err(BusError::InvalidName { name: n, problem }) => {
            assert_eq!(n, name);
            assert_eq!(problem, want, "{name:?}");
        }
        other => panic!("{name:?}: expected InvalidName, got {other:?}"),
    };
    for (name, want) in bad {
        match validate_name(name) {
            Err(BusError::InvalidName { problem, .. }) => assert_eq!(problem, want, "{name:?}"),
            other => panic!("{name:?}: {other:?}"),
        }
        invalid(l.feed(name), name, want);
        invalid(l.strategy_dir(name), name, want);
        invalid(l.strategy_orders(name), name, want);
        invalid(l.strategy_ready(name), name, want);
        invalid(l.strategy_lease(name), name, want);
        invalid(l.router_queue(name), name, want);
        match StrategyEndpoints::open(&l, name, cfg()) {
            Err(BusError::InvalidName { .. }) => {}
            other => panic!("{name:?}: StrategyEndpoints::open gave {other:?}"),
        }
    }
    assert_eq!(
        std::fs::read_dir(l.strategies_dir()).unwrap().count(),
        0,
        "a refused name created something"
    );
    assert_eq!(std::fs::read_dir(tmp.path()).unwrap().count(), 1);
}

fn cfg() -> StrategyConfig {
    StrategyConfig {
        lease_ttl: Duration::from_secs(600),
        ..small_strategy()
    }
}

fn rescans_only() -> DiscoveryConfig {
    DiscoveryConfig {
        rescan_interval: Duration::from_millis(1),
        use_inotify: false,
    }
}

/// A few forced rescans: the events they produce (for "nothing happens" checks).
fn settle(d: &mut RouterDiscovery) -> Vec<DiscoveryEvent> {
    let mut all = Vec::new();
    for _ in 0..5 {
        std::thread::sleep(Duration::from_millis(2));
        d.request_rescan();
        d.poll_into(&mut all).unwrap();
    }
    all
}

fn attached(d: &RouterDiscovery) -> Vec<String> {
    d.attached().map(|e| e.id.clone()).collect()
}

/// Replaces `marker` by a symlink to a copy of itself outside the bus (valid content).
fn swap_for_symlink(marker: &Path, outside: &Path) {
    let target = outside.join(marker.file_name().unwrap());
    std::fs::copy(marker, &target).unwrap();
    std::fs::remove_file(marker).unwrap();
    std::os::unix::fs::symlink(&target, marker).unwrap();
}

/// A READY or LEASE that becomes a symlink (to a valid marker outside the bus) detaches the
/// strategy with `MarkerInvalid`; a strategy whose marker is a symlink from the start is never
/// attached; a strategy directory swapped for a symlink to a strategy outside the bus detaches
/// and never re-attaches. The link targets are never modified.
#[test]
fn symlinked_markers_and_directories_are_ignored() {
    let tmp = tempfile::tempdir().unwrap();
    let bus = BusLayout::create(tmp.path().join("bus")).unwrap();
    let outside = tempfile::tempdir().unwrap();
    let mut disc = RouterDiscovery::new(&bus, rescans_only()).unwrap();
    let mut s = Vec::new();
    for id in ["r", "l", "d"] {
        std::fs::create_dir_all(outside.path().join(id)).unwrap();
        let mut e = StrategyEndpoints::open(&bus, id, cfg()).unwrap();
        e.mark_ready().unwrap();
        s.push(e);
    }
    let adds = |ev: &[DiscoveryEvent]| {
        ev.iter()
            .filter(|e| matches!(e, DiscoveryEvent::Added(_)))
            .count()
    };
    poll_until(&mut disc, true, "three attached", |ev| adds(ev) == 3);
    assert_eq!(attached(&disc), vec!["d", "l", "r"]);

    // READY swapped for a symlink: detached as an invalid marker.
    swap_for_symlink(&bus.strategy_ready("r").unwrap(), &outside.path().join("r"));
    // LEASE swapped for a symlink: the same.
    swap_for_symlink(&bus.strategy_lease("l").unwrap(), &outside.path().join("l"));
    let ev = poll_until(&mut disc, true, "r and l detached", |ev| {
        removed(ev, "r").is_some() && removed(ev, "l").is_some()
    });
    assert_eq!(removed(&ev, "r"), Some(RemoveReason::MarkerInvalid));
    assert_eq!(removed(&ev, "l"), Some(RemoveReason::MarkerInvalid));
    assert_eq!(adds(&ev), 0, "{ev:?}");

    // The strategy directory swapped for a symlink to a live strategy outside the bus.
    let other = BusLayout::create(outside.path().join("otherbus")).unwrap();
    let mut ext = StrategyEndpoints::open(&other, "d", cfg()).unwrap();
    ext.mark_ready().unwrap();
    let d = bus.strategy_dir("d").unwrap();
    std::fs::rename(&d, tmp.path().join("d-moved")).unwrap();
    std::os::unix::fs::symlink(other.strategy_dir("d").unwrap(), &d).unwrap();
    let ev = poll_until(&mut disc, true, "d detached", |ev| {
        removed(ev, "d").is_some()
    });
    assert_eq!(removed(&ev, "d"), Some(RemoveReason::DirectoryRemoved));
    assert_eq!(adds(&ev), 0, "{ev:?}");

    // New strategies whose READY or LEASE is a symlink from the start are never attached.
    for (id, which) in [("nr", "READY"), ("nl", "LEASE")] {
        let mut e = StrategyEndpoints::open(&bus, id, cfg()).unwrap();
        e.mark_ready().unwrap();
        let dir = outside.path().join(id);
        std::fs::create_dir_all(&dir).unwrap();
        swap_for_symlink(&bus.strategy_dir(id).unwrap().join(which), &dir);
        s.push(e);
    }
    let ev = settle(&mut disc);
    assert!(ev.is_empty(), "{ev:?}");
    assert!(attached(&disc).is_empty(), "{:?}", attached(&disc));

    // The link targets were never written through.
    for (id, m) in [
        ("r", "READY"),
        ("l", "LEASE"),
        ("nr", "READY"),
        ("nl", "LEASE"),
    ] {
        let t = outside.path().join(id).join(m);
        let text = std::fs::read_to_string(&t).unwrap();
        assert!(text.starts_with("chronicle-"), "{}: {text:?}", t.display());
    }
    drop(s);
    drop(ext);
}
