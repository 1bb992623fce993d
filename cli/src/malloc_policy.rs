//! How this program's `malloc` treats freed memory, for steady figures.
//!
//! glibc returns freed memory at the top of its heap to the kernel once
//! more than `M_TRIM_THRESHOLD` is free, and serves requests over
//! `M_MMAP_THRESHOLD` with fresh mappings; both thresholds move with what
//! the program freed before. A 1 MiB RPC call allocates the value sent and
//! the value received: depending on that history each costs nothing or
//! 256 page faults (a few hundred µs), which is `malloc`'s doing, not the
//! transport's. anyfork's own buffers are reused and never fault; the
//! benchmark makes the user's values behave the same by keeping freed
//! memory (256 MiB thresholds), in this process with `mallopt` and in the
//! processes it starts (templates are started with `exec`) with
//! `GLIBC_TUNABLES`. A server with steady large messages would be set up
//! the same way (or use jemalloc or mimalloc).
//!
//! `ANYFORK_BENCH_MALLOC=default` leaves `malloc` as it is.

/// The threshold both are set to.
const KEEP: usize = 256 << 20;

/// Keeps freed memory in this process and the processes it starts, unless
/// `ANYFORK_BENCH_MALLOC=default`. Returns what was done, for the report.
pub fn keep_freed_memory() -> &'static str {
    if std::env::var_os("ANYFORK_BENCH_MALLOC").is_some_and(|v| v == "default") {
        return "malloc as it is (ANYFORK_BENCH_MALLOC=default)";
    }
    if !cfg!(all(target_os = "linux", target_env = "gnu")) {
        return "malloc as it is (not glibc)";
    }
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        // SAFETY: mallopt only sets glibc's thresholds; called at the start
        // of `main`, before any other thread exists.
        unsafe {
            libc::mallopt(libc::M_TRIM_THRESHOLD, KEEP as libc::c_int);
            libc::mallopt(libc::M_MMAP_THRESHOLD, KEEP as libc::c_int);
        }
        if std::env::var_os("GLIBC_TUNABLES").is_none() {
            let tunables =
                format!("glibc.malloc.trim_threshold={KEEP}:glibc.malloc.mmap_threshold={KEEP}");
            // SAFETY: at the start of `main`, before any other thread
            // exists, so nothing reads the environment meanwhile.
            unsafe { std::env::set_var("GLIBC_TUNABLES", tunables) };
        }
    }
    "malloc keeps freed memory (256 MiB trim and mmap thresholds; ANYFORK_BENCH_MALLOC=default to measure without)"
}
