//! `woodpecker.client`: the writer/reader side of the log (segment append, rolling, auditor,
//! session, direct read, quorum), plus the limits and timings upstream hard-codes.

use std::time::Duration;

use super::schema::{config_enum, config_section};

config_section! {
    /// `woodpecker.client`: client-side behaviour.
    pub struct ClientConfig {
        /// Segment append queue, retries and client-side group commit.
        #[key = "segmentAppend"]
        pub segment_append: SegmentAppendConfig = SegmentAppendConfig::default(),
        /// When the writer closes the current segment and opens the next one.
        #[key = "segmentRollingPolicy"]
        pub segment_rolling_policy: SegmentRollingPolicyConfig = SegmentRollingPolicyConfig::default(),
        /// Background auditor of an open writer (compaction, truncation marking, cleanup).
        #[key = "auditor"]
        pub auditor: AuditorConfig = AuditorConfig::default(),
        /// Health checks of the etcd session that backs the writer lock.
        #[key = "sessionMonitor"]
        pub session_monitor: SessionMonitorConfig = SessionMonitorConfig::default(),
        /// Service mode: read sealed segments directly from object storage instead of via LogStore nodes.
        #[key = "directRead"]
        pub direct_read: DirectReadConfig = DirectReadConfig::default(),
        /// Service mode: buffer pools of LogStore nodes and how a segment's quorum is picked.
        #[key = "quorum"]
        pub quorum: QuorumConfig = QuorumConfig::default(),
        /// Largest accepted entry payload in bytes (ours); larger appends fail before any I/O.
        ///
        /// Must fit the write buffer (`logstore.segmentSyncPolicy.maxBytes`) and one gRPC message.
        #[key = "maxEntrySize", with = "crate::config::units::bytes"]
        pub max_entry_size: u64 = 64 << 20,
        /// Log reader polling, batching and bookkeeping (ours; upstream hard-codes these).
        #[key = "reader"]
        pub reader: ReaderConfig = ReaderConfig::default(),
        /// Segment fencing during writer recovery (ours; upstream hard-codes these).
        #[key = "fence"]
        pub fence: FenceConfig = FenceConfig::default(),
        /// Segment completion after a roll or close (ours; upstream hard-codes these).
        #[key = "completion"]
        pub completion: CompletionConfig = CompletionConfig::default(),
        /// Garbage collection of idle segment handles (ours; upstream hard-codes these).
        #[key = "handleGc"]
        pub handle_gc: HandleGcConfig = HandleGcConfig::default(),
    }
}

config_section! {
    /// `woodpecker.client.segmentAppend`.
    pub struct SegmentAppendConfig {
        /// Maximum number of queued segment append requests.
        #[key = "queueSize"]
        pub queue_size: u32 = 10_000,
        /// Total sends of one entry to one node before the append fails.
        #[key = "maxRetries"]
        pub max_retries: u32 = 3,
        /// Group commit: most consecutive queued appends coalesced into one AddEntries request; <= 1 disables batching.
        #[key = "maxBatchEntries"]
        pub max_batch_entries: u32 = 1000,
        /// Group commit: most payload bytes in one coalesced batch (ignored when maxBatchEntries <= 1).
        #[key = "maxBatchBytes", with = "crate::config::units::bytes"]
        pub max_batch_bytes: u64 = 2_000_000,
        /// Time to wait for a node's first response to an append (seconds; ours, upstream hard-codes 30 s).
        #[key = "firstResponseTimeout", with = "crate::config::units::seconds"]
        pub first_response_timeout: Duration = Duration::from_secs(30),
        /// Time to wait for an entry to be acknowledged by its quorum (seconds; ours, upstream hard-codes 30 s).
        #[key = "ackTimeout", with = "crate::config::units::seconds"]
        pub ack_timeout: Duration = Duration::from_secs(30),
    }
}

config_section! {
    /// `woodpecker.client.segmentRollingPolicy`.
    pub struct SegmentRollingPolicyConfig {
        /// Roll the writable segment once it holds this many bytes.
        #[key = "maxSize", with = "crate::config::units::bytes"]
        pub max_size: u64 = 256_000_000,
        /// Roll the writable segment once it is this old (seconds).
        #[key = "maxInterval", with = "crate::config::units::seconds"]
        pub max_interval: Duration = Duration::from_secs(600),
        /// Roll the writable segment once it has this many blocks (single-node quorum only).
        #[key = "maxBlocks"]
        pub max_blocks: u64 = 1000,
    }
}

config_section! {
    /// `woodpecker.client.auditor`.
    pub struct AuditorConfig {
        /// Interval between two auditor passes (seconds).
        #[key = "maxInterval", with = "crate::config::units::seconds"]
        pub max_interval: Duration = Duration::from_secs(10),
    }
}

config_section! {
    /// `woodpecker.client.sessionMonitor`.
    pub struct SessionMonitorConfig {
        /// How often the writer lock's session health is checked (seconds).
        #[key = "checkInterval", with = "crate::config::units::seconds"]
        pub check_interval: Duration = Duration::from_secs(3),
        /// Consecutive failed checks before the session, and the writer, is invalid.
        #[key = "maxFailures"]
        pub max_failures: u32 = 5,
        /// TTL of the etcd session (lease) holding the writer lock (seconds; ours, upstream hard-codes 15 s).
        #[key = "sessionTtl", with = "crate::config::units::seconds"]
        pub session_ttl: Duration = Duration::from_secs(15),
    }
}

config_section! {
    /// `woodpecker.client.directRead`.
    pub struct DirectReadConfig {
        /// Read sealed segments directly from object storage in service mode.
        #[key = "enabled"]
        pub enabled: bool = true,
        /// Largest batch of one direct read, in bytes.
        #[key = "maxBatchSize", with = "crate::config::units::bytes"]
        pub max_batch_size: u64 = 16 << 20,
        /// Concurrent fetches of one direct reader.
        #[key = "maxFetchThreads"]
        pub max_fetch_threads: u32 = 4,
    }
}

config_section! {
    /// `woodpecker.client.quorum`.
    pub struct QuorumConfig {
        /// Named groups of LogStore nodes, each reached through its seeds.
        #[key = "quorumBufferPools", with = "crate::config::units::nullable"]
        pub quorum_buffer_pools: Vec<QuorumBufferPool> = vec![QuorumBufferPool::default()],
        /// How the nodes of a segment's quorum are chosen.
        #[key = "quorumSelectStrategy"]
        pub quorum_select_strategy: QuorumSelectStrategy = QuorumSelectStrategy::default(),
        /// First backoff between attempts to select a quorum (milliseconds; ours).
        #[key = "selectRetryMinBackoff", with = "crate::config::units::millis"]
        pub select_retry_min_backoff: Duration = Duration::from_millis(200),
        /// Largest backoff between attempts to select a quorum (milliseconds; ours).
        #[key = "selectRetryMaxBackoff", with = "crate::config::units::millis"]
        pub select_retry_max_backoff: Duration = Duration::from_millis(2000),
        /// How long selecting a new segment's quorum may retry before the roll is given up (the writer goes
        /// on with its current segment) or the first segment fails (milliseconds; ours: upstream retries forever).
        #[key = "selectTimeout", with = "crate::config::units::millis"]
        pub select_timeout: Duration = Duration::from_millis(30_000),
        /// How long a replica's node may stay silent before a Completed segment's copy on it is made again on
        /// another node (milliseconds; ours: upstream never repairs).
        #[key = "repairGracePeriod", with = "crate::config::units::millis"]
        pub repair_grace_period: Duration = Duration::from_millis(60_000),
    }
}

config_section! {
    /// One buffer pool: a named group of LogStore nodes.
    pub struct QuorumBufferPool {
        /// Pool name, referenced by custom placement rules.
        #[key = "name", with = "crate::config::units::lenient_string"]
        pub name: String = "default-region-pool".to_owned(),
        /// gRPC service addresses (host:servicePort) of nodes in the pool, asked for SelectNodes; service mode needs one.
        #[key = "seeds", with = "crate::config::units::string_list"]
        pub seeds: Vec<String> = Vec::new(),
    }
}

config_section! {
    /// `woodpecker.client.quorum.quorumSelectStrategy`.
    pub struct QuorumSelectStrategy {
        /// soft: fall back when the rules cannot be met; hard: fail instead.
        #[key = "affinityMode"]
        pub affinity_mode: AffinityMode = AffinityMode::Soft,
        /// Ensemble size of a segment's quorum; write quorum = replicas, ack quorum = replicas / 2 + 1.
        #[key = "replicas"]
        pub replicas: u32 = 3,
        /// Node selection strategy.
        #[key = "strategy"]
        pub strategy: QuorumStrategy = QuorumStrategy::Random,
        /// Placement rules, one per replica (strategy `custom` only).
        #[key = "customPlacement", with = "crate::config::units::nullable"]
        pub custom_placement: Vec<CustomPlacement> = Vec::new(),
    }
}

config_section! {
    /// One custom placement rule.
    pub struct CustomPlacement {
        /// Rule name.
        #[key = "name", with = "crate::config::units::lenient_string"]
        pub name: String = String::new(),
        /// Buffer pool the replica comes from (upstream calls the pool a region here).
        #[key = "region", with = "crate::config::units::lenient_string"]
        pub region: String = String::new(),
        /// Availability zone pattern.
        #[key = "az", with = "crate::config::units::lenient_string"]
        pub az: String = String::new(),
        /// Resource group pattern.
        #[key = "resourceGroup", with = "crate::config::units::lenient_string"]
        pub resource_group: String = String::new(),
    }
}

config_enum! {
    /// How strictly quorum selection rules apply.
    pub enum AffinityMode {
        /// Prefer the rules, fall back when they cannot be met.
        Soft = "soft",
        /// Fail when the rules cannot be met.
        Hard = "hard",
    }
}

config_enum! {
    /// Quorum node selection strategy.
    pub enum QuorumStrategy {
        /// Random nodes.
        Random = "random",
        /// A random group of consecutive nodes (by node id), limiting replica-set overlap.
        RandomGroup = "random-group",
        /// One availability zone, one resource group.
        SingleAzSingleRg = "single-az-single-rg",
        /// One availability zone, several resource groups.
        SingleAzMultiRg = "single-az-multi-rg",
        /// Several availability zones, one resource group.
        MultiAzSingleRg = "multi-az-single-rg",
        /// Several availability zones and resource groups.
        MultiAzMultiRg = "multi-az-multi-rg",
        /// Nodes across regions (needs at least two buffer pools).
        CrossRegion = "cross-region",
        /// One `customPlacement` rule per replica.
        Custom = "custom",
    }
}

config_section! {
    /// `woodpecker.client.reader` (ours).
    pub struct ReaderConfig {
        /// Wait before polling again when a reader has caught up with the writer (milliseconds).
        #[key = "pollInterval", with = "crate::config::units::millis"]
        pub poll_interval: Duration = Duration::from_millis(200),
        /// Entries requested from storage per batch.
        #[key = "batchEntries"]
        pub batch_entries: u32 = 200,
        /// Refresh of the reader's position record in metadata when idle (seconds).
        #[key = "infoRefreshInterval", with = "crate::config::units::seconds"]
        pub info_refresh_interval: Duration = Duration::from_secs(30),
        /// TTL of the lease attached to the reader's position record (seconds).
        #[key = "leaseTtl", with = "crate::config::units::seconds"]
        pub lease_ttl: Duration = Duration::from_secs(60),
    }
}

config_section! {
    /// `woodpecker.client.fence` (ours).
    pub struct FenceConfig {
        /// Attempts to fence a segment before recovery fails.
        #[key = "maxRetries"]
        pub max_retries: u32 = 5,
        /// First backoff between fence attempts (milliseconds).
        #[key = "retryMinBackoff", with = "crate::config::units::millis"]
        pub retry_min_backoff: Duration = Duration::from_millis(100),
        /// Largest backoff between fence attempts (milliseconds).
        #[key = "retryMaxBackoff", with = "crate::config::units::millis"]
        pub retry_max_backoff: Duration = Duration::from_millis(1000),
        /// Wait for a fence to take effect when condition writes are disabled (seconds).
        #[key = "waitTimeout", with = "crate::config::units::seconds"]
        pub wait_timeout: Duration = Duration::from_secs(30),
        /// Wait for a fence to take effect on local storage (seconds).
        #[key = "localWaitTimeout", with = "crate::config::units::seconds"]
        pub local_wait_timeout: Duration = Duration::from_secs(5),
    }
}

config_section! {
    /// `woodpecker.client.completion` (ours).
    pub struct CompletionConfig {
        /// Attempts to complete a segment before giving up (a new writer recovers it later).
        #[key = "maxRetries"]
        pub max_retries: u32 = 3,
        /// First backoff between completion attempts (milliseconds).
        #[key = "retryMinBackoff", with = "crate::config::units::millis"]
        pub retry_min_backoff: Duration = Duration::from_millis(500),
        /// Largest backoff between completion attempts (milliseconds).
        #[key = "retryMaxBackoff", with = "crate::config::units::millis"]
        pub retry_max_backoff: Duration = Duration::from_millis(5000),
        /// Time to wait for the quorum's last-add-confirmed to be synced to every replica (seconds).
        #[key = "lacSyncTimeout", with = "crate::config::units::seconds"]
        pub lac_sync_timeout: Duration = Duration::from_secs(30),
    }
}

config_section! {
    /// `woodpecker.client.handleGc` (ours).
    pub struct HandleGcConfig {
        /// How often idle segment handles are looked for (seconds).
        #[key = "interval", with = "crate::config::units::seconds"]
        pub interval: Duration = Duration::from_secs(30),
        /// A segment handle idle this long is closed (seconds).
        #[key = "idleTimeout", with = "crate::config::units::seconds"]
        pub idle_timeout: Duration = Duration::from_secs(60),
    }
}

impl QuorumSelectStrategy {
    /// Ensemble size (`es`) of a new segment's quorum.
    pub fn ensemble_size(&self) -> u32 {
        self.replicas
    }

    /// Write quorum (`wq`): every replica receives every entry.
    pub fn write_quorum(&self) -> u32 {
        self.replicas
    }

    /// Ack quorum (`aq`): a majority of the replicas.
    pub fn ack_quorum(&self) -> u32 {
        self.replicas / 2 + 1
    }
}
