//! Where things live under a bus root directory.
//!
//! ```text
//! <bus>/
//!   doorbell                        futex word every strategy writer rings (fan-in wake)
//!   feeds/<name>/                   market-data queues (one writer each)
//!   strategies/<id>/orders/         a strategy's order queue
//!   strategies/<id>/READY           written (by rename) once the queue is fully initialized
//!   strategies/<id>/LEASE           pid, start time, heartbeat, expiry; renewed by the strategy
//!   strategies/<id>/fates/          the router's answer to each order (the router writes it)
//!   router/out/                     router output (orders to the gateway)
//!   router/<name>/                  other router queues (decisions, audit)
//! ```
//!
//! Every name used as a path component (feed, strategy, router queue, reader) is validated by
//! [`validate_name`]: 1 to [`MAX_NAME_LEN`] bytes of `[A-Za-z0-9._-]`, not starting with `.`.
//! So a name can never be `.`/`..`, contain `/`, or collide with the bus's temporary files
//! (which all start with `.`). Violations are [`BusError::InvalidName`], never a panic.

use std::fs;
use std::io;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};

use crate::error::{BusError, NameProblem, Result};

/// Longest accepted name, in bytes (also a valid queue-engine reader name).
pub const MAX_NAME_LEN: usize = 64;

/// Checks a bus name: 1-64 bytes of `[A-Za-z0-9._-]`, not starting with `.`.
pub fn validate_name(name: &str) -> Result<()> {
    let problem = if name.is_empty() {
        Some(NameProblem::Empty)
    } else if name.len() > MAX_NAME_LEN {
        Some(NameProblem::TooLong)
    } else if name.starts_with('.') {
        Some(NameProblem::LeadingDot)
    } else if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
    {
        Some(NameProblem::BadCharacter)
    } else {
        None
    };
    match problem {
        None => Ok(()),
        Some(problem) => Err(BusError::InvalidName {
            name: name.to_string(),
            problem,
        }),
    }
}

/// Stable 64-bit id of a fan-in source, derived from its name: FNV-1a (64-bit) of the name's
/// bytes. The same name gives the same id in every process and every run, so merge tie-breaks
/// (timestamp, source id, seq) are reproducible. Two names with the same id cannot be merged
/// together ([`BusError::DuplicateSource`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SourceId(pub u64);

impl SourceId {
    /// The id of the source called `name`.
    pub fn of(name: &str) -> SourceId {
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        for &b in name.as_bytes() {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
        SourceId(h)
    }
}

impl std::fmt::Display for SourceId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:016x}", self.0)
    }
}

/// The directory layout of one bus. Cheap to clone; holds only paths.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BusLayout {
    root: PathBuf,
}

/// Mode of the bus directories (owner and group may create and delete entries).
pub const DIR_MODE: u32 = 0o770;

impl BusLayout {
    /// A layout over `root` (nothing is created; see [`BusLayout::create`]).
    pub fn new(root: impl Into<PathBuf>) -> BusLayout {
        BusLayout { root: root.into() }
    }

    /// Creates the root and its `feeds/`, `strategies/` and `router/` directories if missing.
    pub fn create(root: impl Into<PathBuf>) -> Result<BusLayout> {
        let l = BusLayout::new(root);
        for d in [
            l.root.clone(),
            l.feeds_dir(),
            l.strategies_dir(),
            l.router_dir(),
        ] {
            create_dir_all(&d)?;
        }
        Ok(l)
    }

    /// The bus root.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The bus doorbell: every strategy order-queue writer rings it, the router sleeps on it.
    pub fn doorbell(&self) -> PathBuf {
        self.root.join("doorbell")
    }

    /// `feeds/`.
    pub fn feeds_dir(&self) -> PathBuf {
        self.root.join("feeds")
    }

    /// `feeds/<name>/`: a market-data queue.
    pub fn feed(&self, name: &str) -> Result<PathBuf> {
        validate_name(name)?;
        Ok(self.feeds_dir().join(name))
    }

    /// `strategies/`.
    pub fn strategies_dir(&self) -> PathBuf {
        self.root.join("strategies")
    }

    /// `strategies/<id>/`.
    pub fn strategy_dir(&self, id: &str) -> Result<PathBuf> {
        validate_name(id)?;
        Ok(self.strategies_dir().join(id))
    }

    /// `strategies/<id>/orders/`: the strategy's order queue.
    pub fn strategy_orders(&self, id: &str) -> Result<PathBuf> {
        Ok(self.strategy_dir(id)?.join(ORDERS))
    }

    /// `strategies/<id>/fates/`: the router's answer to every order of the strategy (the
    /// router is its single writer and creates it; the strategy reads it).
    pub fn strategy_fates(&self, id: &str) -> Result<PathBuf> {
        Ok(self.strategy_dir(id)?.join(FATES))
    }

    /// `strategies/<id>/READY`.
    pub fn strategy_ready(&self, id: &str) -> Result<PathBuf> {
        Ok(self.strategy_dir(id)?.join(READY))
    }

    /// `strategies/<id>/LEASE`.
    pub fn strategy_lease(&self, id: &str) -> Result<PathBuf> {
        Ok(self.strategy_dir(id)?.join(LEASE))
    }

    /// `router/`.
    pub fn router_dir(&self) -> PathBuf {
        self.root.join("router")
    }

    /// `router/out/`: the router's output queue (orders to the gateway).
    pub fn router_out(&self) -> PathBuf {
        self.router_dir().join("out")
    }

    /// `router/<name>/`: another router queue (decisions, audit).
    pub fn router_queue(&self, name: &str) -> Result<PathBuf> {
        validate_name(name)?;
        Ok(self.router_dir().join(name))
    }
}

/// File name of the order queue inside a strategy directory.
pub const ORDERS: &str = "orders";
/// File name of the fates queue inside a strategy directory.
pub const FATES: &str = "fates";
/// File name of the READY marker.
pub const READY: &str = "READY";
/// File name of the LEASE marker.
pub const LEASE: &str = "LEASE";

pub(crate) fn create_dir_all(d: &Path) -> Result<()> {
    match fs::DirBuilder::new()
        .recursive(true)
        .mode(DIR_MODE)
        .create(d)
    {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(BusError::io(d, "create directory", e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_validated() {
        for ok in ["a", "strat-1", "S_2.v3", &"x".repeat(MAX_NAME_LEN)] {
            assert!(validate_name(ok).is_ok(), "{ok}");
        }
        let bad: [(&str, NameProblem); 9] = [
            ("", NameProblem::Empty),
            (".", NameProblem::LeadingDot),
            ("..", NameProblem::LeadingDot),
            (".hidden", NameProblem::LeadingDot),
            ("a/b", NameProblem::BadCharacter),
            ("../etc", NameProblem::LeadingDot),
            ("a b", NameProblem::BadCharacter),
            ("a\0b", NameProblem::BadCharacter),
            ("é", NameProblem::BadCharacter),
        ];
        for (name, want) in bad {
            match validate_name(name) {
                Err(BusError::InvalidName { problem, .. }) => assert_eq!(problem, want, "{name:?}"),
                other => panic!("{name:?}: {other:?}"),
            }
        }
        assert!(matches!(
            validate_name(&"x".repeat(MAX_NAME_LEN + 1)),
            Err(BusError::InvalidName {
                problem: NameProblem::TooLong,
                ..
            })
        ));
        let l = BusLayout::new("/bus");
        assert!(l.strategy_orders("../../etc").is_err());
        assert!(l.feed("a/../../b").is_err());
        assert_eq!(
            l.strategy_orders("s1").unwrap(),
            PathBuf::from("/bus/strategies/s1/orders")
        );
    }

    #[test]
    fn source_ids_are_stable() {
        // FNV-1a reference values: the ids must never change between releases.
        assert_eq!(SourceId::of("").0, 0xcbf2_9ce4_8422_2325);
        assert_eq!(SourceId::of("a").0, 0xaf63_dc4c_8601_ec8c);
        assert_ne!(SourceId::of("s1"), SourceId::of("s2"));
    }
}
