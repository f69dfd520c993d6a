//! `cargo xtask bench <name>`: benchmarks that measure skep side by side with
//! its baseline in one run and print ratios (these machines are noisy, so a
//! ratio measured in one run means more than an absolute number).
//!
//! Built as a harness-less test target so it shares the test build's
//! dependency graph (no second `RocksDB` build); it asserts nothing.

mod api;
mod authz;
mod datapath;
mod podstartup;
mod policy;
mod prog_stats;
mod propagation;
mod stats;
mod store;

use std::process::ExitCode;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let name = args
        .iter()
        .find(|a| !a.starts_with('-'))
        .map(String::as_str);
    let result = match name {
        Some("store") => run(store::run()),
        Some("authz") => run(authz::run()),
        Some("pod-startup") => run(podstartup::run()),
        Some("datapath") => run(datapath::run(&args)),
        Some("policy") => run(policy::run(&args)),
        Some("policy-propagation") => run(propagation::run(&args)),
        // The load generator `datapath` starts inside a lab node.
        Some("datapath-client") => datapath::client::main(&args),
        // `cargo test` runs every test target; with no bench named, do nothing.
        None => return ExitCode::SUCCESS,
        Some(other) => Err(anyhow::anyhow!(
            "unknown benchmark {other:?}; known: store, authz, pod-startup, datapath, policy, policy-propagation"
        )),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("bench: {err:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(fut: impl Future<Output = anyhow::Result<()>>) -> anyhow::Result<()> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(fut)
}
