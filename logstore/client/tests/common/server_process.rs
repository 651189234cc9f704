//! Separate etcd and MinIO processes for tests that need their own server settings (TLS, auth), on
//! free loopback ports, killed when dropped. The binaries are the test bed's (scripts/testbed.sh).

use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A child server process, killed and reaped on drop.
pub struct ServerProcess {
    child: Child,
    /// The client port on 127.0.0.1.
    pub port: u16,
    /// Data directory, removed on drop.
    _data: tempfile::TempDir,
    log: PathBuf,
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A port that was free a moment ago.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// The etcd binary: `WP_ETCD_BIN`, else `etcd` on `PATH` (the test bed installs the Debian package).
pub fn etcd_bin() -> String {
    std::env::var("WP_ETCD_BIN").unwrap_or_else(|_| "etcd".to_owned())
}

/// The MinIO binary: `WP_MINIO_BIN` (exported by `scripts/testbed.sh env`), else the test bed's cache.
pub fn minio_bin() -> PathBuf {
    if let Ok(bin) = std::env::var("WP_MINIO_BIN") {
        return PathBuf::from(bin);
    }
    let cache = std::env::var("WP_TESTBED_CACHE").map(PathBuf::from).unwrap_or_else(|_| {
        PathBuf::from(std::env::var("HOME").unwrap_or_else(|_| "/root".into())).join(".cache/woodpecker-testbed")
    });
    std::fs::read_dir(&cache)
        .ok()
        .into_iter()
        .flatten()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().starts_with("minio-"))
        .map(|e| e.path().join("bin/minio"))
        .find(|p| p.is_file())
        .unwrap_or_else(|| {
            panic!("no MinIO binary: set WP_MINIO_BIN or run `scripts/testbed.sh install` (cache {cache:?})")
        })
}

impl ServerProcess {
    fn spawn(mut cmd: Command, port: u16, data: tempfile::TempDir, what: &str) -> Self {
        let log = data.path().join("server.log");
        let out = std::fs::File::create(&log).unwrap();
        cmd.stdout(out.try_clone().unwrap()).stderr(out).stdin(Stdio::null());
        let child = cmd.spawn().unwrap_or_else(|e| panic!("cannot start {what} ({cmd:?}): {e}"));
        let mut server = Self { child, port, _data: data, log };
        server.wait_listening(what);
        server
    }

    /// Waits (bounded) until the client port accepts connections.
    fn wait_listening(&mut self, what: &str) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("{what} exited with {status}:\n{}", self.log_text());
            }
            assert!(
                Instant::now() < deadline,
                "{what} not listening on {} after 30 s:\n{}",
                self.port,
                self.log_text()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The server's output so far, for failure messages.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// One etcd member serving clients on a free port: over TLS with `tls = Some((cert, key, ca))`
    /// (and `--client-cert-auth`: clients must present a certificate signed by `ca`), else plain.
    pub fn etcd(tls: Option<(&Path, &Path, &Path)>) -> Self {
        let data = tempfile::tempdir_in(shm_or_tmp()).unwrap();
        let (port, peer) = (free_port(), free_port());
        let scheme = if tls.is_some() { "https" } else { "http" };
        let client_url = format!("{scheme}://127.0.0.1:{port}");
        let peer_url = format!("http://127.0.0.1:{peer}");
        let mut cmd = Command::new(etcd_bin());
        cmd.arg("--name=wp-test")
            .arg(format!("--data-dir={}", data.path().join("etcd").display()))
            .arg(format!("--listen-client-urls={client_url}"))
            .arg(format!("--advertise-client-urls={client_url}"))
            .arg(format!("--listen-peer-urls={peer_url}"))
            .arg(format!("--initial-advertise-peer-urls={peer_url}"))
            .arg(format!("--initial-cluster=wp-test={peer_url}"))
            .arg("--log-level=warn");
        if let Some((cert, key, ca)) = tls {
            cmd.arg(format!("--cert-file={}", cert.display()))
                .arg(format!("--key-file={}", key.display()))
                .arg(format!("--trusted-ca-file={}", ca.display()))
                .arg("--client-cert-auth");
        }
        Self::spawn(cmd, port, data, "etcd")
    }

    /// A MinIO server on a free port, over TLS when `certs_dir` (MinIO's `--certs-dir` layout) is given.
    pub fn minio(certs_dir: Option<&Path>, user: &str, password: &str) -> Self {
        Self::minio_with_env(certs_dir, user, password, &[])
    }

    /// [`ServerProcess::minio`] with extra environment (`MINIO_SITE_REGION`, …).
    pub fn minio_with_env(certs_dir: Option<&Path>, user: &str, password: &str, env: &[(&str, &str)]) -> Self {
        let data = tempfile::tempdir_in(shm_or_tmp()).unwrap();
        let (port, console) = (free_port(), free_port());
        let mut cmd = Command::new(minio_bin());
        cmd.arg("server")
            .arg(data.path().join("data"))
            .arg("--address")
            .arg(format!("127.0.0.1:{port}"))
            .arg("--console-address")
            .arg(format!("127.0.0.1:{console}"))
            .arg("--quiet")
            .env("MINIO_ROOT_USER", user)
            .env("MINIO_ROOT_PASSWORD", password)
            .env("MINIO_BROWSER", "off")
            .envs(env.iter().copied());
        // MinIO reads a default certs dir under $HOME otherwise; always name one.
        let certs = certs_dir.map(Path::to_path_buf).unwrap_or_else(|| data.path().join("no-certs"));
        cmd.arg("--certs-dir").arg(certs);
        Self::spawn(cmd, port, data, "minio")
    }
}

fn shm_or_tmp() -> PathBuf {
    let shm = Path::new("/dev/shm");
    if shm.is_dir() { shm.to_path_buf() } else { std::env::temp_dir() }
}
