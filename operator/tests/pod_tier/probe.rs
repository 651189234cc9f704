//! The kubelet's HTTP probes: `GET <podIP>:<port><path>`, success on a status in 200..400 within
//! `timeoutSeconds`, counted against `failureThreshold` / `successThreshold` every `periodSeconds`.

use std::net::Ipv4Addr;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Container, Probe};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// One HTTP probe, resolved against the container (named port → number).
#[derive(Clone, Debug)]
pub struct HttpProbe {
    /// Port on the pod IP.
    pub port: u16,
    /// Request path.
    pub path: String,
    /// Time between probes.
    pub period: Duration,
    /// Per-request timeout.
    pub timeout: Duration,
    /// Consecutive failures that fail the probe.
    pub failure_threshold: u32,
    /// Delay before the first probe.
    pub initial_delay: Duration,
}

impl HttpProbe {
    /// From a container probe, or an error for a probe kind the pod tier does not run.
    pub fn from_spec(p: &Probe, c: &Container) -> Result<Self, String> {
        let get = p.http_get.as_ref().ok_or("only httpGet probes are supported by the pod tier")?;
        let port = match &get.port {
            IntOrString::Int(n) => *n,
            IntOrString::String(name) => c
                .ports
                .iter()
                .flatten()
                .find(|cp| cp.name.as_deref() == Some(name.as_str()))
                .map(|cp| cp.container_port)
                .ok_or_else(|| format!("probe port {name} is not a container port"))?,
        };
        let secs = |v: Option<i32>, d: i32| Duration::from_secs(v.unwrap_or(d).max(0) as u64);
        Ok(Self {
            port: u16::try_from(port).map_err(|_| format!("probe port {port} out of range"))?,
            path: get.path.clone().unwrap_or_else(|| "/".into()),
            period: secs(p.period_seconds, 10).max(Duration::from_millis(200)),
            timeout: secs(p.timeout_seconds, 1).max(Duration::from_millis(200)),
            failure_threshold: p.failure_threshold.unwrap_or(3).max(1) as u32,
            initial_delay: secs(p.initial_delay_seconds, 0),
        })
    }

    /// One probe: true on an HTTP status in 200..400.
    pub async fn check(&self, ip: Ipv4Addr) -> bool {
        tokio::time::timeout(self.timeout, http_status(ip, self.port, &self.path))
            .await
            .ok()
            .flatten()
            .is_some_and(|s| (200..400).contains(&s))
    }
}

/// Status code of `GET path` over HTTP/1.0, or None when the connection or the answer fails.
async fn http_status(ip: Ipv4Addr, port: u16, path: &str) -> Option<u16> {
    let mut s = tokio::net::TcpStream::connect((ip, port)).await.ok()?;
    let req = format!("GET {path} HTTP/1.0\r\nHost: {ip}:{port}\r\nUser-Agent: kube-probe/pod-tier\r\n\r\n");
    s.write_all(req.as_bytes()).await.ok()?;
    let mut buf = [0u8; 64];
    let mut n = 0;
    while n < 12 {
        let r = s.read(&mut buf[n..]).await.ok()?;
        if r == 0 {
            break;
        }
        n += r;
    }
    let line = String::from_utf8_lossy(&buf[..n]);
    line.split_whitespace().nth(1)?.parse().ok()
}
