//! `cargo xtask bench <name>`: each benchmark measures skep and its baseline
//! side by side in one run and prints the table (ratios, not timed asserts).

use std::process::Command;

use anyhow::bail;

use crate::{
    build::{PROFILE, cargo},
    test::{PACKAGES, status},
};

/// The benchmarks, with what each compares.
pub const BENCHES: &[(&str, &str)] = &[
    (
        "store",
        "small writes and watch latency: skep store direct, skep HTTPS API, etcd",
    ),
    (
        "authz",
        "API GET/create p50/p99 and req/s: admin without RBAC vs a user cert with 1 and with 10,000 RoleBindings vs a ServiceAccount token",
    ),
    (
        "pod-startup",
        "create -> Running p50/p99 for 100 pods on one node, against `runc run` of the same bundle (root)",
    ),
    (
        "datapath",
        "3-node lab, 100/1,000/10,000 services: conn/s, p50/p99, programming time; floor, skep, kube-proxy iptables and IPVS (root; -- --quick for N=10)",
    ),
    (
        "policy",
        "pod to pod with no policy, 1,000 policies on other pods, 10,000 ipBlocks: conn/s, p50/p99; skep eBPF vs Calico-style iptables/ipset (root; -- --quick for small sizes)",
    ),
    (
        "policy-propagation",
        "3-node lab: NetworkPolicy create/update/delete, pod and namespace relabels -> every node's maps and new connections, p50/p90/max vs the 1 s aim (root; -- --quick for 3 cycles)",
    ),
    (
        "scheduler",
        "10,000 pods onto 5,000 nodes: pods/s and p99, against kube-scheduler's 680 pods/s",
    ),
];

/// Runs benchmark `name` with `args` passed through.
pub fn run(name: &str, args: &[String]) -> anyhow::Result<()> {
    match name {
        // A harness-less test target of the tests crate: same build as the tests.
        "store" | "policy" | "authz" => {
            status(
                cargo()
                    .args(["test", "--profile", PROFILE])
                    .args(PACKAGES)
                    .args(["--test", "bench", "--no-run"]),
            )?;
            status(
                cargo()
                    .args(["test", "--profile", PROFILE])
                    .args(PACKAGES)
                    .args(["--test", "bench", "--", name])
                    .args(args),
            )
        }
        // Starts `skep server` and `skep agent` (a lab for datapath): build
        // the skep binary next to the bench binary, as the e2e step does.
        "pod-startup" | "datapath" | "policy-propagation" => {
            status(
                cargo()
                    .args(["test", "--profile", PROFILE])
                    .args(PACKAGES)
                    .args(["--test", "bench", "--test", "cli", "--no-run"]),
            )?;
            crate::test::build_shim()?;
            status(
                cargo()
                    .args(["test", "--profile", PROFILE])
                    .args(PACKAGES)
                    .args(["--test", "bench", "--", name])
                    .args(args),
            )
        }
        "scheduler" => {
            status(
                cargo()
                    .args(["build", "--profile", PROFILE])
                    .args(PACKAGES)
                    .args(["--example", "scheduler_bench"]),
            )?;
            let binary = crate::build::target_dir()
                .join(PROFILE)
                .join("examples")
                .join("scheduler_bench");
            let mut cmd = Command::new(binary);
            if args.is_empty() {
                cmd.args(["--nodes", "5000", "--pods", "10000"]);
            }
            status(cmd.args(args))
        }
        other => {
            let known: Vec<&str> = BENCHES.iter().map(|(n, _)| *n).collect();
            bail!("unknown benchmark {other:?}; known: {}", known.join(", "))
        }
    }
}
