//! The Endpoints and EndpointSlice controllers in one: for each Service
//! with a selector, the pods it selects that have an IP, split into ready
//! and not-ready addresses (Endpoints) and with ready/serving/terminating
//! conditions (EndpointSlices labelled `kubernetes.io/service-name`),
//! target ports resolved per pod when they are named.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex, PoisonError};

use k8s_openapi::api::core::v1::{
    EndpointAddress, EndpointPort, EndpointSubset, Endpoints, ObjectReference, Pod, Service,
};
use k8s_openapi::api::discovery::v1::{
    Endpoint, EndpointConditions, EndpointPort as SlicePort, EndpointSlice,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use skep_api::delete::DeleteOptions;
use skep_objects::Objects;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::error::{ControllerError, is_not_found};
use crate::informer::{Informer, Informers, object_key, split_key};
use crate::replicaset::meta_of;
use crate::util::{owner_ref, pod_ready, selects};
use crate::{ControllerConfig, Reconciler, Requeue, WorkQueue, spawn_workers};
use serde_json::Value;

/// Workers of the endpoints controller at least (Services × 2 writes each).
const ENDPOINT_WORKERS: usize = 16;

/// The label naming a slice's Service.
pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";
/// The label naming who manages a slice.
pub const MANAGED_BY_LABEL: &str = "endpointslice.kubernetes.io/managed-by";
/// This controller's value of [`MANAGED_BY_LABEL`].
pub const MANAGED_BY: &str = "endpointslice-controller.k8s.io";

/// Keeps Endpoints and EndpointSlices of selector Services.
pub struct EndpointsController {
    objects: Objects,
    /// The EndpointSlice cache the index points into.
    slices: Arc<Informer>,
    /// This controller's slice names by (namespace, Service), kept from the
    /// slice informer: finding a Service's slices costs its own slices, not
    /// a scan of the namespace (which made N Services cost N²).
    index: Arc<SliceIndex>,
}

/// Slice names by (namespace, Service name).
type SliceIndex = Mutex<HashMap<(String, String), BTreeSet<String>>>;

/// The (namespace, Service) a slice this controller manages belongs to, and
/// the slice's name.
fn slice_owner(slice: &Value) -> Option<((String, String), String)> {
    let labels = slice.pointer("/metadata/labels")?;
    if labels.get(MANAGED_BY_LABEL)?.as_str()? != MANAGED_BY {
        return None;
    }
    let service = labels.get(SERVICE_NAME_LABEL)?.as_str()?;
    Some((
        (
            skep_api::object::namespace(slice).to_owned(),
            service.to_owned(),
        ),
        skep_api::object::name(slice).to_owned(),
    ))
}

/// One pod's part: its address, readiness and its resolved ports.
struct Backend {
    ip: String,
    ready: bool,
    serving: bool,
    terminating: bool,
    node: Option<String>,
    target: ObjectReference,
    ports: Vec<(Option<String>, i32, String, Option<String>)>,
}

/// The container port a Service port's `targetPort` means for `pod`.
fn resolve_port(pod: &Pod, target: Option<&IntOrString>, port: i32) -> Option<i32> {
    match target {
        None => Some(port),
        Some(IntOrString::Int(p)) => Some(*p),
        Some(IntOrString::String(name)) => match name.parse::<i32>() {
            Ok(p) => Some(p),
            Err(_) => pod
                .spec
                .as_ref()?
                .containers
                .iter()
                .flat_map(|c| c.ports.as_deref().unwrap_or_default())
                .find(|p| p.name.as_deref() == Some(name.as_str()))
                .map(|p| p.container_port),
        },
    }
}

fn backend(svc: &Service, pod: &Pod) -> Option<Backend> {
    let status = pod.status.as_ref()?;
    let ip = status.pod_ip.clone().filter(|ip| !ip.is_empty())?;
    if matches!(status.phase.as_deref(), Some("Succeeded" | "Failed")) {
        return None;
    }
    let spec = svc.spec.as_ref()?;
    let publish = spec.publish_not_ready_addresses == Some(true);
    let terminating = pod.metadata.deletion_timestamp.is_some();
    let serving = pod_ready(pod) || publish;
    let mut ports = Vec::new();
    for p in spec.ports.as_deref().unwrap_or_default() {
        let number = resolve_port(pod, p.target_port.as_ref(), p.port)?;
        ports.push((
            p.name.clone(),
            number,
            p.protocol.clone().unwrap_or_else(|| "TCP".into()),
            p.app_protocol.clone(),
        ));
    }
    Some(Backend {
        ip,
        ready: serving && !terminating,
        serving,
        terminating,
        node: pod.spec.as_ref().and_then(|s| s.node_name.clone()),
        target: ObjectReference {
            kind: Some("Pod".into()),
            name: pod.metadata.name.clone(),
            namespace: pod.metadata.namespace.clone(),
            uid: pod.metadata.uid.clone(),
            ..ObjectReference::default()
        },
        ports,
    })
}

/// A short stable suffix for the slice of one port set.
fn port_set_suffix(ports: &[(Option<String>, i32, String, Option<String>)]) -> String {
    let text = format!("{ports:?}");
    let mut hash: u32 = 0x811c_9dc5;
    for b in text.bytes() {
        hash ^= u32::from(b);
        hash = hash.wrapping_mul(0x0100_0193);
    }
    format!("{hash:08x}")
}

impl EndpointsController {
    /// Registers with the informers and starts the workers.
    pub fn start(
        objects: &Objects,
        informers: &Informers,
        config: &ControllerConfig,
        shutdown: &CancellationToken,
    ) -> Vec<JoinHandle<()>> {
        let queue = WorkQueue::new();
        let services = informers.of_type::<Service>();
        let pods = informers.of_type::<Pod>();
        {
            let queue = queue.clone();
            services.add_handler(Box::new(move |old, new| {
                if let Some(obj) = new.or(old) {
                    queue.add(object_key(obj));
                }
            }));
        }
        {
            let queue = queue.clone();
            let services = Arc::clone(&services);
            pods.add_handler(Box::new(move |old, new| {
                for meta in [old, new].into_iter().flatten().filter_map(meta_of) {
                    let ns = meta.namespace.clone().unwrap_or_default();
                    for svc in services.list_typed::<Service>(&ns) {
                        let Some(selector) = svc.spec.as_ref().and_then(|s| s.selector.as_ref())
                        else {
                            continue;
                        };
                        let sel = crate::util::label_selector(Some(
                            &k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector {
                                match_labels: Some(selector.clone()),
                                match_expressions: None,
                            },
                        ));
                        if selects(&sel, meta.labels.as_ref()) {
                            queue.add(format!("{ns}/{}", svc.metadata.name.unwrap_or_default()));
                        }
                    }
                }
            }));
        }
        let slices = informers.of_type::<EndpointSlice>();
        let index: Arc<SliceIndex> = Arc::default();
        {
            let index = Arc::clone(&index);
            slices.add_handler(Box::new(move |old, new| {
                let mut index = index.lock().unwrap_or_else(PoisonError::into_inner);
                if let Some((owner, name)) = old.and_then(slice_owner)
                    && let Some(names) = index.get_mut(&owner)
                {
                    names.remove(&name);
                    if names.is_empty() {
                        index.remove(&owner);
                    }
                }
                if let Some((owner, name)) = new.and_then(slice_owner) {
                    index.entry(owner).or_default().insert(name);
                }
            }));
        }
        let controller = Arc::new(Self {
            objects: objects.clone(),
            slices: Arc::clone(&slices),
            index,
        });
        spawn_workers(
            &controller,
            &queue,
            vec![services, pods, slices],
            // Each sync is two store writes; the store commits concurrent
            // writes together, so many workers program many Services fast.
            config.workers.max(ENDPOINT_WORKERS),
            shutdown,
        )
    }

    /// The slices of Service `ns/service` this controller manages.
    fn slices_of(&self, ns: &str, service: &str) -> Vec<EndpointSlice> {
        let names: Vec<String> = self
            .index
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&(ns.to_owned(), service.to_owned()))
            .map(|names| names.iter().cloned().collect())
            .unwrap_or_default();
        // The cache may trail this controller's own last write by a moment:
        // a write from a stale copy then fails its resourceVersion check and
        // the Service is synced again.
        names
            .iter()
            .filter_map(|name| self.slices.get(&format!("{ns}/{name}")))
            .filter_map(|v| serde_json::from_value::<EndpointSlice>(v).ok())
            .collect()
    }

    async fn delete_slice(&self, ns: &str, name: &str) -> Result<(), ControllerError> {
        match self
            .objects
            .delete_typed::<EndpointSlice>(ns, name, &DeleteOptions::default())
            .await
        {
            Ok(_) => Ok(()),
            Err(err) if is_not_found(&err) => Ok(()),
            Err(err) => Err(ControllerError::api(
                "delete endpointslice",
                format!("{ns}/{name}"),
                err,
            )),
        }
    }

    async fn write_endpoints(&self, desired: Endpoints) -> Result<(), ControllerError> {
        let ns = desired.metadata.namespace.clone().unwrap_or_default();
        let name = desired.metadata.name.clone().unwrap_or_default();
        let key = format!("{ns}/{name}");
        let existing = self
            .objects
            .try_get_typed::<Endpoints>(&ns, &name)
            .await
            .map_err(|e| ControllerError::api("get endpoints", &key, e))?;
        match existing {
            None => {
                self.objects
                    .create_typed(&desired, Self::NAME)
                    .await
                    .map_err(|e| ControllerError::api("create endpoints", &key, e))?;
            }
            Some(current) => {
                if current.subsets == desired.subsets
                    && current.metadata.labels == desired.metadata.labels
                {
                    return Ok(());
                }
                let mut updated = current;
                updated.subsets = desired.subsets;
                updated.metadata.labels = desired.metadata.labels;
                self.objects
                    .update_typed(&updated, "", Self::NAME)
                    .await
                    .map_err(|e| ControllerError::api("update endpoints", &key, e))?;
            }
        }
        Ok(())
    }

    async fn write_slice(
        &self,
        desired: EndpointSlice,
        existing: Option<&EndpointSlice>,
    ) -> Result<(), ControllerError> {
        let key = crate::util::meta_key(&desired.metadata);
        match existing {
            None => {
                self.objects
                    .create_typed(&desired, Self::NAME)
                    .await
                    .map_err(|e| ControllerError::api("create endpointslice", &key, e))?;
            }
            Some(current) => {
                if current.endpoints == desired.endpoints
                    && current.ports == desired.ports
                    && current.metadata.labels == desired.metadata.labels
                {
                    return Ok(());
                }
                let mut updated = current.clone();
                updated.endpoints = desired.endpoints;
                updated.ports = desired.ports;
                updated.metadata.labels = desired.metadata.labels;
                self.objects
                    .update_typed(&updated, "", Self::NAME)
                    .await
                    .map_err(|e| ControllerError::api("update endpointslice", &key, e))?;
            }
        }
        Ok(())
    }
}

impl Reconciler for EndpointsController {
    const NAME: &'static str = "endpoint-controller";

    #[expect(
        clippy::too_many_lines,
        reason = "Endpoints and slices from one pass over the backends"
    )]
    #[tracing::instrument(skip_all, fields(service = %key))]
    async fn reconcile(&self, key: &str) -> Result<Requeue, ControllerError> {
        let (ns, name) = split_key(key);
        let svc = self
            .objects
            .try_get_typed::<Service>(ns, name)
            .await
            .map_err(|e| ControllerError::api("get service", key, e))?;
        let Some(svc) = svc.filter(|s| s.metadata.deletion_timestamp.is_none()) else {
            // Gone: its Endpoints and slices go too.
            match self
                .objects
                .delete_typed::<Endpoints>(ns, name, &DeleteOptions::default())
                .await
            {
                Ok(_) => {}
                Err(err) if is_not_found(&err) => {}
                Err(err) => return Err(ControllerError::api("delete endpoints", key, err)),
            }
            for slice in self.slices_of(ns, name) {
                self.delete_slice(ns, slice.metadata.name.as_deref().unwrap_or_default())
                    .await?;
            }
            return Ok(None);
        };
        let Some(selector) = svc
            .spec
            .as_ref()
            .and_then(|s| s.selector.clone())
            .filter(|s| !s.is_empty())
        else {
            // No selector: Endpoints are the user's to write.
            return Ok(None);
        };
        let labels: Vec<String> = selector.iter().map(|(k, v)| format!("{k}={v}")).collect();
        let (pods, _) = self
            .objects
            .list_typed::<Pod>(ns, &labels.join(","))
            .await
            .map_err(|e| ControllerError::api("list pods for", key, e))?;
        let mut backends: Vec<Backend> = pods.iter().filter_map(|p| backend(&svc, p)).collect();
        backends.sort_by(|a, b| a.ip.cmp(&b.ip));

        // Endpoints: one subset per distinct port set; terminating pods left out.
        let mut subsets: BTreeMap<String, EndpointSubset> = BTreeMap::new();
        for b in backends.iter().filter(|b| !b.terminating) {
            let set = port_set_suffix(&b.ports);
            let subset = subsets.entry(set).or_insert_with(|| EndpointSubset {
                ports: Some(
                    b.ports
                        .iter()
                        .map(|(name, port, protocol, app)| EndpointPort {
                            name: name.clone(),
                            port: *port,
                            protocol: Some(protocol.clone()),
                            app_protocol: app.clone(),
                        })
                        .collect(),
                ),
                ..EndpointSubset::default()
            });
            let address = EndpointAddress {
                ip: b.ip.clone(),
                node_name: b.node.clone(),
                target_ref: Some(b.target.clone()),
                hostname: None,
            };
            let list = if b.ready {
                &mut subset.addresses
            } else {
                &mut subset.not_ready_addresses
            };
            list.get_or_insert_with(Vec::new).push(address);
        }
        let subsets: Vec<EndpointSubset> = subsets.into_values().collect();
        let service_labels = svc.metadata.labels.clone().unwrap_or_default();
        self.write_endpoints(Endpoints {
            metadata: ObjectMeta {
                name: Some(name.to_owned()),
                namespace: Some(ns.to_owned()),
                labels: Some(service_labels.clone()).filter(|l| !l.is_empty()),
                ..ObjectMeta::default()
            },
            subsets: Some(subsets).filter(|s| !s.is_empty()),
        })
        .await?;

        // EndpointSlices: one per distinct port set, terminating pods kept
        // with their conditions.
        let mut by_ports: BTreeMap<String, (Vec<SlicePort>, Vec<Endpoint>)> = BTreeMap::new();
        for b in &backends {
            let entry = by_ports
                .entry(port_set_suffix(&b.ports))
                .or_insert_with(|| {
                    let ports = b
                        .ports
                        .iter()
                        .map(|(name, port, protocol, app)| SlicePort {
                            name: Some(name.clone().unwrap_or_default()),
                            port: Some(*port),
                            protocol: Some(protocol.clone()),
                            app_protocol: app.clone(),
                        })
                        .collect();
                    (ports, Vec::new())
                });
            entry.1.push(Endpoint {
                addresses: vec![b.ip.clone()],
                conditions: Some(EndpointConditions {
                    ready: Some(b.ready),
                    serving: Some(b.serving),
                    terminating: Some(b.terminating),
                }),
                node_name: b.node.clone(),
                target_ref: Some(b.target.clone()),
                ..Endpoint::default()
            });
        }
        if by_ports.is_empty() {
            // An empty slice still says the Service has no endpoints.
            let ports = svc
                .spec
                .as_ref()
                .and_then(|s| s.ports.clone())
                .unwrap_or_default()
                .into_iter()
                .filter(|p| matches!(p.target_port, None | Some(IntOrString::Int(_))))
                .map(|p| SlicePort {
                    name: Some(p.name.unwrap_or_default()),
                    port: Some(match p.target_port {
                        Some(IntOrString::Int(t)) => t,
                        _ => p.port,
                    }),
                    protocol: p.protocol,
                    app_protocol: p.app_protocol,
                })
                .collect();
            by_ports.insert("empty".into(), (ports, Vec::new()));
        }
        let existing = self.slices_of(ns, name);
        let mut slice_labels = service_labels;
        slice_labels.insert(SERVICE_NAME_LABEL.into(), name.to_owned());
        slice_labels.insert(MANAGED_BY_LABEL.into(), MANAGED_BY.into());
        let mut wanted = BTreeSet::new();
        for (suffix, (ports, endpoints)) in by_ports {
            let slice_name = format!("{name}-{suffix}");
            wanted.insert(slice_name.clone());
            let desired = EndpointSlice {
                metadata: ObjectMeta {
                    name: Some(slice_name.clone()),
                    namespace: Some(ns.to_owned()),
                    labels: Some(slice_labels.clone()),
                    owner_references: Some(vec![owner_ref::<Service>(&svc.metadata)]),
                    ..ObjectMeta::default()
                },
                address_type: "IPv4".into(),
                endpoints,
                ports: Some(ports),
            };
            let current = existing
                .iter()
                .find(|s| s.metadata.name.as_deref() == Some(slice_name.as_str()));
            self.write_slice(desired, current).await?;
        }
        for slice in &existing {
            let slice_name = slice.metadata.name.as_deref().unwrap_or_default();
            if !wanted.contains(slice_name) {
                self.delete_slice(ns, slice_name).await?;
            }
        }
        Ok(None)
    }
}
