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
//! The directory goes to anyfork's binaries and examples always, and to
//! dependents only with the `static-unwinder` feature. Nothing happens when
//! the target is not `linux-gnu`, when it already links statically, or when
//! the C compiler cannot name `libgcc_eh.a`; then the program links as any
//! Rust program does.

use std::env;
use std::fs;
use std::path::PathBuf;
use std::process::Command;

fn main() {
    println!("cargo::rerun-if-changed=build.rs");
    for var in ["CC", "TARGET_CC"] {
        println!("cargo::rerun-if-env-changed={var}");
    }
    let target_os = env::var("CARGO_CFG_TARGET_OS").unwrap_or_default();
    let target_env = env::var("CARGO_CFG_TARGET_ENV").unwrap_or_default();
    let features = env::var("CARGO_CFG_TARGET_FEATURE").unwrap_or_default();
    if target_os != "linux" || target_env != "gnu" || features.split(',').any(|f| f == "crt-static")
    {
        return;
    }
    let Some(unwinder) = static_unwinder() else {
        println!(
            "cargo::warning=anyfork: libgcc_eh.a not found; programs load libgcc_s.so.1 as usual"
        );
        return;
    };
    let Some(out_dir) = env::var_os("OUT_DIR").map(PathBuf::from) else {
        return;
    };
    let dir = out_dir.join("static-unwinder");
    let script = format!("INPUT({})\n", unwinder.display());
    if fs::create_dir_all(&dir)
        .and_then(|()| fs::write(dir.join("libgcc_s.a"), script))
        .is_err()
    {
        println!("cargo::warning=anyfork: could not write {}", dir.display());
        return;
    }
    // `-L` given to the linker driver comes before the driver's own library
    // directories, so `-lgcc_s` finds the script first.
    for kind in ["bins", "examples"] {
        println!("cargo::rustc-link-arg-{kind}=-L{}", dir.display());
    }
    if env::var_os("CARGO_FEATURE_STATIC_UNWINDER").is_some() {
        println!("cargo::rustc-link-search=native={}", dir.display());
    }
}

/// The absolute path of gcc's static unwinder, as the target's C compiler
/// reports it.
fn static_unwinder() -> Option<PathBuf> {
    let compiler = env::var_os("TARGET_CC")
        .or_else(|| env::var_os("CC"))
        .or_else(|| (env::var("TARGET").ok()? == env::var("HOST").ok()?).then(|| "cc".into()))?;
    let output = Command::new(compiler)
        .arg("-print-file-name=libgcc_eh.a")
        .output()
        .ok()?;
    if !output.status.success() {
        return None;
    }
    let path = PathBuf::from(String::from_utf8(output.stdout).ok()?.trim());
    // A compiler that does not know the file prints its bare name.
    (path.is_absolute() && path.is_file()).then_some(path)
}
