//! `skep bpf …`: print the live maps a node has pinned, with names.

use std::path::PathBuf;

use anyhow::Context as _;
use skep_datapath::{EndpointMap, ServiceMap, conntrack, endpoint, format_table, metrics, routing};
use skep_ebpf_common::{Direction, Family};
use skep_node::routes::{NetlinkRoutes, ROUTE_PROTOCOL, RouteTable as _};

/// Subcommands of `skep bpf`.
#[derive(Debug, clap::Subcommand)]
pub enum BpfCommand {
    /// Packet and byte counters per interface, direction and protocol.
    Metrics {
        /// Directory the node pinned its maps in.
        #[arg(long, default_value = "/sys/fs/bpf/skep/local")]
        pin_dir: PathBuf,
    },
    /// Pod routing: the local endpoints (pods with their host veth and MACs),
    /// the routing programs attached, what they did, and the node's routes
    /// to other nodes' pod CIDRs. Run it in the node's network namespace.
    Routes {
        /// Directory the node pinned its maps in.
        #[arg(long, default_value = "/sys/fs/bpf/skep/local")]
        pin_dir: PathBuf,
    },
    /// Service load-balancing maps.
    #[command(subcommand)]
    Lb(LbCommand),
    /// The packet-level conntrack (`NodePort`, `externalIPs`).
    #[command(subcommand)]
    Ct(CtCommand),
}

/// Subcommands of `skep bpf ct`.
#[derive(Debug, clap::Subcommand)]
pub enum CtCommand {
    /// Every tracked flow direction: tuple, translated tuple, service, TCP
    /// state and remaining time, like `cilium bpf ct list global`.
    List {
        /// Directory the node pinned its maps in.
        #[arg(long, default_value = "/sys/fs/bpf/skep/local")]
        pin_dir: PathBuf,
    },
}

/// Subcommands of `skep bpf lb`.
#[derive(Debug, clap::Subcommand)]
pub enum LbCommand {
    /// The live service map: name, VIP:port/protocol and backends, like
    /// `cilium bpf lb list`.
    List {
        /// Directory the node pinned its maps in.
        #[arg(long, default_value = "/sys/fs/bpf/skep/local")]
        pin_dir: PathBuf,
    },
}

/// Runs a `skep bpf` subcommand.
pub fn run(cmd: &BpfCommand) -> anyhow::Result<()> {
    match cmd {
        BpfCommand::Metrics { pin_dir } => print_metrics(pin_dir),
        BpfCommand::Lb(LbCommand::List { pin_dir }) => print_services(pin_dir),
        BpfCommand::Routes { pin_dir } => print_routes(pin_dir),
        BpfCommand::Ct(CtCommand::List { pin_dir }) => print_conntrack(pin_dir),
    }
}

fn print_conntrack(pin_dir: &std::path::Path) -> anyhow::Result<()> {
    let entries = conntrack::list_pinned(pin_dir).with_context(|| {
        format!(
            "failed to read the conntrack pinned in {}",
            pin_dir.display()
        )
    })?;
    // Pod names need the API; the node's pinned maps know services only.
    print!(
        "{}",
        conntrack::format_table(&entries, &std::collections::BTreeMap::new())
    );
    Ok(())
}

fn print_services(pin_dir: &std::path::Path) -> anyhow::Result<()> {
    let services = ServiceMap::list_pinned(pin_dir).with_context(|| {
        format!(
            "failed to read the service map pinned in {}",
            pin_dir.display()
        )
    })?;
    print!("{}", format_table(&services));
    Ok(())
}

fn print_routes(pin_dir: &std::path::Path) -> anyhow::Result<()> {
    let endpoints = EndpointMap::list_pinned(pin_dir).with_context(|| {
        format!(
            "failed to read the endpoints map pinned in {}",
            pin_dir.display()
        )
    })?;
    print!("{}", endpoint::format_endpoints(&endpoints, interface_name));
    println!();
    let links = routing::route_links(pin_dir)?;
    println!("{:<24} INTERFACE", "PROGRAM (PINNED LINK)");
    for (hook, interface) in links {
        println!("{:<24} {interface}", hook.program());
    }
    println!();
    let counters = endpoint::read_route_counters(pin_dir).with_context(|| {
        format!(
            "failed to read the routing counters pinned in {}",
            pin_dir.display()
        )
    })?;
    print!("{}", endpoint::format_route_counters(&counters));
    println!();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("failed to start a tokio runtime")?;
    let routes = runtime.block_on(async {
        let table = NetlinkRoutes::connect()?;
        table.list().await
    });
    let routes = routes.context("failed to read the node's routes")?;
    println!(
        "{:<20} {:<16} (routes to other nodes' pods, proto {ROUTE_PROTOCOL})",
        "POD CIDR", "VIA"
    );
    for (cidr, via) in routes {
        println!("{:<20} {via}", cidr.to_string());
    }
    Ok(())
}

fn print_metrics(pin_dir: &std::path::Path) -> anyhow::Result<()> {
    let rows = metrics::read_pinned(pin_dir)
        .with_context(|| format!("failed to read metrics pinned in {}", pin_dir.display()))?;
    println!(
        "{:<12} {:<9} {:<6} {:<9} {:>12} {:>14}",
        "INTERFACE", "DIRECTION", "FAMILY", "PROTOCOL", "PACKETS", "BYTES"
    );
    for row in rows {
        let key = row.key;
        println!(
            "{:<12} {:<9} {:<6} {:<9} {:>12} {:>14}",
            interface_name(key.ifindex),
            Direction::from_u8(key.direction).map_or("?", Direction::name),
            Family::from_u8(key.family).map_or("?", Family::name),
            metrics::protocol_name(key.protocol),
            row.value.packets,
            row.value.bytes
        );
    }
    Ok(())
}

/// The interface's name in this process's network namespace, or its index.
fn interface_name(ifindex: u32) -> String {
    nix::net::if_::if_indextoname(ifindex).map_or_else(
        |_| format!("if{ifindex}"),
        |name| name.to_string_lossy().into_owned(),
    )
}
