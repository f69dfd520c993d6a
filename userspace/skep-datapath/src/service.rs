//! The service map from userspace: what `ClusterIP` services exist and which
//! backends each has, written to the pinned maps the socket programs read.
//!
//! Updates are incremental and ordered so that a program looking a service up
//! at any moment sees a consistent state: new backends are written before the
//! slots that name them, slots before the count that exposes them; a shrinking
//! service lowers its count before its surplus slots go, and a backend is
//! deleted only when no slot names it any more. Nothing is ever flushed and
//! refilled. [`ServiceMap::open_pinned`] rebuilds the whole view from the maps,
//! so a restarted agent continues where the last one stopped.
//!
//! The caller passes only Ready endpoints, with named target ports already
//! resolved per endpoint.

use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    fmt,
    net::{Ipv4Addr, SocketAddrV4},
    path::{Path, PathBuf},
};

use aya::maps::{HashMap as BpfHashMap, Map, MapData, MapError};
use skep_ebpf_common::{
    AffinityKey, AffinityValue, Backend, BackendId, ExternalAffinityKey, Family, RevNatKey,
    RevNatValue, SERVICE_FLAG_AFFINITY, SERVICE_FLAG_EXTERNAL, SERVICE_FLAG_LOCAL_ONLY,
    SERVICE_NAME_LEN, ServiceKey, ServiceName, ServiceValue, map,
};

use crate::{name, pinned};

/// Why a service-map operation failed.
#[derive(Debug, thiserror::Error)]
pub enum ServiceMapError {
    /// A map is not pinned where it should be (datapath never loaded?).
    #[error("failed to open map {name}: nothing pinned at {path}")]
    MissingMap {
        /// Map name.
        name: &'static str,
        /// Where it was looked for.
        path: PathBuf,
    },
    /// The kernel refused a map operation.
    #[error("failed to {operation} in map {name}")]
    Map {
        /// Map name.
        name: &'static str,
        /// What was being done.
        operation: &'static str,
        /// What aya reported.
        #[source]
        source: Box<MapError>,
    },
    /// No backend id or rev-NAT id is left.
    #[error("failed to allocate a {what} id: all are in use")]
    Exhausted {
        /// Which kind of id.
        what: &'static str,
    },
    /// The service has more backends than a slot number can address.
    #[error("failed to program service {name}: {count} backends, at most 65535")]
    TooManyBackends {
        /// Service name.
        name: String,
        /// How many backends it has.
        count: usize,
    },
    /// The service name does not fit the names map.
    #[error("failed to program service {name}: name longer than {max} bytes")]
    NameTooLong {
        /// Service name.
        name: String,
        /// The limit.
        max: usize,
    },
}

/// A transport protocol a service port can use.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Protocol {
    /// TCP (6).
    Tcp,
    /// UDP (17).
    Udp,
    /// SCTP (132).
    Sctp,
}

impl Protocol {
    /// The IP protocol number.
    #[must_use]
    pub const fn number(self) -> u8 {
        match self {
            Self::Tcp => 6,
            Self::Udp => 17,
            Self::Sctp => 132,
        }
    }

    /// The protocol for an IP protocol number, if a service can use it.
    #[must_use]
    pub const fn from_number(number: u8) -> Option<Self> {
        match number {
            6 => Some(Self::Tcp),
            17 => Some(Self::Udp),
            132 => Some(Self::Sctp),
            _ => None,
        }
    }
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Tcp => "TCP",
            Self::Udp => "UDP",
            Self::Sctp => "SCTP",
        })
    }
}

/// One service port as the datapath serves it: the VIP:port/protocol
/// frontend and its Ready backends.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServiceSpec {
    /// `namespace/name:port` (port name, or number when unnamed).
    pub name: String,
    /// The `ClusterIP`.
    pub vip: Ipv4Addr,
    /// The service port.
    pub port: u16,
    /// The port's protocol.
    pub proto: Protocol,
    /// Ready endpoints with their resolved target port, in any order;
    /// duplicates are ignored. Empty: connections are refused at once.
    pub backends: Vec<SocketAddrV4>,
    /// `sessionAffinity: ClientIP` with this timeout in seconds.
    pub affinity_timeout: Option<u32>,
    /// The frontend takes traffic from outside the node: a `NodePort` on a
    /// node address or an `externalIPs` address (`SERVICE_FLAG_EXTERNAL`).
    pub external: bool,
    /// `externalTrafficPolicy: Local`: `backends` are only this node's, and
    /// the client's address is kept (`SERVICE_FLAG_LOCAL_ONLY`).
    pub local_only: bool,
}

impl ServiceSpec {
    /// The `SERVICE_FLAG_*` bits this spec sets on its service entry.
    #[must_use]
    pub const fn flags(&self) -> u8 {
        let mut flags = 0;
        if self.affinity_timeout.is_some() {
            flags |= SERVICE_FLAG_AFFINITY;
        }
        if self.external {
            flags |= SERVICE_FLAG_EXTERNAL;
        }
        if self.local_only {
            flags |= SERVICE_FLAG_LOCAL_ONLY;
        }
        flags
    }

    /// The frontend this spec programs.
    #[must_use]
    pub const fn frontend(&self) -> Frontend {
        Frontend {
            vip: self.vip,
            port: self.port,
            proto: self.proto,
        }
    }
}

/// A service's address: what identifies it in the services map.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Frontend {
    /// The `ClusterIP`.
    pub vip: Ipv4Addr,
    /// The service port.
    pub port: u16,
    /// The protocol.
    pub proto: Protocol,
}

impl Frontend {
    fn key(self, slot: u16) -> ServiceKey {
        ServiceKey {
            address: u32::from(self.vip).to_be(),
            port: self.port.to_be(),
            proto: self.proto.number(),
            family: Family::Ipv4 as u8,
            slot,
            pad: 0,
        }
    }
}

impl fmt::Display for Frontend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}/{}", self.vip, self.port, self.proto)
    }
}

/// What the map holds for one service.
#[derive(Clone, Debug)]
struct ServiceState {
    name: String,
    rev_nat_id: u16,
    /// `slots[i]` is the backend in slot `i + 1`.
    slots: Vec<BackendId>,
    affinity_timeout: Option<u32>,
    external: bool,
    local_only: bool,
}

impl ServiceState {
    /// The `SERVICE_FLAG_*` bits of the service entry.
    fn flags(&self) -> u8 {
        let mut flags = 0;
        if self.affinity_timeout.is_some() {
            flags |= SERVICE_FLAG_AFFINITY;
        }
        if self.external {
            flags |= SERVICE_FLAG_EXTERNAL;
        }
        if self.local_only {
            flags |= SERVICE_FLAG_LOCAL_ONLY;
        }
        flags
    }
}

/// Whether opening the maps may remove what an unfinished update left.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Cleanup {
    /// The agent, the only writer: remove leftovers.
    Leftovers,
    /// A reader next to a running agent: write nothing.
    Nothing,
}

/// A backend's identity: address, port and protocol.
type BackendAddr = (SocketAddrV4, Protocol);

/// The pinned service maps and the view of them this process keeps.
pub struct ServiceMap {
    services_map: BpfHashMap<MapData, ServiceKey, ServiceValue>,
    backends_map: BpfHashMap<MapData, BackendId, Backend>,
    revnat_map: BpfHashMap<MapData, RevNatKey, RevNatValue>,
    affinity_map: BpfHashMap<MapData, AffinityKey, AffinityValue>,
    external_affinity_map: BpfHashMap<MapData, ExternalAffinityKey, AffinityValue>,
    names_map: BpfHashMap<MapData, RevNatKey, ServiceName>,
    services: BTreeMap<Frontend, ServiceState>,
    backend_ids: HashMap<BackendAddr, BackendId>,
    backend_addrs: HashMap<BackendId, BackendAddr>,
    backend_refs: HashMap<BackendId, u32>,
    free_backend_ids: Ids<BackendId>,
    free_rev_nat_ids: Ids<u16>,
}

impl fmt::Debug for ServiceMap {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServiceMap")
            .field("services", &self.services.len())
            .field("backends", &self.backend_addrs.len())
            .finish_non_exhaustive()
    }
}

fn map_err(name: &'static str, operation: &'static str) -> impl Fn(MapError) -> ServiceMapError {
    move |source| ServiceMapError::Map {
        name,
        operation,
        source: Box::new(source),
    }
}

/// Deleting a key that is already gone is fine: the state we want holds.
fn ignore_missing(result: Result<(), MapError>) -> Result<(), MapError> {
    match result {
        Err(err) if pinned::is_missing(&err) => Ok(()),
        other => other,
    }
}

fn open_hash<K: aya::Pod, V: aya::Pod>(
    pin_dir: &Path,
    name: &'static str,
) -> Result<BpfHashMap<MapData, K, V>, ServiceMapError> {
    let data = pinned::open_with(
        pin_dir,
        name,
        |path| ServiceMapError::MissingMap { name, path },
        map_err(name, "open pinned map"),
    )?;
    let map = if map::LRU.contains(&name) {
        Map::LruHashMap(data)
    } else {
        Map::HashMap(data)
    };
    BpfHashMap::try_from(map).map_err(map_err(name, "open pinned map"))
}

impl ServiceMap {
    /// Opens the maps pinned in `pin_dir` (by [`crate::Datapath::load`]) and
    /// rebuilds the view of every service from them. Leftovers of an update
    /// the last agent did not finish (slots beyond a count, backends no slot
    /// names) are removed; nothing else is touched.
    #[tracing::instrument(skip_all, fields(pin_dir = %pin_dir.display()))]
    pub fn open_pinned(pin_dir: &Path) -> Result<Self, ServiceMapError> {
        Self::open(pin_dir, Cleanup::Leftovers)
    }

    /// Every service in the maps pinned in `pin_dir`, without writing
    /// anything: safe while an agent is updating them (`skep bpf lb list`).
    pub fn list_pinned(pin_dir: &Path) -> Result<Vec<ServiceSpec>, ServiceMapError> {
        Ok(Self::open(pin_dir, Cleanup::Nothing)?.services())
    }

    fn open(pin_dir: &Path, cleanup: Cleanup) -> Result<Self, ServiceMapError> {
        let mut this = Self {
            services_map: open_hash(pin_dir, map::SERVICES)?,
            backends_map: open_hash(pin_dir, map::BACKENDS)?,
            revnat_map: open_hash(pin_dir, map::REVNAT)?,
            affinity_map: open_hash(pin_dir, map::AFFINITY)?,
            external_affinity_map: open_hash(pin_dir, map::EXTERNAL_AFFINITY)?,
            names_map: open_hash(pin_dir, map::SERVICE_NAMES)?,
            services: BTreeMap::new(),
            backend_ids: HashMap::new(),
            backend_addrs: HashMap::new(),
            backend_refs: HashMap::new(),
            free_backend_ids: Ids::new(u32::MAX),
            free_rev_nat_ids: Ids::new(u16::MAX),
        };
        this.rebuild(cleanup)?;
        tracing::info!(
            services = this.services.len(),
            backends = this.backend_addrs.len(),
            "service map opened"
        );
        Ok(this)
    }

    fn rebuild(&mut self, cleanup: Cleanup) -> Result<(), ServiceMapError> {
        let mut entries = Vec::new();
        for item in self.services_map.iter() {
            entries.push(item.map_err(map_err(map::SERVICES, "read"))?);
        }
        let mut backends = Vec::new();
        for item in self.backends_map.iter() {
            backends.push(item.map_err(map_err(map::BACKENDS, "read"))?);
        }
        for (id, backend) in backends {
            let addr = SocketAddrV4::new(
                Ipv4Addr::from(u32::from_be(backend.address)),
                u16::from_be(backend.port),
            );
            if let Some(proto) = Protocol::from_number(backend.proto) {
                self.backend_ids.insert((addr, proto), id);
                self.backend_addrs.insert(id, (addr, proto));
                self.free_backend_ids.take(id);
            } else {
                tracing::warn!(id, "backend with an unknown protocol left alone");
            }
        }
        let mut services = BTreeMap::new();
        let mut slot_entries = Vec::new();
        for (key, value) in entries {
            let Some(proto) = Protocol::from_number(key.proto) else {
                continue;
            };
            let frontend = Frontend {
                vip: Ipv4Addr::from(u32::from_be(key.address)),
                port: u16::from_be(key.port),
                proto,
            };
            if key.slot == 0 {
                services.insert(frontend, value);
            } else {
                slot_entries.push((frontend, key.slot, value.backend_id));
            }
        }
        for (frontend, value) in &services {
            let revnat_key = rev_nat_key(value.rev_nat_id);
            let name = match self.names_map.get(&revnat_key, 0) {
                Ok(name) => name::decode(&name.bytes),
                Err(_) => String::new(),
            };
            self.free_rev_nat_ids.take(value.rev_nat_id);
            let affinity_timeout =
                (value.flags & SERVICE_FLAG_AFFINITY != 0).then_some(value.affinity_timeout);
            self.services.insert(
                *frontend,
                ServiceState {
                    name,
                    rev_nat_id: value.rev_nat_id,
                    slots: vec![0; usize::from(value.count)],
                    affinity_timeout,
                    external: value.flags & SERVICE_FLAG_EXTERNAL != 0,
                    local_only: value.flags & SERVICE_FLAG_LOCAL_ONLY != 0,
                },
            );
        }
        for (frontend, slot, backend_id) in slot_entries {
            let in_use = self
                .services
                .get_mut(&frontend)
                .and_then(|state| state.slots.get_mut(usize::from(slot) - 1));
            if let Some(entry) = in_use {
                *entry = backend_id;
            } else if cleanup == Cleanup::Leftovers {
                tracing::info!(%frontend, slot, "removing a slot left over by an unfinished update");
                ignore_missing(self.services_map.remove(&frontend.key(slot)))
                    .map_err(map_err(map::SERVICES, "delete"))?;
            }
        }
        for state in self.services.values() {
            // 0 marks a slot missing from the map: it names no backend.
            for id in state.slots.iter().filter(|id| **id != 0) {
                *self.backend_refs.entry(*id).or_default() += 1;
            }
        }
        let orphans: Vec<BackendId> = self
            .backend_addrs
            .keys()
            .filter(|id| !self.backend_refs.contains_key(id))
            .copied()
            .collect();
        if cleanup == Cleanup::Nothing {
            return Ok(());
        }
        for id in orphans {
            tracing::info!(id, "removing a backend no service uses");
            self.drop_backend(id)?;
        }
        Ok(())
    }

    /// Every service in the map, backends in slot order.
    #[must_use]
    pub fn services(&self) -> Vec<ServiceSpec> {
        self.services
            .iter()
            .map(|(frontend, state)| ServiceSpec {
                name: state.name.clone(),
                vip: frontend.vip,
                port: frontend.port,
                proto: frontend.proto,
                backends: state
                    .slots
                    .iter()
                    .filter_map(|id| self.backend_addrs.get(id).map(|(addr, _)| *addr))
                    .collect(),
                affinity_timeout: state.affinity_timeout,
                external: state.external,
                local_only: state.local_only,
            })
            .collect()
    }

    /// Makes the map hold exactly `desired`: upserts each (writing only what
    /// changed) and removes services not in it.
    #[tracing::instrument(skip_all, fields(services = desired.len()))]
    pub fn sync(&mut self, desired: &[ServiceSpec]) -> Result<(), ServiceMapError> {
        let keep: BTreeSet<Frontend> = desired.iter().map(ServiceSpec::frontend).collect();
        let gone: Vec<Frontend> = self
            .services
            .keys()
            .filter(|f| !keep.contains(f))
            .copied()
            .collect();
        for spec in desired {
            self.upsert_service(spec)?;
        }
        for frontend in gone {
            self.remove_service(frontend)?;
        }
        Ok(())
    }

    /// Adds `spec`'s service or brings it up to date, writing only what
    /// changed, in an order a concurrent lookup always finds consistent.
    #[tracing::instrument(skip_all, fields(service = %spec.name, frontend = %spec.frontend()))]
    pub fn upsert_service(&mut self, spec: &ServiceSpec) -> Result<(), ServiceMapError> {
        encode_name(&spec.name)?;
        let mut wanted: Vec<SocketAddrV4> = Vec::with_capacity(spec.backends.len());
        let mut seen = BTreeSet::new();
        wanted.extend(spec.backends.iter().filter(|addr| seen.insert(**addr)));
        let count = u16::try_from(wanted.len()).map_err(|_| ServiceMapError::TooManyBackends {
            name: spec.name.clone(),
            count: wanted.len(),
        })?;
        let frontend = spec.frontend();
        let existing = self.services.get(&frontend).cloned();

        // 1. The service's reverse NAT and name, so replies translate as soon
        //    as the first connection is made.
        let rev_nat_id = self.ensure_rev_nat(spec, existing.as_ref())?;

        // 2. Backends first: every id a slot will name exists before the slot.
        let mut wanted_ids = Vec::with_capacity(wanted.len());
        for addr in &wanted {
            wanted_ids.push(self.ensure_backend(*addr, spec.proto)?);
        }
        let old_slots = existing.as_ref().map_or(&[][..], |s| &s.slots[..]);
        let new_slots = place_slots(old_slots, &wanted_ids);
        let old_count = old_slots.len();
        let new_count = new_slots.len();

        let state = ServiceState {
            name: spec.name.clone(),
            rev_nat_id,
            slots: new_slots,
            affinity_timeout: spec.affinity_timeout,
            external: spec.external,
            local_only: spec.local_only,
        };
        let new_slots = &state.slots;
        let service_value = ServiceValue {
            backend_id: 0,
            count,
            rev_nat_id,
            affinity_timeout: spec.affinity_timeout.unwrap_or(0),
            flags: state.flags(),
            pad: [0; 3],
        };
        let service_changed = existing.as_ref().is_none_or(|s| {
            s.slots.len() != new_count
                || s.affinity_timeout != spec.affinity_timeout
                || s.flags() != state.flags()
        });
        // 3. A shrinking service hides its surplus slots first.
        if new_count < old_count {
            self.write_service(frontend, service_value)?;
        }
        // 4. Slots that changed (all of them still name existing backends).
        for (index, id) in new_slots.iter().enumerate() {
            if old_slots.get(index) != Some(id) {
                let slot = slot_number(index);
                let value = ServiceValue {
                    backend_id: *id,
                    ..ServiceValue::default()
                };
                self.services_map
                    .insert(frontend.key(slot), value, 0)
                    .map_err(map_err(map::SERVICES, "insert slot"))?;
            }
        }
        // 5. A growing (or new, or changed) service exposes its slots last.
        if new_count >= old_count && service_changed {
            self.write_service(frontend, service_value)?;
        }
        // 6. Surplus slots, now unreachable.
        for index in new_count..old_count {
            ignore_missing(self.services_map.remove(&frontend.key(slot_number(index))))
                .map_err(map_err(map::SERVICES, "delete slot"))?;
        }

        // 7. Account: new references first, then release the old ones (a
        //    backend that moved slots is never dropped in between).
        for id in new_slots {
            *self.backend_refs.entry(*id).or_default() += 1;
        }
        let removed: Vec<BackendId> = old_slots
            .iter()
            .filter(|id| !new_slots.contains(id))
            .copied()
            .collect();
        for id in old_slots.iter().copied() {
            self.unref_backend(id)?;
        }
        if !removed.is_empty() {
            self.forget_affinity(rev_nat_id, |id| removed.contains(&id))?;
        }
        tracing::debug!(backends = new_count, "service programmed");
        self.services.insert(frontend, state);
        Ok(())
    }

    /// Removes a service: new connections to it are no longer translated.
    /// Returns whether it existed.
    #[tracing::instrument(skip_all, fields(frontend = %frontend))]
    pub fn remove_service(&mut self, frontend: Frontend) -> Result<bool, ServiceMapError> {
        let Some(state) = self.services.get(&frontend).cloned() else {
            return Ok(false);
        };
        // The service entry first: lookups miss from now on, so no slot is read.
        ignore_missing(self.services_map.remove(&frontend.key(0)))
            .map_err(map_err(map::SERVICES, "delete service"))?;
        for index in 0..state.slots.len() {
            ignore_missing(self.services_map.remove(&frontend.key(slot_number(index))))
                .map_err(map_err(map::SERVICES, "delete slot"))?;
        }
        let key = rev_nat_key(state.rev_nat_id);
        ignore_missing(self.revnat_map.remove(&key)).map_err(map_err(map::REVNAT, "delete"))?;
        ignore_missing(self.names_map.remove(&key))
            .map_err(map_err(map::SERVICE_NAMES, "delete"))?;
        self.forget_affinity(state.rev_nat_id, |_| true)?;
        for id in &state.slots {
            self.unref_backend(*id)?;
        }
        self.services.remove(&frontend);
        self.free_rev_nat_ids.release(state.rev_nat_id);
        tracing::info!(service = %state.name, "service removed");
        Ok(true)
    }

    /// The service's rev-NAT id: its existing one, or a new one written to the
    /// rev-NAT map. Writes the name when it is new or changed.
    fn ensure_rev_nat(
        &mut self,
        spec: &ServiceSpec,
        existing: Option<&ServiceState>,
    ) -> Result<u16, ServiceMapError> {
        let rev_nat_id = if let Some(state) = existing {
            state.rev_nat_id
        } else {
            let id = self
                .free_rev_nat_ids
                .alloc()
                .ok_or(ServiceMapError::Exhausted { what: "rev-NAT" })?;
            let value = RevNatValue {
                address: u32::from(spec.vip).to_be(),
                port: spec.port.to_be(),
                proto: spec.proto.number(),
                family: Family::Ipv4 as u8,
            };
            if let Err(err) = self.revnat_map.insert(rev_nat_key(id), value, 0) {
                self.free_rev_nat_ids.release(id);
                return Err(map_err(map::REVNAT, "insert")(err));
            }
            id
        };
        if existing.is_none_or(|s| s.name != spec.name) {
            self.names_map
                .insert(rev_nat_key(rev_nat_id), encode_name(&spec.name)?, 0)
                .map_err(map_err(map::SERVICE_NAMES, "insert"))?;
        }
        Ok(rev_nat_id)
    }

    fn write_service(
        &mut self,
        frontend: Frontend,
        value: ServiceValue,
    ) -> Result<(), ServiceMapError> {
        self.services_map
            .insert(frontend.key(0), value, 0)
            .map_err(map_err(map::SERVICES, "insert service"))
    }

    /// The id of the backend at `addr`, writing it to the backends map first if new.
    fn ensure_backend(
        &mut self,
        addr: SocketAddrV4,
        proto: Protocol,
    ) -> Result<BackendId, ServiceMapError> {
        if let Some(id) = self.backend_ids.get(&(addr, proto)) {
            return Ok(*id);
        }
        let id = self
            .free_backend_ids
            .alloc()
            .ok_or(ServiceMapError::Exhausted { what: "backend" })?;
        let backend = Backend {
            address: u32::from(*addr.ip()).to_be(),
            port: addr.port().to_be(),
            proto: proto.number(),
            family: Family::Ipv4 as u8,
            flags: 0,
            pad: [0; 3],
        };
        if let Err(err) = self.backends_map.insert(id, backend, 0) {
            self.free_backend_ids.release(id);
            return Err(map_err(map::BACKENDS, "insert")(err));
        }
        self.backend_ids.insert((addr, proto), id);
        self.backend_addrs.insert(id, (addr, proto));
        Ok(id)
    }

    fn unref_backend(&mut self, id: BackendId) -> Result<(), ServiceMapError> {
        let Some(refs) = self.backend_refs.get_mut(&id) else {
            return Ok(());
        };
        *refs -= 1;
        if *refs == 0 {
            self.backend_refs.remove(&id);
            self.drop_backend(id)?;
        }
        Ok(())
    }

    fn drop_backend(&mut self, id: BackendId) -> Result<(), ServiceMapError> {
        ignore_missing(self.backends_map.remove(&id)).map_err(map_err(map::BACKENDS, "delete"))?;
        if let Some(addr) = self.backend_addrs.remove(&id) {
            self.backend_ids.remove(&addr);
        }
        self.free_backend_ids.release(id);
        Ok(())
    }

    /// Deletes the affinity entries of service `rev_nat_id` whose backend
    /// matches: a client must not stick to a backend the service lost (its id
    /// may even be reused by another backend).
    fn forget_affinity(
        &mut self,
        rev_nat_id: u16,
        matches: impl Fn(BackendId) -> bool,
    ) -> Result<(), ServiceMapError> {
        forget_in(&mut self.affinity_map, map::AFFINITY, |key, value| {
            key.rev_nat_id == rev_nat_id && matches(value.backend_id)
        })?;
        // External clients (NodePort, externalIPs) stick by client IP.
        forget_in(
            &mut self.external_affinity_map,
            map::EXTERNAL_AFFINITY,
            |key, value| key.rev_nat_id == rev_nat_id && matches(value.backend_id),
        )
    }
}

/// Deletes the entries of an affinity map that `stale` picks.
fn forget_in<K: aya::Pod>(
    affinity: &mut BpfHashMap<MapData, K, AffinityValue>,
    name: &'static str,
    stale: impl Fn(&K, &AffinityValue) -> bool,
) -> Result<(), ServiceMapError> {
    let mut keys = Vec::new();
    for item in affinity.iter() {
        let (key, value) = item.map_err(map_err(name, "read"))?;
        if stale(&key, &value) {
            keys.push(key);
        }
    }
    for key in keys {
        ignore_missing(affinity.remove(&key)).map_err(map_err(name, "delete"))?;
    }
    Ok(())
}

/// The service map as a table, one frontend per line (like `cilium bpf lb
/// list`): name, frontend, kind (`ClusterIP`, `External`, `External/Local`),
/// affinity, backends in slot order. For `skep bpf lb list`.
#[must_use]
pub fn format_table(services: &[ServiceSpec]) -> String {
    use fmt::Write as _;
    let mut out = format!(
        "{:<40} {:<24} {:<14} {:<9} {}\n",
        "SERVICE", "FRONTEND", "KIND", "AFFINITY", "BACKENDS"
    );
    for spec in services {
        let backends = if spec.backends.is_empty() {
            "(none: refused)".to_owned()
        } else {
            spec.backends
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        };
        let affinity = spec
            .affinity_timeout
            .map_or_else(|| "-".to_owned(), |t| format!("{t}s"));
        let kind = match (spec.external, spec.local_only) {
            (false, _) => "ClusterIP",
            (true, false) => "External",
            (true, true) => "External/Local",
        };
        // Writing to a String cannot fail.
        let _ = writeln!(
            out,
            "{:<40} {:<24} {:<14} {:<9} {backends}",
            spec.name,
            spec.frontend().to_string(),
            kind,
            affinity
        );
    }
    out
}

/// New slot order: backends that stay keep their slot; new ones fill the
/// holes of removed ones, then go at the end; remaining holes are filled by
/// moving the last slot in. Few slots change, and no backend is listed twice.
fn place_slots(old: &[BackendId], wanted: &[BackendId]) -> Vec<BackendId> {
    let mut slots: Vec<Option<BackendId>> = old
        .iter()
        .map(|id| wanted.contains(id).then_some(*id))
        .collect();
    let mut additions = wanted.iter().filter(|id| !old.contains(id)).copied();
    for slot in &mut slots {
        if slot.is_none() {
            *slot = additions.next();
        }
    }
    slots.extend(additions.map(Some));
    // Compact: move the last entry into the first hole until none is left.
    while let Some(hole) = slots.iter().position(Option::is_none) {
        match slots.pop() {
            Some(Some(last)) if hole < slots.len() => slots[hole] = Some(last),
            _ => {}
        }
    }
    slots.into_iter().flatten().collect()
}

/// The slot number of the backend at `index` (slots are 1-based).
fn slot_number(index: usize) -> u16 {
    // Callers index slot vectors whose length fits a u16 (checked on upsert).
    u16::try_from(index + 1).unwrap_or(u16::MAX)
}

const fn rev_nat_key(rev_nat_id: u16) -> RevNatKey {
    RevNatKey {
        rev_nat_id,
        family: Family::Ipv4 as u8,
        pad: 0,
    }
}

/// `name` for the names map; refused when it does not fit.
fn encode_name(name: &str) -> Result<ServiceName, ServiceMapError> {
    let bytes = name::encode(name).ok_or_else(|| ServiceMapError::NameTooLong {
        name: name.to_owned(),
        max: SERVICE_NAME_LEN,
    })?;
    Ok(ServiceName { bytes })
}

/// An allocator of small ids (1..=max), lowest free first, so ids stay dense
/// and are reused.
#[derive(Debug)]
struct Ids<T> {
    max: T,
    next: T,
    free: BTreeSet<T>,
}

impl<T> Ids<T>
where
    T: Copy + Ord + From<u8> + std::ops::Add<Output = T>,
{
    fn new(max: T) -> Self {
        Self {
            max,
            next: T::from(1),
            free: BTreeSet::new(),
        }
    }

    fn alloc(&mut self) -> Option<T> {
        if let Some(id) = self.free.pop_first() {
            return Some(id);
        }
        if self.next > self.max || self.next == T::from(0) {
            return None;
        }
        let id = self.next;
        // Wraps to 0 only past `max`, which the check above then refuses.
        self.next = if id == self.max {
            T::from(0)
        } else {
            id + T::from(1)
        };
        Some(id)
    }

    /// Marks `id` as used (rebuilding from the maps).
    fn take(&mut self, id: T) {
        if id == T::from(0) {
            return;
        }
        self.free.remove(&id);
        while self.next != T::from(0) && self.next <= id {
            if self.next != id {
                self.free.insert(self.next);
            }
            self.next = if self.next == self.max {
                T::from(0)
            } else {
                self.next + T::from(1)
            };
        }
    }

    fn release(&mut self, id: T) {
        if id != T::from(0) {
            self.free.insert(id);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_names_each_service_and_its_backends() {
        let spec = ServiceSpec {
            name: "default/web:http".into(),
            vip: Ipv4Addr::new(10, 96, 0, 10),
            port: 80,
            proto: Protocol::Tcp,
            backends: vec![SocketAddrV4::new(Ipv4Addr::new(10, 0, 0, 5), 8080)],
            affinity_timeout: Some(10800),
            external: false,
            local_only: false,
        };
        let empty = ServiceSpec {
            name: "default/none:53".into(),
            proto: Protocol::Udp,
            backends: vec![],
            affinity_timeout: None,
            ..spec.clone()
        };
        let node_port = ServiceSpec {
            name: "default/web:http".into(),
            vip: Ipv4Addr::new(10, 99, 1, 11),
            port: 30080,
            external: true,
            local_only: true,
            ..spec.clone()
        };
        let table = format_table(&[spec, empty, node_port]);
        let lines: Vec<&str> = table.lines().collect();
        assert_eq!(lines.len(), 4, "{table}");
        assert!(lines[0].starts_with("SERVICE"));
        assert!(
            lines[1].contains("default/web:http")
                && lines[1].contains("10.96.0.10:80/TCP")
                && lines[1].contains("10800s")
                && lines[1].ends_with("10.0.0.5:8080"),
            "{}",
            lines[1]
        );
        assert!(lines[2].contains("10.96.0.10:80/UDP") && lines[2].contains("refused"));
        assert!(lines[1].contains(" ClusterIP "), "{}", lines[1]);
        assert!(
            lines[3].contains("10.99.1.11:30080/TCP") && lines[3].contains(" External/Local "),
            "{}",
            lines[3]
        );
    }

    #[test]
    fn slots_keep_staying_backends_in_place() {
        assert_eq!(place_slots(&[], &[5, 6, 7]), vec![5, 6, 7]);
        // Same set in another order: nothing moves.
        assert_eq!(place_slots(&[1, 2, 3], &[3, 2, 1]), vec![1, 2, 3]);
        // A new backend takes the removed one's slot.
        assert_eq!(place_slots(&[1, 2, 3], &[1, 3, 4]), vec![1, 4, 3]);
        // Shrink: the last slot moves into the hole.
        assert_eq!(place_slots(&[1, 2, 3, 4], &[1, 3, 4]), vec![1, 4, 3]);
        assert_eq!(place_slots(&[1, 2, 3, 4], &[1]), vec![1]);
        assert_eq!(place_slots(&[1, 2, 3, 4], &[4]), vec![4]);
        // Grow.
        assert_eq!(place_slots(&[1], &[1, 2, 3]), vec![1, 2, 3]);
        assert_eq!(place_slots(&[1, 2], &[]), Vec::<BackendId>::new());
    }

    #[test]
    fn ids_are_lowest_free_first_and_rebuilt_from_use() {
        let mut ids = Ids::<u16>::new(3);
        assert_eq!(ids.alloc(), Some(1));
        assert_eq!(ids.alloc(), Some(2));
        ids.release(1);
        assert_eq!(ids.alloc(), Some(1));
        assert_eq!(ids.alloc(), Some(3));
        assert_eq!(ids.alloc(), None);

        let mut rebuilt = Ids::<u32>::new(u32::MAX);
        rebuilt.take(2);
        rebuilt.take(5);
        let got: Vec<u32> = (0..4).filter_map(|_| rebuilt.alloc()).collect();
        assert_eq!(got, vec![1, 3, 4, 6]);
    }

    #[test]
    fn names_round_trip_and_keys_are_network_order() {
        let name = "default/web:http";
        assert_eq!(name::decode(&encode_name(name).expect("fits").bytes), name);
        let frontend = Frontend {
            vip: Ipv4Addr::new(10, 96, 0, 10),
            port: 80,
            proto: Protocol::Tcp,
        };
        let key = frontend.key(0);
        // The bytes in memory are the address as on the wire.
        assert_eq!(key.address.to_ne_bytes(), [10, 96, 0, 10]);
        assert_eq!(key.port.to_ne_bytes(), [0, 80]);
        assert_eq!((key.proto, key.family, key.slot), (6, 4, 0));
        assert_eq!(frontend.to_string(), "10.96.0.10:80/TCP");
    }
}
