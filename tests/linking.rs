//! How programs that use anyfork are linked (see `build.rs`): anyfork's
//! examples (and the `anyfork` tool, tested in `cli/`), and programs built
//! with the `static-unwinder` feature, carry
//! libgcc's unwinder inside instead of loading `libgcc_s.so.1`, so every
//! `new_exec` loads one shared library fewer. Panics must still unwind and
//! be caught there. CI runs this file once more with
//! `--features static-unwinder`.
#![cfg(all(
    target_os = "linux",
    target_env = "gnu",
    not(target_feature = "crt-static")
))]

mod common;

use std::os::unix::net::UnixStream;
use std::process::Command;

use anyfork::{Args, EXIT_PANICKED, Fork};

/// The shared libraries a program needs, as the loader lists them without
/// running it (what `ldd` does).
fn loaded_objects(program: &str) -> String {
    let output = Command::new(program)
        .env("LD_TRACE_LOADED_OBJECTS", "1")
        .output()
        .expect("run the loader's listing");
    assert!(output.status.success(), "{output:?}");
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn this_process_maps_libgcc_s() -> bool {
    std::fs::read_to_string("/proc/self/maps")
        .expect("/proc/self/maps")
        .contains("libgcc_s.so")
}

#[test]
fn the_examples_do_not_load_libgcc_s() {
    let example = common::example_binary("concepts");
    let objects = loaded_objects(&example.to_string_lossy());
    assert!(objects.contains("libc.so"), "libc stays shared: {objects}");
    assert!(!objects.contains("libgcc_s"), "{objects}");
}

#[test]
fn the_feature_decides_how_this_test_is_linked() {
    let expected = !cfg!(feature = "static-unwinder");
    assert_eq!(this_process_maps_libgcc_s(), expected);
}

fn panics(_socket: UnixStream, _args: Args) {
    panic!("on purpose, to unwind through the static unwinder");
}

fn catches_a_panic(mut socket: UnixStream, _args: Args) -> std::io::Result<()> {
    let caught = std::panic::catch_unwind(|| panic!("caught on purpose")).is_err();
    std::io::Write::write_all(&mut socket, if caught { b"caught" } else { b"missed" })
}

#[test]
fn panics_unwind_and_are_caught_in_serving_processes() {
    for fork in [Fork::new_exec().unwrap(), Fork::new().unwrap()] {
        assert_eq!(
            common::read_all(fork.run(catches_a_panic).unwrap()),
            "caught"
        );
    }
    let fork = Fork::new_exec().unwrap();
    let process = fork.process().unwrap();
    drop(fork.run(panics).unwrap());
    assert_eq!(process.wait().unwrap().code(), Some(EXIT_PANICKED));
}
