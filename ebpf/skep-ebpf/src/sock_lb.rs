//! Socket-level service load-balancing: the cgroup `connect4`/`sendmsg4` hooks
//! rewrite a service address to a backend once per connection (or per UDP
//! send); `recvmsg4`/`getpeername4` show the service address again. No packet
//! is ever translated: the socket talks to the backend directly.

use aya_ebpf::{
    helpers::{
        bpf_get_netns_cookie, bpf_get_prandom_u32, bpf_get_socket_cookie, bpf_ktime_get_ns,
        bpf_set_retval,
    },
    macros::map,
    maps::{HashMap, LruHashMap},
    programs::SockAddrContext,
    EbpfContext as _,
};
use skep_ebpf_common::{
    AffinityKey, AffinityValue, Backend, BackendId, Family, RevNatKey, RevNatValue, ServiceKey,
    ServiceName, ServiceValue, SockRevNatKey, SockRevNatValue, BACKENDS_MAP_ENTRIES,
    LRU_MAP_DEFAULT_ENTRIES, REVNAT_MAP_ENTRIES, SERVICES_MAP_ENTRIES, SERVICE_FLAG_AFFINITY,
};

/// Let the syscall go on (with the possibly rewritten address).
pub const SOCK_ALLOW: i32 = 1;
/// Fail the syscall; with `bpf_set_retval` the error is ours, else `EPERM`.
pub const SOCK_REJECT: i32 = 0;
/// `ECONNREFUSED`: what a connect to a service without endpoints returns.
const ECONNREFUSED: i32 = 111;
const NANOS_PER_SECOND: u64 = 1_000_000_000;
/// `BPF_F_NO_PREALLOC`: the names map is only written by userspace, rarely.
const BPF_F_NO_PREALLOC: u32 = 1;

/// Services and their backend slots.
#[map(name = "SKEP_SERVICES")]
pub(crate) static SERVICES: HashMap<ServiceKey, ServiceValue> =
    HashMap::pinned(SERVICES_MAP_ENTRIES, 0);

/// Backends by id.
#[map(name = "SKEP_BACKENDS")]
pub(crate) static BACKENDS: HashMap<BackendId, Backend> = HashMap::pinned(BACKENDS_MAP_ENTRIES, 0);

/// Service address by rev-NAT id: lets the reverse path check the service still exists.
#[map(name = "SKEP_REVNAT")]
static REVNAT: HashMap<RevNatKey, RevNatValue> = HashMap::pinned(REVNAT_MAP_ENTRIES, 0);

/// Which socket talks to which backend for which service (resized at load).
#[map(name = "SKEP_SOCK_REVNAT")]
static SOCK_REVNAT: LruHashMap<SockRevNatKey, SockRevNatValue> =
    LruHashMap::pinned(LRU_MAP_DEFAULT_ENTRIES, 0);

/// Session affinity: client network namespace × service → backend (resized at load).
#[map(name = "SKEP_AFFINITY")]
static AFFINITY: LruHashMap<AffinityKey, AffinityValue> =
    LruHashMap::pinned(LRU_MAP_DEFAULT_ENTRIES, 0);

/// Service names, written and read by userspace only; declared here so it is
/// pinned with the other maps.
#[map(name = "SKEP_SERVICE_NAMES")]
static SERVICE_NAMES: HashMap<RevNatKey, ServiceName> =
    HashMap::pinned(REVNAT_MAP_ENTRIES, BPF_F_NO_PREALLOC);

/// Forces [`SERVICE_NAMES`] into the object: the linker drops maps no program
/// references. The lookup never matches (id 0 is never allocated).
#[inline(always)]
fn keep_names_map() {
    let key = RevNatKey {
        rev_nat_id: 0,
        family: 0,
        pad: 0,
    };
    // SAFETY: a map lookup; the reference is dropped at once.
    let _ = unsafe { SERVICE_NAMES.get(&key) };
}

/// `connect4` and `sendmsg4`: if the destination is a service, replace it by a
/// backend. `Err(SOCK_REJECT)` when the service has no endpoints.
#[inline(always)]
pub fn try_forward(ctx: &SockAddrContext) -> Result<i32, i32> {
    keep_names_map();
    let sa = ctx.sock_addr;
    // SAFETY: `sa` is the context pointer the kernel passed to this program;
    // these fields are readable in connect4/sendmsg4.
    let (address, port_raw, protocol) =
        unsafe { ((*sa).user_ip4, (*sa).user_port, (*sa).protocol) };
    #[allow(
        clippy::cast_possible_truncation,
        reason = "user_port holds the 16-bit port in its low half; protocol numbers are 8 bits"
    )]
    let (port, proto) = (port_raw as u16, protocol as u8);
    let mut key = ServiceKey {
        address,
        port,
        proto,
        family: Family::Ipv4 as u8,
        slot: 0,
        pad: 0,
    };
    // SAFETY: a map lookup; the value is copied out at once.
    let Some(service) = (unsafe { SERVICES.get(&key) }).copied() else {
        return Ok(SOCK_ALLOW);
    };
    if service.count == 0 {
        // SAFETY: a helper call with a plain integer. Connection refused rather
        // than the default EPERM; older kernels just keep EPERM.
        let _ = unsafe { bpf_set_retval(-ECONNREFUSED) };
        return Err(SOCK_REJECT);
    }
    let Some(backend) = select_backend(ctx, &mut key, &service) else {
        // A slot or backend missing mid-update: let the connection go to the
        // service address, which the node routes nowhere: it fails fast too.
        return Ok(SOCK_ALLOW);
    };
    // SAFETY: `sa` is the context pointer; user_ip4/user_port are writable here.
    unsafe {
        (*sa).user_ip4 = backend.address;
        (*sa).user_port = u32::from(backend.port);
    }
    // SAFETY: the helper takes the context this program was given.
    let cookie = unsafe { bpf_get_socket_cookie(ctx.as_ptr()) };
    let sock_key = SockRevNatKey {
        cookie,
        address: backend.address,
        port: backend.port,
        family: Family::Ipv4 as u8,
        proto,
    };
    let sock_value = SockRevNatValue {
        address,
        port,
        rev_nat_id: service.rev_nat_id,
    };
    // A full LRU evicts the oldest entry; an insert failure only loses the
    // reverse translation of this socket.
    let _ = SOCK_REVNAT.insert(&sock_key, &sock_value, 0);
    Ok(SOCK_ALLOW)
}

/// Picks the backend: the client's affinity entry while it is fresh and its
/// backend still exists, else a random slot.
#[inline(always)]
fn select_backend(
    ctx: &SockAddrContext,
    key: &mut ServiceKey,
    service: &ServiceValue,
) -> Option<Backend> {
    let affinity = service.flags & SERVICE_FLAG_AFFINITY != 0;
    let (now, client_cookie) = if affinity {
        // SAFETY: helper calls without arguments / on the program's own context.
        unsafe { (bpf_ktime_get_ns(), bpf_get_netns_cookie(ctx.as_ptr())) }
    } else {
        (0, 0)
    };
    let affinity_key = AffinityKey {
        client_cookie,
        rev_nat_id: service.rev_nat_id,
        family: Family::Ipv4 as u8,
        pad: [0; 5],
    };
    if affinity {
        // SAFETY: a map lookup; the value is copied out at once.
        if let Some(entry) = unsafe { AFFINITY.get(&affinity_key) }.copied() {
            let timeout = u64::from(service.affinity_timeout) * NANOS_PER_SECOND;
            if now.saturating_sub(entry.last_used_ns) <= timeout {
                // SAFETY: a map lookup; the value is copied out at once.
                if let Some(backend) = unsafe { BACKENDS.get(&entry.backend_id) }.copied() {
                    touch_affinity(&affinity_key, entry.backend_id, now);
                    return Some(backend);
                }
            }
        }
    }
    // SAFETY: a helper call without arguments.
    let random = unsafe { bpf_get_prandom_u32() };
    #[allow(
        clippy::cast_possible_truncation,
        reason = "the remainder is below count, a u16"
    )]
    let slot = (random % u32::from(service.count)) as u16 + 1;
    key.slot = slot;
    // SAFETY: map lookups; the values are copied out at once.
    let backend_id = unsafe { SERVICES.get(key) }?.backend_id;
    // SAFETY: as above.
    let backend = unsafe { BACKENDS.get(&backend_id) }.copied()?;
    if affinity {
        touch_affinity(&affinity_key, backend_id, now);
    }
    Some(backend)
}

#[inline(always)]
fn touch_affinity(key: &AffinityKey, backend_id: BackendId, now: u64) {
    let value = AffinityValue {
        last_used_ns: now,
        backend_id,
        pad: 0,
    };
    let _ = AFFINITY.insert(key, &value, 0);
}

/// `recvmsg4` and `getpeername4`: if this socket was sent to a backend by
/// [`try_forward`], show the service address instead. Never fails the call.
#[inline(always)]
#[allow(
    clippy::unnecessary_wraps,
    reason = "the shape of every program body; recvmsg4/getpeername4 must return 1, so there is no error"
)]
pub fn try_reverse(ctx: &SockAddrContext) -> Result<i32, i32> {
    let sa = ctx.sock_addr;
    // SAFETY: `sa` is the context pointer; these fields are readable here.
    let (address, port_raw, protocol) =
        unsafe { ((*sa).user_ip4, (*sa).user_port, (*sa).protocol) };
    #[allow(
        clippy::cast_possible_truncation,
        reason = "user_port holds the 16-bit port in its low half; protocol numbers are 8 bits"
    )]
    let (port, proto) = (port_raw as u16, protocol as u8);
    // SAFETY: the helper takes the context this program was given.
    let cookie = unsafe { bpf_get_socket_cookie(ctx.as_ptr()) };
    let key = SockRevNatKey {
        cookie,
        address,
        port,
        family: Family::Ipv4 as u8,
        proto,
    };
    // SAFETY: a map lookup; the value is copied out at once.
    let Some(entry) = (unsafe { SOCK_REVNAT.get(&key) }).copied() else {
        return Ok(SOCK_ALLOW);
    };
    let revnat_key = RevNatKey {
        rev_nat_id: entry.rev_nat_id,
        family: Family::Ipv4 as u8,
        pad: 0,
    };
    // The service must still exist with that address: a removed service's id
    // may have been reused by another.
    // SAFETY: a map lookup; the value is copied out at once.
    match unsafe { REVNAT.get(&revnat_key) }.copied() {
        Some(service) if service.address == entry.address && service.port == entry.port => {
            // SAFETY: `sa` is the context pointer; user_ip4/user_port are
            // writable in recvmsg4/getpeername4.
            unsafe {
                (*sa).user_ip4 = entry.address;
                (*sa).user_port = u32::from(entry.port);
            }
        }
        _ => {
            let _ = SOCK_REVNAT.remove(&key);
        }
    }
    Ok(SOCK_ALLOW)
}
