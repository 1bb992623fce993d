//! Growing this process to a given size, and reading process sizes.

use std::io;

/// Memory held only to make this process big, every page touched.
#[derive(Default)]
pub struct Ballast {
    chunks: Vec<Vec<u8>>,
}

impl Ballast {
    /// Allocates and touches memory until this process's resident size is
    /// at least `mb` megabytes.
    pub fn grow_to(&mut self, mb: u64) -> io::Result<()> {
        const CHUNK: usize = 1 << 20;
        while resident_kb(std::process::id())? < mb * 1024 {
            let mut chunk = vec![0u8; CHUNK];
            // Write every page so it is really resident (calloc'd pages are
            // not until touched).
            for page in chunk.chunks_mut(4096) {
                page[0] = 1;
            }
            self.chunks.push(chunk);
        }
        Ok(())
    }
}

/// Resident set size of a process, in kB (from /proc/PID/statm).
pub fn resident_kb(pid: u32) -> io::Result<u64> {
    let statm = std::fs::read_to_string(format!("/proc/{pid}/statm"))?;
    let pages: u64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|p| p.parse().ok())
        .ok_or_else(|| io::Error::other(format!("unreadable /proc/{pid}/statm")))?;
    Ok(pages * page_size() / 1024)
}

fn page_size() -> u64 {
    rustix::param::page_size() as u64
}

/// RSS and PSS of a process, in kB (from /proc/PID/smaps_rollup).
#[derive(Debug, Clone, Copy, Default)]
pub struct Footprint {
    pub rss_kb: u64,
    pub pss_kb: u64,
}

pub fn footprint(pid: u32) -> io::Result<Footprint> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup"))?;
    let field = |name: &str| {
        text.lines()
            .find_map(|line| {
                line.strip_prefix(name)?
                    .strip_prefix(':')?
                    .split_whitespace()
                    .next()?
                    .parse()
                    .ok()
            })
            .ok_or_else(|| io::Error::other(format!("no {name} in /proc/{pid}/smaps_rollup")))
    };
    Ok(Footprint {
        rss_kb: field("Rss")?,
        pss_kb: field("Pss")?,
    })
}
