//! Issue item 1: `Fork::new()` is safe and correct when called concurrently
//! from many threads of a multi-threaded tokio program: 8 threads × 200
//! processes. Its own test binary, so the zombie check counts only these.

mod common;

use std::io::Write;
use std::os::unix::net::UnixStream;
use std::time::Duration;

use anyfork::Fork;

fn echo_id(mut socket: UnixStream, mut args: anyfork::Args) -> std::io::Result<()> {
    let id = args.string().map_err(std::io::Error::other)?;
    write!(socket, "{id} {}", std::process::id())
}

#[test]
fn eight_threads_times_two_hundred_processes() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(8)
        .enable_all()
        .build()
        .unwrap();
    let pids = runtime.block_on(async {
        let tasks: Vec<_> = (0..8)
            .map(|thread| {
                tokio::spawn(async move {
                    let mut pids = Vec::new();
                    for i in 0..200 {
                        let id = format!("{thread}-{i}");
                        let (mut socket, process) = Fork::new()
                            .unwrap()
                            .send_arg(&id)
                            .run_async_with_process(echo_id)
                            .await
                            .unwrap();
                        let mut seen = String::new();
                        tokio::io::AsyncReadExt::read_to_string(&mut socket, &mut seen)
                            .await
                            .unwrap();
                        assert_eq!(seen, format!("{id} {}", process.id()));
                        if i % 2 == 0 {
                            assert!(process.wait_async().await.unwrap().success());
                        }
                        pids.push(process.id());
                    }
                    pids
                })
            })
            .collect();
        let mut all = Vec::new();
        for task in tasks {
            all.extend(task.await.unwrap());
        }
        all
    });
    assert_eq!(pids.len(), 1600);
    // Blocking Fork::new from plain threads at the same time as each other.
    let threads: Vec<_> = (0..8)
        .map(|t| {
            std::thread::spawn(move || {
                for i in 0..50 {
                    let socket = Fork::new()
                        .unwrap()
                        .send_arg(format!("{t}/{i}"))
                        .run(echo_id)
                        .unwrap();
                    assert!(common::read_all(socket).starts_with(&format!("{t}/{i} ")));
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let me = std::process::id();
    assert!(
        common::wait_until(Duration::from_secs(10), || common::zombies_of(me)
            .is_empty()),
        "zombies: {:?}",
        common::zombies_of(me)
    );
}
