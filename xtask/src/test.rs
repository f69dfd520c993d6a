//! `cargo xtask test`: formatting, lints, unit tests, then the privileged
//! end-to-end tests, with how long each step took.

use std::{process::Command, time::Instant};

use anyhow::{Context as _, bail};

use crate::{
    build::{PROFILE, cargo},
    setup,
};

/// Arguments of `cargo xtask test`.
#[derive(Debug, clap::Args)]
pub struct TestArgs {
    /// Run only this step (default: all of them, in order).
    #[arg(long, value_enum)]
    only: Option<Step>,
    /// Passed to the test harness as a name filter (unit and e2e steps).
    filter: Option<String>,
}

/// The steps of a full test run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
enum Step {
    /// `cargo fmt --check`.
    Fmt,
    /// clippy on the userspace crates and on the eBPF crate.
    Clippy,
    /// Unit tests of every crate.
    Unit,
    /// End-to-end tests in tests/ (root: namespaces, eBPF, processes).
    E2e,
}

/// Runs the selected steps and prints a timing summary.
pub fn run(args: &TestArgs) -> anyhow::Result<()> {
    let steps = [Step::Fmt, Step::Clippy, Step::Unit, Step::E2e];
    let mut timings = Vec::new();
    for step in steps
        .into_iter()
        .filter(|s| args.only.is_none_or(|o| o == *s))
    {
        let started = Instant::now();
        eprintln!("xtask test: {step:?}");
        match step {
            Step::Fmt => status(cargo().args(["fmt", "--all", "--check"]))?,
            Step::Clippy => clippy()?,
            Step::Unit => unit(args.filter.as_deref())?,
            Step::E2e => e2e(args.filter.as_deref())?,
        }
        timings.push((step, started.elapsed()));
    }
    for (step, took) in timings {
        eprintln!("xtask test: {step:?} took {:.1}s", took.as_secs_f64());
    }
    Ok(())
}

fn clippy() -> anyhow::Result<()> {
    status(
        cargo()
            .args(["clippy", "--profile", PROFILE, "--all-targets"])
            .args(PACKAGES)
            .args(["--", "-D", "warnings"]),
    )?;
    // The eBPF crate, with the nightly clippy for the bpf target, the way
    // aya-build compiles it.
    status(
        Command::new("rustup")
            .args([
                "run",
                "nightly",
                "cargo",
                "clippy",
                "--package",
                "skep-ebpf",
            ])
            .args([
                "--target",
                "bpfel-unknown-none",
                "-Z",
                "build-std=core",
                "--release",
            ])
            .arg("--target-dir")
            .arg(crate::build::target_dir().join("ebpf-clippy"))
            .args(["--", "-D", "warnings"])
            .env(
                "CARGO_ENCODED_RUSTFLAGS",
                "--cfg=bpf_target_arch=\"x86_64\"",
            )
            .env_remove("RUSTC")
            .env_remove("RUSTUP_TOOLCHAIN"),
    )
}

/// Every step selects the same packages in test mode (`--workspace` minus the
/// eBPF crate, which only aya-build compiles), so cargo resolves one feature
/// set and builds each dependency (the C++ of `RocksDB` above all) once.
pub const PACKAGES: &[&str] = &["--workspace", "--exclude", "skep-ebpf"];

fn unit(filter: Option<&str>) -> anyhow::Result<()> {
    status(
        cargo()
            .args(["test", "--profile", PROFILE])
            .args(PACKAGES)
            .args(["--lib", "--bins", "--test", "cli"])
            .arg("--")
            .args(filter),
    )
}

/// The root-only test targets: the e2e suite, and the crates' own
/// privileged tests (images on overlayfs with a real registry, pod
/// sandboxes and runc, socket load-balancing on a real cgroup).
const PRIVILEGED_TESTS: &[&str] = &[
    "--test", "e2e", "--test", "image", "--test", "node", "--test", "sock_lb", "--test", "route",
    "--test", "nodeport", "--test", "policy",
];

fn e2e(filter: Option<&str>) -> anyhow::Result<()> {
    if !setup::is_root() {
        bail!("the end-to-end tests create namespaces and load eBPF programs: run them as root");
    }
    // Building skep's `cli` test target builds the skep binary next to the
    // e2e binary, with the same features; the e2e tests start it.
    status(
        cargo()
            .args(["test", "--profile", PROFILE])
            .args(PACKAGES)
            .args(PRIVILEGED_TESTS)
            .args(["--test", "cli", "--no-run"]),
    )?;
    build_shim()?;
    status(
        cargo()
            .args(["test", "--profile", PROFILE])
            .args(PACKAGES)
            .args(PRIVILEGED_TESTS)
            .args(["--", "--test-threads=1"])
            .args(filter),
    )
}

/// Builds `skep-shim` into `<target>/<profile>/`, beside the skep binary
/// the tests and benchmarks start (its agents run containers under it) and
/// the runtime's node tests. Cargo builds a package's bins only for that
/// package's own test targets, so the shim is built on its own, with the
/// same package selection (its small dependency tree is all this builds).
pub fn build_shim() -> anyhow::Result<()> {
    status(
        cargo()
            .args(["build", "--profile", PROFILE])
            .args(PACKAGES)
            .args(["--bin", "skep-shim"]),
    )
}

pub fn status(cmd: &mut Command) -> anyhow::Result<()> {
    let status = cmd
        .status()
        .with_context(|| format!("failed to start {cmd:?}"))?;
    if !status.success() {
        bail!("{cmd:?} failed: {status}");
    }
    Ok(())
}
