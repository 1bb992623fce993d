//! One RPC handle shared by clones: threads and tasks call the same child;
//! the child ends when the last clone goes, or for all of them at
//! `shutdown`.

mod common;

use std::time::Duration;

use anyfork::Fork;
use anyfork::rpc::{Codec, Error, Rpc};

fn id_and_double(n: u64) -> (u32, u64) {
    (std::process::id(), n * 2)
}

fn start() -> Rpc<u64, (u32, u64)> {
    Fork::new()
        .unwrap()
        .rpc(id_and_double)
        .codec(Codec::Cbor)
        .start()
        .unwrap()
}

#[test]
fn clones_share_one_child_and_the_last_drop_ends_it() {
    let rpc = start();
    let process = rpc.process().unwrap();
    let threads: Vec<_> = (0..8u64)
        .map(|i| {
            let rpc = rpc.clone();
            std::thread::spawn(move || rpc.call_blocking(i).unwrap())
        })
        .collect();
    for (i, thread) in threads.into_iter().enumerate() {
        assert_eq!(thread.join().unwrap(), (process.id(), 2 * i as u64));
    }
    let last = rpc.clone();
    drop(rpc);
    // One clone left: the child still answers.
    assert_eq!(last.call_blocking(5).unwrap().1, 10);
    assert!(
        process.try_wait().unwrap().is_none(),
        "alive while a clone is"
    );
    drop(last);
    assert!(process.wait().unwrap().success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clones_in_tasks() {
    let rpc = start();
    let tasks: Vec<_> = (0..16u64)
        .map(|i| {
            let rpc = rpc.clone();
            tokio::spawn(async move { rpc.call(i).await.unwrap().1 })
        })
        .collect();
    for (i, task) in tasks.into_iter().enumerate() {
        assert_eq!(task.await.unwrap(), 2 * i as u64);
    }
}

#[test]
fn shutdown_through_one_clone_ends_the_child_for_all() {
    let rpc = start();
    let other = rpc.clone();
    assert_eq!(other.call_blocking(1).unwrap().1, 2);
    let status = rpc.shutdown(Duration::from_secs(5)).unwrap();
    assert!(status.success());
    let error = other.call_blocking(2).unwrap_err();
    assert!(
        matches!(error, Error::ShutDown { .. } | Error::Ended { .. }),
        "{error:?}"
    );
}
