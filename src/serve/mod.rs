//! The child side: serve mode and the serving loop, described for users in
//! `docs/protocol.md` (the public [`crate::protocol`] page).

use std::ffi::CStr;
use std::io::Write;
use std::os::fd::{BorrowedFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::panic::{AssertUnwindSafe, catch_unwind};

use crate::args::{Arg, Args};
use crate::proto::{self, ChildErrorKind, Command, FrameReader, ReadError, Reply, Target};
use crate::registry::{self, InitFn, Library, Lookup, RunFn};
use crate::sys::clone::{self, Forked};
use crate::sys::fds::{self, NotAControlSocket};
use crate::transport::Transport;

mod marker;
use marker::{MarkedConnection, Marker, SERVE_ARGUMENT, parse_marker, second_argument};

/// Exit status of a child whose function returned an error.
pub const EXIT_FAILED: i32 = 1;
/// Exit status of a child whose function panicked (as for Rust's `main`).
pub const EXIT_PANICKED: i32 = 101;
/// Exit status of a serving process that gave up before running a function.
pub const EXIT_SERVE_FAILED: i32 = 125;

#[used]
#[unsafe(link_section = ".init_array")]
static SERVE_BEFORE_MAIN: extern "C" fn(libc::c_int, *const *const libc::c_char) =
    serve_before_main;

/// Called by the loader before `main` in every program that links anyfork.
/// glibc passes `.init_array` functions the program's `argc` and `argv`
/// (and `envp`, not needed here); other C libraries (musl) pass nothing, so
/// the arguments are only looked at with glibc.
extern "C" fn serve_before_main(argc: libc::c_int, argv: *const *const libc::c_char) {
    if cfg!(target_env = "gnu") && argc > 0 && !argv.is_null() {
        // SAFETY: glibc's `argv`, valid for the life of the process.
        unsafe { crate::sys::title::remember_argv(argc as usize, argv) };
    }
    let program = if cfg!(target_env = "gnu") && argc > 0 && !argv.is_null() {
        // SAFETY: glibc hands `.init_array` functions the `argv` that `main`
        // will get: `argc` valid, NUL-terminated strings.
        let first = unsafe { *argv };
        // SAFETY: as above; checked for null first.
        (!first.is_null()).then(|| unsafe { CStr::from_ptr(first) })
    } else {
        None
    };
    let argument = if cfg!(target_env = "gnu") && argc > 1 && !argv.is_null() {
        // SAFETY: as above: `argv[1]` exists since `argc > 1`.
        let second = unsafe { *argv.add(1) };
        // SAFETY: as above; checked for null first.
        (!second.is_null()).then(|| unsafe { CStr::from_ptr(second) }.to_bytes().to_vec())
    } else if cfg!(target_env = "gnu") {
        None
    } else {
        second_argument()
    };
    if let Some(value) = argument
        .as_deref()
        .and_then(|a| a.strip_prefix(SERVE_ARGUMENT))
    {
        serve_marked(parse_marker(value), program);
    }
    // SAFETY: the loader runs `.init_array` functions before `main`, with
    // one thread and nothing else touching the environment.
    unsafe { serve_if_marked(program) };
}

/// Enters serve mode if this process was started as a serving process;
/// otherwise returns at once.
///
/// anyfork calls this itself before `main` (through the ELF `.init_array`),
/// so calling it is never required. Programs that want the hand-over to be
/// visible in `main` may call it first thing; it is cheap (one `getenv`).
///
/// ```
/// // SAFETY: first thing in main: no other thread exists yet.
/// unsafe { anyfork::init() }; // never returns in a serving process
/// // ... the program
/// ```
///
/// # Safety
///
/// In a serving process it removes the serve marker from the environment
/// (`unsetenv`), so no other thread may read or change the environment
/// during the call, as for [`std::env::remove_var`]: call it before the
/// program starts any thread.
pub unsafe fn init() {
    if let Some(value) = second_argument()
        .as_deref()
        .and_then(|a| a.strip_prefix(SERVE_ARGUMENT))
    {
        serve_marked(parse_marker(value), None);
    }
    // SAFETY: the caller guarantees what serve_if_marked needs.
    unsafe { serve_if_marked(None) };
}

/// `program` is `argv[0]` where known: the parent starts serving processes
/// with the program's path there (see [`crate::sys::spawn`]).
///
/// # Safety
///
/// No other thread may read or change the environment meanwhile.
unsafe fn serve_if_marked(program: Option<&CStr>) {
    let name = c"ANYFORK_SERVE";
    // SAFETY: the caller guarantees that nothing changes the environment
    // concurrently.
    let value = unsafe { libc::getenv(name.as_ptr()) };
    if value.is_null() {
        return;
    }
    if crate::sys::secure::is_secure_exec() {
        // Whoever started this process chose its environment: the marker
        // proves nothing. Do not touch the descriptor it names.
        give_up_early(
            "refusing serve mode: this program runs with privileges its caller does not have \
             (setuid, setgid or file capabilities: AT_SECURE); see \"What anyfork trusts\" in the crate docs",
        );
    }
    // SAFETY: getenv returned a valid C string. unsetenv below only removes
    // the pointer from `environ`; the string itself stays where it is.
    let value = unsafe { CStr::from_ptr(value) };
    let marker = parse_marker(value.to_bytes());
    // SAFETY: as above: nothing touches the environment concurrently, and
    // the marker must not reach programs the child execs.
    unsafe { libc::unsetenv(name.as_ptr()) };
    serve_marked(marker, program)
}

/// Serve mode for an exec'd process: check the marker, clean the descriptor
/// table, serve.
fn serve_marked(marker: Marker, program: Option<&CStr>) -> ! {
    let (connection, version) = match marker {
        Ok(parsed) => parsed,
        Err(why) => give_up_early(&format!("bad serve marker: {why}")),
    };
    let control = match connection {
        MarkedConnection::Socket(fd) => {
            // SAFETY: only borrowed for the checks; ownership is taken below
            // once the descriptor is known to be open.
            let borrowed = unsafe { BorrowedFd::borrow_raw(fd) };
            match fds::check_unix_stream(borrowed) {
                Ok(()) => {}
                Err(NotAControlSocket::NotOpen) => {
                    give_up_early(&format!("bad serve marker: descriptor {fd} is not open"))
                }
                Err(NotAControlSocket::WrongKind) => give_up_early(&format!(
                    "bad serve marker: descriptor {fd} is not a unix stream socket"
                )),
            }
            // SAFETY: the descriptor is open and nothing else in this fresh
            // process owns it.
            let control = unsafe { OwnedFd::from_raw_fd(fd) };
            // Whatever else leaked in through exec is not ours to keep.
            let _ = fds::close_all_except(fd);
            let _ = fds::set_cloexec(&control);
            Transport::Socket(control)
        }
        MarkedConnection::Mux => {
            if let Err(why) = version {
                give_up_early(&format!("bad serve marker: {why}"));
            }
            let _ = fds::close_range(3, i32::MAX);
            let streams =
                fds::take_stdio().and_then(|(read, write)| Transport::streams(read, write));
            let conn = match streams {
                Ok(streams) => streams,
                Err(e) => give_up_early(&format!("cannot take stdin and stdout over: {e}")),
            };
            name_after_program(program);
            // SAFETY: setting a signal disposition in a single-threaded process.
            unsafe { libc::signal(libc::SIGPIPE, libc::SIG_IGN) };
            crate::sys::title::set("anyfork relay");
            exit(crate::remote::relay::serve(conn))
        }
        MarkedConnection::Stdio => {
            // Whatever else leaked in through exec is not ours to keep.
            let _ = fds::close_range(3, i32::MAX);
            let streams =
                fds::take_stdio().and_then(|(read, write)| Transport::streams(read, write));
            match streams {
                Ok(streams) => streams,
                Err(e) => give_up_early(&format!("cannot take stdin and stdout over: {e}")),
            }
        }
    };
    name_after_program(program);
    // Like Rust's runtime before main: writes to a closed pipe are errors,
    // not deaths.
    // SAFETY: setting a signal disposition in a single-threaded process.
    unsafe { libc::signal(libc::SIGPIPE, libc::SIG_IGN) };
    let mut server = Server::new(control);
    if let Err(why) = version {
        // The connection is good: tell the parent, not just stderr.
        server.fail(ChildErrorKind::Protocol, format!("bad serve marker: {why}"));
    }
    server.serve()
}

/// Gives the process its program's name: started as `/proc/self/exe`, it
/// would show as `exe` in `ps` and `top`. The name comes from `argv[0]`
/// where the loader passed it, else from the link `/proc/self/exe`.
fn name_after_program(program: Option<&CStr>) {
    let path = match program {
        Some(program) => program.to_bytes().to_vec(),
        None => match std::fs::read_link("/proc/self/exe") {
            Ok(path) => std::os::unix::ffi::OsStrExt::as_bytes(path.as_os_str()).to_vec(),
            Err(_) => return,
        },
    };
    let name = path.rsplit(|&b| b == b'/').next().unwrap_or_default();
    // The kernel keeps 15 bytes of a thread's name.
    let name = &name[..name.len().min(15)];
    if let Ok(name) = std::ffi::CString::new(name) {
        let _ = rustix::thread::set_name(&name);
    }
}

/// Serving in a process forked from a running program
/// ([`early`](crate::early), [`Template::here`](crate::Template::here)).
pub(crate) fn serve_forked(control: OwnedFd) -> ! {
    // Nothing may unwind out of here into the program's code.
    let control = Transport::Socket(control);
    let Err(panic) = catch_unwind(AssertUnwindSafe(|| Server::new(control).serve()));
    log(&format!(
        "serving loop panicked: {}",
        registry::panic_message(&*panic)
    ));
    exit(EXIT_SERVE_FAILED)
}

fn give_up_early(why: &str) -> ! {
    log(why);
    exit(EXIT_SERVE_FAILED)
}

fn log(message: &str) {
    let pid = std::process::id();
    let _ = writeln!(
        std::io::stderr(),
        "anyfork: serving process {pid}: {message}"
    );
}

/// Flushes output and ends the process without running the program's exit
/// handlers (which belong to the program a template was forked from).
pub(crate) fn exit(code: i32) -> ! {
    let _ = std::io::stdout().flush();
    // SAFETY: fflush(NULL) flushes C stdio streams; _exit ends the process
    // at once. Neither returns control to any other code.
    unsafe {
        libc::fflush(std::ptr::null_mut());
        libc::_exit(code)
    }
}

/// A serving process's state.
struct Server {
    control: Transport,
    reader: FrameReader,
    /// Everything sent so far, in order.
    items: Vec<Arg>,
    libraries: Vec<Library>,
    limit: u64,
    /// Whether this process has sent its `P` frame.
    pid_sent: bool,
    /// Which initialiser or library left threads behind in this process:
    /// it then refuses to fork (see [`Server::fork`]).
    threaded_by: Option<String>,
    /// Die with this parent once running (`Some(None)`: whichever parent
    /// the process has then).
    parent_death: Option<Option<u32>>,
    /// The directory and environment to run the function in, if asked.
    dir: Option<Vec<u8>>,
    environment: Option<Vec<Vec<u8>>>,
}

impl Server {
    fn new(control: Transport) -> Self {
        Self {
            control,
            reader: FrameReader::new(),
            items: Vec::new(),
            libraries: Vec::new(),
            limit: proto::DEFAULT_MAX_FRAME_LEN,
            pid_sent: false,
            threaded_by: None,
            parent_death: None,
            dir: None,
            environment: None,
        }
    }

    /// Sends `reply`, preceded by this process's pid if not sent yet.
    fn say(&mut self, reply: Option<&Reply>) {
        say(&self.control, &mut self.pid_sent, reply);
    }

    /// Sends the pid before anything that may take time or end the process.
    fn announce(&mut self) {
        self.say(None);
    }

    /// Tells the parent why this process gives up, and exits.
    fn fail(&mut self, kind: ChildErrorKind, message: String) -> ! {
        log(&format!("{kind}: {message}"));
        self.say(Some(&Reply::Error { kind, message }));
        exit(EXIT_SERVE_FAILED)
    }

    fn serve(mut self) -> ! {
        // SAFETY: a serving process has one thread here (exec'd before
        // main, or a copy of a single-threaded program).
        unsafe { crate::sys::title::prepare() };
        crate::sys::title::set("anyfork template");
        loop {
            let control = &self.control;
            let pid_sent = &mut self.pid_sent;
            // Before waiting for the next command, the parent learns the pid.
            let mut before_wait = || say(control, pid_sent, None);
            let read =
                self.reader
                    .read_frame(control, proto::COMMAND_TAGS, self.limit, &mut before_wait);
            let frame = match read {
                Ok(Some(frame)) => frame,
                // The parent dropped its end (or died): nothing left to do.
                // A reset is the same news: the parent closed its end
                // without reading what this process last sent.
                Ok(None) => {
                    self.announce();
                    exit(0)
                }
                Err(ReadError::Io(e)) if e.kind() == std::io::ErrorKind::ConnectionReset => exit(0),
                Err(ReadError::Io(e)) => {
                    self.fail(ChildErrorKind::Protocol, format!("reading commands: {e}"))
                }
                Err(ReadError::Protocol(e)) => self.fail(ChildErrorKind::Protocol, e.to_string()),
            };
            let command = match proto::decode_command(frame) {
                Ok(command) => command,
                Err(e) => self.fail(ChildErrorKind::Protocol, e.to_string()),
            };
            match command {
                Command::Arg(bytes) => self.items.push(Arg::Bytes(bytes)),
                Command::Fd(fd) => self.items.push(Arg::Fd(fd)),
                Command::Limit(limit) => self.limit = limit,
                Command::Sync => self.say(Some(&Reply::InSync(std::process::id()))),
                Command::ParentDeath(parent) => self.parent_death = parent,
                Command::Chdir(dir) => self.dir = Some(dir),
                Command::Title(title) => crate::sys::title::set_exactly(&title),
                Command::Environment(vars) => self.environment = Some(vars),
                Command::Require(path) => {
                    self.announce();
                    match Library::load(&path) {
                        Ok(library) => {
                            self.libraries.push(library);
                            self.note_threads(|| {
                                format!("library `{}`", String::from_utf8_lossy(&path))
                            });
                        }
                        Err(e) => self.fail(
                            ChildErrorKind::RequireFailed,
                            format!("{}: {e}", String::from_utf8_lossy(&path)),
                        ),
                    }
                }
                Command::Eval { target, args } => {
                    self.announce();
                    self.eval(&target, &args)
                }
                Command::Fork(socket) => {
                    self.announce();
                    self.fork(socket)
                }
                Command::Run(target) => self.run(target),
            }
        }
    }

    fn eval(&mut self, target: &Target, args: &[Vec<u8>]) {
        let label = target.label();
        let failure = match self.resolve(target, false) {
            Resolved::Here(addr) => {
                let f = init_fn_at(addr);
                catch_unwind(AssertUnwindSafe(|| f(args))).unwrap_or_else(|panic| {
                    Some(format!("panicked: {}", registry::panic_message(&*panic)))
                })
            }
            Resolved::InLibrary(i) => {
                catch_unwind(AssertUnwindSafe(|| self.libraries[i].init(label, args)))
                    .unwrap_or_else(|panic| {
                        Some(format!("panicked: {}", registry::panic_message(&*panic)))
                    })
            }
        };
        if let Some(message) = failure {
            self.fail(
                ChildErrorKind::InitialiserFailed,
                format!("`{label}`: {message}"),
            );
        }
        self.note_threads(|| format!("initialiser `{label}`"));
    }

    /// After user code ran here (an initialiser, a library's constructors):
    /// if it left threads behind, remember who, so that forks are refused.
    fn note_threads(&mut self, culprit: impl FnOnce() -> String) {
        if self.threaded_by.is_none() && fds::thread_count().is_ok_and(|n| n > 1) {
            self.threaded_by = Some(culprit());
        }
    }

    /// Finds a run function (`run`) or an initialiser; gives up if there is
    /// none.
    fn resolve(&mut self, target: &Target, run: bool) -> Resolved {
        let what = if run { "function" } else { "initialiser" };
        match target {
            Target::Name(name) => {
                let found = if run {
                    registry::lookup_run(name).map(|f| f as usize)
                } else {
                    registry::lookup_init(name).map(|f| f as usize)
                };
                match found {
                    Lookup::Found(addr) => Resolved::Here(addr),
                    Lookup::Ambiguous => self.fail(
                        ChildErrorKind::UnknownFunction,
                        format!("more than one {what} is registered as `{name}`"),
                    ),
                    Lookup::Missing => match self.libraries.iter().position(|l| l.has(name, run)) {
                        Some(i) => Resolved::InLibrary(i),
                        None => self.fail(
                            ChildErrorKind::UnknownFunction,
                            format!("no {what} named `{name}`"),
                        ),
                    },
                }
            }
            Target::Offset { offset, exe, label } => match registry::resolve_offset(*offset, *exe) {
                Some(addr) => Resolved::Here(addr),
                None => self.fail(
                    ChildErrorKind::WrongExecutable,
                    format!(
                        "cannot call `{label}` by value: this process runs a different executable"
                    ),
                ),
            },
        }
    }

    fn fork(&mut self, socket: OwnedFd) {
        if let Some(culprit) = &self.threaded_by {
            // Threads may have ended since; otherwise forking with a raw
            // clone (no fork handlers) could leave the copy with a lock
            // another thread held, malloc's say: refuse.
            match fds::thread_count() {
                Ok(1) => self.threaded_by = None,
                count => {
                    let threads = count.map_or_else(|_| "several".to_owned(), |n| n.to_string());
                    let message = format!(
                        "template {} has {threads} threads, started by {culprit}: \
                         forking it could deadlock the copy, so it does not fork",
                        std::process::id()
                    );
                    refuse_fork(socket, ChildErrorKind::Threaded, message);
                    return;
                }
            }
        }
        // SAFETY: the process is single-threaded (checked after every
        // initialiser and library that could have started a thread), and
        // the child continues in this loop, never in the caller's code.
        match unsafe { clone::clone_sibling() } {
            Ok(Forked::Child) => {
                // Become the new process: the socket that came with the
                // command is ours; the template's socket and anything the
                // template received but has not read yet are the template's.
                let template_control =
                    std::mem::replace(&mut self.control, Transport::Socket(socket));
                drop(template_control);
                self.reader = FrameReader::new();
                self.pid_sent = false;
            }
            Ok(Forked::Parent(_)) => drop(socket),
            Err(e) => {
                // The parent learns this on the new process's socket.
                let message = format!("template {} could not fork: {e}", std::process::id());
                refuse_fork(socket, ChildErrorKind::ForkFailed, message);
            }
        }
    }

    fn run(mut self, target: Target) -> ! {
        let resolved = self.resolve(&target, true);
        if self.reader.pending_fds() > 0 {
            self.fail(
                ChildErrorKind::Protocol,
                proto::ProtocolError::UnexpectedFd.to_string(),
            );
        }
        if let Some(dir) = self.dir.take() {
            let path = std::path::Path::new(std::ffi::OsStr::from_bytes(&dir));
            if let Err(e) = std::env::set_current_dir(path) {
                self.fail(
                    ChildErrorKind::Other,
                    format!("cannot change to directory {}: {e}", path.display()),
                );
            }
        }
        if let Some(vars) = self.environment.take() {
            self.replace_environment(&vars);
        }
        if let Some(parent) = self.parent_death {
            if let Err(e) = crate::sys::parent_death::die_with(parent) {
                self.fail(
                    ChildErrorKind::Other,
                    format!("cannot arrange to die with the parent: {e}"),
                );
            }
        }
        crate::sys::title::set(&format!("anyfork worker {}", target.label()));
        self.say(Some(&Reply::Started(std::process::id())));
        let connection = self.control;
        let args = Args::from(std::mem::take(&mut self.items));
        let label = target.label().to_owned();
        let outcome = catch_unwind(AssertUnwindSafe(|| match resolved {
            Resolved::Here(addr) => run_fn_at(addr)(connection, args),
            Resolved::InLibrary(i) => self.libraries[i].run(&label, connection, args),
        }));
        match outcome {
            Ok(None) => exit(0),
            Ok(Some(message)) => {
                log(&format!("`{label}` failed: {message}"));
                exit(EXIT_FAILED)
            }
            // The panic hook has already printed the message.
            Err(_) => exit(EXIT_PANICKED),
        }
    }
}

impl Server {
    /// Makes `vars` (`NAME=value`) the whole environment, just before the
    /// function runs.
    fn replace_environment(&mut self, vars: &[Vec<u8>]) {
        if fds::thread_count().map_or(true, |n| n > 1) {
            // setenv with another thread reading the environment is a data
            // race (an initialiser left that thread).
            self.fail(
                ChildErrorKind::Threaded,
                "cannot set the environment: this process has threads".into(),
            );
        }
        // SAFETY: the process has one thread (checked just above), so
        // nothing reads or writes the environment meanwhile.
        unsafe {
            libc::clearenv();
            for var in vars {
                let Some(eq) = var.iter().position(|&b| b == b'=') else {
                    continue;
                };
                let (Ok(name), Ok(value)) = (
                    std::ffi::CString::new(&var[..eq]),
                    std::ffi::CString::new(&var[eq + 1..]),
                ) else {
                    continue;
                };
                libc::setenv(name.as_ptr(), value.as_ptr(), 1);
            }
        }
    }
}

/// Where a function was found: its address in this executable (a
/// [`RunFn`] or [`InitFn`], as asked), or the index of the library that has it.
enum Resolved {
    Here(usize),
    InLibrary(usize),
}

fn run_fn_at(addr: usize) -> RunFn {
    // SAFETY: `resolve(_, true)` only yields addresses of `RunFn`s: a
    // registry entry's run trampoline, or a run trampoline whose offset the
    // parent computed in this same executable file (identity checked).
    unsafe { std::mem::transmute::<usize, RunFn>(addr) }
}

fn init_fn_at(addr: usize) -> InitFn {
    // SAFETY: as for `run_fn_at`, with `resolve(_, false)` and `InitFn`.
    unsafe { std::mem::transmute::<usize, InitFn>(addr) }
}

/// A template could not fork: it says why on stderr and, for the parent,
/// in an `E` frame on the socket the new process would have had.
fn refuse_fork(socket: OwnedFd, kind: ChildErrorKind, message: String) {
    log(&message);
    send_all(
        &Transport::Socket(socket),
        &proto::encode_reply(&Reply::Error { kind, message }),
    );
}

/// Sends `reply` (if any), preceded by this process's pid if it has not been
/// sent yet; with neither, sends nothing.
fn say(control: &Transport, pid_sent: &mut bool, reply: Option<&Reply>) {
    let mut bytes = Vec::new();
    if !*pid_sent {
        bytes = proto::encode_reply(&Reply::Pid(std::process::id()));
        *pid_sent = true;
    }
    if let Some(reply) = reply {
        bytes.extend_from_slice(&proto::encode_reply(reply));
    }
    if !bytes.is_empty() {
        send_all(control, &bytes);
    }
}

/// Writes reply bytes; errors are ignored (the parent may be gone, and then
/// there is nobody to tell).
fn send_all(control: &Transport, bytes: &[u8]) {
    let mut sent = 0;
    while sent < bytes.len() {
        match control.send(&bytes[sent..], &[], false) {
            Ok(n) => sent += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(_) => return,
        }
    }
}
