//! `skep up`: a single-node cluster in one process.

use std::path::PathBuf;

use anyhow::Context as _;
use skep_datapath::{Datapath, DatapathConfig, default_pin_dir, preflight};

use crate::HostArgs;

/// Arguments of `skep up`.
#[derive(Debug, clap::Args)]
pub struct UpArgs {
    /// Directory for the cluster's state (store, kubeconfig, node data).
    #[arg(long, default_value = "/var/lib/skep")]
    data_dir: PathBuf,
    /// This node's name.
    #[arg(long, default_value = "local")]
    node_name: String,
    #[command(flatten)]
    host: HostArgs,
}

/// Checks the host, loads the datapath with its maps pinned under
/// `<bpffs>/skep/<node>`, and runs until SIGINT or SIGTERM.
pub fn run(args: &UpArgs) -> anyhow::Result<()> {
    let host = args.host.host();
    preflight::check(&host)?;
    std::fs::create_dir_all(&args.data_dir)
        .with_context(|| format!("failed to create data dir {}", args.data_dir.display()))?;

    let pin_dir = default_pin_dir(&host.bpffs, &args.node_name);
    let _datapath = Datapath::load(&DatapathConfig {
        pin_dir: pin_dir.clone(),
        btf: Some(host.btf_path.clone()),
    })?;
    tracing::info!(
        node = %args.node_name,
        data_dir = %args.data_dir.display(),
        pin_dir = %pin_dir.display(),
        "skep is up; Ctrl-C stops it"
    );

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("failed to start the async runtime")?;
    runtime.block_on(shutdown_signal())?;
    tracing::info!("shutting down");
    Ok(())
}

async fn shutdown_signal() -> anyhow::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).context("failed to listen for SIGTERM")?;
    tokio::select! {
        res = tokio::signal::ctrl_c() => res.context("failed to listen for Ctrl-C")?,
        _ = term.recv() => {}
    }
    Ok(())
}
