//! Network namespaces and links for tests, removed on drop.

use std::{fs::File, path::PathBuf, thread};

use anyhow::{Context as _, bail};
use nix::sched::{CloneFlags, setns};

use crate::process::run;

/// A named network namespace (`ip netns add`), deleted on drop with everything
/// in it (links, addresses, routes). It has no default route: traffic stays
/// between namespaces the test made.
#[derive(Debug)]
pub struct NetNs {
    name: String,
}

impl NetNs {
    /// Creates a namespace with a unique name and loopback up.
    pub fn new(prefix: &str) -> anyhow::Result<Self> {
        let ns = Self {
            name: crate::unique_name(prefix),
        };
        run("ip", &["netns", "add", &ns.name])?;
        ns.ip(&["link", "set", "lo", "up"])?;
        Ok(ns)
    }

    /// The namespace's name.
    #[must_use]
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Runs `ip -n <ns> ARGS…`.
    pub fn ip(&self, args: &[&str]) -> anyhow::Result<String> {
        let mut full = vec!["-n", &self.name];
        full.extend_from_slice(args);
        run("ip", &full)
    }

    /// Runs `f` on a thread that has entered this namespace, and returns its
    /// result. Only that thread switches namespace; the test's own does not.
    pub fn run_in<T, F>(&self, f: F) -> anyhow::Result<T>
    where
        T: Send + 'static,
        F: FnOnce() -> anyhow::Result<T> + Send + 'static,
    {
        join(self.spawn_in(f))
    }

    /// Like [`NetNs::run_in`], but returns at once; [`join`] waits for the result.
    pub fn spawn_in<T, F>(&self, f: F) -> thread::JoinHandle<anyhow::Result<T>>
    where
        T: Send + 'static,
        F: FnOnce() -> anyhow::Result<T> + Send + 'static,
    {
        let path = PathBuf::from("/run/netns").join(&self.name);
        thread::spawn(move || -> anyhow::Result<T> {
            let ns =
                File::open(&path).with_context(|| format!("failed to open {}", path.display()))?;
            setns(&ns, CloneFlags::CLONE_NEWNET).context("failed to enter the namespace")?;
            f()
        })
    }

    /// The index of `interface` inside this namespace.
    pub fn ifindex(&self, interface: &str) -> anyhow::Result<u32> {
        let out = self.ip(&["-j", "link", "show", "dev", interface])?;
        let links: serde_json::Value = serde_json::from_str(&out).context("ip -j output")?;
        match links[0]["ifindex"].as_u64().map(u32::try_from) {
            Some(Ok(index)) => Ok(index),
            _ => bail!("no ifindex for {interface} in {out}"),
        }
    }
}

impl Drop for NetNs {
    fn drop(&mut self) {
        if let Err(err) = run("ip", &["netns", "del", &self.name]) {
            eprintln!("warning: failed to delete netns {}: {err:#}", self.name);
        }
    }
}

/// Waits for a thread from [`NetNs::spawn_in`]; a panic in it panics here.
pub fn join<T>(handle: thread::JoinHandle<anyhow::Result<T>>) -> anyhow::Result<T> {
    match handle.join() {
        Ok(result) => result,
        Err(panic) => std::panic::resume_unwind(panic),
    }
}

/// Joins two namespaces with a veth pair, `a_if` in `a` and `b_if` in `b`, both
/// up, addressed `a_addr` / `b_addr` (CIDR notation). Created inside the
/// namespaces, so deleting either namespace removes the pair.
pub fn veth_pair(
    a: &NetNs,
    a_if: &str,
    a_addr: &str,
    b: &NetNs,
    b_if: &str,
    b_addr: &str,
) -> anyhow::Result<()> {
    a.ip(&[
        "link",
        "add",
        a_if,
        "type",
        "veth",
        "peer",
        "name",
        b_if,
        "netns",
        b.name(),
    ])?;
    a.ip(&["addr", "add", a_addr, "dev", a_if])?;
    b.ip(&["addr", "add", b_addr, "dev", b_if])?;
    a.ip(&["link", "set", a_if, "up"])?;
    b.ip(&["link", "set", b_if, "up"])?;
    Ok(())
}
