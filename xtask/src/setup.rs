//! `cargo xtask setup`: make a fresh machine of this kind able to build, run
//! and test skep. Each step checks before it acts, so a second run is silent.

use std::{
    path::Path,
    process::{Command, Stdio},
};

use anyhow::{Context as _, bail};

/// Debian packages the build, `skep up` and the tests need.
pub const PACKAGES: &[(&str, &str)] = &[
    // (package, why)
    ("clang", "bindgen for RocksDB"),
    ("libclang-dev", "bindgen for RocksDB"),
    (
        "protobuf-compiler",
        "protoc for tonic/prost code generation",
    ),
    (
        "libprotobuf-dev",
        "protobuf's well-known .proto files (google/protobuf/*.proto) that etcd-client's build imports",
    ),
    ("iproute2", "ip netns / ip link in the end-to-end tests"),
    (
        "runc",
        "the OCI runtime the node agent runs containers with",
    ),
    ("busybox-static", "test and demo container images"),
    (
        "python3-kubernetes",
        "the official Python client, built into the in-cluster client test's image from the host's files",
    ),
    ("util-linux", "setpriv, to run skep unprivileged in tests"),
    (
        "docker-registry",
        "a local OCI registry for the image and agent tests",
    ),
    (
        "iptables",
        "FORWARD accept/count rules in the routing tests and labs; kube-proxy's and Calico's baselines in the benches",
    ),
    (
        "ipvsadm",
        "kube-proxy's IPVS-mode baseline of `cargo xtask bench datapath`",
    ),
    (
        "ipset",
        "the Calico-style iptables baseline of `cargo xtask bench policy`",
    ),
    (
        "etcd-server",
        "the etcd baseline of `cargo xtask bench store`",
    ),
];

/// The bpf-linker that loads the LLVM inside the nightly toolchain (DESIGN.md).
pub const BPF_LINKER_VERSION: &str = "0.10.4";

/// Installs whatever is missing.
pub fn run() -> anyhow::Result<()> {
    let missing: Vec<&str> = PACKAGES
        .iter()
        .map(|(name, _)| *name)
        .filter(|name| !deb_installed(name))
        .collect();
    if !missing.is_empty() {
        require_root(&format!("install {}", missing.join(" ")))?;
        eprintln!("setup: installing {}", missing.join(" "));
        run_quiet(Command::new("apt-get").args(["update", "-qq"]))?;
        run_quiet(
            Command::new("apt-get")
                .args(["install", "-y", "-qq", "--no-install-recommends"])
                .args(&missing)
                .env("DEBIAN_FRONTEND", "noninteractive"),
        )?;
    }

    if !nightly_has_rust_src() {
        eprintln!("setup: adding rust-src to the nightly toolchain");
        run_quiet(Command::new("rustup").args([
            "component",
            "add",
            "rust-src",
            "--toolchain",
            "nightly",
        ]))?;
    }

    if !bpf_linker_ok() {
        eprintln!("setup: installing bpf-linker {BPF_LINKER_VERSION} (a few minutes, once)");
        run_quiet(Command::new("cargo").args([
            "install",
            "bpf-linker",
            "--version",
            BPF_LINKER_VERSION,
            "--locked",
        ]))?;
    }

    if !bpffs_mounted()? {
        require_root("mount bpffs at /sys/fs/bpf")?;
        eprintln!("setup: mounting bpffs at /sys/fs/bpf");
        run_quiet(Command::new("mount").args(["-t", "bpf", "bpf", "/sys/fs/bpf"]))?;
    }

    if which("kubectl").is_none() {
        eprintln!(
            "setup: warning: kubectl is not on PATH; the control-plane tests drive the real kubectl"
        );
    }
    Ok(())
}

/// True when running as root.
pub fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status").is_ok_and(|s| {
        s.lines()
            .find_map(|l| l.strip_prefix("Uid:"))
            .and_then(|ids| ids.split_whitespace().nth(1))
            == Some("0")
    })
}

fn require_root(what: &str) -> anyhow::Result<()> {
    if is_root() {
        Ok(())
    } else {
        bail!("setup must {what}, which needs root: run it as root")
    }
}

fn deb_installed(package: &str) -> bool {
    Command::new("dpkg-query")
        .args(["-W", "-f=${Status}", package])
        .stderr(Stdio::null())
        .output()
        .is_ok_and(|out| String::from_utf8_lossy(&out.stdout).contains("install ok installed"))
}

fn nightly_has_rust_src() -> bool {
    Command::new("rustup")
        .args(["run", "nightly", "rustc", "--print", "sysroot"])
        .stderr(Stdio::null())
        .output()
        .ok()
        .filter(|out| out.status.success())
        .is_some_and(|out| {
            Path::new(String::from_utf8_lossy(&out.stdout).trim())
                .join("lib/rustlib/src/rust/library/core")
                .is_dir()
        })
}

fn bpf_linker_ok() -> bool {
    Command::new("bpf-linker")
        .arg("--version")
        .output()
        .is_ok_and(|out| String::from_utf8_lossy(&out.stdout).contains(BPF_LINKER_VERSION))
}

fn bpffs_mounted() -> anyhow::Result<bool> {
    let mounts = std::fs::read_to_string("/proc/self/mounts").context("failed to read mounts")?;
    Ok(mounts.lines().any(|line| {
        let mut fields = line.split_whitespace().skip(1);
        fields.next() == Some("/sys/fs/bpf") && fields.next() == Some("bpf")
    }))
}

/// Finds an executable on PATH.
pub fn which(name: &str) -> Option<std::path::PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
}

/// Runs a command, showing its output only if it fails.
pub fn run_quiet(cmd: &mut Command) -> anyhow::Result<()> {
    let out = cmd
        .output()
        .with_context(|| format!("failed to start {cmd:?}"))?;
    if !out.status.success() {
        eprint!("{}", String::from_utf8_lossy(&out.stdout));
        eprint!("{}", String::from_utf8_lossy(&out.stderr));
        bail!("{cmd:?} failed: {}", out.status);
    }
    Ok(())
}
