//! Events users see in `kubectl describe` and `kubectl get events`: core/v1
//! Events with a reason, a message, the object they are about and the
//! component that reports them, aggregated like client-go's recorder (a
//! repeat of the same event bumps `count` and `lastTimestamp`).

use k8s_openapi::api::core::v1::{Event, EventSource, ObjectReference};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta, Time};
use skep_api::StatusReason;
use skep_objects::{Objects, Typed};

/// How many times a conflicting count update is retried.
const ATTEMPTS: usize = 3;

/// `Normal` or `Warning`, the two event types kubectl knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventType {
    /// Something expected happened.
    Normal,
    /// Something went wrong.
    Warning,
}

impl EventType {
    fn as_str(self) -> &'static str {
        match self {
            Self::Normal => "Normal",
            Self::Warning => "Warning",
        }
    }
}

/// Writes events on behalf of one component (`deployment-controller`,
/// `default-scheduler`, `kubelet`).
#[derive(Clone)]
pub struct EventRecorder {
    objects: Objects,
    component: String,
    host: Option<String>,
}

/// A reference to `obj` for `involvedObject`.
pub fn object_ref<T: Typed>(obj: &T) -> ObjectReference {
    let meta = obj.metadata();
    ObjectReference {
        api_version: Some(T::API_VERSION.to_owned()),
        kind: Some(T::KIND.to_owned()),
        name: meta.name.clone(),
        namespace: meta.namespace.clone(),
        uid: meta.uid.clone(),
        resource_version: meta.resource_version.clone(),
        ..ObjectReference::default()
    }
}

/// FNV-1a, 64 bits: a stable name for the same event from any process.
fn fnv64(parts: &[&str]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for part in parts {
        for byte in part.bytes().chain(std::iter::once(0)) {
            hash ^= u64::from(byte);
            hash = hash.wrapping_mul(0x0100_0000_01b3);
        }
    }
    hash
}

impl EventRecorder {
    /// A recorder for `component` (the event's `source.component`).
    pub fn new(objects: Objects, component: &str) -> Self {
        Self {
            objects,
            component: component.to_owned(),
            host: None,
        }
    }

    /// The same recorder reporting from `host` (`source.host`, a node name).
    #[must_use]
    pub fn on_host(mut self, host: &str) -> Self {
        self.host = Some(host.to_owned());
        self
    }

    /// Records an event about `involved`. Failures are logged, not
    /// returned: an event is never worth failing the work it describes.
    #[tracing::instrument(skip_all, fields(component = %self.component, %reason))]
    pub async fn record(
        &self,
        involved: &ObjectReference,
        kind: EventType,
        reason: &str,
        message: &str,
    ) {
        if let Err(err) = self.try_record(involved, kind, reason, message).await {
            tracing::warn!(%err, %reason, object = ?involved.name, "failed to record event");
        }
    }

    async fn try_record(
        &self,
        involved: &ObjectReference,
        kind: EventType,
        reason: &str,
        message: &str,
    ) -> Result<Event, skep_api::ApiError> {
        let namespace = involved
            .namespace
            .clone()
            .filter(|ns| !ns.is_empty())
            .unwrap_or_else(|| "default".to_owned());
        let involved_name = involved.name.clone().unwrap_or_default();
        let hash = fnv64(&[
            involved.uid.as_deref().unwrap_or_default(),
            involved.kind.as_deref().unwrap_or_default(),
            &involved_name,
            kind.as_str(),
            reason,
            message,
            &self.component,
        ]);
        let name = format!("{involved_name}.{hash:016x}");
        for _ in 0..ATTEMPTS {
            let now = skep_api::admission::now();
            if let Some(mut existing) = self
                .objects
                .try_get_typed::<Event>(&namespace, &name)
                .await?
            {
                existing.count = Some(existing.count.unwrap_or(1) + 1);
                existing.last_timestamp = Some(Time(now));
                match self
                    .objects
                    .update_typed(&existing, "", &self.component)
                    .await
                {
                    Err(err) if err.reason == StatusReason::Conflict => continue,
                    other => return other,
                }
            }
            let event = Event {
                metadata: ObjectMeta {
                    name: Some(name.clone()),
                    namespace: Some(namespace.clone()),
                    ..ObjectMeta::default()
                },
                involved_object: involved.clone(),
                reason: Some(reason.to_owned()),
                message: Some(message.to_owned()),
                type_: Some(kind.as_str().to_owned()),
                count: Some(1),
                first_timestamp: Some(Time(now)),
                last_timestamp: Some(Time(now)),
                event_time: Some(MicroTime(now)),
                reporting_component: Some(self.component.clone()),
                reporting_instance: Some(
                    self.host.clone().unwrap_or_else(|| self.component.clone()),
                ),
                action: Some(reason.to_owned()),
                source: Some(EventSource {
                    component: Some(self.component.clone()),
                    host: self.host.clone(),
                }),
                ..Event::default()
            };
            match self.objects.create_typed(&event, &self.component).await {
                Err(err) if err.reason == StatusReason::AlreadyExists => {}
                other => return other,
            }
        }
        Err(skep_api::ApiError::conflict_modified("", "events", &name))
    }
}
