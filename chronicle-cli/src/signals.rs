//! The one place `chron-cli` handles signals: SIGINT and SIGTERM ask a loop to stop, SIGHUP
//! asks the router to reload its config. The handlers only store to an atomic flag; the loops
//! look at the flags between steps (`tail -f`, the topology roles, `demo`, the soak roles).

use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::{Context, Result};

/// Set by SIGINT or SIGTERM; read by [`stop_requested`]. Relaxed: it carries no data with it.
static STOP: AtomicBool = AtomicBool::new(false);
/// Set by SIGHUP; taken (swapped back to false) by [`take_reload_request`]. Relaxed, as above.
static RELOAD: AtomicBool = AtomicBool::new(false);

extern "C" fn on_stop(_: libc::c_int) {
    STOP.store(true, Ordering::Relaxed);
}

extern "C" fn on_reload(_: libc::c_int) {
    RELOAD.store(true, Ordering::Relaxed);
}

fn install(sig: libc::c_int, handler: extern "C" fn(libc::c_int)) -> Result<()> {
    // SAFETY: a zeroed sigaction is valid plain data; the handler is async-signal-safe (one
    // relaxed atomic store); `sigemptyset` and `sigaction` get pointers to live locals.
    // SA_RESTART: a read or write interrupted by the signal is restarted, not failed.
    let r = unsafe {
        let mut sa: libc::sigaction = std::mem::zeroed();
        sa.sa_sigaction = handler as *const () as usize;
        libc::sigemptyset(&mut sa.sa_mask);
        sa.sa_flags = libc::SA_RESTART;
        libc::sigaction(sig, &sa, std::ptr::null_mut())
    };
    if r != 0 {
        return Err(std::io::Error::last_os_error())
            .with_context(|| format!("cannot install the handler of signal {sig}"));
    }
    Ok(())
}

/// Makes SIGINT and SIGTERM set the stop flag instead of killing the process.
pub fn install_stop_handler() -> Result<()> {
    install(libc::SIGINT, on_stop)?;
    install(libc::SIGTERM, on_stop)
}

/// Whether SIGINT or SIGTERM arrived.
pub fn stop_requested() -> bool {
    STOP.load(Ordering::Relaxed)
}

/// Makes SIGHUP set the reload flag instead of killing the process.
pub fn install_reload_handler() -> Result<()> {
    install(libc::SIGHUP, on_reload)
}

/// Whether SIGHUP arrived since the last call (a burst of them is one request). Called after
/// every router step: a plain load first, the read-modify-write only when it is set.
pub fn take_reload_request() -> bool {
    RELOAD.load(Ordering::Relaxed) && RELOAD.swap(false, Ordering::Relaxed)
}
