//! Prometheus metrics of the server, under upstream's names (`woodpecker_server_*`) where upstream has one.

use std::sync::atomic::AtomicU64;
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// Labels of an RPC outcome.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OpLabels {
    /// RPC name.
    pub operation: String,
    /// `success` or the upstream error code.
    pub status: String,
}

/// Labels of an RPC latency.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OpName {
    /// RPC name.
    pub operation: String,
}

/// Every metric the server exports.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    operations: Family<OpLabels, Counter>,
    latency: Family<OpName, Histogram>,
    /// Segment processors open on this node.
    pub active_processors: Gauge,
    /// Used share of the data disk (0..1).
    pub disk_usage_ratio: Gauge<f64, AtomicU64>,
    /// Free bytes of the data disk.
    pub disk_free_bytes: Gauge,
    /// Appends refused for disk pressure, shutdown or a full buffer.
    pub write_rejected: Counter,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// A registry holding every metric, prefixed `woodpecker_server`.
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("woodpecker_server");
        let operations = Family::<OpLabels, Counter>::default();
        let latency =
            Family::<OpName, Histogram>::new_with_constructor(|| Histogram::new(exponential_buckets(0.000_1, 2.0, 18)));
        let active_processors = Gauge::default();
        let disk_usage_ratio = Gauge::<f64, AtomicU64>::default();
        let disk_free_bytes = Gauge::default();
        let write_rejected = Counter::default();
        registry.register("logstore_operations", "LogStore RPCs by operation and status", operations.clone());
        registry.register("logstore_operation_latency", "LogStore RPC latency in seconds", latency.clone());
        registry.register(
            "logstore_active_segment_processors",
            "Segment processors open on this node",
            active_processors.clone(),
        );
        registry.register("logstore_disk_usage_ratio", "Used share of the data disk", disk_usage_ratio.clone());
        registry.register("logstore_disk_free_bytes", "Free bytes of the data disk", disk_free_bytes.clone());
        registry.register("logstore_write_rejected", "Appends refused by admission", write_rejected.clone());
        Self { registry, operations, latency, active_processors, disk_usage_ratio, disk_free_bytes, write_rejected }
    }

    /// Counts one RPC and its latency; `code` 0 is success.
    pub fn observe(&self, operation: &str, code: i32, elapsed: Duration) {
        let status = if code == 0 { "success".to_owned() } else { code.to_string() };
        self.operations.get_or_create(&OpLabels { operation: operation.to_owned(), status }).inc();
        self.latency.get_or_create(&OpName { operation: operation.to_owned() }).observe(elapsed.as_secs_f64());
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn operations_render_under_upstream_names() {
        let m = Metrics::new();
        m.observe("AddEntries", 0, Duration::from_millis(2));
        m.observe("AddEntries", 8104, Duration::from_millis(1));
        let text = m.render();
        assert!(
            text.contains("woodpecker_server_logstore_operations_total{operation=\"AddEntries\",status=\"success\"} 1"),
            "{text}"
        );
        assert!(text.contains("status=\"8104\""), "{text}");
        assert!(text.contains("woodpecker_server_logstore_operation_latency_bucket"), "{text}");
    }
}
