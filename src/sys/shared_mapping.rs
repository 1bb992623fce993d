//! Memory two processes map: a sealed `memfd` and its `mmap`s (see
//! [memfd_create(2)](https://man7.org/linux/man-pages/man2/memfd_create.2.html),
//! [mmap(2)](https://man7.org/linux/man-pages/man2/mmap.2.html) and
//! `F_ADD_SEALS` in [fcntl(2)](https://man7.org/linux/man-pages/man2/fcntl.2.html)).
//!
//! The creator seals the file's size (`F_SEAL_SHRINK | F_SEAL_GROW`) before
//! sending it: a peer that maps it knows that no page it maps can vanish
//! under it (touching a page past a shrunk file's end would be `SIGBUS`),
//! and checks the seals and the size before mapping anything.

use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::ptr::NonNull;

use rustix::fs::{MemfdFlags, SealFlags};
use rustix::mm::{MapFlags, ProtFlags};

/// One `mmap` of (part of) a shared file, unmapped when dropped.
#[derive(Debug)]
pub(crate) struct Mapping {
    start: NonNull<u8>,
    len: usize,
}

// SAFETY: a `Mapping` is an address range, owned by this value alone; what
// is read or written through it is up to its users, who synchronise
// (see `rpc::shared_memory`).
unsafe impl Send for Mapping {}
// SAFETY: as above: `&Mapping` gives out only the address.
unsafe impl Sync for Mapping {}

/// The seals a region must carry before a peer maps it.
const SIZE_SEALS: SealFlags = SealFlags::SHRINK.union(SealFlags::GROW);

impl Mapping {
    /// A new shared file of `len` bytes (sparse: pages are allocated when
    /// first written), its size sealed, mapped for reading and writing.
    pub(crate) fn create(name: &str, len: usize) -> io::Result<(OwnedFd, Mapping)> {
        let fd = rustix::fs::memfd_create(name, MemfdFlags::CLOEXEC | MemfdFlags::ALLOW_SEALING)?;
        rustix::fs::ftruncate(&fd, len as u64)?;
        rustix::fs::fcntl_add_seals(&fd, SIZE_SEALS | SealFlags::SEAL)?;
        let mapping = Mapping::map(&fd, 0, len, true)?;
        Ok((fd, mapping))
    }

    /// Checks that `fd` is a shared file of exactly `len` bytes whose size
    /// is sealed: only then may it be mapped without risking `SIGBUS`.
    pub(crate) fn check_sealed(fd: &OwnedFd, len: u64) -> Result<(), &'static str> {
        let seals = rustix::fs::fcntl_get_seals(fd)
            .map_err(|_| "the shared-memory descriptor is not a sealable file")?;
        if !seals.contains(SIZE_SEALS) {
            return Err("the shared-memory region's size is not sealed");
        }
        let stat =
            rustix::fs::fstat(fd).map_err(|_| "cannot read the shared-memory region's size")?;
        if u64::try_from(stat.st_size).ok() != Some(len) {
            return Err("the shared-memory region is not the size announced");
        }
        Ok(())
    }

    /// Maps `len` bytes of `fd` from `offset` (a multiple of the page
    /// size), shared, read-only unless `writable`.
    pub(crate) fn map(
        fd: &OwnedFd,
        offset: u64,
        len: usize,
        writable: bool,
    ) -> io::Result<Mapping> {
        if len == 0 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "an empty mapping",
            ));
        }
        let prot = if writable {
            ProtFlags::READ | ProtFlags::WRITE
        } else {
            ProtFlags::READ
        };
        // SAFETY: a fresh mapping chosen by the kernel (no address is
        // given), so no existing memory is replaced; the file's size is
        // sealed (checked by the caller for a peer's file, set by `create`
        // for ours), so every mapped page stays backed.
        let start = unsafe {
            rustix::mm::mmap(
                std::ptr::null_mut(),
                len,
                prot,
                MapFlags::SHARED,
                fd.as_fd(),
                offset,
            )?
        };
        let start = NonNull::new(start.cast::<u8>())
            .ok_or_else(|| io::Error::other("mmap returned a null address"))?;
        Ok(Mapping { start, len })
    }

    /// The first byte.
    pub(crate) fn as_ptr(&self) -> *mut u8 {
        self.start.as_ptr()
    }

    /// Length in bytes.
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// Appends the `len` bytes at `offset` (as much of them as lies in the
    /// mapping) to `out`, copying from the mapping without making a
    /// reference to it: a process that writes the range meanwhile can only
    /// change which bytes arrive.
    pub(crate) fn append_to(&self, offset: usize, len: usize, out: &mut Vec<u8>) {
        let len = len.min(self.len.saturating_sub(offset));
        out.reserve(len);
        // SAFETY: `offset..offset + len` lies within the mapping (clamped
        // above), which lives as long as `self`; `out` has room for `len`
        // more bytes, initialised by the copy before its length is set.
        unsafe {
            std::ptr::copy_nonoverlapping(
                self.as_ptr().add(offset),
                out.as_mut_ptr().add(out.len()),
                len,
            );
            out.set_len(out.len() + len);
        }
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: the range was mapped by `map` and is unmapped once, here;
        // nothing borrows from it any more (borrows of a mapping's bytes
        // are tied to `&self`).
        let _ = unsafe { rustix::mm::munmap(self.start.as_ptr().cast(), self.len) };
    }
}
