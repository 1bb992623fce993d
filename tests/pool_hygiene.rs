//! A pool leaves no descriptor and no process behind (its own binary: it
//! counts this process's descriptors).

mod common;

use std::time::Duration;

use anyfork::Fork;

fn nap_pid(ms: u64) -> u32 {
    std::thread::sleep(Duration::from_millis(ms));
    std::process::id()
}

#[test]
fn a_pool_leaves_no_descriptor_and_no_process_behind() {
    // One pool run first, so what lives for the whole program (the
    // default template's descriptors, the reaper's wake-up) is there
    // before and after.
    let warm_up = Fork::new().unwrap().pool(nap_pid).max(1).build().unwrap();
    warm_up.call_blocking(0).unwrap();
    warm_up.shutdown(Duration::from_secs(5));
    // Descriptors by kind: the default template's spare is replaced as
    // templates are forked, with a socket of another number.
    let kinds = || {
        let mut kinds: Vec<String> = common::own_fds_above_stderr()
            .iter()
            .map(|fd| {
                fd.split("-> ")
                    .nth(1)
                    .unwrap_or("")
                    .split(':')
                    .next()
                    .unwrap_or("")
                    .to_owned()
            })
            .collect();
        kinds.sort();
        kinds
    };
    let before = kinds();
    let pids: Vec<u32> = {
        let pool = Fork::new()
            .unwrap()
            .pool(nap_pid)
            .max(2)
            .idle(2)
            .build()
            .unwrap();
        let threads: Vec<_> = (0..8)
            .map(|_| {
                let pool = pool.clone();
                std::thread::spawn(move || pool.call_blocking(20).unwrap())
            })
            .collect();
        let pids = threads.into_iter().map(|t| t.join().unwrap()).collect();
        pool.shutdown(Duration::from_secs(5));
        pids
    };
    for pid in &pids {
        assert!(common::state(*pid).is_none(), "worker {pid} left");
    }
    // No kind of descriptor is more numerous than before (the warm-up's
    // last ones may still have been closing then).
    let no_more_than_before = || {
        let after = kinds();
        let count = |list: &[String], kind: &String| list.iter().filter(|k| *k == kind).count();
        after.iter().all(|k| count(&after, k) <= count(&before, k))
    };
    assert!(
        common::wait_until(Duration::from_secs(5), no_more_than_before),
        "{:?} vs {before:?}",
        kinds()
    );
}
