//! Node sync: the gRPC service each node agent calls (`proto/node.proto`).
//!
//! A node's watch carries exactly what concerns it: its own Node, every
//! other Node's routing facts (pod CIDRs and addresses: the agent routes to
//! other nodes' pods through them), the pods bound to it, the config maps,
//! secrets and persistent volume claims those pods reference and the
//! persistent volumes those claims are bound to (as the node authorizer
//! limits kubelets in Kubernetes), and what every node's
//! datapath needs (services, endpoint slices, namespaces, network policies,
//! and every pod's policy facts as a `PodPeer`: see [`peer_facts`]).
//! One store watch over `/registry/` is filtered per node; the reference
//! table is rebuilt from a list at the revision the stream resumes from, so
//! a resumed stream is exactly the one that was interrupted.
//!
//! A node also asks here about the callers of its own port (the kubelet's
//! webhook mode): `ReviewToken` and `ReviewAccess` answer a TokenReview and
//! a SubjectAccessReview exactly as their REST endpoints do, once the
//! authorizer allows the node to create them (the node authorizer's rules
//! grant it, as upstream's `system:node` rules do).

use std::{
    collections::{BTreeSet, HashMap},
    pin::Pin,
    time::Duration,
};

use bytes::Bytes;
use futures::Stream;
use serde_json::Value;
use skep_api::{
    ApiError, StatusReason, decode::Decoded, delete::DeleteOptions, kinds, object, registry,
};
use skep_objects::{Objects, WriteOptions};
use skep_proto::kinds as wire;
use skep_proto::v1::{
    Review, TokenRequest, TokenResponse, WatchEvent, WatchRequest, WriteRequest, WriteResponse,
    node_sync_server::NodeSync, watch_event::Type as EventType, write_request::Op,
};
use skep_store::{EventKind, KeyValue, ListRequest, ReadConsistency, StoreError};
use tonic::{Request, Response, Status};

use skep_rbac::{Attributes, ResourceAttributes};

use crate::authz::Authorizer;
use crate::sa_tokens::ServiceAccountTokens;
use crate::tls::Identity;

/// How long a quiet node stream waits before telling the node how far it is.
const BOOKMARK_INTERVAL: Duration = Duration::from_secs(10);

/// The kinds a node receives, by store prefix, and whether each is filtered.
const FEEDS: &[(&str, &str, Feed)] = &[
    ("/registry/core/nodes/", wire::NODE, Feed::Nodes),
    ("/registry/core/pods/", wire::POD, Feed::BoundPods),
    ("/registry/core/pods/", wire::POD_PEER, Feed::PodPeers),
    (
        "/registry/core/configmaps/",
        wire::CONFIG_MAP,
        Feed::Referenced,
    ),
    ("/registry/core/secrets/", wire::SECRET, Feed::Referenced),
    (
        "/registry/core/persistentvolumeclaims/",
        wire::PERSISTENT_VOLUME_CLAIM,
        Feed::Referenced,
    ),
    (
        "/registry/core/persistentvolumes/",
        wire::PERSISTENT_VOLUME,
        Feed::Referenced,
    ),
    ("/registry/core/services/", wire::SERVICE, Feed::All),
    (
        "/registry/discovery.k8s.io/endpointslices/",
        wire::ENDPOINT_SLICE,
        Feed::All,
    ),
    ("/registry/core/namespaces/", wire::NAMESPACE, Feed::All),
    (
        "/registry/networking.k8s.io/networkpolicies/",
        wire::NETWORK_POLICY,
        Feed::All,
    ),
];

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Feed {
    /// Its own Node in full; other Nodes when they come, go, or change
    /// what routing to them needs ([`routing_facts`]), not per heartbeat.
    Nodes,
    BoundPods,
    /// Every pod's [`peer_facts`] (kind [`wire::POD_PEER`]), when they change.
    PodPeers,
    Referenced,
    All,
}

/// The node-sync gRPC service.
#[derive(Clone)]
pub struct NodeSyncService {
    objects: Objects,
    tokens: ServiceAccountTokens,
    authorizer: Authorizer,
}

impl NodeSyncService {
    /// The service over `objects`, issuing pods' tokens with `tokens` and
    /// answering access reviews with `authorizer`.
    pub fn new(objects: Objects, tokens: ServiceAccountTokens, authorizer: Authorizer) -> Self {
        Self {
            objects,
            tokens,
            authorizer,
        }
    }

    /// The review in `request` once its caller, a node, may create
    /// `resource` in `group` (as the REST create of the review is
    /// authorized): the decoded review object.
    fn review_of(
        &self,
        request: &Request<Review>,
        group: &str,
        resource: &str,
    ) -> Result<Value, Status> {
        let identity = request.extensions().get::<Identity>();
        node_of(identity)?;
        let user = identity
            .map(crate::authn::certificate_user)
            .unwrap_or_default();
        let attrs = Attributes::resource(
            user,
            "create",
            ResourceAttributes {
                api_group: group.to_owned(),
                resource: resource.to_owned(),
                ..ResourceAttributes::default()
            },
        );
        self.authorizer.check(&attrs).map_err(|e| status_of(&e))?;
        serde_json::from_slice(&request.get_ref().object)
            .map_err(|e| Status::invalid_argument(format!("invalid review object: {e}")))
    }
}

/// The node a request's client certificate names, if it is a node's.
fn node_of(identity: Option<&Identity>) -> Result<String, Status> {
    let identity = identity.ok_or_else(|| Status::unauthenticated("no client certificate"))?;
    identity
        .user
        .strip_prefix(skep_proto::NODE_USER_PREFIX)
        .filter(|_| identity.groups.iter().any(|g| g == skep_proto::NODES_GROUP))
        .map(str::to_owned)
        .ok_or_else(|| Status::permission_denied(format!("{} is not a node", identity.user)))
}

/// An API error as a gRPC status; the Kubernetes reason travels in the
/// `x-skep-reason` metadata so the node can tell conflicts apart.
fn status_of(err: &ApiError) -> Status {
    let code = match err.reason {
        StatusReason::NotFound => tonic::Code::NotFound,
        StatusReason::AlreadyExists => tonic::Code::AlreadyExists,
        StatusReason::Conflict => tonic::Code::Aborted,
        StatusReason::Invalid | StatusReason::BadRequest => tonic::Code::InvalidArgument,
        StatusReason::Forbidden => tonic::Code::PermissionDenied,
        StatusReason::Gone | StatusReason::Expired => tonic::Code::OutOfRange,
        _ => tonic::Code::Internal,
    };
    let mut status = Status::new(code, err.message.clone());
    if let Ok(v) = err.reason.as_str().parse() {
        status.metadata_mut().insert("x-skep-reason", v);
    }
    status
}

type WatchStream = Pin<Box<dyn Stream<Item = Result<WatchEvent, Status>> + Send>>;

#[tonic::async_trait]
impl NodeSync for NodeSyncService {
    type WatchStream = WatchStream;

    #[tracing::instrument(skip_all, fields(node = %request.get_ref().node_name, from = request.get_ref().from_revision))]
    async fn watch(
        &self,
        request: Request<WatchRequest>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        let node = node_of(request.extensions().get::<Identity>())?;
        let WatchRequest {
            node_name,
            from_revision,
        } = request.into_inner();
        if node_name != node {
            return Err(Status::permission_denied(format!(
                "node {node} may not watch for node {node_name}"
            )));
        }
        let (tx, rx) = tokio::sync::mpsc::channel(256);
        let objects = self.objects.clone();
        tokio::spawn(async move {
            if let Err(err) = feed(&objects, &node, from_revision, &tx).await {
                tracing::warn!(%node, %err, "node stream ended");
                let _ = tx.send(Err(Status::internal(err.to_string()))).await;
            }
        });
        let mut rx = rx;
        let stream = futures::stream::poll_fn(move |cx| rx.poll_recv(cx));
        Ok(Response::new(Box::pin(stream)))
    }

    #[tracing::instrument(skip_all, fields(kind = %request.get_ref().kind, namespace = %request.get_ref().namespace, name = %request.get_ref().name))]
    async fn write(
        &self,
        request: Request<WriteRequest>,
    ) -> Result<Response<WriteResponse>, Status> {
        let node = node_of(request.extensions().get::<Identity>())?;
        let req = request.into_inner();
        let object = write(&self.objects, &node, &req)
            .await
            .map_err(|e| status_of(&e))?;
        let object = serde_json::to_vec(&object).map_err(|e| Status::internal(e.to_string()))?;
        Ok(Response::new(WriteResponse { object }))
    }

    #[tracing::instrument(skip_all, fields(namespace = %request.get_ref().namespace, pod = %request.get_ref().pod_name))]
    async fn request_token(
        &self,
        request: Request<TokenRequest>,
    ) -> Result<Response<TokenResponse>, Status> {
        let node = node_of(request.extensions().get::<Identity>())?;
        let issued = crate::sa_tokens::node_token(&self.tokens, &node, request.get_ref())
            .await
            .map_err(|e| status_of(&e))?;
        Ok(Response::new(TokenResponse {
            token: issued.token,
            expiration_unix: issued.expires_at,
        }))
    }

    #[tracing::instrument(skip_all)]
    async fn review_token(&self, request: Request<Review>) -> Result<Response<Review>, Status> {
        let body = self.review_of(&request, "authentication.k8s.io", "tokenreviews")?;
        let answer = self
            .tokens
            .token_review(&body)
            .await
            .map_err(|e| status_of(&e))?;
        review_response(&answer)
    }

    #[tracing::instrument(skip_all)]
    async fn review_access(&self, request: Request<Review>) -> Result<Response<Review>, Status> {
        let body = self.review_of(&request, "authorization.k8s.io", "subjectaccessreviews")?;
        crate::reviews::validate(&kinds::SUBJECT_ACCESS_REVIEW, &body)
            .map_err(|e| status_of(&e))?;
        review_response(&crate::reviews::subject_access_review(
            &self.authorizer,
            body,
        ))
    }
}

fn review_response(answer: &Value) -> Result<Response<Review>, Status> {
    let object = serde_json::to_vec(answer).map_err(|e| Status::internal(e.to_string()))?;
    Ok(Response::new(Review { object }))
}

/// What a node may write: its own Node, the status of pods bound to it and
/// their final delete, and Events.
async fn write(objects: &Objects, node: &str, req: &WriteRequest) -> Result<Value, ApiError> {
    let op = Op::try_from(req.op).map_err(|_| ApiError::bad_request("unknown write op"))?;
    let info = registry::resources()
        .iter()
        .find(|r| r.kind == req.kind && r.verbs.contains(&"get"))
        .ok_or_else(|| ApiError::bad_request(format!("unknown kind {:?}", req.kind)))?;
    let forbidden = || {
        ApiError::forbidden(format!(
            "node {node} may not {} {} {}/{}",
            op.as_str_name().to_lowercase(),
            info.plural,
            req.namespace,
            req.name
        ))
    };
    let opts = WriteOptions::by(&format!("skep-agent/{node}"));
    let body = || -> Result<Decoded, ApiError> {
        let value: Value = serde_json::from_slice(&req.object)
            .map_err(|e| ApiError::bad_request(format!("invalid object: {e}")))?;
        Ok(Decoded {
            value,
            duplicates: Vec::new(),
        })
    };
    match (info.kind, op) {
        (wire::NODE, Op::Create) if req.name == node => {
            Ok(objects.create(info, "", body()?, &opts).await?.object)
        }
        (wire::NODE, Op::Update) if req.name == node => {
            let old = objects.get(info, "", node).await?;
            Ok(objects
                .replace(info, &req.subresource, &old, body()?, &opts)
                .await?
                .object)
        }
        (wire::EVENT, Op::Create) => Ok(objects
            .create(info, &req.namespace, body()?, &opts)
            .await?
            .object),
        (wire::POD, Op::Update | Op::Delete) => {
            let old = objects.get(info, &req.namespace, &req.name).await?;
            if object::get_str(&old, &["spec", "nodeName"]) != Some(node) {
                return Err(forbidden());
            }
            if op == Op::Update {
                if req.subresource != "status" {
                    return Err(forbidden());
                }
                return Ok(objects
                    .replace(info, "status", &old, body()?, &opts)
                    .await?
                    .object);
            }
            let options = if req.object.is_empty() {
                DeleteOptions::default()
            } else {
                DeleteOptions::from_value(Some(&body()?.value))?
            };
            let deleted = objects
                .delete(info, &req.namespace, &req.name, &options, false)
                .await?;
            Ok(match deleted {
                skep_objects::Deleted::Removed(o)
                | skep_objects::Deleted::Marked(o)
                | skep_objects::Deleted::Unchanged(o) => o,
            })
        }
        _ => Err(forbidden()),
    }
}

/// The kind of persistent volume claims, as references name it.
const CLAIM: &str = wire::PERSISTENT_VOLUME_CLAIM;
/// The kind of persistent volumes, as references name it.
const VOLUME: &str = wire::PERSISTENT_VOLUME;

/// A (kind, namespace, name) reference; cluster-scoped objects have no namespace.
type Ref = (&'static str, String, String);

/// The volume a claim is bound to, if any.
fn claim_volume(claim: &Value) -> Option<String> {
    object::get_str(claim, &["spec", "volumeName"])
        .filter(|v| !v.is_empty())
        .map(str::to_owned)
}

/// The config maps, secrets and claims a pod refers to, as (kind, namespace,
/// name): exactly what the node authorizer lets the node read
/// (`skep_nodeauthz::refs`, upstream's pod visitors), so what node sync sends
/// and what the node may read over REST are one rule.
fn references(pod: &Value) -> BTreeSet<Ref> {
    use skep_nodeauthz::refs;
    let ns = object::namespace(pod);
    let at = |kind: &'static str, name: &str| (kind, ns.to_owned(), name.to_owned());
    let mut out = BTreeSet::new();
    refs::visit_pod_secret_names(pod, |name| {
        out.insert(at(wire::SECRET, name));
    });
    refs::visit_pod_configmap_names(pod, |name| {
        out.insert(at(wire::CONFIG_MAP, name));
    });
    refs::visit_pod_pvc_names(pod, |name| {
        out.insert(at(CLAIM, name));
    });
    out
}

/// The per-node view: which pods are here and what they reference, and
/// which volume each referenced claim is bound to.
struct NodeView {
    node: String,
    pods: HashMap<String, BTreeSet<Ref>>,
    referenced: HashMap<Ref, usize>,
    claim_volumes: HashMap<(String, String), String>,
}

type Sender = tokio::sync::mpsc::Sender<Result<WatchEvent, Status>>;

/// The feeds a store key belongs to (pods feed two).
fn feeds_of(key: &[u8]) -> impl Iterator<Item = (&'static str, Feed)> {
    FEEDS
        .iter()
        .filter(move |(prefix, _, _)| key.starts_with(prefix.as_bytes()))
        .map(|(_, kind, feed)| (*kind, *feed))
}

/// What `feed` sends of `obj`: a pod's [`peer_facts`] for
/// [`Feed::PodPeers`], the object itself otherwise.
fn sent(feed: Feed, obj: &Value) -> std::borrow::Cow<'_, Value> {
    if feed == Feed::PodPeers {
        std::borrow::Cow::Owned(peer_facts(obj))
    } else {
        std::borrow::Cow::Borrowed(obj)
    }
}

fn parse(kv: &KeyValue) -> Option<Value> {
    skep_objects::output(kv).ok()
}

fn event(kind: EventType, revision: u64, object_kind: &str, obj: &Value) -> WatchEvent {
    WatchEvent {
        r#type: kind.into(),
        revision,
        kind: object_kind.to_owned(),
        object: serde_json::to_vec(obj).unwrap_or_default(),
    }
}

fn marker(kind: EventType, revision: u64) -> WatchEvent {
    WatchEvent {
        r#type: kind.into(),
        revision,
        kind: String::new(),
        object: Vec::new(),
    }
}

impl NodeView {
    fn concerns(&self, feed: Feed, obj: &Value, kind: &'static str) -> bool {
        match feed {
            Feed::All | Feed::Nodes | Feed::PodPeers => true,
            Feed::BoundPods => object::get_str(obj, &["spec", "nodeName"]) == Some(&self.node),
            Feed::Referenced => self.referenced.contains_key(&(
                kind,
                object::namespace(obj).to_owned(),
                object::name(obj).to_owned(),
            )),
        }
    }

    /// Records that pod `key` is here with `refs` (empty: gone); returns the
    /// references that became used and those that became unused.
    fn set_pod(&mut self, key: &str, refs: BTreeSet<Ref>) -> (Vec<Ref>, Vec<Ref>) {
        let old = self.pods.remove(key).unwrap_or_default();
        let mut added = Vec::new();
        let mut removed = Vec::new();
        for r in refs.difference(&old) {
            self.hold(r, &mut added);
        }
        for r in old.difference(&refs) {
            self.release(r, &mut removed);
        }
        if !refs.is_empty() {
            self.pods.insert(key.to_owned(), refs);
        }
        (added, removed)
    }

    /// Counts one more holder of `r`; the first one adds it to `added`.
    fn hold(&mut self, r: &Ref, added: &mut Vec<Ref>) {
        let count = self.referenced.entry(r.clone()).or_insert(0);
        *count += 1;
        if *count == 1 {
            added.push(r.clone());
        }
    }

    /// Counts one holder of `r` less; the last one adds it to `removed`.
    fn release(&mut self, r: &Ref, removed: &mut Vec<Ref>) {
        if let Some(count) = self.referenced.get_mut(r) {
            *count -= 1;
            if *count == 0 {
                self.referenced.remove(r);
                removed.push(r.clone());
            }
        }
    }

    /// Records that referenced claim `ns/name` is bound to `volume` (`None`:
    /// unbound, gone, or no longer referenced); returns the volume
    /// references that became used and unused.
    fn set_claim_volume(
        &mut self,
        ns: &str,
        name: &str,
        volume: Option<String>,
    ) -> (Vec<Ref>, Vec<Ref>) {
        let key = (ns.to_owned(), name.to_owned());
        let (mut added, mut removed) = (Vec::new(), Vec::new());
        if self.claim_volumes.get(&key) == volume.as_ref() {
            return (added, removed);
        }
        if let Some(old) = self.claim_volumes.remove(&key) {
            self.release(&(VOLUME, String::new(), old), &mut removed);
        }
        if let Some(new) = volume {
            self.hold(&(VOLUME, String::new(), new.clone()), &mut added);
            self.claim_volumes.insert(key, new);
        }
        (added, removed)
    }
}

/// What a node routes to another node by: its pod CIDRs, its addresses,
/// and whether it is going away. Other Nodes' events reach a node only
/// when one of these changes.
fn routing_facts(node: &Value) -> [Option<&Value>; 4] {
    [
        node.pointer("/spec/podCIDR"),
        node.pointer("/spec/podCIDRs"),
        node.pointer("/status/addresses"),
        node.pointer("/metadata/deletionTimestamp"),
    ]
}

/// What every node needs of any pod to enforce network policy: who it is
/// (namespace, name, uid, labels), where it runs (node, host network),
/// its named container ports, its addresses and phase. Sent as a
/// [`wire::POD_PEER`] object shaped like a Pod (so it parses as one), and only when
/// one of these changes: not on every status write.
pub fn peer_facts(pod: &Value) -> Value {
    let mut metadata = serde_json::Map::new();
    for field in ["namespace", "name", "uid", "labels"] {
        if let Some(v) = pod.pointer(&format!("/metadata/{field}")) {
            metadata.insert(field.to_owned(), v.clone());
        }
    }
    let mut spec = serde_json::Map::new();
    for field in ["nodeName", "hostNetwork"] {
        if let Some(v) = pod.pointer(&format!("/spec/{field}")) {
            spec.insert(field.to_owned(), v.clone());
        }
    }
    let containers: Vec<Value> = object::array(pod, &["spec", "containers"])
        .iter()
        .map(|c| {
            let mut out = serde_json::Map::new();
            out.insert(
                "name".to_owned(),
                c.get("name")
                    .cloned()
                    .unwrap_or(Value::String(String::new())),
            );
            if let Some(ports) = c.get("ports") {
                out.insert("ports".to_owned(), ports.clone());
            }
            Value::Object(out)
        })
        .collect();
    spec.insert("containers".to_owned(), Value::Array(containers));
    let mut status = serde_json::Map::new();
    for field in ["phase", "podIP", "podIPs"] {
        if let Some(v) = pod.pointer(&format!("/status/{field}")) {
            status.insert(field.to_owned(), v.clone());
        }
    }
    serde_json::json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": metadata,
        "spec": spec,
        "status": status,
    })
}

/// Lists `prefix` at `revision`.
async fn list_at(
    objects: &Objects,
    prefix: &str,
    revision: Option<u64>,
) -> Result<(Vec<KeyValue>, u64), StoreError> {
    let page = objects
        .store()
        .list(
            ListRequest {
                prefix: Bytes::copy_from_slice(prefix.as_bytes()),
                revision,
                ..ListRequest::default()
            },
            ReadConsistency::Linearizable,
        )
        .await?;
    Ok((page.items, page.revision))
}

/// Sends what `view` concerns at `revision`, then SYNCED; `false` when the
/// node went away meanwhile.
async fn send_snapshot(
    objects: &Objects,
    view: &NodeView,
    revision: u64,
    tx: &Sender,
) -> Result<bool, StoreError> {
    for (prefix, kind, feed) in FEEDS {
        let (items, _) = list_at(objects, prefix, Some(revision)).await?;
        for kv in &items {
            let Some(obj) = parse(kv) else { continue };
            if view.concerns(*feed, &obj, kind)
                && tx
                    .send(Ok(event(
                        EventType::Added,
                        revision,
                        kind,
                        &sent(*feed, &obj),
                    )))
                    .await
                    .is_err()
            {
                return Ok(false);
            }
        }
    }
    Ok(tx
        .send(Ok(marker(EventType::Synced, revision)))
        .await
        .is_ok())
}

/// Streams node `node`'s view into `tx` until the node goes away.
async fn feed(objects: &Objects, node: &str, from: u64, tx: &Sender) -> Result<(), StoreError> {
    let mut view = NodeView {
        node: node.to_owned(),
        pods: HashMap::new(),
        referenced: HashMap::new(),
        claim_volumes: HashMap::new(),
    };
    let snapshot = from == 0;
    // The pods here at the start revision decide which references the node holds.
    let start = if snapshot { None } else { Some(from) };
    let (pods, revision) = match list_at(objects, "/registry/core/pods/", start).await {
        Ok(listed) => listed,
        Err(StoreError::Compacted { .. } | StoreError::FutureRevision { .. }) => {
            let _ = tx.send(Ok(marker(EventType::Gone, 0))).await;
            return Ok(());
        }
        Err(err) => return Err(err),
    };
    for kv in &pods {
        if let Some(pod) = parse(kv).filter(|p| view.concerns(Feed::BoundPods, p, wire::POD)) {
            let key = String::from_utf8_lossy(&kv.key).into_owned();
            view.set_pod(&key, references(&pod));
        }
    }
    // The claims here at the start revision decide which volumes it holds.
    let (claims, _) = list_at(
        objects,
        "/registry/core/persistentvolumeclaims/",
        Some(revision),
    )
    .await?;
    for kv in &claims {
        if let Some(claim) = parse(kv).filter(|c| view.concerns(Feed::Referenced, c, CLAIM)) {
            view.set_claim_volume(
                object::namespace(&claim),
                object::name(&claim),
                claim_volume(&claim),
            );
        }
    }
    if snapshot && !send_snapshot(objects, &view, revision, tx).await? {
        return Ok(());
    }
    let mut stream = match objects.store().watch("/registry/", revision) {
        Ok(stream) => stream,
        Err(StoreError::Compacted { .. }) => {
            let _ = tx.send(Ok(marker(EventType::Gone, 0))).await;
            return Ok(());
        }
        Err(err) => return Err(err),
    };
    let mut last = revision;
    loop {
        let next = tokio::time::timeout(BOOKMARK_INTERVAL, stream.next()).await;
        let store_event = match next {
            Err(_) => {
                if tx
                    .send(Ok(marker(EventType::Bookmark, last)))
                    .await
                    .is_err()
                {
                    return Ok(());
                }
                continue;
            }
            Ok(None) => return Ok(()),
            Ok(Some(Err(StoreError::Compacted { .. }))) => {
                let _ = tx.send(Ok(marker(EventType::Gone, 0))).await;
                return Ok(());
            }
            Ok(Some(Err(err))) => return Err(err),
            Ok(Some(Ok(e))) => e,
        };
        last = store_event.revision();
        for out in view.translate(objects, &store_event).await? {
            if tx.send(Ok(out)).await.is_err() {
                return Ok(());
            }
        }
    }
}

impl NodeView {
    /// The node's events for one store event.
    async fn translate(
        &mut self,
        objects: &Objects,
        store_event: &skep_store::Event,
    ) -> Result<Vec<WatchEvent>, StoreError> {
        let prev = store_event.prev_kv.as_ref().and_then(parse);
        let now = match store_event.kind {
            EventKind::Put => parse(&store_event.kv),
            EventKind::Delete => None,
        };
        let mut out = Vec::new();
        for (kind, feed) in feeds_of(&store_event.kv.key) {
            self.translate_feed(objects, store_event, kind, feed, (&prev, &now), &mut out)
                .await?;
        }
        Ok(out)
    }

    /// Appends to `out` what `feed` (of kind `kind`) sends for one store
    /// event that changed an object from `prev` to `now`.
    async fn translate_feed(
        &mut self,
        objects: &Objects,
        store_event: &skep_store::Event,
        kind: &'static str,
        feed: Feed,
        (prev, now): (&Option<Value>, &Option<Value>),
        out: &mut Vec<WatchEvent>,
    ) -> Result<(), StoreError> {
        let revision = store_event.revision();
        let was_here = prev.as_ref().is_some_and(|p| self.concerns(feed, p, kind));
        let is_here = now.as_ref().is_some_and(|n| self.concerns(feed, n, kind));
        if let (Some(prev), Some(now)) = (prev, now) {
            let unchanged = match feed {
                // Another node's heartbeat: nothing this node routes by changed.
                Feed::Nodes => {
                    object::name(now) != self.node && routing_facts(prev) == routing_facts(now)
                }
                // A pod's status write that moved none of its policy facts.
                Feed::PodPeers => peer_facts(prev) == peer_facts(now),
                Feed::BoundPods | Feed::Referenced | Feed::All => false,
            };
            if unchanged {
                return Ok(());
            }
        }
        match (was_here, is_here, now) {
            (_, true, Some(obj)) => {
                let t = if was_here {
                    EventType::Modified
                } else {
                    EventType::Added
                };
                out.push(event(t, revision, kind, &sent(feed, obj)));
            }
            (true, false, _) => {
                let mut last = sent(feed, &prev.clone().unwrap_or_default()).into_owned();
                object::set_resource_version(&mut last, revision);
                out.push(event(EventType::Deleted, revision, kind, &last));
            }
            _ => {}
        }
        if feed == Feed::BoundPods && (was_here || is_here) {
            let key = String::from_utf8_lossy(&store_event.kv.key).into_owned();
            let refs = now
                .as_ref()
                .filter(|_| is_here)
                .map(references)
                .unwrap_or_default();
            let (added, removed) = self.set_pod(&key, refs);
            self.emit(objects, revision, added, removed, out).await?;
        }
        if kind == CLAIM && (was_here || is_here) {
            // A referenced claim bound, unbound or gone: its volume follows.
            let volume = now.as_ref().filter(|_| is_here).and_then(claim_volume);
            let obj = now.as_ref().or(prev.as_ref());
            let (ns, name) = obj.map_or(("", ""), |o| (object::namespace(o), object::name(o)));
            let (added, removed) = self.set_claim_volume(ns, name, volume);
            self.emit(objects, revision, added, removed, out).await?;
        }
        Ok(())
    }

    /// Appends the events for references that became used (the object as
    /// stored now, if it exists) and unused; a claim brings or takes its
    /// volume along.
    async fn emit(
        &mut self,
        objects: &Objects,
        revision: u64,
        added: Vec<Ref>,
        removed: Vec<Ref>,
        out: &mut Vec<WatchEvent>,
    ) -> Result<(), StoreError> {
        let (mut added, mut removed) = (added, removed);
        while !added.is_empty() || !removed.is_empty() {
            for (kind, ns, name) in std::mem::take(&mut added) {
                let info = registry::resources()
                    .iter()
                    .copied()
                    .find(|r| r.kind == kind)
                    .unwrap_or(&kinds::CONFIG_MAP);
                let key = skep_objects::key(info, &ns, &name);
                let Some(obj) = objects
                    .store()
                    .get(key, ReadConsistency::Linearizable)
                    .await?
                    .as_ref()
                    .and_then(parse)
                else {
                    continue;
                };
                if kind == CLAIM {
                    let (a, r) = self.set_claim_volume(&ns, &name, claim_volume(&obj));
                    added.extend(a);
                    removed.extend(r);
                }
                out.push(event(EventType::Added, revision, kind, &obj));
            }
            for (kind, ns, name) in std::mem::take(&mut removed) {
                if kind == CLAIM {
                    let (a, r) = self.set_claim_volume(&ns, &name, None);
                    added.extend(a);
                    removed.extend(r);
                }
                let obj = if ns.is_empty() {
                    serde_json::json!({"metadata": {"name": name}})
                } else {
                    serde_json::json!({"metadata": {"namespace": ns, "name": name}})
                };
                out.push(event(EventType::Deleted, revision, kind, &obj));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every feed but the pod peers carries a served kind under its own
    /// wire name, read from that kind's store prefix.
    #[test]
    fn feeds_match_the_registry() {
        for (prefix, kind, feed) in FEEDS {
            if *feed == Feed::PodPeers {
                assert_eq!(*kind, wire::POD_PEER);
                continue;
            }
            let info = registry::resources().iter().find(|r| r.kind == *kind);
            assert_eq!(
                info.map(|info| skep_objects::prefix(info, "")).as_deref(),
                Some(*prefix),
                "{kind}"
            );
        }
    }
}
