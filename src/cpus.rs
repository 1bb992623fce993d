//! How many CPUs this process may use: [`ncpu`].

/// The number of CPUs this process may run on: the CPUs in its affinity
/// mask (`taskset`, `sched_setaffinity`), further limited by its cgroup's
/// CPU quota (`cpu.max`, as containers set it), rounded up; at least 1.
///
/// Not the machine's count: a program pinned to two CPUs of a 64-CPU
/// machine, or run in a container with a quota of two CPUs, gets 2 here.
/// This is the right number of CPU-bound workers (AnyEvent::Fork::Pool's
/// `ncpu`, which reads `/proc/cpuinfo`, counts the machine's). It is
/// measured at each call, so a process whose mask changed sees the change.
///
/// ```
/// let cpus = anyfork::ncpu();
/// assert!(cpus >= 1);
/// ```
pub fn ncpu() -> usize {
    // The standard library reads the affinity mask and the cgroup (v1 and
    // v2) quotas on Linux.
    std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get)
}
