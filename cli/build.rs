//! Links libgcc's unwinder statically into the `anyfork` tool, as anyfork's
//! examples are (see the library's `build.rs` for why: every `new_exec` of
//! the tool about 90 µs faster).

include!("../build/static_unwinder.rs");

fn main() {
    if let Some(dir) = static_unwinder_dir() {
        println!("cargo::rustc-link-arg-bins=-L{}", dir.display());
    }
}
