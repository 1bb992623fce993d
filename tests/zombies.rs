//! Issue item 9: no zombies anywhere. 2,000 processes are created in every
//! way anyfork offers, nobody waits for most of them, and afterwards no
//! zombie is left in this program (the parent of every process anyfork
//! creates) or under any template. Its own test binary, so that no other
//! test's processes are counted.

mod common;

use std::io::Read;
use std::os::unix::net::UnixStream;
use std::time::Duration;

use anyfork::Fork;

fn exit_at_once(_socket: UnixStream, _args: anyfork::Args) {}

fn exit_on_eof(mut socket: UnixStream, _args: anyfork::Args) {
    let mut buf = [0u8; 1];
    let _ = socket.read(&mut buf);
}

fn refused_initialiser(_args: &[Vec<u8>]) -> Result<(), String> {
    Err("no".into())
}

#[test]
fn two_thousand_processes_leave_no_zombie() {
    let me = std::process::id();
    let template = Fork::new().unwrap().send_arg("template");
    let template_pid = template.pid().unwrap();
    let mut created = 0;
    let mut kept = Vec::new();
    while created < 2000 {
        match created % 8 {
            // Run, read end-of-file, drop the socket.
            0 => drop(common::read_all(
                Fork::new().unwrap().run(exit_at_once).unwrap(),
            )),
            // Run, drop the socket at once (the process may still run).
            1 => drop(template.fork().unwrap().run(exit_on_eof).unwrap()),
            // Create and drop without running: pid never asked for.
            2 => drop(Fork::new().unwrap()),
            // Create, ask the pid, drop.
            3 => drop(template.fork().unwrap().pid().unwrap()),
            // A fresh process, run.
            4 if created % 80 == 4 => drop(Fork::new_exec().unwrap().run(exit_at_once).unwrap()),
            // A process that refuses (failing initialiser) before running.
            5 => assert!(
                Fork::new()
                    .unwrap()
                    .eval(refused_initialiser, [""; 0])
                    .run(exit_at_once)
                    .is_err()
            ),
            // Keep the socket for a while; waited for at the end, by some.
            6 => kept.push(
                template
                    .fork()
                    .unwrap()
                    .run_with_process(exit_on_eof)
                    .unwrap(),
            ),
            _ => drop(
                Fork::new()
                    .unwrap()
                    .send_arg("x")
                    .run(exit_at_once)
                    .unwrap(),
            ),
        }
        created += 1;
    }
    for (i, (socket, process)) in kept.into_iter().enumerate() {
        drop(socket);
        if i % 2 == 0 {
            assert!(process.wait().unwrap().success());
        }
    }
    drop(template);
    let settled = common::wait_until(Duration::from_secs(10), || {
        common::zombies_of(me).is_empty()
    });
    assert!(
        settled,
        "zombies left in the parent: {:?}",
        common::zombies_of(me)
    );
    assert!(
        common::wait_until(Duration::from_secs(5), || common::has_ended(template_pid)),
        "the dropped template must exit"
    );
    // Templates never have children: they fork siblings.
    assert_eq!(common::children_of(template_pid), vec![]);
    // Only the default template, the spare it keeps and new_exec's two
    // (see `anyfork::keep_exec_spare`) are left.
    let children = common::children_of(me);
    assert!(children.len() <= 4, "left over: {children:?}");
    assert!(
        children.iter().all(|(_, state)| *state != 'Z'),
        "left over: {children:?}"
    );
}
