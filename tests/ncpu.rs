//! `ncpu` counts the CPUs this process may use, not the machine's: pinned
//! to one CPU, it says 1 (its own binary: the test changes the process's
//! affinity).

#[test]
fn ncpu_follows_the_affinity_mask() {
    let machine = std::fs::read_to_string("/proc/cpuinfo")
        .map(|info| {
            info.matches("\nprocessor").count() + usize::from(info.starts_with("processor"))
        })
        .unwrap_or(1);
    let all = anyfork::ncpu();
    assert!(all >= 1 && all <= machine.max(1), "{all} of {machine}");

    let mut one = rustix::thread::CpuSet::new();
    let current = rustix::thread::sched_getaffinity(None).unwrap();
    let first = (0..rustix::thread::CpuSet::MAX_CPU)
        .find(|&cpu| current.is_set(cpu))
        .unwrap();
    one.set(first);
    rustix::thread::sched_setaffinity(None, &one).unwrap();
    assert_eq!(anyfork::ncpu(), 1, "pinned to CPU {first}");
    rustix::thread::sched_setaffinity(None, &current).unwrap();
    assert_eq!(anyfork::ncpu(), all);
}
