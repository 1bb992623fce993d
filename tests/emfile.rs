//! Hardening item 10: running out of descriptors for a moment does not
//! cost the default template. The failing call is named (`socketpair`),
//! the template and its spare are kept, and once descriptors are free
//! again `Fork::new` forks the same template.
//!
//! Its own test binary: it lowers the process's descriptor limit.

mod common;

use std::io::Read;
use std::os::unix::net::UnixStream;

fn hello(mut socket: UnixStream, _args: anyfork::Args) -> std::io::Result<()> {
    std::io::Write::write_all(&mut socket, b"hi")
}

fn run_hello() -> Result<String, anyfork::Error> {
    let mut socket = anyfork::Fork::new()?.run(hello)?;
    let mut seen = String::new();
    socket.read_to_string(&mut seen).expect("read");
    Ok(seen)
}

#[test]
fn a_transient_emfile_keeps_the_default_template() {
    let first = anyfork::Fork::new().unwrap();
    let template = first.template_pid().expect("the default template's pid");
    drop(first);
    assert_eq!(run_hello().unwrap(), "hi");

    // Use up every descriptor the limit allows.
    let open_now = std::fs::read_dir("/proc/self/fd").unwrap().count();
    let limit = rustix::process::getrlimit(rustix::process::Resource::Nofile);
    let lowered = rustix::process::Rlimit {
        current: Some(open_now as u64 + 16),
        maximum: limit.maximum,
    };
    rustix::process::setrlimit(rustix::process::Resource::Nofile, lowered).unwrap();
    let mut fillers = Vec::new();
    loop {
        match std::fs::File::open("/dev/null") {
            Ok(file) => fillers.push(file),
            Err(e) => {
                assert_eq!(e.raw_os_error(), Some(libc::EMFILE), "{e}");
                break;
            }
        }
    }
    // The first call may still get the spare; the next cannot.
    let errors: Vec<anyfork::Error> = (0..3).filter_map(|_| anyfork::Fork::new().err()).collect();
    assert!(
        !errors.is_empty(),
        "no descriptors, yet every Fork::new worked"
    );
    for error in &errors {
        let message = common::chain(&error);
        assert!(
            matches!(
                error,
                anyfork::Error::System {
                    call: "socketpair",
                    ..
                }
            ),
            "the failing call is named: {error:?}"
        );
        assert!(message.contains("socketpair failed"), "{message}");
        assert!(message.contains("Too many open files"), "{message}");
    }

    drop(fillers);
    rustix::process::setrlimit(rustix::process::Resource::Nofile, limit).unwrap();
    assert_eq!(run_hello().unwrap(), "hi");
    let again = anyfork::Fork::new().unwrap();
    assert_eq!(
        again.template_pid(),
        Some(template),
        "the same default template serves after the episode"
    );
}
