//! Issue item 3: a custom template prepared with `eval`, `require`,
//! `send_arg` and `send_fh`, forked many times: every child receives all
//! arguments and descriptors in send order, and the template keeps them.
//! Also the seed's own example: "str1 str2 fh1 fh2 str3".

mod common;

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicU64, Ordering};

use anyfork::{Arg, Args, Fork};
use common::read_all;

static INITIALISED: AtomicU64 = AtomicU64::new(0);

fn init(args: &[Vec<u8>]) -> Result<(), String> {
    let n: u64 = String::from_utf8_lossy(&args[0])
        .parse()
        .map_err(|e| format!("{e}"))?;
    INITIALISED.fetch_add(n, Ordering::SeqCst);
    Ok(())
}
anyfork::initialiser!(init);

/// Reports the initialiser's state and its arguments; writes its pid into
/// every socket it was given.
fn report(mut socket: UnixStream, args: Args) -> std::io::Result<()> {
    let mut parts = vec![INITIALISED.load(Ordering::SeqCst).to_string()];
    for arg in args {
        match arg {
            Arg::Bytes(b) => parts.push(String::from_utf8_lossy(&b).into_owned()),
            Arg::Fd(fd) => {
                let mut s = UnixStream::from(fd);
                writeln!(s, "{}", std::process::id())?;
                parts.push("fd".into());
            }
        }
    }
    socket.write_all(parts.join(" ").as_bytes())
}

#[test]
fn forks_of_a_prepared_template_get_everything_in_order() {
    let plugin = common::build_test_plugin();
    let (fh1_ours, fh1) = UnixStream::pair().unwrap();
    let (fh2_ours, fh2) = UnixStream::pair().unwrap();
    let template = Fork::new()
        .unwrap()
        .eval(init, ["7"])
        .require(&plugin)
        .send_args(["str1", "str2"])
        .send_fh(fh1)
        .send_fh(fh2)
        .eval("template::init", ["35"]);

    let mut pids = Vec::new();
    for i in 0..50 {
        let (socket, process) = template
            .fork()
            .unwrap()
            .send_arg(format!("str3-{i}"))
            .run_with_process(report)
            .unwrap();
        assert_eq!(read_all(socket), format!("42 str1 str2 fd fd str3-{i}"));
        assert!(process.wait().unwrap().success());
        pids.push(process.id());
    }
    // Every child wrote its pid into both descriptors the template holds.
    for mut ours in [fh1_ours, fh2_ours] {
        ours.set_read_timeout(Some(std::time::Duration::from_secs(5)))
            .unwrap();
        let mut text = String::new();
        let mut buf = [0u8; 4096];
        while text.lines().count() < pids.len() {
            let n = ours.read(&mut buf).unwrap();
            assert!(n > 0, "socket closed early");
            text.push_str(std::str::from_utf8(&buf[..n]).unwrap());
        }
        let written: Vec<u32> = text.lines().map(|l| l.parse().unwrap()).collect();
        assert_eq!(written, pids);
    }
    // The library's functions run by name in a fork of the template.
    let socket = template.fork().unwrap().run("plugin::worker").unwrap();
    let said = read_all(socket);
    assert!(said.starts_with("plugin says hello from "), "{said}");
    assert!(said.ends_with("[str1,str2,<fd>,<fd>]"), "{said}");
}

#[test]
fn the_seeds_example_str1_str2_fh1_fh2_str3() {
    // "Example: create a template for a process pool, pass a few strings,
    // some file handles, then fork, pass one more string, and run some code."
    fn some_function(mut socket: UnixStream, mut args: Args) -> std::io::Result<()> {
        let err = std::io::Error::other;
        let (str1, str2) = (args.string().map_err(err)?, args.string().map_err(err)?);
        let (fh1, fh2) = (args.fd().map_err(err)?, args.fd().map_err(err)?);
        let str3 = args.string().map_err(err)?;
        drop((fh1, fh2));
        let mut line = String::new();
        socket.read_to_string(&mut line)?;
        write!(socket, "{str1} {str2} {str3}: {line}")
    }
    let (_keep1, fh1) = UnixStream::pair().unwrap();
    let (_keep2, fh2) = UnixStream::pair().unwrap();
    let pool = Fork::new()
        .unwrap()
        .send_args(["str1", "str2"])
        .send_fh(fh1)
        .send_fh(fh2);
    for i in 1..=2 {
        let mut socket = pool
            .fork()
            .unwrap()
            .send_arg("str3")
            .run(some_function)
            .unwrap();
        writeln!(socket, "hi #{i}").unwrap();
        socket.shutdown(std::net::Shutdown::Write).unwrap();
        assert_eq!(read_all(socket), format!("str1 str2 str3: hi #{i}\n"));
    }
}

#[test]
fn a_template_can_be_forked_from_many_threads() {
    let template = std::sync::Arc::new(Fork::new().unwrap().send_arg("shared"));
    let threads: Vec<_> = (0..4)
        .map(|t| {
            let template = template.clone();
            std::thread::spawn(move || {
                for i in 0..25 {
                    let socket = template
                        .fork()
                        .unwrap()
                        .send_arg(format!("{t}-{i}"))
                        .run(report)
                        .unwrap();
                    assert_eq!(read_all(socket), format!("0 shared {t}-{i}"));
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
}

/// Starts a thread that outlives it.
fn start_a_thread(_args: &[Vec<u8>]) {
    std::thread::spawn(|| std::thread::sleep(std::time::Duration::from_secs(3600)));
}

/// Starts a thread and waits for it to end.
fn start_and_join_a_thread(_args: &[Vec<u8>]) {
    let _ = std::thread::spawn(|| ()).join();
}

fn say_ok(mut socket: UnixStream, _args: Args) -> std::io::Result<()> {
    socket.write_all(b"ok")
}

#[test]
fn a_template_whose_initialiser_left_a_thread_refuses_to_fork() {
    let template = Fork::new().unwrap().eval(start_a_thread, [""; 0]);
    assert!(template.pid().is_ok(), "the template itself is fine");
    for _ in 0..2 {
        match template.fork().unwrap().run(say_ok) {
            Err(anyfork::Error::Refused { kind, message, .. }) => {
                assert_eq!(kind, anyfork::ChildErrorKind::Threaded);
                assert!(message.contains("start_a_thread"), "{message}");
                assert!(message.contains("2 threads"), "{message}");
            }
            other => panic!("a threaded template forked: {other:?}"),
        }
    }
    // It can still run a function itself.
    assert_eq!(read_all(template.run(say_ok).unwrap()), "ok");

    // A thread that has ended is no reason to refuse.
    let template = Fork::new().unwrap().eval(start_and_join_a_thread, [""; 0]);
    assert_eq!(
        read_all(template.fork().unwrap().run(say_ok).unwrap()),
        "ok"
    );
}

fn failing_initialiser(_args: &[Vec<u8>]) -> Result<(), String> {
    Err("the table is missing".into())
}

fn quiet_initialiser(_args: &[Vec<u8>]) {}

#[test]
fn pid_and_process_report_a_failed_eval() {
    // The default template's spare already said its pid: the failure must
    // still be reported, not the pid.
    for _ in 0..3 {
        let fork = Fork::new().unwrap().eval(failing_initialiser, [""; 0]);
        match fork.pid() {
            Err(anyfork::Error::Refused { kind, message, .. }) => {
                assert_eq!(kind, anyfork::ChildErrorKind::InitialiserFailed);
                assert!(message.contains("the table is missing"), "{message}");
            }
            other => panic!("pid() after a failing eval: {other:?}"),
        }
        assert!(fork.pid().is_err(), "and it stays failed");
        let fork = Fork::new().unwrap().eval(failing_initialiser, [""; 0]);
        assert!(fork.process().is_err());
    }
    // A good initialiser: the pid, and the same pid again.
    let fork = Fork::new().unwrap().eval(quiet_initialiser, [""; 0]);
    let pid = fork.pid().unwrap();
    assert_eq!(fork.pid().unwrap(), pid);
    assert_eq!(read_all(fork.run(say_ok).unwrap()), "ok");
}
