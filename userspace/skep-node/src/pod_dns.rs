//! A pod's resolv.conf from its `dnsPolicy` and `dnsConfig`, as the kubelet
//! composes it (pkg/kubelet/network/dns): ClusterFirst names the cluster DNS
//! with the Kubernetes search path, Default copies the node's resolv.conf,
//! None starts empty, then `dnsConfig` is merged and the result cut to the
//! resolver's limits.

use std::net::IpAddr;

use k8s_openapi::api::core::v1::Pod;
use skep_dns::ResolvConf;
use skep_runtime::sandbox::DnsConfig;

/// Most nameservers a resolv.conf may list (glibc's MAXNS).
const MAX_NAMESERVERS: usize = 3;
/// Most search domains the kubelet keeps.
const MAX_SEARCHES: usize = 32;
/// Longest search line, in characters.
const MAX_SEARCH_CHARS: usize = 2048;
/// Longest single search domain (a DNS-1123 subdomain).
const MAX_SEARCH_LEN: usize = 253;

/// The cluster's DNS settings (kubelet's `--cluster-dns`, `--cluster-domain`).
#[derive(Debug, Clone)]
pub struct ClusterDns {
    /// What ClusterFirst pods name as their nameservers.
    pub nameservers: Vec<IpAddr>,
    /// The cluster domain, e.g. `cluster.local`.
    pub domain: String,
}

/// The resolv.conf of `pod`, given the node's own resolv.conf and the
/// cluster's DNS settings.
pub fn pod_dns(pod: &Pod, node: &ResolvConf, cluster: &ClusterDns) -> DnsConfig {
    let spec = pod.spec.as_ref();
    let host_network = spec.and_then(|s| s.host_network).unwrap_or(false);
    let policy = spec
        .and_then(|s| s.dns_policy.as_deref())
        .unwrap_or("ClusterFirst");
    let from_node = || DnsConfig {
        nameservers: node.nameservers.clone(),
        searches: node.searches.clone(),
        options: node.options.clone(),
    };
    let mut dns = match policy {
        "None" => DnsConfig::default(),
        "Default" => from_node(),
        // ClusterFirst on the host network falls back to the node's.
        "ClusterFirst" if host_network => from_node(),
        _ if cluster.nameservers.is_empty() => from_node(),
        // ClusterFirst, ClusterFirstWithHostNet (and unknown policies, as the
        // kubelet treats them).
        _ => {
            let ns = pod.metadata.namespace.as_deref().unwrap_or("default");
            let domain = &cluster.domain;
            let mut searches = vec![
                format!("{ns}.svc.{domain}"),
                format!("svc.{domain}"),
                domain.clone(),
            ];
            searches.extend(node.searches.iter().cloned());
            DnsConfig {
                nameservers: cluster.nameservers.clone(),
                searches,
                options: vec!["ndots:5".into()],
            }
        }
    };
    if let Some(config) = spec.and_then(|s| s.dns_config.as_ref()) {
        dns.nameservers.extend(
            config
                .nameservers
                .iter()
                .flatten()
                .filter_map(|s| s.parse::<IpAddr>().ok()),
        );
        dns.searches
            .extend(config.searches.iter().flatten().cloned());
        for option in config.options.iter().flatten() {
            let name = option.name.clone().unwrap_or_default();
            let text = match &option.value {
                Some(v) => format!("{name}:{v}"),
                None => name.clone(),
            };
            match dns
                .options
                .iter_mut()
                .find(|o| o.split(':').next() == Some(name.as_str()))
            {
                Some(existing) => *existing = text,
                None => dns.options.push(text),
            }
        }
    }
    dedup(&mut dns.nameservers);
    dedup(&mut dns.searches);
    dns.nameservers.truncate(MAX_NAMESERVERS);
    fit_searches(&mut dns.searches);
    dns
}

/// Drops later duplicates, keeping order.
fn dedup<T: PartialEq + Clone>(items: &mut Vec<T>) {
    let mut seen = Vec::with_capacity(items.len());
    items.retain(|i| {
        if seen.contains(i) {
            false
        } else {
            seen.push(i.clone());
            true
        }
    });
}

/// The kubelet's search-path limits: 32 domains, none over 253 characters,
/// the line at most 2048 (domains cut from the end).
fn fit_searches(searches: &mut Vec<String>) {
    searches.truncate(MAX_SEARCHES);
    searches.retain(|s| s.len() <= MAX_SEARCH_LEN);
    while !searches.is_empty() && searches.join(" ").len() > MAX_SEARCH_CHARS {
        searches.pop();
    }
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use serde_json::json;

    use super::*;

    fn pod(spec: &serde_json::Value) -> Pod {
        serde_json::from_value(json!({
            "metadata": {"namespace": "shop", "name": "web-0"},
            "spec": spec,
        }))
        .expect("test pod")
    }

    fn node() -> ResolvConf {
        ResolvConf::parse(
            "nameserver 192.168.1.1\nnameserver 192.168.1.2\nsearch corp.example\noptions edns0\n",
        )
    }

    fn cluster() -> ClusterDns {
        ClusterDns {
            nameservers: vec![IpAddr::V4(Ipv4Addr::new(10, 96, 0, 10))],
            domain: "cluster.local".into(),
        }
    }

    fn ips(v: &[&str]) -> Vec<IpAddr> {
        v.iter().map(|s| s.parse().expect("test ip")).collect()
    }

    #[test]
    fn cluster_first_names_the_cluster_dns_with_the_kubernetes_search_path() {
        for spec in [json!({}), json!({"dnsPolicy": "ClusterFirst"})] {
            let dns = pod_dns(&pod(&spec), &node(), &cluster());
            assert_eq!(dns.nameservers, ips(&["10.96.0.10"]));
            assert_eq!(
                dns.searches,
                vec![
                    "shop.svc.cluster.local",
                    "svc.cluster.local",
                    "cluster.local",
                    "corp.example"
                ]
            );
            assert_eq!(dns.options, vec!["ndots:5"]);
        }
    }

    #[test]
    fn default_and_host_network_use_the_nodes_resolv_conf() {
        for spec in [
            json!({"dnsPolicy": "Default"}),
            json!({"dnsPolicy": "ClusterFirst", "hostNetwork": true}),
            json!({"hostNetwork": true}),
        ] {
            let dns = pod_dns(&pod(&spec), &node(), &cluster());
            assert_eq!(
                dns.nameservers,
                ips(&["192.168.1.1", "192.168.1.2"]),
                "{spec}"
            );
            assert_eq!(dns.searches, vec!["corp.example"]);
            assert_eq!(dns.options, vec!["edns0"]);
        }
        let dns = pod_dns(
            &pod(&json!({"dnsPolicy": "ClusterFirstWithHostNet", "hostNetwork": true})),
            &node(),
            &cluster(),
        );
        assert_eq!(dns.nameservers, ips(&["10.96.0.10"]));
    }

    #[test]
    fn none_takes_only_dns_config() {
        let dns = pod_dns(
            &pod(&json!({"dnsPolicy": "None", "dnsConfig": {
                "nameservers": ["1.2.3.4"],
                "searches": ["ns1.svc.cluster-domain.example"],
                "options": [{"name": "ndots", "value": "2"}, {"name": "edns0"}],
            }})),
            &node(),
            &cluster(),
        );
        assert_eq!(dns.nameservers, ips(&["1.2.3.4"]));
        assert_eq!(dns.searches, vec!["ns1.svc.cluster-domain.example"]);
        assert_eq!(dns.options, vec!["ndots:2", "edns0"]);
    }

    #[test]
    fn dns_config_merges_into_the_policy_and_limits_apply() {
        let many: Vec<String> = (0..40).map(|i| format!("d{i}.example")).collect();
        let dns = pod_dns(
            &pod(&json!({"dnsConfig": {
                "nameservers": ["10.96.0.10", "1.1.1.1", "8.8.8.8", "9.9.9.9"],
                "searches": many,
                "options": [{"name": "ndots", "value": "1"}, {"name": "single-request"}],
            }})),
            &node(),
            &cluster(),
        );
        // Duplicates dropped, then three nameservers at most.
        assert_eq!(dns.nameservers, ips(&["10.96.0.10", "1.1.1.1", "8.8.8.8"]));
        assert_eq!(dns.searches.len(), 32);
        assert_eq!(dns.searches[0], "shop.svc.cluster.local");
        assert_eq!(dns.searches[4], "d0.example");
        // A pod option replaces the policy's of the same name, in place.
        assert_eq!(dns.options, vec!["ndots:1", "single-request"]);
    }

    #[test]
    fn long_search_lines_are_cut_from_the_end() {
        let long = "a".repeat(250);
        let too_long = "b".repeat(254);
        let mut searches: Vec<String> = (0..10).map(|i| format!("{i}{long}")).collect();
        searches.insert(0, too_long);
        let dns = pod_dns(
            &pod(&json!({"dnsPolicy": "None", "dnsConfig": {"searches": searches}})),
            &ResolvConf::default(),
            &cluster(),
        );
        // The 254-character domain goes; 8 of 251 characters fit 2048.
        assert_eq!(dns.searches.len(), 8);
        assert!(dns.searches.join(" ").len() <= MAX_SEARCH_CHARS);
        assert!(dns.searches[0].starts_with('0'));
    }
}
