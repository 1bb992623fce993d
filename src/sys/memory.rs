//! What the kernel says about memory: a process's resident set size
//! (`/proc/<pid>/statm`) and how often the OOM killer struck in this
//! process's memory cgroup (`memory.events` in cgroup v2,
//! `memory.oom_control` in v1).
//!
//! References:
//! - [`cgroups(7)`](https://man7.org/linux/man-pages/man7/cgroups.7.html)
//! - [`proc_pid_statm(5)`](https://man7.org/linux/man-pages/man5/proc_pid_statm.5.html)
//! - [cgroup v2 `memory.events`](https://docs.kernel.org/admin-guide/cgroup-v2.html#memory-interface-files)

use std::path::{Path, PathBuf};

/// The resident set size of process `pid`, in bytes; `None` once it is
/// gone (or `/proc` is not mounted).
pub(crate) fn rss_bytes(pid: u32) -> Option<u64> {
    let statm = std::fs::read_to_string(format!("/proc/{pid}/statm")).ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    Some(pages * rustix::param::page_size() as u64)
}

/// Where the kernel counts the OOM kills of process `pid`'s memory cgroup
/// (and below it), if it does and the file can be read.
pub(crate) fn oom_kill_file(pid: u32) -> Option<PathBuf> {
    let cgroups = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).ok()?;
    for line in cgroups.lines() {
        let mut parts = line.splitn(3, ':');
        let (_, controllers, path) = (parts.next()?, parts.next()?, parts.next()?);
        let path = path.trim_start_matches('/');
        let candidates = if controllers.is_empty() {
            // cgroup v2: one hierarchy.
            [
                PathBuf::from(format!("/sys/fs/cgroup/{path}/memory.events")),
                PathBuf::from("/sys/fs/cgroup/memory.events"),
            ]
        } else if controllers.split(',').any(|c| c == "memory") {
            // cgroup v1; inside a cgroup namespace the mount shows only
            // this process's part of the path.
            [
                PathBuf::from(format!("/sys/fs/cgroup/memory/{path}/memory.oom_control")),
                PathBuf::from("/sys/fs/cgroup/memory/memory.oom_control"),
            ]
        } else {
            continue;
        };
        if let Some(file) = candidates.into_iter().find(|f| oom_kills(f).is_some()) {
            return Some(file);
        }
    }
    None
}

/// The OOM kills counted in `file` (from [`oom_kill_file`]).
pub(crate) fn oom_kills(file: &Path) -> Option<u64> {
    read_key(file, "oom_kill")
}

/// The number after `key` on its line of a `key value` file.
fn read_key(file: &Path, key: &str) -> Option<u64> {
    let text = std::fs::read_to_string(file).ok()?;
    text.lines().find_map(|line| {
        let (k, v) = line.split_once(' ')?;
        (k == key).then(|| v.trim().parse().ok()).flatten()
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn rss_of_this_process_is_known() {
        let rss = super::rss_bytes(std::process::id()).expect("statm");
        assert!(rss > 100 * 1024, "{rss}");
    }

    #[test]
    fn rss_of_no_process_is_none() {
        assert_eq!(super::rss_bytes(u32::MAX - 1), None);
    }

    #[test]
    fn this_process_has_an_oom_count_where_cgroups_are_mounted() {
        if let Some(file) = super::oom_kill_file(std::process::id()) {
            assert!(super::oom_kills(&file).is_some(), "{file:?}");
        }
    }

    #[test]
    fn key_lines_are_read() {
        let dir = std::env::temp_dir().join(format!("anyfork-keys-{}", std::process::id()));
        std::fs::write(&dir, "oom 3\noom_kill 7\n").unwrap();
        assert_eq!(super::read_key(&dir, "oom_kill"), Some(7));
        assert_eq!(super::read_key(&dir, "max"), None);
        std::fs::remove_file(dir).unwrap();
    }
}
