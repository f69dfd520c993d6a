//! The agent's policy wiring on a 2-node lab: a NetworkPolicy created with
//! kubectl isolates a pod on node 1 against a client pod on node 2 (whose
//! facts node 1 only knows through node sync's `PodPeer`s); `skep flows`
//! shows the denied flow with both pods' names; node 1's `/metrics` counts
//! the drops; an agent killed and restarted finds the pinned maps equal to
//! what it compiles (0 writes: identities persisted, state read back) and
//! the pod stays isolated; deleting the policy lets new connections in.
//! The full upstream matrix is `netpol*`; this checks the parts between.

use std::path::{Path, PathBuf};
use std::time::Duration;

use skep_e2e::lab::Lab;
use skep_e2e::process::skep;
use skep_e2e::require_root;

const IMAGE: &str = "lab/busybox:pwire";
const NS: &str = "pwire";

fn manifests(n1: &str, n2: &str) -> String {
    format!(
        r"apiVersion: v1
kind: Namespace
metadata: {{name: {NS}}}
---
apiVersion: v1
kind: Pod
metadata: {{name: a, namespace: {NS}, labels: {{pod: a}}}}
spec:
  nodeName: {n1}
  terminationGracePeriodSeconds: 1
  containers:
  - name: c
    image: {IMAGE}
    imagePullPolicy: Never
    command: [nc, -ll, -p, '80', -e, hostname]
    ports: [{{name: http, containerPort: 80}}]
---
apiVersion: v1
kind: Pod
metadata: {{name: b, namespace: {NS}, labels: {{pod: b}}}}
spec:
  nodeName: {n2}
  terminationGracePeriodSeconds: 1
  containers:
  - name: c
    image: {IMAGE}
    imagePullPolicy: Never
    command: [sleep, '100000']
"
    )
}

const DENY_A: &str = r"apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: deny-a, namespace: pwire}
spec:
  podSelector: {matchLabels: {pod: a}}
  policyTypes: [Ingress]
";

fn running_ip(lab: &Lab, name: &str) -> anyhow::Result<String> {
    Ok(lab.running_pod(NS, name, Duration::from_mins(2))?.ip)
}

/// Whether pod b gets pod a's answer on port 80 (a 2 s connect timeout).
fn b_reaches_a(lab: &Lab, a_ip: &str) -> anyhow::Result<bool> {
    let out = lab.kubectl(&["exec", "-n", NS, "b", "--", "nc", "-w", "2", a_ip, "80"])?;
    Ok(out.status.success() && String::from_utf8_lossy(&out.stdout).trim() == "a")
}

/// The node log's lines, ANSI colours removed.
fn log_lines(log: &Path) -> Vec<String> {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    text.lines()
        .map(|line| {
            let mut out = String::with_capacity(line.len());
            let mut in_escape = false;
            for ch in line.chars() {
                match (in_escape, ch) {
                    (false, '\u{1b}') => in_escape = true,
                    (true, 'm') => in_escape = false,
                    (true, _) => {}
                    (false, c) => out.push(c),
                }
            }
            out
        })
        .collect()
}

#[test]
fn lab_policy_is_compiled_on_the_node_counted_and_shown_as_flows() -> anyhow::Result<()> {
    require_root!();
    let dir = tempfile::tempdir()?;
    let mut lab = Lab::up(dir.path(), 2)?;
    let tar = dir.path().join("image.tar");
    skep_image::busybox_image(IMAGE, &["sh"])?.write_oci_tarball(&tar)?;
    lab.image_import(&tar)?;
    let (n1, n2) = (lab.nodes[0].clone(), lab.nodes[1].clone());
    lab.kubectl_ok_with(&["apply", "-f", "-"], &manifests(&n1.name, &n2.name))?;
    let a_ip = running_ip(&lab, "a")?;
    running_ip(&lab, "b")?;
    lab.wait("b to reach a", Duration::from_mins(1), || {
        Ok(b_reaches_a(&lab, &a_ip)?.then_some(()))
    })?;

    eprintln!("--- a policy selecting a isolates it from b on the other node");
    lab.kubectl_ok_with(&["apply", "-f", "-"], DENY_A)?;
    lab.wait("a to be isolated", Duration::from_secs(30), || {
        Ok((!b_reaches_a(&lab, &a_ip)?).then_some(()))
    })?;

    eprintln!("--- skep flows on node 1 shows the denial with both names");
    let pin_dir = n1.pin_dir.display().to_string();
    let out = skep(&[
        "flows",
        "--pin-dir",
        &pin_dir,
        "--verdict",
        "denied",
        "--pod",
        "pwire/a",
    ])?;
    let flows = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let wanted = format!("-> pwire/a {a_ip}:80 tcp");
    assert!(
        flows
            .lines()
            .any(|l| l.contains("ingress denied pwire/b") && l.contains(&wanted)),
        "no denied b -> a flow in:\n{flows}"
    );
    let bad = skep(&["flows", "--pin-dir", &pin_dir, "--pod", "no-slash"])?;
    assert!(!bad.status.success());

    eprintln!("--- node 1's /metrics counts the drops");
    let metrics = lab.metrics(&n1)?;
    let drops = metrics
        .lines()
        .find_map(|l| {
            l.strip_prefix(
                r#"skep_policy_drops_total{namespace="pwire",pod="a",direction="ingress"} "#,
            )
        })
        .and_then(|n| n.trim().parse::<u64>().ok());
    assert!(
        drops.is_some_and(|n| n > 0),
        "no drops for a in:\n{metrics}"
    );

    eprintln!("--- a restarted agent finds its maps as it would write them");
    let log: PathBuf = lab.data_dir.join("logs").join(format!("{}.log", n1.name));
    let before = log_lines(&log).len();
    lab.kill_agent(&n1)?;
    assert!(
        !b_reaches_a(&lab, &a_ip)?,
        "a lost its isolation with its agent"
    );
    lab.restart_agent(&n1.name)?;
    let first = lab.wait(
        "the restarted agent's policy sync",
        Duration::from_mins(1),
        || {
            Ok(log_lines(&log)
                .into_iter()
                .skip(before)
                .find(|l| l.contains("policy maps synced")))
        },
    )?;
    assert!(
        first.contains("ops=0"),
        "the restart rewrote the maps: {first}"
    );
    assert!(n1.data_dir.join("policy/identities.json").exists());
    assert!(
        !b_reaches_a(&lab, &a_ip)?,
        "a lost its isolation over a restart"
    );

    eprintln!("--- deleting the policy lets b in again");
    lab.kubectl_ok(&["delete", "networkpolicy", "-n", NS, "deny-a"])?;
    lab.wait("b to reach a again", Duration::from_secs(30), || {
        Ok(b_reaches_a(&lab, &a_ip)?.then_some(()))
    })?;
    lab.down()?;
    Ok(())
}
