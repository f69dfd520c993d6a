//! Service cluster IPs and node ports, reserved in the store.
//!
//! Like kube-apiserver's `IPAddress` objects, every held cluster IP and
//! node port is a key of its own (`/registry/allocations/…`, created only if
//! absent), written in one all-or-nothing store transaction with the Service
//! itself: two creates never get the same value, a failed write reserves
//! nothing, a delete releases with the Service, and a restart keeps it all.

use std::collections::BTreeSet;
use std::net::Ipv4Addr;

use bytes::Bytes;
use serde_json::{Value, json};
use skep_api::service_alloc::{self, Holdings, ServiceRanges, Want};
use skep_api::{ApiError, FieldError, ResourceInfo, object};
use skep_store::{ListRequest, ReadConsistency, Request, Response, StoreError};

use crate::{Objects, key, output, store_error, stored_bytes};

/// Where cluster IP reservations live: one key per IP.
pub const CLUSTER_IP_PREFIX: &str = "/registry/allocations/serviceips/";
/// Where node port reservations live: one key per port.
pub const NODE_PORT_PREFIX: &str = "/registry/allocations/servicenodeports/";

/// How many times a write is redone when a value it picked at random was
/// taken by a concurrent writer in the meantime.
const ATTEMPTS: usize = 64;

fn ip_key(ip: Ipv4Addr) -> String {
    format!("{CLUSTER_IP_PREFIX}{ip}")
}

fn port_key(port: u16) -> String {
    format!("{NODE_PORT_PREFIX}{port}")
}

/// One value to reserve for a Service.
struct Claim {
    key: String,
    /// The error to give if it is taken: set for values the user asked
    /// for; a value picked at random is picked again instead.
    requested: Option<FieldError>,
}

/// Why a reserving transaction failed.
pub(crate) enum TxnFailed {
    /// The op on the Service's own key failed (exists, gone, conflict).
    Object(StoreError),
    /// A final answer for the client (a requested value is taken, the
    /// store failed, or the retries ran out).
    Api(ApiError),
}

impl Objects {
    /// The taken values under `prefix`, parsed from the key suffixes.
    async fn taken<T: std::str::FromStr + Ord>(
        &self,
        prefix: &str,
    ) -> Result<BTreeSet<T>, ApiError> {
        let mut taken = BTreeSet::new();
        let mut start_after = None;
        loop {
            let page = self
                .store()
                .list(
                    ListRequest {
                        prefix: Bytes::copy_from_slice(prefix.as_bytes()),
                        start_after,
                        limit: 10_000,
                        revision: None,
                    },
                    ReadConsistency::Linearizable,
                )
                .await
                .map_err(ApiError::internal)?;
            for kv in &page.items {
                let suffix = kv.key.strip_prefix(prefix.as_bytes()).unwrap_or_default();
                if let Some(v) = std::str::from_utf8(suffix)
                    .ok()
                    .and_then(|s| s.parse().ok())
                {
                    taken.insert(v);
                }
            }
            match (page.more, page.items.last()) {
                (true, Some(last)) => start_after = Some(last.key.clone()),
                _ => return Ok(taken),
            }
        }
    }

    /// Fills the cluster IP and node ports `svc` asks for and does not
    /// already hold (`old`), checking requested ones against the ranges;
    /// returns the keys to reserve.
    async fn allocate(&self, svc: &mut Value, old: &Holdings) -> Result<Vec<Claim>, ApiError> {
        let ranges = *self.service_ranges();
        let wants = service_alloc::wants(svc);
        let name = object::name(svc).to_owned();
        let invalid =
            |err: FieldError| ApiError::invalid("", "Service", &name, std::slice::from_ref(&err));
        let mut claims = Vec::new();
        let ip = match wants.cluster_ip {
            Want::This(ip) if old.cluster_ip == Some(ip) => Some(ip),
            Want::This(ip) if ranges.cluster_ip.offset(ip).is_none() => {
                return Err(invalid(service_alloc::ip_not_in_range(ip, &ranges)));
            }
            Want::This(ip) => {
                claims.push(Claim {
                    key: ip_key(ip),
                    requested: Some(service_alloc::ip_already_allocated(ip)),
                });
                Some(ip)
            }
            Want::Any => {
                let taken = self.taken(CLUSTER_IP_PREFIX).await?;
                let ip = ranges
                    .pick_ip(&taken, service_alloc::random_start())
                    .ok_or_else(service_alloc::ip_range_full)?;
                claims.push(Claim {
                    key: ip_key(ip),
                    requested: None,
                });
                Some(ip)
            }
            Want::Nothing => None,
        };
        service_alloc::set_cluster_ip(svc, ip);

        let mut held: BTreeSet<u16> = BTreeSet::new();
        for (index, want) in wants.node_ports.iter().enumerate() {
            if let Want::This(port) = *want {
                if old.node_ports.contains(&port) || !held.insert(port) {
                    held.insert(port);
                    continue;
                }
                if !ranges.node_ports.contains(port) {
                    return Err(invalid(service_alloc::port_not_in_range(
                        index, port, &ranges,
                    )));
                }
                claims.push(Claim {
                    key: port_key(port),
                    requested: Some(service_alloc::port_already_allocated(index, port)),
                });
            }
        }
        let mut by_service_port: Vec<(i64, u16)> = Vec::new();
        let mut taken: Option<BTreeSet<u16>> = None;
        for (index, want) in wants.node_ports.iter().enumerate() {
            if *want != Want::Any {
                continue;
            }
            let service_port = service_alloc::service_port(svc, index);
            let shared = by_service_port
                .iter()
                .find(|(p, _)| *p == service_port)
                .map(|(_, np)| *np);
            if let Some(port) = shared {
                service_alloc::set_node_port(svc, index, port);
                continue;
            }
            if taken.is_none() {
                taken = Some(self.taken(NODE_PORT_PREFIX).await?);
            }
            let mut busy = taken.clone().unwrap_or_default();
            busy.extend(&held);
            busy.extend(&old.node_ports);
            let port = ranges
                .pick_port(&busy, service_alloc::random_start())
                .ok_or_else(service_alloc::port_range_full)?;
            held.insert(port);
            claims.push(Claim {
                key: port_key(port),
                requested: None,
            });
            by_service_port.push((service_port, port));
            service_alloc::set_node_port(svc, index, port);
        }
        Ok(claims)
    }

    /// Deletes of the reservations `old` holds and `new` does not, where
    /// they exist and belong to the Service with `uid`.
    async fn releases(
        &self,
        old: &Holdings,
        new: &Holdings,
        uid: &str,
    ) -> Result<Vec<Request>, ApiError> {
        let mut keys: Vec<String> = Vec::new();
        if let Some(ip) = old.cluster_ip.filter(|ip| new.cluster_ip != Some(*ip)) {
            keys.push(ip_key(ip));
        }
        keys.extend(
            old.node_ports
                .difference(&new.node_ports)
                .map(|p| port_key(*p)),
        );
        let mut ops = Vec::new();
        for key in keys {
            let Some(kv) = self
                .store()
                .get(&key, ReadConsistency::Linearizable)
                .await
                .map_err(ApiError::internal)?
            else {
                continue;
            };
            let owner: Value = serde_json::from_slice(&kv.value).unwrap_or_default();
            if object::str_or_empty(&owner, &["uid"]) == uid {
                ops.push(Request::Delete {
                    key: Bytes::from(key),
                    expected_mod_revision: Some(kv.mod_revision),
                });
            }
        }
        Ok(ops)
    }

    /// Runs `svc_op` with the creates of `claims` (owned by `svc`) and
    /// `releases` as one transaction; `Ok(None)` means a value picked at
    /// random or a release raced another writer: pick again.
    async fn reserve_txn(
        &self,
        svc_op: Request,
        svc: &Value,
        claims: &[Claim],
        releases: Vec<Request>,
    ) -> Result<Option<Vec<Response>>, TxnFailed> {
        let owner = json!({
            "namespace": object::namespace(svc),
            "name": object::name(svc),
            "uid": object::str_or_empty(svc, &["metadata", "uid"]),
        });
        let owner = Bytes::from(owner.to_string());
        let mut ops = vec![svc_op];
        ops.extend(claims.iter().map(|c| Request::Create {
            key: Bytes::from(c.key.clone()),
            value: owner.clone(),
        }));
        ops.extend(releases);
        let err = match self.store().txn(ops).await {
            Ok(responses) => return Ok(Some(responses)),
            Err(err) => err,
        };
        let failed_key = match &err {
            StoreError::AlreadyExists { key }
            | StoreError::NotFound { key }
            | StoreError::Conflict { key, .. } => key.clone(),
            _ => return Err(TxnFailed::Api(ApiError::internal(err))),
        };
        if !failed_key.starts_with("/registry/allocations/") {
            return Err(TxnFailed::Object(err));
        }
        match claims.iter().find(|c| c.key == failed_key) {
            Some(Claim {
                requested: Some(field),
                ..
            }) if matches!(err, StoreError::AlreadyExists { .. }) => {
                Err(TxnFailed::Api(ApiError::invalid(
                    "",
                    "Service",
                    object::name(svc),
                    std::slice::from_ref(field),
                )))
            }
            _ => {
                tracing::debug!(key = %failed_key, "a reservation raced another writer; picking again");
                Ok(None)
            }
        }
    }

    /// Stores a new Service with its reservations; the stored object (and
    /// for `dry_run`, the object with what it would get).
    pub(crate) async fn create_service(
        &self,
        info: &ResourceInfo,
        obj: &Value,
        dry_run: bool,
    ) -> Result<Value, ApiError> {
        let name = object::name(obj);
        for _ in 0..ATTEMPTS {
            let mut svc = obj.clone();
            let claims = self.allocate(&mut svc, &Holdings::default()).await?;
            if dry_run {
                return Ok(svc);
            }
            let op = Request::Create {
                key: Bytes::from(key(info, object::namespace(obj), name)),
                value: Bytes::from(stored_bytes(&svc)?),
            };
            match self.reserve_txn(op, &svc, &claims, Vec::new()).await {
                Ok(Some(responses)) => return first_put(&responses),
                Ok(None) => {}
                Err(TxnFailed::Object(err)) => return Err(store_error(info, name, err)),
                Err(TxnFailed::Api(err)) => return Err(err),
            }
        }
        Err(retries_exhausted())
    }

    /// Stores `new` over `old` (at `expected`) with the reservations a
    /// change of type, cluster IP or node ports needs, releasing the ones it
    /// no longer holds.
    pub(crate) async fn replace_service(
        &self,
        info: &ResourceInfo,
        old: &Value,
        new: &Value,
        expected: Option<u64>,
    ) -> Result<Value, ApiError> {
        let name = object::name(old);
        let held = service_alloc::holdings(old);
        let uid = object::str_or_empty(old, &["metadata", "uid"]);
        for _ in 0..ATTEMPTS {
            let mut svc = new.clone();
            let claims = self.allocate(&mut svc, &held).await?;
            let releases = self
                .releases(&held, &service_alloc::holdings(&svc), uid)
                .await?;
            let op = Request::Update {
                key: Bytes::from(key(info, object::namespace(old), name)),
                value: Bytes::from(stored_bytes(&svc)?),
                expected_mod_revision: expected,
            };
            match self.reserve_txn(op, &svc, &claims, releases).await {
                Ok(Some(responses)) => return first_put(&responses),
                Ok(None) => {}
                Err(TxnFailed::Object(err)) => return Err(store_error(info, name, err)),
                Err(TxnFailed::Api(err)) => return Err(err),
            }
        }
        Err(retries_exhausted())
    }

    /// Deletes the Service `obj` (at `expected`) and releases what it held;
    /// returns the delete's revision.
    pub(crate) async fn delete_service(
        &self,
        info: &ResourceInfo,
        obj: &Value,
        expected: Option<u64>,
    ) -> Result<u64, TxnFailed> {
        let held = service_alloc::holdings(obj);
        let uid = object::str_or_empty(obj, &["metadata", "uid"]);
        for _ in 0..ATTEMPTS {
            let releases = self
                .releases(&held, &Holdings::default(), uid)
                .await
                .map_err(TxnFailed::Api)?;
            let op = Request::Delete {
                key: Bytes::from(key(info, object::namespace(obj), object::name(obj))),
                expected_mod_revision: expected,
            };
            if let Some(responses) = self.reserve_txn(op, obj, &[], releases).await? {
                return match responses.first() {
                    Some(Response::Deleted { revision, .. }) => Ok(*revision),
                    other => Err(TxnFailed::Api(ApiError::internal(format!(
                        "unexpected store response {other:?}"
                    )))),
                };
            }
        }
        Err(TxnFailed::Api(retries_exhausted()))
    }

    /// The ranges Services get their cluster IPs and node ports from.
    pub fn service_ranges(&self) -> &ServiceRanges {
        &self.service_ranges
    }
}

/// The object the first op of a transaction wrote.
fn first_put(responses: &[Response]) -> Result<Value, ApiError> {
    match responses.first() {
        Some(Response::Put { kv, .. }) => output(kv),
        other => Err(ApiError::internal(format!(
            "unexpected store response {other:?}"
        ))),
    }
}

fn retries_exhausted() -> ApiError {
    ApiError::internal("failed to allocate a serviceIP or nodePort: too many concurrent writers")
}
