//! The agent's Prometheus endpoint: `GET /metrics` over plain HTTP on
//! `--metrics-listen` (default `<node IP>:9962`, Cilium's agent port),
//! in the OpenMetrics text format.
//!
//! Everything is read from the pinned maps at scrape time, so the numbers
//! are the kernel's own and nothing is kept in between:
//!
//! - `skep_policy_verdicts_total{namespace,pod,direction,verdict}`: packets
//!   a local pod's policy judged (`allowed`: first packet of an allowed
//!   flow; `denied`: dropped; `established`: later packets and replies).
//! - `skep_policy_drops_total{namespace,pod,direction}`: packets policy
//!   dropped (the `denied` verdicts).
//! - `skep_datapath_packets_total` / `skep_datapath_bytes_total`
//!   `{interface,direction,family,protocol}`: what the TC programs saw.
//! - `skep_agent_sync_runs_total{loop,cause}`: the agent's own count of its
//!   sync loops' runs ([`SyncRuns`]), by what woke them: a change of what
//!   the loop reads (`change`), a retry after a failure (`retry`) or the
//!   periodic check against the kernel (`resync`).

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;

use axum::Router;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;
use skep_datapath::metrics::{MetricsRow, protocol_name};
use skep_datapath::policy::{PolicyCounter, PolicyMaps};
use skep_ebpf_common::{Direction, Family as IpFamily, PolicyVerdict};

use crate::view::ViewReader;

/// Cilium's agent metrics port, the default of `--metrics-listen`.
pub const DEFAULT_METRICS_PORT: u16 = 9962;

/// Where the agent serves `/metrics`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MetricsListen {
    /// Not at all.
    Off,
    /// `<node IP>:9962`.
    NodeIp,
    /// At this address (port 0 picks a free one).
    At(SocketAddr),
}

impl std::str::FromStr for MetricsListen {
    type Err = String;

    /// `off`, or an `address:port`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s == "off" {
            return Ok(Self::Off);
        }
        s.parse()
            .map(Self::At)
            .map_err(|_| format!("not `off` nor an address:port: {s}"))
    }
}

/// The labels of a verdict counter.
type Labels = Vec<(&'static str, String)>;

/// A loop that keeps something of the node in step with the view.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SyncLoop {
    /// The service maps ([`crate::services`]).
    Services,
    /// The policy maps ([`crate::policy`]).
    Policy,
    /// The cluster DNS records ([`crate::dns`]).
    Dns,
    /// The routes to other nodes ([`crate::routes`]).
    Routes,
}

impl SyncLoop {
    /// The `loop` label.
    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            Self::Services => "services",
            Self::Policy => "policy",
            Self::Dns => "dns",
            Self::Routes => "routes",
        }
    }
}

/// Why a sync loop ran.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Cause {
    /// What the loop reads changed (its view signal, or a setting it
    /// follows, such as the DNS server's address).
    Change,
    /// The last run failed.
    Retry,
    /// The periodic check against what someone else may have changed.
    Resync,
}

impl Cause {
    /// The `cause` label.
    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            Self::Change => "change",
            Self::Retry => "retry",
            Self::Resync => "resync",
        }
    }
}

/// How often each sync loop ran, and why: the proof of who woke whom
/// (`skep_agent_sync_runs_total{loop,cause}`). Clones count together.
#[derive(Clone, Debug, Default)]
pub struct SyncRuns(Family<Vec<(&'static str, &'static str)>, Counter>);

impl SyncRuns {
    /// Counters at 0 for every loop and cause, so a scrape shows them all.
    #[must_use]
    pub fn new() -> Self {
        let runs = Self::default();
        for sync in [
            SyncLoop::Services,
            SyncLoop::Policy,
            SyncLoop::Dns,
            SyncLoop::Routes,
        ] {
            for cause in [Cause::Change, Cause::Retry, Cause::Resync] {
                let _ = runs.get(sync, cause);
            }
        }
        runs
    }

    /// Counts one run of `sync` woken by `cause`.
    pub fn count(&self, sync: SyncLoop, cause: Cause) {
        self.0
            .get_or_create(&vec![("loop", sync.name()), ("cause", cause.name())])
            .inc();
    }

    /// The runs of `sync` woken by `cause` so far.
    #[must_use]
    pub fn get(&self, sync: SyncLoop, cause: Cause) -> u64 {
        self.0
            .get_or_create(&vec![("loop", sync.name()), ("cause", cause.name())])
            .get()
    }
}

/// The metrics text for the policy counters (`pods` names the local pods
/// by address; an unknown one is shown by its address with an empty
/// namespace), the datapath counters (`interface` names an ifindex) and
/// the sync loops' runs.
pub fn encode_text(
    policy: &[PolicyCounter],
    pods: &BTreeMap<Ipv4Addr, (String, String)>,
    datapath: &[MetricsRow],
    interface: impl Fn(u32) -> String,
    runs: &SyncRuns,
) -> Result<String, std::fmt::Error> {
    let mut registry = Registry::default();
    registry.register(
        "skep_agent_sync_runs",
        "Runs of the agent's sync loops, per loop and what woke it",
        runs.0.clone(),
    );
    let verdicts = Family::<Labels, Counter>::default();
    let drops = Family::<Labels, Counter>::default();
    let packets = Family::<Labels, Counter>::default();
    let bytes = Family::<Labels, Counter>::default();
    registry.register(
        "skep_policy_verdicts",
        "Packets network policy judged, per local pod, direction and verdict",
        verdicts.clone(),
    );
    registry.register(
        "skep_policy_drops",
        "Packets network policy dropped, per local pod and direction",
        drops.clone(),
    );
    registry.register(
        "skep_datapath_packets",
        "Packets the TC programs saw, per interface, direction, family and protocol",
        packets.clone(),
    );
    registry.register(
        "skep_datapath_bytes",
        "Bytes the TC programs saw, per interface, direction, family and protocol",
        bytes.clone(),
    );
    for c in policy {
        let (namespace, pod) = pods
            .get(&c.endpoint)
            .cloned()
            .unwrap_or_else(|| (String::new(), c.endpoint.to_string()));
        let direction = c.direction.name().to_owned();
        let mut labels = vec![
            ("namespace", namespace),
            ("pod", pod),
            ("direction", direction),
        ];
        if c.verdict == PolicyVerdict::Denied {
            drops.get_or_create(&labels).inc_by(c.packets);
        }
        labels.push(("verdict", c.verdict.name().to_owned()));
        verdicts.get_or_create(&labels).inc_by(c.packets);
    }
    for row in datapath {
        let key = row.key;
        let labels = vec![
            ("interface", interface(key.ifindex)),
            (
                "direction",
                Direction::from_u8(key.direction)
                    .map_or("?", Direction::name)
                    .to_owned(),
            ),
            (
                "family",
                IpFamily::from_u8(key.family)
                    .map_or("?", IpFamily::name)
                    .to_owned(),
            ),
            ("protocol", protocol_name(key.protocol)),
        ];
        packets.get_or_create(&labels).inc_by(row.value.packets);
        bytes.get_or_create(&labels).inc_by(row.value.bytes);
    }
    let mut out = String::new();
    encode(&mut out, &registry)?;
    Ok(out)
}

/// The interface's name in this network namespace, or `if<index>`.
fn interface_name(ifindex: u32) -> String {
    nix::net::if_::if_indextoname(ifindex).map_or_else(
        |_| format!("if{ifindex}"),
        |name| name.to_string_lossy().into_owned(),
    )
}

/// The pods bound here by address: (namespace, name).
fn local_pods(view: &ViewReader) -> BTreeMap<Ipv4Addr, (String, String)> {
    let mut out = BTreeMap::new();
    for pod in view.pods().values() {
        let Some(status) = &pod.status else { continue };
        let ips = status
            .pod_ips
            .iter()
            .flatten()
            .map(|p| p.ip.as_str())
            .chain(status.pod_ip.as_deref());
        for ip in ips.filter_map(|s| s.parse::<Ipv4Addr>().ok()) {
            out.insert(
                ip,
                (
                    pod.metadata.namespace.clone().unwrap_or_default(),
                    pod.metadata.name.clone().unwrap_or_default(),
                ),
            );
        }
    }
    out
}

/// What `/metrics` reads: the pinned maps, the view (pod names) and the
/// sync loops' counters.
#[derive(Clone, Debug)]
pub struct MetricsSources {
    /// Where the datapath's maps are pinned.
    pub pin_dir: std::path::PathBuf,
    /// The node's view.
    pub view: ViewReader,
    /// The sync loops' runs.
    pub runs: SyncRuns,
}

/// One scrape: reads the pinned counters and encodes them.
fn scrape(sources: &MetricsSources) -> Result<String, String> {
    let pin_dir = &sources.pin_dir;
    let policy = PolicyMaps::open(pin_dir)
        .and_then(|maps| maps.counters())
        .map_err(|e| format!("failed to read the policy counters: {e}"))?;
    let datapath = skep_datapath::metrics::read_pinned(pin_dir)
        .map_err(|e| format!("failed to read the datapath counters: {e}"))?;
    encode_text(
        &policy,
        &local_pods(&sources.view),
        &datapath,
        interface_name,
        &sources.runs,
    )
    .map_err(|e| format!("failed to encode the metrics: {e}"))
}

async fn metrics(sources: Arc<MetricsSources>) -> Response {
    match tokio::task::spawn_blocking(move || scrape(&sources)).await {
        Ok(Ok(text)) => (
            [(
                header::CONTENT_TYPE,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
            )],
            text,
        )
            .into_response(),
        Ok(Err(message)) => {
            tracing::warn!(%message, "failed to serve /metrics");
            (StatusCode::INTERNAL_SERVER_ERROR, message).into_response()
        }
        Err(err) => (StatusCode::INTERNAL_SERVER_ERROR, err.to_string()).into_response(),
    }
}

/// Serves `/metrics` where `listen` says (`node_ip` for
/// [`MetricsListen::NodeIp`]), until aborted. A port that cannot be bound
/// is logged; the agent runs on without it.
pub async fn serve(listen: MetricsListen, node_ip: Ipv4Addr, sources: MetricsSources) {
    let addr = match listen {
        MetricsListen::Off => return,
        MetricsListen::NodeIp => SocketAddr::from((node_ip, DEFAULT_METRICS_PORT)),
        MetricsListen::At(addr) => addr,
    };
    let sources = Arc::new(sources);
    let listener = match tokio::net::TcpListener::bind(addr).await {
        Ok(listener) => listener,
        Err(err) => {
            tracing::error!(%addr, %err, "failed to listen for /metrics; serving none");
            return;
        }
    };
    tracing::info!(
        addr = %listener.local_addr().unwrap_or(addr),
        "serving Prometheus metrics at /metrics"
    );
    let app = Router::new().route(
        "/metrics",
        get({
            let sources = Arc::clone(&sources);
            move || metrics(Arc::clone(&sources))
        }),
    );
    if let Err(err) = axum::serve(listener, app).await {
        tracing::error!(%err, "the /metrics server stopped");
    }
}

#[cfg(test)]
mod tests {
    use skep_ebpf_common::{MetricsKey, MetricsValue};

    use super::*;

    #[test]
    fn counters_are_encoded_with_pod_names_and_drops_apart() {
        let a = Ipv4Addr::new(10, 244, 1, 5);
        let unknown = Ipv4Addr::new(10, 244, 1, 9);
        let counter = |endpoint, direction, verdict, packets| PolicyCounter {
            endpoint,
            direction,
            verdict,
            packets,
            bytes: packets * 100,
        };
        let policy = [
            counter(a, Direction::Ingress, PolicyVerdict::Allowed, 3),
            counter(a, Direction::Ingress, PolicyVerdict::Denied, 7),
            counter(unknown, Direction::Egress, PolicyVerdict::Denied, 2),
        ];
        let pods = BTreeMap::from([(a, ("x".to_owned(), "a".to_owned()))]);
        let datapath = [MetricsRow {
            key: MetricsKey {
                ifindex: 4,
                direction: Direction::Egress as u8,
                family: IpFamily::Ipv4 as u8,
                protocol: 6,
                pad: 0,
            },
            value: MetricsValue {
                packets: 11,
                bytes: 1_100,
            },
        }];
        let runs = SyncRuns::default();
        runs.count(SyncLoop::Policy, Cause::Change);
        runs.count(SyncLoop::Policy, Cause::Change);
        runs.count(SyncLoop::Routes, Cause::Resync);
        assert_eq!(runs.clone().get(SyncLoop::Policy, Cause::Change), 2);
        let text =
            encode_text(&policy, &pods, &datapath, |i| format!("veth{i}"), &runs).expect("encodes");
        for line in [
            "# TYPE skep_policy_verdicts counter",
            r#"skep_policy_verdicts_total{namespace="x",pod="a",direction="ingress",verdict="allowed"} 3"#,
            r#"skep_policy_verdicts_total{namespace="x",pod="a",direction="ingress",verdict="denied"} 7"#,
            r#"skep_policy_drops_total{namespace="x",pod="a",direction="ingress"} 7"#,
            r#"skep_policy_drops_total{namespace="",pod="10.244.1.9",direction="egress"} 2"#,
            r#"skep_datapath_packets_total{interface="veth4",direction="egress",family="ipv4",protocol="tcp"} 11"#,
            r#"skep_datapath_bytes_total{interface="veth4",direction="egress",family="ipv4",protocol="tcp"} 1100"#,
            r#"skep_agent_sync_runs_total{loop="policy",cause="change"} 2"#,
            r#"skep_agent_sync_runs_total{loop="routes",cause="resync"} 1"#,
            "# EOF",
        ] {
            assert!(text.lines().any(|l| l == line), "no {line:?} in\n{text}");
        }
        // An allowed flow is no drop.
        assert!(
            !text.contains(
                r#"skep_policy_drops_total{namespace="x",pod="a",direction="ingress"} 3"#
            )
        );
    }

    #[test]
    fn the_listen_flag_is_off_or_an_address() {
        assert_eq!("off".parse(), Ok(MetricsListen::Off));
        assert_eq!(
            "10.0.0.1:9962".parse(),
            Ok(MetricsListen::At(SocketAddr::from(([10, 0, 0, 1], 9962))))
        );
        assert!("9962".parse::<MetricsListen>().is_err());
    }
}
