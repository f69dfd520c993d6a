//! What the agent writes to the control plane, behind a trait: the
//! node-sync gRPC client in the agent, a recorder in tests. Loops and pod
//! workers take an `Arc<dyn NodeApi>` (and an [`EventRecorder`]) instead of
//! the whole agent.

use std::sync::Arc;

use futures::future::BoxFuture;
use k8s_openapi::api::core::v1::{Event, EventSource, ObjectReference, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta, Time};
use skep_proto::kinds as wire;
use skep_proto::v1::node_sync_client::NodeSyncClient;
use skep_proto::v1::write_request::Op;
use skep_proto::v1::{Review, TokenRequest, TokenResponse, WriteRequest};
use tonic::transport::Channel;

/// The node's writes: the server allows its own Node, its pods' status and
/// final delete, and Events. Each call returns the stored object (JSON).
pub trait NodeApi: Send + Sync {
    /// Sends one write.
    fn write(&self, request: WriteRequest) -> BoxFuture<'_, Result<Vec<u8>, tonic::Status>>;

    /// Registers Node `name`.
    fn create_node(
        &self,
        name: &str,
        node: Vec<u8>,
    ) -> BoxFuture<'_, Result<Vec<u8>, tonic::Status>> {
        self.write(request(Op::Create, wire::NODE, "", name, "", node))
    }

    /// Replaces Node `name`'s status.
    fn update_node_status(
        &self,
        name: &str,
        node: Vec<u8>,
    ) -> BoxFuture<'_, Result<Vec<u8>, tonic::Status>> {
        self.write(request(Op::Update, wire::NODE, "", name, "status", node))
    }

    /// Replaces pod `namespace/name`'s status (compare-and-swap on the
    /// `resourceVersion` the body carries).
    fn update_pod_status(
        &self,
        namespace: &str,
        name: &str,
        pod: Vec<u8>,
    ) -> BoxFuture<'_, Result<Vec<u8>, tonic::Status>> {
        let write = self.write(request(
            Op::Update,
            wire::POD,
            namespace,
            name,
            "status",
            pod,
        ));
        Box::pin(async move {
            let began = std::time::Instant::now();
            let written = write.await;
            skep_runtime::timing::phase("status_write", began);
            written
        })
    }

    /// Deletes pod `namespace/name` with `options` (`DeleteOptions`, JSON).
    fn delete_pod(
        &self,
        namespace: &str,
        name: &str,
        options: Vec<u8>,
    ) -> BoxFuture<'_, Result<Vec<u8>, tonic::Status>> {
        self.write(request(Op::Delete, wire::POD, namespace, name, "", options))
    }

    /// Asks for a ServiceAccount token bound to one of the node's pods
    /// (TokenRequest). A server without token issuing answers
    /// `Unimplemented`, as this default does.
    fn request_token(
        &self,
        request: TokenRequest,
    ) -> BoxFuture<'_, Result<TokenResponse, tonic::Status>> {
        let _ = request;
        Box::pin(async {
            Err(tonic::Status::unimplemented(
                "this control plane issues no tokens",
            ))
        })
    }

    /// Asks the API server to review a bearer token presented on the node's
    /// port: a TokenReview (JSON) in, the answered TokenReview out. A server
    /// without reviews answers `Unimplemented`, as this default does.
    fn review_token(&self, review: Vec<u8>) -> BoxFuture<'_, Result<Vec<u8>, tonic::Status>> {
        let _ = review;
        Box::pin(async { Err(tonic::Status::unimplemented("no token reviews here")) })
    }

    /// Asks the API server whether a caller of the node's port may do what
    /// it asks: a SubjectAccessReview (JSON) in, the answered one out. A
    /// server without reviews answers `Unimplemented`, as this default does.
    fn review_access(&self, review: Vec<u8>) -> BoxFuture<'_, Result<Vec<u8>, tonic::Status>> {
        let _ = review;
        Box::pin(async { Err(tonic::Status::unimplemented("no access reviews here")) })
    }

    /// Creates an Event in `namespace`.
    fn create_event(
        &self,
        namespace: &str,
        event: Vec<u8>,
    ) -> BoxFuture<'_, Result<Vec<u8>, tonic::Status>> {
        self.write(request(Op::Create, wire::EVENT, namespace, "", "", event))
    }
}

fn request(
    op: Op,
    kind: &str,
    namespace: &str,
    name: &str,
    subresource: &str,
    object: Vec<u8>,
) -> WriteRequest {
    WriteRequest {
        op: op.into(),
        kind: kind.to_owned(),
        namespace: namespace.to_owned(),
        name: name.to_owned(),
        subresource: subresource.to_owned(),
        object,
    }
}

impl NodeApi for NodeSyncClient<Channel> {
    fn write(&self, request: WriteRequest) -> BoxFuture<'_, Result<Vec<u8>, tonic::Status>> {
        let mut client = self.clone();
        Box::pin(async move {
            let response = NodeSyncClient::write(&mut client, request).await?;
            Ok(response.into_inner().object)
        })
    }

    fn request_token(
        &self,
        request: TokenRequest,
    ) -> BoxFuture<'_, Result<TokenResponse, tonic::Status>> {
        let mut client = self.clone();
        Box::pin(async move {
            Ok(NodeSyncClient::request_token(&mut client, request)
                .await?
                .into_inner())
        })
    }

    fn review_token(&self, review: Vec<u8>) -> BoxFuture<'_, Result<Vec<u8>, tonic::Status>> {
        let mut client = self.clone();
        Box::pin(async move {
            let request = Review { object: review };
            Ok(NodeSyncClient::review_token(&mut client, request)
                .await?
                .into_inner()
                .object)
        })
    }

    fn review_access(&self, review: Vec<u8>) -> BoxFuture<'_, Result<Vec<u8>, tonic::Status>> {
        let mut client = self.clone();
        Box::pin(async move {
            let request = Review { object: review };
            Ok(NodeSyncClient::review_access(&mut client, request)
                .await?
                .into_inner()
                .object)
        })
    }
}

/// Records Events about pods, as the kubelet's event recorder does: best
/// effort, in the background, never failing the caller.
#[derive(Clone)]
pub struct EventRecorder {
    api: Arc<dyn NodeApi>,
    node_name: Arc<str>,
}

impl std::fmt::Debug for EventRecorder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EventRecorder")
            .field("node_name", &self.node_name)
            .finish_non_exhaustive()
    }
}

impl EventRecorder {
    /// A recorder writing through `api` as node `node_name`'s kubelet.
    pub fn new(api: Arc<dyn NodeApi>, node_name: &str) -> Self {
        Self {
            api,
            node_name: node_name.into(),
        }
    }

    /// The Event about `pod` (`Warning` or `Normal`).
    #[must_use]
    pub fn pod_event(&self, pod: &Pod, warning: bool, reason: &str, message: String) -> Event {
        let now = crate::agent::now();
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        let ns = pod.metadata.namespace.clone().unwrap_or_default();
        let name = pod.metadata.name.clone().unwrap_or_default();
        let host = self.node_name.to_string();
        Event {
            metadata: ObjectMeta {
                name: Some(format!("{name}.{nanos:x}")),
                namespace: Some(ns.clone()),
                ..ObjectMeta::default()
            },
            involved_object: ObjectReference {
                api_version: Some("v1".into()),
                kind: Some("Pod".into()),
                name: Some(name),
                namespace: Some(ns),
                uid: pod.metadata.uid.clone(),
                ..ObjectReference::default()
            },
            reason: Some(reason.to_owned()),
            message: Some(message),
            type_: Some(if warning { "Warning" } else { "Normal" }.into()),
            source: Some(EventSource {
                component: Some("kubelet".into()),
                host: Some(host.clone()),
            }),
            reporting_component: Some("kubelet".into()),
            reporting_instance: Some(host),
            first_timestamp: Some(Time(now)),
            last_timestamp: Some(Time(now)),
            event_time: Some(MicroTime(now)),
            count: Some(1),
            ..Event::default()
        }
    }

    /// Records an Event about `pod` in the background.
    pub fn record(&self, pod: &Pod, warning: bool, reason: &str, message: String) {
        let event = self.pod_event(pod, warning, reason, message);
        let ns = event.metadata.namespace.clone().unwrap_or_default();
        let api = Arc::clone(&self.api);
        tokio::spawn(async move {
            let Ok(body) = serde_json::to_vec(&event) else {
                return;
            };
            if let Err(err) = api.create_event(&ns, body).await {
                tracing::debug!(%err, namespace = %ns, "failed to record event");
            }
        });
    }
}
