//! Gossip membership of LogStore servers over al8n `memberlist` 0.8 (SWIM with Lifeguard, a port of
//! hashicorp memberlist), behind [`Membership`].
//!
//! # Why this crate
//! `memberlist` (pinned `=0.8.5`, features `tokio`, `tcp`, `crc32` only) maps one-to-one onto what
//! upstream Woodpecker does with hashicorp memberlist (`spec/service-mode.md` §1.5, §5): per-node
//! metadata re-advertised with `update_node`, push/pull state for the load factor, join/update/leave
//! events, a graceful `leave`, SWIM probing that detects a crash in seconds, and TCP + UDP on one
//! port. It is not wire-compatible with the Go servers (nor is any Rust crate); the Go client never
//! joins gossip, so that does not matter. Host names are resolved here with `tokio::net::lookup_host`
//! instead of the crate's `dns` feature (which pulls a whole DNS client in). One 0.8.5 quirk:
//! `join_many`'s future is not `Send` (a `RefCell` inside), so seeds are joined one `join` at a time.
//!
//! # What is enforced
//! - **Cluster isolation, twice.** Every packet and stream carries the cluster name as memberlist's
//!   label, so a node of another cluster cannot even complete a join; and every alive message, merge
//!   and push/pull state is decoded and dropped unless its `NodeMeta.cluster_name` is ours and its
//!   `node_id` is the gossip name (`AliveDelegate` / `MergeDelegate`).
//! - **Metadata never exceeds the limit.** memberlist panics when `node_meta` returns more than
//!   [`META_MAX_SIZE`] (512) bytes. The encoded size is checked here before the crate ever sees it,
//!   counting `version`, `last_update`, `load_factor` and `load_updated_at` at their largest encodings,
//!   so later version bumps and load reports cannot grow past the limit either. Too large →
//!   [`MembershipError::MetaTooLarge`] at [`Gossip::start`] / [`Membership::update_local`].
//! - **One member per name; a restart replaces its old incarnation.** memberlist keeps one state per
//!   name ordered by incarnation: a `leave`/`dead` about an old incarnation carries a lower
//!   incarnation than the restarted node (which refutes what peers tell it about its past) and is
//!   ignored. A node that left may come back at once on a new address; one that crashed may come back
//!   on a new address once peers declared it dead plus [`GossipTimings::dead_node_reclaim_time`].
//!   Until then peers refuse the new address as a name conflict; both sides then act so that the
//!   restarted node is accepted about `dead_node_reclaim_time` after the old one was declared dead,
//!   not one push/pull interval later: a peer remembers the claimant's address and, once the old
//!   incarnation is dead and reclaimable, pulls the claimant's state itself; and the restarted node,
//!   seeing a peer still hold its old address, pushes its state to the seeds again.
//! - **Seeds are re-joined forever.** A named, cancellable task (`gossip_seed_rejoin`) joins every seed
//!   missing from the live view: at start, then after a failure with a backoff from
//!   [`GossipTimings::rejoin_backoff_initial`] doubling to [`GossipTimings::rejoin_backoff_max`], and
//!   every [`GossipTimings::seed_check_interval`] once all are present. A node started before its seeds
//!   joins when they come up; after a partition heals, the sides re-merge through the seeds (each side
//!   declared the other's seeds dead, so they are missing again). Seeds are `host:port`, resolved on every
//!   attempt (pods change addresses); a seed that resolves to our own address is skipped.
//!
//! # Timings (defaults; [`GossipTimings`])
//! | knob | value | why |
//! |---|---|---|
//! | gossip interval / fan-out | 200 ms / 3 | upstream's values |
//! | probe interval / timeout | 400 ms / 200 ms | LAN RTTs are < 1 ms; a crash is seen in a few seconds |
//! | suspicion multiplier / max multiplier | 4 / 6 | suspect → dead after 4 × max(1, log10(n)) × 400 ms (1.6 s below 10 nodes); up to 6× that while other nodes have not confirmed the suspicion |
//! | push/pull interval | 10 s | full-state anti-entropy; carries the load factor |
//! | TCP timeout | 3 s | joins and push/pull to a black-holed address fail fast |
//! | dead node reclaim time | 1 s | a crashed node's name may be reused on a new address 1 s after it was declared dead |
//! | gossip to the dead / view retention | 30 s | how long dead members are still told and listed |
//! | seed re-join backoff | 0.5 s doubling to 5 s; 5 s checks once all seeds are present | upstream: 0.5 s after a failure, up to 10 s |
//!
//! With these, a crashed node (no `leave`) leaves the others' [`Membership::live_nodes`] after at most
//! about 2 probe intervals to be probed + 1 probe round + 1.6 s of suspicion ≈ 3 s in a small cluster
//! (≤ 9 nodes); a node that calls [`Membership::leave`] is gone within one gossip round or two.
//! Measured on loopback (`tests/gossip.rs`): crash ≈ 2.5 s, leave ≈ 0.3 s, a crashed node restarted
//! on a new address is accepted ≈ 1.3 s after its old incarnation was declared dead.
//!
//! # Lifecycle
//! [`Gossip::start`] binds TCP and UDP on `bind_addr` and spawns the seed task, owned by the returned
//! [`Gossip`]. Shutdown order: the owner calls [`Membership::leave`] (broadcast leave, stop the seed
//! task, shut memberlist down). Cancelling the token given to `start`, calling [`Gossip::shutdown`] or
//! dropping the [`Gossip`] stops without a leave — to peers that looks like a crash.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use memberlist::bytes::Bytes;
use memberlist::delegate::{
    AliveDelegate, ConflictDelegate, Delegate, EventDelegate, MergeDelegate, NodeDelegate, PingDelegate,
};
use memberlist::error::Error as MlError;
use memberlist::net::NetTransportOptions;
use memberlist::proto::{ChecksumAlgorithm, Label, MaybeResolvedAddress, Meta, NodeState};
use memberlist::tokio::{TokioNetTransport, TokioSocketAddrResolver, TokioTcp};
use memberlist::{META_MAX_SIZE, Options};
use prost::Message;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;
use woodpecker_proto::logstore::NodeMeta;

use crate::membership::{Member, Membership, MembershipError, MetaChange};

/// Name of the background task that (re-)joins the seeds; also its tracing span.
pub const SEED_REJOIN_TASK: &str = "gossip_seed_rejoin";

type NodeId = Arc<str>;
type Transport = TokioNetTransport<NodeId, TokioSocketAddrResolver, TokioTcp>;
type Memberlist = memberlist::Memberlist<Transport, GossipDelegate>;

/// How to join the gossip cluster (the server's `--node-name`, `--gossip-port`, `--seeds`, ...).
#[derive(Debug, Clone)]
pub struct GossipConfig {
    /// Unique, stable gossip name (`--node-name`); becomes `meta.node_id`.
    pub node_name: String,
    /// Where to listen, TCP and UDP on the same port (`0.0.0.0:--gossip-port`; port 0 picks one).
    pub bind_addr: SocketAddr,
    /// `host:port` peers dial (`--advertise-gossip-addr`), resolved at start; `None` = the bound
    /// address (or a private interface address when bound to `0.0.0.0`).
    pub advertise_addr: Option<String>,
    /// Gossip addresses (`host:port`) to join (`--seeds`); may include this node itself.
    pub seeds: Vec<String>,
    /// Cluster name (`--cluster`); nodes of another cluster are rejected. 1..=253 bytes.
    pub cluster_name: String,
    /// What to advertise. `node_id` and `cluster_name` may be left empty (filled from the fields
    /// above); `last_update` is set at start.
    pub meta: NodeMeta,
    /// Protocol timings.
    pub timings: GossipTimings,
}

/// Timings of the gossip protocol and of the seed task; [`Default`] is tuned for a LAN.
#[derive(Debug, Clone, PartialEq)]
pub struct GossipTimings {
    /// How often to gossip queued messages.
    pub gossip_interval: Duration,
    /// How many random nodes to gossip to each interval.
    pub gossip_nodes: usize,
    /// How often to probe one node for liveness.
    pub probe_interval: Duration,
    /// How long to wait for a direct probe's ack before asking others; less than `probe_interval`.
    pub probe_timeout: Duration,
    /// Suspicion lasts `suspicion_mult × max(1, log10(n)) × probe_interval` once confirmed.
    pub suspicion_mult: usize,
    /// Upper bound of an unconfirmed suspicion, as a multiple of the confirmed one.
    pub suspicion_max_timeout_mult: usize,
    /// How often to exchange full state (and load) with one random node.
    pub push_pull_interval: Duration,
    /// TCP connect / exchange timeout (joins, push/pull, fallback pings).
    pub tcp_timeout: Duration,
    /// How long after a node was declared dead its name may be claimed from another address.
    pub dead_node_reclaim_time: Duration,
    /// How long dead nodes are still gossiped to, and listed by [`Membership::members`].
    pub gossip_to_the_dead_time: Duration,
    /// First wait after a failed seed join; doubles on each further failure.
    pub rejoin_backoff_initial: Duration,
    /// Longest wait between failed seed joins.
    pub rejoin_backoff_max: Duration,
    /// Wait between seed checks while every seed is present.
    pub seed_check_interval: Duration,
    /// How long `update_local` waits for its broadcast to go out.
    pub update_timeout: Duration,
    /// How long to retry resolving `advertise_addr` at start (a pod's own name may lag).
    pub advertise_resolve_timeout: Duration,
}

impl Default for GossipTimings {
    fn default() -> Self {
        Self {
            gossip_interval: Duration::from_millis(200),
            gossip_nodes: 3,
            probe_interval: Duration::from_millis(400),
            probe_timeout: Duration::from_millis(200),
            suspicion_mult: 4,
            suspicion_max_timeout_mult: 6,
            push_pull_interval: Duration::from_secs(10),
            tcp_timeout: Duration::from_secs(3),
            dead_node_reclaim_time: Duration::from_secs(1),
            gossip_to_the_dead_time: Duration::from_secs(30),
            rejoin_backoff_initial: Duration::from_millis(500),
            rejoin_backoff_max: Duration::from_secs(5),
            seed_check_interval: Duration::from_secs(5),
            update_timeout: Duration::from_secs(5),
            advertise_resolve_timeout: Duration::from_secs(30),
        }
    }
}

impl GossipTimings {
    fn validate(&self) -> Result<(), MembershipError> {
        let positive = [
            ("gossip_interval", self.gossip_interval),
            ("probe_interval", self.probe_interval),
            ("probe_timeout", self.probe_timeout),
            ("push_pull_interval", self.push_pull_interval),
            ("tcp_timeout", self.tcp_timeout),
            ("dead_node_reclaim_time", self.dead_node_reclaim_time),
            ("gossip_to_the_dead_time", self.gossip_to_the_dead_time),
            ("rejoin_backoff_initial", self.rejoin_backoff_initial),
            ("rejoin_backoff_max", self.rejoin_backoff_max),
            ("seed_check_interval", self.seed_check_interval),
            ("update_timeout", self.update_timeout),
        ];
        if let Some((name, _)) = positive.iter().find(|(_, d)| d.is_zero()) {
            return Err(MembershipError::InvalidConfig(format!("timing `{name}` must be greater than zero")));
        }
        if self.probe_timeout >= self.probe_interval {
            return Err(MembershipError::InvalidConfig(format!(
                "probe_timeout ({:?}) must be less than probe_interval ({:?})",
                self.probe_timeout, self.probe_interval
            )));
        }
        if self.rejoin_backoff_initial > self.rejoin_backoff_max {
            return Err(MembershipError::InvalidConfig(format!(
                "rejoin_backoff_initial ({:?}) must not exceed rejoin_backoff_max ({:?})",
                self.rejoin_backoff_initial, self.rejoin_backoff_max
            )));
        }
        if self.gossip_nodes == 0 || self.suspicion_mult == 0 || self.suspicion_max_timeout_mult == 0 {
            return Err(MembershipError::InvalidConfig(
                "gossip_nodes, suspicion_mult and suspicion_max_timeout_mult must be at least 1".to_owned(),
            ));
        }
        Ok(())
    }
}

/// Encoded size of `meta` with every field this crate rewrites (version, timestamps, load) at its
/// largest encoding: if this fits, no later bump or load report can push the meta over the limit.
pub fn worst_case_meta_size(meta: &NodeMeta) -> usize {
    let mut worst = meta.clone();
    worst.version = i64::MAX;
    worst.last_update = i64::MAX;
    worst.load_factor = 1.0;
    worst.load_updated_at = i64::MAX;
    worst.encoded_len()
}

fn check_meta_size(meta: &NodeMeta) -> Result<(), MembershipError> {
    let size = worst_case_meta_size(meta);
    if size > META_MAX_SIZE {
        return Err(MembershipError::MetaTooLarge { size, limit: META_MAX_SIZE });
    }
    Ok(())
}

fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX)).unwrap_or(0)
}

/// Locks a std mutex; a panic while it was held (in a caller's closure) leaves consistent data.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// The local metadata and its encoding (always within [`META_MAX_SIZE`]).
struct LocalMeta {
    meta: NodeMeta,
    encoded: Bytes,
}

impl LocalMeta {
    fn new(meta: NodeMeta) -> Self {
        let encoded = Bytes::from(meta.encode_to_vec());
        Self { meta, encoded }
    }
}

struct ViewEntry {
    member: Member,
    /// When `alive` last changed; non-alive entries are dropped after the retention.
    since: Instant,
}

/// State shared by [`Gossip`], its delegate (called from memberlist's tasks) and the seed task.
struct Shared {
    node_name: String,
    cluster_name: String,
    local: Mutex<LocalMeta>,
    view: Mutex<HashMap<String, ViewEntry>>,
    dead_retention: Duration,
    /// A join to at least one seed succeeded.
    joined_seed: AtomicBool,
    /// No seed other than ourselves is configured, or we are one of the seeds.
    bootstrap_member: AtomicBool,
    /// A peer still holds this node's name at another address (an old incarnation): push our state
    /// to the seeds again.
    rejoin_wanted: AtomicBool,
    /// Addresses that claimed a member's name while that member was still alive here (a restart on
    /// a new address); pulled from once the old incarnation is dead and reclaimable.
    claimants: Mutex<HashMap<String, SocketAddr>>,
    /// To the seed task: pull state from this claimant once its name is reclaimable.
    pull_claimant: tokio::sync::mpsc::UnboundedSender<SocketAddr>,
    stopped: AtomicBool,
}

/// Why a node's gossip was not admitted.
#[derive(Debug, thiserror::Error)]
#[error("node `{name}` not admitted: {reason}")]
pub struct Rejected {
    name: String,
    reason: String,
}

impl Shared {
    /// Decodes a peer's metadata and checks that it belongs to this cluster under its gossip name.
    fn admit(&self, name: &str, meta: &[u8]) -> Result<NodeMeta, Rejected> {
        let reject = |reason: String| Rejected { name: name.to_owned(), reason };
        let decoded =
            NodeMeta::decode(meta).map_err(|e| reject(format!("metadata is not a NodeMeta protobuf: {e}")))?;
        if decoded.cluster_name != self.cluster_name {
            return Err(reject(format!("cluster `{}` is not ours (`{}`)", decoded.cluster_name, self.cluster_name)));
        }
        if decoded.node_id != name {
            return Err(reject(format!("metadata node_id `{}` differs from the gossip name", decoded.node_id)));
        }
        Ok(decoded)
    }

    fn upsert_alive(&self, node: &NodeState<NodeId, SocketAddr>) {
        let name: &str = node.id();
        let mut meta = match self.admit(name, node.meta()) {
            Ok(meta) => meta,
            Err(e) => {
                // Unreachable in practice: the alive delegate already refused such nodes.
                tracing::warn!(error = %e, "ignoring membership event");
                return;
            }
        };
        lock(&self.claimants).remove(name);
        let mut view = lock(&self.view);
        if let Some(old) = view.get(name)
            && old.member.meta.load_updated_at > meta.load_updated_at
        {
            // Push/pull brought a fresher load than this re-advertisement carries.
            meta.load_factor = old.member.meta.load_factor;
            meta.load_updated_at = old.member.meta.load_updated_at;
        }
        let since = match view.get(name) {
            Some(old) if old.member.alive => old.since,
            _ => Instant::now(),
        };
        view.insert(
            name.to_owned(),
            ViewEntry {
                member: Member { name: name.to_owned(), gossip_addr: *node.address(), meta, alive: true },
                since,
            },
        );
    }

    fn mark_gone(&self, node: &NodeState<NodeId, SocketAddr>) {
        let name: &str = node.id();
        let mut view = lock(&self.view);
        if let Some(entry) = view.get_mut(name)
            && entry.member.alive
        {
            entry.member.alive = false;
            entry.since = Instant::now();
        }
        drop(view);
        let claimant = lock(&self.claimants).remove(name);
        if let Some(addr) = claimant {
            // The restarted node at `addr` is not told about this death (we do not list it), so
            // fetch its state ourselves once the name is reclaimable.
            let _ = self.pull_claimant.send(addr);
        }
    }

    /// Another address claims `name`: remember it, or pull from it at once if the member is
    /// already dead here (its claim is refused only until the reclaim time has passed).
    fn claimed(&self, name: &str, addr: SocketAddr) {
        let dead_here = lock(&self.view).get(name).is_some_and(|e| !e.member.alive);
        if dead_here {
            let _ = self.pull_claimant.send(addr);
        } else {
            lock(&self.claimants).insert(name.to_owned(), addr);
        }
    }

    /// Takes a fresher load factor from a peer's push/pull state.
    fn merge_load(&self, remote: &NodeMeta) {
        let mut view = lock(&self.view);
        if let Some(entry) = view.get_mut(&remote.node_id)
            && entry.member.alive
            && remote.load_updated_at > entry.member.meta.load_updated_at
        {
            entry.member.meta.load_factor = remote.load_factor;
            entry.member.meta.load_updated_at = remote.load_updated_at;
        }
    }

    fn prune(&self, view: &mut HashMap<String, ViewEntry>) {
        let retention = self.dead_retention;
        view.retain(|_, e| e.member.alive || e.since.elapsed() < retention);
    }

    fn members(&self) -> Vec<Member> {
        let stopped = self.stopped.load(Ordering::Acquire);
        let mut view = lock(&self.view);
        self.prune(&mut view);
        let mut members: Vec<Member> = view
            .values()
            .map(|e| {
                let mut m = e.member.clone();
                m.alive &= !stopped;
                m
            })
            .collect();
        members.sort_by(|a, b| a.name.cmp(&b.name));
        members
    }

    /// Alive peers (not ourselves) and their gossip addresses.
    fn live_peer_addrs(&self) -> Vec<(String, SocketAddr)> {
        lock(&self.view)
            .values()
            .filter(|e| e.member.alive && e.member.name != self.node_name)
            .map(|e| (e.member.name.clone(), e.member.gossip_addr))
            .collect()
    }
}

/// memberlist's hooks, all forwarded to [`Shared`].
struct GossipDelegate {
    shared: Arc<Shared>,
}

impl NodeDelegate for GossipDelegate {
    async fn node_meta(&self, limit: usize) -> Meta {
        let encoded = lock(&self.shared.local).encoded.clone();
        // Every stored encoding passed `check_meta_size`, so neither branch below is an over-limit
        // meta reaching memberlist (which would panic).
        if encoded.len() > limit {
            tracing::error!(size = encoded.len(), limit, "local node metadata over the gossip limit; advertising none");
            return Meta::empty();
        }
        match Meta::try_from(encoded) {
            Ok(meta) => meta,
            Err(e) => {
                tracing::error!(error = %e, "local node metadata over the gossip limit; advertising none");
                Meta::empty()
            }
        }
    }

    async fn local_state(&self, _join: bool) -> Bytes {
        lock(&self.shared.local).encoded.clone()
    }

    async fn merge_remote_state(&self, buf: &[u8], _join: bool) {
        match NodeMeta::decode(buf) {
            Ok(remote) if remote.cluster_name == self.shared.cluster_name => self.shared.merge_load(&remote),
            Ok(remote) => tracing::warn!(
                node = %remote.node_id,
                cluster = %remote.cluster_name,
                "ignoring push/pull state of another cluster"
            ),
            Err(e) => tracing::warn!(error = %e, "ignoring undecodable push/pull state"),
        }
    }
}

impl AliveDelegate for GossipDelegate {
    type Id = NodeId;
    type Address = SocketAddr;
    type Error = Rejected;

    async fn notify_alive(&self, peer: Arc<NodeState<NodeId, SocketAddr>>) -> Result<(), Rejected> {
        self.shared.admit(peer.id(), peer.meta()).map(|_| ())
    }
}

impl MergeDelegate for GossipDelegate {
    type Id = NodeId;
    type Address = SocketAddr;
    type Error = Rejected;

    async fn notify_merge(&self, peers: Arc<[NodeState<NodeId, SocketAddr>]>) -> Result<(), Rejected> {
        for peer in peers.iter() {
            self.shared.admit(peer.id(), peer.meta())?;
        }
        Ok(())
    }
}

impl EventDelegate for GossipDelegate {
    type Id = NodeId;
    type Address = SocketAddr;

    async fn notify_join(&self, node: Arc<NodeState<NodeId, SocketAddr>>) {
        tracing::info!(node = %node.id(), addr = %node.address(), "gossip member joined");
        self.shared.upsert_alive(&node);
    }

    async fn notify_leave(&self, node: Arc<NodeState<NodeId, SocketAddr>>) {
        tracing::info!(node = %node.id(), addr = %node.address(), state = %node.state(), "gossip member gone");
        self.shared.mark_gone(&node);
    }

    async fn notify_update(&self, node: Arc<NodeState<NodeId, SocketAddr>>) {
        tracing::debug!(node = %node.id(), "gossip member updated");
        self.shared.upsert_alive(&node);
    }
}

impl ConflictDelegate for GossipDelegate {
    type Id = NodeId;
    type Address = SocketAddr;

    async fn notify_conflict(
        &self,
        existing: Arc<NodeState<NodeId, SocketAddr>>,
        other: Arc<NodeState<NodeId, SocketAddr>>,
    ) {
        if **existing.id() == *self.shared.node_name {
            // A peer still believes our name lives at `other` (our previous incarnation, not yet
            // declared dead there): keep pushing our state until it accepts the new address.
            tracing::info!(old_addr = %other.address(), "a peer still holds this node's previous address");
            self.shared.rejoin_wanted.store(true, Ordering::Release);
        } else {
            tracing::warn!(
                node = %existing.id(),
                known = %existing.address(),
                claimed = %other.address(),
                "two addresses claim one node name; keeping the known one until it is dead"
            );
            self.shared.claimed(existing.id(), *other.address());
        }
    }
}

impl PingDelegate for GossipDelegate {
    type Id = NodeId;
    type Address = SocketAddr;

    async fn ack_payload(&self) -> Bytes {
        Bytes::new()
    }

    async fn notify_ping_complete(&self, _node: Arc<NodeState<NodeId, SocketAddr>>, _rtt: Duration, _payload: Bytes) {}
}

impl Delegate for GossipDelegate {
    type Id = NodeId;
    type Address = SocketAddr;
}

/// [`Membership`] over memberlist; see the module docs for invariants and timings.
pub struct Gossip {
    ml: Memberlist,
    shared: Arc<Shared>,
    timings: GossipTimings,
    advertise: SocketAddr,
    /// Cancels the seed task, which then shuts memberlist down (child of the owner's token).
    cancel: CancellationToken,
    seed_task: Mutex<Option<JoinHandle<()>>>,
    /// Serialises `update_local` (version bumps in order) and `leave`.
    lifecycle: tokio::sync::Mutex<()>,
}

impl Gossip {
    /// Binds the gossip port, advertises `config.meta` and starts joining the seeds in the background.
    ///
    /// Fails on an unusable configuration, metadata over the limit, an advertise address that does not
    /// resolve within `advertise_resolve_timeout`, or a port that cannot be bound. Cancelling
    /// `shutdown` stops gossip without a leave.
    pub async fn start(config: GossipConfig, shutdown: CancellationToken) -> Result<Self, MembershipError> {
        let GossipConfig { node_name, bind_addr, advertise_addr, seeds, cluster_name, mut meta, timings } = config;
        timings.validate()?;
        if node_name.is_empty() {
            return Err(MembershipError::InvalidConfig("node name must not be empty".into()));
        }
        let label = Label::try_from(cluster_name.as_str())
            .map_err(|e| MembershipError::InvalidConfig(format!("cluster name `{cluster_name}`: {e}")))?;
        if cluster_name.is_empty() {
            return Err(MembershipError::InvalidConfig("cluster name must not be empty".into()));
        }
        if meta.node_id.is_empty() {
            meta.node_id = node_name.clone();
        } else if meta.node_id != node_name {
            return Err(MembershipError::InvalidConfig(format!(
                "meta.node_id `{}` differs from node name `{node_name}`",
                meta.node_id
            )));
        }
        if meta.cluster_name.is_empty() {
            meta.cluster_name = cluster_name.clone();
        } else if meta.cluster_name != cluster_name {
            return Err(MembershipError::InvalidConfig(format!(
                "meta.cluster_name `{}` differs from cluster name `{cluster_name}`",
                meta.cluster_name
            )));
        }
        meta.last_update = now_ms();
        check_meta_size(&meta)?;
        for seed in &seeds {
            parse_host_port(seed)?;
        }

        let advertise = match &advertise_addr {
            Some(addr) => Some(resolve_with_retry(addr, bind_addr, timings.advertise_resolve_timeout).await?),
            None => None,
        };

        let (pull_claimant, claimants_rx) = tokio::sync::mpsc::unbounded_channel();
        let shared = Arc::new(Shared {
            node_name: node_name.clone(),
            cluster_name,
            local: Mutex::new(LocalMeta::new(meta)),
            view: Mutex::new(HashMap::new()),
            dead_retention: timings.gossip_to_the_dead_time,
            joined_seed: AtomicBool::new(false),
            bootstrap_member: AtomicBool::new(seeds.is_empty()),
            rejoin_wanted: AtomicBool::new(false),
            claimants: Mutex::new(HashMap::new()),
            pull_claimant,
            stopped: AtomicBool::new(false),
        });

        let mut transport =
            NetTransportOptions::<NodeId, TokioSocketAddrResolver, TokioTcp>::new(NodeId::from(node_name.as_str()));
        transport.add_bind_address(bind_addr);
        let transport = transport.maybe_advertise_address(advertise);
        let options = Options::lan()
            .with_label(label)
            .with_checksum_algo(ChecksumAlgorithm::Crc32)
            .with_gossip_interval(timings.gossip_interval)
            .with_gossip_nodes(timings.gossip_nodes)
            .with_probe_interval(timings.probe_interval)
            .with_probe_timeout(timings.probe_timeout)
            .with_suspicion_mult(timings.suspicion_mult)
            .with_suspicion_max_timeout_mult(timings.suspicion_max_timeout_mult)
            .with_push_pull_interval(timings.push_pull_interval)
            .with_timeout(timings.tcp_timeout)
            .with_dead_node_reclaim_time(timings.dead_node_reclaim_time)
            .with_gossip_to_the_dead_time(timings.gossip_to_the_dead_time);
        let delegate = GossipDelegate { shared: shared.clone() };
        let ml = Memberlist::with_delegate(delegate, transport, options)
            .await
            .map_err(|e| MembershipError::Bind { addr: bind_addr, reason: e.to_string() })?;
        let advertise = *ml.advertise_address();
        tracing::info!(node = %node_name, %bind_addr, %advertise, seeds = ?seeds, "gossip started");

        let cancel = shutdown.child_token();
        let task = SeedRejoin {
            ml: ml.clone(),
            shared: shared.clone(),
            seeds,
            advertise,
            timings: timings.clone(),
            cancel: cancel.clone(),
            claimants: claimants_rx,
        };
        let span = tracing::info_span!(SEED_REJOIN_TASK, node = %node_name);
        let seed_task = tokio::spawn(task.run().instrument(span));

        Ok(Self {
            ml,
            shared,
            timings,
            advertise,
            cancel,
            seed_task: Mutex::new(Some(seed_task)),
            lifecycle: tokio::sync::Mutex::new(()),
        })
    }

    /// The address peers dial for gossip (the actual port when bound to port 0).
    pub fn gossip_addr(&self) -> SocketAddr {
        self.advertise
    }

    /// This node's gossip name.
    pub fn name(&self) -> &str {
        &self.shared.node_name
    }

    /// Stops gossip at once, without a leave: peers detect it by probing, as after a crash.
    /// Idempotent. Prefer [`Membership::leave`] for a planned stop.
    pub async fn shutdown(&self) {
        let _serial = self.lifecycle.lock().await;
        self.stop().await;
    }

    /// Stops the seed task, which shuts memberlist down, and waits for it.
    async fn stop(&self) {
        self.shared.stopped.store(true, Ordering::Release);
        self.cancel.cancel();
        let task = lock(&self.seed_task).take();
        if let Some(task) = task
            && let Err(e) = task.await
        {
            tracing::error!(error = %e, "{SEED_REJOIN_TASK} task failed");
        }
    }
}

impl Drop for Gossip {
    fn drop(&mut self) {
        // The seed task owns memberlist's shutdown; without this it would gossip on forever.
        self.cancel.cancel();
    }
}

#[async_trait]
impl Membership for Gossip {
    fn local(&self) -> NodeMeta {
        lock(&self.shared.local).meta.clone()
    }

    fn members(&self) -> Vec<Member> {
        self.shared.members()
    }

    fn live_nodes(&self) -> Vec<NodeMeta> {
        self.shared.members().into_iter().filter(|m| m.alive).map(|m| m.meta).collect()
    }

    async fn update_local(&self, change: MetaChange) -> Result<(), MembershipError> {
        let _serial = self.lifecycle.lock().await;
        if self.shared.stopped.load(Ordering::Acquire) {
            return Err(MembershipError::Stopped);
        }
        let before = self.local();
        let mut next = before.clone();
        change(&mut next);
        if next.node_id != before.node_id {
            return Err(MembershipError::ImmutableField("node_id"));
        }
        if next.cluster_name != before.cluster_name {
            return Err(MembershipError::ImmutableField("cluster_name"));
        }
        next.version = before.version.saturating_add(1);
        next.last_update = now_ms().max(before.last_update);
        {
            let mut local = lock(&self.shared.local);
            // The load belongs to `report_load`, which may have run meanwhile.
            next.load_factor = local.meta.load_factor;
            next.load_updated_at = local.meta.load_updated_at;
            check_meta_size(&next)?;
            *local = LocalMeta::new(next);
        }
        match self.ml.update_node(self.timings.update_timeout).await {
            Ok(()) => Ok(()),
            Err(MlError::UpdateTimeout) => {
                // Applied locally; push/pull spreads it within one interval even if no gossip went out.
                tracing::warn!(timeout = ?self.timings.update_timeout, "metadata update not broadcast in time; push/pull will spread it");
                Ok(())
            }
            Err(MlError::NotRunning) => Err(MembershipError::Stopped),
            Err(e) => {
                tracing::warn!(error = %e, "metadata update broadcast failed; push/pull will spread it");
                Ok(())
            }
        }
    }

    fn report_load(&self, load_factor: f64) -> Result<(), MembershipError> {
        if !(0.0..=1.0).contains(&load_factor) {
            return Err(MembershipError::InvalidConfig(format!("load factor {load_factor} is outside 0..=1")));
        }
        let now = now_ms();
        let meta = {
            let mut local = lock(&self.shared.local);
            let mut meta = local.meta.clone();
            meta.load_factor = load_factor;
            meta.load_updated_at = now;
            // Within the worst case checked when this meta was stored.
            *local = LocalMeta::new(meta.clone());
            meta
        };
        self.shared.merge_load(&meta);
        Ok(())
    }

    fn joined(&self) -> bool {
        let s = &self.shared;
        !s.stopped.load(Ordering::Acquire)
            && (s.bootstrap_member.load(Ordering::Acquire)
                || s.joined_seed.load(Ordering::Acquire)
                || !s.live_peer_addrs().is_empty())
    }

    async fn leave(&self, timeout: Duration) -> Result<(), MembershipError> {
        let _serial = self.lifecycle.lock().await;
        if self.shared.stopped.load(Ordering::Acquire) {
            return Ok(());
        }
        let left = self.ml.leave(timeout).await;
        self.stop().await;
        match left {
            Ok(_) => Ok(()),
            Err(MlError::LeaveTimeout) => Err(MembershipError::LeaveTimeout(timeout)),
            Err(e) => {
                tracing::warn!(error = %e, "leave broadcast failed; peers will detect the stop by probing");
                Err(MembershipError::LeaveTimeout(timeout))
            }
        }
    }
}

/// Splits `host:port` (IPv6 hosts in brackets).
fn parse_host_port(addr: &str) -> Result<(&str, u16), MembershipError> {
    let invalid =
        |why: &str| MembershipError::InvalidConfig(format!("gossip address `{addr}` is not host:port: {why}"));
    let (host, port) = addr.rsplit_once(':').ok_or_else(|| invalid("no port"))?;
    let port: u16 = port.parse().map_err(|_| invalid("bad port"))?;
    let host = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')).unwrap_or(host);
    if host.is_empty() {
        return Err(invalid("empty host"));
    }
    Ok((host, port))
}

/// Resolves `host:port`, keeping addresses of the same family as `like` when there are any.
async fn resolve(what: &'static str, addr: &str, like: SocketAddr) -> Result<Vec<SocketAddr>, MembershipError> {
    let failed = |reason: String| MembershipError::Resolve { what, addr: addr.to_owned(), reason };
    let all: Vec<SocketAddr> = tokio::net::lookup_host(addr).await.map_err(|e| failed(e.to_string()))?.collect();
    let same_family: Vec<SocketAddr> = all.iter().copied().filter(|a| a.is_ipv4() == like.is_ipv4()).collect();
    let chosen = if same_family.is_empty() { all } else { same_family };
    if chosen.is_empty() {
        return Err(failed("no addresses".into()));
    }
    Ok(chosen)
}

async fn resolve_with_retry(addr: &str, like: SocketAddr, timeout: Duration) -> Result<SocketAddr, MembershipError> {
    let deadline = Instant::now() + timeout;
    loop {
        match resolve("advertise address", addr, like).await {
            Ok(addrs) => {
                if let Some(first) = addrs.first() {
                    return Ok(*first);
                }
            }
            Err(e) if Instant::now() >= deadline => return Err(e),
            Err(e) => tracing::info!(error = %e, "advertise address does not resolve yet; retrying"),
        }
        if Instant::now() >= deadline {
            return Err(MembershipError::Resolve {
                what: "advertise address",
                addr: addr.to_owned(),
                reason: "no addresses".into(),
            });
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// The `gossip_seed_rejoin` task: joins seeds missing from the live view, with backoff, until
/// cancelled; then shuts memberlist down.
struct SeedRejoin {
    ml: Memberlist,
    shared: Arc<Shared>,
    seeds: Vec<String>,
    advertise: SocketAddr,
    timings: GossipTimings,
    cancel: CancellationToken,
    claimants: tokio::sync::mpsc::UnboundedReceiver<SocketAddr>,
}

/// Extra wait after `dead_node_reclaim_time` before pulling from a claimant, so that its claim is
/// past the reclaim time when it arrives.
const RECLAIM_MARGIN: Duration = Duration::from_millis(250);

impl SeedRejoin {
    async fn run(mut self) {
        use tokio::time::Instant;
        let mut backoff = self.timings.rejoin_backoff_initial;
        let mut next_round = Instant::now();
        let mut pulls: Vec<(Instant, SocketAddr)> = Vec::new();
        loop {
            let wake = pulls.iter().map(|(due, _)| *due).fold(next_round, Instant::min);
            tokio::select! {
                () = self.cancel.cancelled() => break,
                Some(addr) = self.claimants.recv() => {
                    pulls.push((Instant::now() + self.timings.dead_node_reclaim_time + RECLAIM_MARGIN, addr));
                    continue;
                }
                () = tokio::time::sleep_until(wake) => {}
            }
            let now = Instant::now();
            let (due, later): (Vec<_>, Vec<_>) = pulls.into_iter().partition(|(at, _)| *at <= now);
            pulls = later;
            for (_, addr) in due {
                // A push/pull with the claimant: it sends its alive state, which we now accept.
                match self.ml.join(MaybeResolvedAddress::Resolved(addr)).await {
                    Ok(_) => tracing::info!(%addr, "pulled the state of a restarted node"),
                    Err(e) => tracing::debug!(%addr, error = %e, "cannot pull from a restarted node"),
                }
            }
            if now >= next_round {
                if self.round().await {
                    backoff = self.timings.rejoin_backoff_initial;
                    next_round = Instant::now() + self.timings.seed_check_interval;
                } else {
                    next_round = Instant::now() + backoff;
                    backoff = (backoff * 2).min(self.timings.rejoin_backoff_max);
                }
            }
        }
        // Whoever cancelled (leave, shutdown, drop or the owner's token), this node is out now.
        self.shared.stopped.store(true, Ordering::Release);
        if let Err(e) = self.ml.shutdown().await {
            tracing::warn!(error = %e, "gossip shutdown reported an error");
        }
        tracing::info!("gossip stopped");
    }

    /// One pass over the seeds; `true` when every seed is present (or was just joined) and no peer
    /// holds our previous address.
    async fn round(&self) -> bool {
        let forced = self.shared.rejoin_wanted.swap(false, Ordering::AcqRel);
        let peers = self.shared.live_peer_addrs();
        let mut all_ok = true;
        let mut others = 0usize;
        let mut targets = Vec::new();
        for seed in &self.seeds {
            let addrs = match resolve("seed", seed, self.advertise).await {
                Ok(addrs) => addrs,
                Err(e) => {
                    tracing::debug!(error = %e, "seed does not resolve yet");
                    all_ok = false;
                    others += 1;
                    continue;
                }
            };
            let host = parse_host_port(seed).map(|(h, _)| h).unwrap_or(seed);
            if addrs.contains(&self.advertise) || host == self.shared.node_name {
                continue; // ourselves
            }
            others += 1;
            let present = peers.iter().any(|(name, addr)| name == host || addrs.contains(addr));
            if forced || !present {
                targets.extend(addrs);
            }
        }
        if others == 0 {
            self.shared.bootstrap_member.store(true, Ordering::Release);
        } else if others < self.seeds.len() {
            // We are one of the seeds: others come to us, so we count as part of the cluster.
            self.shared.bootstrap_member.store(true, Ordering::Release);
        }
        if targets.is_empty() {
            return all_ok;
        }
        let wanted = targets.len();
        // One at a time: `join_many`'s future is not `Send` in memberlist 0.8.5 (a `RefCell` inside).
        let mut joined = Vec::with_capacity(wanted);
        for addr in targets {
            match self.ml.join(MaybeResolvedAddress::Resolved(addr)).await {
                Ok(addr) => joined.push(addr),
                Err(e) => tracing::debug!(seed = %addr, error = %e, "cannot join seed yet"),
            }
        }
        if !joined.is_empty() {
            self.shared.joined_seed.store(true, Ordering::Release);
            tracing::info!(seeds = ?joined, "joined gossip seeds");
        }
        let conflict = self.shared.rejoin_wanted.load(Ordering::Acquire);
        all_ok && joined.len() == wanted && !conflict
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_port_parsing_accepts_names_ipv4_and_bracketed_ipv6() {
        assert_eq!(parse_host_port("node-1:17946").unwrap(), ("node-1", 17946));
        assert_eq!(parse_host_port("10.0.0.1:1").unwrap(), ("10.0.0.1", 1));
        assert_eq!(parse_host_port("[::1]:7946").unwrap(), ("::1", 7946));
        assert!(parse_host_port("node-1").is_err());
        assert!(parse_host_port(":7946").is_err());
        assert!(parse_host_port("node:99999").is_err());
    }

    fn shared(cluster: &str) -> Shared {
        let (pull_claimant, _rx) = tokio::sync::mpsc::unbounded_channel();
        Shared {
            node_name: "a".into(),
            cluster_name: cluster.into(),
            local: Mutex::new(LocalMeta::new(NodeMeta::default())),
            view: Mutex::new(HashMap::new()),
            dead_retention: Duration::from_secs(30),
            joined_seed: AtomicBool::new(false),
            bootstrap_member: AtomicBool::new(false),
            rejoin_wanted: AtomicBool::new(false),
            claimants: Mutex::new(HashMap::new()),
            pull_claimant,
            stopped: AtomicBool::new(false),
        }
    }

    #[test]
    fn admission_refuses_another_cluster_a_renamed_node_and_garbage() {
        // The label already stops other clusters at the transport; this is the second line.
        let s = shared("alpha");
        let meta = |node: &str, cluster: &str| {
            NodeMeta { node_id: node.into(), cluster_name: cluster.into(), ..Default::default() }.encode_to_vec()
        };
        assert!(s.admit("b", &meta("b", "alpha")).is_ok());
        let err = s.admit("b", &meta("b", "beta")).expect_err("other cluster");
        assert!(err.to_string().contains("cluster `beta`"), "{err}");
        let err = s.admit("b", &meta("c", "alpha")).expect_err("node_id differs from the gossip name");
        assert!(err.to_string().contains("node_id `c`"), "{err}");
        assert!(s.admit("b", &[0xff, 0xff, 0xff]).is_err(), "not a protobuf");
    }

    #[test]
    fn worst_case_size_covers_later_bumps_and_load_reports() {
        let meta = NodeMeta { node_id: "n".into(), ..Default::default() };
        let mut grown = meta.clone();
        grown.version = 123_456_789;
        grown.last_update = now_ms();
        grown.load_factor = 0.3;
        grown.load_updated_at = now_ms();
        assert!(grown.encoded_len() <= worst_case_meta_size(&meta));
    }
}
