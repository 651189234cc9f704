//! Span export: the server's `tracing` spans (gRPC handlers, block flushes, compaction uploads) sent to
//! an OpenTelemetry collector over OTLP/gRPC, when the operator asks for it.
//!
//! ```text
//!   tracing span ──▶ Registry ─┬─▶ fmt layer (stderr, RUST_LOG)
//!                              └─▶ OtlpLayer (woodpecker* targets, debug and up)
//!                                     └─▶ SdkTracerProvider ──▶ batch thread ──OTLP/gRPC──▶ collector
//! ```
//!
//! On when `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` or `OTEL_EXPORTER_OTLP_ENDPOINT` is set (the standard
//! variables win over the file), or when `trace.exporter` is `otlp` (endpoint `trace.otlp.endpoint`,
//! TLS by `trace.otlp.secure`). Off otherwise, and when `OTEL_SDK_DISABLED=true`: then no exporter is
//! built, no batch thread runs and no layer is installed, so spans cost what they cost without OTLP.
//! What cannot be honoured is refused at start, naming the key: `trace.exporter` stdout or jaeger,
//! `trace.otlp.method` http, `OTEL_EXPORTER_OTLP_PROTOCOL` other than grpc (only the gRPC transport is
//! built in, on the workspace's tonic).
//!
//! The resource says `service.name` (`OTEL_SERVICE_NAME`, else `woodpecker-server`),
//! `service.instance.id` (the node name) and `service.version`; `trace.sampleFraction` picks the root
//! spans kept (children follow their parent). The other `OTEL_*` variables the SDK reads (batch delay,
//! headers, timeout, `OTEL_RESOURCE_ATTRIBUTES`) keep their standard meaning.
//!
//! Order: [`Telemetry::start`] runs inside the Tokio runtime (the gRPC channel lives on it), before the
//! subscriber is installed; [`Telemetry::shutdown`] runs at the end of the stop sequence, while the
//! runtime still drives the channel, and flushes what is queued within its bound.

use std::time::Duration;

use opentelemetry::KeyValue;
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::tonic_types::transport::ClientTlsConfig;
use opentelemetry_otlp::{WithExportConfig, WithTonicConfig};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::{Sampler, SdkTracer, SdkTracerProvider};
use tracing::Subscriber;
use tracing_subscriber::filter::{Filtered, Targets};
use tracing_subscriber::registry::LookupSpan;
use woodpecker_core::config::TraceConfig;

/// `service.name` when `OTEL_SERVICE_NAME` is unset.
pub const SERVICE_NAME: &str = "woodpecker-server";

/// Longest the stop sequence waits for queued spans to reach the collector.
pub const SHUTDOWN_BOUND: Duration = Duration::from_secs(2);

/// Name of the tracer (the instrumentation scope) spans are recorded under.
const TRACER_NAME: &str = "woodpecker-server";

/// Targets whose spans are exported: our crates (`woodpecker_server`, `woodpecker_storage`, …), debug and
/// up; never the transport crates, whose spans would also trace the exporter's own requests.
const EXPORTED_TARGETS_PREFIX: &str = "woodpecker";

/// The layer that turns spans into OTLP spans, filtered to `EXPORTED_TARGETS_PREFIX`.
pub type OtlpLayer<S> = Filtered<tracing_opentelemetry::OpenTelemetryLayer<S, SdkTracer>, Targets, S>;

/// Why span export cannot start as configured.
#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    /// A key or variable asks for something this server does not do.
    #[error("{key} is {value:?}: {why}")]
    Unsupported {
        /// The config key or environment variable.
        key: &'static str,
        /// Its value.
        value: String,
        /// What is supported instead.
        why: &'static str,
    },
    /// The OTLP exporter refused its configuration (a malformed endpoint, say).
    #[error("cannot build the OTLP exporter for {endpoint}: {source}")]
    Exporter {
        /// The endpoint it was built for.
        endpoint: String,
        /// The exporter's reason.
        source: opentelemetry_otlp::ExporterBuildError,
    },
}

/// Where and as what the server exports spans.
#[derive(Debug, Clone, PartialEq)]
pub struct OtlpSettings {
    /// Collector URL (`http://host:4317`; `https://` for TLS). A schemeless value from the environment
    /// is kept: the exporter applies `OTEL_EXPORTER_OTLP_INSECURE` to it, as the OTLP spec says.
    pub endpoint: String,
    /// `service.name`.
    pub service_name: String,
    /// `service.instance.id`: the node name.
    pub node_name: String,
    /// `service.version`.
    pub version: String,
    /// Fraction of root spans kept, in [0, 1].
    pub sample_fraction: f64,
}

/// Decides whether spans are exported, from the `trace` section and the environment (`env` looks one
/// variable up; the process environment in the server, a table in tests). `Ok(None)` means off.
pub fn otlp_settings(
    trace: &TraceConfig,
    env: impl Fn(&str) -> Option<String>,
    node_name: &str,
    version: &str,
) -> Result<Option<OtlpSettings>, TelemetryError> {
    let var = |name: &str| env(name).map(|v| v.trim().to_owned()).filter(|v| !v.is_empty());
    if var("OTEL_SDK_DISABLED").is_some_and(|v| v.eq_ignore_ascii_case("true")) {
        return Ok(None);
    }
    for key in ["OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "OTEL_EXPORTER_OTLP_PROTOCOL"] {
        if let Some(p) = var(key).filter(|p| p != "grpc") {
            return Err(TelemetryError::Unsupported { key, value: p, why: "this server exports OTLP over grpc only" });
        }
    }
    let from_env = var("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT").or_else(|| var("OTEL_EXPORTER_OTLP_ENDPOINT"));
    let endpoint = match from_env {
        Some(e) => e,
        None => match trace.exporter.trim().to_ascii_lowercase().as_str() {
            "" | "noop" => return Ok(None),
            "otlp" => {
                let method = trace.otlp.method.trim();
                if !(method.is_empty() || method.eq_ignore_ascii_case("grpc")) {
                    return Err(TelemetryError::Unsupported {
                        key: "trace.otlp.method",
                        value: trace.otlp.method.clone(),
                        why: "this server exports OTLP over grpc only (the collector's port 4317)",
                    });
                }
                with_scheme(trace.otlp.endpoint.trim(), trace.otlp.secure)
            }
            _ => {
                return Err(TelemetryError::Unsupported {
                    key: "trace.exporter",
                    value: trace.exporter.clone(),
                    why: "this server exports to otlp only (or noop)",
                });
            }
        },
    };
    Ok(Some(OtlpSettings {
        endpoint,
        service_name: var("OTEL_SERVICE_NAME").unwrap_or_else(|| SERVICE_NAME.to_owned()),
        node_name: node_name.to_owned(),
        version: version.to_owned(),
        sample_fraction: trace.sample_fraction,
    }))
}

/// `trace.otlp.endpoint` as a URL: upstream writes `host:port` and says TLS with `secure`.
fn with_scheme(endpoint: &str, secure: bool) -> String {
    if endpoint.contains("://") {
        endpoint.to_owned()
    } else if secure {
        format!("https://{endpoint}")
    } else {
        format!("http://{endpoint}")
    }
}

/// The running export pipeline: owns the tracer provider and its batch thread until [`Self::shutdown`].
pub struct Telemetry {
    provider: SdkTracerProvider,
    endpoint: String,
}

impl Telemetry {
    /// Builds the exporter and the provider. Call inside the Tokio runtime; connects lazily, so an
    /// unreachable collector delays nothing here (its spans are dropped after the export timeout).
    pub fn start(settings: &OtlpSettings) -> Result<Self, TelemetryError> {
        let builder = opentelemetry_otlp::SpanExporter::builder().with_tonic().with_endpoint(&settings.endpoint);
        let builder = if settings.endpoint.starts_with("https://") {
            builder.with_tls_config(ClientTlsConfig::new().with_enabled_roots())
        } else {
            builder
        };
        let exporter = builder
            .build()
            .map_err(|source| TelemetryError::Exporter { endpoint: settings.endpoint.clone(), source })?;
        let resource = Resource::builder()
            .with_service_name(settings.service_name.clone())
            .with_attributes([
                KeyValue::new("service.instance.id", settings.node_name.clone()),
                KeyValue::new("service.version", settings.version.clone()),
            ])
            .build();
        let provider = SdkTracerProvider::builder()
            .with_batch_exporter(exporter)
            .with_resource(resource)
            .with_sampler(sampler(settings.sample_fraction))
            .build();
        Ok(Self { provider, endpoint: settings.endpoint.clone() })
    }

    /// The layer to install next to the log layer; spans of other crates are not exported.
    pub fn layer<S>(&self) -> OtlpLayer<S>
    where
        S: Subscriber + for<'span> LookupSpan<'span>,
    {
        use tracing_subscriber::Layer as _;
        let tracer = self.provider.tracer(TRACER_NAME);
        tracing_opentelemetry::layer()
            .with_tracer(tracer)
            .with_filter(Targets::new().with_target(EXPORTED_TARGETS_PREFIX, tracing::Level::DEBUG))
    }

    /// The collector URL spans go to.
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// Flushes queued spans and stops the batch thread, waiting at most `bound`; what is still queued
    /// then is dropped (with a warning), so a dead collector cannot hold up the stop.
    pub async fn shutdown(self, bound: Duration) {
        let Self { provider, endpoint } = self;
        // The SDK blocks while its batch thread exports through the channel this runtime drives.
        let flushing = tokio::task::spawn_blocking(move || provider.shutdown_with_timeout(bound));
        match tokio::time::timeout(bound + Duration::from_millis(500), flushing).await {
            Ok(Ok(Ok(()))) => tracing::debug!(%endpoint, "span export flushed and stopped"),
            Ok(Ok(Err(e))) => tracing::warn!(%endpoint, error = %e, "span export did not flush cleanly"),
            Ok(Err(e)) => tracing::warn!(%endpoint, error = %e, "span export shutdown task failed"),
            Err(_) => {
                tracing::warn!(%endpoint, ?bound, "span export did not stop within its bound; queued spans dropped")
            }
        }
    }
}

/// Root spans kept with probability `fraction` (validated to [0, 1] with the config); a child is kept
/// when its parent is, so a trace is whole or absent.
fn sampler(fraction: f64) -> Sampler {
    let root = if fraction >= 1.0 {
        Sampler::AlwaysOn
    } else if fraction <= 0.0 {
        Sampler::AlwaysOff
    } else {
        Sampler::TraceIdRatioBased(fraction)
    };
    Sampler::ParentBased(Box::new(root))
}

#[cfg(test)]
mod tests {
    use super::*;
    use woodpecker_core::config::OtlpConfig;

    /// exporter, method, secure, environment, and the endpoint wanted (or the error's beginning).
    type Case<'a> = (&'a str, &'a str, bool, &'a [(&'a str, &'a str)], Result<Option<&'a str>, &'a str>);

    fn decide(
        exporter: &str,
        method: &str,
        secure: bool,
        env: &[(&str, &str)],
    ) -> Result<Option<OtlpSettings>, String> {
        let otlp = OtlpConfig { endpoint: "collector:4317".to_owned(), method: method.to_owned(), secure };
        let trace = TraceConfig { exporter: exporter.to_owned(), otlp, ..TraceConfig::default() };
        let lookup = |k: &str| env.iter().find(|(n, _)| *n == k).map(|(_, v)| (*v).to_owned());
        otlp_settings(&trace, lookup, "node-1", "0.1.0").map_err(|e| e.to_string())
    }

    fn endpoint(r: Result<Option<OtlpSettings>, String>) -> Result<Option<String>, String> {
        r.map(|s| s.map(|s| s.endpoint))
    }

    #[test]
    fn export_is_on_only_when_the_environment_or_the_trace_section_asks() {
        let env_on = [("OTEL_EXPORTER_OTLP_ENDPOINT", "http://otel:4317")];
        let cases: &[Case] = &[
            ("noop", "grpc", false, &[], Ok(None)),
            ("", "grpc", false, &[], Ok(None)),
            ("noop", "grpc", false, &[("OTEL_EXPORTER_OTLP_ENDPOINT", "  ")], Ok(None)),
            ("noop", "grpc", false, &env_on, Ok(Some("http://otel:4317"))),
            (
                "noop",
                "grpc",
                false,
                &[("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "http://traces:4317"), env_on[0]],
                Ok(Some("http://traces:4317")),
            ),
            ("otlp", "grpc", false, &[], Ok(Some("http://collector:4317"))),
            ("OTLP", "", true, &[], Ok(Some("https://collector:4317"))),
            ("otlp", "grpc", false, &env_on, Ok(Some("http://otel:4317"))),
            ("otlp", "grpc", false, &[("OTEL_SDK_DISABLED", "true"), env_on[0]], Ok(None)),
            ("otlp", "http", false, &[], Err("trace.otlp.method is \"http\"")),
            ("jaeger", "grpc", false, &[], Err("trace.exporter is \"jaeger\"")),
            ("stdout", "grpc", false, &[], Err("trace.exporter is \"stdout\"")),
            (
                "noop",
                "grpc",
                false,
                &[("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf"), env_on[0]],
                Err("OTEL_EXPORTER_OTLP_PROTOCOL is \"http/protobuf\""),
            ),
        ];
        for (exporter, method, secure, env, want) in cases {
            let got = endpoint(decide(exporter, method, *secure, env));
            match (want, &got) {
                (Ok(w), Ok(g)) => assert_eq!(w.map(str::to_owned), *g, "{exporter}/{method}/{env:?}"),
                (Err(w), Err(g)) => assert!(g.starts_with(w), "{exporter}/{method}/{env:?}: {g}"),
                _ => panic!("{exporter}/{method}/{env:?}: want {want:?}, got {got:?}"),
            }
        }
    }

    #[test]
    fn resource_names_default_to_the_server_and_the_node() {
        let s = decide("otlp", "grpc", false, &[]).unwrap().unwrap();
        assert_eq!((s.service_name.as_str(), s.node_name.as_str(), s.sample_fraction), (SERVICE_NAME, "node-1", 1.0));
        let s = decide("otlp", "grpc", false, &[("OTEL_SERVICE_NAME", "wp-eu")]).unwrap().unwrap();
        assert_eq!(s.service_name, "wp-eu");
    }
}
