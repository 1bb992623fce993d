//! `anyfork::early()`: its own test binary (harness = false), because it
//! forks the calling program and must run before any thread exists.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicU64, Ordering};

/// Set before `early()`: a process forked from the early template sees it,
/// an exec'd one would see 0.
static BEFORE_EARLY: AtomicU64 = AtomicU64::new(0);

fn report(mut socket: UnixStream, _args: anyfork::Args) -> std::io::Result<()> {
    // Descriptors above stderr that are not /dev/null (what the program had
    // open is /dev/null in its copies), minus read_dir's own.
    let fds = std::fs::read_dir("/proc/self/fd")?
        .filter_map(|entry| {
            let entry = entry.ok()?;
            let fd: i32 = entry.file_name().to_str()?.parse().ok()?;
            let target = std::fs::read_link(entry.path()).ok()?;
            (fd > 2 && target != std::path::Path::new("/dev/null")).then_some(())
        })
        .count()
        - 1;
    write!(
        socket,
        "{} {} {}",
        BEFORE_EARLY.load(Ordering::SeqCst),
        std::process::id(),
        fds
    )
}

fn read_all(mut socket: UnixStream) -> String {
    let mut out = String::new();
    socket.read_to_string(&mut out).expect("read");
    out
}

fn main() {
    BEFORE_EARLY.store(4242, Ordering::SeqCst);
    anyfork::early().expect("early() in a single-threaded program");
    anyfork::early().expect("a second early() does nothing");

    // new_exec now forks the early template: the child has the memory of the
    // program as it was when early() ran.
    let fork = anyfork::Fork::new_exec().expect("new_exec");
    let (socket, process) = fork.run_with_process(report).expect("run");
    let seen = read_all(socket);
    let parts: Vec<&str> = seen.split(' ').collect();
    assert_eq!(
        parts[0], "4242",
        "new_exec after early() must fork the early template: {seen}"
    );
    assert_eq!(parts[1], process.id().to_string());
    // Above stderr only the socket: nothing leaked from the program (its
    // descriptors are /dev/null in the copy).
    assert_eq!(parts[2], "1", "descriptors in the child: {seen}");
    assert!(process.wait().expect("wait").success());

    // After early(), a multi-threaded runtime may start; Fork::new() (whose
    // default template is itself a fork of the early template) works from
    // all its threads.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(4)
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        let mut tasks = Vec::new();
        for _ in 0..16 {
            tasks.push(tokio::spawn(async {
                let mut socket = anyfork::Fork::new()
                    .expect("new")
                    .run_async(report)
                    .await
                    .expect("run");
                let mut out = String::new();
                tokio::io::AsyncReadExt::read_to_string(&mut socket, &mut out)
                    .await
                    .expect("read");
                out
            }));
        }
        for task in tasks {
            let seen = task.await.expect("task");
            assert!(
                seen.starts_with("4242 "),
                "fork of the default template: {seen}"
            );
        }
    });

    // The early template refuses nothing new: a named function works too.
    let mut socket = anyfork::Fork::new_exec()
        .expect("new_exec")
        .run("early::named")
        .expect("run by name");
    let mut byte = [0u8; 2];
    socket.read_exact(&mut byte).expect("read");
    assert_eq!(&byte, b"ok");
    println!("early: all checks passed");
}

fn named(mut socket: UnixStream, _args: anyfork::Args) -> std::io::Result<()> {
    socket.write_all(b"ok")
}
anyfork::function!(named);
