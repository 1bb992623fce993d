//! Issue item 11: a child holds exactly stdin, stdout, stderr and what it
//! was sent; every descriptor anyfork opens is close-on-exec; the serve
//! marker does not reach programs a child execs; when the parent dies, even
//! by SIGKILL, templates and unrun processes exit within a second.

mod common;

use std::io::Write;
use std::os::fd::AsFd;
use std::os::unix::net::UnixStream;
use std::process::Command;
use std::time::{Duration, Instant};

use anyfork::{Args, Fork};
use common::read_all;

/// Lists its descriptors above stderr with their close-on-exec flag.
fn list_fds(mut socket: UnixStream, _args: Args) -> std::io::Result<()> {
    let mut lines = Vec::new();
    for entry in common::own_fds_above_stderr() {
        let fd: i32 = entry.split(' ').next().unwrap_or("0").parse().unwrap_or(0);
        // SAFETY: only used to read the flags of a descriptor listed as open.
        let borrowed = unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) };
        let cloexec = rustix::io::fcntl_getfd(borrowed)
            .map(|f| f.contains(rustix::io::FdFlags::CLOEXEC))
            .unwrap_or(false);
        let kind = if entry.contains("socket:") {
            "socket"
        } else if entry.contains("pipe:") {
            "pipe"
        } else {
            "other"
        };
        lines.push(format!(
            "{kind}:{}",
            if cloexec { "cloexec" } else { "inherit" }
        ));
    }
    socket.write_all(lines.join(" ").as_bytes())
}

#[test]
fn a_child_holds_exactly_stdio_its_socket_and_what_it_was_sent() {
    // Give the parent some descriptors that must not leak.
    let _noise: Vec<UnixStream> = (0..5).map(|_| UnixStream::pair().unwrap().0).collect();
    let (pipe_r, pipe_w) = rustix::pipe::pipe().unwrap(); // not close-on-exec, on purpose
    for fork in [
        Fork::new().unwrap(),
        Fork::new_exec().unwrap(),
        Fork::new().unwrap().fork().unwrap(),
    ] {
        let socket = fork.run(list_fds).unwrap();
        assert_eq!(read_all(socket), "socket:cloexec", "only its own socket");
    }
    // What it is sent, it holds (close-on-exec, as everything anyfork makes).
    let (a, _b) = UnixStream::pair().unwrap();
    let socket = Fork::new()
        .unwrap()
        .send_fh(a)
        .send_fh(pipe_w)
        .run(list_fds)
        .unwrap();
    let mut seen: Vec<String> = read_all(socket).split(' ').map(str::to_owned).collect();
    seen.sort();
    assert_eq!(seen, ["pipe:cloexec", "socket:cloexec", "socket:cloexec"]);
    drop(pipe_r);
}

/// Sends its own name, as `ps` shows it.
fn own_name(mut socket: UnixStream, _args: Args) -> std::io::Result<()> {
    let name = std::fs::read_to_string("/proc/self/comm")?;
    socket.write_all(name.trim_end().as_bytes())
}

#[test]
fn serving_processes_carry_the_programs_name_not_exe() {
    // Started as /proc/self/exe, a process would be called "exe".
    let exe = std::env::current_exe().unwrap();
    let program = exe.file_name().unwrap().as_encoded_bytes();
    let expected = String::from_utf8_lossy(&program[..program.len().min(15)]).into_owned();
    for fork in [
        Fork::new_exec().unwrap(),
        Fork::new().unwrap(),
        Fork::new_exec().unwrap().fork().unwrap(),
    ] {
        assert_eq!(read_all(fork.run(own_name).unwrap()), expected);
    }
}

#[test]
fn descriptors_anyfork_opens_in_the_parent_are_close_on_exec() {
    let before = common::own_fds_above_stderr();
    let template = Fork::new().unwrap();
    let child = template.fork().unwrap();
    let exec = Fork::new_exec().unwrap();
    let (_socket, process) = Fork::new().unwrap().run_with_process(list_fds).unwrap();
    let _ = (child.pid().unwrap(), exec.pid().unwrap(), process.id());
    // Also the reaper's eventfd and pidfds: every descriptor open now.
    let _ = Fork::new().unwrap();
    std::thread::sleep(Duration::from_millis(20));
    for entry in common::own_fds_above_stderr() {
        if before.contains(&entry) {
            continue;
        }
        let fd: i32 = entry.split(' ').next().unwrap().parse().unwrap();
        // SAFETY: reading the flags of a descriptor listed as open a moment ago.
        let borrowed = unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) };
        if let Ok(flags) = rustix::io::fcntl_getfd(borrowed) {
            assert!(
                flags.contains(rustix::io::FdFlags::CLOEXEC),
                "not close-on-exec: {entry}"
            );
        }
    }
    drop((template, child, exec));
}

/// Execs a shell that reports whether it sees the serve marker and what
/// descriptors it has.
fn exec_shell(socket: UnixStream, _args: Args) -> std::io::Result<()> {
    use std::os::unix::process::CommandExt;
    // The socket becomes the shell's stdout (dup2 clears close-on-exec).
    rustix::stdio::dup2_stdout(socket.as_fd())?;
    drop(socket);
    let err = Command::new("/bin/sh")
        .args([
            "-c",
            "echo \"marker=${ANYFORK_SERVE-unset}\"; ls /proc/self/fd | wc -l",
        ])
        .exec();
    Err(err)
}

#[test]
fn the_serve_marker_and_anyfork_descriptors_do_not_reach_exec() {
    for fork in [Fork::new().unwrap(), Fork::new_exec().unwrap()] {
        let said = read_all(fork.run(exec_shell).unwrap());
        let mut lines = said.lines();
        assert_eq!(lines.next(), Some("marker=unset"));
        // stdin, stdout, stderr, and ls's own directory descriptor.
        assert_eq!(lines.next().map(str::trim), Some("4"), "{said}");
    }
}

/// Helper mode: when ANYFORK_TEST_PARENT_DEATH is set, this ignored test
/// makes a default template, a custom template and unrun processes, prints
/// their pids and waits to be killed.
#[test]
#[ignore = "helper for parent_death_ends_templates_and_unrun_processes"]
fn parent_death_helper() {
    if std::env::var_os("ANYFORK_TEST_PARENT_DEATH").is_none() {
        return;
    }
    let template = Fork::new().unwrap().send_arg("custom template");
    let unrun: Vec<Fork> = (0..5).map(|_| Fork::new().unwrap()).collect();
    let forked: Vec<Fork> = (0..5).map(|_| template.fork().unwrap()).collect();
    let exec = Fork::new_exec().unwrap();
    let mut pids = vec![template.pid().unwrap(), exec.pid().unwrap()];
    pids.extend(unrun.iter().chain(&forked).map(|f| f.pid().unwrap()));
    // The default template: every child of ours not listed above.
    let me = std::process::id();
    for (pid, _) in common::children_of(me) {
        if !pids.contains(&pid) {
            pids.push(pid);
        }
    }
    let line: Vec<String> = pids.iter().map(u32::to_string).collect();
    println!("PIDS {}", line.join(" "));
    std::io::stdout().flush().unwrap();
    std::thread::sleep(Duration::from_secs(60));
}

#[test]
fn parent_death_ends_templates_and_unrun_processes() {
    let (mut helper, pids) =
        common::start_helper("parent_death_helper", "ANYFORK_TEST_PARENT_DEATH");
    assert!(
        pids.len() >= 13,
        "the helper reports its processes: {pids:?}"
    );
    for &pid in &pids {
        assert!(!common::has_ended(pid), "{pid} runs before the parent dies");
    }
    helper.kill().unwrap(); // SIGKILL
    let killed_at = Instant::now();
    helper.wait().unwrap();
    let all_ended = common::wait_until(Duration::from_secs(1), || {
        pids.iter().all(|&p| common::has_ended(p))
    });
    let alive: Vec<u32> = pids
        .iter()
        .copied()
        .filter(|&p| !common::has_ended(p))
        .collect();
    assert!(
        all_ended,
        "still running {:?} after {:?}",
        alive,
        killed_at.elapsed()
    );
}
