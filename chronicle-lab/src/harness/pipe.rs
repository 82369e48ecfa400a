//! `pipe`: a named FIFO in the run directory, one `write(2)` per message.
//!
//! Messages are framed as `[len: u32 native-endian][payload]` and written with a single
//! `write` (atomic for frames up to `PIPE_BUF`). The reader reads into a 64 KiB buffer
//! and parses as many frames as arrived, so a backlog costs one `read` per buffer, not
//! per message. In [`WaitMode::Block`] the read blocks in the kernel; in
//! [`WaitMode::Spin`] the descriptor is `O_NONBLOCK` and the reader retries `read` on
//! `EAGAIN` (a syscall per poll — the price of spinning on a kernel object). The pipe
//! keeps its default kernel capacity; a full pipe blocks the writer (back-pressure).

use std::ffi::CString;
use std::fs::{File, OpenOptions};
use std::hint::spin_loop;
use std::io::{self, Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use super::transport::{ChannelConfig, Receiver, Sender, Transport, WaitMode};

const FILE_NAME: &str = "fifo";
const LEN_BYTES: usize = 4;
const READ_BUF: usize = 64 * 1024;

/// Switches `O_NONBLOCK` on `fd`.
pub(crate) fn set_nonblocking(fd: &impl AsRawFd, on: bool) -> io::Result<()> {
    let fd = fd.as_raw_fd();
    // SAFETY: F_GETFL on a descriptor we own has no memory effects.
    let flags = unsafe { libc::fcntl(fd, libc::F_GETFL) };
    if flags < 0 {
        return Err(io::Error::last_os_error());
    }
    let new = if on {
        flags | libc::O_NONBLOCK
    } else {
        flags & !libc::O_NONBLOCK
    };
    if new != flags {
        // SAFETY: F_SETFL with an int argument on a descriptor we own.
        if unsafe { libc::fcntl(fd, libc::F_SETFL, new) } < 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

/// Writing end of the FIFO.
#[derive(Debug)]
pub struct PipeTx {
    path: PathBuf,
    file: Option<File>,
    frame: Vec<u8>,
    payload_max: usize,
}

/// Reading end of the FIFO.
#[derive(Debug)]
pub struct PipeRx {
    file: File,
    buf: Vec<u8>,
    start: usize,
    end: usize,
    nonblocking: bool,
    payload_max: usize,
    /// A write end held by the reader itself until the first bytes arrive. A FIFO with no
    /// writer reads as end-of-file, and the parent opens its end only after the child
    /// reports ready; holding one keeps early reads waiting instead of seeing EOF. It is
    /// dropped on the first data, so a writer that later goes away is seen as EOF.
    placeholder_writer: Option<File>,
}

impl Sender for PipeTx {
    fn connect(&mut self) -> io::Result<()> {
        // O_NONBLOCK on open fails with ENXIO instead of hanging if the reader is gone;
        // the reader opened its end before reporting ready.
        let file = OpenOptions::new()
            .write(true)
            .custom_flags(libc::O_NONBLOCK)
            .open(&self.path)?;
        set_nonblocking(&file, false)?;
        self.file = Some(file);
        Ok(())
    }

    #[inline]
    fn send_with<F: FnOnce(&mut [u8])>(&mut self, len: usize, fill: F) -> io::Result<()> {
        if len > self.payload_max {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "message larger than payload_max",
            ));
        }
        let file = self
            .file
            .as_mut()
            .ok_or_else(|| io::Error::new(io::ErrorKind::NotConnected, "pipe not connected"))?;
        let frame_len = LEN_BYTES + len;
        let frame = self
            .frame
            .get_mut(..frame_len)
            .ok_or_else(|| io::Error::other("frame buffer too small"))?;
        let (len_bytes, payload) = frame
            .split_first_chunk_mut::<LEN_BYTES>()
            .ok_or_else(|| io::Error::other("frame buffer too small"))?;
        // len <= payload_max <= MAX_PAYLOAD fits u32 (checked by RunConfig::validate and
        // ChannelConfig consumers).
        *len_bytes = (len as u32).to_ne_bytes();
        fill(payload);
        file.write_all(frame)
    }
}

impl Receiver for PipeRx {
    #[inline]
    fn recv_with<R, F: FnOnce(&[u8]) -> R>(&mut self, wait: WaitMode, f: F) -> io::Result<R> {
        loop {
            if let Some(frame_len) = self.complete_frame()? {
                let frame = self
                    .buf
                    .get(self.start + LEN_BYTES..self.start + frame_len)
                    .ok_or_else(|| io::Error::other("frame outside buffer"))?;
                let out = f(frame);
                self.start += frame_len;
                if self.start == self.end {
                    self.start = 0;
                    self.end = 0;
                }
                return Ok(out);
            }
            self.fill(wait)?;
        }
    }
}

impl PipeRx {
    /// Length of the complete frame at `start`, if one is buffered.
    #[inline]
    fn complete_frame(&self) -> io::Result<Option<usize>> {
        let avail = self.buf.get(self.start..self.end).unwrap_or_default();
        let Some((len_bytes, _)) = avail.split_first_chunk::<LEN_BYTES>() else {
            return Ok(None);
        };
        let len = u32::from_ne_bytes(*len_bytes) as usize;
        if len > self.payload_max {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("pipe frame claims {len} bytes"),
            ));
        }
        Ok((avail.len() >= LEN_BYTES + len).then_some(LEN_BYTES + len))
    }

    /// Reads more bytes, blocking or spinning per `wait`.
    fn fill(&mut self, wait: WaitMode) -> io::Result<()> {
        if self.start > 0 {
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
        let want_nonblocking = wait == WaitMode::Spin;
        if want_nonblocking != self.nonblocking {
            set_nonblocking(&self.file, want_nonblocking)?;
            self.nonblocking = want_nonblocking;
        }
        loop {
            let space = self
                .buf
                .get_mut(self.end..)
                .ok_or_else(|| io::Error::other("read buffer overrun"))?;
            match self.file.read(space) {
                Ok(0) => {
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "pipe closed by the writer",
                    ));
                }
                Ok(n) => {
                    self.end += n;
                    if self.placeholder_writer.is_some() {
                        self.placeholder_writer = None;
                    }
                    return Ok(());
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => spin_loop(),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
    }
}

/// `pipe`: named FIFO, blocking or spinning (`O_NONBLOCK`) reader.
#[derive(Debug, Clone, Copy)]
pub struct Pipe;

impl Transport for Pipe {
    const NAME: &'static str = "pipe";
    type Tx = PipeTx;
    type Rx = PipeRx;

    fn create(dir: &Path, cfg: &ChannelConfig) -> io::Result<Self::Tx> {
        let path = dir.join(FILE_NAME);
        let c_path = CString::new(path.as_os_str().as_bytes())
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
        // SAFETY: `c_path` is a valid NUL-terminated string that outlives the call.
        if unsafe { libc::mkfifo(c_path.as_ptr(), 0o600) } != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(PipeTx {
            path,
            file: None,
            frame: vec![0; LEN_BYTES + cfg.payload_max],
            payload_max: cfg.payload_max,
        })
    }

    fn open(dir: &Path, cfg: &ChannelConfig) -> io::Result<Self::Rx> {
        // Non-blocking open returns at once even though no writer has the FIFO open yet.
        let file = OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NONBLOCK)
            .open(dir.join(FILE_NAME))?;
        // Succeeds at once because a reader (the line above) exists.
        let placeholder_writer = OpenOptions::new()
            .write(true)
            .custom_flags(libc::O_NONBLOCK)
            .open(dir.join(FILE_NAME))?;
        Ok(PipeRx {
            placeholder_writer: Some(placeholder_writer),
            file,
            buf: vec![0; READ_BUF.max(2 * (LEN_BYTES + cfg.payload_max))],
            start: 0,
            end: 0,
            nonblocking: true,
            payload_max: cfg.payload_max,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::harness::transport::testing::{
        eof_once_the_writer_is_gone, lengths_channel, lengths_round_trip,
    };
    use std::time::Duration;

    #[test]
    fn frames_survive_batching_and_both_wait_modes() {
        let (_dir, mut tx, mut rx) = lengths_channel::<Pipe>();
        // Before the writer connects, a spinning read must keep waiting, not see EOF.
        let early = std::thread::spawn(move || {
            let first = rx.recv_with(WaitMode::Spin, <[u8]>::to_vec).unwrap();
            (rx, first)
        });
        std::thread::sleep(Duration::from_millis(20));
        tx.connect().unwrap();
        tx.send_with(3, |b| b.fill(0xAB)).unwrap();
        let (mut rx, first) = early.join().unwrap();
        assert_eq!(first, vec![0xAB; 3]);
        lengths_round_trip(&mut tx, &mut rx, 100);
        eof_once_the_writer_is_gone(tx, &mut rx);
    }
}
