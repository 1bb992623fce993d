//! Links libgcc's unwinder statically into anyfork's own programs (and, with
//! the `static-unwinder` feature, into the programs of crates that depend on
//! anyfork).
//!
//! Why: `Fork::new_exec` starts a fresh copy of the program, so it costs what
//! `exec` of the program costs. On `*-linux-gnu` every Rust program loads
//! `libgcc_s.so.1` (for unwinding) besides libc, and loading it, relocating
//! it and running its constructor (which asks the CPU what it supports, a
//! trap to the hypervisor on virtual machines) adds about 90 µs to every
//! exec on our 2-core test machines: a fifth of `new_exec`.
//!
//! How: rustc asks the linker for `-lgcc_s`. We write a one-line linker
//! script named `libgcc_s.a` that points at gcc's static unwinder
//! (`libgcc_eh.a`, the one Rust itself links with `crt-static`) and put its
//! directory first in the search path, so `-lgcc_s` finds it. Only the
//! unwinder becomes static; libc stays shared, so `require` (dlopen) works
//! as before.
//!
//! The directory goes to anyfork's examples always (and the `anyfork` tool,
//! another package, does the same with its own build script), and to
//! dependents only with the `static-unwinder` feature. Nothing happens when
//! the target is not `linux-gnu`, when it already links statically, or when
//! the C compiler cannot name `libgcc_eh.a`; then the program links as any
//! Rust program does.

include!("build/static_unwinder.rs");

fn main() {
    // The target triple, for the handshake of remote connections.
    if let Ok(target) = env::var("TARGET") {
        println!("cargo::rustc-env=ANYFORK_TARGET={target}");
    }
    let Some(dir) = static_unwinder_dir() else {
        return;
    };
    println!("cargo::rustc-link-arg-examples=-L{}", dir.display());
    if env::var_os("CARGO_FEATURE_STATIC_UNWINDER").is_some() {
        println!("cargo::rustc-link-search=native={}", dir.display());
    }
}
