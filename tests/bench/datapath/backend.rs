//! The backends of `bench datapath`: real pods (`sleep`, spread over the lab's
//! nodes by `nodeName`), each with a server of this process listening inside
//! the pod's network namespace. The pod is what skep's endpoints controller
//! sees (Ready, its IP in every `EndpointSlice`); the server is a tokio task
//! here rather than a program in the image, so the backend is never the
//! bottleneck: accepting and echoing 8 bytes costs far less than the
//! connection setup being measured.

use std::{
    fmt::Write as _,
    fs::File,
    net::{Ipv4Addr, SocketAddrV4},
    path::PathBuf,
    time::Duration,
};

use anyhow::{Context as _, bail};
use nix::sched::{CloneFlags, setns};
use skep_e2e::lab::Lab;
use tokio::{
    io::{AsyncReadExt as _, AsyncWriteExt as _},
    task::JoinHandle,
};

use super::client::{MESSAGE, reply};

/// The namespace of the bench's pods and Services.
pub const NAMESPACE: &str = "bench";
/// The label value selecting the backends (`app=…`).
pub const APP: &str = "bench-backend";
/// The port the servers listen on (the Services' `targetPort`).
pub const PORT: u16 = 8080;
const IMAGE: &str = "bench/busybox:datapath";

/// The running backends; dropping them stops every server.
pub struct Backends {
    /// Each pod's address and port.
    pub addrs: Vec<SocketAddrV4>,
    /// How many pods each node runs, in node order.
    pub per_node: Vec<usize>,
    servers: Vec<JoinHandle<()>>,
}

impl Drop for Backends {
    fn drop(&mut self) {
        for s in &self.servers {
            s.abort();
        }
    }
}

fn pods_yaml(count: usize, nodes: &[String]) -> String {
    let mut yaml = format!("apiVersion: v1\nkind: Namespace\nmetadata: {{name: {NAMESPACE}}}\n");
    for i in 0..count {
        let node = &nodes[i % nodes.len()];
        let _ = write!(
            yaml,
            "---\napiVersion: v1\nkind: Pod\nmetadata: {{name: backend-{i}, namespace: {NAMESPACE}, labels: {{app: {APP}}}}}\n\
             spec:\n  nodeName: {node}\n  terminationGracePeriodSeconds: 0\n  containers:\n  \
             - {{name: c, image: {IMAGE}, imagePullPolicy: Never, command: [sleep, '1000000'], \
             ports: [{{name: echo, containerPort: {PORT}}}]}}\n"
        );
    }
    yaml
}

/// Answers every [`MESSAGE`]-byte request on every connection, until it
/// closes, with [`reply`]: the address the connection reached, so the
/// client knows which backend a service sent it to.
pub async fn serve(listener: tokio::net::TcpListener) {
    loop {
        let Ok((mut stream, _)) = listener.accept().await else {
            continue;
        };
        let _ = stream.set_nodelay(true);
        let Ok(std::net::SocketAddr::V4(me)) = stream.local_addr() else {
            continue;
        };
        tokio::spawn(async move {
            let mut buf = [0u8; MESSAGE];
            while stream.read_exact(&mut buf).await.is_ok() {
                if stream.write_all(&reply(me)).await.is_err() {
                    break;
                }
            }
        });
    }
}

/// A listening socket made inside the namespace at `netns` (the socket
/// stays in that namespace wherever it is used from).
pub fn listen_in(netns: PathBuf) -> anyhow::Result<std::net::TcpListener> {
    std::thread::spawn(move || -> anyhow::Result<std::net::TcpListener> {
        let ns = File::open(&netns).with_context(|| format!("open {}", netns.display()))?;
        setns(&ns, CloneFlags::CLONE_NEWNET).context("enter the pod's namespace")?;
        let listener = std::net::TcpListener::bind((Ipv4Addr::UNSPECIFIED, PORT))?;
        listener.set_nonblocking(true)?;
        Ok(listener)
    })
    .join()
    .map_err(|_| anyhow::anyhow!("listener thread panicked"))?
}

/// Imports the image, starts `count` pods round-robin over the nodes, waits
/// until they run, and serves inside each.
pub fn start(lab: &Lab, count: usize, image_tar: &std::path::Path) -> anyhow::Result<Backends> {
    skep_image::busybox_image(IMAGE, &["sh"])?.write_oci_tarball(image_tar)?;
    lab.image_import(image_tar)?;
    let names: Vec<String> = lab.nodes.iter().map(|n| n.name.clone()).collect();
    lab.kubectl_ok_with(&["apply", "-f", "-"], &pods_yaml(count, &names))?;
    let pods = skep_e2e::wait::until(
        "the backend pods to run",
        Duration::from_mins(2),
        || {
            let out = lab.kubectl_ok(&[
                "get",
                "pods",
                "-n",
                NAMESPACE,
                "-l",
                &format!("app={APP}"),
                "-o",
                r#"jsonpath={range .items[*]}{.status.phase} {.status.podIP} {.metadata.uid} {.spec.nodeName}{"\n"}{end}"#,
            ])?;
            let running: Vec<(Ipv4Addr, String, String)> = out
                .lines()
                .filter_map(|l| match l.split_whitespace().collect::<Vec<_>>()[..] {
                    ["Running", ip, uid, node] => {
                        Some((ip.parse().ok()?, uid.to_owned(), node.to_owned()))
                    }
                    _ => None,
                })
                .collect();
            Ok((running.len() == count).then_some(running))
        },
        || Lab::logs(&lab.data_dir),
    )?;
    let mut backends = Backends {
        addrs: Vec::new(),
        per_node: vec![0; lab.nodes.len()],
        servers: Vec::new(),
    };
    for (ip, uid, node) in pods {
        let Some(index) = lab.nodes.iter().position(|n| n.name == node) else {
            bail!("pod {uid} runs on {node}, not a lab node");
        };
        let netns = lab.nodes[index].data_dir.join("run/netns").join(&uid);
        let listener = tokio::net::TcpListener::from_std(listen_in(netns)?)?;
        backends.servers.push(tokio::spawn(serve(listener)));
        backends.addrs.push(SocketAddrV4::new(ip, PORT));
        backends.per_node[index] += 1;
    }
    Ok(backends)
}
