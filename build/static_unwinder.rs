// Shared by anyfork's build script and the anyfork tool's (`include!`d):
// finds gcc's static unwinder and writes the linker script that makes
// `-lgcc_s` find it. See anyfork's `build.rs` for why.

use std::env;
use std::fs;
use std::path::PathBuf;
use std::process::Command;

/// The directory holding the `libgcc_s.a` linker script, where the target
/// has gcc's static unwinder (`*-linux-gnu`, not `crt-static`).
fn static_unwinder_dir() -> Option<PathBuf> {
    println!("cargo::rerun-if-changed=build.rs");
    for var in ["CC", "TARGET_CC"] {
        println!("cargo::rerun-if-env-changed={var}");
    }
    let target_os = env::var("CARGO_CFG_TARGET_OS").unwrap_or_default();
    let target_env = env::var("CARGO_CFG_TARGET_ENV").unwrap_or_default();
    let features = env::var("CARGO_CFG_TARGET_FEATURE").unwrap_or_default();
    if target_os != "linux" || target_env != "gnu" || features.split(',').any(|f| f == "crt-static")
    {
        return None;
    }
    let Some(unwinder) = static_unwinder() else {
        println!(
            "cargo::warning=anyfork: libgcc_eh.a not found; programs load libgcc_s.so.1 as usual"
        );
        return None;
    };
    let out_dir = env::var_os("OUT_DIR").map(PathBuf::from)?;
    let dir = out_dir.join("static-unwinder");
    let script = format!("INPUT({})\n", unwinder.display());
    if fs::create_dir_all(&dir)
        .and_then(|()| fs::write(dir.join("libgcc_s.a"), script))
        .is_err()
    {
        println!("cargo::warning=anyfork: could not write {}", dir.display());
        return None;
    }
    Some(dir)
}

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
