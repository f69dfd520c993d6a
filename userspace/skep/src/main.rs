//! `skep`: one binary for the control plane, the node agent and the tools to
//! inspect them. Subcommands live in their own modules; this file parses the
//! command line, installs logging and maps errors to exit codes.

mod agent;
mod bpf;
mod check;
mod control_plane;
mod exit;
mod flows;
mod image;
mod kubeconfig;
mod lab;
mod server;
mod up;

use std::path::PathBuf;

use clap::{Parser, Subcommand, ValueEnum};

use crate::exit::ExitCode;

/// skep: an eBPF-native container orchestrator that speaks the Kubernetes API.
///
/// Keep your manifests and kubectl; skep replaces the control plane, kubelet,
/// kube-proxy and the CNI with one binary and eBPF programs.
#[derive(Debug, Parser)]
#[command(name = "skep", version, propagate_version = true)]
struct Cli {
    /// Log format on stderr.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Start a single-node cluster on this machine: control plane and node in
    /// one process, state in --data-dir. Runs until Ctrl-C.
    Up(up::UpArgs),
    /// Run the control plane alone: the Kubernetes API (HTTPS) on its store.
    /// Writes an admin kubeconfig to <data-dir>/kubeconfig.
    Server(server::ServerArgs),
    /// Run the node agent alone (kubelet role) against a control plane,
    /// through the node kubeconfig the control plane wrote for it.
    Agent(agent::AgentArgs),
    /// A multi-node cluster on this machine: nodes are network namespaces
    /// on a bridge, each with its own agent; no Docker, no VMs.
    #[command(subcommand)]
    Lab(lab::LabCommand),
    /// Images in the node's store: import tarballs, list.
    #[command(subcommand)]
    Image(image::ImageCommand),
    /// Check that this machine can run a skep node (root, kernel BTF, bpffs,
    /// cgroup v2, the eBPF hooks) and say what is missing.
    Check(check::CheckArgs),
    /// Inspect the live eBPF datapath: the maps a node has pinned.
    #[command(subcommand)]
    Bpf(bpf::BpfCommand),
    /// The flows a node's network policy judged (denied ones, and the first
    /// packet of allowed ones), from its pinned ring buffer.
    Flows(flows::FlowsArgs),
    /// Kubeconfigs for the cluster's users.
    #[command(subcommand)]
    Kubeconfig(kubeconfig::KubeconfigCommand),
    /// Print skep's version and what its embedded eBPF object contains.
    Version,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// Host paths shared by the commands that touch the kernel.
#[derive(Debug, clap::Args)]
struct HostArgs {
    /// Where bpffs is mounted; maps are pinned under `<bpffs>/skep/<node>`.
    #[arg(long, default_value = "/sys/fs/bpf")]
    bpffs: PathBuf,
    /// Kernel BTF to relocate the eBPF programs against.
    #[arg(long, default_value = "/sys/kernel/btf/vmlinux")]
    btf: PathBuf,
}

impl HostArgs {
    fn host(&self) -> skep_datapath::preflight::Host {
        skep_datapath::preflight::Host {
            btf_path: self.btf.clone(),
            bpffs: self.bpffs.clone(),
            ..skep_datapath::preflight::Host::system()
        }
    }
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    install_tracing(cli.log_format);
    let result = match cli.command {
        Command::Up(args) => up::run(&args),
        Command::Server(args) => server::run(&args),
        Command::Agent(args) => agent::run(&args),
        Command::Lab(cmd) => lab::run(&cmd),
        Command::Image(cmd) => image::run(&cmd),
        Command::Check(args) => check::run(&args),
        Command::Bpf(cmd) => bpf::run(&cmd),
        Command::Flows(args) => flows::run(&args),
        Command::Kubeconfig(cmd) => kubeconfig::run(&cmd),
        Command::Version => {
            print_version();
            Ok(())
        }
    };
    match result {
        Ok(()) => ExitCode::Ok.into(),
        Err(err) => {
            // One readable line: the error and its causes.
            eprintln!("skep: {err:#}");
            ExitCode::of(&err).into()
        }
    }
}

fn install_tracing(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("SKEP_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

fn print_version() {
    println!("skep {}", env!("CARGO_PKG_VERSION"));
    if skep_datapath::EBPF_OBJECT.is_empty() {
        println!("eBPF object: none (built with SKEP_SKIP_EBPF=1)");
    } else {
        println!(
            "eBPF object: {} bytes; programs: {}",
            skep_datapath::EBPF_OBJECT.len(),
            skep_ebpf_common::program::ALL.join(", ")
        );
    }
}
