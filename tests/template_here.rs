//! `Template::here()`: its own test binary (harness = false), because it
//! forks the calling program, which must be single-threaded at that moment.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::sync::{Mutex, OnceLock};

/// Built before `Template::here()`, shared by every worker.
static TABLE: OnceLock<Vec<u64>> = OnceLock::new();

/// A `Fork` made before `Template::here()`: unusable in the template's forks.
static MADE_BEFORE: Mutex<Option<anyfork::Fork>> = Mutex::new(None);

/// A log file the program opened first (so it has the lowest free number):
/// in the copies its number must not be reused for a worker's socket.
static LOG: OnceLock<std::fs::File> = OnceLock::new();

/// Descriptors above stderr: (not /dev/null, /dev/null).
fn count_fds() -> std::io::Result<(usize, usize)> {
    let (mut real, mut null) = (0, 0);
    for entry in std::fs::read_dir("/proc/self/fd")? {
        let entry = entry?;
        let fd: i32 = entry.file_name().to_string_lossy().parse().unwrap_or(-1);
        if fd <= 2 {
            continue;
        }
        match std::fs::read_link(entry.path()) {
            Ok(target) if target == std::path::Path::new("/dev/null") => null += 1,
            // read_dir's own descriptor
            Ok(target) if target.ends_with("fd") && target.starts_with("/proc") => {}
            Ok(_) => real += 1,
            Err(_) => {}
        }
    }
    Ok((real, null))
}

fn worker(mut socket: UnixStream, mut args: anyfork::Args) -> std::io::Result<()> {
    let id = args.string().map_err(std::io::Error::other)?;
    let sum: u64 = TABLE.get().map(|t| t.iter().sum()).unwrap_or(0);
    // The copy of a Fork made in the program refuses to work here.
    let foreign = match MADE_BEFORE
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .as_ref()
        .map(|f| f.pid())
    {
        Some(Err(anyfork::Error::ForeignFork { .. })) => "refused",
        Some(_) => "accepted",
        None => "missing",
    };
    // The program's log file is /dev/null here: this goes nowhere, and
    // certainly not into this worker's socket, which a closed number would
    // have become.
    if let Some(mut log) = LOG.get() {
        log.write_all(b"written through the program's static File")?;
    }
    let (real, null) = count_fds()?;
    write!(socket, "{id} {sum} {foreign} {real} {}", null > 0)
}

fn main() {
    let log_path = std::env::temp_dir().join(format!("anyfork-here-log-{}", std::process::id()));
    LOG.get_or_init(|| std::fs::File::create(&log_path).expect("create the log"));
    TABLE.get_or_init(|| (1..=1000).collect());
    *MADE_BEFORE.lock().expect("lock") =
        Some(anyfork::Fork::new().expect("Fork::new before here()"));
    // A file the program holds open, close-on-exec like everything std opens:
    // the template must not inherit it.
    let _open_file = std::fs::File::open("/proc/self/status").expect("open");
    // new_exec's spare thread is running now: here() pauses it.
    drop(anyfork::Fork::new_exec().expect("new_exec before here()"));

    let template = anyfork::Template::here().expect("Template::here in a single-threaded program");
    let mut workers = Vec::new();
    for id in 1..=10 {
        let (socket, process) = template
            .fork()
            .expect("fork")
            .send_arg(id.to_string())
            .run_with_process(worker)
            .expect("run");
        workers.push((id, socket, process));
    }
    for (id, mut socket, process) in workers {
        let mut seen = String::new();
        socket.read_to_string(&mut seen).expect("read");
        // Its own socket is its only real descriptor above stderr; the
        // program's are /dev/null.
        assert_eq!(seen, format!("{id} 500500 refused 1 true"), "worker {id}");
        assert!(process.wait().expect("wait").success());
    }

    // With a second thread alive, here() refuses instead of forking.
    let (stop_tx, stop_rx) = std::sync::mpsc::channel::<()>();
    let thread = std::thread::spawn(move || stop_rx.recv());
    match anyfork::Template::here() {
        Err(anyfork::Error::Threaded { threads, .. }) => assert!(threads >= 2),
        other => panic!("Template::here with two threads must fail, got {other:?}"),
    }
    drop(stop_tx);
    let _ = thread.join();
    let logged = std::fs::read_to_string(&log_path).expect("read the log");
    assert_eq!(logged, "", "the copies' writes went to /dev/null");
    let _ = std::fs::remove_file(&log_path);
    println!("template_here: all checks passed");
}
