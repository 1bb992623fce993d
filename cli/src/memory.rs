//! Growing this process to a given size, and reading process sizes.

use std::io;

/// Memory held only to make this process big, every page touched.
///
/// Mapped directly rather than allocated, so that
/// [`shrink_to`](Ballast::shrink_to) really gives it back (`malloc` may keep
/// freed memory resident), and in small pages (no transparent huge pages),
/// so that a `fork` of this process has a page table entry to copy for every
/// 4 kB, whatever the machine's huge-page setting.
#[derive(Default)]
pub struct Ballast {
    regions: Vec<Region>,
}

impl Ballast {
    /// Maps and touches memory until this process's resident size is at
    /// least `mb` megabytes.
    pub fn grow_to(&mut self, mb: u64) -> io::Result<()> {
        let want_kb = mb * 1024;
        let have_kb = resident_kb(std::process::id())?;
        if have_kb < want_kb {
            self.regions
                .push(Region::touched((want_kb - have_kb) as usize * 1024)?);
        }
        Ok(())
    }

    /// Gives memory back, the most recently added first, until this
    /// process's resident size is at most `mb` megabytes or nothing is
    /// left. Growing to a size and shrinking back to it gives the same
    /// regions back: each `grow_to` adds one.
    pub fn shrink_to(&mut self, mb: u64) -> io::Result<()> {
        while !self.regions.is_empty() && resident_kb(std::process::id())? > mb * 1024 {
            self.regions.pop();
        }
        Ok(())
    }
}

/// An anonymous private mapping, unmapped on drop.
struct Region {
    addr: *mut libc::c_void,
    len: usize,
}

impl Region {
    /// Maps `len` bytes (rounded up to pages), every page resident and
    /// written.
    fn touched(len: usize) -> io::Result<Self> {
        let page = page_size() as usize;
        let len = len.div_ceil(page) * page;
        // SAFETY: a fresh anonymous mapping; no existing memory is affected.
        let addr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        if addr == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let region = Region { addr, len };
        // SAFETY: advice on the mapping made above. Small pages first (a
        // kernel without transparent huge pages refuses; nothing to undo),
        // then every page made resident and writable in one call, much
        // faster than a fault per page.
        let populated = unsafe {
            libc::madvise(addr, len, libc::MADV_NOHUGEPAGE);
            libc::madvise(addr, len, libc::MADV_POPULATE_WRITE) == 0
        };
        if !populated {
            // Kernels before 5.14: fault every page in.
            for offset in (0..len).step_by(page) {
                // SAFETY: `offset` is inside the mapping, which is writable.
                unsafe { addr.cast::<u8>().add(offset).write_volatile(1) };
            }
        }
        Ok(region)
    }
}

impl Drop for Region {
    fn drop(&mut self) {
        // SAFETY: unmaps exactly the mapping this region made; nothing
        // refers into it any more.
        unsafe { libc::munmap(self.addr, self.len) };
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
