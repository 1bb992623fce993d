//! Issue item 5: `require` loads a shared library (a cdylib of this
//! workspace) into a serving process; its registered functions and
//! initialisers then run by name, also in forks. Failures are reported.

mod common;

use std::io::Write;
use std::os::unix::net::UnixStream;

use anyfork::{ChildErrorKind, Error, Fork};
use common::read_all;

#[test]
fn library_functions_run_by_name_with_library_state() {
    let plugin = common::build_test_plugin();
    let (socket, process) = Fork::new()
        .unwrap()
        .require(&plugin)
        .eval("plugin::init", ["3"])
        .send_arg("x")
        .run_with_process("plugin::worker")
        .unwrap();
    assert_eq!(
        read_all(socket),
        format!(
            "plugin says hello from {} after 3 greetings with [x]",
            process.id()
        )
    );
    assert!(process.wait().unwrap().success());
}

#[test]
fn library_state_is_inherited_by_forks() {
    let plugin = common::build_test_plugin();
    let template = Fork::new_exec()
        .unwrap()
        .require(&plugin)
        .eval("plugin::init", ["9"]);
    for _ in 0..3 {
        let said = read_all(template.fork().unwrap().run("plugin::worker").unwrap());
        assert!(said.contains("after 9 greetings"), "{said}");
    }
}

#[test]
fn the_library_is_mapped_in_the_process() {
    let plugin = common::build_test_plugin();
    fn maps(mut socket: UnixStream, _: anyfork::Args) -> std::io::Result<()> {
        socket.write_all(std::fs::read_to_string("/proc/self/maps")?.as_bytes())
    }
    let maps = read_all(Fork::new().unwrap().require(&plugin).run(maps).unwrap());
    assert!(maps.contains("libanyfork_test_plugin.so"));
}

#[test]
fn a_panic_in_a_library_function_exits_like_any_panic() {
    let plugin = common::build_test_plugin();
    let (socket, process) = Fork::new()
        .unwrap()
        .require(&plugin)
        .run_with_process("plugin::panics")
        .unwrap();
    assert_eq!(read_all(socket), "");
    assert_eq!(process.wait().unwrap().code(), Some(anyfork::EXIT_PANICKED));
}

#[test]
fn a_missing_library_is_refused() {
    match Fork::new()
        .unwrap()
        .require("/nonexistent/libnothing.so")
        .run("plugin::worker")
    {
        Err(Error::Refused { kind, message, .. }) => {
            assert_eq!(kind, ChildErrorKind::RequireFailed);
            assert!(message.contains("/nonexistent/libnothing.so"), "{message}");
        }
        other => panic!("expected Refused, got {other:?}"),
    }
}

#[test]
fn unknown_names_are_refused_by_the_process_after_require() {
    let plugin = common::build_test_plugin();
    match Fork::new()
        .unwrap()
        .require(&plugin)
        .run("plugin::nothing_here")
    {
        Err(Error::Refused {
            kind,
            message,
            process,
        }) => {
            assert_eq!(kind, ChildErrorKind::UnknownFunction);
            assert!(message.contains("plugin::nothing_here"), "{message}");
            assert!(process.pid.is_some(), "the error names the process");
        }
        other => panic!("expected Refused, got {other:?}"),
    }
}

#[test]
fn a_failing_library_initialiser_is_refused_with_its_message() {
    let plugin = common::build_test_plugin();
    match Fork::new()
        .unwrap()
        .require(&plugin)
        .eval("plugin::init", ["not a number"])
        .run("plugin::worker")
    {
        Err(Error::Refused { kind, message, .. }) => {
            assert_eq!(kind, ChildErrorKind::InitialiserFailed);
            assert!(message.contains("bad count"), "{message}");
        }
        other => panic!("expected Refused, got {other:?}"),
    }
}
