//! A kube-proxy for the pod tier: every ClusterIP Service of the namespace gets its own loopback
//! address (its names resolve to it through the hosts block) with a TCP listener per port that
//! forwards each connection to a Ready pod matching the Service's selector (round robin), the
//! target port resolved by name on that pod's container. A pod that stops being Ready gets no new
//! connections; established ones break when its process stops, as they do through kube-proxy.

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use k8s_openapi::api::core::v1::Service;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::api::Api;
use kube::{Client, ResourceExt};
use tokio_util::sync::CancellationToken;

/// What the proxy knows of a pod the pod tier runs.
#[derive(Clone, Debug)]
pub struct Endpoint {
    /// Pod IP.
    pub ip: Ipv4Addr,
    /// Passing its readiness probe.
    pub ready: bool,
    /// Pod labels.
    pub labels: BTreeMap<String, String>,
    /// Container ports by name.
    pub ports: BTreeMap<String, u16>,
}

/// Endpoints by pod name, kept by the kubelet.
pub type Endpoints = Arc<Mutex<BTreeMap<String, Endpoint>>>;

/// Watches the namespace's Services every 500 ms and serves each new ClusterIP Service. `alloc`
/// gives a Service its address; `publish` makes its names resolve to it.
pub fn spawn(
    client: Client,
    ns: String,
    cluster_domain: String,
    endpoints: Endpoints,
    alloc: impl Fn(&str) -> Ipv4Addr + Send + 'static,
    publish: impl Fn(Ipv4Addr, Vec<String>) + Send + 'static,
    stop: CancellationToken,
) -> tokio::task::JoinHandle<()> {
    let api: Api<Service> = Api::namespaced(client, &ns);
    tokio::spawn(async move {
        let mut served: BTreeSet<String> = BTreeSet::new();
        while !stop.is_cancelled() {
            if let Ok(list) = api.list(&Default::default()).await {
                for svc in list.items {
                    let name = svc.name_any();
                    let Some(spec) = svc.spec.clone() else { continue };
                    let headless = spec.cluster_ip.as_deref() == Some("None");
                    let Some(selector) = spec.selector.clone().filter(|s| !s.is_empty()) else { continue };
                    if headless || served.contains(&name) {
                        continue;
                    }
                    let ip = alloc(&name);
                    let mut bound = true;
                    for p in spec.ports.clone().unwrap_or_default() {
                        if p.protocol.as_deref().unwrap_or("TCP") != "TCP" {
                            continue;
                        }
                        let target = p.target_port.clone().unwrap_or(IntOrString::Int(p.port));
                        match tokio::net::TcpListener::bind((ip, p.port as u16)).await {
                            Ok(l) => {
                                tokio::spawn(forward(l, selector.clone(), target, endpoints.clone(), stop.clone()));
                            }
                            Err(e) => {
                                eprintln!("pod tier: cannot serve Service {name} on {ip}:{}: {e}", p.port);
                                bound = false;
                            }
                        }
                    }
                    if bound {
                        let names = vec![
                            format!("{name}.{ns}.svc.{cluster_domain}"),
                            format!("{name}.{ns}.svc"),
                            format!("{name}.{ns}"),
                        ];
                        publish(ip, names);
                        served.insert(name);
                    }
                }
            }
            tokio::select! {
                _ = stop.cancelled() => {}
                _ = tokio::time::sleep(Duration::from_millis(500)) => {}
            }
        }
    })
}

async fn forward(
    listener: tokio::net::TcpListener,
    selector: BTreeMap<String, String>,
    target: IntOrString,
    endpoints: Endpoints,
    stop: CancellationToken,
) {
    let next = Arc::new(AtomicUsize::new(0));
    loop {
        let conn = tokio::select! {
            _ = stop.cancelled() => return,
            c = listener.accept() => c,
        };
        let Ok((mut inbound, _)) = conn else { continue };
        let ready: Vec<(Ipv4Addr, u16)> = endpoints
            .lock()
            .unwrap()
            .values()
            .filter(|e| e.ready && selector.iter().all(|(k, v)| e.labels.get(k) == Some(v)))
            .filter_map(|e| {
                let port = match &target {
                    IntOrString::Int(n) => u16::try_from(*n).ok(),
                    IntOrString::String(name) => e.ports.get(name).copied(),
                };
                port.map(|p| (e.ip, p))
            })
            .collect();
        if ready.is_empty() {
            // No endpoint: the connection is refused, as through kube-proxy's reject rule.
            continue;
        }
        let to = ready[next.fetch_add(1, Ordering::Relaxed) % ready.len()];
        let stop = stop.clone();
        tokio::spawn(async move {
            let Ok(mut outbound) = tokio::net::TcpStream::connect(to).await else { return };
            tokio::select! {
                _ = stop.cancelled() => {}
                _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => {}
            }
        });
    }
}
