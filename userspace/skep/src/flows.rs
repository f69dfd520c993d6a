//! `skep flows`: the flows a node's network policy judged, from the ring
//! buffer its TC programs write (every denied packet, and the first packet
//! of every allowed flow of an isolated pod), one line each:
//!
//! ```text
//! 15:04:05.123 ingress denied y/b 10.244.2.7:40000 -> x/a 10.244.1.5:80 tcp policy default-deny
//! ```
//!
//! The ring has one reader position per node: what one `skep flows` reads,
//! another does not see again.

use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::Context as _;
use skep_datapath::policy::{FlowNames, FlowReader, format_flow};
use skep_ebpf_common::{PolicyFlow, PolicyVerdict};

/// Arguments of `skep flows`.
#[derive(Debug, clap::Args)]
pub struct FlowsArgs {
    /// Directory the node pinned its maps in.
    #[arg(long, default_value = "/sys/fs/bpf/skep/local")]
    pin_dir: PathBuf,
    /// Keep printing flows as they are judged (until interrupted).
    #[arg(long, short)]
    follow: bool,
    /// Only flows with this verdict.
    #[arg(long, value_enum)]
    verdict: Option<VerdictArg>,
    /// Only flows from or to this pod (`namespace/name`).
    #[arg(long, value_parser = parse_pod)]
    pod: Option<String>,
}

/// The verdicts `--verdict` selects.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
enum VerdictArg {
    /// Dropped: no policy allowed it.
    Denied,
    /// The first packet of a flow a policy allowed.
    Allowed,
}

impl VerdictArg {
    fn matches(self, raw: u8) -> bool {
        let want = match self {
            Self::Denied => PolicyVerdict::Denied,
            Self::Allowed => PolicyVerdict::Allowed,
        };
        PolicyVerdict::from_u8(raw) == Some(want)
    }
}

fn parse_pod(s: &str) -> Result<String, String> {
    match s.split_once('/') {
        Some((ns, name)) if !ns.is_empty() && !name.is_empty() && !name.contains('/') => {
            Ok(s.to_owned())
        }
        _ => Err(format!("not a namespace/name: {s}")),
    }
}

/// How often `--follow` re-reads the pod and policy names.
const NAMES_REFRESH: Duration = Duration::from_secs(2);

/// Runs `skep flows`.
pub fn run(args: &FlowsArgs) -> anyhow::Result<()> {
    let pin_dir = &args.pin_dir;
    let mut reader = FlowReader::open(pin_dir).with_context(|| {
        format!(
            "failed to open the flows ring buffer pinned in {}",
            pin_dir.display()
        )
    })?;
    let load_names = || {
        FlowNames::load(pin_dir)
            .with_context(|| format!("failed to read the names pinned in {}", pin_dir.display()))
    };
    let mut names = load_names()?;
    let mut loaded = std::time::Instant::now();
    let clock = Clock::now();
    let mut out = std::io::stdout().lock();
    loop {
        let flows = if args.follow {
            reader
                .read(Duration::from_millis(500))
                .context("failed to wait for flows")?
        } else {
            reader.drain()
        };
        if args.follow && loaded.elapsed() > NAMES_REFRESH {
            names = load_names()?;
            loaded = std::time::Instant::now();
        }
        for flow in &flows {
            if args.verdict.is_some_and(|v| !v.matches(flow.verdict)) {
                continue;
            }
            if let Some(pod) = &args.pod
                && !involves(flow, pod, &names)
            {
                continue;
            }
            let line = format!(
                "{} {}",
                clock.format(flow.time_ns),
                format_flow(flow, &names)
            );
            if write_line(&mut out, &line).is_err() {
                // The reader went away (`| head`): that is the end.
                return Ok(());
            }
        }
        if !args.follow {
            return Ok(());
        }
    }
}

fn write_line(out: &mut impl std::io::Write, line: &str) -> std::io::Result<()> {
    writeln!(out, "{line}")?;
    out.flush()
}

/// Whether `pod` (`namespace/name`) is either end of `flow`.
fn involves(flow: &PolicyFlow, pod: &str, names: &FlowNames) -> bool {
    [flow.src_addr, flow.dst_addr].iter().any(|addr| {
        let [a, b, c, d] = addr.to_ne_bytes();
        names
            .pods
            .get(&Ipv4Addr::new(a, b, c, d))
            .is_some_and(|n| n == pod)
    })
}

/// Turns the programs' `bpf_ktime_get_ns` (`CLOCK_MONOTONIC`) into wall
/// time.
struct Clock {
    /// Wall-clock nanoseconds since the epoch minus monotonic ones, taken
    /// together once.
    offset_ns: i128,
}

impl Clock {
    fn now() -> Self {
        let mono = nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC).map_or(0, |t| {
            i128::from(t.tv_sec()) * 1_000_000_000 + i128::from(t.tv_nsec())
        });
        let wall = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| i128::try_from(d.as_nanos()).unwrap_or(0));
        Self {
            offset_ns: wall - mono,
        }
    }

    /// `HH:MM:SS.mmm` (UTC) of a monotonic timestamp.
    fn format(&self, ktime_ns: u64) -> String {
        format_utc_millis(i128::from(ktime_ns) + self.offset_ns)
    }
}

/// `HH:MM:SS.mmm` of nanoseconds since the epoch, UTC.
fn format_utc_millis(ns: i128) -> String {
    let millis = ns.div_euclid(1_000_000);
    let day_ms = millis.rem_euclid(86_400_000);
    format!(
        "{:02}:{:02}:{:02}.{:03}",
        day_ms / 3_600_000,
        day_ms / 60_000 % 60,
        day_ms / 1000 % 60,
        day_ms % 1000
    )
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use skep_ebpf_common::Direction;

    use super::*;

    #[test]
    fn pods_are_namespace_slash_name() {
        assert_eq!(parse_pod("x/a"), Ok("x/a".to_owned()));
        for bad in ["a", "/a", "x/", "x/a/b", ""] {
            assert!(parse_pod(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn filters_pick_by_verdict_and_by_either_end() {
        let a = Ipv4Addr::new(10, 244, 1, 5);
        let b = Ipv4Addr::new(10, 244, 2, 7);
        let names = FlowNames {
            policies: HashMap::new(),
            pods: HashMap::from([(a, "x/a".to_owned()), (b, "y/b".to_owned())]),
        };
        let flow = PolicyFlow {
            src_addr: u32::from_ne_bytes(b.octets()),
            dst_addr: u32::from_ne_bytes(a.octets()),
            direction: Direction::Ingress as u8,
            verdict: PolicyVerdict::Denied as u8,
            ..PolicyFlow::default()
        };
        assert!(involves(&flow, "x/a", &names) && involves(&flow, "y/b", &names));
        assert!(!involves(&flow, "x/c", &names));
        assert!(VerdictArg::Denied.matches(flow.verdict));
        assert!(!VerdictArg::Allowed.matches(flow.verdict));
        assert!(!VerdictArg::Allowed.matches(PolicyVerdict::Established as u8));
    }

    #[test]
    fn times_are_utc_clock_times_to_the_millisecond() {
        // 1970-01-02 01:02:03.456789
        let ns = ((86_400 + 3_723) * 1_000_000_000) + 456_789_000;
        assert_eq!(format_utc_millis(ns), "01:02:03.456");
        let clock = Clock { offset_ns: ns - 5 };
        assert_eq!(clock.format(5), "01:02:03.456");
    }
}
