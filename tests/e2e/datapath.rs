//! The eBPF datapath on real interfaces with real packets.

use std::{
    net::{SocketAddr, UdpSocket},
    path::{Path, PathBuf},
    sync::mpsc,
    time::Duration,
};

use anyhow::Context as _;
use skep_datapath::{Datapath, DatapathConfig, TcHook, metrics};
use skep_e2e::{
    netns::{NetNs, join, veth_pair},
    process, require_root, unique_name,
};
use skep_ebpf_common::{Direction, Family, MetricsKey};

/// A pin directory on bpffs, removed with its pins when the test ends.
struct PinDir(PathBuf);

impl PinDir {
    fn new() -> Self {
        Self(Path::new("/sys/fs/bpf").join(unique_name("e2e")))
    }
}

impl Drop for PinDir {
    fn drop(&mut self) {
        if let Err(err) = Datapath::remove_pins(&self.0) {
            eprintln!(
                "warning: failed to remove pins in {}: {err}",
                self.0.display()
            );
        }
    }
}

const DATAGRAMS: u64 = 25;
const PAYLOAD: usize = 100;
/// Ethernet (14) + IPv4 (20) + UDP (8) headers around each payload.
const FRAME: u64 = 14 + 20 + 8 + PAYLOAD as u64;

/// Two namespaces joined by a veth; the TC ingress program on one end counts
/// the UDP datagrams the other end sends; the counts are read back from the
/// pinned map, both in-process and through `skep bpf metrics`.
#[test]
fn tc_program_counts_packets_crossing_a_veth() -> anyhow::Result<()> {
    require_root!();
    let client = NetNs::new("skc")?;
    let server = NetNs::new("sks")?;
    let (client_if, server_if) = (unique_name("vc"), unique_name("vs"));
    veth_pair(
        &client,
        &client_if,
        "10.199.0.1/30",
        &server,
        &server_if,
        "10.199.0.2/30",
    )?;
    let pins = PinDir::new();

    // Load and attach inside the server namespace (the interface lives there).
    let config = DatapathConfig {
        pin_dir: pins.0.clone(),
        btf: None,
        lru_entries: Some(1024),
    };
    let attach_if = server_if.clone();
    let datapath = server.run_in(move || {
        let mut datapath = Datapath::load(&config)?;
        datapath.attach_tc(&attach_if, TcHook::MetricsIngress)?;
        Ok(datapath)
    })?;

    let server_addr: SocketAddr = "10.199.0.2:9000".parse()?;
    assert_eq!(
        send_udp(&client, &server, server_addr, DATAGRAMS)?,
        DATAGRAMS
    );

    // Read the pinned map, as another process would.
    let ifindex = server.ifindex(&server_if)?;
    let key = MetricsKey {
        ifindex,
        direction: Direction::Ingress as u8,
        family: Family::Ipv4 as u8,
        protocol: 17,
        pad: 0,
    };
    let rows = metrics::read_pinned(&pins.0)?;
    let udp = rows
        .iter()
        .find(|row| row.key == key)
        .with_context(|| format!("no UDP ingress counter for ifindex {ifindex} in {rows:?}"))?;
    assert_eq!(udp.value.packets, DATAGRAMS, "{rows:?}");
    assert_eq!(udp.value.bytes, DATAGRAMS * FRAME, "{rows:?}");

    // The CLI reads the same pin and names the interface (run inside the
    // namespace so the interface name resolves).
    let table = skep_in(
        &server,
        &["bpf", "metrics", "--pin-dir", &pins.0.to_string_lossy()],
    )?;
    let line = table
        .lines()
        .find(|l| l.contains("udp"))
        .with_context(|| format!("no udp row in:\n{table}"))?;
    let fields: Vec<&str> = line.split_whitespace().collect();
    assert_eq!(
        fields,
        [
            server_if.as_str(),
            "ingress",
            "ipv4",
            "udp",
            &DATAGRAMS.to_string(),
            &(DATAGRAMS * FRAME).to_string()
        ],
        "{table}"
    );

    // Dropping the datapath detaches the program: later packets are not counted.
    drop(datapath);
    assert_eq!(send_udp(&client, &server, server_addr, 1)?, 1);
    let after = metrics::read_pinned(&pins.0)?;
    let udp_after = after
        .iter()
        .find(|row| row.key == key)
        .map(|r| r.value.packets);
    assert_eq!(
        udp_after,
        Some(DATAGRAMS),
        "counted after detach: {after:?}"
    );
    Ok(())
}

/// Sends `count` datagrams from `client` to `to` in `server`, where a socket
/// receives them (proof they crossed); returns how many arrived.
fn send_udp(client: &NetNs, server: &NetNs, to: SocketAddr, count: u64) -> anyhow::Result<u64> {
    let (bound_tx, bound_rx) = mpsc::channel();
    let receiver = server.spawn_in(move || {
        let socket = UdpSocket::bind(to)?;
        socket.set_read_timeout(Some(Duration::from_secs(5)))?;
        bound_tx.send(())?;
        let mut buf = [0u8; 2048];
        let mut received = 0u64;
        while received < count {
            let (len, _) = socket
                .recv_from(&mut buf)
                .context("datagram did not arrive")?;
            anyhow::ensure!(len == PAYLOAD, "datagram of {len} bytes");
            received += 1;
        }
        Ok(received)
    });
    bound_rx.recv_timeout(Duration::from_secs(5))?;
    client.run_in(move || {
        let socket = UdpSocket::bind("0.0.0.0:0")?;
        for i in 0..count {
            #[expect(
                clippy::cast_possible_truncation,
                reason = "a fill byte: wrapping is fine"
            )]
            socket.send_to(&[i as u8; PAYLOAD], to)?;
        }
        Ok(())
    })?;
    join(receiver)
}

/// Runs `skep ARGS…` inside `ns` and returns its stdout; fails if it fails.
fn skep_in(ns: &NetNs, args: &[&str]) -> anyhow::Result<String> {
    let skep = process::skep_binary()?;
    let args: Vec<String> = args.iter().map(|a| (*a).to_owned()).collect();
    ns.run_in(move || {
        let out = std::process::Command::new(skep).args(&args).output()?;
        anyhow::ensure!(out.status.success(), "skep {args:?} failed: {out:?}");
        Ok(String::from_utf8(out.stdout)?)
    })
}
