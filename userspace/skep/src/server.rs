//! `skep server`: the control plane alone (API server and store).

use crate::control_plane::{self, ControlPlaneArgs};

/// Arguments of `skep server`.
#[derive(Debug, clap::Args)]
pub struct ServerArgs {
    #[command(flatten)]
    control_plane: ControlPlaneArgs,
}

/// Runs the control plane until SIGINT or SIGTERM.
pub fn run(args: &ServerArgs) -> anyhow::Result<()> {
    control_plane::runtime()?.block_on(control_plane::run(
        &args.control_plane,
        control_plane::shutdown_signal(),
        |_| Ok(()),
    ))
}
