//! Cluster DNS on a 3-node lab: a pod resolves a Service by its short name
//! and its FQDN, a headless Service to its pods' IPs, an SRV
//! record, and a Service in another namespace; an unknown name fails (and
//! fails fast: the lab has no route out). The pod asks the nameserver its
//! resolv.conf names, the cluster DNS address, which the socket
//! load-balancer sends to its own node agent's DNS server.

use std::time::{Duration, Instant};

use skep_e2e::lab::Lab;
use skep_e2e::require_root;

const IMAGE: &str = "lab/busybox:dns";

fn apply(lab: &Lab, yaml: &str) -> anyhow::Result<()> {
    lab.kubectl_ok_with(&["apply", "-f", "-"], yaml).map(|_| ())
}

/// A pod on `node` that sleeps, labelled `app={app}`.
fn pod(name: &str, ns: &str, node: &str, app: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Pod\nmetadata: {{name: {name}, namespace: {ns}, labels: {{app: {app}}}}}\nspec:\n  nodeName: {node}\n  terminationGracePeriodSeconds: 1\n  containers:\n  - name: c\n    image: {IMAGE}\n    imagePullPolicy: Never\n    command: [sh, -c, 'exec sleep 100000']\n"
    )
}

fn pod_ip(lab: &Lab, ns: &str, name: &str) -> anyhow::Result<String> {
    Ok(lab.running_pod(ns, name, Duration::from_mins(2))?.ip)
}

/// Two namespaces with a Service each, a headless Service `db` with pods on
/// nodes 1 and 3, and a client pod on node 2.
fn create_fixtures(lab: &Lab, [n1, n2, n3]: [&str; 3]) -> anyhow::Result<()> {
    eprintln!("--- services in two namespaces, a headless one with pods on two nodes");
    for ns in ["dnsa", "dnsb"] {
        apply(
            lab,
            &format!("apiVersion: v1\nkind: Namespace\nmetadata: {{name: {ns}}}\n"),
        )?;
    }
    apply(
        lab,
        "apiVersion: v1\nkind: Service\nmetadata: {name: web, namespace: dnsa}\nspec:\n  clusterIP: 10.96.53.1\n  ports: [{name: http, port: 80, protocol: TCP}]\n",
    )?;
    apply(
        lab,
        "apiVersion: v1\nkind: Service\nmetadata: {name: api, namespace: dnsb}\nspec:\n  clusterIP: 10.96.53.2\n  ports: [{port: 81}]\n",
    )?;
    apply(
        lab,
        "apiVersion: v1\nkind: Service\nmetadata: {name: db, namespace: dnsa}\nspec:\n  clusterIP: None\n  selector: {app: db}\n  ports: [{name: pg, port: 5432}]\n",
    )?;
    apply(lab, &pod("db-1", "dnsa", n1, "db"))?;
    apply(lab, &pod("db-3", "dnsa", n3, "db"))?;
    apply(lab, &pod("client", "dnsa", n2, "client"))?;
    Ok(())
}

#[test]
fn lab_pods_resolve_services_through_their_node() -> anyhow::Result<()> {
    require_root!();
    let dir = tempfile::tempdir()?;
    let mut lab = Lab::up(dir.path(), 3)?;
    let tar = dir.path().join("image.tar");
    skep_image::busybox_image(IMAGE, &["sh"])?.write_oci_tarball(&tar)?;
    lab.image_import(&tar)?;
    let [n1, n2, n3] = [&lab.nodes[0], &lab.nodes[1], &lab.nodes[2]];

    create_fixtures(&lab, [&n1.name, &n2.name, &n3.name])?;
    let db1 = pod_ip(&lab, "dnsa", "db-1")?;
    let db3 = pod_ip(&lab, "dnsa", "db-3")?;
    pod_ip(&lab, "dnsa", "client")?;
    let lookup = |args: &[&str]| -> anyhow::Result<(bool, String)> {
        let mut argv = vec!["exec", "-n", "dnsa", "client", "--", "nslookup"];
        argv.extend_from_slice(args);
        let out = lab.kubectl(&argv)?;
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        Ok((out.status.success(), text))
    };

    eprintln!("--- the client's resolv.conf names the cluster DNS with the Kubernetes search path");
    let resolv = lab.kubectl_ok(&[
        "exec",
        "-n",
        "dnsa",
        "client",
        "--",
        "cat",
        "/etc/resolv.conf",
    ])?;
    assert!(resolv.contains("nameserver 10.96.0.10"), "{resolv}");
    assert!(
        resolv.contains("search dnsa.svc.cluster.local svc.cluster.local cluster.local"),
        "{resolv}"
    );
    assert!(resolv.contains("options ndots:5"), "{resolv}");

    eprintln!("--- short name (search path), FQDN, another namespace");
    // busybox nslookup applies the search path only to names without a dot,
    // asks every search domain and exits 1 if any of them is NXDOMAIN: the
    // short name is judged by its answer, a rooted name must succeed outright.
    let (_, out) = lookup(&["web"])?;
    assert!(
        out.contains("Name:\tweb.dnsa.svc.cluster.local\nAddress: 10.96.53.1"),
        "nslookup web:\n{out}"
    );
    let (ok, out) = lookup(&["web.dnsa.svc.cluster.local."])?;
    assert!(
        ok && out.contains("Address: 10.96.53.1"),
        "nslookup web.dnsa.svc.cluster.local.:\n{out}"
    );
    let (ok, out) = lookup(&["api.dnsb.svc.cluster.local."])?;
    assert!(
        ok && out.contains("Address: 10.96.53.2"),
        "nslookup api.dnsb.svc.cluster.local.:\n{out}"
    );

    eprintln!("--- headless: every ready pod's IP; SRV per pod");
    let (ok, out) = lab.wait("both db endpoints in DNS", Duration::from_mins(2), || {
        let (ok, out) = lookup(&["db.dnsa.svc.cluster.local."])?;
        Ok((out.contains(&db1) && out.contains(&db3)).then_some((ok, out)))
    })?;
    assert!(ok, "{out}");
    let (ok, out) = lookup(&["-type=srv", "_pg._tcp.db.dnsa.svc.cluster.local."])?;
    assert!(ok, "{out}");
    for ip in [&db1, &db3] {
        let label = ip.replace('.', "-");
        assert!(
            out.contains(&format!("5432 {label}.db.dnsa.svc.cluster.local")),
            "SRV:\n{out}"
        );
    }

    eprintln!("--- an unknown name fails, and fast");
    let started = Instant::now();
    let (ok, out) = lookup(&["nothing-here.dnsa.svc.cluster.local"])?;
    eprintln!("unknown name answered in {:?}", started.elapsed());
    assert!(!ok, "{out}");
    assert!(out.contains("NXDOMAIN"), "{out}");

    lab.down()?;
    let left = lab.leftovers();
    assert!(left.is_empty(), "left behind: {left:#?}");
    Ok(())
}
