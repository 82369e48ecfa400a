//! `crossbeam`: a bounded `crossbeam-channel` between two threads of one process.
//!
//! The in-process reference: what handing a message to another thread costs with the
//! usual Rust channel, no shared-memory file and no second process. It only exists inside
//! one process, so it runs through [`chronicle_lab::harness::run_in_threads`]: `create`
//! parks the receiving end in a process-global hand-off slot keyed by the run directory
//! and `open` (on the harness's reader thread) takes it out.
//!
//! Messages travel by value as fixed frames (64 or 1024 bytes of storage plus a length,
//! picked from `payload_max`), so a 64-byte run does not move 1 KiB per message and no run
//! allocates per message. The writer fills a frame in place and moves it into the channel
//! (`send_timeout`, blocking while the channel holds `capacity` frames); the spinning
//! reader polls `try_recv`, the blocking reader parks in `recv`.

use std::hint::spin_loop;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

use chronicle_lab::harness::{ChannelConfig, Receiver, Sender, Transport, WaitMode, staging};
use crossbeam_channel as cb;

/// Largest payload the reference channel carries.
pub const MAX_PAYLOAD: usize = 1024;

/// A message by value: `N` bytes of storage, `len` of them used.
#[derive(Clone, Copy)]
pub struct Frame<const N: usize> {
    len: usize,
    bytes: [u8; N],
}

impl<const N: usize> Frame<N> {
    fn payload(&self) -> &[u8] {
        self.bytes.get(..self.len).unwrap_or_default()
    }
}

/// Writing end.
pub enum ChannelTx {
    /// Payloads up to 64 bytes.
    Small(cb::Sender<Frame<64>>, Box<Frame<64>>, Duration),
    /// Payloads up to 1024 bytes.
    Large(cb::Sender<Frame<1024>>, Box<Frame<1024>>, Duration),
}

/// Reading end.
pub enum ChannelRx {
    /// Payloads up to 64 bytes.
    Small(cb::Receiver<Frame<64>>),
    /// Payloads up to 1024 bytes.
    Large(cb::Receiver<Frame<1024>>),
}

impl std::fmt::Debug for ChannelTx {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ChannelTx")
    }
}

impl std::fmt::Debug for ChannelRx {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ChannelRx")
    }
}

/// Receivers created by `create` and not yet taken by `open`, by run directory.
static HANDOFF: Mutex<Vec<(PathBuf, ChannelRx)>> = Mutex::new(Vec::new());

/// The crossbeam-channel reference (see the module docs).
#[derive(Debug, Clone, Copy)]
pub struct Crossbeam;

impl Transport for Crossbeam {
    const NAME: &'static str = "crossbeam";
    type Tx = ChannelTx;
    type Rx = ChannelRx;

    fn create(dir: &Path, cfg: &ChannelConfig) -> io::Result<ChannelTx> {
        let stall = cfg.stall_timeout;
        let (tx, rx) = if cfg.payload_max <= 64 {
            let (tx, rx) = cb::bounded(cfg.capacity);
            let frame = Box::new(Frame {
                len: 0,
                bytes: [0; 64],
            });
            (ChannelTx::Small(tx, frame, stall), ChannelRx::Small(rx))
        } else if cfg.payload_max <= MAX_PAYLOAD {
            let (tx, rx) = cb::bounded(cfg.capacity);
            let frame = Box::new(Frame {
                len: 0,
                bytes: [0; MAX_PAYLOAD],
            });
            (ChannelTx::Large(tx, frame, stall), ChannelRx::Large(rx))
        } else {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("the crossbeam reference carries at most {MAX_PAYLOAD}-byte payloads"),
            ));
        };
        let mut slot = HANDOFF.lock().unwrap_or_else(|e| e.into_inner());
        slot.retain(|(d, _)| d != dir);
        slot.push((dir.to_owned(), rx));
        Ok(tx)
    }

    fn open(dir: &Path, _cfg: &ChannelConfig) -> io::Result<ChannelRx> {
        let mut slot = HANDOFF.lock().unwrap_or_else(|e| e.into_inner());
        let at = slot.iter().position(|(d, _)| d == dir).ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::NotFound,
                "no crossbeam channel for this run in this process (it only runs in threads)",
            )
        })?;
        Ok(slot.swap_remove(at).1)
    }
}

fn send_frame<const N: usize, F: FnOnce(&mut [u8])>(
    tx: &cb::Sender<Frame<N>>,
    frame: &mut Frame<N>,
    stall: Duration,
    len: usize,
    fill: F,
) -> io::Result<()> {
    let buf = staging(&mut frame.bytes, len)?;
    fill(buf);
    frame.len = len;
    tx.send_timeout(*frame, stall).map_err(|e| match e {
        cb::SendTimeoutError::Timeout(_) => io::Error::new(
            io::ErrorKind::TimedOut,
            "channel full: reader made no progress within the stall timeout",
        ),
        cb::SendTimeoutError::Disconnected(_) => {
            io::Error::new(io::ErrorKind::BrokenPipe, "reader gone")
        }
    })
}

impl Sender for ChannelTx {
    #[inline]
    fn send_with<F: FnOnce(&mut [u8])>(&mut self, len: usize, fill: F) -> io::Result<()> {
        match self {
            Self::Small(tx, frame, stall) => send_frame(tx, frame, *stall, len, fill),
            Self::Large(tx, frame, stall) => send_frame(tx, frame, *stall, len, fill),
        }
    }
}

fn recv_frame<const N: usize, R, F: FnOnce(&[u8]) -> R>(
    rx: &cb::Receiver<Frame<N>>,
    wait: WaitMode,
    f: F,
) -> io::Result<R> {
    let eof = || io::Error::new(io::ErrorKind::UnexpectedEof, "writer gone");
    let frame = match wait {
        WaitMode::Block => rx.recv().map_err(|_| eof())?,
        WaitMode::Spin => loop {
            match rx.try_recv() {
                Ok(frame) => break frame,
                Err(cb::TryRecvError::Empty) => spin_loop(),
                Err(cb::TryRecvError::Disconnected) => return Err(eof()),
            }
        },
    };
    Ok(f(frame.payload()))
}

impl Receiver for ChannelRx {
    #[inline]
    fn recv_with<R, F: FnOnce(&[u8]) -> R>(&mut self, wait: WaitMode, f: F) -> io::Result<R> {
        match self {
            Self::Small(rx) => recv_frame(rx, wait, f),
            Self::Large(rx) => recv_frame(rx, wait, f),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_round_trip_in_both_sizes() {
        for size in [16, 64, 65, 1024] {
            let dir = PathBuf::from(format!("/nonexistent/crossbeam-test-{size}"));
            let cfg = ChannelConfig::new(size, 8, Duration::from_millis(50));
            let mut tx = Crossbeam::create(&dir, &cfg).unwrap();
            let mut rx = Crossbeam::open(&dir, &cfg).unwrap();
            assert!(Crossbeam::open(&dir, &cfg).is_err(), "taken once");
            for i in 0..8u8 {
                tx.send_with(size, |b| b.fill(i)).unwrap();
            }
            let err = tx.send_with(size, |_| {}).unwrap_err();
            assert_eq!(err.kind(), io::ErrorKind::TimedOut);
            for i in 0..8u8 {
                let wait = WaitMode::ALL[usize::from(i % 2)];
                assert_eq!(rx.recv_with(wait, <[u8]>::to_vec).unwrap(), vec![i; size]);
            }
            assert!(tx.send_with(MAX_PAYLOAD + 1, |_| {}).is_err());
            drop(tx);
            let err = rx.recv_with(WaitMode::Spin, |_| ()).unwrap_err();
            assert_eq!(err.kind(), io::ErrorKind::UnexpectedEof);
        }
    }
}
