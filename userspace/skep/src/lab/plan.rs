//! What a lab is made of: every name and address derived from its data
//! directory, written to `<data-dir>/lab.json` before anything is created,
//! so `skep lab down` finds every part even after `lab up` crashed halfway.

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use serde::{Deserialize, Serialize};

/// The state file's name inside the data directory.
pub const STATE_FILE: &str = "lab.json";

/// The port the lab's API server listens on, at the bridge address.
pub const API_PORT: u16 = 6443;

/// A process the lab started, identified by pid and kernel start time (so
/// a recycled pid is never mistaken for it).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Proc {
    /// The process id.
    pub pid: i32,
    /// Field 22 of `/proc/<pid>/stat`: clock ticks after boot.
    pub start_ticks: u64,
}

/// One lab node: a network namespace on the bridge with an agent inside.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LabNode {
    /// Node name (also the namespace's name under `/run/netns`).
    pub name: String,
    /// The namespace file (`/run/netns/<name>`: `ip netns exec <name>` works).
    pub netns: PathBuf,
    /// Underlay address (the node's `InternalIP`), on `eth0` inside.
    pub ip: Ipv4Addr,
    /// The host end of the node's veth, a port of the bridge.
    pub host_veth: String,
    /// The agent's state directory.
    pub data_dir: PathBuf,
    /// The node's cgroup v2 directory (`<cgroup2>/skep/<node>`); the agent
    /// runs in its `agent` child, pods below it.
    pub cgroup: PathBuf,
    /// The node's bpffs directory (`<bpffs>/skep/<node>`).
    pub pin_dir: PathBuf,
    /// The running agent.
    pub agent: Option<Proc>,
}

/// A whole lab, as `lab.json` holds it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LabState {
    /// The data directory (absolute).
    pub data_dir: PathBuf,
    /// The bridge in the host namespace (the underlay).
    pub bridge: String,
    /// The bridge's address: the host's side of the underlay, where the
    /// API server listens.
    pub host_ip: Ipv4Addr,
    /// The underlay's prefix length.
    pub prefix: u8,
    /// Where cgroup hierarchies are mounted (`/sys/fs/cgroup`).
    pub cgroup_root: PathBuf,
    /// The running `skep server`.
    pub server: Option<Proc>,
    /// The nodes.
    pub nodes: Vec<LabNode>,
}

/// 64-bit FNV-1a, stable across Rust releases.
fn fnv1a(data: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in data {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

/// The lab's base name: `skl` + 5 hex digits of the data directory's hash.
/// Short enough that `<base>h<i>` is a valid interface name.
pub fn base_name(data_dir: &Path) -> String {
    let hash = fnv1a(data_dir.as_os_str().as_encoded_bytes());
    format!("skl{:05x}", hash & 0xf_ffff)
}

/// The third octet of the first free `10.99.X.0/24`, starting from a point
/// the hash of `base` picks, skipping those that overlap a network of the
/// host's addresses (`taken`: address and prefix length), so labs in
/// different directories get different underlays.
pub fn pick_underlay(base: &str, taken: &[(Ipv4Addr, u8)]) -> Option<u8> {
    let start = fnv1a(base.as_bytes()) % 250;
    (0..250u64)
        .filter_map(|k| u8::try_from((start + k) % 250 + 1).ok())
        .find(|x| {
            let net = u32::from(Ipv4Addr::new(10, 99, *x, 0));
            !taken.iter().any(|(addr, prefix)| {
                let p = (*prefix).min(24);
                let mask = u32::MAX.checked_shl(32 - u32::from(p)).unwrap_or(0);
                u32::from(*addr) & mask == net & mask
            })
        })
}

/// Every part of a lab of `count` nodes in `data_dir` (absolute), on
/// `10.99.<octet>.0/24`: host `.1`, node `i` at `.10+i`.
pub fn plan(
    data_dir: &Path,
    count: u8,
    octet: u8,
    cgroup_root: &Path,
    cgroup2: &Path,
    bpffs: &Path,
) -> LabState {
    let base = base_name(data_dir);
    let nodes = (1..=count)
        .map(|i| {
            let name = format!("{base}-{i}");
            LabNode {
                netns: Path::new("/run/netns").join(&name),
                ip: Ipv4Addr::new(10, 99, octet, 10 + i),
                host_veth: format!("{base}h{i}"),
                data_dir: data_dir.join("nodes").join(&name),
                cgroup: cgroup2.join("skep").join(&name),
                pin_dir: skep_datapath::default_pin_dir(bpffs, &name),
                agent: None,
                name,
            }
        })
        .collect();
    LabState {
        data_dir: data_dir.to_owned(),
        bridge: base,
        host_ip: Ipv4Addr::new(10, 99, octet, 1),
        prefix: 24,
        cgroup_root: cgroup_root.to_owned(),
        server: None,
        nodes,
    }
}

impl LabState {
    /// `<data-dir>/lab.json`.
    pub fn path(data_dir: &Path) -> PathBuf {
        data_dir.join(STATE_FILE)
    }

    /// Reads the state of the lab in `data_dir`; `None` when there is none.
    pub fn load(data_dir: &Path) -> anyhow::Result<Option<Self>> {
        let path = Self::path(data_dir);
        let text = match std::fs::read_to_string(&path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e).with_context(|| format!("failed to read {}", path.display())),
        };
        serde_json::from_str(&text)
            .map(Some)
            .with_context(|| format!("{} is not a lab state file", path.display()))
    }

    /// Writes the state atomically (a crash leaves the old or the new file).
    pub fn save(&self) -> anyhow::Result<()> {
        let path = Self::path(&self.data_dir);
        let tmp = path.with_extension("json.tmp");
        let text = serde_json::to_vec_pretty(self).context("failed to encode the lab state")?;
        std::fs::write(&tmp, text).with_context(|| format!("failed to write {}", tmp.display()))?;
        std::fs::rename(&tmp, &path).with_context(|| format!("failed to write {}", path.display()))
    }

    /// The admin kubeconfig (`skep server` writes it).
    pub fn kubeconfig(&self) -> PathBuf {
        self.data_dir.join("kubeconfig")
    }

    /// The kubeconfig node `name` joins with (`skep server --node-kubeconfig`).
    pub fn node_kubeconfig(&self, name: &str) -> PathBuf {
        self.data_dir
            .join("nodes")
            .join(format!("{name}.kubeconfig"))
    }

    /// Where the lab's processes log.
    pub fn log_dir(&self) -> PathBuf {
        self.data_dir.join("logs")
    }
}

#[cfg(test)]
mod tests {
    use anyhow::Context as _;

    use super::*;

    #[test]
    fn names_fit_interfaces_and_addresses_do_not_collide() {
        let dir = Path::new("/var/tmp/some/lab");
        let state = plan(
            dir,
            3,
            42,
            Path::new("/sys/fs/cgroup"),
            Path::new("/sys/fs/cgroup/unified"),
            Path::new("/sys/fs/bpf"),
        );
        assert_eq!(state.bridge, base_name(dir));
        assert_eq!(state.bridge.len(), 8);
        assert_ne!(base_name(dir), base_name(Path::new("/var/tmp/other")));
        assert_eq!(state.host_ip, Ipv4Addr::new(10, 99, 42, 1));
        let node = &state.nodes[2];
        assert_eq!(node.name, format!("{}-3", state.bridge));
        assert_eq!(node.ip, Ipv4Addr::new(10, 99, 42, 13));
        assert!(node.host_veth.len() <= 15);
        assert!(
            !node.host_veth.starts_with("skep"),
            "pod veths start with skep"
        );
        assert_eq!(
            node.cgroup,
            Path::new("/sys/fs/cgroup/unified/skep").join(&node.name)
        );
        assert_eq!(node.data_dir, dir.join("nodes").join(&node.name));
        assert_eq!(
            state.node_kubeconfig(&node.name),
            dir.join(format!("nodes/{}.kubeconfig", node.name))
        );
    }

    #[test]
    fn the_underlay_avoids_networks_in_use() -> anyhow::Result<()> {
        let first = pick_underlay("sklabcde", &[]).context("a free /24")?;
        let taken = [(Ipv4Addr::new(10, 99, first, 1), 24)];
        let second = pick_underlay("sklabcde", &taken).context("another /24")?;
        assert_ne!(first, second);
        // A covering route over all of 10.99/16 leaves nothing.
        assert_eq!(
            pick_underlay("sklabcde", &[(Ipv4Addr::new(10, 99, 0, 0), 16)]),
            None
        );
        Ok(())
    }

    #[test]
    fn state_round_trips() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        assert_eq!(LabState::load(dir.path())?, None);
        let mut state = plan(
            dir.path(),
            2,
            7,
            Path::new("/sys/fs/cgroup"),
            Path::new("/sys/fs/cgroup"),
            Path::new("/sys/fs/bpf"),
        );
        state.server = Some(Proc {
            pid: 10,
            start_ticks: 99,
        });
        state.save()?;
        assert_eq!(LabState::load(dir.path())?, Some(state));
        Ok(())
    }
}
