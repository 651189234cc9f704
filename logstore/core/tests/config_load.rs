//! Loading `woodpecker.yaml`: upstream keys and defaults, unknown keys, bad values, units,
//! overlays.

use std::time::Duration;

use woodpecker_core::config::{
    AffinityMode, ConditionWrite, Config, ConfigError, MetaType, QuorumStrategy, StorageType,
};

fn load_err(yaml: &str) -> ConfigError {
    match Config::from_yaml_str(yaml) {
        Ok(config) => panic!("expected an error for:\n{yaml}\ngot {config:#?}"),
        Err(e) => e,
    }
}

/// Every value in upstream's shipped `config/woodpecker.yaml` (the "yaml" column of the survey's
/// §11), written out key by key. Only three defaults differ on purpose (zero-setup: embedded
/// metadata, local storage under /tmp), checked at the end.
#[test]
fn defaults_equal_upstream_shipped_yaml() {
    let c = Config::default();
    let wp = &c.woodpecker;
    assert_eq!(wp.meta.prefix, "woodpecker");

    let client = &wp.client;
    assert_eq!(client.segment_append.queue_size, 10_000);
    assert_eq!(client.segment_append.max_retries, 3);
    assert_eq!(client.segment_append.max_batch_entries, 1000);
    assert_eq!(client.segment_append.max_batch_bytes, 2_000_000);
    assert_eq!(client.segment_rolling_policy.max_size, 256_000_000);
    assert_eq!(client.segment_rolling_policy.max_interval, Duration::from_secs(600));
    assert_eq!(client.segment_rolling_policy.max_blocks, 1000);
    assert_eq!(client.auditor.max_interval, Duration::from_secs(10));
    assert_eq!(client.session_monitor.check_interval, Duration::from_secs(3));
    assert_eq!(client.session_monitor.max_failures, 5);
    assert!(client.direct_read.enabled);
    assert_eq!(client.direct_read.max_batch_size, 16 * 1024 * 1024);
    assert_eq!(client.direct_read.max_fetch_threads, 4);
    let pools = &client.quorum.quorum_buffer_pools;
    assert_eq!(pools.len(), 1);
    assert_eq!(pools[0].name, "default-region-pool");
    assert!(pools[0].seeds.is_empty());
    let strategy = &client.quorum.quorum_select_strategy;
    assert_eq!(strategy.affinity_mode, AffinityMode::Soft);
    assert_eq!(strategy.replicas, 3);
    assert_eq!(strategy.strategy, QuorumStrategy::Random);
    assert!(strategy.custom_placement.is_empty());
    assert_eq!((strategy.ensemble_size(), strategy.write_quorum(), strategy.ack_quorum()), (3, 3, 2));

    let ls = &wp.logstore;
    let sync = &ls.segment_sync_policy;
    assert_eq!(sync.max_interval, Duration::from_millis(200));
    assert_eq!(sync.max_interval_for_local_storage, Duration::from_millis(10));
    assert_eq!(sync.max_interval_for_service, Duration::from_millis(1));
    assert_eq!(sync.max_entries, 10_000);
    assert_eq!(sync.max_bytes, 256_000_000);
    assert_eq!(sync.max_flush_retries, 5);
    assert_eq!(sync.retry_interval, Duration::from_millis(1000));
    assert_eq!(sync.max_flush_size, 2_000_000);
    assert_eq!(sync.max_flush_threads, 32);
    let compaction = &ls.segment_compaction_policy;
    assert_eq!(compaction.max_bytes, 2_000_000);
    assert_eq!(compaction.max_parallel_uploads, 4);
    assert_eq!(compaction.max_parallel_reads, 8);
    // Absent from the shipped yaml: upstream's code default.
    assert_eq!(compaction.timeout, Duration::from_secs(300));
    assert_eq!(ls.segment_read_policy.max_batch_size, 2_000_000);
    assert_eq!(ls.segment_read_policy.max_fetch_threads, 32);
    assert_eq!(ls.retention_policy.ttl, Duration::from_secs(259_200));
    assert_eq!(ls.fence_policy.condition_write, ConditionWrite::Auto);
    assert_eq!(ls.grpc.server_max_send_size, 536_870_912);
    assert_eq!(ls.grpc.server_max_recv_size, 268_435_456);
    assert_eq!(ls.grpc.client_max_send_size, 268_435_456);
    assert_eq!(ls.grpc.client_max_recv_size, 536_870_912);
    let cleanup = &ls.processor_cleanup_policy;
    assert_eq!(cleanup.cleanup_interval, Duration::from_secs(60));
    assert_eq!(cleanup.max_idle_time, Duration::from_secs(300));
    assert_eq!(cleanup.shutdown_timeout, Duration::from_secs(15));
    let maintenance = &ls.maintenance_strategy;
    assert_eq!(maintenance.delete_grace_period, Duration::from_secs(5));
    assert_eq!(maintenance.delete_reclaim_interval, Duration::from_secs(2));
    assert_eq!(maintenance.compacted_file_cleanup_interval, Duration::from_secs(5));
    assert_eq!(maintenance.reconcile_min_data_log_age, Duration::from_secs(30 * 60));
    let selection = &ls.node_selection_policy;
    assert!(selection.load_aware_enabled);
    assert_eq!(selection.load_report_interval, Duration::from_secs(10));
    assert_eq!(selection.load_ttl, Duration::from_secs(30));
    assert_eq!(selection.mem_soft_threshold, 0.85);
    assert_eq!(selection.ewma_alpha, 0.5);
    let disk = &ls.disk_watermark_policy;
    assert!(disk.enabled);
    assert_eq!(disk.soft_threshold_ratio, 0.80);
    assert_eq!(disk.hard_threshold_ratio, 0.90);
    assert!(disk.throttle_enabled);
    assert_eq!(disk.min_free_bytes, 1 << 30);
    assert_eq!(disk.sample_interval, Duration::from_secs(10));
    assert_eq!(wp.runtime.op_registry.capacity, 1024);
    assert_eq!(wp.runtime.op_registry.warn_age, Duration::from_secs(30));

    assert_eq!(c.log.level, "info");
    assert_eq!(c.log.file.root_path, "");
    assert_eq!((c.log.file.max_size, c.log.file.max_age, c.log.file.max_backups), (300, 10, 20));
    assert_eq!(c.log.format, "text");
    assert!(c.log.stdout);
    assert_eq!(c.trace.exporter, "noop");
    assert_eq!(c.trace.sample_fraction, 1.0);
    assert_eq!(c.trace.jaeger.url, "");
    assert_eq!(c.trace.otlp.endpoint, "127.0.0.1:4317");
    assert_eq!(c.trace.otlp.method, "grpc");
    assert!(!c.trace.otlp.secure);
    assert_eq!(c.trace.init_timeout, Duration::from_secs(10));

    assert_eq!(c.etcd.endpoints, ["localhost:2379"]);
    assert_eq!(c.etcd.root_path, "by-dev");
    assert_eq!(c.etcd.meta_sub_path, "meta");
    assert_eq!(c.etcd.kv_sub_path, "kv");
    assert_eq!(c.etcd.request_timeout, Duration::from_millis(10_000));
    assert_eq!(c.etcd.ssl.tls_min_version, "1.3");
    assert!(!c.etcd.ssl.enabled && !c.etcd.auth.enabled && !c.etcd.use_.embed);

    let m = &c.minio;
    assert_eq!((m.address.as_str(), m.port), ("localhost", 9000));
    assert_eq!((m.access_key_id.as_str(), m.secret_access_key.as_str()), ("minioadmin", "minioadmin"));
    assert_eq!(m.bucket_name, "a-bucket");
    assert!(m.create_bucket);
    assert_eq!(m.root_path, "files");
    assert!(!m.use_ssl && !m.use_iam && !m.use_virtual_host);
    assert_eq!(m.cloud_provider, "aws");
    assert_eq!(m.region, "");
    assert_eq!(m.log_level, "fatal");
    assert_eq!(m.request_timeout, Duration::from_millis(10_000));
    assert_eq!(m.list_objects_max_keys, 0);

    // Deliberate differences (zero-setup default): upstream ships etcd + minio + /var/lib/woodpecker.
    assert_eq!(wp.meta.meta_type, MetaType::Embedded);
    assert_eq!(wp.storage.storage_type, StorageType::Local);
    assert_eq!(wp.storage.root_path, "/tmp/woodpecker");

    // Ours: the constants upstream hard-codes.
    assert_eq!(client.max_entry_size, 64 << 20);
    assert_eq!(client.segment_append.first_response_timeout, Duration::from_secs(30));
    assert_eq!(client.segment_append.ack_timeout, Duration::from_secs(30));
    assert_eq!(client.session_monitor.session_ttl, Duration::from_secs(15));
    assert_eq!(client.reader.poll_interval, Duration::from_millis(200));
    assert_eq!(client.reader.batch_entries, 200);
    assert_eq!(client.reader.info_refresh_interval, Duration::from_secs(30));
    assert_eq!(client.reader.lease_ttl, Duration::from_secs(60));
    assert_eq!(client.fence.max_retries, 5);
    assert_eq!(
        (client.fence.retry_min_backoff, client.fence.retry_max_backoff),
        (Duration::from_millis(100), Duration::from_secs(1))
    );
    assert_eq!(client.fence.wait_timeout, Duration::from_secs(30));
    assert_eq!(client.fence.local_wait_timeout, Duration::from_secs(5));
    assert_eq!(client.completion.max_retries, 3);
    assert_eq!(client.completion.lac_sync_timeout, Duration::from_secs(30));
    assert_eq!(wp.meta.create_log_max_retries, 5);

    c.validate().expect("defaults are valid");
}

/// An upstream-style file using every upstream key (shipped-yaml spellings, including empty
/// values and `tlsMinVersion: 1.3` as a number) loads to exactly the defaults once the three
/// zero-setup differences are set to upstream's values.
#[test]
fn upstream_shaped_file_with_every_upstream_key_loads() {
    let yaml = r#"
woodpecker:
  meta: {type: etcd, prefix: woodpecker}
  client:
    segmentAppend: {queueSize: 10000, maxRetries: 3, maxBatchEntries: 1000, maxBatchBytes: 2000000}
    segmentRollingPolicy: {maxSize: 256000000, maxInterval: 600, maxBlocks: 1000}
    auditor: {maxInterval: 10}
    sessionMonitor: {checkInterval: 3, maxFailures: 5}
    directRead: {enabled: true, maxBatchSize: 16777216, maxFetchThreads: 4}
    quorum:
      quorumBufferPools:
        - name: default-region-pool
          seeds: [ ]
      quorumSelectStrategy:
        affinityMode: soft
        replicas: 3
        strategy: random
        customPlacement:
  logstore:
    segmentSyncPolicy:
      maxInterval: 200
      maxIntervalForLocalStorage: 10
      maxIntervalForService: 1
      maxEntries: 10000
      maxBytes: 256000000
      maxFlushRetries: 5
      retryInterval: 1000
      maxFlushSize: 2000000
      maxFlushThreads: 32
    segmentCompactionPolicy: {maxBytes: 2000000, maxParallelUploads: 4, maxParallelReads: 8}
    segmentReadPolicy: {maxBatchSize: 2000000, maxFetchThreads: 32}
    retentionPolicy: {ttl: 259200}
    fencePolicy: {conditionWrite: auto}
    grpc: {serverMaxSendSize: 536870912, serverMaxRecvSize: 268435456, clientMaxSendSize: 268435456, clientMaxRecvSize: 536870912}
    processorCleanupPolicy: {cleanupInterval: 60, maxIdleTime: 300, shutdownTimeout: 15}
    maintenanceStrategy: {deleteGracePeriod: 5, deleteReclaimInterval: 2, compactedFileCleanupInterval: 5}
    nodeSelectionPolicy: {loadAwareEnabled: true, loadReportInterval: 10, loadTTL: 30, memSoftThreshold: 0.85, ewmaAlpha: 0.5}
    diskWatermarkPolicy:
      enabled: true
      softThresholdRatio: 0.80
      hardThresholdRatio: 0.90
      throttleEnabled: true
      minFreeBytes: 1GB
      sampleInterval: 10
  storage:
    type: minio
    rootPath: /var/lib/woodpecker
log:
  level: info
  file:
    rootPath:
    maxSize: 300
    maxAge: 10
    maxBackups: 20
  format: text
  stdout: true
trace:
  exporter: noop
  sampleFraction: 1
  jaeger:
    url:
  otlp: {endpoint: 127.0.0.1:4317, method: grpc, secure: false}
  initTimeoutSeconds: 10
etcd:
  endpoints:
    - localhost:2379
  rootPath: by-dev
  metaSubPath: meta
  kvSubPath: kv
  log: {level: info, path: stdout}
  ssl:
    enabled: false
    tlsCert: /path/to/etcd-client.pem
    tlsKey: /path/to/etcd-client-key.pem
    tlsCACert: /path/to/ca.pem
    tlsMinVersion: 1.3
  requestTimeout: 10000
  use: {embed: false}
  data: {dir: default.etcd}
  auth:
    enabled: false
    userName:
    password:
minio:
  address: localhost
  port: 9000
  accessKeyID: minioadmin
  secretAccessKey: minioadmin
  useSSL: false
  ssl: {tlsCACert: /path/to/public.crt}
  bucketName: a-bucket
  createBucket: true
  rootPath: files
  useIAM: false
  cloudProvider: aws
  gcpCredentialJSON:
  iamEndpoint:
  logLevel: fatal
  region:
  useVirtualHost: false
  requestTimeoutMs: 10000
  listObjectsMaxKeys: 0
"#;
    let loaded = Config::from_yaml_str(yaml).expect("upstream-shaped file loads");
    let mut expected = Config::default();
    expected.woodpecker.meta.meta_type = MetaType::Etcd;
    expected.woodpecker.storage.storage_type = StorageType::Minio;
    expected.woodpecker.storage.root_path = "/var/lib/woodpecker".to_owned();
    assert_eq!(loaded, expected);
}

#[test]
fn interop_fixture_configs_written_for_upstream_load() {
    let golden = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../e2e/interop/golden");
    let Ok(dirs) = std::fs::read_dir(&golden) else {
        // The interop fixtures live in another part of the tree; without them there is nothing to check.
        eprintln!("no {} directory; skipping", golden.display());
        return;
    };
    for dir in dirs.flatten() {
        let path = dir.path().join("config.yaml");
        if path.exists() {
            let config = Config::load(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            assert_eq!(config.woodpecker.meta.meta_type, MetaType::Etcd, "{}", path.display());
        }
    }
}

#[test]
fn empty_document_is_the_defaults() {
    assert_eq!(Config::from_yaml_str("").expect("empty loads"), Config::default());
    assert_eq!(Config::from_yaml_str("# only a comment\n").expect("comment loads"), Config::default());
}

#[test]
fn unknown_key_is_rejected_with_its_dotted_path() {
    let e = load_err("woodpecker:\n  logstore:\n    segmentSyncPolicy:\n      maxFlushSiz: 10\n");
    assert_eq!(e.key(), Some("woodpecker.logstore.segmentSyncPolicy.maxFlushSiz"));
    let text = e.to_string();
    assert!(text.contains("unknown config key `woodpecker.logstore.segmentSyncPolicy.maxFlushSiz`"), "{text}");
    assert!(text.contains("maxFlushSize"), "lists the known keys: {text}");

    let top = load_err("woodpeckr: {}\n");
    assert_eq!(top.key(), Some("woodpeckr"));

    let in_list = load_err(
        "woodpecker:\n  client:\n    quorum:\n      quorumBufferPools:\n        - name: p\n          seed: [a:1]\n",
    );
    assert_eq!(in_list.key(), Some("woodpecker.client.quorum.quorumBufferPools[0].seed"));
    assert!(matches!(in_list, ConfigError::UnknownKey { .. }));
}

#[test]
fn wrongly_typed_value_names_the_key() {
    let e = load_err("woodpecker:\n  logstore:\n    segmentSyncPolicy:\n      maxFlushSize: big\n");
    assert!(matches!(e, ConfigError::InvalidValue { .. }), "{e:?}");
    assert_eq!(e.key(), Some("woodpecker.logstore.segmentSyncPolicy.maxFlushSize"));
    assert!(e.to_string().contains("invalid size `big`"), "{e}");

    let e = load_err("woodpecker:\n  storage:\n    type: s3\n");
    assert_eq!(e.key(), Some("woodpecker.storage.type"));
    let text = e.to_string();
    for allowed in StorageType::NAMES {
        assert!(text.contains(allowed), "names allowed value {allowed}: {text}");
    }

    let e = load_err("woodpecker:\n  client:\n    segmentAppend:\n      queueSize: -1\n");
    assert_eq!(e.key(), Some("woodpecker.client.segmentAppend.queueSize"));

    let e = load_err("woodpecker:\n  logstore:\n    segmentSyncPolicy:\n      maxInterval: soon\n");
    assert_eq!(e.key(), Some("woodpecker.logstore.segmentSyncPolicy.maxInterval"));
    assert!(e.to_string().contains("milliseconds"), "{e}");
}

#[test]
fn out_of_range_value_names_the_key_and_the_range() {
    let cases: &[(&str, &str, &str)] = &[
        (
            "woodpecker:\n  logstore:\n    segmentSyncPolicy:\n      maxFlushSize: 0\n",
            "woodpecker.logstore.segmentSyncPolicy.maxFlushSize",
            "a size > 0 bytes",
        ),
        (
            "woodpecker:\n  logstore:\n    segmentSyncPolicy:\n      maxFlushSize: 300000000\n",
            "woodpecker.logstore.segmentSyncPolicy.maxFlushSize",
            "at most woodpecker.logstore.segmentSyncPolicy.maxBytes (256000000 bytes)",
        ),
        (
            "woodpecker:\n  logstore:\n    diskWatermarkPolicy:\n      softThresholdRatio: 0.95\n",
            "woodpecker.logstore.diskWatermarkPolicy.hardThresholdRatio",
            "a ratio >= softThresholdRatio (0.95)",
        ),
        (
            "woodpecker:\n  logstore:\n    diskWatermarkPolicy:\n      softThresholdRatio: 0\n",
            "woodpecker.logstore.diskWatermarkPolicy.softThresholdRatio",
            "a ratio > 0",
        ),
        (
            "woodpecker:\n  client:\n    quorum:\n      quorumSelectStrategy:\n        replicas: 4\n",
            "woodpecker.client.quorum.quorumSelectStrategy.replicas",
            "one of 1, 3, 5",
        ),
        (
            "woodpecker:\n  storage:\n    type: minio\nminio:\n  rootPath: /abs\n",
            "minio.rootPath",
            "clean relative path",
        ),
        (
            "woodpecker:\n  storage:\n    type: minio\nminio:\n  rootPath: a//b\n",
            "minio.rootPath",
            "clean relative path",
        ),
        ("woodpecker:\n  client:\n    maxEntrySize: 300M\n", "woodpecker.client.maxEntrySize", "at most"),
        (
            "woodpecker:\n  meta:\n    type: etcd\n  storage:\n    type: service\n",
            "woodpecker.client.quorum.quorumBufferPools[0].seeds",
            "at least one seed",
        ),
        (
            "woodpecker:\n  storage:\n    type: service\n",
            "woodpecker.meta.type",
            "etcd when woodpecker.storage.type is service",
        ),
        (
            "woodpecker:\n  client:\n    quorum:\n      quorumSelectStrategy:\n        strategy: cross-region\n",
            "woodpecker.client.quorum.quorumBufferPools",
            "at least 2 buffer pools",
        ),
        (
            "woodpecker:\n  client:\n    quorum:\n      quorumSelectStrategy:\n        strategy: custom\n        replicas: 1\n        customPlacement:\n          - {name: r1, region: nowhere}\n",
            "woodpecker.client.quorum.quorumSelectStrategy.customPlacement[0].region",
            "the name of a buffer pool (default-region-pool)",
        ),
        ("woodpecker:\n  meta:\n    type: etcd\netcd:\n  endpoints: []\n", "etcd.endpoints", "at least one endpoint"),
        ("trace:\n  sampleFraction: 2\n", "trace.sampleFraction", "a number in [0, 1]"),
        ("log:\n  level: loud\n", "log.level", "one of debug, info, warn, error, panic, fatal"),
        (
            "woodpecker:\n  client:\n    fence:\n      retryMinBackoff: 2s\n",
            "woodpecker.client.fence.retryMaxBackoff",
            "a duration >= woodpecker.client.fence.retryMinBackoff (2s)",
        ),
        (
            "woodpecker:\n  client:\n    sessionMonitor:\n      sessionTtl: 1500ms\n",
            "woodpecker.client.sessionMonitor.sessionTtl",
            "a whole number of seconds >= 1",
        ),
    ];
    for (yaml, key, allowed) in cases {
        let e = load_err(yaml);
        assert!(matches!(e, ConfigError::OutOfRange { .. }), "{yaml}: {e:?}");
        assert_eq!(e.key(), Some(*key), "{yaml}: {e}");
        assert!(e.to_string().contains(allowed), "{yaml}: message `{e}` should contain `{allowed}`");
    }
}

#[test]
fn validation_does_not_clamp() {
    let mut config = Config::default();
    config.woodpecker.client.quorum.quorum_select_strategy.replicas = 7;
    let e = config.validate().expect_err("replicas 7 is rejected");
    assert_eq!(e.key(), Some("woodpecker.client.quorum.quorumSelectStrategy.replicas"));
    assert_eq!(config.woodpecker.client.quorum.quorum_select_strategy.replicas, 7);
}

#[test]
fn sizes_accept_integers_and_binary_suffixes() {
    let yaml = "woodpecker:\n  client:\n    maxEntrySize: 16M\n    segmentRollingPolicy:\n      maxSize: 1G\n    \
                directRead:\n      maxBatchSize: 512KiB\n  logstore:\n    segmentSyncPolicy:\n      maxFlushSize: \"4mb\"\n    \
                diskWatermarkPolicy:\n      minFreeBytes: 0\n    grpc:\n      serverMaxRecvSize: 268435456\n";
    let c = Config::from_yaml_str(yaml).expect("sizes load");
    assert_eq!(c.woodpecker.client.max_entry_size, 16 << 20);
    assert_eq!(c.woodpecker.client.segment_rolling_policy.max_size, 1 << 30);
    assert_eq!(c.woodpecker.client.direct_read.max_batch_size, 512 << 10);
    assert_eq!(c.woodpecker.logstore.segment_sync_policy.max_flush_size, 4 << 20);
    assert_eq!(c.woodpecker.logstore.disk_watermark_policy.min_free_bytes, 0);
    assert_eq!(c.woodpecker.logstore.grpc.server_max_recv_size, 256 << 20);

    let e = load_err("woodpecker:\n  client:\n    maxEntrySize: 1.5G\n");
    assert_eq!(e.key(), Some("woodpecker.client.maxEntrySize"));
}

#[test]
fn durations_use_the_key_unit_or_an_explicit_one() {
    let yaml = "woodpecker:\n  client:\n    auditor:\n      maxInterval: 2m\n    segmentRollingPolicy:\n      \
                maxInterval: 30\n  logstore:\n    segmentSyncPolicy:\n      maxInterval: 50\n      retryInterval: 2s\n    \
                retentionPolicy:\n      ttl: 1h\netcd:\n  requestTimeout: 5s\n";
    let c = Config::from_yaml_str(yaml).expect("durations load");
    assert_eq!(c.woodpecker.client.auditor.max_interval, Duration::from_secs(120));
    assert_eq!(c.woodpecker.client.segment_rolling_policy.max_interval, Duration::from_secs(30));
    assert_eq!(c.woodpecker.logstore.segment_sync_policy.max_interval, Duration::from_millis(50));
    assert_eq!(c.woodpecker.logstore.segment_sync_policy.retry_interval, Duration::from_secs(2));
    assert_eq!(c.woodpecker.logstore.retention_policy.ttl, Duration::from_secs(3600));
    assert_eq!(c.etcd.request_timeout, Duration::from_secs(5));
}

#[test]
fn etcd_endpoints_accept_a_comma_separated_string() {
    let c = Config::from_yaml_str("etcd:\n  endpoints: \"a:2379, b:2379\"\n").expect("loads");
    assert_eq!(c.etcd.endpoints, ["a:2379", "b:2379"]);
    let e = load_err("etcd:\n  endpoints: {a: b}\n");
    assert_eq!(e.key(), Some("etcd.endpoints"));
    assert!(e.to_string().contains("a list of strings or one comma-separated string"), "{e}");
}

#[test]
fn overlay_merges_over_the_main_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let main = dir.path().join("woodpecker.yaml");
    let overlay = dir.path().join("user.yaml");
    std::fs::write(
        &main,
        "woodpecker:\n  meta:\n    type: etcd\n  storage:\n    type: minio\netcd:\n  endpoints: [e1:2379, e2:2379]\n  \
         auth:\n    enabled: true\n    userName: placeholder\nminio:\n  address: minio.svc\n  bucketName: logs\n",
    )
    .expect("write main");
    std::fs::write(
        &overlay,
        "etcd:\n  endpoints: [e3:2379]\n  auth:\n    userName: wp\n    password: s3cret\nminio:\n  accessKeyID: AK\n  \
         secretAccessKey: SK\n  bucketName:\n",
    )
    .expect("write overlay");

    let c = Config::load_with_overlay(&main, Some(&overlay)).expect("loads with overlay");
    // Mappings merge key by key; lists and scalars from the overlay replace.
    assert_eq!(c.etcd.endpoints, ["e3:2379"]);
    assert!(c.etcd.auth.enabled);
    assert_eq!((c.etcd.auth.user_name.as_str(), c.etcd.auth.password.as_str()), ("wp", "s3cret"));
    assert_eq!((c.minio.access_key_id.as_str(), c.minio.secret_access_key.as_str()), ("AK", "SK"));
    assert_eq!(c.minio.address, "minio.svc");
    // An empty overlay value changes nothing.
    assert_eq!(c.minio.bucket_name, "logs");
    assert_eq!(c.woodpecker.meta.meta_type, MetaType::Etcd);

    // Without an overlay the main file alone is used.
    let alone = Config::load_with_overlay(&main, None).expect("loads alone");
    assert_eq!(alone.etcd.auth.password, "");

    // Unknown keys in the overlay are rejected too, and the merged result is validated.
    std::fs::write(&overlay, "minio:\n  secretKey: SK\n").expect("write overlay");
    let e = Config::load_with_overlay(&main, Some(&overlay)).expect_err("unknown overlay key");
    assert_eq!(e.key(), Some("minio.secretKey"));
    std::fs::write(&overlay, "minio:\n  rootPath: /abs\n").expect("write overlay");
    let e = Config::load_with_overlay(&main, Some(&overlay)).expect_err("invalid merged value");
    assert_eq!(e.key(), Some("minio.rootPath"));

    let e = Config::load_with_overlay(&main, Some(&dir.path().join("missing.yaml"))).expect_err("missing overlay");
    assert!(matches!(e, ConfigError::Read { .. }) && e.to_string().contains("missing.yaml"), "{e}");
}

#[test]
fn overlay_from_strings_matches_overlay_from_files() {
    let c = Config::from_yaml_with_overlay("minio:\n  port: 9000\n", "minio:\n  port: 9001\n").expect("loads");
    assert_eq!(c.minio.port, 9001);
}

#[test]
fn invalid_yaml_and_non_mapping_top_level_are_syntax_errors() {
    assert!(matches!(load_err("woodpecker: [unclosed\n"), ConfigError::Syntax { .. }));
    let e = load_err("- a\n- b\n");
    assert!(matches!(e, ConfigError::Syntax { .. }) && e.to_string().contains("must be a mapping"), "{e}");
}

#[test]
fn tls_settings_are_checked_at_load_and_tls_files_by_check_files() {
    let dir = tempfile::tempdir().unwrap();
    let cert = dir.path().join("cert.pem");
    std::fs::write(&cert, "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n").unwrap();
    let key = dir.path().join("key.pem");
    std::fs::write(&key, "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n").unwrap();
    let missing = dir.path().join("missing.pem");
    let etcd = |ssl: &str| {
        format!(
            "woodpecker:\n  meta:\n    type: etcd\netcd:\n  endpoints: [etcd-0:2379]\n  ssl:\n    enabled: true\n{ssl}"
        )
    };
    // Loads (the files may live on another machine, as for configs the operator renders for pods), then
    // check_files, which the client runs before connecting, names the key and the path.
    let files_err = |yaml: &str| -> ConfigError {
        let config = Config::from_yaml_str(yaml).unwrap_or_else(|e| panic!("load: {e}\n{yaml}"));
        config.check_files().expect_err(yaml)
    };

    // All three files present, and the seed's placeholders (unset) for the client certificate: both fine.
    let full =
        format!("    tlsCACert: {}\n    tlsCert: {}\n    tlsKey: {}\n", cert.display(), cert.display(), key.display());
    Config::from_yaml_str(&etcd(&full)).unwrap().check_files().unwrap();
    Config::from_yaml_str(&etcd(&format!("    tlsCACert: {}\n", cert.display()))).unwrap().check_files().unwrap();
    // TLS off: the files are not looked at.
    let off = format!(
        "woodpecker:\n  meta:\n    type: etcd\netcd:\n  ssl:\n    enabled: false\n    tlsCACert: {}\n",
        missing.display()
    );
    Config::from_yaml_str(&off).unwrap().check_files().unwrap();

    let e = files_err(&etcd(&format!("    tlsCACert: {}\n", missing.display())));
    assert_eq!(e.key(), Some("etcd.ssl.tlsCACert"));
    assert!(e.to_string().contains("missing.pem") && e.to_string().contains("No such file"), "{e}");
    let e = files_err(&etcd(&format!("    tlsCACert: {}\n", key.display())));
    assert_eq!(e.key(), Some("etcd.ssl.tlsCACert"));
    assert!(e.to_string().contains("no PEM CERTIFICATE block"), "{e}");
    let both = |c: &std::path::Path, k: &std::path::Path| {
        etcd(&format!("    tlsCACert: \"\"\n    tlsCert: {}\n    tlsKey: {}\n", c.display(), k.display()))
    };
    assert_eq!(files_err(&both(&cert, &cert)).key(), Some("etcd.ssl.tlsKey"));
    assert_eq!(files_err(&both(&missing, &key)).key(), Some("etcd.ssl.tlsCert"));

    // Inconsistent settings fail at load, wherever it happens.
    let e = load_err(&etcd(&format!("    tlsCACert: \"\"\n    tlsCert: {}\n", cert.display())));
    assert_eq!(e.key(), Some("etcd.ssl.tlsKey"), "{e}");
    let e = load_err(&etcd(&format!("    tlsCACert: \"\"\n    tlsCert: \"\"\n    tlsKey: {}\n", key.display())));
    assert_eq!(e.key(), Some("etcd.ssl.tlsCert"), "{e}");
    let plain = "woodpecker:\n  meta:\n    type: etcd\netcd:\n  endpoints: [\"http://etcd-0:2379\"]\n  ssl:\n    enabled: true\n    tlsCACert: \"\"\n";
    assert_eq!(load_err(plain).key(), Some("etcd.endpoints"));

    let minio = |extra: &str| format!("woodpecker:\n  storage:\n    type: minio\nminio:\n{extra}");
    let ok = |yaml: String| Config::from_yaml_str(&yaml).unwrap().check_files().unwrap();
    ok(minio(&format!("  useSSL: true\n  ssl:\n    tlsCACert: {}\n", cert.display())));
    ok(minio("  useSSL: true\n")); // the placeholder: system roots
    ok(minio(&format!("  useSSL: false\n  ssl:\n    tlsCACert: {}\n", missing.display())));
    let e = files_err(&minio(&format!("  useSSL: true\n  ssl:\n    tlsCACert: {}\n", missing.display())));
    assert_eq!(e.key(), Some("minio.ssl.tlsCACert"));
    assert!(e.to_string().contains("missing.pem"), "{e}");
    // An https:// address is https whatever useSSL says, so its CA file is checked too.
    let e = files_err(&minio(&format!(
        "  address: https://s3.example.com\n  ssl:\n    tlsCACert: {}\n",
        missing.display()
    )));
    assert_eq!(e.key(), Some("minio.ssl.tlsCACert"), "{e}");
}
