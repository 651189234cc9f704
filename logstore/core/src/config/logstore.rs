//! `woodpecker.logstore`: the LogStore (server or embedded) side: buffering and sync, compaction,
//! reads, retention, fencing, gRPC limits and node maintenance.

use std::time::Duration;

use super::schema::{config_enum, config_section};

config_section! {
    /// `woodpecker.logstore`: LogStore behaviour.
    pub struct LogStoreConfig {
        /// Write buffer and flush policy of a segment writer.
        #[key = "segmentSyncPolicy"]
        pub segment_sync_policy: SegmentSyncPolicyConfig = SegmentSyncPolicyConfig::default(),
        /// How completed segments are merged into larger blocks.
        #[key = "segmentCompactionPolicy"]
        pub segment_compaction_policy: SegmentCompactionPolicyConfig = SegmentCompactionPolicyConfig::default(),
        /// Batch size and parallelism of segment readers.
        #[key = "segmentReadPolicy"]
        pub segment_read_policy: SegmentReadPolicyConfig = SegmentReadPolicyConfig::default(),
        /// How long truncated segments are kept.
        #[key = "retentionPolicy"]
        pub retention_policy: RetentionPolicyConfig = RetentionPolicyConfig::default(),
        /// How a new writer fences the previous one on object storage.
        #[key = "fencePolicy"]
        pub fence_policy: FencePolicyConfig = FencePolicyConfig::default(),
        /// gRPC message size limits of the LogStore service and its clients.
        #[key = "grpc"]
        pub grpc: GrpcConfig = GrpcConfig::default(),
        /// Cleanup of idle segment processors.
        #[key = "processorCleanupPolicy"]
        pub processor_cleanup_policy: ProcessorCleanupPolicyConfig = ProcessorCleanupPolicyConfig::default(),
        /// Reclaiming local data of deleted logs and compacted segments.
        #[key = "maintenanceStrategy"]
        pub maintenance_strategy: MaintenanceStrategyConfig = MaintenanceStrategyConfig::default(),
        /// Load reporting and load-aware quorum node selection.
        #[key = "nodeSelectionPolicy"]
        pub node_selection_policy: NodeSelectionPolicyConfig = NodeSelectionPolicyConfig::default(),
        /// Local disk watermarks and append back-pressure (service and local storage only).
        #[key = "diskWatermarkPolicy"]
        pub disk_watermark_policy: DiskWatermarkPolicyConfig = DiskWatermarkPolicyConfig::default(),
        /// Interval between checks of a decommissioning node's remaining data (seconds; ours, upstream hard-codes 5 s).
        #[key = "decommissionCheckInterval", with = "crate::config::units::seconds"]
        pub decommission_check_interval: Duration = Duration::from_secs(5),
        /// Workers of the sync scheduler; 0 means twice the number of CPUs (ours).
        #[key = "syncSchedulerWorkers"]
        pub sync_scheduler_workers: u32 = 0,
    }
}

config_section! {
    /// `woodpecker.logstore.segmentSyncPolicy`.
    pub struct SegmentSyncPolicyConfig {
        /// Longest time between two syncs of the object-storage writer (milliseconds).
        #[key = "maxInterval", with = "crate::config::units::millis"]
        pub max_interval: Duration = Duration::from_millis(200),
        /// Longest time between two syncs of the local-storage writer (milliseconds).
        #[key = "maxIntervalForLocalStorage", with = "crate::config::units::millis"]
        pub max_interval_for_local_storage: Duration = Duration::from_millis(10),
        /// Longest delay of a service-mode sync (milliseconds); syncs are also event-driven.
        #[key = "maxIntervalForService", with = "crate::config::units::millis"]
        pub max_interval_for_service: Duration = Duration::from_millis(1),
        /// Most entries held in the write buffer.
        #[key = "maxEntries"]
        pub max_entries: u32 = 10_000,
        /// Most bytes held in the write buffer.
        #[key = "maxBytes", with = "crate::config::units::bytes"]
        pub max_bytes: u64 = 256_000_000,
        /// Retries of a failed block upload.
        #[key = "maxFlushRetries"]
        pub max_flush_retries: u32 = 5,
        /// Wait between two block upload retries (milliseconds).
        #[key = "retryInterval", with = "crate::config::units::millis"]
        pub retry_interval: Duration = Duration::from_millis(1000),
        /// A block is cut once it holds this many bytes.
        #[key = "maxFlushSize", with = "crate::config::units::bytes"]
        pub max_flush_size: u64 = 2_000_000,
        /// Concurrent block uploads.
        #[key = "maxFlushThreads"]
        pub max_flush_threads: u32 = 32,
    }
}

config_section! {
    /// `woodpecker.logstore.segmentCompactionPolicy`.
    pub struct SegmentCompactionPolicyConfig {
        /// Size of a merged block after compaction, in bytes.
        #[key = "maxBytes", with = "crate::config::units::bytes"]
        pub max_bytes: u64 = 2_000_000,
        /// Concurrent uploads of one compaction.
        #[key = "maxParallelUploads"]
        pub max_parallel_uploads: u32 = 4,
        /// Concurrent reads of one compaction.
        #[key = "maxParallelReads"]
        pub max_parallel_reads: u32 = 8,
        /// Time limit of one compaction (seconds).
        #[key = "timeout", with = "crate::config::units::seconds"]
        pub timeout: Duration = Duration::from_secs(300),
    }
}

config_section! {
    /// `woodpecker.logstore.segmentReadPolicy`.
    pub struct SegmentReadPolicyConfig {
        /// Soft byte limit of one read batch.
        #[key = "maxBatchSize", with = "crate::config::units::bytes"]
        pub max_batch_size: u64 = 2_000_000,
        /// Concurrent block fetches of one reader.
        #[key = "maxFetchThreads"]
        pub max_fetch_threads: u32 = 32,
    }
}

config_section! {
    /// `woodpecker.logstore.retentionPolicy`.
    pub struct RetentionPolicyConfig {
        /// Truncated segments older than this are deleted (seconds; 259200 = 72 h).
        #[key = "ttl", with = "crate::config::units::seconds"]
        pub ttl: Duration = Duration::from_secs(259_200),
    }
}

config_enum! {
    /// Whether fencing uses the object store's conditional writes.
    pub enum ConditionWrite {
        /// Probe the object store once and remember the answer.
        Auto = "auto",
        /// Require conditional writes.
        Enable = "enable",
        /// Never use conditional writes; fence with fence objects instead.
        Disable = "disable",
    }
}

config_section! {
    /// `woodpecker.logstore.fencePolicy`.
    pub struct FencePolicyConfig {
        /// Conditional writes for embedded mode: auto, enable or disable.
        #[key = "conditionWrite"]
        pub condition_write: ConditionWrite = ConditionWrite::Auto,
        /// Lock mode (conditional writes off): longest a block upload may take, retries included (ms; ours).
        /// A writer taking over a segment left Active waits the lock's session TTL plus this before it
        /// fences it, so that no upload of the old writer can land after the fence.
        #[key = "lockUploadTimeout", with = "crate::config::units::millis"]
        pub lock_upload_timeout: Duration = Duration::from_millis(10_000),
    }
}

config_section! {
    /// `woodpecker.logstore.grpc`.
    pub struct GrpcConfig {
        /// Largest message the LogStore server sends, in bytes.
        #[key = "serverMaxSendSize", with = "crate::config::units::bytes"]
        pub server_max_send_size: u64 = 512 << 20,
        /// Largest message the LogStore server accepts, in bytes.
        #[key = "serverMaxRecvSize", with = "crate::config::units::bytes"]
        pub server_max_recv_size: u64 = 256 << 20,
        /// Largest message a LogStore client sends, in bytes.
        #[key = "clientMaxSendSize", with = "crate::config::units::bytes"]
        pub client_max_send_size: u64 = 256 << 20,
        /// Largest message a LogStore client accepts, in bytes.
        #[key = "clientMaxRecvSize", with = "crate::config::units::bytes"]
        pub client_max_recv_size: u64 = 512 << 20,
    }
}

config_section! {
    /// `woodpecker.logstore.processorCleanupPolicy`.
    pub struct ProcessorCleanupPolicyConfig {
        /// How often idle segment processors are looked for (seconds).
        #[key = "cleanupInterval", with = "crate::config::units::seconds"]
        pub cleanup_interval: Duration = Duration::from_secs(60),
        /// A processor idle this long is closed (seconds).
        #[key = "maxIdleTime", with = "crate::config::units::seconds"]
        pub max_idle_time: Duration = Duration::from_secs(300),
        /// Time limit for closing every processor at shutdown (seconds).
        #[key = "shutdownTimeout", with = "crate::config::units::seconds"]
        pub shutdown_timeout: Duration = Duration::from_secs(15),
    }
}

config_section! {
    /// `woodpecker.logstore.maintenanceStrategy`.
    pub struct MaintenanceStrategyConfig {
        /// Delay between marking a log deleted and reclaiming its local data (seconds).
        #[key = "deleteGracePeriod", with = "crate::config::units::seconds"]
        pub delete_grace_period: Duration = Duration::from_secs(5),
        /// How often delete markers are scanned (seconds).
        #[key = "deleteReclaimInterval", with = "crate::config::units::seconds"]
        pub delete_reclaim_interval: Duration = Duration::from_secs(2),
        /// How often local data of durably compacted segments is reclaimed (seconds).
        #[key = "compactedFileCleanupInterval", with = "crate::config::units::seconds"]
        pub compacted_file_cleanup_interval: Duration = Duration::from_secs(5),
        /// Local data younger than this is never reclaimed by reconciliation (seconds).
        #[key = "reconcileMinDataLogAge", with = "crate::config::units::seconds"]
        pub reconcile_min_data_log_age: Duration = Duration::from_secs(1800),
        /// Compacted segments reclaimed per cleanup tick (ours; upstream hard-codes 256).
        #[key = "compactedCleanupBatch"]
        pub compacted_cleanup_batch: u32 = 256,
        /// Reconcile local data against metadata every this many cleanup passes (ours).
        #[key = "reconcileEveryPasses"]
        pub reconcile_every_passes: u32 = 60,
        /// Time budget for distributing a compacted mark before manual action is needed (ours; seconds).
        #[key = "notifyBudget", with = "crate::config::units::seconds"]
        pub notify_budget: Duration = Duration::from_secs(1800),
        /// Compacted marks distributed per auditor cycle (ours).
        #[key = "notifyMaxPerCycle"]
        pub notify_max_per_cycle: u32 = 64,
        /// Time limit of one compacted-mark notification to one node (ours; seconds).
        #[key = "notifyNodeTimeout", with = "crate::config::units::seconds"]
        pub notify_node_timeout: Duration = Duration::from_secs(10),
        /// Sweep orphaned cleanup and marking records every this many auditor cycles (ours).
        #[key = "orphanSweepCycles"]
        pub orphan_sweep_cycles: u32 = 60,
    }
}

config_section! {
    /// `woodpecker.logstore.nodeSelectionPolicy`.
    pub struct NodeSelectionPolicyConfig {
        /// Prefer lower-load nodes among eligible candidates.
        #[key = "loadAwareEnabled"]
        pub load_aware_enabled: bool = true,
        /// Interval between two publications of this node's load factor (seconds).
        #[key = "loadReportInterval", with = "crate::config::units::seconds"]
        pub load_report_interval: Duration = Duration::from_secs(10),
        /// A load factor older than this is treated as unknown (seconds).
        #[key = "loadTTL", with = "crate::config::units::seconds"]
        pub load_ttl: Duration = Duration::from_secs(30),
        /// Memory usage ratio above which memory raises the load factor, in (0, 1].
        #[key = "memSoftThreshold"]
        pub mem_soft_threshold: f64 = 0.85,
        /// EWMA weight of the newest load sample, in (0, 1].
        #[key = "ewmaAlpha"]
        pub ewma_alpha: f64 = 0.5,
    }
}

config_section! {
    /// `woodpecker.logstore.diskWatermarkPolicy`.
    pub struct DiskWatermarkPolicyConfig {
        /// Monitor the local data disk and push back on appends when it fills.
        #[key = "enabled"]
        pub enabled: bool = true,
        /// Used ratio above which a rate-limited warning recommends more disk or nodes.
        #[key = "softThresholdRatio"]
        pub soft_threshold_ratio: f64 = 0.80,
        /// Used ratio above which appends are rejected (retriable); >= 1.0 with minFreeBytes 0 is warn-only.
        #[key = "hardThresholdRatio"]
        pub hard_threshold_ratio: f64 = 0.90,
        /// Between soft and hard, reject appends with a probability ramping from 0 to 1.
        #[key = "throttleEnabled"]
        pub throttle_enabled: bool = true,
        /// Free space at or below this many bytes also blocks appends.
        #[key = "minFreeBytes", with = "crate::config::units::bytes"]
        pub min_free_bytes: u64 = 1 << 30,
        /// Interval between two disk samples (seconds).
        #[key = "sampleInterval", with = "crate::config::units::seconds"]
        pub sample_interval: Duration = Duration::from_secs(10),
    }
}
