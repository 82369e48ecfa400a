//! The transport abstraction every measured channel implements.
//!
//! All methods are generic (no `dyn`), so the measurement loops in
//! [`run`](super::run) are monomorphized per transport: a send or receive costs exactly
//! what the transport's own code costs, with no vtable call or allocation per message.
//! Dynamic choice happens once per run, when [`Registry`](super::Registry) maps a
//! transport *name* to the monomorphized entry points.

use std::io;
use std::path::Path;
use std::time::Duration;

/// How a reader waits when no message is available.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum WaitMode {
    /// Busy-poll without yielding the core (lowest latency, burns a core).
    Spin,
    /// Sleep in the transport's blocking primitive (futex, blocking `read`, ...).
    Block,
}

impl WaitMode {
    /// Both modes, spin first.
    pub const ALL: [Self; 2] = [Self::Spin, Self::Block];
}

named_variants!(WaitMode, "wait mode", {
    Spin => "spin",
    Block => "block",
});

/// Sizing shared by both ends of a channel; the parent and the child derive identical
/// values from the same [`RunConfig`](super::RunConfig).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ChannelConfig {
    /// Largest payload the writer will send, in bytes.
    pub payload_max: usize,
    /// Capacity hint in messages (the ring uses it as its slot count; a power of two).
    pub capacity: usize,
    /// How long a sender may stay blocked on back-pressure before giving up with
    /// `TimedOut`. Keeps a writer from spinning forever behind a dead reader.
    pub stall_timeout: Duration,
}

impl ChannelConfig {
    /// A config for payloads up to `payload_max` bytes and `capacity` slots.
    #[must_use]
    pub fn new(payload_max: usize, capacity: usize, stall_timeout: Duration) -> Self {
        Self {
            payload_max,
            capacity,
            stall_timeout,
        }
    }
}

/// The first `len` bytes of `stage`, a sender's staging buffer of `payload_max` bytes, for
/// [`Sender::send_with`]'s `fill`; `InvalidInput` when `len` exceeds it.
///
/// # Errors
/// `InvalidInput` if `len > stage.len()`.
#[inline]
pub fn staging(stage: &mut [u8], len: usize) -> io::Result<&mut [u8]> {
    stage.get_mut(..len).ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            "message larger than payload_max",
        )
    })
}

/// The writing end of a channel. Lives in the parent process.
pub trait Sender {
    /// Called once, after the reader child reported that its
    /// [`Transport::open`] succeeded and before the first send. Transports that need the
    /// peer to be present first (a FIFO's write end, accepting a socket) finish their
    /// setup here. The default does nothing.
    ///
    /// # Errors
    /// Any I/O error completing the connection.
    fn connect(&mut self) -> io::Result<()> {
        Ok(())
    }

    /// Called by a paced writer, again and again, while it waits for the next send time: work
    /// the transport can do off the critical path. Returns whether more remains (`false`:
    /// the writer spins for the rest of the wait). The default has nothing to do.
    fn idle(&mut self) -> bool {
        false
    }

    /// Sends one message of exactly `len` bytes whose contents `fill` writes in place.
    ///
    /// Zero-copy transports hand `fill` the slot itself; others hand it a staging buffer.
    /// `fill` is where the harness takes the send timestamp, so a transport must call it
    /// after any wait for space and publish the message as soon as it returns.
    ///
    /// # Errors
    /// `InvalidInput` if `len` exceeds [`ChannelConfig::payload_max`], `TimedOut` if
    /// back-pressure lasted longer than [`ChannelConfig::stall_timeout`], or the OS error.
    fn send_with<F: FnOnce(&mut [u8])>(&mut self, len: usize, fill: F) -> io::Result<()>;

    /// Sends `n` messages of exactly `len` bytes as one batch; `fill(i, buf)` writes the
    /// `i`-th. A transport that can publish several messages at once (one cursor store, one
    /// wake-up) overrides this; the default sends them one by one.
    ///
    /// # Errors
    /// As for [`send_with`](Self::send_with); messages before the failing one are sent.
    fn send_batch_with<F: FnMut(usize, &mut [u8])>(
        &mut self,
        n: usize,
        len: usize,
        mut fill: F,
    ) -> io::Result<()> {
        for i in 0..n {
            self.send_with(len, |buf| fill(i, buf))?;
        }
        Ok(())
    }

    /// Sends a copy of `payload` (convenience over [`send_with`](Self::send_with)).
    ///
    /// # Errors
    /// As for [`send_with`](Self::send_with).
    fn send(&mut self, payload: &[u8]) -> io::Result<()> {
        self.send_with(payload.len(), |buf| {
            if buf.len() == payload.len() {
                buf.copy_from_slice(payload);
            }
        })
    }
}

/// The reading end of a channel. Lives in the reader child process.
pub trait Receiver {
    /// Waits (per `wait`) for the next message and passes it to `f` without copying if
    /// the transport can. `f`'s slice is exactly the bytes that were sent.
    ///
    /// # Errors
    /// `UnexpectedEof` if the writer went away, otherwise the transport's error.
    fn recv_with<R, F: FnOnce(&[u8]) -> R>(&mut self, wait: WaitMode, f: F) -> io::Result<R>;
}

/// A channel kind the harness can measure.
///
/// Adding one means implementing this trait plus [`Sender`] and [`Receiver`], then
/// registering it with [`Registry::register`](super::Registry::register) in every binary
/// that runs it (the child resolves the transport by [`NAME`](Self::NAME) in its own
/// registry).
pub trait Transport: 'static {
    /// Unique short name used in tables, on the child's command line and in
    /// [`Registry`](super::Registry) lookups. ASCII letters, digits, `-` and `_` only.
    const NAME: &'static str;
    /// The writing end.
    type Tx: Sender;
    /// The reading end.
    type Rx: Receiver;

    /// Whether the reader implements `wait`. Defaults to both modes.
    #[must_use]
    fn supports(wait: WaitMode) -> bool {
        let _ = wait;
        true
    }

    /// Creates the channel's resources inside `dir` (a fresh, private directory that is
    /// removed after the run) and returns the writing end. Runs in the parent *before*
    /// the child exists, so it must not wait for the peer.
    ///
    /// # Errors
    /// Any error creating the resources.
    fn create(dir: &Path, cfg: &ChannelConfig) -> io::Result<Self::Tx>;

    /// Opens the reading end on the resources [`create`](Self::create) made in `dir`.
    /// Runs in the child; must not wait for the writer to [`connect`](Sender::connect).
    ///
    /// # Errors
    /// Any error opening the resources.
    fn open(dir: &Path, cfg: &ChannelConfig) -> io::Result<Self::Rx>;
}

/// Helpers of the transports' unit tests.
#[cfg(test)]
pub(crate) mod testing {
    use super::*;

    /// Both ends of a fresh `T` channel made with `cfg` in a temporary directory, which lives
    /// as long as the returned guard.
    pub(crate) fn channel<T: Transport>(cfg: &ChannelConfig) -> (tempfile::TempDir, T::Tx, T::Rx) {
        let dir = tempfile::tempdir().unwrap();
        let tx = T::create(dir.path(), cfg).unwrap();
        let rx = T::open(dir.path(), cfg).unwrap();
        (dir, tx, rx)
    }

    /// A fresh `T` channel for [`lengths_round_trip`]: `payload_max` 32, 16 messages of
    /// capacity, a one-second stall timeout.
    pub(crate) fn lengths_channel<T: Transport>() -> (tempfile::TempDir, T::Tx, T::Rx) {
        channel::<T>(&ChannelConfig::new(32, 16, Duration::from_secs(1)))
    }

    /// Sends `n` messages, the `i`-th of `i % 32 + 1` bytes of value `i` (the channel's
    /// `payload_max` is at least 32), then reads them back, alternately spinning and blocking,
    /// and checks that each arrives whole and in order.
    pub(crate) fn lengths_round_trip(tx: &mut impl Sender, rx: &mut impl Receiver, n: u8) {
        for i in 0..n {
            tx.send_with(usize::from(i % 32) + 1, |b| b.fill(i))
                .unwrap();
        }
        for i in 0..n {
            let wait = WaitMode::ALL[usize::from(i % 2)];
            let got = rx.recv_with(wait, <[u8]>::to_vec).unwrap();
            assert_eq!(got, vec![i; usize::from(i % 32) + 1]);
        }
    }

    /// Drops the writing end and checks that the reader then gets `UnexpectedEof`.
    pub(crate) fn eof_once_the_writer_is_gone(tx: impl Sender, rx: &mut impl Receiver) {
        drop(tx);
        let err = rx.recv_with(WaitMode::Block, |_| ()).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::UnexpectedEof);
    }
}
