//! Service mode as an application sees it: a `woodpecker-client` opened with `storage.type: service`
//! against a [`Cluster`] of real `woodpecker server` processes, plus what every service test checks —
//! acknowledgements recorded as they resolve, and a reader that proves every acknowledged entry is read
//! exactly once, in order, and that no entry is returned before its write was acknowledged.
//!
//! Payloads are `<writer tag>-<sequence>`, so a reader can tell which write an entry came from.
#![allow(dead_code)]

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use woodpecker_client::{
    AppendFuture, Client, Config, LogHandle, LogMessage, LogMessageId, LogReader, LogWriter, WoodpeckerError,
    WriteMessage,
};
use woodpecker_meta::{EtcdOptions, MetadataStore};
use woodpecker_proto::logstore::{AffinityMode, NodeFilter, SelectNodesRequest, StrategyType};

use crate::cluster::{Cluster, ClusterOptions, ServerNode};

fn env(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| {
        panic!(
            "{name} is not set: these tests need the real etcd + MinIO test bed. Run \
             `scripts/testbed.sh install && scripts/testbed.sh start && eval \"$(scripts/testbed.sh env)\"`"
        )
    })
}

/// A name unique to this run: the etcd root and the MinIO root path of one test.
pub fn unique(tag: &str) -> String {
    let nanos = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_nanos());
    format!("svc-{tag}-{}-{nanos}", std::process::id())
}

/// Client timings short enough for tests (part of the main config, under `woodpecker.client`): a replica
/// that does not answer is given up on after seconds, not upstream's 30 s, and quorum selection, the
/// auditor and tail polling run often.
const FAST_CLIENT: &str = "    segmentAppend:\n      firstResponseTimeout: 5s\n      ackTimeout: 5s\n    auditor:\n      maxInterval: 2s\n    reader:\n      pollInterval: 50\n";

/// A cluster of `n` nodes plus the etcd root / MinIO prefix of one test.
pub struct Bed {
    pub cluster: Cluster,
    pub root: String,
}

impl Bed {
    /// Starts `n` nodes and waits until node 0 selects from all of them.
    pub async fn start(tag: &str, n: usize) -> Self {
        Self::started(tag, n, Cluster::start(n, &ClusterOptions::default())).await
    }

    /// [`Self::start`] with every node behind a TCP proxy it advertises (for partitions).
    pub async fn start_behind_proxies(tag: &str, n: usize) -> Self {
        Self::started(tag, n, Cluster::start_behind_proxies(n, &ClusterOptions::default())).await
    }

    async fn started(tag: &str, n: usize, cluster: Cluster) -> Self {
        let bed = Self { cluster, root: unique(tag) };
        bed.wait_members(n, Duration::from_secs(30)).await;
        bed
    }

    /// Client config: service storage over every node as a seed, `replicas` = es, then `extra` over it.
    pub fn config(&self, replicas: u32, extra: &str) -> Config {
        let hostport = env("WP_MINIO_ENDPOINT").trim_start_matches("http://").trim_start_matches("https://").to_owned();
        let (host, port) = hostport.rsplit_once(':').expect("MinIO host:port");
        let seeds = self.cluster.endpoints().iter().map(|e| format!("\"{e}\"")).collect::<Vec<_>>().join(", ");
        let main = format!(
            "woodpecker:\n  meta:\n    type: etcd\n    prefix: woodpecker\n  storage:\n    type: service\n  client:\n    quorum:\n      quorumBufferPools:\n        - name: default\n          seeds: [{seeds}]\n      quorumSelectStrategy:\n        replicas: {replicas}\n      selectRetryMaxBackoff: 500\n      selectTimeout: 5000\n{FAST_CLIENT}\
             etcd:\n  endpoints: [{etcd}]\n  rootPath: {root}\n\
             minio:\n  address: {host}\n  port: {port}\n  accessKeyID: {ak}\n  secretAccessKey: {sk}\n  bucketName: {bucket}\n  rootPath: {root}\n",
            etcd = env("WP_ETCD_ENDPOINTS"),
            root = self.root,
            ak = env("WP_MINIO_ACCESS_KEY"),
            sk = env("WP_MINIO_SECRET_KEY"),
            bucket = env("WP_MINIO_BUCKET"),
        );
        Config::from_yaml_with_overlay(&main, extra).expect("service-mode client config")
    }

    /// Opens a client (bounded: a client that cannot open must fail, not hang).
    pub async fn client(&self, replicas: u32, extra: &str) -> Client {
        let cfg = self.config(replicas, extra);
        within(Duration::from_secs(30), "Client::open in service mode", Client::open(cfg))
            .await
            .unwrap_or_else(|e| panic!("Client::open in service mode: {e}"))
    }

    /// Creates log `name` and opens it.
    pub async fn log(&self, client: &Client, name: &str) -> LogHandle {
        within(Duration::from_secs(20), "create_log", client.create_log_if_absent(name)).await.expect("create log");
        within(Duration::from_secs(20), "open_log", client.open_log(name)).await.expect("open log")
    }

    /// The metadata store the client uses, for looking at segment quorums (test-side observation only).
    pub async fn meta(&self) -> MetadataStore {
        let etcd = env("WP_ETCD_ENDPOINTS");
        MetadataStore::open_etcd(&[etcd.as_str()], &self.root, "woodpecker", &EtcdOptions::default())
            .await
            .expect("open the test's etcd metadata")
    }

    /// The nodes (endpoints) of segment `seg` of `log`, in replica order.
    pub async fn quorum(&self, log: &str, seg: i64) -> Vec<String> {
        let m = self.meta().await.get_segment(log, seg).await.unwrap_or_else(|e| panic!("segment {seg} of {log}: {e}"));
        m.value.quorum.map(|q| q.nodes).unwrap_or_default()
    }

    /// The highest segment id of `log` in metadata (None without segments).
    pub async fn last_segment(&self, log: &str) -> Option<i64> {
        let segs = self.meta().await.list_segments(log).await.expect("list segments");
        segs.iter().map(|s| s.value.seg_no).max()
    }

    /// Waits until a running node selects exactly `n` live nodes (gossip converged after a kill/restart).
    pub async fn wait_members(&self, n: usize, limit: Duration) {
        let deadline = Instant::now() + limit;
        loop {
            // Every running node answers SelectNodes from its own gossip view, and a client may ask any.
            let mut views = Vec::new();
            for node in self.cluster.nodes.iter().filter(|n| n.is_running()) {
                let (all, over) = (select(node, n as i32).await, select(node, n as i32 + 1).await);
                views.push((node.name.clone(), all, over));
            }
            // Any node with the full view will do: a client asks the seeds in turn until one can place a
            // quorum. (Requiring every node's view is stricter than clients need: a restarted node 0, the
            // gossip seed started without seeds, was seen to lag for more than 20 s while the others saw it.)
            if views.iter().any(|(_, all, over)| *all == Some(n) && over.is_none()) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "the cluster does not see exactly {n} live nodes within {limit:?}; per node (name, selects {n}, \
                 selects {}): {views:?}",
                n + 1
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Starts the (stopped) nodes at `endpoints` together, then waits until each is ready: a node joins
    /// through node 0's gossip, so node 0 must not wait for the others nor they for it.
    pub fn restart_together(&mut self, endpoints: &[String]) {
        for e in endpoints {
            self.cluster.by_endpoint(e).restart_unready();
        }
        for e in endpoints {
            self.cluster.by_endpoint(e).wait_ready(Duration::from_secs(60));
        }
    }

    /// `endpoints` with node 0 (every node's gossip seed) first.
    pub fn seed_first(&self, endpoints: &[String]) -> Vec<String> {
        let seed = self.cluster.nodes[0].endpoint();
        let mut v = endpoints.to_vec();
        v.sort_by_key(|e| *e != seed);
        v
    }

    /// The node advertising `endpoint`.
    pub fn node(&mut self, endpoint: &str) -> &mut ServerNode {
        self.cluster.by_endpoint(endpoint)
    }
}

/// SelectNodes(limit, hard) on `node`: how many nodes it returned, None on an error status.
async fn select(node: &ServerNode, limit: i32) -> Option<usize> {
    let req = SelectNodesRequest {
        strategy: StrategyType::Random as i32,
        affinity_mode: AffinityMode::Hard as i32,
        filters: vec![NodeFilter { limit, ..NodeFilter::default() }],
    };
    let mut c = tokio::time::timeout(Duration::from_secs(2), node.client()).await.ok()?;
    let r = tokio::time::timeout(Duration::from_secs(2), c.select_nodes(req)).await.ok()?.ok()?.into_inner();
    (r.status.map_or(0, |s| s.code) == 0).then_some(r.nodes.len())
}

/// Awaits `fut` for at most `limit`; a hang fails the test naming `what`.
pub async fn within<T>(limit: Duration, what: &str, fut: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(limit, fut).await.unwrap_or_else(|_| panic!("{what} did not finish within {limit:?}"))
}

/// What became of one write.
#[derive(Debug, Clone)]
pub enum Outcome {
    /// Not resolved yet.
    Pending,
    /// Acknowledged at this position.
    Acked(LogMessageId),
    /// Failed with this error (the entry may or may not be in the log: an ambiguous write).
    Failed(String),
}

#[derive(Debug, Default)]
struct AckState {
    outcomes: Vec<Outcome>,
    submitted_at: Vec<Option<Instant>>,
    resolved_at: Vec<Option<Instant>>,
}

/// The writes of one writer (tag), recorded as they are submitted and as they resolve.
#[derive(Debug)]
pub struct Acks {
    pub tag: String,
    state: Mutex<AckState>,
}

impl Acks {
    /// A recorder for the writer named `tag` (no `-` in it).
    pub fn new(tag: &str) -> Arc<Self> {
        assert!(!tag.contains('-'), "writer tags must not contain '-'");
        Arc::new(Self { tag: tag.to_owned(), state: Mutex::new(AckState::default()) })
    }

    /// Registers the next write; its sequence number and message.
    pub fn submit(&self) -> (usize, WriteMessage) {
        let mut s = self.state.lock().unwrap();
        let seq = s.outcomes.len();
        s.outcomes.push(Outcome::Pending);
        s.submitted_at.push(Some(Instant::now()));
        s.resolved_at.push(None);
        (seq, WriteMessage::new(format!("{}-{seq:08}", self.tag)))
    }

    /// Records how write `seq` resolved.
    pub fn resolve(&self, seq: usize, r: &Result<LogMessageId, WoodpeckerError>) {
        let mut s = self.state.lock().unwrap();
        s.outcomes[seq] = match r {
            Ok(id) => Outcome::Acked(*id),
            Err(e) => Outcome::Failed(e.to_string()),
        };
        s.resolved_at[seq] = Some(Instant::now());
    }

    /// The outcome of write `seq`.
    pub fn outcome(&self, seq: usize) -> Option<Outcome> {
        self.state.lock().unwrap().outcomes.get(seq).cloned()
    }

    /// (sequence, position) of every acknowledged write, in sequence order.
    pub fn acked(&self) -> Vec<(usize, LogMessageId)> {
        let s = self.state.lock().unwrap();
        s.outcomes
            .iter()
            .enumerate()
            .filter_map(|(i, o)| match o {
                Outcome::Acked(id) => Some((i, *id)),
                _ => None,
            })
            .collect()
    }

    /// (sequence, error) of every failed write.
    pub fn failed(&self) -> Vec<(usize, String)> {
        let s = self.state.lock().unwrap();
        s.outcomes
            .iter()
            .enumerate()
            .filter_map(|(i, o)| match o {
                Outcome::Failed(e) => Some((i, e.clone())),
                _ => None,
            })
            .collect()
    }

    /// Sequences still unresolved.
    pub fn pending(&self) -> Vec<usize> {
        let s = self.state.lock().unwrap();
        s.outcomes.iter().enumerate().filter(|(_, o)| matches!(o, Outcome::Pending)).map(|(i, _)| i).collect()
    }

    /// Writes submitted so far.
    pub fn submitted(&self) -> usize {
        self.state.lock().unwrap().outcomes.len()
    }

    /// The longest time between two consecutive acknowledgements (in resolution order), and when the
    /// first of the two was.
    pub fn longest_ack_gap(&self) -> Duration {
        let s = self.state.lock().unwrap();
        let mut times: Vec<Instant> = s
            .outcomes
            .iter()
            .zip(&s.resolved_at)
            .filter_map(|(o, t)| matches!(o, Outcome::Acked(_)).then_some(*t).flatten())
            .collect();
        times.sort();
        times.windows(2).map(|w| w[1] - w[0]).max().unwrap_or_default()
    }

    /// Submit-to-ack latency of every acknowledged write, sorted.
    pub fn latencies(&self) -> Vec<Duration> {
        self.latencies_in(0..usize::MAX)
    }

    /// Submit-to-ack latency of the acknowledged writes with sequence numbers in `seqs`, sorted.
    pub fn latencies_in(&self, seqs: std::ops::Range<usize>) -> Vec<Duration> {
        let s = self.state.lock().unwrap();
        let mut l: Vec<Duration> = s
            .outcomes
            .iter()
            .enumerate()
            .filter(|(i, _)| seqs.contains(i))
            .filter_map(|(i, o)| match (o, s.submitted_at[i], s.resolved_at[i]) {
                (Outcome::Acked(_), Some(a), Some(b)) => Some(b - a),
                _ => None,
            })
            .collect();
        l.sort();
        l
    }
}

/// The `q`-quantile of sorted durations.
pub fn quantile(sorted: &[Duration], q: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = ((sorted.len() as f64 - 1.0) * q).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

/// Writes one entry and waits for it (at most `limit`; longer is a hang and fails the test).
pub async fn write_one(w: &LogWriter, acks: &Acks, limit: Duration) -> Result<LogMessageId, WoodpeckerError> {
    let (seq, msg) = acks.submit();
    let r = match tokio::time::timeout(limit, w.write(msg)).await {
        Ok(r) => r,
        Err(_) => panic!("write {}-{seq} neither acknowledged nor failed within {limit:?} (a hang)", acks.tag),
    };
    acks.resolve(seq, &r);
    r
}

/// Writes `n` entries one at a time; every one must be acknowledged.
pub async fn write_acked(w: &LogWriter, acks: &Acks, n: usize, limit: Duration) -> Vec<LogMessageId> {
    let mut ids = Vec::with_capacity(n);
    for _ in 0..n {
        match write_one(w, acks, limit).await {
            Ok(id) => ids.push(id),
            Err(e) => panic!("write {}-{} failed: {e}", acks.tag, acks.submitted() - 1),
        }
    }
    ids
}

/// Writes until `n` more entries are acknowledged, tolerating failures (each failed write is recorded as
/// ambiguous); reopens the writer through `reopen` when it is lost. Fails after `attempts` writes.
pub async fn write_until_acked(
    w: &mut LogWriter,
    log: &LogHandle,
    acks: &Acks,
    n: usize,
    attempts: usize,
    limit: Duration,
) -> usize {
    let mut ok = 0;
    let mut failures = Vec::new();
    for _ in 0..attempts {
        if ok == n {
            break;
        }
        match write_one(w, acks, limit).await {
            Ok(_) => ok += 1,
            Err(e) => {
                let lost = e.is_writer_lost();
                failures.push(e.to_string());
                if lost {
                    *w = within(Duration::from_secs(60), "reopen writer", log.open_writer())
                        .await
                        .unwrap_or_else(|e| panic!("reopening the writer after {failures:?}: {e}"));
                } else {
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            }
        }
    }
    assert_eq!(ok, n, "only {ok} of {n} writes acknowledged in {attempts} attempts; failures: {failures:?}");
    if !failures.is_empty() {
        eprintln!("[{}] {} failed writes before {n} were acknowledged: {failures:?}", acks.tag, failures.len());
    }
    ok
}

/// A writer writing continuously in the background, every write recorded.
pub struct Pump {
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
    resolver: JoinHandle<()>,
    pub acks: Arc<Acks>,
}

impl Pump {
    /// Submits a write every `every` (write_async: queued without waiting for its ack), resolving them in
    /// order in a second task; each ack must resolve within `ack_limit`. Stops submitting when the writer
    /// is lost.
    pub fn start(writer: Arc<LogWriter>, acks: Arc<Acks>, every: Duration, ack_limit: Duration) -> Self {
        let (stop, mut stopped) = watch::channel(false);
        let (tx, mut rx) = mpsc::unbounded_channel::<(usize, AppendFuture)>();
        let a = acks.clone();
        let resolver = tokio::spawn(async move {
            while let Some((seq, fut)) = rx.recv().await {
                match tokio::time::timeout(ack_limit, fut).await {
                    Ok(r) => a.resolve(seq, &r),
                    Err(_) => panic!("write {}-{seq} neither acknowledged nor failed within {ack_limit:?}", a.tag),
                }
            }
        });
        let a = acks.clone();
        let task = tokio::spawn(async move {
            loop {
                if *stopped.borrow() {
                    break;
                }
                let (seq, msg) = a.submit();
                match tokio::time::timeout(ack_limit, writer.write_async(msg)).await {
                    Ok(Ok(fut)) => {
                        let _ = tx.send((seq, fut));
                    }
                    Ok(Err(e)) => {
                        let lost = e.is_writer_lost();
                        a.resolve(seq, &Err(e));
                        if lost {
                            break;
                        }
                    }
                    Err(_) => panic!("write_async {}-{seq} not accepted within {ack_limit:?}", a.tag),
                }
                tokio::select! {
                    _ = stopped.changed() => {}
                    () = tokio::time::sleep(every) => {}
                }
            }
        });
        Self { stop, task, resolver, acks }
    }

    /// Stops submitting and waits until every submitted write resolved (bounded).
    pub async fn stop(self, limit: Duration) -> Arc<Acks> {
        let _ = self.stop.send(true);
        let tag = self.acks.tag.clone();
        within(limit, &format!("pump {tag} stopping"), self.task).await.unwrap_or_else(|e| panic!("pump {tag}: {e}"));
        within(limit, &format!("acks of pump {tag}"), self.resolver)
            .await
            .unwrap_or_else(|e| panic!("ack resolver of {tag}: {e}"));
        self.acks
    }

    /// Whether the pump stopped by itself (its writer was lost).
    pub fn finished(&self) -> bool {
        self.task.is_finished()
    }

    /// Acknowledged writes so far.
    pub fn acked(&self) -> usize {
        self.acks.acked().len()
    }

    /// Waits until `n` more writes than now are acknowledged.
    pub async fn wait_more_acks(&self, n: usize, limit: Duration) {
        let target = self.acked() + n;
        let deadline = Instant::now() + limit;
        while self.acked() < target {
            assert!(
                Instant::now() < deadline,
                "pump {}: only {} of {target} writes acknowledged within {limit:?}; failed: {:?}",
                self.acks.tag,
                self.acked(),
                self.acks.failed().into_iter().take(3).collect::<Vec<_>>()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// One entry a reader returned.
#[derive(Debug, Clone)]
pub struct ReadEntry {
    pub tag: String,
    pub seq: usize,
    pub id: LogMessageId,
    /// Whether its write was acknowledged (false: the write failed, an ambiguous entry).
    pub acked: bool,
}

/// Checks what a reader returns against the writers' records.
pub struct Checker {
    writers: HashMap<String, Arc<Acks>>,
    /// Entries whose write failed may be in the log (the error was ambiguous); when false they must not.
    pub allow_failed: bool,
    /// How long an entry's write may take to be recorded as acknowledged after a reader returned it
    /// (the reader sees the LAC the writer pushes after the ack; the recorder task runs a little later).
    pub grace: Duration,
    seen: HashSet<(String, usize)>,
    last_id: Option<LogMessageId>,
    last_seq: HashMap<String, usize>,
    pub read: Vec<ReadEntry>,
    pub name: String,
}

impl Checker {
    /// A checker for entries of `writers`.
    pub fn new(name: &str, writers: &[&Arc<Acks>]) -> Self {
        Self {
            writers: writers.iter().map(|a| (a.tag.clone(), Arc::clone(a))).collect(),
            allow_failed: true,
            grace: Duration::from_secs(5),
            seen: HashSet::new(),
            last_id: None,
            last_seq: HashMap::new(),
            read: Vec::new(),
            name: name.to_owned(),
        }
    }

    /// Checks one returned message: known writer, not seen before, after the previous one, and
    /// acknowledged (or an ambiguous failed write when allowed) at exactly this position.
    pub async fn check(&mut self, m: &LogMessage) {
        let text = String::from_utf8_lossy(&m.payload).to_string();
        let (tag, seq) = text
            .rsplit_once('-')
            .and_then(|(t, s)| s.parse::<usize>().ok().map(|s| (t.to_owned(), s)))
            .unwrap_or_else(|| panic!("[{}] entry at {} has a payload no test wrote: {text:?}", self.name, m.id));
        let acks =
            self.writers.get(&tag).unwrap_or_else(|| panic!("[{}] entry {text} from an unknown writer", self.name));
        assert!(
            self.seen.insert((tag.clone(), seq)),
            "[{}] entry {text} returned twice (again at {}): an entry must be read exactly once",
            self.name,
            m.id
        );
        if let Some(prev) = self.last_id {
            assert!(m.id > prev, "[{}] entry {text} at {} returned after {prev}: out of order", self.name, m.id);
        }
        if let Some(&prev) = self.last_seq.get(&tag) {
            assert!(seq > prev, "[{}] entry {text} returned after {tag}-{prev:08}: writes out of order", self.name);
        }
        self.last_id = Some(m.id);
        self.last_seq.insert(tag.clone(), seq);
        let deadline = Instant::now() + self.grace;
        let acked = loop {
            match acks.outcome(seq) {
                Some(Outcome::Acked(id)) => {
                    assert_eq!(
                        id, m.id,
                        "[{}] entry {text} read at {} but its write was acknowledged at {id}",
                        self.name, m.id
                    );
                    break true;
                }
                Some(Outcome::Failed(e)) => {
                    assert!(
                        self.allow_failed,
                        "[{}] entry {text} read at {} although its write failed ({e}) and no failed write may \
                         appear here",
                        self.name, m.id
                    );
                    break false;
                }
                Some(Outcome::Pending) | None if Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
                _ => panic!(
                    "[{}] entry {text} returned at {} but its write was not acknowledged {:?} later: a reader \
                     must not return an entry before it is acknowledged",
                    self.name, m.id, self.grace
                ),
            }
        };
        self.read.push(ReadEntry { tag, seq, id: m.id, acked });
    }

    /// Acknowledged writes this checker has not seen yet.
    pub fn missing(&self) -> Vec<String> {
        let mut out = Vec::new();
        for (tag, acks) in &self.writers {
            for (seq, id) in acks.acked() {
                if !self.seen.contains(&(tag.clone(), seq)) {
                    out.push(format!("{tag}-{seq:08}@{id}"));
                }
            }
        }
        out.sort();
        out
    }

    /// Entries read whose write failed (ambiguous writes that made it into the log).
    pub fn ambiguous(&self) -> usize {
        self.read.iter().filter(|e| !e.acked).count()
    }
}

/// Reads `log` from the start with a fresh reader until every acknowledged write of `writers` was
/// returned (within `limit`), then for `quiet` more: every check of [`Checker::check`] applies, read
/// errors fail the test. Returns the checker (what was read, in order).
pub async fn verify_log(log: &LogHandle, writers: &[&Arc<Acks>], limit: Duration) -> Checker {
    verify_log_with(log, writers, limit, |_| {}).await
}

/// [`verify_log`] with the checker adjusted first (e.g. `allow_failed = false`).
pub async fn verify_log_with(
    log: &LogHandle,
    writers: &[&Arc<Acks>],
    limit: Duration,
    adjust: impl FnOnce(&mut Checker),
) -> Checker {
    for w in writers {
        assert!(
            w.pending().is_empty(),
            "verify after every write resolved; {} still pending: {:?}",
            w.tag,
            w.pending()
        );
    }
    let name = unique("verify");
    let mut reader =
        within(Duration::from_secs(30), "open_reader(EARLIEST)", log.open_reader(LogMessageId::EARLIEST, &name))
            .await
            .unwrap_or_else(|e| panic!("open a verifying reader: {e}"));
    let mut checker = Checker::new("final reader", writers);
    checker.grace = Duration::ZERO;
    adjust(&mut checker);
    let deadline = tokio::time::Instant::now() + limit;
    let total: usize = writers.iter().map(|w| w.acked().len()).sum();
    while !checker.missing().is_empty() {
        match tokio::time::timeout_at(deadline, reader.read_next()).await {
            Ok(Ok(m)) => checker.check(&m).await,
            Ok(Err(e)) => panic!(
                "final reader: read error after {} entries (of {total} acknowledged): {e}; still missing {:?}",
                checker.read.len(),
                first(&checker.missing())
            ),
            Err(_) => panic!(
                "final reader: {} acknowledged entries not returned within {limit:?} (read {}): {:?}",
                checker.missing().len(),
                checker.read.len(),
                first(&checker.missing())
            ),
        }
    }
    // Nothing may follow that was not written: a short quiet read past the last acknowledged entry.
    let quiet = Duration::from_millis(1500);
    let quiet_end = tokio::time::Instant::now() + quiet;
    while let Ok(r) = tokio::time::timeout_at(quiet_end, reader.read_next()).await {
        match r {
            Ok(m) => checker.check(&m).await,
            Err(e) => panic!("final reader: read error past the last acknowledged entry: {e}"),
        }
    }
    drop(reader);
    eprintln!(
        "[verify] {} entries read, {total} acknowledged, {} ambiguous (failed writes present in the log)",
        checker.read.len(),
        checker.ambiguous()
    );
    checker
}

fn first(v: &[String]) -> &[String] {
    &v[..v.len().min(10)]
}

/// Runs a test body on a [`tokio::task::LocalSet`], which [`Tail`] needs (it spawns its reader locally).
pub async fn local<F: std::future::Future>(body: F) -> F::Output {
    tokio::task::LocalSet::new().run_until(body).await
}

/// A reader tailing the log in the background while writers write, checking every entry as it arrives;
/// read errors are counted (a reader may see transient errors while nodes die) but must not persist.
pub struct Tail {
    stop: watch::Sender<bool>,
    task: JoinHandle<(Checker, usize)>,
    /// Entries returned so far.
    progress: Arc<std::sync::atomic::AtomicUsize>,
    /// Acknowledged entries not returned yet, refreshed while the tail waits after [`Self::finish`].
    missing: Arc<Mutex<Vec<String>>>,
}

impl Tail {
    /// Opens a reader at `from` and starts tailing.
    pub async fn start(log: &LogHandle, from: LogMessageId, writers: &[&Arc<Acks>]) -> Self {
        let name = unique("tail");
        let reader = within(Duration::from_secs(30), "open a tail reader", log.open_reader(from, &name))
            .await
            .unwrap_or_else(|e| panic!("open a tail reader: {e}"));
        let checker = Checker::new("tail reader", writers);
        let (stop, stopped) = watch::channel(false);
        let progress = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        // A reader's read_next future is not Send: the tail runs on the test's thread (see [`local`]).
        let missing = Arc::new(Mutex::new(Vec::new()));
        let task = tokio::task::spawn_local(tail(reader, checker, stopped, progress.clone(), missing.clone()));
        Self { stop, task, progress, missing }
    }

    /// Entries the tail reader returned so far.
    pub fn read_count(&self) -> usize {
        self.progress.load(std::sync::atomic::Ordering::Acquire)
    }

    /// Waits until the tail reader returned at least `n` entries (a reader that stopped making progress
    /// fails the test).
    pub async fn wait_read(&self, n: usize, limit: Duration) {
        let deadline = Instant::now() + limit;
        while self.read_count() < n {
            assert!(!self.task.is_finished(), "tail reader stopped after {} entries (panicked?)", self.read_count());
            assert!(
                Instant::now() < deadline,
                "tail reader returned only {} of {n} entries within {limit:?}",
                self.read_count()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Waits until the tail reader has returned every acknowledged write of its writers (bounded), then
    /// stops it; returns its checker and how many read errors it saw.
    pub async fn finish(self, limit: Duration) -> (Checker, usize) {
        let _ = self.stop.send(true);
        match tokio::time::timeout(limit, self.task).await {
            Ok(r) => r.unwrap_or_else(|e| panic!("tail reader: {e}")),
            Err(_) => {
                let missing = self.missing.lock().unwrap().clone();
                panic!(
                    "tail reader: {} acknowledged entries not returned within {limit:?} of the end of writing \
                     (read {}): {:?}",
                    missing.len(),
                    self.progress.load(std::sync::atomic::Ordering::Acquire),
                    first(&missing)
                )
            }
        }
    }
}

async fn tail(
    mut reader: LogReader,
    mut checker: Checker,
    stopped: watch::Receiver<bool>,
    progress: Arc<std::sync::atomic::AtomicUsize>,
    missing: Arc<Mutex<Vec<String>>>,
) -> (Checker, usize) {
    let mut errors = 0usize;
    let mut consecutive = 0usize;
    loop {
        // The read in progress is never dropped while an acknowledged entry is still to come (read_next
        // need not be cancel-safe); it is abandoned only once everything was read and the test is done.
        let next = {
            let mut fut = std::pin::pin!(reader.read_next());
            loop {
                tokio::select! {
                    r = &mut fut => break Some(r),
                    () = tokio::time::sleep(Duration::from_millis(100)) => {
                        if *stopped.borrow() {
                            let left = checker.missing();
                            if left.is_empty() {
                                break None;
                            }
                            *missing.lock().unwrap() = left;
                        }
                    }
                }
            }
        };
        match next {
            None => break,
            Some(Ok(m)) => {
                consecutive = 0;
                checker.check(&m).await;
                progress.store(checker.read.len(), std::sync::atomic::Ordering::Release);
            }
            Some(Err(e)) => {
                errors += 1;
                consecutive += 1;
                assert!(consecutive < 100, "tail reader: 100 read errors in a row, last: {e}");
                eprintln!("[tail] read error (retrying): {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
    (checker, errors)
}

/// Segment ids of the entries read, in read order, grouped: segment → number of entries.
pub fn segments_of(read: &[ReadEntry]) -> BTreeMap<i64, usize> {
    let mut m = BTreeMap::new();
    for e in read {
        *m.entry(e.id.segment_id).or_insert(0) += 1;
    }
    m
}

/// Writes queued on `w` must all resolve; closes it (bounded) and returns the close result.
pub async fn close_writer(w: &LogWriter) -> Result<(), WoodpeckerError> {
    within(Duration::from_secs(60), "LogWriter::close", w.close()).await
}
