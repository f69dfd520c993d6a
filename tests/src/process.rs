//! Running commands and finding the `skep` binary under test.

use std::{
    path::PathBuf,
    process::{Command, Output},
};

use anyhow::{Context as _, bail};

/// Runs a command to completion; fails with its stderr if it exits non-zero.
/// Returns stdout.
pub fn run(program: &str, args: &[&str]) -> anyhow::Result<String> {
    let out = Command::new(program)
        .args(args)
        .output()
        .with_context(|| format!("failed to start {program}"))?;
    if !out.status.success() {
        bail!(
            "{program} {} failed ({}): {}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The `skep` binary built with the same profile as this test binary
/// (`cargo xtask test` builds it first): `<target>/<profile>/skep`.
pub fn skep_binary() -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe().context("no current exe")?;
    // <target>/<profile>/deps/e2e-<hash>
    let profile_dir = exe
        .parent()
        .and_then(|deps| deps.parent())
        .context("test binary is not in <target>/<profile>/deps")?;
    let skep = profile_dir.join("skep");
    if !skep.is_file() {
        bail!(
            "{} not found: build it first (cargo xtask test does)",
            skep.display()
        );
    }
    Ok(skep)
}

/// The number in field `field` of `/proc/<pid>/<file>` (`status`: `PPid`,
/// `VmRSS` in KiB …; `smaps_rollup`: `Pss` in KiB), `None` if the process
/// is gone.
#[must_use]
pub fn proc_field(pid: u32, file: &str, field: &str) -> Option<u64> {
    std::fs::read_to_string(format!("/proc/{pid}/{file}"))
        .ok()?
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
}

/// Runs `skep ARGS…` and returns its whole output, whatever the exit status.
pub fn skep(args: &[&str]) -> anyhow::Result<Output> {
    let skep = skep_binary()?;
    Command::new(&skep)
        .args(args)
        .output()
        .with_context(|| format!("failed to start {}", skep.display()))
}
