//! Container probes (liveness, readiness, startup): exec in the container,
//! HTTP GET or TCP connect to the pod IP from the node's namespace, with
//! Kubernetes' timing and thresholds.

use std::fmt::Write as _;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use k8s_openapi::api::core::v1::{Container, Probe};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use skep_runtime::ContainerRuntime;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::time::Instant;

/// One probe's outcome.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProbeResult {
    /// The probe passed.
    Success,
    /// The probe failed, with why.
    Failure(String),
}

/// A probe's schedule and consecutive results.
#[derive(Debug)]
pub struct ProbeState {
    probe: Probe,
    next: Instant,
    successes: i32,
    failures: i32,
    /// Whether the probe currently counts as passing (after thresholds).
    pub passing: bool,
}

impl ProbeState {
    /// A probe that first runs `initialDelaySeconds` after `started`.
    pub fn new(probe: &Probe, started: Instant, initially_passing: bool) -> Self {
        let delay = u64::try_from(probe.initial_delay_seconds.unwrap_or(0)).unwrap_or(0);
        Self {
            probe: probe.clone(),
            next: started + Duration::from_secs(delay),
            successes: 0,
            failures: 0,
            passing: initially_passing,
        }
    }

    /// When the probe is next due.
    pub fn next_due(&self) -> Instant {
        self.next
    }

    /// Runs the probe if it is due; returns the result when it ran and the
    /// passing state changed.
    pub async fn tick(
        &mut self,
        runtime: &impl ContainerRuntime,
        container_id: &str,
        container: &Container,
        pod_ip: Option<IpAddr>,
    ) -> Option<ProbeResult> {
        let now = Instant::now();
        if now < self.next {
            return None;
        }
        let period = u64::try_from(self.probe.period_seconds.unwrap_or(10).max(1)).unwrap_or(10);
        self.next = now + Duration::from_secs(period);
        let result = run(&self.probe, runtime, container_id, container, pod_ip).await;
        let before = self.passing;
        match &result {
            ProbeResult::Success => {
                self.failures = 0;
                self.successes += 1;
                if self.successes >= self.probe.success_threshold.unwrap_or(1).max(1) {
                    self.passing = true;
                }
            }
            ProbeResult::Failure(_) => {
                self.successes = 0;
                self.failures += 1;
                if self.failures >= self.probe.failure_threshold.unwrap_or(3).max(1) {
                    self.passing = false;
                }
            }
        }
        (before != self.passing || matches!(result, ProbeResult::Failure(_))).then_some(result)
    }
}

fn port_of(port: &IntOrString, container: &Container) -> Option<u16> {
    match port {
        IntOrString::Int(p) => u16::try_from(*p).ok(),
        IntOrString::String(name) => container
            .ports
            .iter()
            .flatten()
            .find(|p| p.name.as_deref() == Some(name))
            .and_then(|p| u16::try_from(p.container_port).ok()),
    }
}

/// Runs `probe` once against the container.
pub async fn run(
    probe: &Probe,
    runtime: &impl ContainerRuntime,
    container_id: &str,
    container: &Container,
    pod_ip: Option<IpAddr>,
) -> ProbeResult {
    let timeout =
        Duration::from_secs(u64::try_from(probe.timeout_seconds.unwrap_or(1).max(1)).unwrap_or(1));
    if let Some(exec) = &probe.exec {
        let argv = exec.command.clone().unwrap_or_default();
        return match runtime.exec(container_id, &argv, timeout).await {
            Ok(out) if out.exit_code == 0 => ProbeResult::Success,
            Ok(out) => ProbeResult::Failure(format!(
                "command {argv:?} exited with {}: {}",
                out.exit_code,
                String::from_utf8_lossy(&out.stdout).trim()
            )),
            Err(err) => ProbeResult::Failure(err.to_string()),
        };
    }
    let (port, http) = if let Some(h) = &probe.http_get {
        (port_of(&h.port, container), Some(h))
    } else if let Some(t) = &probe.tcp_socket {
        (port_of(&t.port, container), None)
    } else {
        return ProbeResult::Failure("probe has no handler".into());
    };
    let Some(port) = port else {
        return ProbeResult::Failure("probe port not found".into());
    };
    let host = http
        .and_then(|h| h.host.as_deref())
        .and_then(|h| h.parse().ok())
        .or(pod_ip);
    let Some(host) = host else {
        return ProbeResult::Failure("pod has no IP".into());
    };
    let addr = SocketAddr::new(host, port);
    let attempt = async {
        let mut stream = tokio::net::TcpStream::connect(addr).await?;
        let Some(h) = http else {
            return Ok::<_, std::io::Error>(ProbeResult::Success);
        };
        let path = h.path.as_deref().unwrap_or("/");
        let mut req =
            format!("GET {path} HTTP/1.0\r\nHost: {addr}\r\nUser-Agent: kube-probe/1.32\r\n");
        for header in h.http_headers.iter().flatten() {
            let _ = write!(req, "{}: {}\r\n", header.name, header.value);
        }
        req.push_str("\r\n");
        stream.write_all(req.as_bytes()).await?;
        let mut buf = vec![0u8; 1024];
        let mut len = 0;
        while len < buf.len() {
            let n = stream.read(&mut buf[len..]).await?;
            if n == 0 || buf[..len + n].contains(&b'\n') {
                len += n;
                break;
            }
            len += n;
        }
        let line = String::from_utf8_lossy(&buf[..len]);
        let code: u16 = line
            .split_whitespace()
            .nth(1)
            .and_then(|c| c.parse().ok())
            .unwrap_or(0);
        Ok(if (200..400).contains(&code) {
            ProbeResult::Success
        } else {
            ProbeResult::Failure(format!("HTTP probe failed with statuscode: {code}"))
        })
    };
    match tokio::time::timeout(timeout, attempt).await {
        Ok(Ok(r)) => r,
        Ok(Err(err)) => ProbeResult::Failure(format!("dial {addr}: {err}")),
        Err(_) => ProbeResult::Failure(format!("probe to {addr} timed out")),
    }
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::core::v1::{HTTPGetAction, TCPSocketAction};

    use skep_runtime::runtime::Runtime;

    use super::*;

    fn runtime() -> anyhow::Result<(tempfile::TempDir, Runtime)> {
        let dir = tempfile::tempdir()?;
        let rt = Runtime::new(skep_runtime::runtime::RuntimeConfig {
            state_dir: dir.path().to_owned(),
            runc: "/bin/false".into(),
            shim: "/bin/false".into(),
            cgroup_root: dir.path().to_owned(),
            cgroup_parent: "x".into(),
        })?;
        Ok((dir, rt))
    }

    #[tokio::test]
    async fn http_and_tcp_probes_against_a_real_listener() -> anyhow::Result<()> {
        let (_dir, rt) = runtime()?;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let port = i32::from(listener.local_addr()?.port());
        tokio::spawn(async move {
            while let Ok((mut s, _)) = listener.accept().await {
                let mut buf = [0u8; 512];
                let n = s.read(&mut buf).await.unwrap_or(0);
                let ok = String::from_utf8_lossy(&buf[..n]).starts_with("GET /ok ");
                let status = if ok { "200 OK" } else { "503 Unavailable" };
                let _ = s
                    .write_all(format!("HTTP/1.0 {status}\r\n\r\n").as_bytes())
                    .await;
            }
        });
        let ip = Some(IpAddr::from([127, 0, 0, 1]));
        let http = |path: &str| Probe {
            http_get: Some(HTTPGetAction {
                path: Some(path.into()),
                port: IntOrString::Int(port),
                ..HTTPGetAction::default()
            }),
            ..Probe::default()
        };
        let c = Container::default();
        assert_eq!(
            run(&http("/ok"), &rt, "x", &c, ip).await,
            ProbeResult::Success
        );
        assert!(matches!(
            run(&http("/bad"), &rt, "x", &c, ip).await,
            ProbeResult::Failure(m) if m.contains("503")
        ));
        let tcp = |port| Probe {
            tcp_socket: Some(TCPSocketAction {
                port: IntOrString::Int(port),
                ..TCPSocketAction::default()
            }),
            ..Probe::default()
        };
        assert_eq!(
            run(&tcp(port), &rt, "x", &c, ip).await,
            ProbeResult::Success
        );
        assert!(matches!(
            run(&tcp(1), &rt, "x", &c, ip).await,
            ProbeResult::Failure(_)
        ));
        Ok(())
    }

    #[tokio::test]
    async fn thresholds_decide_passing() -> anyhow::Result<()> {
        let (_dir, rt) = runtime()?;
        let probe = Probe {
            tcp_socket: Some(TCPSocketAction {
                port: IntOrString::Int(1),
                ..TCPSocketAction::default()
            }),
            period_seconds: Some(1),
            failure_threshold: Some(2),
            ..Probe::default()
        };
        let mut state = ProbeState::new(&probe, Instant::now(), true);
        let ip = Some(IpAddr::from([127, 0, 0, 1]));
        let c = Container::default();
        assert!(state.tick(&rt, "x", &c, ip).await.is_some());
        assert!(state.passing, "one failure is below the threshold");
        state.next = Instant::now();
        assert!(state.tick(&rt, "x", &c, ip).await.is_some());
        assert!(!state.passing);
        Ok(())
    }
}
