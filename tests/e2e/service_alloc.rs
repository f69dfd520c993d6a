//! Service cluster IP and node port allocation through the real kubectl
//! against a real `skep server` with its own ranges: the built-in
//! `kubernetes` and `kube-dns` Services, generators, upstream's errors for a
//! taken or out-of-range value, reuse after delete, and a restart keeping
//! what is held.

use std::net::Ipv4Addr;
use std::path::Path;
use std::time::Duration;

use anyhow::{Context as _, ensure};
use skep_e2e::cluster::Server;

const RANGE: &str = "10.100.0.0/16";
const PORTS: &str = "31000-31999";
const FLAGS: &[&str] = &[
    "--service-cluster-ip-range",
    RANGE,
    "--service-node-port-range",
    PORTS,
];

fn start(dir: &Path) -> anyhow::Result<Server> {
    Server::start_with(dir, FLAGS)
}

/// `kubectl get svc NAME -n NS -o jsonpath=PATH`.
fn svc(server: &Server, ns: &str, name: &str, path: &str) -> anyhow::Result<String> {
    server.kubectl_ok(&[
        "get",
        "svc",
        name,
        "-n",
        ns,
        "-o",
        &format!("jsonpath={path}"),
    ])
}

fn in_range(ip: &str) -> anyhow::Result<bool> {
    let ip: Ipv4Addr = ip.parse().with_context(|| format!("{ip:?} is no IPv4"))?;
    Ok(ip.octets()[..2] == [10, 100])
}

/// `kubectl create -f` of `manifest`; its stderr, failing if it succeeds.
fn create_refused(server: &Server, dir: &Path, manifest: &str) -> anyhow::Result<String> {
    let file = dir.join("refused.yaml");
    std::fs::write(&file, manifest)?;
    let out = server.kubectl(&["create", "-f", &file.to_string_lossy()])?;
    ensure!(
        !out.status.success(),
        "kubectl create accepted:\n{manifest}"
    );
    Ok(String::from_utf8_lossy(&out.stderr).trim().to_owned())
}

fn manifest(name: &str, cluster_ip: &str, node_port: u16) -> String {
    format!(
        "apiVersion: v1\nkind: Service\nmetadata: {{name: {name}}}\nspec:\n  type: NodePort\n  clusterIP: {cluster_ip}\n  selector: {{app: x}}\n  ports:\n  - {{port: 80, nodePort: {node_port}}}\n"
    )
}

/// The `kubernetes` Endpoints name the address in the admin kubeconfig.
fn kubernetes_endpoint_names_the_server(server: &Server) -> anyhow::Result<()> {
    let kubeconfig = std::fs::read_to_string(server.kubeconfig())?;
    let endpoint = server.kubectl_ok(&[
        "get",
        "endpoints",
        "kubernetes",
        "-o",
        "jsonpath={.subsets[0].addresses[0].ip}:{.subsets[0].ports[0].port}",
    ])?;
    ensure!(
        kubeconfig.contains(&format!("https://{endpoint}")),
        "the kubernetes Endpoints name the server: {endpoint}"
    );
    Ok(())
}

/// The built-in Services, on the first and tenth IPs of the range.
fn builtin_services(server: &Server) -> anyhow::Result<()> {
    let table = server.kubectl_ok(&["get", "svc", "-A"])?;
    let row = |name: &str| {
        table
            .lines()
            .find(|l| l.split_whitespace().nth(1) == Some(name))
    };
    let kubernetes = row("kubernetes").context(table.clone())?;
    ensure!(
        kubernetes.contains("10.100.0.1 ") && kubernetes.contains("443/TCP"),
        "{kubernetes}"
    );
    let dns = row("kube-dns").context(table.clone())?;
    ensure!(
        dns.starts_with("kube-system") && dns.contains("10.100.0.10 "),
        "{dns}"
    );
    ensure!(dns.contains("53/UDP,53/TCP,9153/TCP"), "{dns}");
    ensure!(
        svc(
            server,
            "kube-system",
            "kube-dns",
            "{.metadata.labels.k8s-app}"
        )? == "kube-dns"
    );
    kubernetes_endpoint_names_the_server(server)
}

/// Generators get a free IP from the range, and node ports from theirs;
/// returns the cluster IPs of `api` and `np`.
fn generators(server: &Server) -> anyhow::Result<(String, String)> {
    server.kubectl_ok(&["create", "service", "clusterip", "api", "--tcp=80:8080"])?;
    let api_ip = svc(server, "default", "api", "{.spec.clusterIP}")?;
    ensure!(in_range(&api_ip)?, "{api_ip}");
    ensure!(!["10.100.0.0", "10.100.0.1", "10.100.0.10"].contains(&api_ip.as_str()));
    ensure!(
        svc(
            server,
            "default",
            "api",
            "{.spec.clusterIPs[0]} {.spec.ipFamilies[0]}"
        )? == format!("{api_ip} IPv4")
    );
    server.kubectl_ok(&["create", "deployment", "web", "--image=busybox"])?;
    server.kubectl_ok(&[
        "expose",
        "deployment",
        "web",
        "--port=80",
        "--type=NodePort",
    ])?;
    let web_port: u16 = svc(server, "default", "web", "{.spec.ports[0].nodePort}")?.parse()?;
    ensure!((31000..=31999).contains(&web_port), "{web_port}");
    server.kubectl_ok(&[
        "create",
        "service",
        "nodeport",
        "np",
        "--tcp=80:8080",
        "--node-port=31080",
    ])?;
    ensure!(svc(server, "default", "np", "{.spec.ports[0].nodePort}")? == "31080");
    let np_ip = svc(server, "default", "np", "{.spec.clusterIP}")?;

    Ok((api_ip, np_ip))
}

#[test]
fn services_get_cluster_ips_and_node_ports_from_the_server_ranges() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let mut server = start(dir.path())?;

    builtin_services(&server)?;
    let (api_ip, np_ip) = generators(&server)?;

    // Taken or out-of-range values get upstream's errors.
    let err = create_refused(&server, dir.path(), &manifest("dup", &api_ip, 31500))?;
    ensure!(
        err.contains(&format!("The Service \"dup\" is invalid: spec.clusterIPs: Invalid value: []string{{\"{api_ip}\"}}: failed to allocate IP {api_ip}: provided IP is already allocated")),
        "{err}"
    );
    let err = create_refused(&server, dir.path(), &manifest("dup", "10.100.7.7", 31080))?;
    ensure!(
        err.contains(
            "spec.ports[0].nodePort: Invalid value: 31080: provided port is already allocated"
        ),
        "{err}"
    );
    let err = create_refused(&server, dir.path(), &manifest("far", "10.96.0.50", 31500))?;
    ensure!(
        err.contains("The range of valid IPs is 10.100.0.0/16"),
        "{err}"
    );
    let err = create_refused(&server, dir.path(), &manifest("far", "10.100.7.7", 30080))?;
    ensure!(
        err.contains("The range of valid ports is 31000-31999"),
        "{err}"
    );

    // A delete gives the IP and port back.
    server.kubectl_ok(&["delete", "svc", "np"])?;
    server.apply(&manifest("again", &np_ip, 31080))?;
    ensure!(
        svc(
            &server,
            "default",
            "again",
            "{.spec.clusterIP} {.spec.ports[0].nodePort}"
        )? == format!("{np_ip} 31080")
    );

    // A deleted built-in Service comes back with its IP.
    server.kubectl_ok(&["delete", "svc", "kube-dns", "-n", "kube-system"])?;
    server.wait_for("kube-dns recreated", Duration::from_secs(30), || {
        Ok(svc(&server, "kube-system", "kube-dns", "{.spec.clusterIP}")
            .ok()
            .filter(|ip| ip == "10.100.0.10"))
    })?;

    // A restart keeps what is held: the same IP is still refused.
    server.stop()?;
    drop(server);
    let server = start(dir.path())?;
    let err = create_refused(&server, dir.path(), &manifest("dup", &api_ip, 31500))?;
    ensure!(err.contains("provided IP is already allocated"), "{err}");
    ensure!(svc(&server, "default", "kubernetes", "{.spec.clusterIP}")? == "10.100.0.1");
    // After a restart on a new port the kubernetes Endpoints follow.
    kubernetes_endpoint_names_the_server(&server)?;
    Ok(())
}
