//! `skep check`: can this machine run a node?

use anyhow::Context as _;
use skep_datapath::{Datapath, DatapathConfig, preflight};

use crate::HostArgs;

/// Arguments of `skep check`.
#[derive(Debug, clap::Args)]
pub struct CheckArgs {
    #[command(flatten)]
    host: HostArgs,
}

/// Runs every host check, then loads the eBPF programs once (without attaching
/// them) to prove the kernel has their hooks.
pub fn run(args: &CheckArgs) -> anyhow::Result<()> {
    let host = args.host.host();
    preflight::check(&host)?;
    println!(
        "ok: privileges, kernel BTF, bpffs at {}",
        host.bpffs.display()
    );
    let mounts = preflight::mounts(&host)?;
    println!(
        "ok: cgroup v2 at {}",
        preflight::cgroup2_mount(&mounts)?.display()
    );

    let pin_dir = host
        .bpffs
        .join(format!("skep-check-{}", std::process::id()));
    let loaded = Datapath::load(&DatapathConfig {
        pin_dir: pin_dir.clone(),
        btf: Some(host.btf_path.clone()),
        // The check loads and unloads at once: keep the LRU maps small.
        lru_entries: Some(1024),
    });
    let removed = Datapath::remove_pins(&pin_dir);
    loaded?;
    removed.context("failed to remove the check's pins")?;
    println!("ok: the kernel loads skep's eBPF programs");
    Ok(())
}
