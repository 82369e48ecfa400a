//! The check behind the `markers` fuzz target, shared by `fuzz/fuzz_targets/markers.rs`
//! (included with `#[path]`) and the property tests in `tests/hostile.rs`.
#![allow(dead_code)]

use chronicle_bus::BusError;
use chronicle_bus::markers::{Lease, MAX_MARKER_LEN, Ready};

/// `markers`: `data` parsed as READY and LEASE text, and read from a file holding it. Parsing
/// gives the marker or `BadMarker`; reading gives the same answer as parsing (or `BadMarker` for
/// what is not UTF-8 or is too large); a parsed marker renders back to an equal one.
pub fn markers(data: &[u8]) {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("M");
    let text = std::str::from_utf8(data).ok();
    if let Some(t) = text {
        check_ready(Ready::parse(t, &path));
        check_lease(Lease::parse(t, &path));
    }
    std::fs::write(&path, data).unwrap();
    let fits = data.len() as u64 <= MAX_MARKER_LEN;
    let ready = Ready::read(&path);
    let lease = Lease::read(&path);
    match (text, fits) {
        (Some(t), true) => {
            assert_eq!(
                ready.as_ref().ok(),
                Ready::parse(t, &path).as_ref().ok(),
                "read and parse disagree"
            );
            assert_eq!(lease.as_ref().ok(), Lease::parse(t, &path).as_ref().ok());
        }
        _ => {
            assert!(
                matches!(ready, Err(BusError::BadMarker { .. })),
                "{ready:?}"
            );
            assert!(
                matches!(lease, Err(BusError::BadMarker { .. })),
                "{lease:?}"
            );
        }
    }
    check_ready(ready);
    check_lease(lease);
}

fn check_ready(r: Result<Ready, BusError>) {
    match r {
        Ok(r) => {
            let tmp = tempfile::tempdir().unwrap();
            let p = tmp.path().join("READY");
            r.write(&p, 0o600).unwrap();
            assert_eq!(Ready::read(&p).unwrap(), r, "READY does not round-trip");
        }
        Err(e) => assert!(matches!(e, BusError::BadMarker { .. }), "{e:?}"),
    }
}

fn check_lease(r: Result<Lease, BusError>) {
    match r {
        Ok(l) => {
            let tmp = tempfile::tempdir().unwrap();
            let p = tmp.path().join("LEASE");
            l.write(&p, 0o600).unwrap();
            assert_eq!(Lease::read(&p).unwrap(), l, "LEASE does not round-trip");
            // Liveness of an arbitrary pid/start time is a question, not a crash.
            let _ = l.state(0);
            let _ = l.state(u64::MAX);
        }
        Err(e) => assert!(matches!(e, BusError::BadMarker { .. }), "{e:?}"),
    }
}
