//! The LogStore server (`woodpecker server`): what the operator's StatefulSets run and what clients in
//! service mode (ours, and upstream's Go client inside Milvus) write to.
//!
//! ```text
//!            clients ──gRPC :18080──▶ service ──▶ registry ──▶ processor (one per segment) ──▶ staged data.log
//!   peers ◀─gossip :17946─▶ members ──▶ SelectNodes                          └─ CompactSegment ──▶ object storage
//!            probes, operator ──HTTP :9091──▶ admin (/livez /healthz /readyz /metrics /admin/…)
//! ```
//!
//! Start: config (main file, then the external default and user overlays), refusals (one line,
//! non-zero exit: equal ports, bad YAML or unknown keys, a service-mode config without buffer-pool seeds,
//! an unwritable data dir), then gossip, gRPC and admin HTTP.
//!
//! Stop (SIGTERM or SIGINT; a second one exits at once), within 30 s: refuse new appends, let in-flight
//! ones finish or fail (each block is fsynced before it is acknowledged), leave gossip, stop gRPC, flush
//! the spans still queued for OTLP export ([`telemetry`], at most 2 s).
//!
//! Logs and spans: the caller installs the `tracing` subscriber once the configuration is read, through
//! the `install_tracing` callback of [`run`], which gets the OTLP layer when export is configured.
//!
//! Every long-lived task is named in [`run`], owned by it, and stopped by one cancellation token.

pub mod admin;
pub mod args;
pub mod delete_marker;
pub mod disk;
pub mod load;
pub mod members;
pub mod metrics;
pub mod node;
pub mod node_state;
pub mod object_stores;
pub mod processor;
pub mod registry;
pub mod service;
pub use woodpecker_proto::status;
pub mod telemetry;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use tokio_util::sync::CancellationToken;
use woodpecker_core::config::{Config, StorageType};
use woodpecker_proto::logstore::NodeMeta;
use woodpecker_proto::logstore::log_store_server::LogStoreServer;
use woodpecker_storage::object::S3Options;
use woodpecker_storage::segment::staged::StagedStorage;
use woodpecker_storage::segment::staged::compact::CompactOptions;

pub use crate::args::ServerArgs;
use crate::node::Node;
use crate::processor::AppendLimits;

/// Overlay paths upstream's image scripts pass whether or not the files are mounted; only these may be
/// missing (any other overlay named on the command line must exist: it may hold the credentials).
const UPSTREAM_OVERLAY_PATHS: [&str; 2] = ["/woodpecker/configs/default.yaml", "/woodpecker/configs/user.yaml"];

/// Longest the whole stop sequence may take (the operator's grace period is longer).
pub const STOP_BUDGET: Duration = Duration::from_secs(30);

/// Runs a LogStore server until SIGTERM / SIGINT. `config` and `data_dir` are the `woodpecker`
/// command's global options; `version` is what `--version` prints. `install_tracing` installs the
/// process's subscriber once the config is read (before that nothing is logged), composing the OTLP
/// layer it gets when span export is configured (`trace` section, `OTEL_EXPORTER_OTLP_ENDPOINT`).
pub async fn run(
    args: ServerArgs,
    config: Option<PathBuf>,
    data_dir: Option<PathBuf>,
    version: &str,
    install_tracing: impl FnOnce(Option<telemetry::OtlpLayer<tracing_subscriber::Registry>>),
) -> Result<()> {
    limit_malloc_arenas();
    let started = ServerStart::prepare(args, config, data_dir).await?;
    let env = |name: &str| std::env::var(name).ok();
    let otlp = telemetry::otlp_settings(&started.cfg.trace, env, &started.node_name, version)?;
    let telemetry = otlp.as_ref().map(telemetry::Telemetry::start).transpose()?;
    install_tracing(telemetry.as_ref().map(telemetry::Telemetry::layer));
    if let Some(t) = &telemetry {
        tracing::info!(endpoint = t.endpoint(), "exporting spans over OTLP/gRPC");
    }
    for p in &started.skipped_overlays {
        tracing::info!(path = %p.display(), "upstream's default overlay path is not mounted; skipping it");
    }
    let signals = CancellationToken::new();
    tokio::spawn(watch_signals(signals.clone()));
    started.serve(signals, version, telemetry).await
}

/// A configured node, not serving yet.
struct ServerStart {
    args: ServerArgs,
    cfg: Config,
    data_dir: PathBuf,
    node_name: String,
    /// Upstream overlay paths that were not mounted (logged once the subscriber is installed).
    skipped_overlays: Vec<PathBuf>,
}

impl ServerStart {
    async fn prepare(args: ServerArgs, config: Option<PathBuf>, data_dir: Option<PathBuf>) -> Result<Self> {
        let ports = [
            ("--service-port", args.service_port),
            ("--gossip-port", args.gossip_port),
            ("METRICS_PORT", args.metrics_port),
        ];
        for (i, (a, pa)) in ports.iter().enumerate() {
            for (b, pb) in &ports[i + 1..] {
                if pa == pb {
                    bail!("{a} and {b} are both {pa}: each needs its own port");
                }
            }
        }
        let main = args::config_file(config);
        let mut layers: Vec<&Path> = vec![&main];
        let mut skipped_overlays = Vec::new();
        for p in [&args.external_default_config, &args.external_user_config].into_iter().flatten() {
            // Upstream's start script always passes its image's overlay paths, which exist only when mounted.
            if UPSTREAM_OVERLAY_PATHS.iter().any(|u| Path::new(u) == p) && !p.exists() {
                skipped_overlays.push(p.clone());
                continue;
            }
            layers.push(p);
        }
        let cfg = Config::load_layers(&layers).context("cannot load the configuration")?;
        let wp = &cfg.woodpecker;
        if wp.storage.storage_type == StorageType::Service {
            let pools = &wp.client.quorum.quorum_buffer_pools;
            if pools.is_empty() || pools.iter().any(|p| p.seeds.is_empty()) {
                bail!(
                    "woodpecker.storage.type is service but woodpecker.client.quorum.quorumBufferPools has no pool with \
                     seeds: clients could not find this cluster"
                );
            }
        }
        let data_dir = args::data_dir(data_dir, &wp.storage.root_path);
        std::fs::create_dir_all(&data_dir)
            .with_context(|| format!("data dir {} cannot be created", data_dir.display()))?;
        data_dir_writable(&data_dir).with_context(|| format!("data dir {} is not writable", data_dir.display()))?;
        let node_name = match &args.node_name {
            Some(n) if !n.trim().is_empty() => n.trim().to_owned(),
            _ => hostname().context("no --node-name and the host name cannot be read")?,
        };
        Ok(Self { args, cfg, data_dir, node_name, skipped_overlays })
    }

    async fn serve(
        self,
        signals: CancellationToken,
        version: &str,
        telemetry: Option<telemetry::Telemetry>,
    ) -> Result<()> {
        let Self { args, cfg, data_dir, node_name, .. } = self;
        let ls = &cfg.woodpecker.logstore;
        let cancel = CancellationToken::new();
        let lifecycle = node_state::NodeState::load(&data_dir).context("cannot read node_state.json")?;
        let markers = delete_marker::DeleteMarkers::load(&data_dir).context("cannot read the delete markers")?;
        let endpoint = match &args.advertise_service_addr {
            Some(a) => a.clone(),
            None => format!("{}:{}", local_ip(), args.service_port),
        };
        let local = NodeMeta {
            node_id: node_name.clone(),
            resource_group: args.resource_group.clone(),
            az: args.availability_zone.clone(),
            endpoint,
            tags: [
                ("role".to_owned(), "logstore".to_owned()),
                ("admin_port".to_owned(), args.metrics_port.to_string()),
                ("status".to_owned(), lifecycle.get().as_str().to_owned()),
            ]
            .into_iter()
            .collect(),
            version: 1,
            last_update: node_state::now_ms(),
            cluster_name: args.cluster.clone(),
            region: args.region.clone(),
            load_factor: 0.0,
            load_updated_at: 0,
        };
        let members = members::start(&args, local, cancel.child_token()).await?;
        let sync = &ls.segment_sync_policy;
        let limits = AppendLimits {
            max_block_bytes: sync.max_flush_size,
            window_entries: u64::from(sync.max_entries),
            window_bytes: sync.max_bytes,
            ..AppendLimits::default()
        };
        let staged = Arc::new(StagedStorage::new(data_dir.clone()));
        let s3 = S3Options::from_config(&cfg.minio).map_err(anyhow::Error::msg)?;
        let dw = &ls.disk_watermark_policy;
        let disk = disk::DiskWatermark::new(data_dir.clone(), dw.enabled, dw.hard_threshold_ratio, dw.min_free_bytes);
        disk.sample().with_context(|| format!("cannot read the disk usage of {}", data_dir.display()))?;
        let node = Arc::new(Node {
            name: node_name.clone(),
            processors: registry::Processors::new(staged, limits, cancel.child_token()),
            markers,
            lifecycle,
            stores: object_stores::ObjectStores::new(s3),
            compact: CompactOptions {
                max_bytes: ls.segment_compaction_policy.max_bytes,
                max_parallel_uploads: ls.segment_compaction_policy.max_parallel_uploads as usize,
            },
            read_max_bytes: ls.segment_read_policy.max_batch_size,
            disk,
            stopping: Default::default(),
            members: Arc::clone(&members),
            metrics: metrics::Metrics::new(),
            select_policy: woodpecker_membership::quorum_select::LoadPolicy {
                enabled: ls.node_selection_policy.load_aware_enabled,
                ttl_ms: ls.node_selection_policy.load_ttl.as_millis() as i64,
            },
        });

        let service_addr = SocketAddr::from(([0, 0, 0, 0], args.service_port));
        let listener = tokio::net::TcpListener::bind(service_addr)
            .await
            .with_context(|| format!("cannot listen on service port {}", args.service_port))?;
        let admin_addr = SocketAddr::from(([0, 0, 0, 0], args.metrics_port));
        let admin_listener = tokio::net::TcpListener::bind(admin_addr)
            .await
            .with_context(|| format!("cannot listen on METRICS_PORT {}", args.metrics_port))?;
        let admin = Arc::new(admin::Admin {
            node: Arc::clone(&node),
            grpc_listening: Default::default(),
            started_at: node_state::now_ms(),
            version: version.to_owned(),
        });

        let mut tasks = tokio::task::JoinSet::new();
        tasks.spawn(disk_sampler(Arc::clone(&node), dw.sample_interval, cancel.child_token()));
        tasks.spawn(reclaim_deleted_logs(
            Arc::clone(&node),
            ls.maintenance_strategy.delete_grace_period,
            ls.maintenance_strategy.delete_reclaim_interval,
            cancel.child_token(),
        ));
        let nsp = &ls.node_selection_policy;
        tasks.spawn(report_load(
            Arc::clone(&node),
            nsp.load_report_interval,
            nsp.ewma_alpha,
            nsp.mem_soft_threshold,
            cancel.child_token(),
        ));
        tasks.spawn(close_idle_processors(
            Arc::clone(&node),
            ls.processor_cleanup_policy.max_idle_time,
            ls.processor_cleanup_policy.cleanup_interval,
            cancel.child_token(),
        ));
        tasks.spawn(finish_decommission(Arc::clone(&node), ls.decommission_check_interval, cancel.child_token()));

        let grpc_stop = CancellationToken::new();
        let grpc = &ls.grpc;
        let service = LogStoreServer::new(service::LogStoreService::new(Arc::clone(&node)))
            .max_decoding_message_size(grpc.server_max_recv_size as usize)
            .max_encoding_message_size(grpc.server_max_send_size as usize);
        let incoming = tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true));
        let stop = grpc_stop.clone();
        let grpc_task = tokio::spawn(
            tonic::transport::Server::builder()
                .http2_keepalive_interval(Some(Duration::from_secs(10)))
                .http2_keepalive_timeout(Some(Duration::from_secs(20)))
                .add_service(service)
                .serve_with_incoming_shutdown(incoming, async move { stop.cancelled().await }),
        );
        admin.grpc_listening.store(true, Ordering::Release);
        let admin_stop = cancel.child_token();
        let admin_task = tokio::spawn(async move {
            axum::serve(admin_listener, admin::router(admin).into_make_service())
                .with_graceful_shutdown(async move { admin_stop.cancelled().await })
                .await
        });
        tracing::info!(node = %node_name, %service_addr, %admin_addr, data_dir = %data_dir.display(), "LogStore server started");
        eprintln!(
            "woodpecker server {node_name} serving on {service_addr} (admin {admin_addr}, data {})",
            data_dir.display()
        );

        signals.cancelled().await;
        let deadline = Instant::now() + STOP_BUDGET;
        eprintln!("woodpecker server {node_name}: stopping");
        // 1. No new appends; 2. in-flight ones finish (each block is fsynced before its ack) or fail.
        node.stopping.store(true, Ordering::Release);
        let drain_until = Instant::now() + Duration::from_secs(10);
        while Instant::now() < drain_until && node.processors.all().iter().any(|p| p.health().unsynced_entries > 0) {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let why = status::SHUTDOWN.status(format!("node {node_name} is shutting down"));
        for p in node.processors.all() {
            p.shut(why.clone());
        }
        // 3. Leave gossip, so SelectNodes elsewhere stops returning this node.
        members.leave(Duration::from_secs(5)).await;
        // 4. Stop gRPC: running calls get until the budget ends.
        grpc_stop.cancel();
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, grpc_task).await {
            Ok(Ok(Ok(()))) => {}
            Ok(Ok(Err(e))) => tracing::warn!(error = %e, "gRPC server ended with an error"),
            Ok(Err(e)) => tracing::warn!(error = %e, "gRPC server task failed"),
            Err(_) => tracing::warn!("gRPC calls still running at the end of the stop budget; dropping them"),
        }
        cancel.cancel();
        let _ = tokio::time::timeout(Duration::from_secs(1), admin_task).await;
        tasks.shutdown().await;
        // 5. Spans of the stop itself included; bounded, so a dead collector cannot hold the stop up.
        if let Some(t) = telemetry {
            t.shutdown(telemetry::SHUTDOWN_BOUND).await;
        }
        eprintln!("woodpecker server {node_name}: stopped");
        Ok(())
    }
}

/// Cancels `token` on the first SIGTERM or SIGINT; a second one exits the process at once.
async fn watch_signals(token: CancellationToken) {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int)) = (signal(SignalKind::terminate()), signal(SignalKind::interrupt())) else {
        tracing::error!("cannot install signal handlers; stop the server with SIGKILL");
        return;
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
    token.cancel();
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
    eprintln!("woodpecker server: second signal, exiting now");
    std::process::exit(130);
}

/// Samples the data disk's usage for the watermarks.
async fn disk_sampler(node: Arc<Node>, every: Duration, cancel: CancellationToken) {
    let every = every.max(Duration::from_millis(100));
    loop {
        tokio::select! {
            () = tokio::time::sleep(every) => {}
            () = cancel.cancelled() => return,
        }
        if let Err(e) = node.disk.sample() {
            tracing::warn!(error = %e, "cannot sample the data disk's usage");
        }
    }
}

/// Removes the local data of logs marked deleted once their grace period passed.
async fn reclaim_deleted_logs(node: Arc<Node>, grace: Duration, every: Duration, cancel: CancellationToken) {
    let every = every.max(Duration::from_millis(100));
    loop {
        tokio::select! {
            () = tokio::time::sleep(every) => {}
            () = cancel.cancelled() => return,
        }
        for (scope, log_id) in node.markers.due_for_reclaim(grace.as_millis() as i64) {
            let dir = if log_id == delete_marker::INSTANCE {
                let base = node.processors.staged().data_dir().join(scope.bucket());
                if scope.root_path().is_empty() { base } else { base.join(scope.root_path()) }
            } else {
                node.processors.staged().log_dir(&scope, log_id)
            };
            match tokio::fs::remove_dir_all(&dir).await {
                Ok(()) => tracing::info!(dir = %dir.display(), "reclaimed the local data of a deleted log"),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => {
                    tracing::warn!(dir = %dir.display(), error = %e, "cannot reclaim a deleted log's data; retrying");
                    node.markers.retry_reclaim(scope, log_id);
                }
            }
        }
    }
}

/// Samples the node's load and publishes it through gossip (load-aware SelectNodes elsewhere).
async fn report_load(node: Arc<Node>, every: Duration, alpha: f64, mem_soft: f64, cancel: CancellationToken) {
    let every = every.max(Duration::from_millis(100));
    let mut ewma = load::Ewma::new(alpha);
    let mut prev = load::read_proc().0;
    loop {
        tokio::select! {
            () = tokio::time::sleep(every) => {}
            () = cancel.cancelled() => return,
        }
        let (cpu, mem) = load::read_proc();
        if let (Some(p), Some(c)) = (prev, cpu) {
            let value = ewma.add(load::sample(p, c, mem.unwrap_or(0.0), mem_soft));
            node.members.report_load(value);
        }
        prev = cpu;
    }
}

/// Closes processors that were idle for `max_idle` (`processorCleanupPolicy`), so memory follows the
/// segments in use, not every segment ever touched.
async fn close_idle_processors(node: Arc<Node>, max_idle: Duration, every: Duration, cancel: CancellationToken) {
    let every = every.max(Duration::from_millis(100));
    loop {
        tokio::select! {
            () = tokio::time::sleep(every) => {}
            () = cancel.cancelled() => return,
        }
        let closed = node.processors.close_idle(max_idle);
        if closed > 0 {
            tracing::debug!(closed, "closed idle segment processors");
        }
    }
}

/// Moves a decommissioning node to decommissioned once no local data remains.
async fn finish_decommission(node: Arc<Node>, every: Duration, cancel: CancellationToken) {
    let every = every.max(Duration::from_millis(100));
    loop {
        tokio::select! {
            () = tokio::time::sleep(every) => {}
            () = cancel.cancelled() => return,
        }
        if node.lifecycle.get() != node_state::Lifecycle::Decommissioning {
            continue;
        }
        match node.decommission_progress().await {
            Ok(p) if p.safe_to_terminate => {
                if let Err(e) = node.set_lifecycle(node_state::Lifecycle::Decommissioned).await {
                    tracing::warn!(error = %e, "cannot record the end of the decommission");
                }
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "cannot check the decommission's progress"),
        }
    }
}

/// glibc gives threads that allocate concurrently their own arenas (up to 8 per core), and memory freed in
/// one arena is not reused by another; the blocking pool's threads each touch block buffers. With two
/// arenas the peak RSS per node in the 64 KiB service bench fell from 56 to 40 MiB on average (4 nodes,
/// `MALLOC_ARENA_MAX=2`). An explicit `MALLOC_ARENA_MAX` in the environment wins.
fn limit_malloc_arenas() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    if std::env::var_os("MALLOC_ARENA_MAX").is_none() {
        // SAFETY: mallopt only changes allocator tuning; arenas created before the call are kept.
        unsafe {
            libc::mallopt(libc::M_ARENA_MAX, 2);
        }
    }
}

/// Creates, writes, fsyncs and removes a probe file in `dir`.
pub fn data_dir_writable(dir: &Path) -> std::io::Result<()> {
    use std::io::Write;
    let probe = dir.join(".write-probe");
    let mut f = std::fs::File::create(&probe)?;
    f.write_all(b"ok")?;
    f.sync_all()?;
    drop(f);
    std::fs::remove_file(&probe)
}

fn hostname() -> std::io::Result<String> {
    let mut buf = [0u8; 256];
    // SAFETY: the buffer is valid for its length; gethostname NUL-terminates within it on success.
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    if rc != 0 {
        return Err(std::io::Error::last_os_error());
    }
    let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    Ok(String::from_utf8_lossy(&buf[..end]).into_owned())
}

/// The address peers reach this host at when none is advertised: the source address of a route to a
/// public address (no packet is sent), else loopback.
fn local_ip() -> String {
    std::net::UdpSocket::bind("0.0.0.0:0")
        .and_then(|s| s.connect("8.8.8.8:53").map(|()| s))
        .and_then(|s| s.local_addr())
        .map_or_else(|_| "127.0.0.1".to_owned(), |a| a.ip().to_string())
}
