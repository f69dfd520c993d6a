//! `cargo xtask …`: the project's two README commands (`up`, `test`) and the
//! steps they are made of. Every command installs what is missing first.

mod bench;
mod build;
mod drift;
mod lanes;
mod setup;
mod test;

use std::{process::ExitCode, time::Instant};

use clap::{Parser, Subcommand};

/// skep's project automation.
#[derive(Debug, Parser)]
#[command(name = "cargo xtask")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Install what this machine lacks (Debian packages, nightly rust-src,
    /// bpf-linker 0.10.4) and mount bpffs. Idempotent; silent when nothing is missing.
    Setup,
    /// Compile the eBPF programs (ebpf/skep-ebpf) and print where the object is.
    BuildEbpf,
    /// Build skep and start a single-node cluster (`skep up`); arguments after
    /// `--` go to `skep up`.
    Up {
        /// Extra arguments for `skep up`.
        #[arg(last = true)]
        args: Vec<String>,
    },
    /// Run every check: fmt, clippy, unit tests, then the privileged end-to-end tests.
    Test(test::TestArgs),
    /// Report what this machine has that neither its image nor setup gives
    /// it (Debian and pip packages, cargo binaries, rustup components, build
    /// variables); `--purge` removes it. Exits 1 when something differs.
    Drift(drift::DriftArgs),
    /// Run a benchmark side by side with its baseline: `store`, `pod-startup`, `datapath`, `policy`, `policy-propagation`, `scheduler`.
    Bench {
        /// Which benchmark.
        name: String,
        /// Extra arguments for the benchmark.
        #[arg(last = true)]
        args: Vec<String>,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Setup => setup::run(),
        Command::BuildEbpf => setup::run()
            .and_then(|()| build::ebpf_object())
            .map(|object| {
                println!("{}", object.display());
            }),
        Command::Up { args } => setup::run().and_then(|()| build::up(&args)),
        Command::Test(args) => {
            let started = Instant::now();
            setup::run().and_then(|()| test::run(&args, started.elapsed()))
        }
        Command::Drift(args) => drift::run(&args),
        Command::Bench { name, args } => setup::run().and_then(|()| bench::run(&name, &args)),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("xtask: {err:#}");
            ExitCode::FAILURE
        }
    }
}
