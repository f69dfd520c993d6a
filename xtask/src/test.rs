//! `cargo xtask test`: formatting, lints, unit tests, then the privileged
//! end-to-end tests, with how long each step took.

use std::{
    process::Command,
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};

use crate::{
    build::{PROFILE, cargo},
    drift, lanes, setup,
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

/// Runs the selected steps and prints a timing summary; `setup_took` is how
/// long `cargo xtask setup` took before them.
pub fn run(args: &TestArgs, setup_took: Duration) -> anyhow::Result<()> {
    drift::warn_if_drifted();
    let run_started = Instant::now();
    let steps = [Step::Fmt, Step::Clippy, Step::Unit, Step::E2e];
    let mut timings = vec![("setup".to_owned(), setup_took)];
    // The e2e step's lanes, each binary's time (summed wall time exceeds
    // the step's: the lanes run side by side).
    let mut parts: Vec<(String, Duration)> = Vec::new();
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
            Step::E2e => parts = e2e(args.filter.as_deref())?,
        }
        timings.push((format!("{step:?}").to_lowercase(), started.elapsed()));
        timings.extend(
            parts
                .drain(..)
                .map(|(label, took)| (format!("  {label}"), took)),
        );
    }
    print_timings(&timings, setup_took + run_started.elapsed());
    Ok(())
}

/// The summary at the end of a run: each step's time and the total, so
/// growth shows from one run to the next.
fn print_timings(timings: &[(String, Duration)], total: Duration) {
    eprintln!("xtask test: step times");
    for (step, took) in timings {
        eprintln!("xtask test:   {step:<16} {:>8.1}s", took.as_secs_f64());
    }
    eprintln!(
        "xtask test:   {:<16} {:>8.1}s",
        "total",
        total.as_secs_f64()
    );
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

/// The names of [`PRIVILEGED_TESTS`]' targets.
fn privileged_targets() -> Vec<&'static str> {
    PRIVILEGED_TESTS
        .iter()
        .copied()
        .filter(|a| *a != "--test")
        .collect()
}

/// Builds the privileged test binaries, then runs them in concurrent lanes
/// ([`lanes`]); returns each run's time.
fn e2e(filter: Option<&str>) -> anyhow::Result<Vec<(String, Duration)>> {
    if !setup::is_root() {
        bail!("the end-to-end tests create namespaces and load eBPF programs: run them as root");
    }
    // Building skep's `cli` test target builds the skep binary next to the
    // e2e binary, with the same features; the e2e tests start it.
    let out = cargo()
        .args(["test", "--profile", PROFILE])
        .args(PACKAGES)
        .args(PRIVILEGED_TESTS)
        .args(["--test", "cli", "--no-run"])
        .args(["--message-format", "json-render-diagnostics"])
        .stderr(std::process::Stdio::inherit())
        .output()
        .context("failed to run cargo test --no-run")?;
    if !out.status.success() {
        bail!("building the privileged tests failed");
    }
    let executables = lanes::executables(&String::from_utf8_lossy(&out.stdout));
    build_shim()?;
    let runs = lanes::run(lanes::plan(&privileged_targets(), filter), &executables)?;
    Ok(runs
        .into_iter()
        .map(|(label, took, _)| (label, took))
        .collect())
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
