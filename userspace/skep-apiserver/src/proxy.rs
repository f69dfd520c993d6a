//! `pods/{name}/log` and `pods/{name}/exec`: checked here the way
//! kube-apiserver checks them (a bound pod, a container of the pod), then
//! served by the agent of the pod's node, as kube-apiserver does with the
//! kubelet's port 10250.
//!
//! The API server dials the node's `InternalIP` at the port in
//! `status.daemonEndpoints.kubeletEndpoint`, over TLS: it presents its
//! kubelet-client certificate, and it requires the node's serving
//! certificate to name the node the pod is bound to (whatever address it
//! dialled). Logs stream through as chunked plain text; exec is an
//! upgrade-aware proxy — the WebSocket kubectl opens (`v5.channel.k8s.io`)
//! is spliced through to the agent, which speaks the channel protocol.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::{
    Extension,
    body::Body,
    extract::{Path, Query, State},
    http::{HeaderMap, HeaderValue, Request, StatusCode, header},
    response::{IntoResponse, Response},
};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName, pem::PemObject as _};
use serde_json::Value;
use skep_api::query::{self, Params};
use skep_api::{ApiError, kinds, object};
use tracing::Instrument as _;

use crate::api::{ApiState, error_response};
use crate::pki::Pki;
use crate::tls::{Identity, TlsError};

/// How long dialling a node may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Dials node agents as the API server.
#[derive(Clone)]
pub struct NodeClient {
    tls: tokio_rustls::TlsConnector,
}

impl NodeClient {
    /// A client presenting the PKI's kubelet-client certificate and
    /// trusting the cluster CA.
    pub fn new(pki: &Pki) -> Result<Self, TlsError> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let pem = |what, pem: &str| {
            CertificateDer::from_pem_slice(pem.as_bytes())
                .map_err(|source| TlsError::Pem { what, source })
        };
        let mut roots = rustls::RootCertStore::empty();
        roots.add(pem("CA certificate", &pki.ca.cert_pem)?)?;
        let key = PrivateKeyDer::from_pem_slice(pki.kubelet_client.key_pem.as_bytes()).map_err(
            |source| TlsError::Pem {
                what: "kubelet client key",
                source,
            },
        )?;
        let mut config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .with_root_certificates(roots)
            .with_client_auth_cert(
                vec![pem(
                    "kubelet client certificate",
                    &pki.kubelet_client.cert_pem,
                )?],
                key,
            )?;
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Self {
            tls: tokio_rustls::TlsConnector::from(Arc::new(config)),
        })
    }

    /// An HTTP/1.1 connection (with upgrades) to node `node` at `addr`.
    async fn connect(&self, node: &str, addr: SocketAddr) -> Result<SendRequest<Body>, ApiError> {
        let unreachable = |why: String| {
            ApiError::unavailable(format!("failed to reach node {node} at {addr}: {why}"))
        };
        let tcp = tokio::time::timeout(CONNECT_TIMEOUT, tokio::net::TcpStream::connect(addr))
            .await
            .map_err(|_| unreachable("connection timed out".into()))?
            .map_err(|e| unreachable(e.to_string()))?;
        let _ = tcp.set_nodelay(true);
        let name = ServerName::try_from(node.to_owned())
            .map_err(|e| unreachable(format!("invalid node name: {e}")))?;
        let tls = tokio::time::timeout(CONNECT_TIMEOUT, self.tls.connect(name, tcp))
            .await
            .map_err(|_| unreachable("TLS handshake timed out".into()))?
            .map_err(|e| unreachable(e.to_string()))?;
        let (send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
            .await
            .map_err(|e| unreachable(e.to_string()))?;
        tokio::spawn(async move {
            if let Err(err) = conn.with_upgrades().await {
                tracing::debug!(%err, "node connection ended with an error");
            }
        });
        Ok(send)
    }
}

/// Where node `name`'s agent serves: its `InternalIP` and kubelet port.
async fn node_endpoint(state: &ApiState, name: &str) -> Result<SocketAddr, ApiError> {
    let node = state
        .objects
        .try_get(&kinds::NODE, "", name)
        .await?
        .ok_or_else(|| ApiError::unavailable(format!("node {name} is not registered")))?;
    let addresses = object::array(&node, &["status", "addresses"]);
    let address = ["InternalIP", "ExternalIP"].iter().find_map(|kind| {
        addresses
            .iter()
            .find(|a| object::get_str(a, &["type"]) == Some(*kind))
            .and_then(|a| object::get_str(a, &["address"]))
            .and_then(|a| a.parse::<std::net::IpAddr>().ok())
    });
    let port = node
        .pointer("/status/daemonEndpoints/kubeletEndpoint/Port")
        .and_then(Value::as_u64)
        .and_then(|p| u16::try_from(p).ok())
        .filter(|p| *p != 0);
    match (address, port) {
        (Some(ip), Some(port)) => Ok(SocketAddr::new(ip, port)),
        _ => Err(ApiError::unavailable(format!(
            "node {name} does not report an address and port for logs and exec"
        ))),
    }
}

/// The pod's node and the container a request is for, checked like
/// kube-apiserver: the pod must be bound, the container one of its own
/// (the only one when none is named).
fn target(pod: &Value, container: Option<&str>) -> Result<(String, String), ApiError> {
    let name = object::name(pod);
    let Some(node) = object::get_str(pod, &["spec", "nodeName"]).filter(|n| !n.is_empty()) else {
        return Err(ApiError::bad_request(format!(
            "pod {name} does not have a host assigned"
        )));
    };
    let names = |list: &str| -> Vec<&str> {
        object::array(pod, &["spec", list])
            .iter()
            .filter_map(|c| object::get_str(c, &["name"]))
            .collect()
    };
    let (containers, init) = (names("containers"), names("initContainers"));
    let container = match container.filter(|c| !c.is_empty()) {
        Some(c) if containers.contains(&c) || init.contains(&c) => c.to_owned(),
        Some(c) => {
            return Err(ApiError::bad_request(format!(
                "container {c} is not valid for pod {name}"
            )));
        }
        None if containers.len() == 1 => containers[0].to_owned(),
        None => {
            let mut message = format!(
                "a container name must be specified for pod {name}, choose one of: [{}]",
                containers.join(" ")
            );
            if !init.is_empty() {
                let _ = write!(
                    message,
                    " or one of the init containers: [{}]",
                    init.join(" ")
                );
            }
            return Err(ApiError::bad_request(message));
        }
    };
    Ok((node.to_owned(), container))
}

/// Percent-encodes a query value.
fn encode(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for b in value.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~:".contains(&b) {
            out.push(char::from(b));
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    out
}

/// The booleans of `pods/log` and `pods/exec`, which the node reads only
/// as `true`.
const BOOLEAN_PARAMS: &[&str] = &[
    "follow",
    "previous",
    "timestamps",
    "stdin",
    "stdout",
    "stderr",
    "tty",
];

/// A parameter's value as forwarded to the node: a boolean spelled
/// `true`/`false` after upstream's reading (the Python client sends `True`).
fn node_value<'a>(name: &str, value: &'a str) -> &'a str {
    match BOOLEAN_PARAMS.contains(&name) {
        true if query::parse_bool(value) => "true",
        true => "false",
        false => value,
    }
}

/// The query parameters of `pods/log` the node serves.
const LOG_PARAMS: &[&str] = &[
    "follow",
    "previous",
    "tailLines",
    "timestamps",
    "sinceSeconds",
    "sinceTime",
    "limitBytes",
];

/// `GET pods/{name}/log`: streams the container's log from its node.
pub async fn pod_log(state: &ApiState, pod: &Value, params: &Params) -> Result<Response, ApiError> {
    let (node, container) = target(pod, params.get("container"))?;
    for number in ["tailLines", "sinceSeconds", "limitBytes"] {
        params.int64(number)?;
    }
    let query: Vec<String> = LOG_PARAMS
        .iter()
        .filter_map(|k| {
            params
                .get(k)
                .map(|v| format!("{k}={}", encode(node_value(k, v))))
        })
        .collect();
    let path = format!(
        "/containerLogs/{}/{}/{container}?{}",
        object::namespace(pod),
        object::name(pod),
        query.join("&")
    );
    let addr = node_endpoint(state, &node).await?;
    let mut send = state.nodes.connect(&node, addr).await?;
    let request = Request::get(&path)
        .header(header::HOST, addr.to_string())
        .body(Body::empty())
        .map_err(ApiError::internal)?;
    let response = send
        .send_request(request)
        .await
        .map_err(|e| ApiError::unavailable(format!("failed to get logs from node {node}: {e}")))?;
    let (parts, body) = response.into_parts();
    let content_type = parts
        .headers
        .get(header::CONTENT_TYPE)
        .cloned()
        .unwrap_or_else(|| HeaderValue::from_static("text/plain"));
    Ok((
        parts.status,
        [(header::CONTENT_TYPE, content_type)],
        Body::new(body),
    )
        .into_response())
}

/// The headers of an upgrade request (WebSocket or SPDY) that go on to the
/// node, and those of its `101` that come back.
const UPGRADE_HEADERS: &[&str] = &[
    "connection",
    "upgrade",
    "sec-websocket-key",
    "sec-websocket-version",
    "sec-websocket-protocol",
    "sec-websocket-accept",
    "x-stream-protocol-version",
];

fn copy_upgrade_headers(from: &HeaderMap, to: &mut HeaderMap) {
    for name in UPGRADE_HEADERS {
        for value in from.get_all(*name) {
            to.append(*name, value.clone());
        }
    }
}

/// `pods/{name}/exec` (kubectl sends a WebSocket upgrade, GET, and falls
/// back to SPDY, POST, only when that fails): checked here, then the
/// upgraded connection is spliced through to the node's agent.
pub async fn pod_exec(
    State(state): State<Arc<ApiState>>,
    identity: Option<Extension<Identity>>,
    Path((namespace, name)): Path<(String, String)>,
    Query(pairs): Query<Vec<(String, String)>>,
    mut req: Request<Body>,
) -> Response {
    let params = Params::new(pairs);
    let method = req.method().clone();
    let path = req.uri().path().to_owned();
    let target = crate::request::parse(&method, &path, false);
    let user = match crate::api::gate(
        &state,
        identity,
        &method,
        &path,
        target.as_ref(),
        &params,
        req.headers(),
    )
    .await
    {
        Ok(user) => user,
        Err(err) => return error_response(&err),
    };
    // A WebSocket exec is a GET; since v1.31 it also needs `create` on
    // pods/exec, as the SPDY POST always did
    // (`AuthorizePodWebsocketUpgradeCreatePermission`).
    if method == axum::http::Method::GET {
        let create = skep_rbac::Attributes::resource(
            user.clone(),
            "create",
            skep_rbac::ResourceAttributes {
                api_group: String::new(),
                resource: "pods".into(),
                subresource: "exec".into(),
                name: name.clone(),
                namespace: namespace.clone(),
            },
        );
        if let Err(err) = state.authorizer.check(&create) {
            return error_response(&err);
        }
    }
    let span = tracing::info_span!("exec", pod = %format!("{namespace}/{name}"), user = %user.name);
    match exec(&state, &namespace, &name, &mut req)
        .instrument(span)
        .await
    {
        Ok(response) => response,
        Err(err) => error_response(&err),
    }
}

async fn exec(
    state: &ApiState,
    namespace: &str,
    name: &str,
    req: &mut Request<Body>,
) -> Result<Response, ApiError> {
    let Query(pairs): Query<Vec<(String, String)>> =
        Query::try_from_uri(req.uri()).map_err(|e| ApiError::bad_request(e.body_text()))?;
    let params = Params::new(pairs);
    let pod = state.objects.get(&kinds::POD, namespace, name).await?;
    let (node, container) = target(&pod, params.get("container"))?;
    if params.get("command").is_none() {
        return Err(ApiError::bad_request(
            "you must specify at least one command for the container",
        ));
    }
    let addr = node_endpoint(state, &node).await?;
    let path = format!(
        "/exec/{namespace}/{name}/{container}?{}",
        params
            .pairs()
            .iter()
            .map(|(k, v)| format!("{}={}", encode(k), encode(node_value(k, v))))
            .collect::<Vec<_>>()
            .join("&")
    );
    let mut outgoing = Request::builder()
        .method(req.method().clone())
        .uri(&path)
        .header(header::HOST, addr.to_string())
        .body(Body::empty())
        .map_err(ApiError::internal)?;
    copy_upgrade_headers(req.headers(), outgoing.headers_mut());
    let client_upgrade = hyper::upgrade::on(&mut *req);
    let mut send = state.nodes.connect(&node, addr).await?;
    let mut response = send
        .send_request(outgoing)
        .await
        .map_err(|e| ApiError::unavailable(format!("failed to exec on node {node}: {e}")))?;
    if response.status() != StatusCode::SWITCHING_PROTOCOLS {
        // The node's own answer (a Status): pass it on.
        let (parts, body) = response.into_parts();
        let mut out = Response::new(Body::new(body));
        *out.status_mut() = parts.status;
        if let Some(ct) = parts.headers.get(header::CONTENT_TYPE) {
            out.headers_mut().insert(header::CONTENT_TYPE, ct.clone());
        }
        return Ok(out);
    }
    let mut switching = Response::new(Body::empty());
    *switching.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    copy_upgrade_headers(response.headers(), switching.headers_mut());
    let node_upgrade = hyper::upgrade::on(&mut response);
    tokio::spawn(async move {
        let (client, node_side) = match tokio::try_join!(client_upgrade, node_upgrade) {
            Ok(pair) => pair,
            Err(err) => {
                tracing::debug!(%err, "exec upgrade failed");
                return;
            }
        };
        let (mut client, mut node_side) = (TokioIo::new(client), TokioIo::new(node_side));
        if let Err(err) = tokio::io::copy_bidirectional(&mut client, &mut node_side).await {
            tracing::debug!(%err, "exec stream ended with an error");
        }
    });
    Ok(switching)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn pod(node: &str, containers: &[&str], init: &[&str]) -> Value {
        let list = |names: &[&str]| -> Vec<Value> {
            names
                .iter()
                .map(|n| json!({"name": n, "image": "x"}))
                .collect()
        };
        json!({
            "metadata": {"name": "p", "namespace": "default"},
            "spec": {"nodeName": node, "containers": list(containers), "initContainers": list(init)},
        })
    }

    #[test]
    fn containers_are_checked_like_kube_apiserver() {
        let one = pod("n1", &["app"], &[]);
        assert_eq!(
            target(&one, None).ok(),
            Some(("n1".to_owned(), "app".to_owned()))
        );
        let two = pod("n1", &["a", "b"], &["setup"]);
        assert_eq!(
            target(&two, Some("setup")).ok().map(|t| t.1),
            Some("setup".into())
        );
        let err = target(&two, None).err().map(|e| e.to_status());
        assert_eq!(err.as_ref().map(|s| s["code"].clone()), Some(json!(400)));
        assert!(
            err.and_then(|s| s["message"].as_str().map(str::to_owned))
                .is_some_and(
                    |m| m.contains("choose one of: [a b] or one of the init containers: [setup]")
                )
        );
        let bad = target(&one, Some("nope")).err().map(|e| e.to_status());
        assert_eq!(
            bad.map(|s| s["message"].clone()),
            Some(json!("container nope is not valid for pod p"))
        );
        let unbound = target(&pod("", &["app"], &[]), None)
            .err()
            .map(|e| e.code());
        assert_eq!(unbound, Some(400));
    }

    #[test]
    fn query_values_are_encoded() {
        assert_eq!(
            encode("2026-01-01T00:00:00+01:00"),
            "2026-01-01T00:00:00%2B01:00"
        );
        assert_eq!(encode("true"), "true");
    }
}
