//! Helpers shared by the integration tests: reading sockets, and looking at
//! processes and descriptors through /proc.
#![allow(dead_code)]

use std::io::Read;
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

/// Reads the socket to end-of-file.
pub fn read_all(mut socket: UnixStream) -> String {
    let mut out = String::new();
    socket
        .read_to_string(&mut out)
        .expect("read to end of file");
    out
}

/// The fields of /proc/PID/stat after the command name: state is [0],
/// ppid is [1].
fn stat_fields(pid: u32) -> Option<Vec<String>> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after = stat.rsplit_once(')')?.1;
    Some(after.split_whitespace().map(str::to_owned).collect())
}

/// The state letter of a process (R, S, Z, ...), or None if it is gone.
pub fn state(pid: u32) -> Option<char> {
    stat_fields(pid)?.first()?.chars().next()
}

/// True if the process no longer runs (gone, or a zombie).
pub fn has_ended(pid: u32) -> bool {
    matches!(state(pid), None | Some('Z') | Some('X'))
}

/// Every process whose parent is `parent`, with its state.
pub fn children_of(parent: u32) -> Vec<(u32, char)> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir("/proc").expect("/proc") {
        let Ok(entry) = entry else { continue };
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        if let Some(fields) = stat_fields(pid) {
            if fields.get(1).and_then(|p| p.parse::<u32>().ok()) == Some(parent) {
                out.push((pid, fields[0].chars().next().unwrap_or('?')));
            }
        }
    }
    out
}

/// Zombie children of `parent`.
pub fn zombies_of(parent: u32) -> Vec<u32> {
    children_of(parent)
        .into_iter()
        .filter(|(_, s)| *s == 'Z')
        .map(|(p, _)| p)
        .collect()
}

/// Polls `condition` until it holds or `timeout` passes; returns whether it
/// held.
pub fn wait_until(timeout: Duration, mut condition: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if condition() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// A field (in kB) of /proc/PID/smaps_rollup, e.g. "Pss" or "Rss".
pub fn smaps_kb(pid: u32, field: &str) -> u64 {
    let text = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).expect("smaps_rollup");
    text.lines()
        .find_map(|l| {
            let rest = l.strip_prefix(field)?.strip_prefix(':')?;
            rest.split_whitespace().next()?.parse().ok()
        })
        .unwrap_or_else(|| panic!("no {field} in smaps_rollup of {pid}"))
}

/// The descriptors the calling process has open above stderr, as
/// "fd -> target" strings (for the child side of hygiene tests).
pub fn own_fds_above_stderr() -> Vec<String> {
    let mut out = Vec::new();
    let dir = std::fs::read_dir("/proc/self/fd").expect("/proc/self/fd");
    for entry in dir.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Ok(fd) = name.parse::<i32>() else {
            continue;
        };
        if fd <= 2 {
            continue;
        }
        // read_dir's own descriptor shows up as a directory that is gone
        // once we are done; skip it.
        let target = std::fs::read_link(entry.path())
            .map(|p| p.display().to_string())
            .unwrap_or_default();
        if target.starts_with("/proc/") && target.ends_with("/fd") {
            continue;
        }
        out.push(format!("{fd} -> {target}"));
    }
    out.sort();
    out
}

/// Runs `cargo build` with `args` in this workspace and returns the paths
/// of the files it reports as built (cargo does not hold its lock while
/// tests run, so a test can build what it needs).
pub fn cargo_build(args: &[&str]) -> Vec<std::path::PathBuf> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let output = std::process::Command::new(cargo)
        .arg("build")
        .args(args)
        .arg("--message-format=json")
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("run cargo build");
    assert!(
        output.status.success(),
        "cargo build {args:?} failed:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let stdout = String::from_utf8_lossy(&output.stdout);
    let mut built = Vec::new();
    for line in stdout
        .lines()
        .filter(|l| l.contains("\"compiler-artifact\""))
    {
        // "executable":"/path" for binaries; "filenames":["/path", ...] for
        // libraries.
        if let Some((_, rest)) = line.split_once("\"executable\":\"") {
            built.extend(rest.split('"').next().map(std::path::PathBuf::from));
        } else if let Some((_, rest)) = line.split_once("\"filenames\":[") {
            let list = rest.split(']').next().unwrap_or_default();
            built.extend(
                list.split(',')
                    .map(|p| std::path::PathBuf::from(p.trim_matches('"'))),
            );
        }
    }
    built
}

/// Builds the test plugin (a cdylib) and returns the path of its library.
pub fn build_test_plugin() -> std::path::PathBuf {
    cargo_build(&["-p", "anyfork-test-plugin"])
        .into_iter()
        .find(|p| p.ends_with("libanyfork_test_plugin.so"))
        .expect("cargo reports libanyfork_test_plugin.so")
}

/// Starts this test binary's ignored test `helper` with the environment
/// variable `switch` set (the helper does nothing without it), and reads
/// the pids it prints on a line `PIDS 1 2 3`. The helper then waits to be
/// killed.
pub fn start_helper(helper: &str, switch: &str) -> (std::process::Child, Vec<u32>) {
    use std::io::BufRead;
    let mut child = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            helper,
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(switch, "1")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    for line in std::io::BufReader::new(stdout).lines() {
        let line = line.unwrap();
        if let Some((_, rest)) = line.split_once("PIDS ") {
            let pids = rest.split(' ').map(|p| p.parse::<u32>().unwrap()).collect();
            return (child, pids);
        }
    }
    (child, Vec::new())
}

/// An error and its causes in one line (`outer: inner: innermost`): each
/// error's `Display` says only its own part, `source()` has the rest.
pub fn chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut cause = error.source();
    while let Some(inner) = cause {
        text.push_str(": ");
        text.push_str(&inner.to_string());
        cause = inner.source();
    }
    text
}

/// A memory cgroup made for a test, with a limit and no swap; removed
/// when dropped (once its processes are gone).
pub struct MemoryCgroup {
    dir: std::path::PathBuf,
    procs: std::path::PathBuf,
}

impl MemoryCgroup {
    /// `None` where no memory cgroup can be made (not root, no hierarchy).
    pub fn create(name: &str, limit: u64) -> Option<MemoryCgroup> {
        let name = format!("{name}-{}", std::process::id());
        let v1 = std::path::Path::new("/sys/fs/cgroup/memory");
        if v1.join("memory.limit_in_bytes").exists() {
            let dir = v1.join(name);
            std::fs::create_dir(&dir).ok()?;
            std::fs::write(dir.join("memory.limit_in_bytes"), limit.to_string()).ok()?;
            // Without swap, or the hog would swap instead of dying.
            let _ = std::fs::write(dir.join("memory.memsw.limit_in_bytes"), limit.to_string());
            let _ = std::fs::write(dir.join("memory.swappiness"), "0");
            return Some(MemoryCgroup {
                procs: dir.join("cgroup.procs"),
                dir,
            });
        }
        let v2 = std::path::Path::new("/sys/fs/cgroup");
        if v2.join("cgroup.controllers").exists() {
            let dir = v2.join(name);
            std::fs::create_dir(&dir).ok()?;
            std::fs::write(dir.join("memory.max"), limit.to_string()).ok()?;
            let _ = std::fs::write(dir.join("memory.swap.max"), "0");
            return Some(MemoryCgroup {
                procs: dir.join("cgroup.procs"),
                dir,
            });
        }
        None
    }

    /// Moves process `pid` into the cgroup (its later children start
    /// there).
    pub fn adopt(&self, pid: u32) {
        std::fs::write(&self.procs, pid.to_string()).expect("move into the cgroup");
    }
}

impl Drop for MemoryCgroup {
    fn drop(&mut self) {
        // Its processes may take a moment to be gone.
        wait_until(Duration::from_secs(5), || {
            std::fs::remove_dir(&self.dir).is_ok()
        });
    }
}

/// Builds example `name` and returns its path.
pub fn example_binary(name: &str) -> std::path::PathBuf {
    cargo_build(&["--example", name])
        .into_iter()
        .find(|p| p.file_name().is_some_and(|f| f == name))
        .unwrap_or_else(|| panic!("the example {name} was not built"))
}

/// A relay (this test binary in serve mode) whose connection the test can
/// cut, as a network drop would: its stdin and stdout are sockets the test
/// holds, with a thread carrying bytes each way.
pub struct CuttableFarSide {
    pub relay: std::process::Child,
    pub remote: anyfork::remote::Remote,
    cut_in: UnixStream,
    cut_out: UnixStream,
}

impl CuttableFarSide {
    pub fn start() -> CuttableFarSide {
        use std::os::fd::OwnedFd;
        use std::process::Stdio;
        let (cut_in, far_in) = UnixStream::pair().unwrap();
        let (cut_out, far_out) = UnixStream::pair().unwrap();
        let relay = std::process::Command::new(std::env::current_exe().unwrap())
            .arg(anyfork::remote::serve_arg())
            .stdin(Stdio::from(OwnedFd::from(far_in)))
            .stdout(Stdio::from(OwnedFd::from(far_out)))
            .spawn()
            .unwrap();
        let (ours, theirs) = UnixStream::pair().unwrap();
        let carry = |mut from: UnixStream, mut to: UnixStream| {
            std::thread::spawn(move || {
                let _ = std::io::copy(&mut from, &mut to);
                let _ = to.shutdown(std::net::Shutdown::Write);
            });
        };
        carry(cut_out.try_clone().unwrap(), theirs.try_clone().unwrap());
        carry(theirs, cut_in.try_clone().unwrap());
        let remote = anyfork::remote::Remote::builder()
            .streams(ours.try_clone().unwrap(), ours)
            .unwrap();
        CuttableFarSide {
            relay,
            remote,
            cut_in,
            cut_out,
        }
    }

    /// Cuts the connection: neither side hears the other again.
    pub fn cut(&self) {
        let _ = self.cut_in.shutdown(std::net::Shutdown::Both);
        let _ = self.cut_out.shutdown(std::net::Shutdown::Both);
    }
}

/// This test binary's path.
pub fn exe() -> String {
    std::env::current_exe()
        .unwrap()
        .to_str()
        .unwrap()
        .to_owned()
}

/// "Another machine": this test binary started by a command in serve mode
/// (`prog --anyfork-serve=mux:1`).
pub fn local_remote() -> anyfork::remote::Remote {
    let mut command = std::process::Command::new(exe());
    command.arg(anyfork::remote::serve_arg());
    anyfork::remote::Remote::command(command).unwrap()
}
