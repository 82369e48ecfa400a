//! An eventfd that becomes readable when a queue gets new records, for callers that multiplex
//! with epoll/poll/mio instead of blocking in [`QueueReader::wait`](crate::QueueReader::wait).
//!
//! A small thread sleeps on the queue's futex (same protocol as a sleeping reader) and adds 1
//! to the eventfd each time the writer's published tail moves. Use it as: wait for the fd to be
//! readable, [`EventFdBridge::clear`] it, then drain the reader with `next()` until `None`. A
//! record committed at any point after `clear` makes the fd readable again, so nothing is missed.

use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::control::{Control, QueueDir};
use crate::error::{Error, Result};
use crate::sys;
use crate::wait::{self, Backoff};

/// See the module documentation.
#[derive(Debug)]
pub struct EventFdBridge {
    fd: Arc<OwnedFd>,
    stop: Arc<AtomicBool>,
    control: Arc<Control>,
    thread: Option<JoinHandle<()>>,
}

impl EventFdBridge {
    /// Starts a bridge for the queue at `dir`.
    pub fn open(dir: impl AsRef<Path>) -> Result<EventFdBridge> {
        let qd = QueueDir::new(dir.as_ref());
        let control = Arc::new(Control::open(&qd, false)?);
        // SAFETY: eventfd takes integer arguments only.
        let raw = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK) };
        if raw < 0 {
            return Err(Error::io(
                &qd.root,
                "eventfd",
                std::io::Error::last_os_error(),
            ));
        }
        // SAFETY: `raw` is a fresh descriptor that nothing else owns.
        let fd = Arc::new(unsafe { OwnedFd::from_raw_fd(raw) });
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (fd, stop, control) = (Arc::clone(&fd), Arc::clone(&stop), Arc::clone(&control));
            std::thread::Builder::new()
                .name("chronicle-eventfd".into())
                .spawn(move || bridge_loop(&control, &fd, &stop))
                .map_err(|e| Error::io(&qd.root, "spawn eventfd thread", e))?
        };
        Ok(EventFdBridge {
            fd,
            stop,
            control,
            thread: Some(thread),
        })
    }

    /// Resets the eventfd counter (call before draining the reader).
    pub fn clear(&self) {
        let mut buf = [0u8; 8];
        // SAFETY: reading 8 bytes into a valid 8-byte buffer from our non-blocking eventfd;
        // EAGAIN (nothing pending) is fine.
        unsafe { libc::read(self.fd.as_raw_fd(), buf.as_mut_ptr().cast(), 8) };
    }
}

fn bridge_loop(control: &Control, fd: &OwnedFd, stop: &AtomicBool) {
    let mut seen = control.tail().next_seq;
    let backoff = Backoff {
        spin_limit: 0,
        yield_limit: 0,
    };
    while !stop.load(Ordering::Acquire) {
        let until = Instant::now() + Duration::from_millis(200);
        let _ = wait::wait_until(
            control.cb(),
            control.is_writable(),
            backoff,
            until,
            Duration::from_millis(200),
            || stop.load(Ordering::Relaxed) || control.tail().next_seq != seen,
        );
        let now = control.tail().next_seq;
        if now != seen {
            seen = now;
            let one = 1u64.to_ne_bytes();
            // SAFETY: writing 8 valid bytes to our eventfd; a full counter (EAGAIN) means the fd
            // is readable already, which is all we want.
            unsafe { libc::write(fd.as_raw_fd(), one.as_ptr().cast(), 8) };
        }
    }
}

impl AsFd for EventFdBridge {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

impl AsRawFd for EventFdBridge {
    fn as_raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}

impl Drop for EventFdBridge {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        // Wake the thread if it sleeps on the futex (a spurious wake for other sleepers, who
        // re-check and sleep again).
        if self.control.is_writable() {
            sys::futex_wake(&self.control.cb().notify, i32::MAX);
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
