//! Whether this process runs with privileges its caller does not have.
//!
//! The kernel sets `AT_SECURE` in a process's auxiliary vector when the
//! `exec` that started it changed its credentials: a setuid or setgid
//! executable, file capabilities, or a security module's transition. Such a
//! process must not trust its environment, which the less privileged caller
//! chose. anyfork's serve marker is an environment variable, so serve mode
//! is refused in such processes (see [`crate::serve`]).
//!
//! References:
//! - [`getauxval(3)`](https://man7.org/linux/man-pages/man3/getauxval.3.html)
//! - [`ld.so(8)`](https://man7.org/linux/man-pages/man8/ld.so.8.html) ("secure-execution mode")

/// True if the process was started in secure-execution mode (`AT_SECURE`).
pub(crate) fn is_secure_exec() -> bool {
    // SAFETY: getauxval only reads the auxiliary vector the kernel placed
    // on the initial stack; it is async-signal-safe, allocates nothing, and
    // returns 0 for an absent entry.
    unsafe { libc::getauxval(libc::AT_SECURE) != 0 }
}
