//! `Template::here()`: its own test binary (harness = false), because it
//! forks the calling program, which must be single-threaded at that moment.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::sync::{Mutex, OnceLock};

/// Built before `Template::here()`, shared by every worker.
static TABLE: OnceLock<Vec<u64>> = OnceLock::new();

/// A `Fork` made before `Template::here()`: unusable in the template's forks.
static MADE_BEFORE: Mutex<Option<anyfork::Fork>> = Mutex::new(None);

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
    let fds = std::fs::read_dir("/proc/self/fd")?.count() - 1;
    write!(socket, "{id} {sum} {foreign} {fds}")
}

fn main() {
    TABLE.get_or_init(|| (1..=1000).collect());
    *MADE_BEFORE.lock().expect("lock") =
        Some(anyfork::Fork::new().expect("Fork::new before here()"));
    // A file the program holds open, close-on-exec like everything std opens:
    // the template must not inherit it.
    let _open_file = std::fs::File::open("/proc/self/status").expect("open");

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
        assert_eq!(seen, format!("{id} 500500 refused 4"), "worker {id}");
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
    println!("template_here: all checks passed");
}
