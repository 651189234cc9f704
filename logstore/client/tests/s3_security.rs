//! The client against object storage as in production: MinIO over https with a CA generated here
//! (`minio.useSSL`, `minio.ssl.tlsCACert`), a MinIO in a region other than the default
//! (`minio.region`), and `minio.requestTimeoutMs` bounding a silent endpoint.
//! Each test starts what it needs (the test bed's MinIO binary on free ports, or a silent listener).

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::pki::Pki;
use common::read_n;
use common::server_process::ServerProcess;
use woodpecker_client::{Client, Config, LogMessageId, WoodpeckerError, WriteMessage};
use woodpecker_storage::object::{ObjectError, S3ObjectStorage, S3Options};

const USER: &str = "wp-tls-admin";
const PASSWORD: &str = "wp-tls-secret";

/// Object storage at 127.0.0.1:`port` with `minio_extra` (YAML lines under `minio:`), metadata embedded in `dir`.
fn config(dir: &Path, port: u16, minio_extra: &str) -> Config {
    let yaml = format!(
        "woodpecker:\n  meta:\n    type: embedded\n  storage:\n    type: minio\n    rootPath: {}\n\
         minio:\n  address: 127.0.0.1\n  port: {port}\n  accessKeyID: {USER}\n  secretAccessKey: {PASSWORD}\n\
         \x20 bucketName: wp-tls\n  createBucket: true\n  rootPath: files\n{minio_extra}",
        dir.display(),
    );
    Config::from_yaml_str(&yaml).unwrap_or_else(|e| panic!("config: {e}\n{yaml}"))
}

fn https_with_ca(ca: &Path) -> String {
    format!("  useSSL: true\n  requestTimeoutMs: 5000\n  ssl:\n    tlsCACert: {}\n", ca.display())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn minio_over_https_with_a_generated_ca_serves_the_client_and_a_wrong_ca_is_refused() {
    let pki = Pki::generate();
    let minio = ServerProcess::minio(Some(&pki.minio_certs_dir()), USER, PASSWORD);
    let endpoint = format!("127.0.0.1:{}", minio.port);

    // Write and read a log through https with the generated CA.
    let dir = tempfile::tempdir().unwrap();
    let client = Client::open(config(dir.path(), minio.port, &https_with_ca(&pki.ca)))
        .await
        .unwrap_or_else(|e| panic!("open over https: {e}\nminio log:\n{}", minio.log_text()));
    assert!(client.uses_condition_write(), "MinIO over https honours If-None-Match too");
    client.create_log("tls").await.unwrap();
    let log = client.open_log("tls").await.unwrap();
    let writer = log.open_writer().await.unwrap();
    let mut ids = Vec::new();
    for i in 0..3 {
        ids.push(writer.write(WriteMessage::new(format!("over-https-{i}"))).await.unwrap());
    }
    writer.close().await.unwrap();
    let mut reader = log.open_reader(LogMessageId::EARLIEST, "check").await.unwrap();
    let got = read_n(&mut reader, 3, Duration::from_secs(30)).await;
    for (i, m) in got.iter().enumerate() {
        assert_eq!((m.id, m.payload.as_ref()), (ids[i], format!("over-https-{i}").as_bytes()));
    }
    reader.close().await.unwrap();
    client.close().await;

    // A CA that did not sign MinIO's certificate, and the system roots (placeholder CA path): both refused
    // with an error naming the endpoint and the certificate problem, not retried into a long wait.
    for (what, extra) in [
        ("unrelated CA", https_with_ca(&pki.other_ca)),
        ("system roots", "  useSSL: true\n  requestTimeoutMs: 5000\n".to_owned()),
    ] {
        let cfg = config(tempfile::tempdir().unwrap().path(), minio.port, &extra);
        let started = Instant::now();
        let err = S3ObjectStorage::connect(S3Options::from_config(&cfg.minio).unwrap()).await.unwrap_err();
        let elapsed = started.elapsed();
        let text = err.to_string();
        assert!(matches!(err, ObjectError::Tls { .. }), "{what}: {err:?}");
        assert!(text.contains(&endpoint) && text.contains("UnknownIssuer"), "{what}: {text}");
        assert!(text.contains("minio.ssl.tlsCACert"), "{what}: the message points at the setting: {text}");
        assert!(elapsed < Duration::from_secs(3), "{what}: failing took {elapsed:?}");
    }

    // The same through the client.
    let dir = tempfile::tempdir().unwrap();
    match Client::open(config(dir.path(), minio.port, &https_with_ca(&pki.other_ca))).await {
        Err(WoodpeckerError::Object(ObjectError::Tls { endpoint: e, .. })) => assert!(e.contains(&endpoint), "{e}"),
        Err(other) => panic!("expected a TLS error, got {other}"),
        Ok(_) => panic!("a wrong CA was accepted"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_timeout_bounds_a_silent_endpoint() {
    // Accepts connections and never answers: only minio.requestTimeoutMs ends each attempt.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let hold = tokio::spawn(async move {
        let mut open = Vec::new();
        while let Ok((sock, _)) = listener.accept().await {
            open.push(sock);
        }
    });
    let dir = tempfile::tempdir().unwrap();
    let started = Instant::now();
    let result = Client::open(config(dir.path(), port, "  requestTimeoutMs: 300\n")).await;
    let elapsed = started.elapsed();
    match result {
        Err(WoodpeckerError::Object(ObjectError::Unreachable { endpoint, attempts, source })) => {
            assert!(endpoint.contains(&format!("127.0.0.1:{port}")), "{endpoint}");
            assert_eq!(attempts, 3, "connecting makes three attempts");
            assert!(source.to_string().to_lowercase().contains("timeout"), "{source}");
        }
        Err(other) => panic!("expected Unreachable after timeouts, got {other}"),
        Ok(_) => panic!("a silent endpoint was accepted"),
    }
    // Three attempts of 300 ms plus the jittered backoff between them; without the bound it would hang.
    assert!(elapsed >= Duration::from_millis(900), "attempts ended before the timeout: {elapsed:?}");
    assert!(elapsed < Duration::from_secs(6), "took {elapsed:?}");
    hold.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn region_signs_requests_and_places_the_bucket() {
    let minio = ServerProcess::minio_with_env(None, USER, PASSWORD, &[("MINIO_SITE_REGION", "eu-west-1")]);

    // The configured region: the bucket is created with that location constraint, a log is written and read.
    let dir = tempfile::tempdir().unwrap();
    let client = Client::open(config(dir.path(), minio.port, "  region: eu-west-1\n"))
        .await
        .unwrap_or_else(|e| panic!("open in eu-west-1: {e}\nminio log:\n{}", minio.log_text()));
    client.create_log("regional").await.unwrap();
    let log = client.open_log("regional").await.unwrap();
    let writer = log.open_writer().await.unwrap();
    let id = writer.write(WriteMessage::new("in eu-west-1")).await.unwrap();
    writer.close().await.unwrap();
    let mut reader = log.open_reader(LogMessageId::EARLIEST, "check").await.unwrap();
    let got = read_n(&mut reader, 1, Duration::from_secs(30)).await;
    assert_eq!((got[0].id, got[0].payload.as_ref()), (id, b"in eu-west-1".as_slice()));
    reader.close().await.unwrap();
    client.close().await;

    // The default region (us-east-1) against it: refused at once, and the message says which region is expected.
    let cfg = config(tempfile::tempdir().unwrap().path(), minio.port, "");
    let err = S3ObjectStorage::connect(S3Options::from_config(&cfg.minio).unwrap()).await.unwrap_err();
    assert!(!err.is_retryable(), "{err:?}");
    assert!(err.to_string().contains("eu-west-1"), "{err}");
}
