//! What identifies a build of a program across machines: the linker's
//! build id (a hash of the executable), and the target it was compiled
//! for.
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

/// This program's build id: the GNU build id the linker wrote into the
/// executable (`gnu-` and its hex, read from memory), or, for an
/// executable without one, its size and a 64-bit hash of its contents
/// (`file-SIZE-HASH`, read once from `/proc/self/exe`); `"unknown"` if
/// neither can be had.
///
/// ```
/// let id = anyfork::remote::build_id();
/// assert_eq!(id, anyfork::remote::build_id());
/// assert!(id.len() > 16);
/// ```
pub fn build_id() -> &'static str {
    static ID: OnceLock<String> = OnceLock::new();
    ID.get_or_init(|| match crate::sys::exe::gnu_build_id() {
        Some(id) if !id.is_empty() => {
            let hex: String = id.iter().map(|b| format!("{b:02x}")).collect();
            format!("gnu-{hex}")
        }
        _ => hash_file("/proc/self/exe").unwrap_or_else(|_| "unknown".to_owned()),
    })
}

fn hash_file(path: &str) -> std::io::Result<String> {
    let mut file = std::fs::File::open(path)?;
    let mut bytes = Vec::new();
    file.read_to_end(&mut bytes)?;
    // FNV-1a over 8-byte words: not for security, for telling builds apart.
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    let mut words = bytes.chunks_exact(8);
    for word in &mut words {
        let mut w = [0u8; 8];
        w.copy_from_slice(word);
        hash ^= u64::from_le_bytes(w);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
        hash ^= hash >> 29;
    }
    for &byte in words.remainder() {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    Ok(format!("file-{:x}-{hash:016x}", bytes.len()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_id_names_the_build_and_the_fallback_hash_tells_files_apart() {
        let id = build_id();
        assert!(id.starts_with("gnu-") || id.starts_with("file-"), "{id}");
        let dir = std::env::temp_dir().join(format!("anyfork-hash-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let (a, b) = (dir.join("a"), dir.join("b"));
        std::fs::write(&a, b"one build, 23 bytes....").unwrap();
        std::fs::write(&b, b"one build, 23 bytes...!").unwrap();
        let (ha, hb) = (
            hash_file(a.to_str().unwrap()).unwrap(),
            hash_file(b.to_str().unwrap()).unwrap(),
        );
        assert!(ha.starts_with("file-17-"), "{ha}");
        assert_ne!(ha, hb);
        assert_eq!(ha, hash_file(a.to_str().unwrap()).unwrap());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
