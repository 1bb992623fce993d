//! Remote processes over a real OpenSSH server on 127.0.0.1 (started by
//! the test: a throwaway host key and user key, a free port): run, fork of
//! a far template, RPC with both backends, a pool of four workers over one
//! connection, an executable shipped where it is not installed, another
//! build refused, and every failure by name: an unknown host, a refused
//! login, the program missing or not executable, the far side dying, the
//! connection dropping mid-call, a silent peer caught by the keepalive.
//!
//! Needs `sshd` (`apt-get install openssh-server openssh-client`; CI
//! installs them). Without it these tests fail, saying so: they do not
//! pretend to pass.

mod common;

include!("../support/throwaway_sshd.rs");

use std::io::Read;
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

use anyfork::Args;
use anyfork::remote::{Builder, Error, Remote};

fn server() -> ThrowawaySshd {
    match ThrowawaySshd::start(Duration::from_secs(600)) {
        Ok(server) => server,
        Err(why) => panic!(
            "\n\n*** the ssh tests need a local OpenSSH server and cannot run: {why} ***\n\
             *** install it (apt-get install openssh-server openssh-client) and run them again ***\n\n"
        ),
    }
}

fn builder(server: &ThrowawaySshd) -> Builder {
    let mut builder = Remote::builder().forward_stderr(false);
    for option in server.ssh_options() {
        builder = builder.ssh_option(option);
    }
    builder
}

fn connect(server: &ThrowawaySshd) -> Remote {
    builder(server).ssh(&server.destination()).unwrap()
}

fn greet(mut socket: UnixStream, mut args: Args) -> std::io::Result<()> {
    use std::io::Write;
    let name = args.string()?;
    write!(socket, "hello {name} from {}", std::process::id())
}

fn double(n: u64) -> u64 {
    n * 2
}

async fn triple(n: u64) -> u64 {
    n * 3
}

fn sleepy(ms: u64) -> u32 {
    std::thread::sleep(Duration::from_millis(ms));
    std::process::id()
}

#[test]
fn run_fork_and_rpc_over_ssh() {
    let server = server();
    let remote = connect(&server);
    assert_eq!(remote.name(), format!("ssh {}", server.destination()));
    let template = remote.new_exec().unwrap().send_arg("ssh");
    let template_pid = template.pid().unwrap();
    let mut pids = Vec::new();
    for _ in 0..3 {
        let worker = template.fork().unwrap();
        let pid = worker.pid().unwrap();
        let mut reply = String::new();
        worker
            .run(greet)
            .unwrap()
            .read_to_string(&mut reply)
            .unwrap();
        assert_eq!(reply, format!("hello ssh from {pid}"));
        pids.push(pid);
    }
    assert!(!pids.contains(&template_pid));
    let rpc = remote.new_exec().unwrap().rpc(double).start().unwrap();
    assert_eq!(rpc.call_blocking(21).unwrap(), 42);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let rpc = template.fork().unwrap().rpc(triple).start().unwrap();
        let calls: Vec<_> = (0..20u64).map(|n| rpc.call(n)).collect();
        for (n, call) in calls.into_iter().enumerate() {
            assert_eq!(call.await.unwrap(), n as u64 * 3);
        }
    });
}

#[test]
fn a_pool_of_four_over_one_ssh_connection() {
    let server = server();
    let remote = connect(&server);
    let relay = remote.far_side().pid;
    let pool = remote
        .new_exec()
        .unwrap()
        .pool(sleepy)
        .max(4)
        .idle(4)
        .load(1)
        .build()
        .unwrap();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let mut served: Vec<u32> = runtime.block_on(async {
        let calls: Vec<_> = (0..4).map(|_| pool.call(500)).collect();
        let mut served = Vec::new();
        for call in calls {
            served.push(call.await.unwrap());
        }
        served
    });
    served.sort();
    served.dedup();
    assert_eq!(served.len(), 4, "four workers served at once");
    // One connection: one relay is the parent of every worker.
    for pid in served {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
        let ppid: u32 = stat[stat.rfind(')').unwrap() + 2..]
            .split(' ')
            .nth(1)
            .unwrap()
            .parse()
            .unwrap();
        assert_eq!(ppid, relay);
    }
    pool.shutdown(Duration::from_secs(5));
}

#[test]
fn an_executable_is_shipped_where_it_is_not_installed() {
    let server = server();
    let cache = server.scratch_dir("cache");
    let shipping = || {
        builder(&server)
            .ssh_option("-o")
            .ssh_option(format!("SetEnv=XDG_CACHE_HOME={}", cache.display()))
            // Not installed there: only the shipped copy can answer.
            .program("/nonexistent/anyfork-test")
            .ship_executable(true)
    };
    let remote = shipping().ssh(&server.destination()).unwrap();
    let shipped = cache.join("anyfork").join(anyfork::remote::build_id());
    assert!(shipped.exists(), "{} was shipped", shipped.display());
    let relay = remote.far_side().pid;
    assert_eq!(
        std::fs::read_link(format!("/proc/{relay}/exe")).unwrap(),
        shipped,
        "the far side runs the shipped copy"
    );
    let rpc = remote.new_exec().unwrap().rpc(double).start().unwrap();
    assert_eq!(rpc.call_blocking(2).unwrap(), 4);
    drop((rpc, remote));
    // The next connection finds it in the cache and sends nothing.
    let modified = std::fs::metadata(&shipped).unwrap().modified().unwrap();
    std::thread::sleep(Duration::from_millis(20));
    let remote = shipping().ssh(&server.destination()).unwrap();
    let rpc = remote.new_exec().unwrap().rpc(double).start().unwrap();
    assert_eq!(rpc.call_blocking(3).unwrap(), 6);
    assert_eq!(
        std::fs::metadata(&shipped).unwrap().modified().unwrap(),
        modified
    );
}

#[test]
fn another_build_over_ssh_is_refused() {
    let server = server();
    let error = builder(&server)
        .program(common::example_binary("concepts"))
        .ssh(&server.destination())
        .unwrap_err();
    assert!(
        matches!(error, Error::Skew { what: "build", .. }),
        "{error}"
    );
}

#[test]
fn ssh_refusing_is_named() {
    let server = server();
    // An unknown host: no known_hosts entry, strict checking.
    let error = Remote::builder()
        .forward_stderr(false)
        .ssh_option("-F")
        .ssh_option("/dev/null")
        .ssh_option("-p")
        .ssh_option(server.port.to_string())
        .ssh_option("-o")
        .ssh_option("UserKnownHostsFile=/dev/null")
        .ssh_option("-o")
        .ssh_option("StrictHostKeyChecking=yes")
        .ssh(&server.destination())
        .unwrap_err();
    let text = error.to_string();
    assert!(text.contains("ssh could not connect or log in"), "{text}");
    assert!(text.contains("Host key verification failed"), "{text}");
    // A login refused: no key it accepts.
    let mut options = server.ssh_options();
    let key = options.iter().position(|o| o == "-i").unwrap();
    options[key + 1] = "/nonexistent/key".into();
    let mut refused = Remote::builder().forward_stderr(false);
    for option in options {
        refused = refused.ssh_option(option);
    }
    let error = refused.ssh(&server.destination()).unwrap_err();
    let text = error.to_string();
    assert!(text.contains("ssh could not connect or log in"), "{text}");
    assert!(text.contains("Permission denied"), "{text}");
}

#[test]
fn a_missing_or_unexecutable_program_over_ssh_is_named() {
    let server = server();
    let error = builder(&server)
        .program("/nonexistent/prog")
        .ssh(&server.destination())
        .unwrap_err();
    assert!(
        error.to_string().contains("was not found on the far side"),
        "{error}"
    );
    let file = server.scratch_dir("bin").join("prog");
    std::fs::write(&file, b"not a program").unwrap();
    let error = builder(&server)
        .program(&file)
        .ssh(&server.destination())
        .unwrap_err();
    assert!(
        error
            .to_string()
            .contains("is not executable on the far side"),
        "{error}"
    );
}

#[test]
fn the_far_side_dying_over_ssh_is_named() {
    let server = server();
    let remote = connect(&server);
    let rpc = remote.new_exec().unwrap().rpc(sleepy).start().unwrap();
    assert!(rpc.call_blocking(1).unwrap() > 0);
    // SAFETY: the relay this test's connection started (on this machine).
    unsafe { libc::kill(remote.far_side().pid as i32, libc::SIGKILL) };
    let started = Instant::now();
    let error = rpc.call_blocking(1).unwrap_err();
    assert!(started.elapsed() < Duration::from_secs(10));
    let text = common::chain(&error);
    assert!(text.contains("connection is lost"), "{text}");
    assert!(remote.wait_lost(Duration::from_secs(10)).is_some());
}

#[test]
fn the_connection_dropping_mid_call_fails_the_call_and_leaves_no_orphans() {
    let server = server();
    let remote = connect(&server);
    let relay = remote.far_side().pid;
    let template = remote.new_exec().unwrap();
    let worker = template.fork().unwrap();
    let worker_pid = worker.pid().unwrap();
    let rpc = worker.rpc(sleepy).start().unwrap();
    let ssh = remote.command_pid().expect("ssh runs here");
    let cutter = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(300));
        // SAFETY: the ssh client this test's connection started.
        unsafe { libc::kill(ssh as i32, libc::SIGKILL) };
    });
    let started = Instant::now();
    let error = rpc.call_blocking(60_000).unwrap_err();
    cutter.join().unwrap();
    assert!(started.elapsed() < Duration::from_secs(10), "no hang");
    assert!(
        common::chain(&error).contains("connection is lost"),
        "{error}"
    );
    // The far side ends with its connection: relay, template and worker
    // (which was busy in a call: killed after the grace period).
    assert!(common::wait_until(Duration::from_secs(15), || {
        [relay, worker_pid].iter().all(|p| common::has_ended(*p))
    }));
}

#[test]
fn the_keepalive_catches_a_silent_far_side_over_ssh() {
    let server = server();
    let remote = builder(&server)
        .keepalive(Duration::from_millis(100), Duration::from_millis(800))
        .ssh(&server.destination())
        .unwrap();
    let relay = remote.far_side().pid;
    let rpc = remote.new_exec().unwrap().rpc(sleepy).start().unwrap();
    assert!(rpc.call_blocking(1).unwrap() > 0);
    // SAFETY: the relay this test started; killed below.
    unsafe { libc::kill(relay as i32, libc::SIGSTOP) };
    let started = Instant::now();
    let error = rpc.call_blocking(1).unwrap_err();
    assert!(started.elapsed() < Duration::from_secs(5));
    assert!(
        common::chain(&error).contains("no word from the far side"),
        "{error}"
    );
    // SAFETY: as above.
    unsafe { libc::kill(relay as i32, libc::SIGKILL) };
}
