//! OTLP span export end to end, in one process: a real OTLP/gRPC trace collector (the generated
//! `TraceService`), the server's telemetry pipeline pointed at it the way `OTEL_EXPORTER_OTLP_ENDPOINT`
//! does, and the server's own span-producing paths (a segment processor's block flushes, its
//! compaction's uploads) writing to a temp dir and an in-memory object store.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{TraceService, TraceServiceServer};
use opentelemetry_proto::tonic::collector::trace::v1::{ExportTraceServiceRequest, ExportTraceServiceResponse};
use opentelemetry_proto::tonic::common::v1::{KeyValue, any_value};
use tokio_util::sync::CancellationToken;
use tracing_subscriber::prelude::*;
use woodpecker_core::config::TraceConfig;
use woodpecker_server::processor::AppendLimits;
use woodpecker_server::registry::Processors;
use woodpecker_server::telemetry::{self, Telemetry};
use woodpecker_storage::object::MemoryObjectStorage;
use woodpecker_storage::segment::staged::compact::CompactOptions;
use woodpecker_storage::segment::staged::{StagedScope, StagedStorage};

/// One exported span, flattened: its name, attributes and its resource's attributes.
#[derive(Debug, Clone)]
struct Received {
    name: String,
    attrs: BTreeMap<String, String>,
    resource: BTreeMap<String, String>,
}

/// A trace collector that keeps every span it is sent.
#[derive(Default, Clone)]
struct Collector {
    spans: Arc<Mutex<Vec<Received>>>,
}

fn flatten(kvs: &[KeyValue]) -> BTreeMap<String, String> {
    kvs.iter()
        .map(|kv| {
            let v = match kv.value.as_ref().and_then(|v| v.value.as_ref()) {
                Some(any_value::Value::StringValue(s)) => s.clone(),
                Some(any_value::Value::IntValue(i)) => i.to_string(),
                Some(any_value::Value::BoolValue(b)) => b.to_string(),
                Some(any_value::Value::DoubleValue(d)) => d.to_string(),
                other => format!("{other:?}"),
            };
            (kv.key.clone(), v)
        })
        .collect()
}

#[tonic::async_trait]
impl TraceService for Collector {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        let mut spans = self.spans.lock().expect("collector lock");
        for rs in request.into_inner().resource_spans {
            let resource = flatten(rs.resource.as_ref().map_or(&[][..], |r| &r.attributes));
            for span in rs.scope_spans.into_iter().flat_map(|s| s.spans) {
                spans.push(Received { name: span.name, attrs: flatten(&span.attributes), resource: resource.clone() });
            }
        }
        Ok(tonic::Response::new(ExportTraceServiceResponse { partial_success: None }))
    }
}

impl Collector {
    /// Serves on an ephemeral loopback port; returns the `http://` URL.
    async fn start(&self, stop: CancellationToken) -> String {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind the collector");
        let url = format!("http://{}", listener.local_addr().expect("collector addr"));
        let incoming = tonic::transport::server::TcpIncoming::from(listener);
        let service = TraceServiceServer::new(self.clone());
        tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(service)
                .serve_with_incoming_shutdown(incoming, async move { stop.cancelled().await }),
        );
        url
    }

    fn named(&self, name: &str) -> Vec<Received> {
        self.spans.lock().expect("collector lock").iter().filter(|s| s.name == name).cloned().collect()
    }

    /// Waits (bounded) until at least one span called `name` arrived.
    async fn wait_for(&self, name: &str, limit: Duration) -> Vec<Received> {
        let deadline = Instant::now() + limit;
        loop {
            let found = self.named(name);
            if !found.is_empty() {
                return found;
            }
            let seen: Vec<String> = self.spans.lock().expect("collector lock").iter().map(|s| s.name.clone()).collect();
            assert!(Instant::now() < deadline, "no {name} span within {limit:?}; received {seen:?}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flush_and_compaction_spans_reach_the_collector_with_the_node_resource() {
    let stop = CancellationToken::new();
    let collector = Collector::default();
    let url = collector.start(stop.clone()).await;

    // The decision the server makes at start, with only the standard variable set.
    let env = |name: &str| (name == "OTEL_EXPORTER_OTLP_ENDPOINT").then(|| url.clone());
    let settings = telemetry::otlp_settings(&TraceConfig::default(), env, "node-otlp-7", "9.9.9")
        .expect("settings")
        .expect("OTEL_EXPORTER_OTLP_ENDPOINT turns export on");
    assert_eq!(settings.endpoint, url);
    let pipeline = Telemetry::start(&settings).expect("start the pipeline");
    // What `woodpecker server` installs, minus the stderr log layer.
    tracing::subscriber::set_global_default(tracing_subscriber::registry().with(Some(pipeline.layer())))
        .expect("the only subscriber of this test binary");

    let dir = tempfile::tempdir().expect("temp dir");
    let cancel = CancellationToken::new();
    let limits = AppendLimits { max_block_bytes: 64, ..AppendLimits::default() };
    let processors = Processors::new(Arc::new(StagedStorage::new(dir.path().to_path_buf())), limits, cancel.clone());
    let scope = StagedScope::new("bucket-a", "root-a").expect("scope");
    let p = processors.get(&scope, 7, 3).await.expect("processor");
    let entries: Vec<(i64, Bytes)> = (0..6).map(|i| (i, Bytes::from(vec![b'x'; 40]))).collect();
    p.admit(&entries).await.expect("admit");
    for (id, _) in &entries {
        p.outcome(*id).await.expect("entry durable");
    }

    // Exported by the batch thread while the server runs (its schedule, not a shutdown).
    let flushes = collector.wait_for("flush_block", Duration::from_secs(20)).await;
    let f = &flushes[0];
    assert_eq!(f.attrs.get("segment").map(String::as_str), Some("log 7 segment 3"), "{f:?}");
    assert_eq!(f.attrs.get("first").map(String::as_str), Some("0"), "{f:?}");
    assert!(f.attrs.get("bytes").and_then(|b| b.parse::<u64>().ok()).is_some_and(|b| b >= 40), "{f:?}");
    assert!(f.attrs.contains_key("last") && f.attrs.contains_key("block"), "{f:?}");
    assert_eq!(f.resource.get("service.name").map(String::as_str), Some(telemetry::SERVICE_NAME), "{f:?}");
    assert_eq!(f.resource.get("service.instance.id").map(String::as_str), Some("node-otlp-7"), "{f:?}");
    assert_eq!(f.resource.get("service.version").map(String::as_str), Some("9.9.9"), "{f:?}");
    // 64-byte blocks of 40-byte entries: more than one block, each with its own span, covering 0..=5.
    let mut covered: Vec<(i64, i64)> = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    while covered.last().map(|c| c.1) != Some(5) {
        covered = collector
            .named("flush_block")
            .iter()
            .map(|s| (s.attrs["first"].parse().expect("first"), s.attrs["last"].parse().expect("last")))
            .collect();
        covered.sort_unstable();
        assert!(Instant::now() < deadline, "flush spans cover only {covered:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(covered.len() > 1 && covered.windows(2).all(|w| w[1].0 == w[0].1 + 1), "{covered:?}");

    p.complete(5).await.expect("complete");
    let store = MemoryObjectStorage::new();
    let compacted = p.compact(&store, "root-a", CompactOptions { max_bytes: 100, max_parallel_uploads: 2 }).await;
    let compacted = compacted.expect("compact");
    assert!(compacted.merged_blocks > 1, "{compacted:?}");

    // Spans still queued are flushed by the shutdown the stop sequence runs: no waiting after it.
    pipeline.shutdown(telemetry::SHUTDOWN_BOUND).await;
    let uploads = collector.named("upload_merged_block");
    assert_eq!(uploads.len(), compacted.merged_blocks, "{uploads:?}");
    for u in &uploads {
        assert_eq!(u.attrs.get("segment").map(String::as_str), Some("log 7 segment 3"), "{u:?}");
        assert!(["block", "first", "last", "bytes"].iter().all(|k| u.attrs.contains_key(*k)), "{u:?}");
    }
    let footer = collector.named("upload_footer");
    assert_eq!(footer.len(), 1, "{footer:?}");
    assert_eq!(footer[0].attrs.get("lac").map(String::as_str), Some("5"), "{footer:?}");
    assert_eq!(footer[0].attrs.get("merged_blocks"), Some(&compacted.merged_blocks.to_string()), "{footer:?}");
    cancel.cancel();
    stop.cancel();
}
