//! The default template behind `Fork::new()`: created on first use, shared,
//! and replaced if it dies. Its own test binary, because it kills the
//! template every other test would be using.

mod common;

use std::io::Write;
use std::os::unix::net::UnixStream;
use std::time::Duration;

use anyfork::Fork;

fn hello(mut socket: UnixStream, _args: anyfork::Args) -> std::io::Result<()> {
    socket.write_all(b"hello")
}

#[test]
fn a_killed_default_template_is_replaced() {
    let first = Fork::new().unwrap();
    let template = first
        .template_pid()
        .expect("the default template's pid is known");
    let second = Fork::new().unwrap();
    assert_eq!(
        second.template_pid(),
        Some(template),
        "one default template for the program"
    );
    assert_eq!(common::read_all(first.run(hello).unwrap()), "hello");

    rustix::process::kill_process(
        rustix::process::Pid::from_raw(template as i32).unwrap(),
        rustix::process::Signal::KILL,
    )
    .unwrap();
    assert!(common::wait_until(Duration::from_secs(5), || {
        common::has_ended(template)
    }));

    // A process forked before the template died still runs.
    assert_eq!(common::read_all(second.run(hello).unwrap()), "hello");
    // The next Fork::new starts a new template, transparently.
    let third = Fork::new().unwrap();
    let replacement = third.template_pid().unwrap();
    assert_ne!(replacement, template);
    assert_eq!(common::read_all(third.run(hello).unwrap()), "hello");
    // The dead template was reaped.
    assert!(common::wait_until(Duration::from_secs(5), || {
        common::state(template).is_none()
    }));
}
