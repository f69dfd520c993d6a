//! The node's HTTPS endpoint (the kubelet's port 10250): the API server
//! streams container logs and runs `kubectl exec` through it.
//!
//! - `GET /containerLogs/{namespace}/{pod}/{container}?follow&previous&tailLines&timestamps&sinceSeconds&sinceTime&limitBytes`:
//!   the container's CRI log file as plain text ([`skep_runtime::logs`]);
//!   `follow` streams until the container ends or the client goes.
//! - `GET /exec/{namespace}/{pod}/{container}?command=…&stdin&stdout&stderr`:
//!   a WebSocket in the remote-command channel protocol
//!   ([`crate::remotecommand`]) running the command in the container.
//! - `GET /healthz`.
//!
//! TLS with the node's serving certificate (from the node kubeconfig, see
//! `skep_proto::ServingCertificate`). Every request, `/healthz` included
//! (as on the kubelet's port), is authenticated and authorized as the
//! kubelet's webhook mode does it ([`crate::auth`]): a client certificate
//! from the cluster CA (optional) or a bearer token the API server accepts,
//! then a SubjectAccessReview on `nodes/proxy` (or the subresource the path
//! names) of this node. The API server's kubelet client holds
//! `system:kubelet-api-admin`; a pod's ServiceAccount token or another
//! node's certificate is refused with upstream's
//! `Forbidden (user=…, verb=…, resource=nodes, subresource=proxy)`. Errors
//! are Kubernetes `Status` objects carrying upstream's messages.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Extension, Path, Query, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use futures::{SinkExt as _, StreamExt as _};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::service::TowerToHyperService;
use k8s_openapi::api::core::v1::Pod;
use rustls::RootCertStore;
use rustls::server::WebPkiClientVerifier;
use rustls_pki_types::pem::PemObject as _;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use serde_json::json;
use skep_runtime::logs::{self, LineSplitter, LogOptions};
use skep_runtime::runtime::ContainerState;
use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWriteExt as _};
use tokio::sync::mpsc;
use tower::ServiceExt as _;

use skep_user::UserInfo;

use crate::auth::NodeAuth;
use crate::remotecommand::{self, ClientMessage};
use crate::view::ViewReader;

/// What the node server reads: the view (which pods are here), the
/// runtime (containers' state, exec) and the pods' log directories, and
/// who decides who may call it.
#[derive(Debug, Clone)]
pub struct ServerParts {
    /// The node's view.
    pub view: ViewReader,
    /// The containers.
    pub runtime: Arc<skep_runtime::runtime::Runtime>,
    /// Where pods' files (and logs) live, one directory per pod UID.
    pub pods_dir: PathBuf,
    /// Authentication and authorization of every request.
    pub auth: NodeAuth,
}

impl ServerParts {
    /// Where pod `uid`'s files live.
    pub fn pod_dir(&self, uid: &str) -> PathBuf {
        self.pods_dir.join(uid)
    }
}

/// How often a followed log is checked for new lines.
const FOLLOW_POLL: Duration = Duration::from_millis(100);

/// Why the node server could not start.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// A PEM blob did not parse.
    #[error("failed to parse the {what} PEM")]
    Pem {
        /// Which blob.
        what: &'static str,
        /// What the parser reported.
        #[source]
        source: rustls_pki_types::pem::Error,
    },
    /// rustls refused the configuration.
    #[error("failed to build the node server's TLS configuration")]
    Rustls(#[from] rustls::Error),
    /// The client verifier could not be built.
    #[error("failed to build the client certificate verifier")]
    Verifier(#[from] rustls::server::VerifierBuilderError),
    /// The address could not be bound.
    #[error("failed to listen on {addr}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
}

/// The user a verified client certificate names: CN = user, O = groups
/// (`None` without a CN, as the x509 authenticator has no user then).
fn certificate_user(der: &CertificateDer<'_>) -> Option<UserInfo> {
    let (_, cert) = x509_parser::parse_x509_certificate(der.as_ref()).ok()?;
    let subject = cert.subject();
    let name = subject
        .iter_common_name()
        .find_map(|cn| cn.as_str().ok())
        .filter(|cn| !cn.is_empty())?;
    Some(UserInfo {
        name: name.to_owned(),
        groups: subject
            .iter_organization()
            .filter_map(|o| o.as_str().ok())
            .map(str::to_owned)
            .collect(),
        ..UserInfo::default()
    })
}

/// A bound node server: [`NodeServer::serve`] runs it.
pub struct NodeServer {
    listener: tokio::net::TcpListener,
    tls: Arc<rustls::ServerConfig>,
}

impl NodeServer {
    /// Binds `addr` (port 0 picks a free port) with the node's serving
    /// certificate; a client certificate, if presented, must be from
    /// `ca_pem` (callers without one may still bring a bearer token).
    pub async fn bind(
        addr: SocketAddr,
        ca_pem: &str,
        serving: &skep_proto::ServingCertificate,
    ) -> Result<Self, ServerError> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let pem = |what, pem: &str| {
            CertificateDer::from_pem_slice(pem.as_bytes())
                .map_err(|source| ServerError::Pem { what, source })
        };
        let mut roots = RootCertStore::empty();
        roots.add(pem("CA certificate", ca_pem)?)?;
        let verifier =
            WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
                .allow_unauthenticated()
                .build()?;
        let key = PrivateKeyDer::from_pem_slice(serving.key_pem.as_bytes()).map_err(|source| {
            ServerError::Pem {
                what: "serving key",
                source,
            }
        })?;
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .with_client_cert_verifier(verifier)
            .with_single_cert(vec![pem("serving certificate", &serving.cert_pem)?], key)?;
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|source| ServerError::Bind { addr, source })?;
        Ok(Self {
            listener,
            tls: Arc::new(config),
        })
    }

    /// The address it listens on.
    pub fn local_addr(&self) -> Option<SocketAddr> {
        self.listener.local_addr().ok()
    }

    /// Serves until the task is dropped.
    pub async fn serve(self, shared: Arc<ServerParts>) {
        let auth = shared.auth.clone();
        let app = router(shared);
        let acceptor = tokio_rustls::TlsAcceptor::from(self.tls);
        loop {
            let (tcp, peer) = match self.listener.accept().await {
                Ok(conn) => conn,
                Err(err) => {
                    tracing::warn!(%err, "failed to accept a connection");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            let _ = tcp.set_nodelay(true);
            let acceptor = acceptor.clone();
            let app = app.clone();
            let auth = auth.clone();
            tokio::spawn(async move {
                let stream = match acceptor.accept(tcp).await {
                    Ok(stream) => stream,
                    Err(err) => {
                        tracing::debug!(%err, %peer, "TLS handshake failed");
                        return;
                    }
                };
                let certificate = stream
                    .get_ref()
                    .1
                    .peer_certificates()
                    .and_then(|certs| certs.first())
                    .and_then(certificate_user);
                let service =
                    tower::service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                        let (app, auth, certificate) =
                            (app.clone(), auth.clone(), certificate.clone());
                        async move {
                            let (mut parts, body) = req.into_parts();
                            match admit(&auth, certificate.as_ref(), &parts).await {
                                Ok(user) => {
                                    parts.extensions.insert(user);
                                    app.oneshot(hyper::Request::from_parts(parts, Body::new(body)))
                                        .await
                                }
                                Err(refused) => Ok(refused),
                            }
                        }
                    });
                let result = auto::Builder::new(TokioExecutor::new())
                    .serve_connection_with_upgrades(
                        TokioIo::new(stream),
                        TowerToHyperService::new(service),
                    )
                    .await;
                if let Err(err) = result {
                    tracing::debug!(%err, %peer, "connection ended with an error");
                }
            });
        }
    }
}

/// The caller of the request `req` heads once it may make it, else the
/// refusal to answer.
async fn admit(
    auth: &NodeAuth,
    certificate: Option<&UserInfo>,
    req: &axum::http::request::Parts,
) -> Result<UserInfo, Response> {
    auth.admit(certificate, &req.method, req.uri.path(), &req.headers)
        .await
        .map_err(|refused| {
            let (code, reason) = refused.status();
            status(code, reason, &refused.to_string())
        })
}

fn router(shared: Arc<ServerParts>) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route(
            "/containerLogs/{namespace}/{pod}/{container}",
            get(container_logs),
        )
        .route("/exec/{namespace}/{pod}/{container}", get(exec).post(exec))
        .fallback(|| async { status(StatusCode::NOT_FOUND, "NotFound", "404 page not found") })
        .with_state(shared)
}

/// A Kubernetes `Status` error response.
fn status(code: StatusCode, reason: &str, message: &str) -> Response {
    let body = json!({
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason,
        "code": code.as_u16(),
    });
    (
        code,
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        serde_json::to_vec(&body).unwrap_or_default(),
    )
        .into_response()
}

fn bad_request(message: &str) -> Response {
    status(StatusCode::BAD_REQUEST, "BadRequest", message)
}

/// Pod `namespace/name` bound here: its UID and object.
fn find_pod(shared: &ServerParts, namespace: &str, name: &str) -> Option<(String, Pod)> {
    shared
        .view
        .pods()
        .iter()
        .find(|(_, p)| {
            p.metadata.namespace.as_deref() == Some(namespace)
                && p.metadata.name.as_deref() == Some(name)
        })
        .map(|(uid, p)| (uid.clone(), Pod::clone(p)))
}

/// The container's waiting reason from the pod's status, if any.
fn waiting_reason(pod: &Pod, container: &str) -> String {
    pod.status
        .as_ref()
        .into_iter()
        .flat_map(|s| {
            s.container_statuses
                .iter()
                .flatten()
                .chain(s.init_container_statuses.iter().flatten())
        })
        .find(|c| c.name == container)
        .and_then(|c| c.state.as_ref()?.waiting.as_ref()?.reason.clone())
        .unwrap_or_else(|| "ContainerCreating".into())
}

fn flag(params: &[(String, String)], name: &str) -> bool {
    params
        .iter()
        .any(|(k, v)| k == name && (v == "true" || v == "1"))
}

fn param<'a>(params: &'a [(String, String)], name: &str) -> Option<&'a str> {
    params
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

/// The options of a log request, or why they are invalid.
fn log_options(params: &[(String, String)]) -> Result<LogOptions, String> {
    let number = |name: &str| -> Result<Option<u64>, String> {
        param(params, name)
            .map(|v| {
                v.parse::<u64>()
                    .map_err(|_| format!("invalid {name} {v:?}"))
            })
            .transpose()
    };
    let since = match (number("sinceSeconds")?, param(params, "sinceTime")) {
        (Some(secs), _) => Some(logs::cri_timestamp(
            SystemTime::now()
                .checked_sub(Duration::from_secs(secs))
                .unwrap_or(SystemTime::UNIX_EPOCH),
        )),
        (None, Some(time)) => Some(
            // RFC 3339 in UTC ("…Z") compares like the files' timestamps
            // once both have nine fractional digits.
            cri_from_rfc3339(time).ok_or_else(|| format!("invalid sinceTime {time:?}"))?,
        ),
        (None, None) => None,
    };
    Ok(LogOptions {
        follow: flag(params, "follow"),
        previous: flag(params, "previous"),
        tail_lines: number("tailLines")?.and_then(|n| usize::try_from(n).ok()),
        timestamps: flag(params, "timestamps"),
        since,
        limit_bytes: number("limitBytes")?,
    })
}

/// `2006-01-02T15:04:05[.frac]Z` → the CRI form with nine fractional digits.
fn cri_from_rfc3339(time: &str) -> Option<String> {
    let t = time.strip_suffix('Z')?;
    let (secs, frac) = t.split_once('.').unwrap_or((t, ""));
    if secs.len() != 19 || frac.len() > 9 || !frac.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some(format!("{secs}.{frac:0<9}Z"))
}

async fn container_logs(
    State(shared): State<Arc<ServerParts>>,
    Path((namespace, name, container)): Path<(String, String, String)>,
    Query(params): Query<Vec<(String, String)>>,
) -> Response {
    let opts = match log_options(&params) {
        Ok(o) => o,
        Err(why) => return bad_request(&why),
    };
    let Some((uid, pod)) = find_pod(&shared, &namespace, &name) else {
        return status(
            StatusCode::NOT_FOUND,
            "NotFound",
            &format!("pod {namespace}/{name} is not on this node"),
        );
    };
    let files = logs::log_files(&shared.pod_dir(&uid).join("logs").join(&container));
    let chosen = if opts.previous {
        if files.len() < 2 {
            return bad_request(&format!(
                "previous terminated container \"{container}\" in pod \"{name}\" not found"
            ));
        }
        files[files.len() - 2].clone()
    } else {
        match files.last() {
            Some(f) => f.clone(),
            None => {
                return bad_request(&format!(
                    "container \"{container}\" in pod \"{name}\" is waiting to start: {}",
                    waiting_reason(&pod, &container)
                ));
            }
        }
    };
    let (attempt, path) = chosen;
    let id = format!("{uid}-{container}-{attempt}");
    tracing::debug!(pod = %format!("{namespace}/{name}"), %container, attempt, follow = opts.follow, "serving logs");
    let (tx, rx) = mpsc::channel::<Result<Bytes, std::io::Error>>(16);
    tokio::spawn(stream_log(shared, path, id, opts, tx));
    let body = Body::from_stream(futures::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|item| (item, rx))
    }));
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"))],
        body,
    )
        .into_response()
}

/// Sends the log file at `path` (container `id`'s) to `tx`: what is there
/// already, then, when following, new lines until the container ends or
/// the receiver goes.
async fn stream_log(
    shared: Arc<ServerParts>,
    path: PathBuf,
    id: String,
    opts: LogOptions,
    tx: mpsc::Sender<Result<Bytes, std::io::Error>>,
) {
    let mut file = match tokio::fs::File::open(&path).await {
        Ok(f) => f,
        Err(err) => {
            let _ = tx.send(Err(err)).await;
            return;
        }
    };
    let mut left = opts.limit_bytes.unwrap_or(u64::MAX);
    let mut send = async |mut data: Vec<u8>| -> bool {
        if data.is_empty() {
            return true;
        }
        let cap = usize::try_from(left).unwrap_or(usize::MAX);
        let last = data.len() >= cap;
        data.truncate(cap);
        left -= data.len() as u64;
        tx.send(Ok(Bytes::from(data))).await.is_ok() && !last
    };
    let mut splitter = LineSplitter::default();
    let mut buf = Vec::new();
    if let Err(err) = file.read_to_end(&mut buf).await {
        tracing::debug!(%err, path = %path.display(), "failed to read log");
        return;
    }
    let lines = splitter.push(&buf);
    if !send(logs::render_initial(&lines, &opts)).await || !opts.follow {
        return;
    }
    let mut chunk = vec![0u8; 64 * 1024];
    let mut ended = false;
    loop {
        let n = match file.read(&mut chunk).await {
            Ok(n) => n,
            Err(err) => {
                tracing::debug!(%err, path = %path.display(), "failed to read log");
                return;
            }
        };
        if n > 0 {
            let lines = splitter.push(&chunk[..n]);
            if !send(logs::render_lines(&lines, &opts)).await {
                return;
            }
            continue;
        }
        if ended {
            return;
        }
        // At the end of the file: done once the container has ended (one
        // more read picks up what it wrote last).
        ended = !matches!(
            shared.runtime.status(&id).await.map(|s| s.state),
            Ok(ContainerState::Running { .. } | ContainerState::Created)
        );
        if !ended {
            tokio::select! {
                () = tokio::time::sleep(FOLLOW_POLL) => {}
                () = tx.closed() => return,
            }
        }
    }
}

/// What an exec request asked for.
#[derive(Debug, Clone)]
struct ExecRequest {
    argv: Vec<String>,
    stdin: bool,
    stdout: bool,
    stderr: bool,
}

async fn exec(
    State(shared): State<Arc<ServerParts>>,
    Extension(caller): Extension<UserInfo>,
    Path((namespace, name, container)): Path<(String, String, String)>,
    Query(params): Query<Vec<(String, String)>>,
    ws: Result<WebSocketUpgrade, axum::extract::ws::rejection::WebSocketUpgradeRejection>,
) -> Response {
    let req = ExecRequest {
        argv: params
            .iter()
            .filter(|(k, _)| k == "command")
            .map(|(_, v)| v.clone())
            .collect(),
        stdin: flag(&params, "stdin") || flag(&params, "input"),
        stdout: flag(&params, "stdout") || flag(&params, "output"),
        stderr: flag(&params, "stderr") || flag(&params, "error"),
    };
    if req.argv.is_empty() {
        return bad_request("you must specify at least one command for the container");
    }
    if !req.stdin && !req.stdout && !req.stderr {
        return bad_request("you must specify at least 1 of stdin, stdout, stderr");
    }
    if flag(&params, "tty") {
        return bad_request(
            "skep does not allocate terminals for exec yet: run the command without -t/--tty",
        );
    }
    let Some((uid, pod)) = find_pod(&shared, &namespace, &name) else {
        return status(
            StatusCode::NOT_FOUND,
            "NotFound",
            &format!("pod {namespace}/{name} is not on this node"),
        );
    };
    // The container's current instance must be running.
    let running = shared.runtime.list().await.ok().and_then(|list| {
        list.into_iter()
            .filter(|c| c.meta.pod_uid == uid && c.meta.name == container)
            .max_by_key(|c| c.meta.attempt)
            .filter(|c| matches!(c.state, ContainerState::Running { .. }))
    });
    let Some(running) = running else {
        return bad_request(&format!(
            "container \"{container}\" in pod \"{name}\" is not running ({})",
            waiting_reason(&pod, &container)
        ));
    };
    let Ok(ws) = ws else {
        return bad_request(
            "skep serves exec over WebSocket only (subprotocol v5.channel.k8s.io; kubectl ≥ 1.30)",
        );
    };
    let offered: Vec<String> = ws
        .requested_protocols()
        .filter_map(|p| p.to_str().ok())
        .flat_map(|p| p.split(',').map(|s| s.trim().to_owned()))
        .collect();
    let Some(protocol) = remotecommand::PROTOCOLS
        .iter()
        .find(|p| offered.iter().any(|o| o == *p))
    else {
        return bad_request(&format!(
            "none of the requested subprotocols {offered:?} is served: {}",
            remotecommand::PROTOCOLS.join(", ")
        ));
    };
    let id = running.meta.id;
    tracing::info!(pod = %format!("{namespace}/{name}"), container = %id, argv = ?req.argv, user = %caller.name, "exec");
    ws.protocols([*protocol])
        .on_upgrade(move |socket| exec_session(shared, socket, id, req))
}

/// Runs the command and carries its streams over `socket` until it ends
/// (then its status on the error channel, then a normal close) or the
/// client goes (then the command is killed).
async fn exec_session(shared: Arc<ServerParts>, socket: WebSocket, id: String, req: ExecRequest) {
    let (mut sink, mut incoming) = socket.split();
    let mut process = match shared
        .runtime
        .exec_process(&id, &req.argv, req.stdin, req.stdout)
    {
        Ok(p) => p,
        Err(err) => {
            let doc = remotecommand::internal_error(&err.to_string());
            let _ = sink
                .send(Message::Binary(remotecommand::status_frame(&doc).into()))
                .await;
            let _ = sink.send(close_normal()).await;
            return;
        }
    };
    let (tx, mut rx) = mpsc::channel::<Vec<u8>>(16);
    if let Some(out) = process.child.stdout.take() {
        tokio::spawn(pump(out, remotecommand::STDOUT, tx.clone()));
    }
    let stderr = process.child.stderr.take().map(|err| {
        tokio::spawn(pump_stderr(
            err,
            tx.clone(),
            process.pid_file().to_owned(),
            req.stderr,
        ))
    });
    drop(tx);

    // The client's messages: stdin, its close, and the end of the socket.
    let mut stdin = process.child.stdin.take();
    let (gone_tx, mut gone) = tokio::sync::oneshot::channel::<()>();
    let reader = tokio::spawn(async move {
        while let Some(Ok(msg)) = incoming.next().await {
            match msg {
                Message::Binary(data) => match remotecommand::parse(&data) {
                    ClientMessage::Stdin(bytes) => {
                        if let Some(pipe) = stdin.as_mut()
                            && pipe.write_all(bytes).await.is_err()
                        {
                            stdin = None;
                        }
                    }
                    ClientMessage::Close(remotecommand::STDIN) => stdin = None,
                    _ => {}
                },
                Message::Close(_) => break,
                _ => {}
            }
        }
        let _ = gone_tx.send(());
    });

    loop {
        tokio::select! {
            frame = rx.recv() => match frame {
                Some(frame) => {
                    if sink.send(Message::Binary(frame.into())).await.is_err() {
                        process.kill();
                        return;
                    }
                }
                None => break,
            },
            _ = &mut gone => {
                tracing::debug!(container = %id, "exec client went away; killing the command");
                process.kill();
                return;
            }
        }
    }
    let exit = process.child.wait().await;
    let runc_error = match stderr {
        Some(task) => task.await.ok().flatten(),
        None => None,
    };
    let doc = match (runc_error, exit) {
        (Some(text), _) if !process.started() => remotecommand::internal_error(&format!(
            "OCI runtime exec failed: {}",
            remotecommand::runc_message(&text)
        )),
        (_, Ok(status)) => remotecommand::exit_status(&req.argv, status.code().unwrap_or(-1)),
        (_, Err(err)) => remotecommand::internal_error(&err.to_string()),
    };
    let _ = sink
        .send(Message::Binary(remotecommand::status_frame(&doc).into()))
        .await;
    let _ = sink.send(close_normal()).await;
    // Let the client's close reach the reader, then stop it.
    let _ = tokio::time::timeout(Duration::from_secs(2), &mut gone).await;
    reader.abort();
    drop(process);
}

fn close_normal() -> Message {
    Message::Close(Some(CloseFrame {
        code: 1000,
        reason: "".into(),
    }))
}

/// Copies `from` to the client as channel `channel`.
async fn pump(mut from: impl AsyncRead + Unpin, channel: u8, tx: mpsc::Sender<Vec<u8>>) {
    let mut buf = vec![0u8; 32 * 1024];
    loop {
        match from.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => {
                if tx
                    .send(remotecommand::frame(channel, &buf[..n]))
                    .await
                    .is_err()
                {
                    return;
                }
            }
        }
    }
}

/// Copies the command's stderr to the client (if it asked for it). Until
/// runc has written the command's pid, what arrives may be runc's own
/// error: it is held back, and returned if the command never started.
async fn pump_stderr(
    mut from: tokio::process::ChildStderr,
    tx: mpsc::Sender<Vec<u8>>,
    pid_file: PathBuf,
    forward: bool,
) -> Option<Vec<u8>> {
    let mut held = Vec::new();
    let mut started = false;
    let mut buf = vec![0u8; 32 * 1024];
    let send = async |data: &[u8]| {
        !forward
            || data.is_empty()
            || tx
                .send(remotecommand::frame(remotecommand::STDERR, data))
                .await
                .is_ok()
    };
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        if !started && pid_file.exists() {
            started = true;
            if !send(&std::mem::take(&mut held)).await {
                return None;
            }
        }
        if started {
            if !send(&buf[..n]).await {
                return None;
            }
        } else {
            held.extend_from_slice(&buf[..n]);
        }
    }
    // runc wrote the pid file (or not) before it closed stderr by exiting.
    if started || pid_file.exists() {
        send(&held).await;
        None
    } else {
        Some(held)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn since_time_becomes_a_cri_timestamp() {
        assert_eq!(
            cri_from_rfc3339("2026-01-01T00:00:02Z").as_deref(),
            Some("2026-01-01T00:00:02.000000000Z")
        );
        assert_eq!(
            cri_from_rfc3339("2026-01-01T00:00:02.5Z").as_deref(),
            Some("2026-01-01T00:00:02.500000000Z")
        );
        assert_eq!(cri_from_rfc3339("yesterday"), None);
    }

    #[test]
    fn log_options_from_the_query() {
        let q = |s: &[(&str, &str)]| -> Vec<(String, String)> {
            s.iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect()
        };
        let opts = log_options(&q(&[
            ("follow", "true"),
            ("tailLines", "5"),
            ("timestamps", "true"),
        ]))
        .unwrap_or_default();
        assert!(opts.follow && opts.timestamps && !opts.previous);
        assert_eq!(opts.tail_lines, Some(5));
        assert!(log_options(&q(&[("tailLines", "x")])).is_err());
        let since = log_options(&q(&[("sinceSeconds", "60")])).unwrap_or_default();
        assert!(
            since
                .since
                .is_some_and(|s| s.len() == 30 && s.ends_with('Z'))
        );
    }
}
