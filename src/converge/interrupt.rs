//! Ctrl-C and SIGTERM during apply: the first signal only sets a flag. Converge then starts no
//! new host, lets what is in flight on a host finish (an upload is atomic; a running apply script
//! runs to its end), abandons the rest before the next step (the held lock+facts command is
//! closed, so the board lock goes with it), and apply reports which hosts are done, half done
//! and untouched, exiting 130. A second signal ends rvcluster at once (exit 130); the board lock
//! is released by itself even then.
//!
//! The flag is the one process-wide state here: a signal handler can reach nothing else.

use std::sync::atomic::{AtomicBool, Ordering};

static INTERRUPTED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    if INTERRUPTED.swap(true, Ordering::SeqCst) {
        // SAFETY: _exit is async-signal-safe.
        unsafe { libc::_exit(130) };
    }
}

/// Install the handler for SIGINT and SIGTERM (apply only: plan changes nothing and may just die).
pub fn install() {
    let handler = on_signal as extern "C" fn(libc::c_int);
    for sig in [libc::SIGINT, libc::SIGTERM] {
        // SAFETY: installs a handler that only touches an atomic (and _exit on a second signal).
        unsafe {
            let mut sa: libc::sigaction = std::mem::zeroed();
            sa.sa_sigaction = handler as libc::sighandler_t;
            sa.sa_flags = libc::SA_RESTART;
            libc::sigemptyset(&mut sa.sa_mask);
            libc::sigaction(sig, &sa, std::ptr::null_mut());
        }
    }
}

pub fn interrupted() -> bool {
    INTERRUPTED.load(Ordering::SeqCst)
}
