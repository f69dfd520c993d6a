//! Builds the eBPF object (`ebpf/skep-ebpf`) with aya-build so that this crate,
//! and the `skep` binary on top of it, embed it.
//!
//! `SKEP_SKIP_EBPF=1` writes an empty object instead, for quick `cargo check`
//! runs on machines without the eBPF toolchain; such a binary refuses to load
//! the datapath and says why.

use std::{env, fs, path::Path, path::PathBuf, process::Command};

use anyhow::Context as _;

const EBPF_PACKAGE: &str = "skep-ebpf";
/// The name of the bin target in `ebpf/skep-ebpf`, i.e. the object's file name.
const EBPF_OBJECT: &str = "skep";

fn main() -> anyhow::Result<()> {
    println!("cargo:rerun-if-env-changed=SKEP_SKIP_EBPF");
    let out_dir = PathBuf::from(env::var_os("OUT_DIR").context("OUT_DIR not set")?);
    let manifest_dir =
        PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").context("CARGO_MANIFEST_DIR not set")?);
    let ebpf_dir = manifest_dir.join("../../ebpf");

    if env::var_os("SKEP_SKIP_EBPF").is_some_and(|v| v == "1") {
        fs::write(out_dir.join(EBPF_OBJECT), [])?;
        return Ok(());
    }

    if let Err(missing) = check_toolchain() {
        // One line, not a wall of linker errors.
        println!(
            "cargo::error=the eBPF toolchain is incomplete ({missing}); install it with `cargo xtask setup`"
        );
        return Ok(());
    }

    // aya-build watches the eBPF crate; the shared types live next to it.
    println!(
        "cargo:rerun-if-changed={}",
        ebpf_dir.join("skep-ebpf-common").display()
    );
    let root_dir = ebpf_dir.join(EBPF_PACKAGE);
    let root_dir = root_dir.to_str().context("eBPF crate path is not UTF-8")?;
    aya_build::build_ebpf(
        [aya_build::Package {
            name: EBPF_PACKAGE,
            root_dir,
            ..Default::default()
        }],
        aya_build::Toolchain::Nightly,
    )
}

/// What aya-build needs beyond stable Rust: a nightly toolchain with rust-src
/// (for `-Z build-std=core`) and bpf-linker on PATH.
fn check_toolchain() -> Result<(), String> {
    let sysroot = Command::new("rustup")
        .args(["run", "nightly", "rustc", "--print", "sysroot"])
        .output()
        .ok()
        .filter(|out| out.status.success())
        .map(|out| PathBuf::from(String::from_utf8_lossy(&out.stdout).trim()))
        .ok_or("no nightly Rust toolchain")?;
    if !sysroot.join("lib/rustlib/src/rust/library/core").is_dir() {
        return Err("nightly has no rust-src component".into());
    }
    let path = env::var_os("PATH").unwrap_or_default();
    let linker = env::split_paths(&path)
        .map(|dir| dir.join("bpf-linker"))
        .find(|candidate| is_executable(candidate))
        .ok_or("bpf-linker not found on PATH")?;
    // Rebuild the object when the linker changes.
    println!("cargo:rerun-if-changed={}", linker.display());
    Ok(())
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt as _;
    fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}
