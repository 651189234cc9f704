//! The operator's own `/metrics` (Prometheus text) and `/healthz` HTTP endpoints.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use tokio_util::sync::CancellationToken;

/// Outcome label of a reconcile.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelValue)]
pub enum Outcome {
    /// The pass finished.
    Ok,
    /// The pass failed and will be retried.
    Error,
}

/// Labels of `woodpecker_operator_reconciles_total`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReconcileLabels {
    /// Outcome of the pass.
    pub outcome: Outcome,
}

/// Labels of `woodpecker_operator_writes_total`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct WriteLabels {
    /// Object kind written.
    pub kind: String,
    /// `apply`, `skip` (unchanged), `delete`, `evict` or `status`.
    pub action: String,
}

/// All operator metrics.
pub struct Metrics {
    registry: Registry,
    /// Reconcile passes by outcome.
    pub reconciles: Family<ReconcileLabels, Counter>,
    /// Reconcile pass duration in seconds.
    pub reconcile_duration: Histogram,
    /// Object writes (and skipped writes) by kind and action.
    pub writes: Family<WriteLabels, Counter>,
    /// 1 while this replica holds the leader lease.
    pub leader: Gauge,
    /// Pod restarts (evictions) issued by rolling restarts.
    pub restarts: Counter,
    healthy: AtomicBool,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// A fresh registry with every metric registered.
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("woodpecker_operator");
        let reconciles = Family::<ReconcileLabels, Counter>::default();
        let reconcile_duration = Histogram::new(exponential_buckets(0.005, 2.0, 14));
        let writes = Family::<WriteLabels, Counter>::default();
        let leader = Gauge::default();
        let restarts = Counter::default();
        registry.register("reconciles", "Reconcile passes by outcome", reconciles.clone());
        registry.register("reconcile_duration_seconds", "Duration of one reconcile pass", reconcile_duration.clone());
        registry.register("writes", "Object writes by kind and action", writes.clone());
        registry.register("leader", "1 while this replica holds the leader lease", leader.clone());
        registry.register("pod_restarts", "Pods evicted by rolling restarts", restarts.clone());
        Self { registry, reconciles, reconcile_duration, writes, leader, restarts, healthy: AtomicBool::new(true) }
    }

    /// Count one write (or skipped write) of `kind`.
    pub fn write(&self, kind: &str, action: &str) {
        self.writes.get_or_create(&WriteLabels { kind: kind.to_string(), action: action.to_string() }).inc();
    }

    /// Mark the process unhealthy (for example after losing the lease).
    pub fn set_healthy(&self, healthy: bool) {
        self.healthy.store(healthy, Ordering::Relaxed);
    }

    /// Prometheus text exposition of every metric.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        if prometheus_client::encoding::text::encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        out
    }
}

async fn metrics_handler(State(m): State<Arc<Metrics>>) -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "application/openmetrics-text; version=1.0.0; charset=utf-8")], m.encode())
}

async fn healthz_handler(State(m): State<Arc<Metrics>>) -> impl IntoResponse {
    if m.healthy.load(Ordering::Relaxed) {
        (StatusCode::OK, "ok")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "unhealthy")
    }
}

/// Serve `/metrics`, `/healthz` and `/readyz` on `addr` until `shutdown` fires.
pub async fn serve(addr: SocketAddr, metrics: Arc<Metrics>, shutdown: CancellationToken) -> std::io::Result<()> {
    let app = Router::new()
        .route("/metrics", get(metrics_handler))
        .route("/healthz", get(healthz_handler))
        .route("/readyz", get(healthz_handler))
        .with_state(metrics);
    let listener = tokio::net::TcpListener::bind(addr).await?;
    tracing::info!(%addr, "serving /metrics and /healthz");
    axum::serve(listener, app).with_graceful_shutdown(async move { shutdown.cancelled().await }).await
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn get(addr: SocketAddr, path: &str) -> String {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        s.write_all(format!("GET {path} HTTP/1.0\r\nHost: x\r\n\r\n").as_bytes()).await.unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).await.unwrap();
        out
    }

    #[tokio::test]
    async fn serves_metrics_and_health_until_shutdown() {
        let addr: SocketAddr = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap()
        };
        let m = Arc::new(Metrics::new());
        m.write("StatefulSet", "apply");
        m.leader.set(1);
        let stop = CancellationToken::new();
        let task = tokio::spawn(serve(addr, m.clone(), stop.clone()));
        let mut body = String::new();
        for _ in 0..50 {
            if tokio::net::TcpStream::connect(addr).await.is_ok() {
                body = get(addr, "/metrics").await;
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        assert!(body.contains(r#"woodpecker_operator_writes_total{kind="StatefulSet",action="apply"} 1"#), "{body}");
        assert!(body.contains("woodpecker_operator_leader 1"), "{body}");
        assert!(get(addr, "/healthz").await.starts_with("HTTP/1.0 200"));
        m.set_healthy(false);
        assert!(get(addr, "/healthz").await.starts_with("HTTP/1.0 503"));
        stop.cancel();
        task.await.unwrap().unwrap();
    }
}
