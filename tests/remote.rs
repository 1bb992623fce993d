//! The Remote surface over a local command transport: this test binary,
//! started by a command in serve mode (`--anyfork-serve=mux:1`, an `env`
//! prefix, `sh -c 'exec …'`), is "the other machine". Run, fork of a far
//! template, eval and shared state, RPC with both backends, and the refusals
//! (send_fh, process handles).

mod common;

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::process::Command;
use std::time::Duration;

use anyfork::remote::{Remote, serve_arg};
use anyfork::{Args, Error};

/// "Another machine": this test binary started by a shell command in
/// serve mode, as `ssh host 'exec prog --anyfork-serve=mux:1'` would.
fn local() -> Remote {
    let exe = std::env::current_exe().unwrap();
    let mut command = Command::new("sh");
    command
        .arg("-c")
        .arg(format!("exec '{}' {}", exe.display(), serve_arg()));
    Remote::command(command).unwrap()
}

fn greet(mut socket: UnixStream, mut args: Args) -> std::io::Result<()> {
    let all: Vec<String> = std::iter::from_fn(|| args.string().ok()).collect();
    write!(socket, "{} from {}", all.join(","), std::process::id())
}

fn echo_lines(socket: UnixStream, _: Args) -> std::io::Result<()> {
    use std::io::BufRead;
    let mut out = socket.try_clone()?;
    for line in std::io::BufReader::new(socket).lines() {
        writeln!(out, "{}", line?.to_uppercase())?;
    }
    Ok(())
}

#[test]
fn run_on_the_far_side_reports_the_far_pid() {
    let remote = local();
    let far = remote.far_side().pid;
    assert_ne!(far, std::process::id());
    let fork = remote.new_exec().unwrap().send_arg("a").send_arg("b");
    let pid = fork.pid().unwrap();
    // The relay started it: its parent is the far side's relay.
    assert_eq!(parent_of(pid), Some(far));
    let mut reply = String::new();
    fork.run(greet).unwrap().read_to_string(&mut reply).unwrap();
    assert_eq!(reply, format!("a,b from {pid}"));
}

fn parent_of(pid: u32) -> Option<u32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after = &stat[stat.rfind(')')? + 2..];
    after.split(' ').nth(1)?.parse().ok()
}

static SHARED: std::sync::Mutex<String> = std::sync::Mutex::new(String::new());

fn remember(args: &[Vec<u8>]) {
    *SHARED.lock().unwrap() = String::from_utf8_lossy(&args[0]).into_owned();
}

fn recall(mut socket: UnixStream, _: Args) -> std::io::Result<()> {
    let seen = SHARED.lock().unwrap().clone();
    socket.write_all(seen.as_bytes())
}

#[test]
fn forks_of_a_far_template_share_what_its_initialiser_built() {
    let remote = local();
    let template = remote.new_exec().unwrap().eval(remember, ["built once"]);
    let template_pid = template.pid().unwrap();
    let mut pids = Vec::new();
    for _ in 0..5 {
        let worker = template.fork().unwrap();
        pids.push(worker.pid().unwrap());
        let mut seen = String::new();
        worker
            .run(recall)
            .unwrap()
            .read_to_string(&mut seen)
            .unwrap();
        assert_eq!(seen, "built once");
    }
    pids.sort();
    pids.dedup();
    assert_eq!(pids.len(), 5);
    assert!(!pids.contains(&template_pid));
}

#[test]
fn a_running_function_streams_both_ways() {
    let remote = local();
    let mut socket = remote.new_exec().unwrap().run(echo_lines).unwrap();
    let mut reader = std::io::BufReader::new(socket.try_clone().unwrap());
    for i in 0..100 {
        writeln!(socket, "line {i}").unwrap();
        let mut line = String::new();
        std::io::BufRead::read_line(&mut reader, &mut line).unwrap();
        assert_eq!(line, format!("LINE {i}\n"));
    }
    // A large write through the flow control, both ways.
    let big = "x".repeat(3_000_000);
    let writer = {
        let mut socket = socket.try_clone().unwrap();
        let big = big.clone();
        std::thread::spawn(move || {
            writeln!(socket, "{big}").unwrap();
            socket.shutdown(std::net::Shutdown::Write).unwrap();
        })
    };
    let mut rest = String::new();
    reader.read_to_string(&mut rest).unwrap();
    writer.join().unwrap();
    assert_eq!(rest.len(), big.len() + 1);
}

fn double(n: u64) -> u64 {
    n * 2
}

async fn triple(n: u64) -> u64 {
    n * 3
}

#[test]
fn rpc_with_both_backends() {
    let remote = local();
    let rpc = remote.new_exec().unwrap().rpc(double).start().unwrap();
    for n in 0..50 {
        assert_eq!(rpc.call_blocking(n).unwrap(), n * 2);
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let rpc = remote.new_exec().unwrap().rpc(triple).start().unwrap();
        let calls: Vec<_> = (0..50u64).map(|n| rpc.call(n)).collect();
        for (n, call) in calls.into_iter().enumerate() {
            assert_eq!(call.await.unwrap(), n as u64 * 3);
        }
    });
}

#[test]
fn descriptors_and_process_handles_are_refused_by_name() {
    let remote = local();
    let (a, _b) = UnixStream::pair().unwrap();
    let error = remote.new_exec().unwrap().send_fh(a).pid().unwrap_err();
    assert!(
        matches!(
            error,
            Error::NoDescriptors {
                what: "send_fh",
                ..
            }
        ),
        "{error}"
    );
    assert!(error.to_string().contains("another machine"), "{error}");
    let fork = remote.new_exec().unwrap();
    assert!(matches!(fork.process(), Err(Error::NotLocal { .. })));
    let error = fork.run_with_process(greet).unwrap_err();
    assert!(matches!(error, Error::NotLocal { .. }), "{error}");
}

#[test]
fn every_way_of_starting_the_far_side() {
    let exe = std::env::current_exe().unwrap();
    let exe = exe.to_str().unwrap();
    let commands = [
        vec![
            "sh".to_owned(),
            "-c".into(),
            format!("exec '{exe}' {}", serve_arg()),
        ],
        vec!["env".to_owned(), "ANYFORK_SERVE=mux:1".into(), exe.into()],
    ];
    for words in commands {
        let mut command = Command::new(&words[0]);
        command.args(&words[1..]);
        let remote = Remote::command(command).unwrap();
        let rpc = remote.new_exec().unwrap().rpc(double).start().unwrap();
        assert_eq!(rpc.call_blocking(4).unwrap(), 8, "{words:?}");
    }
    // A creator of our own: the pipes of a process we started.
    let mut child = Command::new(exe)
        .arg(serve_arg())
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let (stdin, stdout) = (child.stdin.take().unwrap(), child.stdout.take().unwrap());
    let remote = Remote::from_streams(stdout, stdin).unwrap();
    let rpc = remote.new_exec().unwrap().rpc(double).start().unwrap();
    assert_eq!(rpc.call_blocking(5).unwrap(), 10);
    drop((rpc, remote));
    let status = child.wait().unwrap();
    assert!(status.success(), "{status}");
}

#[test]
fn the_far_side_leaves_nothing_behind() {
    let remote = local();
    let relay = remote.far_side().pid;
    let template = remote.new_exec().unwrap();
    let mut pids = vec![template.pid().unwrap()];
    let mut sockets = Vec::new();
    for _ in 0..3 {
        let worker = template.fork().unwrap();
        pids.push(worker.pid().unwrap());
        // Functions that would run forever.
        sockets.push(worker.run(forever).unwrap());
    }
    pids.push(relay);
    // The connection ends with the last process and handle on it; the
    // functions ignore the end of their sockets and are killed.
    drop((template, remote, sockets));
    assert!(
        common::wait_until(Duration::from_secs(10), || pids
            .iter()
            .all(|p| common::has_ended(*p))),
        "still there: {:?}",
        pids.iter()
            .filter(|p| !common::has_ended(**p))
            .collect::<Vec<_>>()
    );
}

fn forever(_: UnixStream, _: Args) {
    loop {
        std::thread::sleep(Duration::from_secs(1));
    }
}

#[test]
fn function_values_work_with_a_copy_of_the_executable() {
    // The same build as another file (as on another machine): function
    // values are offsets, checked against the far executable.
    let dir = std::env::temp_dir().join(format!("anyfork-copy-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let copy = dir.join("prog");
    std::fs::copy(std::env::current_exe().unwrap(), &copy).unwrap();
    let mut command = Command::new(&copy);
    command.arg(serve_arg());
    let remote = Remote::command(command).unwrap();
    let template = remote.new_exec().unwrap().eval(remember, ["copied"]);
    let mut seen = String::new();
    template
        .fork()
        .unwrap()
        .run(recall)
        .unwrap()
        .read_to_string(&mut seen)
        .unwrap();
    assert_eq!(seen, "copied");
    let rpc = template.fork().unwrap().rpc(double).start().unwrap();
    assert_eq!(rpc.call_blocking(7).unwrap(), 14);
    drop((rpc, template, remote));
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn require_loads_a_library_on_the_far_side() {
    let plugin = common::build_test_plugin();
    let remote = local();
    let template = remote
        .new_exec()
        .unwrap()
        .require(&plugin)
        .eval("plugin::init", ["5"]);
    for _ in 0..2 {
        let worker = template.fork().unwrap().send_arg("far");
        let pid = worker.pid().unwrap();
        let said = common::read_all(worker.run("plugin::worker").unwrap());
        assert_eq!(
            said,
            format!("plugin says hello from {pid} after 5 greetings with [far]")
        );
    }
    // A library that is not there: refused by name, on the far side.
    let error = remote
        .new_exec()
        .unwrap()
        .require("/nonexistent/libnothing.so")
        .pid()
        .unwrap_err();
    assert!(error.to_string().contains("libnothing.so"), "{error}");
}

fn context_switches(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("voluntary_ctxt_switches:"))
        .unwrap()
        .trim()
        .parse()
        .unwrap()
}

#[test]
fn an_idle_far_side_sleeps() {
    // No timer on either side without a keepalive: the relay wakes for
    // frames and for its children's exits (SIGCHLD), nothing else.
    let exe = std::env::current_exe().unwrap();
    let mut command = Command::new(exe);
    command.arg(serve_arg());
    let remote = Remote::builder().no_keepalive().command(command).unwrap();
    let template = remote.new_exec().unwrap();
    template.pid().unwrap();
    let relay = remote.far_side().pid;
    let before = context_switches(relay);
    std::thread::sleep(Duration::from_secs(1));
    let woke = context_switches(relay) - before;
    assert!(woke <= 3, "the idle relay woke {woke} times in a second");
    // Its children's exits still reach the parent at once.
    let worker = template.fork().unwrap();
    let pid = worker.pid().unwrap();
    drop(worker);
    assert!(common::wait_until(Duration::from_secs(2), || remote
        .exit_status(pid)
        .is_some()));
}
