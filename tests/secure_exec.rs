//! Hardening item 1: serve mode is refused in a setuid (or setgid, or
//! file-capability) program, so a local user cannot make such a program
//! run their commands (`require` of their own library) with its privileges.
//!
//! A setuid-root copy of this test binary is started as `nobody` with the
//! serve marker and a socket at descriptor 3, as an attacker would: it must
//! exit without a word on the socket, saying why on stderr.

use std::io::Read;
use std::os::fd::AsRawFd;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixStream;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::process::{Command, Stdio};
use std::time::Duration;

/// Starts `command` as a serving process would be started (the serve
/// marker, a socket at descriptor 3, no stdin or stdout); returns the child
/// and our end of the socket, with a read timeout of 10 s.
fn start_with_marker(mut command: Command) -> (std::process::Child, UnixStream) {
    let (ours, theirs) = UnixStream::pair().unwrap();
    let theirs_fd = theirs.as_raw_fd();
    command
        .env("ANYFORK_SERVE", "3:1")
        .stdin(Stdio::null())
        .stdout(Stdio::null());
    // SAFETY: dup2 is async-signal-safe; the closure allocates nothing.
    unsafe {
        command.pre_exec(move || {
            if libc::dup2(theirs_fd, 3) == -1 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let child = command.spawn().unwrap();
    drop(theirs);
    ours.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    (child, ours)
}

#[test]
fn a_setuid_copy_started_by_another_user_with_the_marker_does_not_serve() {
    // SAFETY: geteuid has no preconditions.
    let euid = unsafe { libc::geteuid() };
    assert_eq!(
        euid, 0,
        "this test makes a setuid-root copy of itself, which needs root (CI runs as root)"
    );
    let dir = std::env::temp_dir().join(format!("anyfork-secure-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    let copy = dir.join("setuid-copy");
    std::fs::copy(std::env::current_exe().unwrap(), &copy).unwrap();
    std::os::unix::fs::chown(&copy, Some(0), Some(0)).unwrap();
    std::fs::set_permissions(&copy, std::fs::Permissions::from_mode(0o4755)).unwrap();

    let mut command = Command::new(&copy);
    command.uid(65534).gid(65534).stderr(Stdio::piped());
    let (child, mut ours) = start_with_marker(command);
    let mut said = Vec::new();
    let read = ours.read_to_end(&mut said);
    // A serving copy would wait for commands: closing our end ends it.
    drop(ours);
    let output = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    let _ = std::fs::remove_dir_all(&dir);

    assert!(read.is_ok(), "the socket ends: {read:?}");
    assert!(
        said.is_empty(),
        "a setuid copy served its socket (it sent {said:?}); stderr: {stderr}"
    );
    assert_eq!(
        output.status.code(),
        Some(anyfork::EXIT_SERVE_FAILED),
        "{:?}: {stderr}",
        output.status.signal()
    );
    assert!(stderr.contains("AT_SECURE"), "stderr says why: {stderr}");
}

#[test]
fn without_privileges_the_same_binary_serves() {
    // The control: the same start, unprivileged, is served (a `P` frame).
    let mut command = Command::new(std::env::current_exe().unwrap());
    command.stderr(Stdio::null());
    let (mut child, mut ours) = start_with_marker(command);
    let mut frame = [0u8; 9];
    ours.read_exact(&mut frame).unwrap();
    assert_eq!(frame[0], b'P');
    drop(ours);
    assert!(child.wait().unwrap().success());
}
