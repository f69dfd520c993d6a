//! Kubernetes DNS records (the cluster DNS specification) built from
//! Services and EndpointSlices, and the lookup that answers one question.
//!
//! ```text
//! <svc>.<ns>.svc.<domain>                 A/AAAA  ClusterIPs, or every ready endpoint when headless
//! <host>.<svc>.<ns>.svc.<domain>          A/AAAA  one headless endpoint (hostname, or its dashed IP)
//! _<port>._<proto>.<svc>.<ns>.svc.<domain> SRV    named ports (ClusterIP: one, at the service; headless: one per endpoint)
//! <svc>.<ns>.svc.<domain>                 CNAME   ExternalName
//! <a-b-c-d>.<ns>.pod.<domain>             A       any pod IP (computed from the name, like CoreDNS `pods insecure`)
//! <d.c.b.a>.in-addr.arpa                  PTR     ClusterIPs and headless endpoint addresses
//! ```
//!
//! Every name inside the domain that is an ancestor of a record exists (a
//! question for it is NODATA, not NXDOMAIN), as DNS empty non-terminals do.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::net::{IpAddr, Ipv4Addr};

use hickory_proto::rr::rdata::{A, AAAA, CNAME, PTR, SOA, SRV};
use hickory_proto::rr::{Name, RData, Record, RecordType};
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;

/// Time to live of every answer, as CoreDNS's kubernetes plugin.
pub const TTL: u32 = 30;

/// The label that ties an EndpointSlice to its Service.
const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";

/// Failures building the records.
#[derive(Debug, thiserror::Error)]
pub enum RecordsError {
    /// The cluster domain is not a domain name.
    #[error("failed to parse cluster domain {domain:?}")]
    Domain {
        /// The domain as given.
        domain: String,
        /// Why.
        #[source]
        source: hickory_proto::ProtoError,
    },
}

/// What the records say about one question.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Lookup {
    /// The name exists: its records of the asked type (empty = NODATA), and
    /// records that help the client (A of SRV targets).
    Answer {
        /// The answer section.
        answers: Vec<Record>,
        /// The additional section.
        additionals: Vec<Record>,
    },
    /// A name inside the cluster domain that does not exist.
    NxDomain,
    /// Not a name this server is authoritative for: forward it.
    Forward,
}

/// All cluster DNS records at one moment; rebuilt whole when Services or
/// EndpointSlices change (building 10,000 services takes milliseconds).
#[derive(Debug, Clone)]
pub struct Records {
    domain: Name,
    names: HashMap<Name, Vec<Record>>,
}

impl Records {
    /// Records for `domain` (e.g. `cluster.local`) from every Service and
    /// EndpointSlice of the cluster. Objects whose names do not make DNS
    /// names are skipped.
    pub fn build<'a>(
        domain: &str,
        services: impl IntoIterator<Item = &'a Service>,
        slices: impl IntoIterator<Item = &'a EndpointSlice>,
    ) -> Result<Self, RecordsError> {
        let domain = fqdn(domain).map_err(|source| RecordsError::Domain {
            domain: domain.to_owned(),
            source,
        })?;
        let mut records = Self {
            domain: domain.clone(),
            names: HashMap::new(),
        };
        let mut by_service: HashMap<(&str, &str), Vec<&EndpointSlice>> = HashMap::new();
        for slice in slices {
            let ns = slice.metadata.namespace.as_deref().unwrap_or_default();
            if let Some(svc) = slice
                .metadata
                .labels
                .as_ref()
                .and_then(|l| l.get(SERVICE_NAME_LABEL))
            {
                by_service.entry((ns, svc)).or_default().push(slice);
            }
        }
        for service in services {
            let ns = service.metadata.namespace.as_deref().unwrap_or_default();
            let name = service.metadata.name.as_deref().unwrap_or_default();
            let slices = by_service.get(&(ns, name)).map_or(&[][..], Vec::as_slice);
            if let Err(err) = records.add_service(ns, name, service, slices) {
                tracing::debug!(%err, service = %format!("{ns}/{name}"), "service makes no DNS name");
            }
        }
        records.add_empty_non_terminals();
        let soa = soa_record(&domain);
        records.names.entry(domain).or_default().push(soa);
        Ok(records)
    }

    /// The cluster domain, fully qualified.
    pub fn domain(&self) -> &Name {
        &self.domain
    }

    /// The zone's SOA record (the authority section of negative answers).
    pub fn soa(&self) -> Record {
        soa_record(&self.domain)
    }

    /// Answers `qtype` for `name` (fully qualified; any case).
    pub fn lookup(&self, name: &Name, qtype: RecordType) -> Lookup {
        let name = name.to_lowercase();
        if let Some(records) = self.names.get(&name) {
            let mut answers = Vec::new();
            if let Some(cname) = records
                .iter()
                .find(|r| r.record_type() == RecordType::CNAME)
                && qtype != RecordType::CNAME
            {
                answers.push(cname.clone());
                if let RData::CNAME(CNAME(target)) = &cname.data
                    && let Some(chased) = self.names.get(&target.to_lowercase())
                {
                    answers.extend(chased.iter().filter(|r| matches(r, qtype)).cloned());
                }
            } else {
                answers.extend(records.iter().filter(|r| matches(r, qtype)).cloned());
            }
            let additionals = self.additionals(&answers);
            return Lookup::Answer {
                answers,
                additionals,
            };
        }
        if !self.domain.zone_of(&name) {
            return Lookup::Forward;
        }
        self.pod_lookup(&name, qtype)
    }

    /// `<a-b-c-d>.<ns>.pod.<domain>`: the A record is the name itself.
    fn pod_lookup(&self, name: &Name, qtype: RecordType) -> Lookup {
        let pod_zone = Name::from_labels([&b"pod"[..]])
            .and_then(|p| p.append_domain(&self.domain))
            .ok();
        let Some(pod_zone) = pod_zone.filter(|z| z.zone_of(name)) else {
            return Lookup::NxDomain;
        };
        let below = name.num_labels() - pod_zone.num_labels();
        let answers = match below {
            0 | 1 => Vec::new(),
            2 => {
                let Some(ip) = name
                    .iter()
                    .next()
                    .and_then(|l| std::str::from_utf8(l).ok())
                    .and_then(undash_ipv4)
                else {
                    return Lookup::NxDomain;
                };
                let record = Record::from_rdata(name.clone(), TTL, RData::A(A(ip)));
                if matches(&record, qtype) {
                    vec![record]
                } else {
                    Vec::new()
                }
            }
            _ => return Lookup::NxDomain,
        };
        Lookup::Answer {
            answers,
            additionals: Vec::new(),
        }
    }

    /// A/AAAA records of SRV targets.
    fn additionals(&self, answers: &[Record]) -> Vec<Record> {
        let mut additionals = Vec::new();
        for record in answers {
            if let RData::SRV(srv) = &record.data
                && let Some(records) = self.names.get(&srv.target.to_lowercase())
            {
                for r in records {
                    if matches!(r.data, RData::A(_) | RData::AAAA(_)) && !additionals.contains(r) {
                        additionals.push(r.clone());
                    }
                }
            }
        }
        additionals
    }

    fn add_service(
        &mut self,
        ns: &str,
        name: &str,
        service: &Service,
        slices: &[&EndpointSlice],
    ) -> Result<(), hickory_proto::ProtoError> {
        let svc_name = fqdn(&format!("{name}.{ns}.svc"))?.append_domain(&self.domain)?;
        let Some(spec) = &service.spec else {
            return Ok(());
        };
        self.names.entry(svc_name.clone()).or_default();
        if spec.type_.as_deref() == Some("ExternalName") {
            if let Some(target) = &spec.external_name {
                let target = fqdn(target)?;
                self.add(svc_name, RData::CNAME(CNAME(target)));
            }
            return Ok(());
        }
        if spec.cluster_ip.as_deref() == Some("None") {
            let publish_not_ready = spec.publish_not_ready_addresses == Some(true);
            return self.add_headless(&svc_name, slices, publish_not_ready);
        }
        let ips = spec
            .cluster_ips
            .iter()
            .flatten()
            .chain(spec.cluster_ip.iter())
            .filter_map(|ip| ip.parse::<IpAddr>().ok());
        for ip in ips {
            self.add(svc_name.clone(), address(ip));
            self.add(reverse_name(ip)?, RData::PTR(PTR(svc_name.clone())));
        }
        for port in spec.ports.iter().flatten() {
            let (Some(port_name), Ok(number)) = (&port.name, u16::try_from(port.port)) else {
                continue;
            };
            let proto = port.protocol.as_deref().unwrap_or("TCP");
            let srv_name = srv_name(port_name, proto, &svc_name)?;
            self.add(
                srv_name,
                RData::SRV(SRV::new(0, 100, number, svc_name.clone())),
            );
        }
        Ok(())
    }

    fn add_headless(
        &mut self,
        svc_name: &Name,
        slices: &[&EndpointSlice],
        publish_not_ready: bool,
    ) -> Result<(), hickory_proto::ProtoError> {
        let mut srv = Vec::new();
        for slice in slices {
            for endpoint in &slice.endpoints {
                let ready = endpoint
                    .conditions
                    .as_ref()
                    .and_then(|c| c.ready)
                    .unwrap_or(true);
                if !ready && !publish_not_ready {
                    continue;
                }
                for ip in endpoint
                    .addresses
                    .iter()
                    .filter_map(|a| a.parse::<IpAddr>().ok())
                {
                    let label = endpoint.hostname.clone().unwrap_or_else(|| dashed(ip));
                    let ep_name = fqdn(&label)?.append_domain(svc_name)?;
                    self.add(svc_name.clone(), address(ip));
                    self.add(ep_name.clone(), address(ip));
                    self.add(reverse_name(ip)?, RData::PTR(PTR(ep_name.clone())));
                    for port in slice.ports.iter().flatten() {
                        if let (Some(port_name), Some(Ok(number))) =
                            (&port.name, port.port.map(u16::try_from))
                            && !port_name.is_empty()
                        {
                            let proto = port.protocol.as_deref().unwrap_or("TCP");
                            srv.push((
                                srv_name(port_name, proto, svc_name)?,
                                number,
                                ep_name.clone(),
                            ));
                        }
                    }
                }
            }
        }
        let mut per_name: HashMap<Name, usize> = HashMap::new();
        for (name, _, _) in &srv {
            *per_name.entry(name.clone()).or_default() += 1;
        }
        for (name, port, target) in srv {
            let n = per_name.get(&name).copied().unwrap_or(1).max(1);
            let weight = u16::try_from(100 / n).unwrap_or(1).max(1);
            self.add(name, RData::SRV(SRV::new(0, weight, port, target)));
        }
        Ok(())
    }

    fn add(&mut self, name: Name, data: RData) {
        let record = Record::from_rdata(name.clone(), TTL, data);
        let records = self.names.entry(name).or_default();
        if !records.contains(&record) {
            records.push(record);
        }
    }

    /// Every ancestor (below the domain) of a name in the domain exists.
    fn add_empty_non_terminals(&mut self) {
        let mut ancestors = Vec::new();
        for name in self.names.keys() {
            if !self.domain.zone_of(name) {
                continue;
            }
            let mut parent = name.base_name();
            while parent.num_labels() > self.domain.num_labels() {
                ancestors.push(parent.clone());
                parent = parent.base_name();
            }
        }
        for name in ancestors {
            self.names.entry(name).or_default();
        }
        // The pod zone exists even with no service in the cluster.
        if let Ok(pod_zone) =
            Name::from_labels([&b"pod"[..]]).and_then(|p| p.append_domain(&self.domain))
        {
            self.names.entry(pod_zone).or_default();
        }
    }
}

/// Whether `record` answers a question of type `qtype`.
fn matches(record: &Record, qtype: RecordType) -> bool {
    qtype == RecordType::ANY || record.record_type() == qtype
}

fn fqdn(name: &str) -> Result<Name, hickory_proto::ProtoError> {
    let mut name = Name::from_ascii(name)?.to_lowercase();
    name.set_fqdn(true);
    Ok(name)
}

fn srv_name(port: &str, proto: &str, svc: &Name) -> Result<Name, hickory_proto::ProtoError> {
    fqdn(&format!("_{port}._{}", proto.to_ascii_lowercase()))?.append_domain(svc)
}

fn address(ip: IpAddr) -> RData {
    match ip {
        IpAddr::V4(ip) => RData::A(A(ip)),
        IpAddr::V6(ip) => RData::AAAA(AAAA(ip)),
    }
}

/// `10.244.1.7` → `10-244-1-7`; `fd00::7` → `fd00--7` (CoreDNS's labels).
fn dashed(ip: IpAddr) -> String {
    ip.to_string().replace(['.', ':'], "-")
}

fn undash_ipv4(label: &str) -> Option<Ipv4Addr> {
    label.replace('-', ".").parse().ok()
}

/// `10.96.0.10` → `10.0.96.10.in-addr.arpa.`
fn reverse_name(ip: IpAddr) -> Result<Name, hickory_proto::ProtoError> {
    let text = match ip {
        IpAddr::V4(ip) => {
            let [a, b, c, d] = ip.octets();
            format!("{d}.{c}.{b}.{a}.in-addr.arpa.")
        }
        IpAddr::V6(ip) => {
            let mut text = String::new();
            for byte in ip.octets().iter().rev() {
                let _ = write!(text, "{:x}.{:x}.", byte & 0xf, byte >> 4);
            }
            text.push_str("ip6.arpa.");
            text
        }
    };
    fqdn(&text)
}

fn soa_record(domain: &Name) -> Record {
    let under = |labels: &str| {
        fqdn(labels)
            .and_then(|n| n.append_domain(domain))
            .unwrap_or_else(|_| domain.clone())
    };
    let soa = SOA::new(
        under("ns.dns"),
        under("hostmaster"),
        1,
        7200,
        1800,
        86400,
        TTL,
    );
    Record::from_rdata(domain.clone(), TTL, RData::SOA(soa))
}

#[cfg(test)]
#[path = "records_test.rs"]
mod tests;
