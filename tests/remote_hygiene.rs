//! A remote connection leaves nothing behind in this program: once its
//! last handle and process are gone, its pump thread ends, every
//! descriptor it made is closed and its command is reaped. In its own test
//! binary: it counts this process's descriptors and children.

mod common;

use std::io::Read;
use std::os::unix::net::UnixStream;
use std::process::Command;
use std::time::Duration;

use anyfork::Args;
use anyfork::remote::{Remote, serve_arg};

fn double(n: u64) -> u64 {
    n * 2
}

fn hello(mut socket: UnixStream, _: Args) -> std::io::Result<()> {
    std::io::Write::write_all(&mut socket, b"hi")
}

#[test]
fn a_closed_connection_leaves_no_descriptor_thread_or_zombie() {
    let before = common::own_fds_above_stderr();
    let threads = || std::fs::read_dir("/proc/self/task").unwrap().count();
    let threads_before = threads();
    for _ in 0..3 {
        let mut command = Command::new(std::env::current_exe().unwrap());
        command.arg(serve_arg());
        let remote = Remote::command(command).unwrap();
        let template = remote.new_exec().unwrap();
        let rpc = template.fork().unwrap().rpc(double).start().unwrap();
        assert_eq!(rpc.call_blocking(2).unwrap(), 4);
        let mut said = String::new();
        template
            .fork()
            .unwrap()
            .run(hello)
            .unwrap()
            .read_to_string(&mut said)
            .unwrap();
        assert_eq!(said, "hi");
        drop((rpc, template, remote));
    }
    let me = std::process::id();
    let clean = common::wait_until(Duration::from_secs(10), || {
        common::own_fds_above_stderr() == before
            && threads() == threads_before
            && common::children_of(me).is_empty()
    });
    assert!(
        clean,
        "descriptors before {before:?}, after {:?}; threads {threads_before} -> {}; children {:?}",
        common::own_fds_above_stderr(),
        threads(),
        common::children_of(me)
    );
}
