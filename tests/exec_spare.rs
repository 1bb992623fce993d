//! Issue 12, §3: `new_exec` hands out a process started ahead of time,
//! never a stale or dead one, and not at all when told so. Its own test
//! binary, one test: it changes the environment, the working directory
//! and the process-wide spare setting, and counts this program's children.

mod common;

use std::io::Read;
use std::os::unix::net::UnixStream;
use std::time::Duration;

use anyfork::{Args, Fork};

/// Writes the environment variable named by the argument and the working
/// directory back.
fn report(mut socket: UnixStream, mut args: Args) -> std::io::Result<()> {
    use std::io::Write;
    let name = args.string().map_err(std::io::Error::other)?;
    let value = std::env::var(&name).unwrap_or_default();
    let cwd = std::env::current_dir()?;
    write!(socket, "{value}|{}", cwd.display())
}

fn ask(fork: Fork) -> String {
    let mut socket = fork.send_arg("ANYFORK_SPARE_TEST").run(report).unwrap();
    let mut out = String::new();
    socket.read_to_string(&mut out).unwrap();
    out
}

/// Children of this program that are not `known`.
fn other_children(known: &[u32]) -> Vec<u32> {
    common::children_of(std::process::id())
        .into_iter()
        .filter(|(pid, state)| !known.contains(pid) && *state != 'Z')
        .map(|(pid, _)| pid)
        .collect()
}

/// Waits for new_exec's two spares to be started, and returns their
/// pids.
fn spares_besides(known: &[u32]) -> Vec<u32> {
    let mut found = Vec::new();
    assert!(
        common::wait_until(Duration::from_secs(10), || {
            found = other_children(known);
            found.len() == 2
        }),
        "expected two spares, found {found:?}"
    );
    found
}

#[test]
fn new_exec_hands_out_live_fresh_spares_and_none_when_told() {
    // SAFETY: this test is the only thread of its binary that reads the
    // environment, and anyfork's spare thread is idle whenever it is
    // changed (its spares are waited for first).
    unsafe { std::env::set_var("ANYFORK_SPARE_TEST", "one") };
    let first = Fork::new_exec().unwrap();
    let first_pid = first.pid().unwrap();
    // Two spares are started for the next calls, and the next call gets
    // one of them.
    let spares = spares_besides(&[first_pid]);
    let second = Fork::new_exec().unwrap();
    let second_pid = second.pid().unwrap();
    assert!(
        spares.contains(&second_pid),
        "the second new_exec is a spare"
    );
    assert!(ask(second).starts_with("one|"));
    assert!(ask(first).starts_with("one|"));

    // The environment changed since the spares started: not handed out.
    let stale = spares_besides(&[]);
    // SAFETY: as above; the spares are there, so the thread is idle.
    unsafe { std::env::set_var("ANYFORK_SPARE_TEST", "two") };
    let third = Fork::new_exec().unwrap();
    assert!(
        !stale.contains(&third.pid().unwrap()),
        "a spare from before set_var"
    );
    assert!(ask(third).starts_with("two|"));

    // Nor after a change of directory.
    let stale = spares_besides(&[]);
    let dir = std::env::temp_dir();
    std::env::set_current_dir(&dir).unwrap();
    let fourth = Fork::new_exec().unwrap();
    assert!(
        !stale.contains(&fourth.pid().unwrap()),
        "a spare from before chdir"
    );
    let answer = ask(fourth);
    assert!(
        answer.ends_with(&format!("|{}", dir.canonicalize().unwrap().display()))
            || answer.ends_with(&format!("|{}", dir.display())),
        "{answer}"
    );

    // A dead spare is not handed out.
    let spares = spares_besides(&[]);
    for &spare in &spares {
        rustix::process::kill_process(
            rustix::process::Pid::from_raw(spare as i32).unwrap(),
            rustix::process::Signal::KILL,
        )
        .unwrap();
        assert!(common::wait_until(Duration::from_secs(5), || {
            common::state(spare) == Some('Z')
        }));
    }
    let fifth = Fork::new_exec().unwrap();
    assert!(!spares.contains(&fifth.pid().unwrap()), "a killed spare");
    assert!(ask(fifth).starts_with("two|"));

    // Turned off: the spares go, and no new one comes.
    spares_besides(&[]);
    anyfork::keep_exec_spare(false);
    assert!(common::wait_until(Duration::from_secs(5), || {
        other_children(&[]).is_empty()
    }));
    let sixth = Fork::new_exec().unwrap();
    let sixth_pid = sixth.pid().unwrap();
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(
        other_children(&[sixth_pid]),
        Vec::<u32>::new(),
        "a spare though turned off"
    );
    assert!(ask(sixth).starts_with("two|"));
    assert!(common::wait_until(Duration::from_secs(5), || {
        common::zombies_of(std::process::id()).is_empty() && other_children(&[]).is_empty()
    }));
}
