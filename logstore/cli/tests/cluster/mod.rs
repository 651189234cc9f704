//! A harness of real `woodpecker server` processes on loopback: each node with its own ports, data dir,
//! zone and resource group; kill -9, restart (same or wiped data dir), SIGTERM, SIGSTOP/SIGCONT (a slow
//! node), waits on `/readyz`, and optionally a TCP proxy in front of each service port (a partition).
#![allow(dead_code)]

pub mod tcp_proxy;

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tempfile::TempDir;
use woodpecker_proto::logstore::log_store_client::LogStoreClient;

fn env(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| {
        panic!(
            "{name} is not set: these tests need the real etcd + MinIO test bed. Run \
             `scripts/testbed.sh install && scripts/testbed.sh start && eval \"$(scripts/testbed.sh env)\"`"
        )
    })
}

/// The test bed's MinIO bucket.
pub fn bucket() -> String {
    env("WP_MINIO_BUCKET")
}

/// A port nobody listens on right now (TCP and UDP free).
pub fn free_port() -> u16 {
    loop {
        let tcp = TcpListener::bind("127.0.0.1:0").expect("bind an ephemeral port");
        let port = tcp.local_addr().expect("local addr").port();
        if std::net::UdpSocket::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

/// One server node.
pub struct ServerNode {
    pub name: String,
    pub service_port: u16,
    pub gossip_port: u16,
    pub admin_port: u16,
    pub zone: String,
    pub resource_group: String,
    pub data_dir: PathBuf,
    config: PathBuf,
    overlay: Option<PathBuf>,
    seeds: Vec<String>,
    log: PathBuf,
    child: Option<Child>,
    /// A proxy in front of the service port: the node advertises it, so clients reach the node through it.
    pub proxy: Option<Arc<tcp_proxy::TcpProxy>>,
    paused: bool,
}

impl ServerNode {
    /// `host:port` clients dial: the proxy's when the node has one (that is what the node advertises).
    pub fn endpoint(&self) -> String {
        match &self.proxy {
            Some(p) => p.addr().to_string(),
            None => self.direct_endpoint(),
        }
    }

    /// The service port itself, bypassing any proxy.
    pub fn direct_endpoint(&self) -> String {
        format!("127.0.0.1:{}", self.service_port)
    }

    /// `host:port` peers gossip with.
    pub fn gossip_addr(&self) -> String {
        format!("127.0.0.1:{}", self.gossip_port)
    }

    fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new().create(true).append(true).open(&self.log).expect("open node log");
        let err = log.try_clone().expect("clone log handle");
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_woodpecker"));
        cmd.arg("server")
            .arg("--config")
            .arg(&self.config)
            .arg("--data-dir")
            .arg(&self.data_dir)
            .args(["--node-name", &self.name])
            .args(["--service-port", &self.service_port.to_string()])
            .args(["--gossip-port", &self.gossip_port.to_string()])
            .args(["--advertise-service-addr", &self.endpoint()])
            .args(["--advertise-gossip-addr", &self.gossip_addr()])
            .args(["--availability-zone", &self.zone])
            .args(["--resource-group", &self.resource_group])
            .args(["--cluster", "wp-test"])
            .env("METRICS_PORT", self.admin_port.to_string())
            .env("RUST_LOG", "warn,woodpecker_server=info")
            .env_remove("WOODPECKER_CONFIG")
            .env_remove("WOODPECKER_DATA_DIR")
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(err);
        if !self.seeds.is_empty() {
            cmd.args(["--seeds", &self.seeds.join(",")]);
        }
        if let Some(o) = &self.overlay {
            cmd.arg("--external-user-config").arg(o);
        }
        self.child = Some(cmd.spawn().expect("spawn woodpecker server"));
    }

    /// The node's log so far (for failure messages).
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits until `/readyz` answers 200.
    pub fn wait_ready(&mut self, limit: Duration) {
        let deadline = Instant::now() + limit;
        let mut respawns = 0;
        loop {
            if let Some(child) = self.child.as_mut()
                && let Ok(Some(status)) = child.try_wait()
            {
                // A port of a node that was down can meanwhile be taken as another connection's ephemeral
                // source port: the restart then cannot bind it. Wait for that connection to go, and retry.
                let text = self.log_text();
                let tail = &text[text.len().saturating_sub(2000)..];
                if tail.contains("in use") && respawns < 20 && Instant::now() < deadline {
                    respawns += 1;
                    std::thread::sleep(Duration::from_millis(500));
                    self.spawn();
                    continue;
                }
                panic!("server {} exited with {status} before it was ready:\n{text}", self.name);
            }
            if let Ok((200, _)) = http(self.admin_port, "GET", "/readyz") {
                return;
            }
            assert!(Instant::now() < deadline, "server {} not ready within {limit:?}:\n{}", self.name, self.log_text());
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Whether the process is running (started and not killed or terminated).
    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    fn signal(&self, sig: i32) {
        let c = self.child.as_ref().unwrap_or_else(|| panic!("server {} is not running", self.name));
        // SAFETY: sending a signal to our own child's pid.
        unsafe { libc::kill(c.id() as i32, sig) };
    }

    /// SIGSTOP: the node keeps its sockets open but answers nothing (a slow or hung node).
    pub fn pause(&mut self) {
        self.signal(libc::SIGSTOP);
        self.paused = true;
    }

    /// SIGCONT after [`Self::pause`].
    pub fn resume(&mut self) {
        self.signal(libc::SIGCONT);
        self.paused = false;
    }

    /// SIGKILL, then reap.
    pub fn kill(&mut self) {
        self.paused = false;
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM and wait for the exit (bounded); returns the exit status and how long it took.
    pub fn terminate(&mut self, limit: Duration) -> (std::process::ExitStatus, Duration) {
        let mut c = self.child.take().expect("a running server");
        let started = Instant::now();
        // SAFETY: sending a signal to our own child's pid.
        unsafe { libc::kill(c.id() as i32, libc::SIGTERM) };
        loop {
            if let Some(s) = c.try_wait().expect("wait for server") {
                return (s, started.elapsed());
            }
            if started.elapsed() > limit {
                let _ = c.kill();
                panic!("server {} did not exit within {limit:?} of SIGTERM:\n{}", self.name, self.log_text());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Starts the node again on the same ports, wiping its data dir first when `wipe`.
    pub fn restart(&mut self, wipe: bool) {
        self.kill();
        if wipe {
            let _ = std::fs::remove_dir_all(&self.data_dir);
            std::fs::create_dir_all(&self.data_dir).expect("recreate data dir");
        }
        self.spawn();
        self.wait_ready(Duration::from_secs(30));
    }

    /// Deletes the node's data (the node must be stopped).
    pub fn wipe(&mut self) {
        assert!(self.child.is_none(), "wipe {} only while it is stopped", self.name);
        let _ = std::fs::remove_dir_all(&self.data_dir);
        std::fs::create_dir_all(&self.data_dir).expect("recreate data dir");
    }

    /// Starts the node again without waiting for `/readyz` (a decommissioning node is never ready).
    pub fn restart_unready(&mut self) {
        self.kill();
        self.spawn();
    }

    /// A gRPC client of the node.
    pub async fn client(&self) -> LogStoreClient<tonic::transport::Channel> {
        LogStoreClient::connect(format!("http://{}", self.endpoint()))
            .await
            .unwrap_or_else(|e| panic!("connect to {}: {e}", self.name))
            .max_decoding_message_size(512 << 20)
    }

    /// GET or POST on the admin port.
    pub fn admin(&self, method: &str, path: &str) -> (u16, String) {
        http(self.admin_port, method, path).unwrap_or_else(|e| panic!("{method} {path} on {}: {e}", self.name))
    }
}

impl Drop for ServerNode {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A plain HTTP/1.1 request to 127.0.0.1:`port`; the status code and body.
pub fn http(port: u16, method: &str, path: &str) -> std::io::Result<(u16, String)> {
    let mut s = TcpStream::connect_timeout(&([127, 0, 0, 1], port).into(), Duration::from_secs(2))?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    write!(s, "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")?;
    let mut buf = String::new();
    s.read_to_string(&mut buf)?;
    let code = buf.split_whitespace().nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    let body = buf.split_once("\r\n\r\n").map_or(String::new(), |(_, b)| b.to_owned());
    Ok((code, body))
}

/// What a cluster's nodes get in their `woodpecker.yaml`, beyond the test bed's MinIO.
#[derive(Debug, Clone, Default)]
pub struct ClusterOptions {
    /// YAML merged over the generated config (passed as `--external-user-config`).
    pub extra_yaml: String,
}

/// N server processes.
pub struct Cluster {
    pub nodes: Vec<ServerNode>,
    _dir: TempDir,
}

impl Cluster {
    /// Starts `n` nodes: node i in zone `z<i % 3>` and resource group `rg<i / 3 % 3>`, every node seeded
    /// with node 0's gossip address; waits until each is ready.
    pub fn start(n: usize, opts: &ClusterOptions) -> Self {
        Self::start_nodes(n, opts, false)
    }

    /// Like [`Self::start`], with a [`tcp_proxy::TcpProxy`] in front of every node's service port; each
    /// node advertises its proxy, so clients reach it only through the proxy (partitions).
    pub fn start_behind_proxies(n: usize, opts: &ClusterOptions) -> Self {
        Self::start_nodes(n, opts, true)
    }

    fn start_nodes(n: usize, opts: &ClusterOptions, proxies: bool) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let endpoint = env("WP_MINIO_ENDPOINT");
        let hostport = endpoint.trim_start_matches("http://").trim_start_matches("https://").to_owned();
        let (host, port) = hostport.rsplit_once(':').expect("MinIO host:port");
        // Disk watermarks only near a truly full disk: this machine's file system reports a large reserve
        // as used, which would put every node in the throttle band. Tests of disk pressure set their own.
        let main = format!(
            "woodpecker:\n  logstore:\n    diskWatermarkPolicy:\n      softThresholdRatio: 0.999\n      hardThresholdRatio: 0.999\n      minFreeBytes: 256M\n  meta:\n    type: etcd\n  storage:\n    type: service\n  client:\n    quorum:\n      quorumBufferPools:\n        - name: default\n          seeds: [placeholder:1]\n\
             etcd:\n  endpoints: [{etcd}]\n\
             minio:\n  address: {host}\n  port: {port}\n  accessKeyID: {ak}\n  secretAccessKey: {sk}\n  bucketName: {bucket}\n",
            ak = env("WP_MINIO_ACCESS_KEY"),
            sk = env("WP_MINIO_SECRET_KEY"),
            bucket = env("WP_MINIO_BUCKET"),
            etcd = env("WP_ETCD_ENDPOINTS"),
        );
        let mut nodes = Vec::with_capacity(n);
        let mut seed = None;
        // free_port() only says a port is free now: ports of one cluster must also differ from each other.
        let mut taken = std::collections::HashSet::new();
        let mut port = || loop {
            let p = free_port();
            if taken.insert(p) {
                return p;
            }
        };
        for i in 0..n {
            let name = format!("node-{i}");
            let node_dir = dir.path().join(&name);
            std::fs::create_dir_all(node_dir.join("data")).expect("node dir");
            let config = node_dir.join("woodpecker.yaml");
            std::fs::write(&config, &main).expect("write config");
            let overlay = (!opts.extra_yaml.is_empty()).then(|| {
                let p = node_dir.join("overlay.yaml");
                std::fs::write(&p, &opts.extra_yaml).expect("write overlay");
                p
            });
            let gossip_port = port();
            let seeds: Vec<String> = seed.iter().cloned().collect();
            let service_port = port();
            let proxy = proxies.then(|| tcp_proxy::TcpProxy::start(([127, 0, 0, 1], service_port).into()));
            let node = ServerNode {
                name,
                service_port,
                gossip_port,
                admin_port: port(),
                zone: format!("z{}", i % 3),
                resource_group: format!("rg{}", i / 3 % 3),
                data_dir: node_dir.join("data"),
                config,
                overlay,
                seeds,
                log: node_dir.join("server.log"),
                child: None,
                proxy,
                paused: false,
            };
            if seed.is_none() {
                seed = Some(format!("127.0.0.1:{gossip_port}"));
            }
            nodes.push(node);
        }
        for node in &mut nodes {
            node.spawn();
        }
        for node in &mut nodes {
            node.wait_ready(Duration::from_secs(60));
        }
        Self { nodes, _dir: dir }
    }

    /// The node named `name`.
    pub fn node(&mut self, name: &str) -> &mut ServerNode {
        self.nodes.iter_mut().find(|n| n.name == name).unwrap_or_else(|| panic!("no node {name}"))
    }

    /// The node advertising `endpoint`.
    pub fn by_endpoint(&mut self, endpoint: &str) -> &mut ServerNode {
        self.nodes.iter_mut().find(|n| n.endpoint() == endpoint).unwrap_or_else(|| panic!("no node at {endpoint}"))
    }

    /// Service endpoints of every node (what they advertise; the client's seeds).
    pub fn endpoints(&self) -> Vec<String> {
        self.nodes.iter().map(ServerNode::endpoint).collect()
    }

    /// Kills every node (-9), then starts them all again and waits until each is ready: after a whole
    /// cluster stopped, nodes join through node 0's gossip, so they are started together.
    pub fn restart_all(&mut self) {
        for n in &mut self.nodes {
            n.kill();
        }
        for n in &mut self.nodes {
            n.spawn();
        }
        for n in &mut self.nodes {
            n.wait_ready(Duration::from_secs(60));
        }
    }

    /// Every node's log, for failure messages.
    pub fn logs(&self) -> BTreeMap<String, String> {
        self.nodes.iter().map(|n| (n.name.clone(), n.log_text())).collect()
    }
}
