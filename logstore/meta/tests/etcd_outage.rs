//! A private etcd that the test kills: the shared test bed must stay up for everyone else.
//! Needs the `etcd` binary (`WP_ETCD_BIN`, else `etcd` on PATH; the test bed installs it).

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use woodpecker_meta::{EtcdOptions, MetaError, MetadataStore, StoreOptions};

struct PrivateEtcd {
    child: Child,
    endpoint: String,
    _dir: tempfile::TempDir,
}

impl Drop for PrivateEtcd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port()
}

async fn start_etcd() -> PrivateEtcd {
    let bin = std::env::var("WP_ETCD_BIN").unwrap_or_else(|_| "etcd".to_owned());
    let dir = tempfile::tempdir().expect("tempdir");
    let (client, peer) = (free_port(), free_port());
    let endpoint = format!("127.0.0.1:{client}");
    let child = Command::new(&bin)
        .args(["--name", "outage", "--data-dir"])
        .arg(dir.path())
        .args(["--listen-client-urls", &format!("http://{endpoint}")])
        .args(["--advertise-client-urls", &format!("http://{endpoint}")])
        .args(["--listen-peer-urls", &format!("http://127.0.0.1:{peer}")])
        .args(["--initial-advertise-peer-urls", &format!("http://127.0.0.1:{peer}")])
        .args(["--initial-cluster", &format!("outage=http://127.0.0.1:{peer}")])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {bin:?} (set WP_ETCD_BIN or install etcd-server): {e}"));
    let etcd = PrivateEtcd { child, endpoint, _dir: dir };
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Ok(mut c) = etcd_client::Client::connect([etcd.endpoint.as_str()], None).await
            && c.status().await.is_ok()
        {
            return etcd;
        }
        assert!(Instant::now() < deadline, "private etcd at {} not ready within 20 s", etcd.endpoint);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lock_is_lost_and_requests_fail_fast_when_etcd_dies() {
    let etcd = start_etcd().await;
    let etcd_options = EtcdOptions {
        request_timeout: Duration::from_millis(500),
        connect_timeout: Duration::from_millis(500),
        max_attempts: 2,
        retry_backoff: Duration::from_millis(50),
        credentials: None,
        tls: None,
    };
    let store = MetadataStore::open_etcd(&[etcd.endpoint.as_str()], "outage", "woodpecker", &etcd_options)
        .await
        .expect("open")
        .with_options(StoreOptions {
            lock_check_interval: Duration::from_millis(200),
            lock_max_failures: 5,
            ..StoreOptions::default()
        });
    store.init_if_necessary().await.expect("init");
    store.create_log("l").await.expect("create");
    let lock = store.acquire_writer_lock("l").await.expect("lock");
    let endpoint = etcd.endpoint.clone();

    drop(etcd); // SIGKILL, data gone

    tokio::time::timeout(Duration::from_secs(15), lock.lost()).await.expect("lock loss detected within 15 s");
    assert!(!lock.is_valid());

    let started = Instant::now();
    let err = store.get_log("l").await.expect_err("etcd is gone");
    assert!(started.elapsed() < Duration::from_secs(5), "bounded by timeout x attempts, took {:?}", started.elapsed());
    assert!(matches!(&err, MetaError::Unreachable { endpoints, .. } if *endpoints == [endpoint.as_str()]), "{err}");
    assert!(err.is_retryable());
}

fn signal(etcd: &PrivateEtcd, sig: &str) {
    let status = Command::new("kill").args([sig, &etcd.child.id().to_string()]).status().expect("kill");
    assert!(status.success(), "kill {sig} failed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hung_etcd_times_out_requests_and_loses_the_lock_then_recovers() {
    let etcd = start_etcd().await;
    let etcd_options = EtcdOptions {
        request_timeout: Duration::from_millis(500),
        connect_timeout: Duration::from_millis(500),
        max_attempts: 2,
        retry_backoff: Duration::from_millis(50),
        credentials: None,
        tls: None,
    };
    let store = MetadataStore::open_etcd(&[etcd.endpoint.as_str()], "hung", "woodpecker", &etcd_options)
        .await
        .expect("open")
        .with_options(StoreOptions {
            lock_session_ttl: Duration::from_secs(3),
            lock_check_interval: Duration::from_millis(200),
            lock_max_failures: 100,
            ..StoreOptions::default()
        });
    store.init_if_necessary().await.expect("init");
    store.create_log("l").await.expect("create");
    let lock = store.acquire_writer_lock("l").await.expect("lock");

    signal(&etcd, "-STOP"); // accepts connections, answers nothing
    let started = Instant::now();
    let err = store.get_log("l").await.expect_err("etcd hangs");
    assert!(started.elapsed() < Duration::from_secs(5), "bounded by timeout x attempts, took {:?}", started.elapsed());
    assert!(matches!(err, MetaError::Unreachable { .. }), "{err}");
    // Keep-alives hang: the lock must be given up within one TTL of the last refresh.
    tokio::time::timeout(Duration::from_secs(6), lock.lost()).await.expect("lock loss detected within the TTL");

    signal(&etcd, "-CONT");
    let mut recovered = false;
    for _ in 0..50 {
        if store.get_log("l").await.is_ok() {
            recovered = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(recovered, "the store works again once etcd answers");
    // etcd's own lease clock was frozen too; whether it expired or our revoke removed it, a new
    // writer can take the lock once the old lease is gone.
    let mut relocked = None;
    for _ in 0..50 {
        match store.acquire_writer_lock("l").await {
            Ok(l) => {
                relocked = Some(l);
                break;
            }
            Err(MetaError::LockHeld { .. }) => tokio::time::sleep(Duration::from_millis(200)).await,
            Err(e) => panic!("unexpected error: {e}"),
        }
    }
    relocked.expect("lock acquirable after recovery").release().await.expect("release");
}
