//! The chronicle queue as a harness transport: the writer appends (CRC, persisted segment,
//! tail publication, wake check: the full production path), the reader is an anonymous
//! [`QueueReader`] that either busy-polls `next` (`Spin`) or sleeps on the queue's futex with no
//! spinning or yielding first (`Block`), so the Block rows measure the futex wake itself.
//!
//! Three transports: `chronicle` (the default `Preallocate::Background`: a maintenance thread,
//! pinned with the writer, prepares each next segment), `chronicle-pretouch`
//! (`Preallocate::Pretouch`: the paced writer prepares it in its waits, [`Sender::idle`]) and
//! `chronicle-nocrc`, a diagnostic: `chronicle` with a reader that skips the CRC check
//! (`ReaderConfig::verify_crc` off), to measure what the check costs the reader.

use std::io;
use std::path::Path;
use std::time::Duration;

use super::transport::{ChannelConfig, Receiver, Sender, Transport, WaitMode, staging};
use chronicle_core::{
    Preallocate, QueueReader, QueueWriter, ReaderConfig, WaitOutcome, WriterConfig,
};

/// The chronicle queue (see the module docs); `PRETOUCH` picks `Preallocate::Pretouch`, `CRC`
/// whether the reader verifies each record's CRC.
#[derive(Debug)]
pub struct ChronicleQueue<const PRETOUCH: bool, const CRC: bool>;

/// `chronicle`: segments prepared by the maintenance thread.
pub type Chronicle = ChronicleQueue<false, true>;

/// `chronicle-pretouch`: segments prepared in the paced writer's waits.
pub type ChroniclePretouch = ChronicleQueue<true, true>;

/// `chronicle-nocrc`: `chronicle` with a reader that does not verify CRCs (a diagnostic).
pub type ChronicleNoCrc = ChronicleQueue<false, false>;

/// Writing end: a [`QueueWriter`] and a staging buffer the harness fills. (`claim`/`commit`,
/// filling the record in place, measured 45-140 ns slower at p50 here than filling an
/// L1-resident buffer and appending it: the message is composed after the send stamp, and
/// composing into fresh segment lines is slower than one vectorized copy.)
#[derive(Debug)]
pub struct ChronicleTx {
    w: QueueWriter,
    stage: Vec<u8>,
}

/// Reading end: an anonymous [`QueueReader`].
#[derive(Debug)]
pub struct ChronicleRx {
    r: QueueReader,
}

fn err(e: chronicle_core::Error) -> io::Error {
    io::Error::other(e)
}

impl<const PRETOUCH: bool, const CRC: bool> Transport for ChronicleQueue<PRETOUCH, CRC> {
    const NAME: &'static str = match (PRETOUCH, CRC) {
        (false, true) => "chronicle",
        (true, true) => "chronicle-pretouch",
        (false, false) => "chronicle-nocrc",
        (true, false) => "chronicle-pretouch-nocrc",
    };
    type Tx = ChronicleTx;
    type Rx = ChronicleRx;

    fn create(dir: &Path, cfg: &ChannelConfig) -> io::Result<ChronicleTx> {
        // The queue has no back-pressure: a reader that falls behind (a stalled process on a
        // busy machine, an unpaced 1 KiB run) must find its records still there, or the run
        // fails instead of measuring. A 4 GiB cap holds a million 1 KiB records (about
        // 1.1 GB) with room to spare while still bounding the run directory, which is deleted
        // after the run.
        let wc = WriterConfig {
            preallocate: if PRETOUCH {
                Preallocate::Pretouch
            } else {
                Preallocate::Background
            },
            ..crate::capped_writer_config(64 << 20, 4 << 30)
        };
        let w = QueueWriter::open(dir.join("queue"), wc).map_err(err)?;
        if cfg.payload_max > w.max_payload() as usize {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "payload_max exceeds the queue's maximum payload",
            ));
        }
        Ok(ChronicleTx {
            w,
            stage: vec![0u8; cfg.payload_max],
        })
    }

    fn open(dir: &Path, _cfg: &ChannelConfig) -> io::Result<ChronicleRx> {
        let rc = ReaderConfig {
            spin_limit: 0,
            yield_limit: 0,
            verify_crc: CRC,
            ..ReaderConfig::default()
        };
        let r = QueueReader::open(dir.join("queue"), rc).map_err(err)?;
        Ok(ChronicleRx { r })
    }
}

impl Sender for ChronicleTx {
    /// Runs after the harness pinned the writer thread: the queue's maintenance thread (which
    /// pre-faults each next segment) moves to the writer's CPUs. The paced writer busy-waits
    /// between sends, so sharing its core costs the measurement nothing, whereas landing on
    /// the spinning reader's core would stall the reader for the milliseconds a 64 MiB
    /// pre-fault takes.
    fn connect(&mut self) -> io::Result<()> {
        let cpus = chronicle_core::os::thread_affinity()?;
        self.w.pin_maintenance(&cpus);
        Ok(())
    }

    /// One step of `QueueWriter::pretouch` (nothing without `Preallocate::Pretouch`). An error
    /// ends the idle work; the append that rolls reports it.
    #[inline]
    fn idle(&mut self) -> bool {
        self.w.pretouch().unwrap_or(false)
    }

    #[inline]
    fn send_with<F: FnOnce(&mut [u8])>(&mut self, len: usize, fill: F) -> io::Result<()> {
        let buf = staging(&mut self.stage, len)?;
        fill(buf);
        self.w.append(1, buf).map_err(err)?;
        Ok(())
    }

    /// One `QueueWriter::batch`: one clock reading, one tail publication, one wake-up.
    #[inline]
    fn send_batch_with<F: FnMut(usize, &mut [u8])>(
        &mut self,
        n: usize,
        len: usize,
        mut fill: F,
    ) -> io::Result<()> {
        let buf = staging(&mut self.stage, len)?;
        let mut batch = self.w.batch();
        for i in 0..n {
            fill(i, buf);
            batch.append(1, buf).map_err(err)?;
        }
        Ok(())
    }
}

impl Receiver for ChronicleRx {
    #[inline]
    fn recv_with<R, F: FnOnce(&[u8]) -> R>(&mut self, wait: WaitMode, f: F) -> io::Result<R> {
        let mut idle = 0u32;
        loop {
            if let Some(m) = self.r.next().map_err(err)? {
                return Ok(f(m.payload()));
            }
            match wait {
                WaitMode::Spin => {
                    idle = idle.wrapping_add(1);
                    if idle % (1 << 22) == 0 && self.writer_gone() {
                        return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "writer gone"));
                    }
                    std::hint::spin_loop();
                }
                WaitMode::Block => match self.r.wait(Duration::from_secs(1)).map_err(err)? {
                    WaitOutcome::WriterGone(_) if !self.r.has_next() => {
                        return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "writer gone"));
                    }
                    _ => {}
                },
            }
        }
    }
}

impl ChronicleRx {
    #[cold]
    fn writer_gone(&mut self) -> bool {
        matches!(
            self.r.writer_status(),
            chronicle_core::WriterStatus::Dead | chronicle_core::WriterStatus::Closed
        ) && !self.r.has_next()
    }
}
