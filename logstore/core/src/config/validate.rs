//! Range and cross-key checks. Each failure names the key as a dotted path and the allowed
//! range; nothing is clamped.

use std::collections::HashSet;
use std::fmt::Display;
use std::time::Duration;

use super::{Config, ConfigError, MetaType, QuorumStrategy};

fn out_of_range(key: &str, value: impl Display, allowed: impl Into<String>) -> ConfigError {
    ConfigError::OutOfRange { key: key.to_owned(), value: value.to_string(), allowed: allowed.into() }
}

fn at_least(key: &str, value: u64, min: u64) -> Result<(), ConfigError> {
    if value >= min { Ok(()) } else { Err(out_of_range(key, value, format!("an integer >= {min}"))) }
}

fn positive_size(key: &str, value: u64) -> Result<(), ConfigError> {
    if value > 0 { Ok(()) } else { Err(out_of_range(key, value, "a size > 0 bytes")) }
}

fn positive_duration(key: &str, value: Duration) -> Result<(), ConfigError> {
    if value.is_zero() { Err(out_of_range(key, "0", "a duration > 0")) } else { Ok(()) }
}

fn whole_seconds(key: &str, value: Duration) -> Result<(), ConfigError> {
    if value.as_secs() >= 1 && value.subsec_nanos() == 0 {
        Ok(())
    } else {
        Err(out_of_range(key, humantime::format_duration(value), "a whole number of seconds >= 1"))
    }
}

fn backoff(min_key: &str, min: Duration, max_key: &str, max: Duration) -> Result<(), ConfigError> {
    positive_duration(min_key, min)?;
    if max < min {
        return Err(out_of_range(
            max_key,
            humantime::format_duration(max),
            format!("a duration >= {min_key} ({})", humantime::format_duration(min)),
        ));
    }
    Ok(())
}

/// `lo < value <= hi`.
fn ratio(key: &str, value: f64, lo: f64, hi: f64) -> Result<(), ConfigError> {
    if value.is_finite() && value > lo && value <= hi {
        Ok(())
    } else {
        Err(out_of_range(key, value, format!("a number in ({lo}, {hi}]")))
    }
}

fn one_of(key: &str, value: &str, allowed: &[&str]) -> Result<(), ConfigError> {
    if allowed.contains(&value) {
        Ok(())
    } else {
        Err(out_of_range(key, format!("`{value}`"), format!("one of {}", allowed.join(", "))))
    }
}

/// Whether `path` is "" or a clean relative path: no leading, trailing or double slash, no `.`
/// or `..` segment.
pub(super) fn is_clean_relative_path(path: &str) -> bool {
    path.is_empty() || path.split('/').all(|segment| !segment.is_empty() && segment != "." && segment != "..")
}

pub(super) fn validate(cfg: &Config) -> Result<(), ConfigError> {
    // Mode-level choices first: their errors explain the per-key ones that would follow.
    validate_storage_and_meta(cfg)?;
    validate_client(cfg)?;
    validate_logstore(cfg)?;
    validate_external(cfg)
}

fn validate_client(cfg: &Config) -> Result<(), ConfigError> {
    let client = &cfg.woodpecker.client;
    let append = &client.segment_append;
    at_least("woodpecker.client.segmentAppend.queueSize", append.queue_size.into(), 1)?;
    at_least("woodpecker.client.segmentAppend.maxRetries", append.max_retries.into(), 1)?;
    positive_size("woodpecker.client.segmentAppend.maxBatchBytes", append.max_batch_bytes)?;
    positive_duration("woodpecker.client.segmentAppend.firstResponseTimeout", append.first_response_timeout)?;
    positive_duration("woodpecker.client.segmentAppend.ackTimeout", append.ack_timeout)?;

    let rolling = &client.segment_rolling_policy;
    positive_size("woodpecker.client.segmentRollingPolicy.maxSize", rolling.max_size)?;
    positive_duration("woodpecker.client.segmentRollingPolicy.maxInterval", rolling.max_interval)?;
    at_least("woodpecker.client.segmentRollingPolicy.maxBlocks", rolling.max_blocks, 1)?;

    positive_duration("woodpecker.client.auditor.maxInterval", client.auditor.max_interval)?;

    let session = &client.session_monitor;
    positive_duration("woodpecker.client.sessionMonitor.checkInterval", session.check_interval)?;
    at_least("woodpecker.client.sessionMonitor.maxFailures", session.max_failures.into(), 1)?;
    // An etcd lease TTL is a whole number of seconds.
    whole_seconds("woodpecker.client.sessionMonitor.sessionTtl", session.session_ttl)?;

    let direct = &client.direct_read;
    positive_size("woodpecker.client.directRead.maxBatchSize", direct.max_batch_size)?;
    at_least("woodpecker.client.directRead.maxFetchThreads", direct.max_fetch_threads.into(), 1)?;

    validate_quorum(cfg)?;

    let sync = &cfg.woodpecker.logstore.segment_sync_policy;
    let grpc = &cfg.woodpecker.logstore.grpc;
    let max_entry = client.max_entry_size;
    positive_size("woodpecker.client.maxEntrySize", max_entry)?;
    let limits = [
        ("woodpecker.logstore.segmentSyncPolicy.maxBytes", sync.max_bytes),
        ("woodpecker.logstore.grpc.clientMaxSendSize", grpc.client_max_send_size),
        ("woodpecker.logstore.grpc.serverMaxRecvSize", grpc.server_max_recv_size),
    ];
    for (limit_key, limit) in limits {
        if max_entry > limit {
            return Err(out_of_range(
                "woodpecker.client.maxEntrySize",
                max_entry,
                format!("at most {limit_key} ({limit} bytes)"),
            ));
        }
    }

    let reader = &client.reader;
    positive_duration("woodpecker.client.reader.pollInterval", reader.poll_interval)?;
    at_least("woodpecker.client.reader.batchEntries", reader.batch_entries.into(), 1)?;
    positive_duration("woodpecker.client.reader.infoRefreshInterval", reader.info_refresh_interval)?;
    whole_seconds("woodpecker.client.reader.leaseTtl", reader.lease_ttl)?;

    let fence = &client.fence;
    at_least("woodpecker.client.fence.maxRetries", fence.max_retries.into(), 1)?;
    backoff(
        "woodpecker.client.fence.retryMinBackoff",
        fence.retry_min_backoff,
        "woodpecker.client.fence.retryMaxBackoff",
        fence.retry_max_backoff,
    )?;
    positive_duration("woodpecker.client.fence.waitTimeout", fence.wait_timeout)?;
    positive_duration("woodpecker.client.fence.localWaitTimeout", fence.local_wait_timeout)?;

    let completion = &client.completion;
    at_least("woodpecker.client.completion.maxRetries", completion.max_retries.into(), 1)?;
    backoff(
        "woodpecker.client.completion.retryMinBackoff",
        completion.retry_min_backoff,
        "woodpecker.client.completion.retryMaxBackoff",
        completion.retry_max_backoff,
    )?;
    positive_duration("woodpecker.client.completion.lacSyncTimeout", completion.lac_sync_timeout)?;

    positive_duration("woodpecker.client.handleGc.interval", client.handle_gc.interval)?;
    positive_duration("woodpecker.client.handleGc.idleTimeout", client.handle_gc.idle_timeout)
}

fn validate_quorum(cfg: &Config) -> Result<(), ConfigError> {
    let quorum = &cfg.woodpecker.client.quorum;
    let strategy = &quorum.quorum_select_strategy;
    let service = cfg.woodpecker.storage.storage_type.is_service();
    if ![1, 3, 5].contains(&strategy.replicas) {
        return Err(out_of_range(
            "woodpecker.client.quorum.quorumSelectStrategy.replicas",
            strategy.replicas,
            "one of 1, 3, 5",
        ));
    }
    backoff(
        "woodpecker.client.quorum.selectRetryMinBackoff",
        quorum.select_retry_min_backoff,
        "woodpecker.client.quorum.selectRetryMaxBackoff",
        quorum.select_retry_max_backoff,
    )?;

    let pools = &quorum.quorum_buffer_pools;
    if service && pools.is_empty() {
        return Err(out_of_range(
            "woodpecker.client.quorum.quorumBufferPools",
            "[]",
            "at least one buffer pool when woodpecker.storage.type is service",
        ));
    }
    let mut names = HashSet::new();
    for (index, pool) in pools.iter().enumerate() {
        if pool.name.is_empty() {
            return Err(out_of_range(
                &format!("woodpecker.client.quorum.quorumBufferPools[{index}].name"),
                "\"\"",
                "a non-empty pool name",
            ));
        }
        if !names.insert(pool.name.as_str()) {
            return Err(out_of_range(
                &format!("woodpecker.client.quorum.quorumBufferPools[{index}].name"),
                format!("`{}`", pool.name),
                "a pool name not used by another pool",
            ));
        }
        if service && pool.seeds.is_empty() {
            return Err(out_of_range(
                &format!("woodpecker.client.quorum.quorumBufferPools[{index}].seeds"),
                "[]",
                "at least one seed (host:port) when woodpecker.storage.type is service",
            ));
        }
    }

    match strategy.strategy {
        QuorumStrategy::CrossRegion if pools.len() < 2 => Err(out_of_range(
            "woodpecker.client.quorum.quorumBufferPools",
            format!("{} pool(s)", pools.len()),
            "at least 2 buffer pools for strategy cross-region",
        )),
        QuorumStrategy::Custom => {
            let rules = &strategy.custom_placement;
            if rules.len() != strategy.replicas as usize {
                return Err(out_of_range(
                    "woodpecker.client.quorum.quorumSelectStrategy.customPlacement",
                    format!("{} rule(s)", rules.len()),
                    format!("exactly replicas ({}) rules for strategy custom", strategy.replicas),
                ));
            }
            for (index, rule) in rules.iter().enumerate() {
                if !names.contains(rule.region.as_str()) {
                    return Err(out_of_range(
                        &format!("woodpecker.client.quorum.quorumSelectStrategy.customPlacement[{index}].region"),
                        format!("`{}`", rule.region),
                        format!(
                            "the name of a buffer pool ({})",
                            pools.iter().map(|p| p.name.as_str()).collect::<Vec<_>>().join(", ")
                        ),
                    ));
                }
            }
            Ok(())
        }
        _ => Ok(()),
    }
}

fn validate_logstore(cfg: &Config) -> Result<(), ConfigError> {
    let ls = &cfg.woodpecker.logstore;
    let sync = &ls.segment_sync_policy;
    positive_duration("woodpecker.logstore.segmentSyncPolicy.maxInterval", sync.max_interval)?;
    positive_duration(
        "woodpecker.logstore.segmentSyncPolicy.maxIntervalForLocalStorage",
        sync.max_interval_for_local_storage,
    )?;
    positive_duration("woodpecker.logstore.segmentSyncPolicy.maxIntervalForService", sync.max_interval_for_service)?;
    at_least("woodpecker.logstore.segmentSyncPolicy.maxEntries", sync.max_entries.into(), 1)?;
    positive_size("woodpecker.logstore.segmentSyncPolicy.maxBytes", sync.max_bytes)?;
    positive_size("woodpecker.logstore.segmentSyncPolicy.maxFlushSize", sync.max_flush_size)?;
    if sync.max_flush_size > sync.max_bytes {
        return Err(out_of_range(
            "woodpecker.logstore.segmentSyncPolicy.maxFlushSize",
            sync.max_flush_size,
            format!("at most woodpecker.logstore.segmentSyncPolicy.maxBytes ({} bytes)", sync.max_bytes),
        ));
    }
    at_least("woodpecker.logstore.segmentSyncPolicy.maxFlushThreads", sync.max_flush_threads.into(), 1)?;

    let compaction = &ls.segment_compaction_policy;
    positive_size("woodpecker.logstore.segmentCompactionPolicy.maxBytes", compaction.max_bytes)?;
    at_least(
        "woodpecker.logstore.segmentCompactionPolicy.maxParallelUploads",
        compaction.max_parallel_uploads.into(),
        1,
    )?;
    at_least("woodpecker.logstore.segmentCompactionPolicy.maxParallelReads", compaction.max_parallel_reads.into(), 1)?;
    positive_duration("woodpecker.logstore.segmentCompactionPolicy.timeout", compaction.timeout)?;

    let read = &ls.segment_read_policy;
    positive_size("woodpecker.logstore.segmentReadPolicy.maxBatchSize", read.max_batch_size)?;
    at_least("woodpecker.logstore.segmentReadPolicy.maxFetchThreads", read.max_fetch_threads.into(), 1)?;

    let grpc = &ls.grpc;
    for (key, value) in [
        ("woodpecker.logstore.grpc.serverMaxSendSize", grpc.server_max_send_size),
        ("woodpecker.logstore.grpc.serverMaxRecvSize", grpc.server_max_recv_size),
        ("woodpecker.logstore.grpc.clientMaxSendSize", grpc.client_max_send_size),
        ("woodpecker.logstore.grpc.clientMaxRecvSize", grpc.client_max_recv_size),
    ] {
        // tonic takes usize limits; anything above u32 is also beyond what a peer accepts.
        if value == 0 || value > u64::from(u32::MAX) {
            return Err(out_of_range(key, value, format!("a size in [1, {}] bytes", u32::MAX)));
        }
    }

    let cleanup = &ls.processor_cleanup_policy;
    positive_duration("woodpecker.logstore.processorCleanupPolicy.cleanupInterval", cleanup.cleanup_interval)?;
    positive_duration("woodpecker.logstore.processorCleanupPolicy.maxIdleTime", cleanup.max_idle_time)?;
    positive_duration("woodpecker.logstore.processorCleanupPolicy.shutdownTimeout", cleanup.shutdown_timeout)?;

    let maintenance = &ls.maintenance_strategy;
    positive_duration(
        "woodpecker.logstore.maintenanceStrategy.deleteReclaimInterval",
        maintenance.delete_reclaim_interval,
    )?;
    positive_duration(
        "woodpecker.logstore.maintenanceStrategy.compactedFileCleanupInterval",
        maintenance.compacted_file_cleanup_interval,
    )?;
    at_least(
        "woodpecker.logstore.maintenanceStrategy.compactedCleanupBatch",
        maintenance.compacted_cleanup_batch.into(),
        1,
    )?;
    at_least(
        "woodpecker.logstore.maintenanceStrategy.reconcileEveryPasses",
        maintenance.reconcile_every_passes.into(),
        1,
    )?;
    positive_duration("woodpecker.logstore.maintenanceStrategy.notifyBudget", maintenance.notify_budget)?;
    at_least("woodpecker.logstore.maintenanceStrategy.notifyMaxPerCycle", maintenance.notify_max_per_cycle.into(), 1)?;
    positive_duration("woodpecker.logstore.maintenanceStrategy.notifyNodeTimeout", maintenance.notify_node_timeout)?;
    at_least("woodpecker.logstore.maintenanceStrategy.orphanSweepCycles", maintenance.orphan_sweep_cycles.into(), 1)?;

    let selection = &ls.node_selection_policy;
    positive_duration("woodpecker.logstore.nodeSelectionPolicy.loadReportInterval", selection.load_report_interval)?;
    positive_duration("woodpecker.logstore.nodeSelectionPolicy.loadTTL", selection.load_ttl)?;
    ratio("woodpecker.logstore.nodeSelectionPolicy.memSoftThreshold", selection.mem_soft_threshold, 0.0, 1.0)?;
    ratio("woodpecker.logstore.nodeSelectionPolicy.ewmaAlpha", selection.ewma_alpha, 0.0, 1.0)?;

    let disk = &ls.disk_watermark_policy;
    let soft = disk.soft_threshold_ratio;
    let hard = disk.hard_threshold_ratio;
    if !(soft.is_finite() && soft > 0.0) {
        return Err(out_of_range(
            "woodpecker.logstore.diskWatermarkPolicy.softThresholdRatio",
            soft,
            "a ratio > 0 and <= hardThresholdRatio",
        ));
    }
    if !(hard.is_finite() && hard >= soft) {
        return Err(out_of_range(
            "woodpecker.logstore.diskWatermarkPolicy.hardThresholdRatio",
            hard,
            format!("a ratio >= softThresholdRatio ({soft}); >= 1.0 with minFreeBytes 0 means warn-only"),
        ));
    }
    positive_duration("woodpecker.logstore.diskWatermarkPolicy.sampleInterval", disk.sample_interval)?;

    positive_duration("woodpecker.logstore.decommissionCheckInterval", ls.decommission_check_interval)?;

    let ops = &cfg.woodpecker.runtime.op_registry;
    at_least("woodpecker.runtime.opRegistry.capacity", ops.capacity.into(), 1)?;
    positive_duration("woodpecker.runtime.opRegistry.warnAge", ops.warn_age)
}

fn validate_storage_and_meta(cfg: &Config) -> Result<(), ConfigError> {
    let storage = &cfg.woodpecker.storage;
    if storage.root_path.is_empty() {
        return Err(out_of_range("woodpecker.storage.rootPath", "\"\"", "a non-empty directory path"));
    }
    let meta = &cfg.woodpecker.meta;
    at_least("woodpecker.meta.createLogMaxRetries", meta.create_log_max_retries.into(), 1)?;
    // Service-mode clients share logs across processes; a per-process embedded store would let
    // each of them write its own, diverging metadata.
    if storage.storage_type.is_service() && meta.meta_type == MetaType::Embedded {
        return Err(out_of_range("woodpecker.meta.type", "`embedded`", "etcd when woodpecker.storage.type is service"));
    }
    if meta.meta_type == MetaType::Etcd {
        if cfg.etcd.endpoints.is_empty() {
            return Err(out_of_range(
                "etcd.endpoints",
                "[]",
                "at least one endpoint (host:port) when woodpecker.meta.type is etcd",
            ));
        }
        positive_duration("etcd.requestTimeout", cfg.etcd.request_timeout)?;
        if cfg.etcd.auth.enabled && cfg.etcd.auth.user_name.is_empty() {
            return Err(out_of_range("etcd.auth.userName", "\"\"", "a user name when etcd.auth.enabled is true"));
        }
        if cfg.etcd.use_.embed {
            return Err(out_of_range("etcd.use.embed", true, "false (an in-process etcd is not supported)"));
        }
        validate_etcd_tls(cfg)?;
    }
    one_of("etcd.ssl.tlsMinVersion", &cfg.etcd.ssl.tls_min_version, &["1.0", "1.1", "1.2", "1.3"])?;

    if storage.storage_type.uses_object_storage() {
        let minio = &cfg.minio;
        if !is_clean_relative_path(&minio.root_path) {
            return Err(out_of_range(
                "minio.rootPath",
                format!("`{}`", minio.root_path),
                "\"\" or a clean relative path (no leading, trailing or double slash, no . or .. segment)",
            ));
        }
        if minio.bucket_name.is_empty() {
            return Err(out_of_range("minio.bucketName", "\"\"", "a bucket name"));
        }
        if minio.address.is_empty() {
            return Err(out_of_range("minio.address", "\"\"", "a host name or address"));
        }
        if minio.port == 0 {
            return Err(out_of_range("minio.port", 0, "a port in [1, 65535]"));
        }
        positive_duration("minio.requestTimeoutMs", minio.request_timeout)?;
        positive_duration(
            "woodpecker.logstore.fencePolicy.lockUploadTimeout",
            cfg.woodpecker.logstore.fence_policy.lock_upload_timeout,
        )?;
        one_of(
            "minio.cloudProvider",
            &minio.cloud_provider,
            &["aws", "gcp", "gcpnative", "aliyun", "azure", "tencent"],
        )?;
    }
    Ok(())
}

/// `etcd.ssl` when enabled: a client certificate comes with its key, and no endpoint asks for plaintext.
/// Whether the files exist is [`check_files`]' job (the machine validating may not be the one using them).
fn validate_etcd_tls(cfg: &Config) -> Result<(), ConfigError> {
    let ssl = &cfg.etcd.ssl;
    if !ssl.enabled {
        return Ok(());
    }
    if let Some(endpoint) = cfg.etcd.endpoints.iter().find(|e| e.trim_start().starts_with("http://")) {
        return Err(out_of_range(
            "etcd.endpoints",
            format!("`{endpoint}`"),
            "host:port or https://host:port when etcd.ssl.enabled is true",
        ));
    }
    match (ssl.cert_path(), ssl.key_path()) {
        (Some(_), Some(_)) | (None, None) => Ok(()),
        (Some(_), None) => {
            Err(out_of_range("etcd.ssl.tlsKey", "unset", "the key file of etcd.ssl.tlsCert (set both or neither)"))
        }
        (None, Some(_)) => Err(out_of_range(
            "etcd.ssl.tlsCert",
            "unset",
            "the certificate file of etcd.ssl.tlsKey (set both or neither)",
        )),
    }
}

/// The TLS files the configuration names for what this process will use (etcd when `woodpecker.meta.type`
/// is etcd, object storage over https) are readable PEM files of the right kind.
pub(super) fn check_files(cfg: &Config) -> Result<(), ConfigError> {
    let ssl = &cfg.etcd.ssl;
    if cfg.woodpecker.meta.meta_type == MetaType::Etcd && ssl.enabled {
        if let Some(ca) = ssl.ca_cert_path() {
            readable_pem("etcd.ssl.tlsCACert", &ca, "CERTIFICATE")?;
        }
        if let Some(cert) = ssl.cert_path() {
            readable_pem("etcd.ssl.tlsCert", &cert, "CERTIFICATE")?;
        }
        if let Some(key) = ssl.key_path() {
            readable_pem("etcd.ssl.tlsKey", &key, "PRIVATE KEY")?;
        }
    }
    let minio = &cfg.minio;
    if cfg.woodpecker.storage.storage_type.uses_object_storage()
        && minio.uses_https()
        && let Some(ca) = minio.ssl.ca_cert_path()
    {
        readable_pem("minio.ssl.tlsCACert", &ca, "CERTIFICATE")?;
    }
    Ok(())
}

/// `path` can be read now and holds a PEM block of `kind` (`CERTIFICATE`, `PRIVATE KEY`).
fn readable_pem(key: &str, path: &str, kind: &str) -> Result<(), ConfigError> {
    let text = std::fs::read(path).map_err(|e| ConfigError::InvalidValue {
        key: key.to_owned(),
        message: format!("cannot read `{path}`: {e}"),
    })?;
    let text = String::from_utf8_lossy(&text);
    let suffix = format!("{kind}-----");
    if text.lines().any(|l| l.starts_with("-----BEGIN ") && l.trim_end().ends_with(&suffix)) {
        Ok(())
    } else {
        Err(ConfigError::InvalidValue { key: key.to_owned(), message: format!("`{path}` holds no PEM {kind} block") })
    }
}

fn validate_external(cfg: &Config) -> Result<(), ConfigError> {
    one_of("log.level", &cfg.log.level, &["debug", "info", "warn", "error", "panic", "fatal"])?;
    one_of("log.format", &cfg.log.format.to_ascii_lowercase(), &["text", "json"])?;
    one_of("trace.exporter", &cfg.trace.exporter, &["noop", "stdout", "jaeger", "otlp"])?;
    let fraction = cfg.trace.sample_fraction;
    if !(0.0..=1.0).contains(&fraction) {
        return Err(out_of_range("trace.sampleFraction", fraction, "a number in [0, 1]"));
    }
    one_of("trace.otlp.method", &cfg.trace.otlp.method, &["grpc", "http"])
}

#[cfg(test)]
mod tests {
    use super::is_clean_relative_path;

    #[test]
    fn clean_relative_paths() {
        for ok in ["", "files", "a/b", "a-b/c_d.e"] {
            assert!(is_clean_relative_path(ok), "{ok:?}");
        }
        for bad in ["/files", "files/", "a//b", "./a", "a/..", ".", ".."] {
            assert!(!is_clean_relative_path(bad), "{bad:?}");
        }
    }
}
