//! `skep server`: the control plane alone (API server and store).

use anyhow::Context as _;

use crate::control_plane::{self, ControlPlaneArgs};

/// Arguments of `skep server`.
#[derive(Debug, clap::Args)]
pub struct ServerArgs {
    #[command(flatten)]
    control_plane: ControlPlaneArgs,
    /// Write a kubeconfig for node NAME to <data-dir>/nodes/NAME.kubeconfig
    /// (for `skep agent --kubeconfig`); repeatable.
    #[arg(long = "node-kubeconfig", value_name = "NAME")]
    node_kubeconfigs: Vec<String>,
}

/// Runs the control plane until SIGINT or SIGTERM.
pub fn run(args: &ServerArgs) -> anyhow::Result<()> {
    control_plane::runtime()?.block_on(control_plane::run(
        &args.control_plane,
        control_plane::shutdown_signal(),
        |server| {
            for node in &args.node_kubeconfigs {
                let path = server
                    .node_kubeconfig(node)
                    .with_context(|| format!("failed to write the kubeconfig of node {node}"))?;
                tracing::info!(%node, path = %path.display(), "node kubeconfig written");
            }
            Ok(())
        },
    ))
}
