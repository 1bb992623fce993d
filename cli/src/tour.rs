//! `anyfork tour`: the seed manual's scenarios, run one after another, each
//! saying what happened.

use std::collections::BTreeMap;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::fd::AsFd;
use std::os::unix::net::UnixStream;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::sync::OnceLock;
use std::time::Instant;

use anyfork::{Args, Fork, Signal, Template};

/// Why the tour stopped.
#[derive(Debug, thiserror::Error)]
pub enum TourError {
    #[error("{scenario}")]
    Anyfork {
        scenario: &'static str,
        source: anyfork::Error,
    },
    #[error("{scenario}")]
    Io {
        scenario: &'static str,
        source: io::Error,
    },
    #[error("{scenario}")]
    Rpc {
        scenario: &'static str,
        source: anyfork::rpc::Error,
    },
    #[error("{scenario}")]
    Pool {
        scenario: &'static str,
        source: anyfork::pool::Error,
    },
    #[error("{scenario}")]
    Remote {
        scenario: &'static str,
        source: anyfork::remote::Error,
    },
    #[error("{scenario}: {what}")]
    Unexpected {
        scenario: &'static str,
        what: String,
    },
}

/// Attaches the scenario's name to errors.
pub trait InScenario<T> {
    fn in_scenario(self, scenario: &'static str) -> Result<T, TourError>;
}

impl<T> InScenario<T> for Result<T, anyfork::Error> {
    fn in_scenario(self, scenario: &'static str) -> Result<T, TourError> {
        self.map_err(|source| TourError::Anyfork { scenario, source })
    }
}

impl<T> InScenario<T> for io::Result<T> {
    fn in_scenario(self, scenario: &'static str) -> Result<T, TourError> {
        self.map_err(|source| TourError::Io { scenario, source })
    }
}

fn read_to_end(mut socket: UnixStream) -> io::Result<String> {
    let mut text = String::new();
    socket.read_to_string(&mut text)?;
    Ok(text)
}

pub fn heading(n: u32, title: &str) {
    println!("\n{n}. {title}");
}

// ---------------------------------------------------------------------------
// The functions the tour's processes run.

/// Answers each line with the line in capitals and its pid.
fn shout(socket: UnixStream, _args: Args) -> io::Result<()> {
    let mut writer = socket.try_clone()?;
    for line in BufReader::new(socket).lines() {
        writeln!(
            writer,
            "{} (from process {})",
            line?.to_uppercase(),
            std::process::id()
        )?;
    }
    Ok(())
}
anyfork::function!(shout);

static SHARED: OnceLock<Vec<u64>> = OnceLock::new();

/// Builds a table in a template, shared by its forks.
fn build_squares(args: &[Vec<u8>]) -> Result<(), std::num::ParseIntError> {
    let n: u64 = String::from_utf8_lossy(args.first().map_or(&b"0"[..], Vec::as_slice)).parse()?;
    SHARED.get_or_init(|| (0..n).map(|i| i * i).collect());
    Ok(())
}

/// Reports its argument and what it finds in the shared table.
fn report_table(mut socket: UnixStream, mut args: Args) -> io::Result<()> {
    let id = args.string().map_err(io::Error::other)?;
    let table = SHARED.get().map_or(&[][..], Vec::as_slice);
    write!(
        socket,
        "worker {id} in process {} sees {} squares, the last {}",
        std::process::id(),
        table.len(),
        table.last().copied().unwrap_or(0)
    )
}

/// Accepts connections on the listener it was sent, answering with its id.
fn serve_connections(socket: UnixStream, mut args: Args) -> io::Result<()> {
    let listener = TcpListener::from(args.fd().map_err(io::Error::other)?);
    let id = args.string().map_err(io::Error::other)?;
    drop(socket);
    loop {
        listener.accept()?.0.write_all(id.as_bytes())?;
    }
}

/// stdout to the descriptor it was sent, stderr to the socket, then exec.
fn exec_redirected(socket: UnixStream, mut args: Args) -> io::Result<()> {
    let output = args.fd().map_err(io::Error::other)?;
    let command: Vec<String> = std::iter::from_fn(|| args.string().ok()).collect();
    let (program, rest) = command
        .split_first()
        .ok_or_else(|| io::Error::other("no command"))?;
    rustix::stdio::dup2_stdout(output.as_fd())?;
    rustix::stdio::dup2_stderr(socket.as_fd())?;
    Err(std::process::Command::new(program).args(rest).exec())
}

fn sleep_long(_socket: UnixStream, _args: Args) {
    std::thread::sleep(std::time::Duration::from_secs(600));
}

fn panic_on_purpose(_socket: UnixStream, _args: Args) {
    panic!("a panic in a worker ends that worker only");
}

// ---------------------------------------------------------------------------

fn single_worker() -> Result<(), TourError> {
    const S: &str = "single worker";
    heading(
        1,
        "A single worker process running a function (Fork::new + run by name)",
    );
    let socket = Fork::new()
        .in_scenario(S)?
        .run("anyfork::tour::shout")
        .in_scenario(S)?;
    let mut writer = socket.try_clone().in_scenario(S)?;
    writeln!(writer, "hello, worker").in_scenario(S)?;
    let mut answer = String::new();
    BufReader::new(socket)
        .read_line(&mut answer)
        .in_scenario(S)?;
    println!(
        "   parent {} sent \"hello, worker\", got {:?}",
        std::process::id(),
        answer.trim()
    );
    Ok(())
}

fn shared_template() -> Result<(), TourError> {
    const S: &str = "template";
    heading(
        2,
        "A template that builds state once; every fork shares it (eval + fork)",
    );
    let template = Fork::new().in_scenario(S)?.eval(build_squares, ["1000000"]);
    println!(
        "   template {} built a table of 1,000,000 squares",
        template.pid().in_scenario(S)?
    );
    for id in 1..=3 {
        let socket = template
            .fork()
            .in_scenario(S)?
            .send_arg(id.to_string())
            .run(report_table)
            .in_scenario(S)?;
        println!("   {}", read_to_end(socket).in_scenario(S)?);
    }
    Ok(())
}

fn server_pool() -> Result<(), TourError> {
    const S: &str = "server pool";
    heading(
        3,
        "A pool of 10 servers accepting on one listening socket (send_fh + fork)",
    );
    let listener = TcpListener::bind("127.0.0.1:0").in_scenario(S)?;
    let address = listener.local_addr().in_scenario(S)?;
    let pool = Fork::new().in_scenario(S)?.send_fh(listener);
    let mut workers = Vec::new();
    for id in 1..=10 {
        let (_socket, process) = pool
            .fork()
            .in_scenario(S)?
            .send_arg(id.to_string())
            .run_with_process(serve_connections)
            .in_scenario(S)?;
        workers.push(process);
    }
    let mut served: BTreeMap<u32, u32> = BTreeMap::new();
    for _ in 0..200 {
        let mut answer = String::new();
        TcpStream::connect(address)
            .in_scenario(S)?
            .read_to_string(&mut answer)
            .in_scenario(S)?;
        let id = answer.parse().map_err(|_| TourError::Unexpected {
            scenario: S,
            what: format!("a worker answered {answer:?}"),
        })?;
        *served.entry(id).or_default() += 1;
    }
    let counts: Vec<String> = served.iter().map(|(id, n)| format!("#{id}: {n}")).collect();
    println!(
        "   200 connections, served by {} workers ({})",
        served.len(),
        counts.join(", ")
    );
    for worker in workers {
        worker.kill(Signal::TERM).in_scenario(S)?;
        worker.wait().in_scenario(S)?;
    }
    Ok(())
}

fn faster_fork_exec() -> Result<(), TourError> {
    const S: &str = "fork+exec";
    heading(
        4,
        "anyfork as fork+exec, for code before exec: /bin/echo hi, stdout to a file, stderr to the socket",
    );
    let path = std::env::temp_dir().join(format!("anyfork-tour-{}.log", std::process::id()));
    let file = std::fs::File::create(&path).in_scenario(S)?;
    let stderr = Fork::new()
        .in_scenario(S)?
        .send_fh(file)
        .send_args(["/bin/echo", "hi"])
        .run(exec_redirected)
        .in_scenario(S)?;
    let stderr = read_to_end(stderr).in_scenario(S)?;
    let written = std::fs::read_to_string(&path).in_scenario(S)?;
    std::fs::remove_file(&path).in_scenario(S)?;
    println!("   the file holds {written:?}; the socket got {stderr:?} (nothing on stderr)");
    Ok(())
}

fn new_exec() -> Result<(), TourError> {
    const S: &str = "new_exec";
    heading(
        5,
        "A fresh process with new_exec (posix_spawn of this executable, no fork)",
    );
    let start = Instant::now();
    let fork = Fork::new_exec().in_scenario(S)?;
    let process = fork.process().in_scenario(S)?;
    let socket = fork.run(shout).in_scenario(S)?;
    let mut writer = socket.try_clone().in_scenario(S)?;
    writeln!(writer, "fresh").in_scenario(S)?;
    let mut answer = String::new();
    BufReader::new(socket)
        .read_line(&mut answer)
        .in_scenario(S)?;
    println!(
        "   new_exec process {} (a direct child: {}) answered {:?} after {:.1} ms",
        process.id(),
        process.is_child(),
        answer.trim(),
        start.elapsed().as_secs_f64() * 1000.0
    );
    Ok(())
}

fn template_here() -> Result<(), TourError> {
    const S: &str = "Template::here";
    heading(
        6,
        "The program itself as a template (Template::here), 3 workers",
    );
    SHARED.get_or_init(|| (0..10).map(|i| i * i).collect());
    match Template::here() {
        Ok(template) => {
            for id in 1..=3 {
                let socket = template
                    .fork()
                    .in_scenario(S)?
                    .send_arg(id.to_string())
                    .run(report_table)
                    .in_scenario(S)?;
                println!("   {}", read_to_end(socket).in_scenario(S)?);
            }
        }
        // Only possible in a single-threaded program; say so if not.
        Err(e @ anyfork::Error::Threaded { .. }) => println!("   skipped: {e}"),
        Err(e) => return Err(e).in_scenario(S),
    }
    Ok(())
}

fn processes_and_errors() -> Result<(), TourError> {
    const S: &str = "processes";
    heading(
        7,
        "Process handles and errors: kill, wait, exit statuses, unknown names",
    );
    let (_socket, sleeper) = Fork::new()
        .in_scenario(S)?
        .run_with_process(sleep_long)
        .in_scenario(S)?;
    sleeper.kill(Signal::TERM).in_scenario(S)?;
    let status = sleeper.wait().in_scenario(S)?;
    println!(
        "   process {} killed with SIGTERM: signal {:?}",
        sleeper.id(),
        status.signal()
    );
    let (socket, panicker) = Fork::new()
        .in_scenario(S)?
        .run_with_process(panic_on_purpose)
        .in_scenario(S)?;
    drop(read_to_end(socket));
    let status = panicker.wait().in_scenario(S)?;
    println!(
        "   process {} panicked: exit status {:?} (anyfork::EXIT_PANICKED)",
        panicker.id(),
        status.code()
    );
    match Fork::new().in_scenario(S)?.run("no::such::function") {
        Err(e) => println!("   run(\"no::such::function\") fails in the parent: {e}"),
        Ok(_) => {
            return Err(TourError::Unexpected {
                scenario: S,
                what: "an unknown function ran".into(),
            });
        }
    }
    Ok(())
}

/// Runs every scenario.
pub fn run() -> Result<(), TourError> {
    println!(
        "anyfork tour: the scenarios of the AnyEvent::Fork, AnyEvent::Fork::RPC, AnyEvent::Fork::Pool and AnyEvent::Fork::Remote manuals, in Rust"
    );
    single_worker()?;
    shared_template()?;
    server_pool()?;
    faster_fork_exec()?;
    new_exec()?;
    template_here()?;
    processes_and_errors()?;
    crate::rpc_tour::run()?;
    crate::pool_tour::run()?;
    crate::remote_tour::run()?;
    println!();
    Ok(())
}
