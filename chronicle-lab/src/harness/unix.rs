//! `unix`: a Unix-domain `SOCK_SEQPACKET` socket, one `send(2)`/`recv(2)` per message.
//!
//! `SOCK_SEQPACKET` keeps message boundaries, so no framing is needed. The parent binds
//! and listens in the run directory, the child connects (the connection is queued in the
//! backlog, so `open` never waits for the parent), and the parent accepts in
//! [`Sender::connect`]. The spinning reader uses `recv(MSG_DONTWAIT)`, the blocking
//! reader a plain `recv`; no `fcntl` flips are needed between modes.

use std::hint::spin_loop;
use std::io;
use std::mem::size_of;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use super::transport::{ChannelConfig, Receiver, Sender, Transport, WaitMode, staging};

const FILE_NAME: &str = "sock";

fn seqpacket_socket() -> io::Result<OwnedFd> {
    // SAFETY: plain socket(2) call; no pointers involved.
    let fd = unsafe { libc::socket(libc::AF_UNIX, libc::SOCK_SEQPACKET | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` was just returned by socket(2), is valid, and has no other owner.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

fn sockaddr(path: &Path) -> io::Result<(libc::sockaddr_un, libc::socklen_t)> {
    // SAFETY: `sockaddr_un` is plain old data; all-zero is a valid value.
    let mut addr: libc::sockaddr_un = unsafe { std::mem::zeroed() };
    addr.sun_family = libc::AF_UNIX as libc::sa_family_t;
    let bytes = path.as_os_str().as_bytes();
    // Leave room for the terminating NUL.
    if bytes.len() >= addr.sun_path.len() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!(
                "socket path `{}` exceeds {} bytes",
                path.display(),
                addr.sun_path.len() - 1
            ),
        ));
    }
    for (dst, &src) in addr.sun_path.iter_mut().zip(bytes) {
        *dst = src as libc::c_char;
    }
    let len = size_of::<libc::sa_family_t>() + bytes.len() + 1;
    Ok((addr, len as libc::socklen_t))
}

/// Writing end: the listening socket, then the accepted connection.
#[derive(Debug)]
pub struct UnixTx {
    listener: OwnedFd,
    conn: Option<OwnedFd>,
    buf: Vec<u8>,
}

/// Reading end: the connected socket.
#[derive(Debug)]
pub struct UnixRx {
    sock: OwnedFd,
    buf: Vec<u8>,
    payload_max: usize,
}

impl Sender for UnixTx {
    fn connect(&mut self) -> io::Result<()> {
        loop {
            // SAFETY: accept4 on our listening socket; null address pointers are allowed
            // when the peer address is not wanted.
            let fd = unsafe {
                libc::accept4(
                    self.listener.as_raw_fd(),
                    std::ptr::null_mut(),
                    std::ptr::null_mut(),
                    libc::SOCK_CLOEXEC,
                )
            };
            if fd >= 0 {
                // SAFETY: `fd` was just returned by accept4 and has no other owner.
                self.conn = Some(unsafe { OwnedFd::from_raw_fd(fd) });
                return Ok(());
            }
            let err = io::Error::last_os_error();
            if err.kind() != io::ErrorKind::Interrupted {
                return Err(err);
            }
        }
    }

    #[inline]
    fn send_with<F: FnOnce(&mut [u8])>(&mut self, len: usize, fill: F) -> io::Result<()> {
        let fd = self
            .conn
            .as_ref()
            .ok_or_else(|| io::Error::new(io::ErrorKind::NotConnected, "socket not accepted"))?
            .as_raw_fd();
        let msg = staging(&mut self.buf, len)?;
        fill(msg);
        loop {
            // SAFETY: `msg` is a live, initialised buffer of `msg.len()` bytes;
            // MSG_NOSIGNAL turns a dead peer into EPIPE instead of SIGPIPE.
            let n = unsafe { libc::send(fd, msg.as_ptr().cast(), msg.len(), libc::MSG_NOSIGNAL) };
            if n >= 0 {
                // SEQPACKET sends are all-or-nothing.
                return Ok(());
            }
            let err = io::Error::last_os_error();
            if err.kind() != io::ErrorKind::Interrupted {
                return Err(err);
            }
        }
    }
}

impl Receiver for UnixRx {
    #[inline]
    fn recv_with<R, F: FnOnce(&[u8]) -> R>(&mut self, wait: WaitMode, f: F) -> io::Result<R> {
        let flags = match wait {
            WaitMode::Spin => libc::MSG_DONTWAIT,
            WaitMode::Block => 0,
        };
        let fd = self.sock.as_raw_fd();
        loop {
            // SAFETY: `buf` is a live, writable buffer of `buf.len()` bytes.
            let n = unsafe {
                libc::recv(
                    fd,
                    self.buf.as_mut_ptr().cast(),
                    self.buf.len(),
                    flags | libc::MSG_TRUNC,
                )
            };
            if n > 0 {
                // With MSG_TRUNC, `n` is the real datagram length even if it was cut.
                let n = n as usize;
                if n > self.payload_max {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        format!("received a {n}-byte message, larger than payload_max"),
                    ));
                }
                let msg = self
                    .buf
                    .get(..n)
                    .ok_or_else(|| io::Error::other("recv overran its buffer"))?;
                return Ok(f(msg));
            }
            if n == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "socket closed by the writer",
                ));
            }
            let err = io::Error::last_os_error();
            match err.kind() {
                io::ErrorKind::WouldBlock => spin_loop(),
                io::ErrorKind::Interrupted => {}
                _ => return Err(err),
            }
        }
    }
}

/// `unix`: Unix-domain `SOCK_SEQPACKET`, blocking or spinning (`MSG_DONTWAIT`) reader.
#[derive(Debug, Clone, Copy)]
pub struct UnixSeqpacket;

impl Transport for UnixSeqpacket {
    const NAME: &'static str = "unix";
    type Tx = UnixTx;
    type Rx = UnixRx;

    fn create(dir: &Path, cfg: &ChannelConfig) -> io::Result<Self::Tx> {
        let listener = seqpacket_socket()?;
        let (addr, len) = sockaddr(&dir.join(FILE_NAME))?;
        // SAFETY: `addr` is a valid sockaddr_un of `len` meaningful bytes.
        let rc = unsafe {
            libc::bind(
                listener.as_raw_fd(),
                (&raw const addr).cast::<libc::sockaddr>(),
                len,
            )
        };
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: listen(2) on a bound socket we own.
        if unsafe { libc::listen(listener.as_raw_fd(), 1) } != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(UnixTx {
            listener,
            conn: None,
            buf: vec![0; cfg.payload_max],
        })
    }

    fn open(dir: &Path, cfg: &ChannelConfig) -> io::Result<Self::Rx> {
        let sock = seqpacket_socket()?;
        let (addr, len) = sockaddr(&dir.join(FILE_NAME))?;
        loop {
            // SAFETY: `addr` is a valid sockaddr_un of `len` meaningful bytes.
            let rc = unsafe {
                libc::connect(
                    sock.as_raw_fd(),
                    (&raw const addr).cast::<libc::sockaddr>(),
                    len,
                )
            };
            if rc == 0 {
                break;
            }
            let err = io::Error::last_os_error();
            if err.kind() != io::ErrorKind::Interrupted {
                return Err(err);
            }
        }
        Ok(UnixRx {
            sock,
            buf: vec![0; cfg.payload_max.saturating_add(1)],
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

    #[test]
    fn boundaries_are_preserved() {
        let (_dir, mut tx, mut rx) = lengths_channel::<UnixSeqpacket>();
        tx.connect().unwrap();
        lengths_round_trip(&mut tx, &mut rx, 50);
        assert!(tx.send_with(33, |_| {}).is_err());
        eof_once_the_writer_is_gone(tx, &mut rx);
    }
}
