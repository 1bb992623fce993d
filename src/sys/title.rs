//! The process title: what `ps` and `/proc/PID/cmdline` show.
//!
//! A serving process is started as the program itself, so without this
//! every template, spare and worker would show the program's command line.
//! Linux shows a process's argument strings where the kernel put them, so
//! the title is written there, over `argv` and the environment strings that
//! follow it, as `setproctitle` does: first the environment is copied
//! elsewhere (and `environ` pointed at the copies), then that memory holds
//! the title, NUL-padded. Titles longer than the space are cut.
//!
//! Only glibc passes `argv` to the code that runs before `main`
//! ([`remember_argv`]); elsewhere the title stays as it was.

use std::ffi::{CStr, CString, c_char};
use std::sync::Mutex;
use std::sync::atomic::{AtomicPtr, AtomicUsize, Ordering};

/// `argv` and `argc` as the loader passed them (null: unknown).
static ARGV: AtomicPtr<*const c_char> = AtomicPtr::new(std::ptr::null_mut());
static ARGC: AtomicUsize = AtomicUsize::new(0);

/// The memory the title may use (start, length), once prepared, and the
/// program's name for titles.
static AREA: Mutex<Option<Area>> = Mutex::new(None);

struct Area {
    start: usize,
    len: usize,
    program: String,
}

unsafe extern "C" {
    static mut environ: *mut *mut c_char;
}

/// Records `argv` (before `main`, from the loader).
///
/// # Safety
///
/// `argv` must be the process's argument vector with `argc` entries, valid
/// for the life of the process (as the loader's is).
pub(crate) unsafe fn remember_argv(argc: usize, argv: *const *const c_char) {
    ARGC.store(argc, Ordering::Relaxed);
    ARGV.store(argv.cast_mut(), Ordering::Relaxed);
}

/// Makes the argument and environment strings available for titles: the
/// environment moves to the heap. Idempotent.
///
/// # Safety
///
/// No other thread may read or change the environment meanwhile (a serving
/// process calls it while it has one thread).
pub(crate) unsafe fn prepare() {
    let mut area = AREA
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    if area.is_some() {
        return;
    }
    let argv = ARGV.load(Ordering::Relaxed).cast_const();
    let argc = ARGC.load(Ordering::Relaxed);
    if argv.is_null() || argc == 0 {
        return;
    }
    // SAFETY: `remember_argv`'s contract: `argv` has `argc` valid entries.
    let first = unsafe { *argv };
    if first.is_null() {
        return;
    }
    // SAFETY: a valid NUL-terminated string (as above).
    let program_path = unsafe { CStr::from_ptr(first) };
    let program = program_path.to_bytes();
    let program = program.rsplit(|&b| b == b'/').next().unwrap_or(program);
    let program = String::from_utf8_lossy(program).into_owned();
    let start = first as usize;
    let mut end = start + program_path.to_bytes_with_nul().len();
    // The other arguments, while they follow one another.
    for i in 1..argc {
        // SAFETY: `i < argc`.
        let arg = unsafe { *argv.add(i) };
        if arg.is_null() || arg as usize != end {
            break;
        }
        // SAFETY: a valid NUL-terminated string.
        end += unsafe { CStr::from_ptr(arg) }.to_bytes_with_nul().len();
    }
    // The environment strings that follow: copied away, then usable.
    // SAFETY: `environ` is the C library's, read with nothing else touching
    // it (this function's contract).
    let env = unsafe { environ };
    if !env.is_null() {
        let mut copies: Vec<*mut c_char> = Vec::new();
        let mut i = 0;
        loop {
            // SAFETY: `environ` is a NULL-terminated array of valid strings.
            let var = unsafe { *env.add(i) };
            if var.is_null() {
                break;
            }
            // SAFETY: as above.
            let text = unsafe { CStr::from_ptr(var) };
            if var as usize == end {
                end += text.to_bytes_with_nul().len();
            }
            copies.push(CString::from(text).into_raw());
            i += 1;
        }
        copies.push(std::ptr::null_mut());
        let copies = Box::leak(copies.into_boxed_slice());
        // SAFETY: as above; the copies live for the rest of the process.
        unsafe { environ = copies.as_mut_ptr() };
    }
    *area = Some(Area {
        start,
        len: end - start,
        program,
    });
}

/// A title was chosen by the parent: automatic titles no longer apply.
static CHOSEN: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Shows `{program} [{what}]` as the process's command line, unless the
/// parent chose a title.
pub(crate) fn set(what: &str) {
    if CHOSEN.load(Ordering::Relaxed) {
        return;
    }
    let area = AREA
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let Some(area) = area.as_ref() else {
        return;
    };
    let title = format!("{} [{what}]", area.program);
    write(area, title.as_bytes());
}

/// Shows `title` as the process's command line, as it is, from now on.
pub(crate) fn set_exactly(title: &[u8]) {
    CHOSEN.store(true, Ordering::Relaxed);
    let area = AREA
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    if let Some(area) = area.as_ref() {
        write(area, title);
    }
}

fn write(area: &Area, title: &[u8]) {
    if area.len == 0 {
        return;
    }
    let n = title.len().min(area.len - 1);
    // SAFETY: `start..start + len` is the argument and environment strings'
    // memory, which nothing else reads any more (`prepare` moved the
    // environment; the arguments are what `ps` shows).
    unsafe {
        let dst = area.start as *mut u8;
        std::ptr::copy_nonoverlapping(title.as_ptr(), dst, n);
        std::ptr::write_bytes(dst.add(n), 0, area.len - n);
    }
}
