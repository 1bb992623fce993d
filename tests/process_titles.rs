//! What `ps` shows: a title per role instead of the program's command line
//! for every process, or the one the parent chose; the environment still
//! works in the process after its memory was taken for the title.

mod common;

use std::io::Write;
use std::os::unix::net::UnixStream;

use anyfork::rpc::Codec;
use anyfork::{Args, Fork, Signal};

fn cmdline(pid: u32) -> String {
    let bytes = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap();
    let text = String::from_utf8_lossy(&bytes);
    text.trim_end_matches('\0').to_owned()
}

/// Waits (at most 5 s) for the process's command line to be `expected`,
/// and returns what it is then.
fn cmdline_becomes(pid: u32, expected: &str) -> String {
    common::wait_until(std::time::Duration::from_secs(5), || {
        cmdline(pid) == expected
    });
    cmdline(pid)
}

fn program() -> String {
    let exe = std::env::current_exe().unwrap();
    exe.file_name().unwrap().to_string_lossy().into_owned()
}

/// Answers the value of PATH as the worker sees it, then waits.
fn report_path(mut socket: UnixStream, _: Args) -> std::io::Result<()> {
    let path = std::env::var("PATH").unwrap_or_default();
    socket.write_all(path.as_bytes())?;
    socket.shutdown(std::net::Shutdown::Write)?;
    std::thread::park();
    Ok(())
}

fn double(n: u64) -> u64 {
    n * 2
}

#[test]
fn each_role_has_its_title() {
    if !cfg!(target_env = "gnu") {
        eprintln!("process titles need glibc: nothing to check here");
        return;
    }
    let template = Fork::new_exec().unwrap();
    let template_pid = template.pid().unwrap();
    let expected = format!("{} [anyfork template]", program());
    assert_eq!(cmdline_becomes(template_pid, &expected), expected);

    let (socket, worker) = template
        .fork()
        .unwrap()
        .run_with_process(report_path)
        .unwrap();
    let path = common::read_all(socket);
    assert_eq!(
        path,
        std::env::var("PATH").unwrap_or_default(),
        "the environment still works"
    );
    assert_eq!(
        cmdline(worker.id()),
        format!("{} [anyfork worker process_titles::report_path]", program())
    );
    worker.kill(Signal::KILL).unwrap();

    let rpc = Fork::new()
        .unwrap()
        .rpc(double)
        .codec(Codec::Cbor)
        .start()
        .unwrap();
    assert_eq!(rpc.call_blocking(2).unwrap(), 4);
    assert_eq!(
        cmdline(rpc.pid().unwrap()),
        format!("{} [anyfork rpc process_titles::double]", program())
    );
}

#[test]
fn a_chosen_title_stays_and_is_inherited() {
    if !cfg!(target_env = "gnu") {
        eprintln!("process titles need glibc: nothing to check here");
        return;
    }
    let template = Fork::new_exec()
        .unwrap()
        .process_title("billing [pool template]");
    let title = "billing [pool template]";
    assert_eq!(cmdline_becomes(template.pid().unwrap(), title), title);
    let (socket, worker) = template
        .fork()
        .unwrap()
        .run_with_process(report_path)
        .unwrap();
    drop(common::read_all(socket));
    assert_eq!(
        cmdline(worker.id()),
        "billing [pool template]",
        "run keeps a chosen title"
    );
    worker.kill(Signal::KILL).unwrap();
    let long = "x".repeat(1 << 16);
    let fork = Fork::new().unwrap().process_title(&long);
    let pid = fork.pid().unwrap();
    common::wait_until(std::time::Duration::from_secs(5), || {
        cmdline(pid).starts_with('x')
    });
    let shown = cmdline(pid);
    assert!(
        shown.len() < long.len() && shown.chars().all(|c| c == 'x'),
        "cut to the room there is"
    );
}
