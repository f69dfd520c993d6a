//! Building skep's artifacts with the one shared profile.

use std::{
    os::unix::process::CommandExt as _,
    path::PathBuf,
    process::{Command, Stdio},
};

use anyhow::{Context as _, bail};

/// The profile every xtask build, test, lint and bench uses (see Cargo.toml).
pub const PROFILE: &str = "opt";

/// The cargo target directory: `$CARGO_TARGET_DIR`, else `target/` at the
/// workspace root.
pub fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR").map_or_else(
        || PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target"),
        PathBuf::from,
    )
}

/// A `cargo` command using the cargo that runs xtask.
pub fn cargo() -> Command {
    Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()))
}

/// Builds `packages` (in one cargo run, so they share one feature set) and
/// returns the JSON messages cargo printed.
fn build_messages(packages: &[&str]) -> anyhow::Result<Vec<serde_json::Value>> {
    let mut cmd = cargo();
    cmd.args(["build", "--profile", PROFILE]);
    for package in packages {
        cmd.args(["--package", package]);
    }
    let out = cmd
        .args(["--message-format", "json-render-diagnostics"])
        .stderr(Stdio::inherit())
        .output()
        .context("failed to run cargo build")?;
    if !out.status.success() {
        bail!(
            "cargo build --package {} failed",
            packages.join(" --package ")
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|line| serde_json::from_str(line).ok())
        .collect())
}

/// Builds the eBPF object through skep-datapath's build script (the same
/// aya-build call a plain `cargo build` makes) and returns its path.
pub fn ebpf_object() -> anyhow::Result<PathBuf> {
    let messages = build_messages(&["skep-datapath"])?;
    let out_dir = messages
        .iter()
        .filter(|m| m["reason"] == "build-script-executed")
        .filter(|m| {
            m["package_id"]
                .as_str()
                .is_some_and(|id| id.contains("skep-datapath"))
        })
        .find_map(|m| m["out_dir"].as_str())
        .context("cargo did not report skep-datapath's build script output")?;
    let object = PathBuf::from(out_dir).join("skep");
    let len = std::fs::metadata(&object)
        .with_context(|| format!("no eBPF object at {}", object.display()))?
        .len();
    if len == 0 {
        bail!("the eBPF object is empty: unset SKEP_SKIP_EBPF and build again");
    }
    Ok(object)
}

/// Builds the `skep` binary with the `skep-shim` binary beside it (the
/// agent runs every container under it) and returns skep's path.
pub fn skep_binary() -> anyhow::Result<PathBuf> {
    let messages = build_messages(&["skep", "skep-shim"])?;
    let executable = |name: &str| {
        messages
            .iter()
            .filter(|m| m["reason"] == "compiler-artifact" && m["target"]["name"] == name)
            .find_map(|m| m["executable"].as_str().map(PathBuf::from))
            .with_context(|| format!("cargo did not report the {name} executable"))
    };
    let skep = executable("skep")?;
    let shim = executable("skep-shim")?;
    if shim.parent() != skep.parent() {
        bail!(
            "skep-shim was built at {}, not beside {}",
            shim.display(),
            skep.display()
        );
    }
    Ok(skep)
}

/// `cargo xtask up`: builds skep (and its shim) and replaces this process
/// with `skep up`.
pub fn up(args: &[String]) -> anyhow::Result<()> {
    let skep = skep_binary()?;
    let err = Command::new(&skep).arg("up").args(args).exec();
    Err(err).with_context(|| format!("failed to exec {}", skep.display()))
}
