//! The end-to-end test harness: unique names, network namespaces and veths
//! that remove themselves, running code inside a namespace, finding the
//! `skep` binary, a `skep server` with the real kubectl, hollow nodes, and
//! waiting for conditions. Everything a test makes is dropped (and so removed) when the
//! test ends, on success and on panic alike.
#![deny(missing_docs)]

pub mod agent;
pub mod cgroup;
pub mod cluster;
pub mod hollow;
pub mod lab;
pub mod netns;
pub mod process;
pub mod python_image;
pub mod registry;
pub mod wait;

use std::sync::atomic::{AtomicU32, Ordering};

/// A name no other test (in this or a concurrent run) uses: `<prefix><pid><n>`,
/// at most 15 bytes so it is also a valid interface name.
#[must_use]
pub fn unique_name(prefix: &str) -> String {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let name = format!("{prefix}{}x{n}", std::process::id());
    assert!(name.len() <= 15, "name {name} too long for an interface");
    name
}

/// True when the tests run as root; privileged tests fail loudly otherwise.
#[must_use]
pub fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// Fails the calling test with a clear message unless it runs as root.
#[macro_export]
macro_rules! require_root {
    () => {
        assert!(
            $crate::is_root(),
            "this end-to-end test needs root (network namespaces, eBPF): run `cargo xtask test` as root"
        );
    };
}
