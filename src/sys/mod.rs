//! The operating-system layer: every raw syscall anyfork makes lives here.
//!
//! The parent-facing types ([`Fork`](crate::Fork), [`Process`](crate::Process))
//! never call `fork`, `clone`, `posix_spawn` or `sendmsg` themselves; they use
//! the small functions below, each of which names the system call it wraps and
//! links its manual page. Reading this directory is enough to audit what
//! anyfork does to a process.
//!
//! - [`clone`]: creating processes (`clone(CLONE_PARENT)` in templates, `fork`
//!   for [`early`](crate::early) and [`Template::here`](crate::Template::here)).
//! - [`spawn`]: starting a fresh serving process with `posix_spawn`.
//! - [`fdpass`]: byte streams with file descriptors attached (`SCM_RIGHTS`).
//! - [`fds`]: descriptor hygiene (closing leaked descriptors, checking the
//!   serve marker's descriptor, counting threads).
//! - [`exe`]: where code lives in the executable, so a function value can be
//!   named across `exec`.
//! - [`secure`]: whether the process runs setuid, setgid or with file
//!   capabilities (`AT_SECURE`), where serve mode is refused.
//! - [`parent_death`]: a process that dies with the program that made it.
//! - [`memory`]: a process's resident memory and the cgroup's OOM kills.
//! - [`child_exits`]: `SIGCHLD` through a `signalfd`, for the relay of a
//!   remote connection.
//! - [`shared_mapping`]: a sealed `memfd` both sides of an RPC connection
//!   map, for large messages.
//! - [`poll`]: waiting for a socket to become readable without being woken
//!   each time the peer reads (why anyfork does not block in `recv`).

pub(crate) mod child_exits;
pub(crate) mod clone;
pub(crate) mod exe;
pub(crate) mod fdpass;
pub(crate) mod fds;
pub(crate) mod memory;
pub(crate) mod parent_death;
pub(crate) mod pidfd;
pub(crate) mod poll;
pub(crate) mod secure;
pub(crate) mod shared_mapping;
pub(crate) mod spawn;
pub(crate) mod title;
pub(crate) mod wake;
