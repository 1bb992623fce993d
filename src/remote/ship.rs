//! Nothing to install: shipping this program's executable to the far side.
//!
//! With [`Builder::ship_executable`](super::Builder::ship_executable), the
//! far side runs a bootstrap that needs only a POSIX shell (and `uname`,
//! `head`, `mkdir`, `chmod`, `mv`):
//!
//! 1. it checks the machine (`uname -m` against the architecture this
//!    program was built for) and, for a dynamically linked program, that
//!    its loader (`PT_INTERP`, which names the C library) exists there;
//! 2. if `$XDG_CACHE_HOME/anyfork/<build id>` (default `~/.cache/anyfork`)
//!    is executable, it runs it at once: the next connection costs
//!    nothing;
//! 3. otherwise it says so, reads exactly the executable's size from
//!    stdin into a temporary file, makes it executable, renames it into
//!    place and runs it.
//!
//! The bootstrap speaks in lines `anyfork-ship: <word> [detail]` on stdout
//! before the relay's hello: `cached`, `send`, `wrong-arch <arch>`,
//! `no-loader <path>`, `cannot-store <dir>`. The build id is a hash of the
//! executable's contents, so a rebuilt program is shipped again, under its
//! own name.

use std::io;
use std::time::Instant;

use super::build_id::build_id;
use super::command_line::{serve_arg, shell_quote};
use crate::transport::Transport;

/// The bootstrap as one shell command: `sh -c '…'`, for ssh or any command
/// that runs a shell command line (`kubectl exec -i pod -- sh -c …` takes
/// [`bootstrap_script`] itself).
pub fn bootstrap_command() -> String {
    format!("sh -c {}", shell_quote(&bootstrap_script()))
}

/// The bootstrap's shell script (see the [module docs](self)).
pub fn bootstrap_script() -> String {
    let size = executable().map_or(0, |bytes| bytes.len());
    let loader = interpreter().unwrap_or_default();
    format!(
        r#"id={id}; arch={arch}; loader={loader}; size={size}
got=$(uname -m 2>/dev/null)
if [ "$got" != "$arch" ]; then echo "anyfork-ship: wrong-arch $got"; exit 3; fi
if [ -n "$loader" ] && [ ! -e "$loader" ]; then echo "anyfork-ship: no-loader $loader"; exit 3; fi
dir="${{XDG_CACHE_HOME:-${{HOME:-/tmp}}/.cache}}/anyfork"; exe="$dir/$id"
if [ -x "$exe" ]; then echo "anyfork-ship: cached"; exec "$exe" {serve}; fi
if ! mkdir -p "$dir" 2>/dev/null; then echo "anyfork-ship: cannot-store $dir"; exit 4; fi
tmp="$exe.$$"
echo "anyfork-ship: send"
head -c "$size" > "$tmp" && chmod 700 "$tmp" && mv -f "$tmp" "$exe" && exec "$exe" {serve}
rm -f "$tmp"; exit 4
"#,
        id = shell_quote(build_id()),
        arch = shell_quote(std::env::consts::ARCH),
        loader = shell_quote(&loader),
        serve = serve_arg(),
    )
}

fn executable() -> io::Result<Vec<u8>> {
    std::fs::read("/proc/self/exe")
}

/// The executable's program interpreter (its dynamic loader), if any.
fn interpreter() -> Option<String> {
    let bytes = executable().ok()?;
    // ELF64, little or big endian.
    if bytes.get(..4)? != b"\x7fELF" || *bytes.get(4)? != 2 {
        return None;
    }
    let little = *bytes.get(5)? == 1;
    let u16_at = |at: usize| -> Option<u64> {
        let b: [u8; 2] = bytes.get(at..at + 2)?.try_into().ok()?;
        Some(u64::from(if little {
            u16::from_le_bytes(b)
        } else {
            u16::from_be_bytes(b)
        }))
    };
    let u32_at = |at: usize| -> Option<u64> {
        let b: [u8; 4] = bytes.get(at..at + 4)?.try_into().ok()?;
        Some(u64::from(if little {
            u32::from_le_bytes(b)
        } else {
            u32::from_be_bytes(b)
        }))
    };
    let u64_at = |at: usize| -> Option<u64> {
        let b: [u8; 8] = bytes.get(at..at + 8)?.try_into().ok()?;
        Some(if little {
            u64::from_le_bytes(b)
        } else {
            u64::from_be_bytes(b)
        })
    };
    let phoff = usize::try_from(u64_at(0x20)?).ok()?;
    let phentsize = usize::try_from(u16_at(0x36)?).ok()?;
    let phnum = usize::try_from(u16_at(0x38)?).ok()?;
    for i in 0..phnum {
        let at = phoff + i * phentsize;
        if u32_at(at)? == 3 {
            // PT_INTERP: p_offset at +8, p_filesz at +32.
            let offset = usize::try_from(u64_at(at + 8)?).ok()?;
            let size = usize::try_from(u64_at(at + 32)?).ok()?;
            let path = bytes.get(offset..offset + size)?;
            let path = path.split(|&b| b == 0).next()?;
            return Some(String::from_utf8_lossy(path).into_owned());
        }
    }
    None
}

/// Runs the parent's part of the bootstrap on `conn`: reads its status
/// line and sends the executable when asked. Returns with the relay about
/// to say hello.
pub(crate) fn ship(conn: &Transport, deadline: Instant) -> Result<(), String> {
    let line = read_line(conn, deadline)?;
    let Some(said) = line.strip_prefix("anyfork-ship: ") else {
        return Err(format!(
            "the bootstrap did not run: the far side said {line:?}"
        ));
    };
    let (word, detail) = said.split_once(' ').unwrap_or((said, ""));
    match word {
        "cached" => Ok(()),
        "send" => {
            let bytes =
                executable().map_err(|e| format!("reading this program's executable: {e}"))?;
            conn.send_all_until(&bytes, deadline)
                .map_err(|e| format!("sending the executable: {e}"))
        }
        "wrong-arch" => Err(format!(
            "the far side is a {detail} machine; this program is built for {}",
            super::build_id::TARGET
        )),
        "no-loader" => Err(format!(
            "the far side has no {detail}: it lacks the C library this program is linked against"
        )),
        "cannot-store" => Err(format!("the far side cannot write to {detail}")),
        other => Err(format!("the bootstrap said {other:?}")),
    }
}

/// Reads one line, byte by byte (nothing after it may be consumed: the
/// relay's hello follows).
fn read_line(conn: &Transport, deadline: Instant) -> Result<String, String> {
    let mut line = Vec::new();
    let mut byte = [0u8; 1];
    loop {
        match conn.recv_bytes_waiting(&mut byte, Some(deadline)) {
            Ok(0) => {
                return Err(format!(
                    "the far side ended during the bootstrap (after {:?})",
                    String::from_utf8_lossy(&line)
                ));
            }
            Ok(_) if byte[0] == b'\n' => return Ok(String::from_utf8_lossy(&line).into_owned()),
            Ok(_) if line.len() > 1024 => return Err("the bootstrap said too much".into()),
            Ok(_) => line.push(byte[0]),
            Err(e) if e.kind() == io::ErrorKind::TimedOut => {
                return Err("the bootstrap did not answer in time".into());
            }
            Err(e) => return Err(format!("reading the bootstrap's answer: {e}")),
        }
    }
}
