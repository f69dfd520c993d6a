//! Kubernetes NetworkPolicy on the 3-node lab, in the structure of
//! upstream's `test/e2e/network/netpol` suite: namespaces x, y, z with pods
//! a, b, c (each serving 80 and 81 over TCP and UDP, one container per port
//! and protocol with named ports, and a Service per pod), policies applied
//! with the real kubectl, and after each change all 81 (from, to) pairs
//! probed by pod IP and by Service IP and compared with the expected truth
//! table; a mismatch is retried until a deadline, then both matrices are
//! printed in upstream's layout and the scenario fails.
//!
//! One lab serves every scenario (setup is the slow part); each scenario
//! removes its policies and label changes before the next one starts, and
//! the lab is torn down on success and failure alike.

mod model;
mod probe;
mod reach;
mod scenarios;

use std::cell::{Cell, RefCell};
use std::fmt::Write as _;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use skep_e2e::lab::{self, Lab};
use skep_e2e::require_root;

use model::{ModelPod, NAMESPACES, Proto};
use probe::Via;
use reach::Reachability;

/// How long a policy, label or deletion may take to show in the probes
/// before a step fails (upstream's target is 1 s; the lab's 2 shared cores
/// get slack, and the printed time says how long it really took).
const SETTLE: Duration = Duration::from_secs(10);
/// The pause between probe rounds of one step.
const ROUND_PAUSE: Duration = Duration::from_millis(250);
/// How long the pods may take to answer at all, at the start.
const STARTUP: Duration = Duration::from_mins(2);

/// The running model and what a scenario changed, to be undone.
struct Suite {
    lab: Lab,
    pods: Vec<ModelPod>,
    keys: Vec<String>,
    sctp: bool,
    /// kubectl argument lists that undo the running scenario's label changes.
    undo: RefCell<Vec<Vec<String>>>,
    /// Steps that probed (SCTP steps are skipped on this kernel): a scenario
    /// that probed nothing is reported as skipped, not passed.
    probed: Cell<usize>,
}

impl Suite {
    /// A fresh all-`default` expectation over the nine pods.
    fn reach(&self, default: bool) -> Reachability {
        Reachability::new(&self.keys, default)
    }

    /// The IP of pod `ns/pod`.
    fn ip(&self, key: &str) -> anyhow::Result<std::net::Ipv4Addr> {
        self.pods
            .iter()
            .find(|p| p.key == key)
            .map(|p| p.ip)
            .with_context(|| format!("no pod {key}"))
    }

    /// Creates (or, with `replace`, replaces) the NetworkPolicy `name` in
    /// `ns` with `spec` (YAML of the spec's body, indented by two spaces).
    fn policy(&self, ns: &str, name: &str, spec: &str, replace: bool) -> anyhow::Result<()> {
        let yaml = format!(
            "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {{name: {name}, namespace: '{ns}'}}\nspec:\n{spec}"
        );
        let verb = if replace { "replace" } else { "create" };
        eprintln!("      {verb} networkpolicy {ns}/{name}");
        self.lab
            .kubectl_ok_with(&[verb, "-f", "-"], &yaml)
            .with_context(|| format!("{verb} {ns}/{name}:\n{yaml}"))?;
        Ok(())
    }

    /// Creates a NetworkPolicy.
    fn create(&self, ns: &str, name: &str, spec: &str) -> anyhow::Result<()> {
        self.policy(ns, name, spec, false)
    }

    /// Replaces a NetworkPolicy (upstream's `UpdatePolicy`).
    fn update(&self, ns: &str, name: &str, spec: &str) -> anyhow::Result<()> {
        self.policy(ns, name, spec, true)
    }

    /// Sets `label` (`k=v`) on pod `ns/pod`, undone after the scenario.
    fn label_pod(&self, ns: &str, pod: &str, label: &str) -> anyhow::Result<()> {
        self.label(&["pod", pod, "-n", ns], label)
    }

    /// Sets `label` (`k=v`) on namespace `ns`, undone after the scenario.
    fn label_ns(&self, ns: &str, label: &str) -> anyhow::Result<()> {
        self.label(&["namespace", ns], label)
    }

    fn label(&self, target: &[&str], label: &str) -> anyhow::Result<()> {
        let key = label.split_once('=').map_or(label, |(k, _)| k);
        let mut undo: Vec<String> = ["label".to_owned()]
            .into_iter()
            .chain(target.iter().map(|s| (*s).to_owned()))
            .collect();
        undo.push(format!("{key}-"));
        self.undo.borrow_mut().push(undo);
        let mut args = vec!["label"];
        args.extend_from_slice(target);
        args.extend(["--overwrite", label]);
        eprintln!("      kubectl {}", args.join(" "));
        self.lab.kubectl_ok(&args)?;
        Ok(())
    }

    /// Removes every policy of the model's namespaces and the scenario's
    /// label changes.
    fn clean(&self) -> anyhow::Result<()> {
        for ns in NAMESPACES {
            self.lab
                .kubectl_ok(&["delete", "networkpolicy", "--all", "-n", ns])?;
        }
        for undo in self.undo.borrow_mut().drain(..) {
            let args: Vec<&str> = undo.iter().map(String::as_str).collect();
            self.lab.kubectl_ok(&args)?;
        }
        Ok(())
    }

    /// Upstream's `ValidateOrFail`: probes `port`/`proto` all-pairs by pod
    /// IP and by Service IP until both match `reach` or `SETTLE` passes;
    /// then prints the summaries of the mismatching ones and fails.
    fn validate(&self, port: u16, proto: Proto, reach: &Reachability) -> anyhow::Result<()> {
        self.validate_within(port, proto, reach, SETTLE)
    }

    fn validate_within(
        &self,
        port: u16,
        proto: Proto,
        reach: &Reachability,
        within: Duration,
    ) -> anyhow::Result<()> {
        let what = format!("{port}/{}", proto.upper());
        if proto == Proto::Sctp && !self.sctp {
            eprintln!("      {what}: SKIPPED, this kernel has no SCTP sockets (no sctp module)");
            return Ok(());
        }
        self.probed.set(self.probed.get() + 1);
        let start = Instant::now();
        for attempt in 1.. {
            let observed = probe::probe_all(&self.pods, port, proto, &Via::BOTH)?;
            let wrong: Vec<_> = observed
                .iter()
                .filter(|o| reach.expected.compare(&o.table).0 > 0)
                .collect();
            if wrong.is_empty() {
                eprintln!(
                    "      {what}: {} by pod IP and service IP as expected ({attempt} probe rounds, {:.1?})",
                    denied_count(reach),
                    start.elapsed()
                );
                return Ok(());
            }
            // Upstream probes at least twice before failing.
            if attempt >= 2 && start.elapsed() > within {
                let mut report = String::new();
                for o in wrong {
                    let _ = writeln!(
                        report,
                        "\n=== {what} by {} after {attempt} probe rounds ({:.1?}):\n{}\nprobes that did not connect:\n  {}",
                        o.via.name(),
                        start.elapsed(),
                        reach.summary(&o.table),
                        if o.failures.is_empty() {
                            "(none)".to_owned()
                        } else {
                            o.failures.join("\n  ")
                        }
                    );
                }
                bail!("reachability of {what} differs from the truth table:{report}");
            }
            std::thread::sleep(ROUND_PAUSE);
        }
        unreachable!("the loop only returns")
    }
}

fn denied_count(reach: &Reachability) -> String {
    let n = reach.expected.keys().len();
    let denied = (0..n)
        .flat_map(|f| (0..n).map(move |t| (f, t)))
        .filter(|&(f, t)| f != t && reach.expected.at(f, t) == Some(false))
        .count();
    format!("{} allowed, {denied} denied", n * n - n - denied)
}

#[test]
fn netpol() -> anyhow::Result<()> {
    require_root!();
    let dir = tempfile::tempdir()?;
    let result = run(dir.path());
    lab::down_if_any(dir.path());
    result
}

fn run(dir: &Path) -> anyhow::Result<()> {
    let started = Instant::now();
    let lab = Lab::up(dir, 3)?;
    let tar = dir.join("netpol-image.tar");
    model::write_image(Path::new(env!("CARGO_BIN_EXE_netpol-server")), &tar)?;
    lab.image_import(&tar)?;
    let nodes: Vec<String> = lab.nodes.iter().map(|n| n.name.clone()).collect();
    lab.kubectl_ok_with(&["apply", "-f", "-"], &model::manifests(&nodes))?;
    let pods = model::discover(&lab)?;
    model::wait_programmed(&lab, &pods)?;
    let sctp = probe::sctp_supported();
    if !sctp {
        eprintln!(
            "--- SCTP: this kernel cannot make SCTP sockets (no sctp module): SCTP probes are \
             skipped; SCTP-only policies are still checked not to allow TCP or UDP"
        );
    }
    let suite = Suite {
        lab,
        pods,
        keys: model::all_keys(),
        sctp,
        undo: RefCell::new(Vec::new()),
        probed: Cell::new(0),
    };
    eprintln!("--- model up in {:.1?}", started.elapsed());
    for p in &suite.pods {
        eprintln!(
            "    {} on {}: {} (service {})",
            p.key, p.node, p.ip, p.service_ip
        );
    }
    eprintln!("--- no policy: everything reachable");
    for proto in model::SERVED {
        for port in model::PORTS {
            suite.validate_within(port, proto, &suite.reach(true), STARTUP)?;
        }
    }

    let mut failed = Vec::new();
    let (mut passed, mut skipped) = (0, 0);
    // `SKEP_NETPOL_ONLY=<text>` runs only the scenarios whose name holds it
    // (for diagnosing one; the suite runs them all).
    let only = std::env::var("SKEP_NETPOL_ONLY").ok();
    if let Some(only) = &only {
        eprintln!("--- SKEP_NETPOL_ONLY={only:?}: only scenarios whose name contains it");
    }
    let chosen = scenarios::ALL
        .iter()
        .filter(|s| only.as_ref().is_none_or(|o| s.name.contains(o.as_str())));
    for scenario in chosen {
        let at = Instant::now();
        eprintln!("--- {}", scenario.name);
        let probed = suite.probed.get();
        let result = (scenario.run)(&suite);
        let cleaned = suite.clean();
        match result.and(cleaned) {
            Ok(()) if suite.probed.get() == probed => {
                skipped += 1;
                eprintln!("    SKIP {} (nothing this kernel can probe)", scenario.name);
            }
            Ok(()) => {
                passed += 1;
                eprintln!("    PASS {} ({:.1?})", scenario.name, at.elapsed());
            }
            Err(err) => {
                eprintln!("    FAIL {} ({:.1?}): {err:#}", scenario.name, at.elapsed());
                failed.push(scenario.name);
            }
        }
    }
    eprintln!(
        "--- {passed} scenarios passed, {skipped} skipped, {} failed, in {:.1?}",
        failed.len(),
        started.elapsed()
    );
    let Suite { mut lab, .. } = suite;
    if !failed.is_empty() {
        bail!(
            "{} NetworkPolicy scenarios failed (matrices above):\n  {}",
            failed.len(),
            failed.join("\n  ")
        );
    }
    lab.down()?;
    let left = lab.leftovers();
    assert!(left.is_empty(), "left behind: {left:#?}");
    Ok(())
}
