//! `skep up`: a single-node cluster in one process.

use skep_datapath::preflight;

use anyhow::Context as _;

use crate::{
    HostArgs,
    agent::AgentFlags,
    control_plane::{self, ControlPlaneArgs},
    image,
};

/// Arguments of `skep up`.
#[derive(Debug, clap::Args)]
pub struct UpArgs {
    #[command(flatten)]
    control_plane: ControlPlaneArgs,
    #[command(flatten)]
    agent: AgentFlags,
    #[command(flatten)]
    host: HostArgs,
}

/// Checks the host and runs the control plane with the node agent (state
/// in the same data directory; the demo busybox image imported when
/// missing) until SIGINT or SIGTERM. The agent loads the datapath, with its
/// maps pinned under `<bpffs>/skep/<node>`.
pub fn run(args: &UpArgs) -> anyhow::Result<()> {
    let host = args.host.host();
    preflight::check(&host)?;
    // Before anything starts: a missing shim would fail every pod.
    args.agent.shim()?;
    let node_name = args.agent.node_name();
    let data_dir = args.control_plane.data_dir.clone();
    std::fs::create_dir_all(&data_dir)
        .with_context(|| format!("failed to create data dir {}", data_dir.display()))?;
    image::ensure_demo(&data_dir, image::DEMO_IMAGE)?;
    // Pods reach the API server at this node's address.
    let mut control_plane = args.control_plane.clone();
    if control_plane.advertise_address.is_none() && control_plane.listen.ip().is_unspecified() {
        control_plane.advertise_address = args.agent.node_ip.map(std::net::IpAddr::from);
    }
    control_plane::runtime()?.block_on(control_plane::run(
        &control_plane,
        control_plane::shutdown_signal(),
        |server| {
            let kubeconfig = server
                .node_kubeconfig(&node_name)
                .context("failed to write the node kubeconfig")?;
            let mut cfg = args.agent.config(data_dir.clone(), kubeconfig)?;
            if args.agent.bpf_pin_dir.is_none() {
                cfg.bpf_pin_dir = skep_datapath::default_pin_dir(&host.bpffs, &node_name);
            }
            cfg.bpf_btf = Some(host.btf_path.clone());
            tokio::spawn(async move {
                if let Err(err) = skep_node::agent::run(cfg, control_plane::shutdown_signal()).await
                {
                    tracing::error!(%err, "node agent failed");
                }
            });
            Ok(())
        },
    ))
}
