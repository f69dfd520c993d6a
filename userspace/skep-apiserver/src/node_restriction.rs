//! NodeRestriction on REST writes: a node's credential changes only what
//! belongs to it (its Node and Lease, its pods' status, tokens for its
//! pods), with upstream's messages. The rules are `skep-nodeauthz`'s; this
//! module reads the objects they look up. Node sync's own writes are
//! limited the same way in [`crate::nodesync`].

use std::collections::HashMap;

use serde_json::Value;
use skep_api::{ApiError, ResourceInfo, StatusReason, kinds};
use skep_nodeauthz::{
    AdmissionError, AdmissionRequest, Lookup, Operation, PodFacts, node_identity,
};
use skep_objects::Objects;
use skep_user::UserInfo;

use crate::authz::forbidden_error;
use crate::request::ResourceRequest;

/// The objects admission may look up, read before it runs.
#[derive(Default)]
struct Prefetched {
    pods: HashMap<(String, String), PodFacts>,
    nodes: HashMap<String, String>,
}

impl Lookup for Prefetched {
    fn pod(&self, namespace: &str, name: &str) -> Option<PodFacts> {
        self.pods
            .get(&(namespace.to_owned(), name.to_owned()))
            .cloned()
    }

    fn node_uid(&self, name: &str) -> Option<String> {
        self.nodes.get(name).cloned()
    }
}

/// Admits a write by `user` (a no-op for anyone but a node): `new` is the
/// object to store (or a subresource create's body), `old` the stored one.
pub async fn admit(
    objects: &Objects,
    user: &UserInfo,
    info: &ResourceInfo,
    req: &ResourceRequest,
    operation: Operation,
    new: Option<&Value>,
    old: Option<&Value>,
) -> Result<(), ApiError> {
    let Some(node) = node_identity(user) else {
        return Ok(());
    };
    let mut lookup = Prefetched::default();
    let mut pod_names = Vec::new();
    if *info == kinds::POD && !req.name.is_empty() {
        pod_names.push(req.name.clone());
    }
    if let Some(bound) = new
        .and_then(|body| body.pointer("/spec/boundObjectRef"))
        .filter(|r| r.get("kind").and_then(Value::as_str) == Some("Pod"))
        .and_then(|r| r.get("name").and_then(Value::as_str))
    {
        pod_names.push(bound.to_owned());
    }
    for name in pod_names {
        if let Some(pod) = objects.try_get(&kinds::POD, &req.namespace, &name).await? {
            lookup
                .pods
                .insert((req.namespace.clone(), name), PodFacts::of(&pod));
        }
    }
    if !node.is_empty()
        && let Some(obj) = objects.try_get(&kinds::NODE, "", node).await?
    {
        let uid = obj
            .pointer("/metadata/uid")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned();
        lookup.nodes.insert(node.to_owned(), uid);
    }
    let name = if req.name.is_empty() {
        new.map(skep_api::object::name).unwrap_or_default()
    } else {
        &req.name
    };
    let request = AdmissionRequest {
        user,
        operation,
        group: info.group,
        resource: info.plural,
        subresource: &req.subresource,
        namespace: &req.namespace,
        name,
        object: new,
        old_object: old,
    };
    skep_nodeauthz::admit(&request, &lookup).map_err(|err| match err {
        AdmissionError::Forbidden(f) => forbidden_error(&f),
        AdmissionError::NotFound { resource, ref name } => {
            let mut e = ApiError::new(StatusReason::NotFound, err.to_string());
            let name = name.clone();
            e.details = Some(Box::new(skep_api::status::StatusDetails {
                name,
                kind: resource.to_owned(),
                ..Default::default()
            }));
            e
        }
    })
}
