//! The default template behind `Fork::new()`: created on first use, shared,
//! keeping one spare process forked in advance, and replaced if it dies. Its own test binary, because it kills the
//! template every other test would be using.

mod common;

use std::io::Write;
use std::os::unix::net::UnixStream;
use std::time::Duration;

use anyfork::Fork;

fn hello(mut socket: UnixStream, _args: anyfork::Args) -> std::io::Result<()> {
    socket.write_all(b"hello")
}

/// Both scenarios kill processes of the one default template, so they run
/// in sequence in one test.
#[test]
fn spares_and_replacement() {
    fork_new_hands_out_a_spare_forked_in_advance();
    a_killed_default_template_is_replaced();
    threads_take_the_templates_in_turn();
}

fn fork_new_hands_out_a_spare_forked_in_advance() {
    let first = Fork::new().unwrap();
    let template = first.template_pid().unwrap();
    let first_pid = first.pid().unwrap(); // waits until it exists
    let me = std::process::id();
    // The template, `first`, and the spare forked for the next call: all
    // children of this program, forked from one template.
    let children: Vec<u32> = common::children_of(me)
        .into_iter()
        .map(|(p, _)| p)
        .collect();
    assert!(
        children.contains(&template) && children.contains(&first_pid),
        "{children:?}"
    );
    let second = Fork::new().unwrap();
    assert_eq!(second.template_pid(), Some(template));
    let second_pid = second.pid().unwrap();
    // Let the spare forked for the next call come into being.
    assert!(common::wait_until(
        Duration::from_secs(5),
        || common::children_of(me).len() >= 4
    ));
    // A killed spare is noticed and not handed out.
    let spare: Vec<u32> = common::children_of(me)
        .into_iter()
        .map(|(p, _)| p)
        .filter(|p| ![template, first_pid, second_pid].contains(p))
        .collect();
    for pid in &spare {
        rustix::process::kill_process(
            rustix::process::Pid::from_raw(*pid as i32).unwrap(),
            rustix::process::Signal::KILL,
        )
        .unwrap();
    }
    assert!(common::wait_until(Duration::from_secs(5), || spare
        .iter()
        .all(|p| common::has_ended(*p))));
    let third = Fork::new().unwrap();
    assert!(
        !spare.contains(&third.pid().unwrap()),
        "a dead spare must not be handed out"
    );
    assert_eq!(common::read_all(third.run(hello).unwrap()), "hello");
    drop((first, second));
}

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
    // `second` may still be a fork command in the template's queue: wait
    // until it exists (a process queued when its template dies never will,
    // and says so; see bad_input.rs).
    second.pid().unwrap();

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
    // Fork::new goes on working: first with the spare the old template
    // forked before it died, then from a new template, transparently.
    let mut replacement = None;
    for _ in 0..3 {
        let next = Fork::new().unwrap();
        let from = next.template_pid().unwrap();
        assert_eq!(common::read_all(next.run(hello).unwrap()), "hello");
        if from != template {
            replacement = Some(from);
            break;
        }
    }
    assert!(replacement.is_some(), "a new default template was started");
    // The dead template was reaped.
    assert!(common::wait_until(Duration::from_secs(5), || {
        common::state(template).is_none()
    }));
}

/// With several CPUs, threads calling `Fork::new` at once get templates of
/// their own (one per CPU at most), and every process works.
fn threads_take_the_templates_in_turn() {
    let cpus = anyfork::ncpu();
    let threads = 4;
    let templates: Vec<Vec<u32>> = std::thread::scope(|scope| {
        let workers: Vec<_> = (0..threads)
            .map(|_| {
                scope.spawn(|| {
                    (0..20)
                        .map(|_| {
                            let fork = Fork::new().unwrap();
                            let from = fork.template_pid().unwrap();
                            assert_eq!(common::read_all(fork.run(hello).unwrap()), "hello");
                            from
                        })
                        .collect::<Vec<u32>>()
                })
            })
            .collect();
        workers.into_iter().map(|w| w.join().unwrap()).collect()
    });
    for per_thread in &templates {
        // A thread keeps to its template.
        assert!(
            per_thread.iter().all(|t| *t == per_thread[0]),
            "{per_thread:?}"
        );
    }
    let mut distinct: Vec<u32> = templates.iter().map(|t| t[0]).collect();
    distinct.sort();
    distinct.dedup();
    assert_eq!(distinct.len(), cpus.min(threads), "{templates:?}");
}
