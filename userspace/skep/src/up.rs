//! `skep up`: a single-node cluster in one process.

use skep_datapath::{Datapath, DatapathConfig, default_pin_dir, preflight};

use crate::{
    HostArgs,
    control_plane::{self, ControlPlaneArgs},
};

/// Arguments of `skep up`.
#[derive(Debug, clap::Args)]
pub struct UpArgs {
    #[command(flatten)]
    control_plane: ControlPlaneArgs,
    /// This node's name.
    #[arg(long, default_value = "local")]
    node_name: String,
    #[command(flatten)]
    host: HostArgs,
}

/// Checks the host, loads the datapath with its maps pinned under
/// `<bpffs>/skep/<node>`, and runs the control plane until SIGINT or SIGTERM.
pub fn run(args: &UpArgs) -> anyhow::Result<()> {
    let host = args.host.host();
    preflight::check(&host)?;
    let pin_dir = default_pin_dir(&host.bpffs, &args.node_name);
    let _datapath = Datapath::load(&DatapathConfig {
        pin_dir: pin_dir.clone(),
        btf: Some(host.btf_path.clone()),
        lru_entries: None,
    })?;
    tracing::info!(node = %args.node_name, pin_dir = %pin_dir.display(), "datapath loaded");
    control_plane::runtime()?.block_on(control_plane::run(
        &args.control_plane,
        control_plane::shutdown_signal(),
    ))
}
