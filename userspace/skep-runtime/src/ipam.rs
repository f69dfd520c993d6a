//! Pod IPv4 address management for one node's pod CIDR.
//!
//! Storage follows the CNI `host-local` plugin: one file per allocated
//! address, named by the address and holding the pod UID, created with
//! `O_EXCL` so two allocators (or a restarted agent) can never hand the same
//! address out twice; plus a `last_reserved_ip` file (written atomically) so
//! allocation continues round-robin after a restart and freed addresses are
//! reused last.
//!
//! The agent is the directory's one allocator: who holds what is read from
//! disk once at [`Ipam::open`] and kept in memory beside the files, so an
//! allocation does not scan the directory. Allocation files are not synced
//! (as `host-local` does not): an address matters only while its pod's
//! sandbox exists, and a host crash takes every sandbox with it.

use std::collections::HashMap;
use std::fs::{self, OpenOptions};
use std::io::{self, Write};
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::sync::Mutex;

/// Name of the file remembering the last handed-out address.
const LAST_RESERVED: &str = "last_reserved_ip";

/// Errors from [`Ipam`].
#[derive(Debug, thiserror::Error)]
pub enum IpamError {
    /// The pod CIDR could not be parsed or is too small.
    #[error("failed to parse pod cidr {cidr:?}: {reason}")]
    BadCidr {
        /// The CIDR as given.
        cidr: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// Every usable address is allocated.
    #[error("failed to allocate an address for pod {uid}: pod cidr {cidr} is exhausted")]
    Exhausted {
        /// Pod UID asking for an address.
        uid: String,
        /// The pod CIDR.
        cidr: String,
    },
    /// The state directory could not be read or written.
    #[error("failed to {op} ipam state at {path}")]
    Io {
        /// What was being done.
        op: &'static str,
        /// File or directory involved.
        path: PathBuf,
        /// Underlying error.
        #[source]
        source: io::Error,
    },
}

/// Allocates pod IPs from a node's pod CIDR, keyed by pod UID, persisted on disk.
#[derive(Debug)]
pub struct Ipam {
    dir: PathBuf,
    network: u32,
    prefix: u8,
    /// Pod UID → address, as the files say; the lock serialises allocation.
    held: Mutex<HashMap<String, Ipv4Addr>>,
}

/// Parses `a.b.c.d/n` into (network address as u32, prefix length).
pub fn parse_cidr(cidr: &str) -> Result<(Ipv4Addr, u8), IpamError> {
    let bad = |reason| IpamError::BadCidr {
        cidr: cidr.to_owned(),
        reason,
    };
    let (addr, prefix) = cidr.split_once('/').ok_or_else(|| bad("missing /prefix"))?;
    let addr: Ipv4Addr = addr.parse().map_err(|_| bad("invalid IPv4 address"))?;
    let prefix: u8 = prefix.parse().map_err(|_| bad("invalid prefix length"))?;
    if prefix > 32 {
        return Err(bad("prefix length above 32"));
    }
    let mask = prefix_mask(prefix);
    if u32::from(addr) & !mask != 0 {
        return Err(bad("host bits set"));
    }
    Ok((addr, prefix))
}

fn prefix_mask(prefix: u8) -> u32 {
    if prefix == 0 {
        0
    } else {
        u32::MAX << (32 - u32::from(prefix))
    }
}

impl Ipam {
    /// Opens (creating if needed) the allocation store in `dir` for `cidr`.
    ///
    /// The first usable address of the CIDR is reserved for the node side
    /// (see [`Ipam::gateway`]) and never handed to a pod.
    pub fn open(dir: impl Into<PathBuf>, cidr: &str) -> Result<Self, IpamError> {
        let (network, prefix) = parse_cidr(cidr)?;
        if prefix > 29 {
            return Err(IpamError::BadCidr {
                cidr: cidr.to_owned(),
                reason: "prefix longer than /29 leaves no pod addresses",
            });
        }
        let dir = dir.into();
        fs::create_dir_all(&dir).map_err(|source| IpamError::Io {
            op: "create directory",
            path: dir.clone(),
            source,
        })?;
        let mut ipam = Self {
            dir,
            network: u32::from(network),
            prefix,
            held: Mutex::default(),
        };
        let held = ipam.allocated()?.into_iter().map(|(ip, uid)| (uid, ip));
        ipam.held
            .get_mut()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .extend(held);
        Ok(ipam)
    }

    /// The pod CIDR as text.
    pub fn cidr(&self) -> String {
        format!("{}/{}", Ipv4Addr::from(self.network), self.prefix)
    }

    /// The address reserved for the node side (first usable address).
    pub fn gateway(&self) -> Ipv4Addr {
        Ipv4Addr::from(self.network + 1)
    }

    /// First and last address handed to pods (inclusive).
    fn range(&self) -> (u32, u32) {
        let broadcast = self.network | !prefix_mask(self.prefix);
        (self.network + 2, broadcast - 1)
    }

    /// Returns the address of pod `uid`, allocating one if it has none.
    #[tracing::instrument(skip_all, fields(pod_uid = %uid))]
    pub fn allocate(&self, uid: &str) -> Result<Ipv4Addr, IpamError> {
        let began = std::time::Instant::now();
        let mut held = self.held();
        if let Some(ip) = held.get(uid) {
            return Ok(*ip);
        }
        let (first, last) = self.range();
        let start = self
            .last_reserved()
            .filter(|ip| (first..=last).contains(ip))
            .map_or(first, |ip| if ip == last { first } else { ip + 1 });
        let size = last - first + 1;
        for i in 0..size {
            let candidate = first + (start - first + i) % size;
            let ip = Ipv4Addr::from(candidate);
            let path = self.dir.join(ip.to_string());
            match OpenOptions::new().write(true).create_new(true).open(&path) {
                Ok(mut file) => {
                    file.write_all(uid.as_bytes())
                        .map_err(|source| IpamError::Io {
                            op: "write allocation",
                            path: path.clone(),
                            source,
                        })?;
                    held.insert(uid.to_owned(), ip);
                    self.write_last_reserved(ip)?;
                    tracing::debug!(%ip, "allocated pod address");
                    crate::timing::phase("ipam", began);
                    return Ok(ip);
                }
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
                Err(source) => {
                    return Err(IpamError::Io {
                        op: "create allocation",
                        path,
                        source,
                    });
                }
            }
        }
        Err(IpamError::Exhausted {
            uid: uid.to_owned(),
            cidr: self.cidr(),
        })
    }

    /// Frees the address of pod `uid`; returns it, or `None` if it had none.
    #[tracing::instrument(skip_all, fields(pod_uid = %uid))]
    pub fn release(&self, uid: &str) -> Result<Option<Ipv4Addr>, IpamError> {
        let mut held = self.held();
        let Some(ip) = held.get(uid).copied() else {
            return Ok(None);
        };
        let path = self.dir.join(ip.to_string());
        match fs::remove_file(&path) {
            Ok(()) => {
                held.remove(uid);
                Ok(Some(ip))
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                held.remove(uid);
                Ok(Some(ip))
            }
            Err(source) => Err(IpamError::Io {
                op: "remove allocation",
                path,
                source,
            }),
        }
    }

    /// The address currently held by pod `uid`, if any.
    pub fn get(&self, uid: &str) -> Result<Option<Ipv4Addr>, IpamError> {
        Ok(self.held().get(uid).copied())
    }

    fn held(&self) -> std::sync::MutexGuard<'_, HashMap<String, Ipv4Addr>> {
        self.held
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Every allocation as (address, pod UID), sorted by address.
    pub fn allocated(&self) -> Result<Vec<(Ipv4Addr, String)>, IpamError> {
        let entries = fs::read_dir(&self.dir).map_err(|source| IpamError::Io {
            op: "list",
            path: self.dir.clone(),
            source,
        })?;
        let mut out = Vec::new();
        for entry in entries {
            let entry = entry.map_err(|source| IpamError::Io {
                op: "list",
                path: self.dir.clone(),
                source,
            })?;
            let Some(ip) = entry
                .file_name()
                .to_str()
                .and_then(|n| n.parse::<Ipv4Addr>().ok())
            else {
                continue;
            };
            let path = entry.path();
            match fs::read_to_string(&path) {
                Ok(uid) => out.push((ip, uid.trim().to_owned())),
                // Released concurrently by another process.
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(source) => {
                    return Err(IpamError::Io {
                        op: "read allocation",
                        path,
                        source,
                    });
                }
            }
        }
        out.sort();
        Ok(out)
    }

    fn last_reserved(&self) -> Option<u32> {
        fs::read_to_string(self.dir.join(LAST_RESERVED))
            .ok()
            .and_then(|s| s.trim().parse::<Ipv4Addr>().ok())
            .map(u32::from)
    }

    fn write_last_reserved(&self, ip: Ipv4Addr) -> Result<(), IpamError> {
        // A hint only (where round-robin goes on): not synced.
        crate::files::write_replace(&self.dir.join(LAST_RESERVED), ip.to_string().as_bytes())
            .map_err(|source| IpamError::Io {
                op: "write",
                path: self.dir.join(LAST_RESERVED),
                source,
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_rejects_cidrs() {
        assert_eq!(
            parse_cidr("10.244.3.0/24").ok(),
            Some((Ipv4Addr::new(10, 244, 3, 0), 24))
        );
        assert!(parse_cidr("10.244.3.1/24").is_err());
        assert!(parse_cidr("10.244.3.0").is_err());
        assert!(parse_cidr("10.244.3.0/33").is_err());
        let dir = tempfile::tempdir().expect("tempdir");
        assert!(Ipam::open(dir.path(), "10.0.0.0/30").is_err());
    }

    #[test]
    fn allocates_skipping_network_gateway_and_broadcast() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let ipam = Ipam::open(dir.path(), "10.244.3.0/24")?;
        assert_eq!(ipam.gateway(), Ipv4Addr::new(10, 244, 3, 1));
        let a = ipam.allocate("pod-a")?;
        let b = ipam.allocate("pod-b")?;
        assert_eq!(a, Ipv4Addr::new(10, 244, 3, 2));
        assert_eq!(b, Ipv4Addr::new(10, 244, 3, 3));
        // Same UID gets the same address back.
        assert_eq!(ipam.allocate("pod-a")?, a);
        assert_eq!(
            ipam.allocated()?,
            vec![(a, "pod-a".to_owned()), (b, "pod-b".to_owned())]
        );
        Ok(())
    }

    #[test]
    fn exhaustion_and_reuse_last() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        // /29: .0 network, .1 node, .2-.6 pods, .7 broadcast.
        let ipam = Ipam::open(dir.path(), "10.1.0.0/29")?;
        let ips: Vec<_> = (0..5)
            .map(|i| ipam.allocate(&format!("p{i}")))
            .collect::<Result<_, _>>()?;
        assert_eq!(ips.first(), Some(&Ipv4Addr::new(10, 1, 0, 2)));
        assert_eq!(ips.last(), Some(&Ipv4Addr::new(10, 1, 0, 6)));
        let err = ipam.allocate("p5").err();
        assert!(matches!(err, Some(IpamError::Exhausted { .. })), "{err:?}");
        assert_eq!(ipam.release("p1")?, Some(Ipv4Addr::new(10, 1, 0, 3)));
        assert_eq!(ipam.release("p1")?, None);
        assert_eq!(ipam.allocate("p5")?, Ipv4Addr::new(10, 1, 0, 3));
        Ok(())
    }

    #[test]
    fn round_robin_reuses_freed_addresses_last() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let ipam = Ipam::open(dir.path(), "10.2.0.0/24")?;
        let a = ipam.allocate("a")?;
        ipam.release("a")?;
        let b = ipam.allocate("b")?;
        assert_ne!(a, b, "a freed address is not handed out again right away");
        assert_eq!(b, Ipv4Addr::new(10, 2, 0, 3));
        Ok(())
    }

    #[test]
    fn survives_restart_without_leak_or_duplicate() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let (a, b) = {
            let ipam = Ipam::open(dir.path(), "10.3.0.0/24")?;
            (ipam.allocate("a")?, ipam.allocate("b")?)
        };
        let ipam = Ipam::open(dir.path(), "10.3.0.0/24")?;
        assert_eq!(ipam.get("a")?, Some(a));
        assert_eq!(ipam.allocate("b")?, b);
        let c = ipam.allocate("c")?;
        assert!(c != a && c != b);
        assert_eq!(
            c,
            Ipv4Addr::new(10, 3, 0, 4),
            "continues after the last one"
        );
        assert_eq!(ipam.allocated()?.len(), 3);
        Ok(())
    }
}
