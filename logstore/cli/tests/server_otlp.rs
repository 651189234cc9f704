//! `woodpecker server` span export as an operator turns it on: the real binary, a real OTLP/gRPC trace
//! collector in the test (the generated `TraceService`), one LogStore RPC, then SIGTERM. With
//! `OTEL_EXPORTER_OTLP_ENDPOINT` set the RPC's span reaches the collector, flushed by the stop; unset,
//! the process runs no export thread and the collector gets nothing. No MinIO or etcd needed.

use std::collections::BTreeMap;
use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{TraceService, TraceServiceServer};
use opentelemetry_proto::tonic::collector::trace::v1::{ExportTraceServiceRequest, ExportTraceServiceResponse};
use opentelemetry_proto::tonic::common::v1::{KeyValue, any_value};
use woodpecker_proto::logstore::FenceSegmentRequest;
use woodpecker_proto::logstore::log_store_client::LogStoreClient;

/// The name of the SDK's batch export thread as Linux keeps it (15 bytes of
/// `OpenTelemetry.Traces.BatchProcessor`).
const EXPORT_THREAD: &str = "OpenTelemetry.T";

/// One exported span: name, attributes, its resource's attributes.
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
    /// Serves on an ephemeral loopback port until the test's runtime ends; returns its `host:port`.
    async fn start(&self) -> String {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind the collector");
        let addr = listener.local_addr().expect("collector addr").to_string();
        let incoming = tonic::transport::server::TcpIncoming::from(listener);
        tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(TraceServiceServer::new(self.clone()))
                .serve_with_incoming(incoming),
        );
        addr
    }

    fn received(&self) -> Vec<Received> {
        self.spans.lock().expect("collector lock").clone()
    }
}

fn free_port() -> u16 {
    loop {
        let tcp = TcpListener::bind("127.0.0.1:0").expect("bind an ephemeral port");
        let port = tcp.local_addr().expect("local addr").port();
        if std::net::UdpSocket::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

/// A server process on its own ports and data dir; `otlp` is `OTEL_EXPORTER_OTLP_ENDPOINT` or unset,
/// `trace_yaml` the config's `trace` section.
struct Server {
    child: Child,
    service_port: u16,
    log: std::path::PathBuf,
}

impl Server {
    fn spawn(dir: &Path, node: &str, otlp: Option<&str>, trace_yaml: &str) -> Self {
        let config = dir.join("woodpecker.yaml");
        let main = "woodpecker:\n  meta:\n    type: etcd\n  storage:\n    type: service\n  client:\n    quorum:\n      quorumBufferPools:\n        \
                    - name: default\n          seeds: [placeholder:1]\n";
        std::fs::write(&config, format!("{main}{trace_yaml}")).expect("write config");
        let log = dir.join("server.log");
        let out = std::fs::File::create(&log).expect("create log");
        let err = out.try_clone().expect("clone log handle");
        let service_port = free_port();
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_woodpecker"));
        cmd.arg("server")
            .arg("--config")
            .arg(&config)
            .arg("--data-dir")
            .arg(dir.join("data"))
            .args(["--node-name", node])
            .args(["--service-port", &service_port.to_string()])
            .args(["--gossip-port", &free_port().to_string()])
            .args(["--advertise-service-addr", &format!("127.0.0.1:{service_port}")])
            .env("METRICS_PORT", free_port().to_string())
            .env("RUST_LOG", "warn,woodpecker_server=info")
            .env_remove("WOODPECKER_CONFIG")
            .env_remove("WOODPECKER_DATA_DIR")
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err);
        for var in [
            "OTEL_EXPORTER_OTLP_ENDPOINT",
            "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
            "OTEL_EXPORTER_OTLP_PROTOCOL",
            "OTEL_SDK_DISABLED",
            "OTEL_SERVICE_NAME",
        ] {
            cmd.env_remove(var);
        }
        if let Some(url) = otlp {
            cmd.env("OTEL_EXPORTER_OTLP_ENDPOINT", url);
        }
        Self { child: cmd.spawn().expect("spawn woodpecker server"), service_port, log }
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Fences segment 0 of log 42, retrying the connection until the server listens (bounded).
    async fn fence_once(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut client = loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("server exited with {status} before serving:\n{}", self.log_text());
            }
            if let Ok(c) = LogStoreClient::connect(format!("http://127.0.0.1:{}", self.service_port)).await {
                break c;
            }
            assert!(Instant::now() < deadline, "server not serving within 60 s:\n{}", self.log_text());
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        let req = FenceSegmentRequest {
            bucket_name: "otlp-bucket".to_owned(),
            root_path: "otlp-root".to_owned(),
            log_id: 42,
            segment_id: 0,
        };
        let r = client.fence_segment(req).await.expect("FenceSegment call").into_inner();
        assert_eq!(r.status.map_or(0, |s| s.code), 0, "fence of a new segment succeeds:\n{}", self.log_text());
    }

    /// Names of the process's threads (`/proc/<pid>/task/*/comm`).
    fn threads(&self) -> Vec<String> {
        let tasks = std::fs::read_dir(format!("/proc/{}/task", self.child.id())).expect("read the task list");
        tasks
            .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("comm")).ok())
            .map(|c| c.trim().to_owned())
            .collect()
    }

    /// SIGTERM, then waits (bounded) for a clean exit.
    fn stop(mut self) -> String {
        let pid = libc::pid_t::try_from(self.child.id()).expect("pid fits");
        // SAFETY: signalling our own child process.
        assert_eq!(unsafe { libc::kill(pid, libc::SIGTERM) }, 0, "send SIGTERM");
        let deadline = Instant::now() + Duration::from_secs(40);
        loop {
            if let Some(status) = self.child.try_wait().expect("wait for the server") {
                assert!(status.success(), "server stopped with {status}:\n{}", self.log_text());
                return self.log_text();
            }
            assert!(Instant::now() < deadline, "server did not stop within 40 s:\n{}", self.log_text());
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn otlp_endpoint_variable_exports_rpc_spans_flushed_at_stop() {
    let collector = Collector::default();
    let addr = collector.start().await;
    let dir = tempfile::tempdir().expect("temp dir");
    // The variable wins over the file, which says noop.
    let mut server =
        Server::spawn(dir.path(), "node-otlp-on", Some(&format!("http://{addr}")), "trace:\n  exporter: noop\n");
    server.fence_once().await;
    let threads = server.threads();
    assert!(threads.iter().any(|t| t == EXPORT_THREAD), "no export thread among {threads:?}");
    // The batch schedule (5 s) has likely not run yet: the stop's flush is what delivers the span.
    let log = tokio::task::spawn_blocking(move || server.stop()).await.expect("stop task");
    let spans = collector.received();
    let fence = spans.iter().find(|s| s.name == "fence_segment").unwrap_or_else(|| {
        panic!(
            "no fence_segment span; received {:?}\nserver log:\n{log}",
            spans.iter().map(|s| &s.name).collect::<Vec<_>>()
        )
    });
    assert_eq!(fence.attrs.get("log").map(String::as_str), Some("42"), "{fence:?}");
    assert_eq!(fence.attrs.get("segment").map(String::as_str), Some("0"), "{fence:?}");
    assert_eq!(fence.resource.get("service.name").map(String::as_str), Some("woodpecker-server"), "{fence:?}");
    assert_eq!(fence.resource.get("service.instance.id").map(String::as_str), Some("node-otlp-on"), "{fence:?}");
    assert!(log.contains("exporting spans over OTLP/gRPC"), "start is logged:\n{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trace_section_with_otlp_exporter_exports_without_the_variable() {
    let collector = Collector::default();
    let addr = collector.start().await;
    let dir = tempfile::tempdir().expect("temp dir");
    let trace =
        format!("trace:\n  exporter: otlp\n  otlp:\n    endpoint: {addr}\n    method: grpc\n    secure: false\n");
    let mut server = Server::spawn(dir.path(), "node-otlp-config", None, &trace);
    server.fence_once().await;
    let log = tokio::task::spawn_blocking(move || server.stop()).await.expect("stop task");
    let spans = collector.received();
    let fence = spans.iter().find(|s| s.name == "fence_segment");
    let fence = fence.unwrap_or_else(|| panic!("no fence_segment span; received {spans:?}\nserver log:\n{log}"));
    assert_eq!(fence.resource.get("service.instance.id").map(String::as_str), Some("node-otlp-config"), "{fence:?}");
}

#[test]
fn trace_section_asking_for_an_unsupported_transport_is_refused_at_start() {
    let dir = tempfile::tempdir().expect("temp dir");
    let trace = "trace:\n  exporter: otlp\n  otlp:\n    method: http\n";
    let mut server = Server::spawn(dir.path(), "node-otlp-http", None, trace);
    let status = server.child.wait().expect("wait for the server");
    assert!(!status.success(), "started with an http OTLP exporter:\n{}", server.log_text());
    assert!(server.log_text().contains("trace.otlp.method is \"http\""), "{}", server.log_text());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_the_variable_nothing_is_exported_and_no_export_thread_runs() {
    let collector = Collector::default();
    let addr = collector.start().await;
    let dir = tempfile::tempdir().expect("temp dir");
    // The collector is the file's endpoint, so a server that exported despite `noop` would reach it.
    let trace = format!("trace:\n  exporter: noop\n  otlp:\n    endpoint: {addr}\n");
    let mut server = Server::spawn(dir.path(), "node-otlp-off", None, &trace);
    server.fence_once().await;
    let threads = server.threads();
    assert!(!threads.iter().any(|t| t.starts_with("OpenTelemetry")), "export thread running: {threads:?}");
    let log = tokio::task::spawn_blocking(move || server.stop()).await.expect("stop task");
    // The process has exited: whatever it would have exported has been sent by now.
    assert!(collector.received().is_empty(), "spans exported: {:?}", collector.received());
    assert!(!log.contains("exporting spans"), "export is off:\n{log}");
}
