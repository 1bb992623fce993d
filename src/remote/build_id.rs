//! What identifies a build of a program across machines: a hash of its
//! executable file, and the target it was compiled for.
//!
//! Two programs with the same build id are the same file, so function
//! values (offsets into the executable) and every type's layout agree; a
//! far side with another build id is refused at the handshake, before a
//! byte of the protocol could be misread. The id is also the name under
//! which a shipped executable is cached on the far side.

use std::io::Read;
use std::sync::OnceLock;

/// The target triple this program was compiled for.
pub const TARGET: &str = env!("ANYFORK_TARGET");

/// This program's build id: the size and a 64-bit FNV-1a hash of its
/// executable file (`/proc/self/exe`), in hex; read once (a few
/// milliseconds for a program of a few megabytes), `"unknown"` if the file
/// cannot be read.
///
/// ```
/// let id = anyfork::remote::build_id();
/// assert_eq!(id, anyfork::remote::build_id());
/// assert!(id.len() > 16);
/// ```
pub fn build_id() -> &'static str {
    static ID: OnceLock<String> = OnceLock::new();
    ID.get_or_init(|| hash_file("/proc/self/exe").unwrap_or_else(|_| "unknown".to_owned()))
}

fn hash_file(path: &str) -> std::io::Result<String> {
    let mut file = std::fs::File::open(path)?;
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    let mut size: u64 = 0;
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = match file.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        size += n as u64;
        for &byte in &buf[..n] {
            hash ^= u64::from(byte);
            hash = hash.wrapping_mul(0x0100_0000_01b3);
        }
    }
    Ok(format!("{size:x}-{hash:016x}"))
}
