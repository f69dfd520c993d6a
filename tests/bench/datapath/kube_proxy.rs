//! kube-proxy's two classic modes, reproduced in the client node's network
//! namespace for the same services and backends, as baselines.
//!
//! iptables mode: the nat table kube-proxy's iptables proxier writes, loaded
//! with one `iptables-restore` (this host's, the `nf_tables` backend, as on
//! current distributions): `PREROUTING`/`OUTPUT` → `KUBE-SERVICES` → one
//! `KUBE-SVC-<hash>` per service port (with the `KUBE-MARK-MASQ` rule for
//! sources outside the cluster CIDR) → `-m statistic --mode random
//! --probability 1/(n-i)` jumps to one `KUBE-SEP-<hash>` per endpoint doing
//! the DNAT; `KUBE-POSTROUTING` masquerades marked traffic. The filter
//! table's per-service chains are empty when every service has endpoints,
//! as here, and are left out. Chain names are 16 characters of a hash like
//! kube-proxy's (which uses base32 of SHA-256; the names' only job is to be
//! unique).
//!
//! IPVS mode: every VIP an address of a `kube-ipvs0` dummy device, one
//! virtual server per service with the `rr` scheduler and masquerading real
//! servers, loaded with `ipvsadm-restore`, plus kube-proxy's masquerade
//! rules (kube-proxy matches the VIPs with an ipset; here one `-d` CIDR
//! rule, the same O(1) cost, since the ipset tool is not installed).
//!
//! Their VIPs are outside skep's service CIDR so skep's hooks never match
//! them.

use std::{
    fmt::Write as _,
    fs::File,
    io::Write as _,
    net::{Ipv4Addr, SocketAddrV4},
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};
use nix::sched::{CloneFlags, setns};

/// The iptables mode's VIPs: `10.200.0.0/16`.
pub const IPTABLES_VIPS: Ipv4Addr = Ipv4Addr::new(10, 200, 0, 0);
/// The IPVS mode's VIPs: `10.201.0.0/16`.
pub const IPVS_VIPS: Ipv4Addr = Ipv4Addr::new(10, 201, 0, 0);
/// The pods' addresses (`--cluster-cidr`): traffic from elsewhere is masqueraded.
const CLUSTER_CIDR: &str = "10.244.0.0/16";
/// kube-proxy's masquerade mark.
const MASQ_MARK: &str = "0x4000";

/// The `index`th (0-based) VIP of the /16 at `base`, skipping `.0`.
#[must_use]
pub fn vip(base: Ipv4Addr, index: usize) -> Ipv4Addr {
    let n = u32::try_from(index + 1).unwrap_or(u32::MAX) & 0xffff;
    Ipv4Addr::from(u32::from(base) | n)
}

/// A kube-proxy-style chain name suffix: 16 characters, unique per `what`.
fn chain_hash(what: &str) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in what.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    format!("{h:016X}")
}

/// The nat table's common part: the jumps from the base chains and the
/// masquerade chains.
fn nat_prologue(rules: &mut String, chains: &mut String) {
    for chain in [
        "KUBE-SERVICES",
        "KUBE-POSTROUTING",
        "KUBE-MARK-MASQ",
        "KUBE-NODEPORTS",
    ] {
        let _ = writeln!(chains, ":{chain} - [0:0]");
    }
    let _ = write!(
        rules,
        "-A PREROUTING -m comment --comment \"kubernetes service portals\" -j KUBE-SERVICES\n\
         -A OUTPUT -m comment --comment \"kubernetes service portals\" -j KUBE-SERVICES\n\
         -A POSTROUTING -m comment --comment \"kubernetes postrouting rules\" -j KUBE-POSTROUTING\n\
         -A KUBE-MARK-MASQ -j MARK --or-mark {MASQ_MARK}\n\
         -A KUBE-POSTROUTING -m mark ! --mark {MASQ_MARK}/{MASQ_MARK} -j RETURN\n\
         -A KUBE-POSTROUTING -j MARK --xor-mark {MASQ_MARK}\n\
         -A KUBE-POSTROUTING -m comment --comment \"kubernetes service traffic requiring SNAT\" -j MASQUERADE --random-fully\n"
    );
}

/// The iptables-restore input for `count` services on `port`, each with
/// every backend of `backends`, as kube-proxy's iptables mode writes it.
#[must_use]
pub fn iptables_rules(count: usize, port: u16, backends: &[SocketAddrV4]) -> String {
    let (mut chains, mut rules) = (String::new(), String::new());
    nat_prologue(&mut rules, &mut chains);
    for s in 0..count {
        let vip = vip(IPTABLES_VIPS, s);
        let name = format!("bench/s{count}-{s}:tcp");
        let svc = format!("KUBE-SVC-{}", chain_hash(&format!("{name}tcp")));
        let _ = writeln!(chains, ":{svc} - [0:0]");
        let _ = writeln!(
            rules,
            "-A KUBE-SERVICES -m comment --comment \"{name} cluster IP\" -m tcp -p tcp -d {vip}/32 --dport {port} -j {svc}"
        );
        let _ = writeln!(
            rules,
            "-A {svc} -m comment --comment \"{name} cluster IP\" -m tcp -p tcp -d {vip}/32 --dport {port} ! -s {CLUSTER_CIDR} -j KUBE-MARK-MASQ"
        );
        let n = backends.len();
        let mut seps = String::new();
        for (i, backend) in backends.iter().enumerate() {
            let sep = format!("KUBE-SEP-{}", chain_hash(&format!("{name}tcp{backend}")));
            let _ = writeln!(chains, ":{sep} - [0:0]");
            if i + 1 < n {
                #[expect(clippy::cast_precision_loss, reason = "a handful of endpoints")]
                let probability = 1.0 / (n - i) as f64;
                let _ = writeln!(
                    rules,
                    "-A {svc} -m comment --comment \"{name} -> {backend}\" -m statistic --mode random --probability {probability:.10} -j {sep}"
                );
            } else {
                let _ = writeln!(
                    rules,
                    "-A {svc} -m comment --comment \"{name} -> {backend}\" -j {sep}"
                );
            }
            let _ = write!(
                seps,
                "-A {sep} -m comment --comment {name} -s {}/32 -j KUBE-MARK-MASQ\n\
                 -A {sep} -m comment --comment {name} -m tcp -p tcp -j DNAT --to-destination {backend}\n",
                backend.ip()
            );
        }
        rules.push_str(&seps);
    }
    let _ = writeln!(
        rules,
        "-A KUBE-SERVICES -m comment --comment \"kubernetes service nodeports; NOTE: this must be the last rule in this chain\" -m addrtype --dst-type LOCAL -j KUBE-NODEPORTS"
    );
    format!("*nat\n{chains}{rules}COMMIT\n")
}

/// The nat table of kube-proxy's IPVS mode: masquerade what goes to a VIP
/// from outside the cluster CIDR.
#[must_use]
pub fn ipvs_iptables_rules() -> String {
    let (mut chains, mut rules) = (String::new(), String::new());
    nat_prologue(&mut rules, &mut chains);
    let _ = writeln!(
        rules,
        "-A KUBE-SERVICES ! -s {CLUSTER_CIDR} -m comment --comment \"Kubernetes service cluster ip + port for masquerade purpose\" -d {IPVS_VIPS}/16 -j KUBE-MARK-MASQ"
    );
    format!("*nat\n{chains}{rules}COMMIT\n")
}

/// The ipvsadm-restore input for `count` services on `port`.
#[must_use]
pub fn ipvs_rules(count: usize, port: u16, backends: &[SocketAddrV4]) -> String {
    let mut out = String::new();
    for s in 0..count {
        let vip = vip(IPVS_VIPS, s);
        let _ = writeln!(out, "-A -t {vip}:{port} -s rr");
        for b in backends {
            let _ = writeln!(out, "-a -t {vip}:{port} -r {b} -m -w 1");
        }
    }
    out
}

/// The `ip -batch` input giving `kube-ipvs0` the first `count` IPVS VIPs.
#[must_use]
pub fn ipvs_addresses(count: usize) -> String {
    let mut out = String::new();
    for s in 0..count {
        let _ = writeln!(out, "addr add {}/32 dev kube-ipvs0", vip(IPVS_VIPS, s));
    }
    out
}

/// Runs `program args` with `input` on stdin inside the namespace at
/// `netns` (forked from a thread that entered it) and returns how long the
/// command took.
pub fn run_in(netns: &Path, program: &str, args: &[&str], input: &str) -> anyhow::Result<Duration> {
    let netns: PathBuf = netns.to_owned();
    let program = program.to_owned();
    let args: Vec<String> = args.iter().map(|a| (*a).to_owned()).collect();
    let input = input.to_owned();
    std::thread::spawn(move || -> anyhow::Result<Duration> {
        let ns = File::open(&netns).with_context(|| format!("open {}", netns.display()))?;
        setns(&ns, CloneFlags::CLONE_NEWNET).context("enter the node's namespace")?;
        let started = Instant::now();
        let mut child = Command::new(&program)
            .args(&args)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| format!("failed to start {program}"))?;
        child
            .stdin
            .take()
            .context("no stdin")?
            .write_all(input.as_bytes())?;
        let out = child.wait_with_output()?;
        let took = started.elapsed();
        if !out.status.success() {
            bail!(
                "{program} {} failed ({}): {}",
                args.join(" "),
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(took)
    })
    .join()
    .map_err(|_| anyhow::anyhow!("{} thread panicked", "run_in"))?
}
