//! Named crash points for crash-consistency tests.
//!
//! A crash test wants the process to die at an exact step of a protocol (after the commit word
//! but before the tail is published, between a segment's PAD and the switch to the next one,
//! half-way through a marker rename...), not only wherever a timer-driven `SIGKILL` happens to
//! land. [`point`] marks such a step. With the cargo feature `crash-points` enabled and the
//! environment variable `CHRONICLE_CRASH_AT=NAME:N` set, the process sends itself `SIGKILL` the
//! `N`-th time it passes point `NAME` (counting from 1): the same death as an external
//! `kill -9` at that instruction, with no unwinding, no destructors and no flush.
//!
//! Without the feature [`point`] is an empty inline function. With it and without the variable,
//! it costs one relaxed load of an initialized `OnceLock` per pass. The feature exists for
//! tests only; release builds of applications must not enable it.
//!
//! The points, by protocol step (`chronicle-bus` adds the `marker.*` points):
//!
//! | name | where |
//! |---|---|
//! | `append.before_commit` | header and payload written, commit word not yet stored |
//! | `append.after_commit` | commit word stored, tail not yet published |
//! | `append.after_tail` | tail published, sleepers not yet woken |
//! | `index.before_push` / `index.after_push` | around a sparse-index entry |
//! | `roll.before_pad` | next segment taken, PAD of the full one not yet stored |
//! | `roll.after_pad` | PAD stored, tail still names the full segment |
//! | `roll.after_tail` | tail names the new segment, old one not yet retired |
//! | `prepare.after_segment` | next segment file created, its index not yet |
//! | `reader.commit.before_gen` | reader position slot written, generation not yet flipped |
//! | `retention.after_advance` | oldest segment advanced, its files not yet removed |
//! | `retention.between_unlinks` | a segment file removed, its index file not yet |
//! | `marker.before_rename` | a marker's temporary file written, not yet renamed |
//! | `marker.after_rename` | a marker renamed into place |

/// The environment variable naming the point and the pass to die at: `NAME:N`.
pub const VAR: &str = "CHRONICLE_CRASH_AT";

/// Marks crash point `name`: see the module docs.
#[cfg(not(feature = "crash-points"))]
#[inline(always)]
pub fn point(_name: &'static str) {}

/// Marks crash point `name`: see the module docs.
#[cfg(feature = "crash-points")]
#[inline]
pub fn point(name: &'static str) {
    armed::point(name);
}

#[cfg(feature = "crash-points")]
mod armed {
    use std::sync::OnceLock;
    use std::sync::atomic::{AtomicU64, Ordering};

    use super::VAR;

    struct Target {
        name: String,
        at: u64,
        passes: AtomicU64,
    }

    static TARGET: OnceLock<Option<Target>> = OnceLock::new();

    fn parse() -> Option<Target> {
        let v = std::env::var(VAR).ok()?;
        let (name, n) = v.rsplit_once(':')?;
        let at = n.trim().parse::<u64>().ok().filter(|&n| n > 0)?;
        Some(Target {
            name: name.trim().to_string(),
            at,
            passes: AtomicU64::new(0),
        })
    }

    #[cold]
    fn die() -> ! {
        // SAFETY: raise(3) with a valid signal number has no memory-safety preconditions.
        unsafe {
            libc::raise(libc::SIGKILL);
        }
        // SIGKILL cannot be caught or ignored; this is not reached.
        std::process::abort()
    }

    pub fn point(name: &'static str) {
        let Some(t) = TARGET.get_or_init(parse) else {
            return;
        };
        if t.name != name {
            return;
        }
        // Counting only; no data is published through this counter.
        if t.passes.fetch_add(1, Ordering::Relaxed) + 1 == t.at {
            die();
        }
    }
}
