//! Pinning the benchmark's processes to CPUs.

use std::io;

/// Pins a process (`None`: the calling thread) to one CPU.
pub fn pin(pid: Option<u32>, cpu: usize) -> io::Result<()> {
    let mut set = rustix::thread::CpuSet::new();
    set.set(cpu);
    let pid = pid.and_then(|pid| rustix::process::Pid::from_raw(pid as i32));
    rustix::thread::sched_setaffinity(pid, &set)?;
    Ok(())
}
