//! The suite's cluster model, as upstream's `model.go` builds it:
//! namespaces x, y, z (label `ns=<name>`), pods a, b, c in each (label
//! `pod=<name>`), one container per port and protocol (`cont-<port>-<proto>`
//! with the named port `serve-<port>-<proto>`), and a Service `s-<ns>-<pod>`
//! per pod. Pods are pinned to the lab's nodes so that every node holds
//! pods of every namespace and both same-node and cross-node pairs exist.

use std::fmt::Write as _;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context as _, bail};
use skep_datapath::ServiceMap;
use skep_e2e::lab::Lab;
use skep_image::LayerEntry;

/// The namespaces.
pub const NAMESPACES: [&str; 3] = ["x", "y", "z"];
/// The pod names in each namespace.
pub const PODS: [&str; 3] = ["a", "b", "c"];
/// The ports every pod serves, over each served protocol.
pub const PORTS: [u16; 2] = [80, 81];
/// The lab image: busybox plus the suite's server.
pub const IMAGE: &str = "lab/netpol:server";
/// Where the server sits in the image.
const SERVER: &str = "/netpol-server";

/// A transport protocol of a probe or a policy port.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Proto {
    /// TCP.
    Tcp,
    /// UDP.
    Udp,
    /// SCTP (this kernel may have no SCTP sockets; the suite then skips
    /// SCTP probes and says so).
    Sctp,
}

impl Proto {
    /// The Kubernetes spelling (`TCP`).
    pub fn upper(self) -> &'static str {
        match self {
            Self::Tcp => "TCP",
            Self::Udp => "UDP",
            Self::Sctp => "SCTP",
        }
    }

    /// The lower-case spelling used in container and port names.
    pub fn lower(self) -> &'static str {
        match self {
            Self::Tcp => "tcp",
            Self::Udp => "udp",
            Self::Sctp => "sctp",
        }
    }
}

/// The protocols the pods serve (SCTP cannot be served here).
pub const SERVED: [Proto; 2] = [Proto::Tcp, Proto::Udp];

/// One running model pod, as the cluster reports it.
#[derive(Clone, Debug)]
pub struct ModelPod {
    /// `ns/name`, the truth tables' key.
    pub key: String,
    /// Its node.
    pub node: String,
    /// Its pod IP.
    pub ip: Ipv4Addr,
    /// The cluster IP of its Service `s-<ns>-<pod>`.
    pub service_ip: Ipv4Addr,
    /// Its network namespace file.
    pub netns: PathBuf,
    /// Its node's cgroup (the socket load-balancer's attach point).
    pub node_cgroup: PathBuf,
}

/// Every `ns/pod` key, in table order (x/a, x/b, … z/c).
pub fn all_keys() -> Vec<String> {
    NAMESPACES
        .iter()
        .flat_map(|ns| PODS.iter().map(move |p| format!("{ns}/{p}")))
        .collect()
}

/// Namespaces, pods and Services of the model; pod `i` of namespace `n`
/// runs on node `(n + i) % nodes`.
pub fn manifests(nodes: &[String]) -> String {
    let mut out = String::new();
    for (n, ns) in NAMESPACES.iter().enumerate() {
        let _ = write!(
            out,
            "apiVersion: v1\nkind: Namespace\nmetadata: {{name: '{ns}', labels: {{ns: '{ns}'}}}}\n---\n"
        );
        for (i, pod) in PODS.iter().enumerate() {
            let node = &nodes[(n + i) % nodes.len()];
            let _ = write!(
                out,
                "apiVersion: v1\nkind: Pod\nmetadata: {{name: {pod}, namespace: '{ns}', labels: {{pod: {pod}}}}}\n\
                 spec:\n  nodeName: {node}\n  terminationGracePeriodSeconds: 0\n  containers:\n"
            );
            let mut ports = String::new();
            for port in PORTS {
                for proto in SERVED {
                    let (l, u) = (proto.lower(), proto.upper());
                    let _ = write!(
                        out,
                        "  - name: cont-{port}-{l}\n    image: {IMAGE}\n    imagePullPolicy: Never\n    \
                         command: [{SERVER}, {l}, '{port}', {ns}/{pod}]\n    \
                         ports: [{{containerPort: {port}, name: serve-{port}-{l}, protocol: {u}}}]\n"
                    );
                    let _ = writeln!(
                        ports,
                        "  - {{name: service-port-{l}-{port}, protocol: {u}, port: {port}}}"
                    );
                }
            }
            let _ = write!(
                out,
                "---\napiVersion: v1\nkind: Service\nmetadata: {{name: s-{ns}-{pod}, namespace: '{ns}'}}\n\
                 spec:\n  selector: {{pod: {pod}}}\n  ports:\n{ports}---\n"
            );
        }
    }
    out
}

/// Writes the lab image tarball: busybox, the server binary at `/netpol-server`
/// and the shared libraries `ldd` lists for it, at the same paths.
pub fn write_image(server: &Path, tar: &Path) -> anyhow::Result<()> {
    let ldd = std::process::Command::new("ldd")
        .arg(server)
        .output()
        .context("failed to run ldd")?;
    if !ldd.status.success() {
        bail!(
            "ldd {} failed: {}",
            server.display(),
            String::from_utf8_lossy(&ldd.stderr)
        );
    }
    let mut entries = vec![LayerEntry::File {
        path: SERVER.trim_start_matches('/').into(),
        mode: 0o755,
        data: std::fs::read(server).with_context(|| format!("read {}", server.display()))?,
    }];
    let mut dirs = std::collections::BTreeSet::new();
    for line in String::from_utf8_lossy(&ldd.stdout).lines() {
        // `libc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x…)` or
        // `/lib64/ld-linux-x86-64.so.2 (0x…)`; the vDSO has no file.
        let Some(lib) = line
            .split_whitespace()
            .find(|w| w.starts_with('/'))
            .map(Path::new)
        else {
            continue;
        };
        let rel = lib.strip_prefix("/")?;
        for dir in rel.ancestors().skip(1) {
            if !dir.as_os_str().is_empty() {
                dirs.insert(dir.to_path_buf());
            }
        }
        entries.push(LayerEntry::File {
            path: rel.display().to_string(),
            mode: 0o755,
            // Follows symlinks: the image gets the library itself.
            data: std::fs::read(lib).with_context(|| format!("read {}", lib.display()))?,
        });
    }
    let mut layer: Vec<LayerEntry> = dirs
        .iter()
        .map(|d| LayerEntry::dir(&d.display().to_string()))
        .collect();
    layer.extend(entries);
    skep_image::busybox_image(IMAGE, &["sh"])?
        .layer(layer)
        .write_oci_tarball(tar)?;
    Ok(())
}

/// The model's pods as the cluster runs them: waits until all nine are
/// Running with an IP and every Service has its cluster IP.
pub fn discover(lab: &Lab) -> anyhow::Result<Vec<ModelPod>> {
    lab.wait("the nine model pods running", Duration::from_mins(3), || {
        let mut pods = Vec::new();
        for ns in NAMESPACES {
            let out = lab.kubectl_ok(&[
                "get",
                "pods",
                "-n",
                ns,
                "-o",
                r#"jsonpath={range .items[*]}{.metadata.name} {.metadata.uid} {.spec.nodeName} {.status.phase} {.status.podIP}{"\n"}{end}"#,
            ])?;
            for line in out.lines() {
                let f: Vec<&str> = line.split_whitespace().collect();
                let [name, uid, node, "Running", ip] = f.as_slice() else {
                    continue;
                };
                let lab_node = lab
                    .nodes
                    .iter()
                    .find(|n| n.name == *node)
                    .with_context(|| format!("pod {ns}/{name} on unknown node {node}"))?;
                let service_ip: String = lab.kubectl_ok(&[
                    "get",
                    "service",
                    "-n",
                    ns,
                    &format!("s-{ns}-{name}"),
                    "-o",
                    "jsonpath={.spec.clusterIP}",
                ])?;
                pods.push(ModelPod {
                    key: format!("{ns}/{name}"),
                    node: (*node).to_owned(),
                    ip: ip.parse()?,
                    service_ip: service_ip.trim().parse()?,
                    netns: lab_node.data_dir.join("run/netns").join(uid),
                    node_cgroup: lab_node.cgroup.clone(),
                });
            }
        }
        Ok((pods.len() == NAMESPACES.len() * PODS.len()).then(|| {
            let order = all_keys();
            pods.sort_by_key(|p| order.iter().position(|k| *k == p.key));
            pods
        }))
    })
}

/// Waits until every node's service maps give each model Service's four
/// ports exactly one backend.
pub fn wait_programmed(lab: &Lab, pods: &[ModelPod]) -> anyhow::Result<()> {
    let want = pods.len() * PORTS.len() * SERVED.len();
    for node in &lab.nodes {
        lab.wait(
            &format!("the model Services programmed on {}", node.name),
            Duration::from_mins(2),
            || {
                let maps = ServiceMap::list_pinned(&node.pin_dir)
                    .with_context(|| format!("read the maps of {}", node.name))?;
                let ready = maps
                    .iter()
                    .filter(|s| pods.iter().any(|p| p.service_ip == s.vip) && s.backends.len() == 1)
                    .count();
                Ok((ready == want).then_some(()))
            },
        )?;
    }
    Ok(())
}
