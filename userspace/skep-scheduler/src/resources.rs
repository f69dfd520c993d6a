//! Resource quantities and per-pod requests, computed like kube-scheduler's
//! `computePodResourceRequest` (containers summed, init containers by the
//! max rule, restartable init containers as sidecars, plus pod overhead).

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Container, PodSpec};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;

/// CPU a container without a CPU request counts for in scoring (100m), like
/// kube-scheduler's `DefaultMilliCPURequest`.
pub const DEFAULT_MILLI_CPU_REQUEST: i64 = 100;
/// Memory a container without a memory request counts for in scoring (200Mi).
pub const DEFAULT_MEMORY_REQUEST: i64 = 200 * 1024 * 1024;

/// Amounts of the resources the scheduler accounts for.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Resources {
    /// CPU in millicores.
    pub milli_cpu: i64,
    /// Memory in bytes.
    pub memory: i64,
    /// Ephemeral storage in bytes.
    pub ephemeral_storage: i64,
    /// Extended/scalar resources (`nvidia.com/gpu`, `hugepages-2Mi`, …) in
    /// their integer unit, sorted by name.
    pub scalar: Vec<(String, i64)>,
}

impl Resources {
    /// Reads a `ResourceList` (`requests`, `allocatable`, `overhead`).
    pub fn from_list(list: &BTreeMap<String, Quantity>) -> Self {
        let mut r = Self::default();
        for (name, q) in list {
            match name.as_str() {
                "cpu" => r.milli_cpu = parse_milli(&q.0).unwrap_or(0),
                "memory" => r.memory = parse_units(&q.0).unwrap_or(0),
                "ephemeral-storage" => r.ephemeral_storage = parse_units(&q.0).unwrap_or(0),
                "pods" => {}
                _ => r.set_scalar(name, parse_units(&q.0).unwrap_or(0)),
            }
        }
        r
    }

    /// The amount of a scalar resource (0 when absent).
    pub fn scalar(&self, name: &str) -> i64 {
        self.scalar
            .binary_search_by(|(n, _)| n.as_str().cmp(name))
            .map_or(0, |i| self.scalar[i].1)
    }

    fn set_scalar(&mut self, name: &str, value: i64) {
        match self.scalar.binary_search_by(|(n, _)| n.as_str().cmp(name)) {
            Ok(i) => self.scalar[i].1 = value,
            Err(i) => self.scalar.insert(i, (name.to_owned(), value)),
        }
    }

    /// Adds `other` to `self`.
    pub fn add(&mut self, other: &Self) {
        self.milli_cpu += other.milli_cpu;
        self.memory += other.memory;
        self.ephemeral_storage += other.ephemeral_storage;
        for (name, v) in &other.scalar {
            let cur = self.scalar(name);
            self.set_scalar(name, cur + v);
        }
    }

    /// Subtracts `other` from `self`.
    pub fn sub(&mut self, other: &Self) {
        self.milli_cpu -= other.milli_cpu;
        self.memory -= other.memory;
        self.ephemeral_storage -= other.ephemeral_storage;
        for (name, v) in &other.scalar {
            let cur = self.scalar(name);
            self.set_scalar(name, cur - v);
        }
    }

    /// Raises each amount of `self` to at least `other`'s.
    pub fn max_with(&mut self, other: &Self) {
        self.milli_cpu = self.milli_cpu.max(other.milli_cpu);
        self.memory = self.memory.max(other.memory);
        self.ephemeral_storage = self.ephemeral_storage.max(other.ephemeral_storage);
        for (name, v) in &other.scalar {
            let cur = self.scalar(name);
            self.set_scalar(name, cur.max(*v));
        }
    }
}

/// What one pod asks for: exact requests (for fitting) and the non-zero
/// variant (for scoring, containers without requests count as 100m/200Mi).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PodRequests {
    /// Requests as written (fit filter).
    pub exact: Resources,
    /// CPU with the 100m default per container lacking a request.
    pub non_zero_milli_cpu: i64,
    /// Memory with the 200Mi default per container lacking a request.
    pub non_zero_memory: i64,
}

fn container_requests(c: &Container) -> Resources {
    c.resources
        .as_ref()
        .and_then(|r| r.requests.as_ref())
        .map(Resources::from_list)
        .unwrap_or_default()
}

fn non_zero(c: &Container) -> (i64, i64) {
    let requests = c.resources.as_ref().and_then(|r| r.requests.as_ref());
    let cpu = requests
        .and_then(|r| r.get("cpu"))
        .and_then(|q| parse_milli(&q.0))
        .unwrap_or(DEFAULT_MILLI_CPU_REQUEST);
    let mem = requests
        .and_then(|r| r.get("memory"))
        .and_then(|q| parse_units(&q.0))
        .unwrap_or(DEFAULT_MEMORY_REQUEST);
    (cpu, mem)
}

fn is_sidecar(c: &Container) -> bool {
    c.restart_policy.as_deref() == Some("Always")
}

impl PodRequests {
    /// Computes a pod's effective requests like kube-scheduler: the sum over
    /// containers and sidecars, raised to each init container's request plus
    /// the sidecars started before it, plus `overhead`.
    pub fn of(spec: &PodSpec) -> Self {
        let mut exact = Resources::default();
        let (mut nz_cpu, mut nz_mem) = (0, 0);
        for c in &spec.containers {
            exact.add(&container_requests(c));
            let (cpu, mem) = non_zero(c);
            nz_cpu += cpu;
            nz_mem += mem;
        }
        let mut sidecars = Resources::default();
        let (mut sc_cpu, mut sc_mem) = (0, 0);
        let mut init_max = Resources::default();
        let (mut init_cpu, mut init_mem) = (0, 0);
        for c in spec.init_containers.iter().flatten() {
            let req = container_requests(c);
            let (cpu, mem) = non_zero(c);
            if is_sidecar(c) {
                sidecars.add(&req);
                sc_cpu += cpu;
                sc_mem += mem;
                init_max.max_with(&sidecars);
                init_cpu = init_cpu.max(sc_cpu);
                init_mem = init_mem.max(sc_mem);
            } else {
                let mut with = sidecars.clone();
                with.add(&req);
                init_max.max_with(&with);
                init_cpu = init_cpu.max(sc_cpu + cpu);
                init_mem = init_mem.max(sc_mem + mem);
            }
        }
        exact.add(&sidecars);
        exact.max_with(&init_max);
        nz_cpu = (nz_cpu + sc_cpu).max(init_cpu);
        nz_mem = (nz_mem + sc_mem).max(init_mem);
        if let Some(overhead) = &spec.overhead {
            let o = Resources::from_list(overhead);
            exact.add(&o);
            nz_cpu += o.milli_cpu;
            nz_mem += o.memory;
        }
        Self {
            exact,
            non_zero_milli_cpu: nz_cpu,
            non_zero_memory: nz_mem,
        }
    }
}

/// Parses a quantity into thousandths of its unit, rounding up (`"100m"` →
/// 100, `"1.5"` → 1500). `None` when malformed.
pub fn parse_milli(s: &str) -> Option<i64> {
    parse_scaled(s, 1000)
}

/// Parses a quantity into whole units, rounding up (`"1Ki"` → 1024,
/// `"1.5k"` → 1500, `"100m"` → 1).
pub fn parse_units(s: &str) -> Option<i64> {
    parse_scaled(s, 1)
}

/// Parses `s` (Kubernetes quantity syntax) multiplied by `mult`, rounded up.
fn parse_scaled(s: &str, mult: i128) -> Option<i64> {
    let s = s.trim();
    let (neg, s) = match s.as_bytes().first()? {
        b'-' => (true, &s[1..]),
        b'+' => (false, &s[1..]),
        _ => (false, s),
    };
    let num_end = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    let (num, suffix) = s.split_at(num_end);
    if num.is_empty() || num == "." {
        return None;
    }
    let (int_part, frac_part) = num.split_once('.').unwrap_or((num, ""));
    if frac_part.contains('.') || frac_part.len() > 18 || int_part.len() > 30 {
        return None;
    }
    let digits = format!("{int_part}{frac_part}");
    let mut mantissa: i128 = digits.parse().ok()?;
    // value = mantissa * 10^dec_exp * 2^bin_exp
    let mut dec_exp: i32 = -i32::try_from(frac_part.len()).ok()?;
    let mut bin_exp: u32 = 0;
    match suffix {
        "" => {}
        "n" => dec_exp -= 9,
        "u" => dec_exp -= 6,
        "m" => dec_exp -= 3,
        "k" => dec_exp += 3,
        "M" => dec_exp += 6,
        "G" => dec_exp += 9,
        "T" => dec_exp += 12,
        "P" => dec_exp += 15,
        "E" => dec_exp += 18,
        "Ki" => bin_exp = 10,
        "Mi" => bin_exp = 20,
        "Gi" => bin_exp = 30,
        "Ti" => bin_exp = 40,
        "Pi" => bin_exp = 50,
        "Ei" => bin_exp = 60,
        e if e.starts_with(['e', 'E']) => dec_exp += e[1..].parse::<i32>().ok()?,
        _ => return None,
    }
    mantissa = mantissa.checked_mul(mult)?;
    mantissa = mantissa.checked_mul(1i128.checked_shl(bin_exp)?)?;
    let value = if dec_exp >= 0 {
        mantissa.checked_mul(10i128.checked_pow(dec_exp.unsigned_abs())?)?
    } else {
        let div = 10i128
            .checked_pow(dec_exp.unsigned_abs())
            .unwrap_or(i128::MAX);
        (mantissa + div - 1) / div
    };
    let value = i64::try_from(value).ok()?;
    Some(if neg { -value } else { value })
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::core::v1::ResourceRequirements;

    use super::*;

    #[test]
    fn quantities_parse_like_kubernetes() {
        assert_eq!(parse_milli("100m"), Some(100));
        assert_eq!(parse_milli("1"), Some(1000));
        assert_eq!(parse_milli("1.5"), Some(1500));
        assert_eq!(parse_milli("0.0001"), Some(1), "rounds up");
        assert_eq!(parse_units("128Mi"), Some(128 << 20));
        assert_eq!(parse_units("1G"), Some(1_000_000_000));
        assert_eq!(parse_units("1e3"), Some(1000));
        assert_eq!(parse_units("1.5Gi"), Some(3 << 29));
        assert_eq!(parse_units("100m"), Some(1));
        assert_eq!(parse_units("12x"), None);
        assert_eq!(parse_units(""), None);
    }

    fn container(cpu: &str, mem: &str) -> Container {
        let mut req = BTreeMap::new();
        if !cpu.is_empty() {
            req.insert("cpu".to_owned(), Quantity(cpu.to_owned()));
        }
        if !mem.is_empty() {
            req.insert("memory".to_owned(), Quantity(mem.to_owned()));
        }
        Container {
            resources: Some(ResourceRequirements {
                requests: Some(req),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn requests_sum_containers_and_take_init_max_plus_overhead() {
        let spec = PodSpec {
            containers: vec![container("100m", "100Mi"), container("200m", "")],
            init_containers: Some(vec![container("500m", "50Mi")]),
            overhead: Some(BTreeMap::from([(
                "cpu".to_owned(),
                Quantity("10m".to_owned()),
            )])),
            ..Default::default()
        };
        let r = PodRequests::of(&spec);
        assert_eq!(r.exact.milli_cpu, 510);
        assert_eq!(r.exact.memory, 100 << 20);
        // non-zero: second container has no memory request → 200Mi default.
        assert_eq!(r.non_zero_memory, 300 << 20);
        assert_eq!(r.non_zero_milli_cpu, 510);
    }

    #[test]
    fn sidecars_add_to_containers_and_to_later_init_containers() {
        let mut sidecar = container("100m", "");
        sidecar.restart_policy = Some("Always".to_owned());
        let spec = PodSpec {
            containers: vec![container("200m", "")],
            init_containers: Some(vec![sidecar, container("250m", "")]),
            ..Default::default()
        };
        // max(200+100, 100+250) = 350
        assert_eq!(PodRequests::of(&spec).exact.milli_cpu, 350);
    }
}
