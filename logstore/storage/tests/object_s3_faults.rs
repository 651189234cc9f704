//! `S3ObjectStorage` against a scripted HTTP server, for what a healthy MinIO cannot show:
//! throttling and 5xx retried with a bounded budget, permanent errors not retried, and the
//! provider-specific create-only headers on the wire.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;
use woodpecker_storage::object::{CloudProvider, ObjectError, ObjectStorage, S3ObjectStorage, S3Options};

/// One request as the server saw it.
#[derive(Debug, Clone)]
struct Seen {
    method: String,
    path: String,
    headers: Vec<(String, String)>,
}

impl Seen {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }
}

/// Answers HEAD with 200 and every other request with the next scripted status (the last one
/// repeats), recording what it saw. Each connection serves one request and closes.
struct ScriptedServer {
    endpoint: String,
    seen: Arc<Mutex<Vec<Seen>>>,
    task: tokio::task::JoinHandle<()>,
}

impl ScriptedServer {
    async fn start(script: Vec<(u16, &'static str)>) -> Self {
        Self::start_with_head(script, "").await
    }

    /// Like `start`, with `head_headers` (`Name: value\r\n` lines) added to every HEAD answer.
    async fn start_with_head(script: Vec<(u16, &'static str)>, head_headers: &'static str) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let endpoint = format!("http://{}", listener.local_addr().unwrap());
        let seen = Arc::new(Mutex::new(Vec::new()));
        let log = seen.clone();
        let task = tokio::spawn(async move {
            let mut answered = 0usize;
            while let Ok((sock, _)) = listener.accept().await {
                let (read, mut write) = sock.into_split();
                let mut reader = BufReader::new(read);
                let mut request_line = String::new();
                if reader.read_line(&mut request_line).await.unwrap_or(0) == 0 {
                    continue;
                }
                let mut parts = request_line.split_whitespace();
                let method = parts.next().unwrap_or_default().to_owned();
                let path = parts.next().unwrap_or_default().to_owned();
                let mut headers = Vec::new();
                loop {
                    let mut line = String::new();
                    if reader.read_line(&mut line).await.unwrap_or(0) == 0 || line == "\r\n" {
                        break;
                    }
                    if let Some((k, v)) = line.trim_end().split_once(':') {
                        headers.push((k.trim().to_owned(), v.trim().to_owned()));
                    }
                }
                let len: usize = headers
                    .iter()
                    .find(|(k, _)| k.eq_ignore_ascii_case("content-length"))
                    .and_then(|(_, v)| v.parse().ok())
                    .unwrap_or(0);
                let mut body = vec![0u8; len];
                let _ = reader.read_exact(&mut body).await;
                log.lock().unwrap().push(Seen { method: method.clone(), path, headers });

                let (status, code) = if method == "HEAD" {
                    (200, "")
                } else {
                    let step = script[answered.min(script.len() - 1)];
                    answered += 1;
                    step
                };
                let body = if status >= 300 {
                    format!(
                        "<?xml version=\"1.0\" encoding=\"UTF-8\"?><Error><Code>{code}</Code>\
                         <Message>scripted</Message></Error>"
                    )
                } else {
                    String::new()
                };
                let extra = if method == "HEAD" { head_headers } else { "" };
                let response = format!(
                    "HTTP/1.1 {status} Scripted\r\nContent-Type: application/xml\r\nContent-Length: {}\r\n\
                     {extra}Connection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = write.write_all(response.as_bytes()).await;
                let _ = write.shutdown().await;
            }
        });
        Self { endpoint, seen, task }
    }

    fn requests(&self, method: &str) -> Vec<Seen> {
        self.seen.lock().unwrap().iter().filter(|s| s.method == method).cloned().collect()
    }

    fn options(&self) -> S3Options {
        S3Options {
            endpoint: self.endpoint.clone(),
            bucket: "scripted".into(),
            access_key: "ak".into(),
            secret_key: "sk".into(),
            cloud_provider: CloudProvider::Minio,
            request_timeout: Duration::from_secs(2),
            max_retries: 3,
            ..S3Options::default()
        }
    }
}

impl Drop for ScriptedServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

#[tokio::test]
async fn throttling_and_server_errors_are_retried_until_success() {
    let server = ScriptedServer::start(vec![(503, "SlowDown"), (500, "InternalError"), (200, "")]).await;
    let store = S3ObjectStorage::connect(server.options()).await.unwrap();
    store.put("seg/0.blk", Bytes::from_static(b"block")).await.unwrap();
    let puts = server.requests("PUT");
    assert_eq!(puts.len(), 3, "{puts:?}");
    assert!(puts.iter().all(|p| p.path.starts_with("/scripted/seg/0.blk")), "path-style addressing: {puts:?}");
}

#[tokio::test]
async fn persistent_server_errors_give_unreachable_after_the_retry_budget() {
    let server = ScriptedServer::start(vec![(503, "ServiceUnavailable")]).await;
    let store = S3ObjectStorage::connect(server.options()).await.unwrap();
    let started = Instant::now();
    let err = store.put("seg/0.blk", Bytes::from_static(b"block")).await.unwrap_err();
    assert!(matches!(&err, ObjectError::Unreachable { attempts: 4, .. }), "{err}");
    assert!(err.is_retryable());
    assert!(err.to_string().contains("ServiceUnavailable"), "{err}");
    assert_eq!(server.requests("PUT").len(), 4);
    // Backoff 100 ms, 200 ms, 400 ms ceilings (jittered down to half): bounded, not instant.
    let elapsed = started.elapsed();
    assert!(elapsed >= Duration::from_millis(350) && elapsed < Duration::from_secs(5), "{elapsed:?}");
}

#[tokio::test]
async fn permanent_errors_are_not_retried() {
    let server = ScriptedServer::start(vec![(403, "AccessDenied")]).await;
    let store = S3ObjectStorage::connect(server.options()).await.unwrap();
    let err = store.put("seg/0.blk", Bytes::from_static(b"block")).await.unwrap_err();
    assert!(matches!(&err, ObjectError::Denied { op: "put", key, .. } if key == "seg/0.blk"), "{err}");
    assert_eq!(server.requests("PUT").len(), 1);

    let server = ScriptedServer::start(vec![(400, "InvalidArgument")]).await;
    let store = S3ObjectStorage::connect(server.options()).await.unwrap();
    let err = store.put("seg/0.blk", Bytes::from_static(b"block")).await.unwrap_err();
    assert!(matches!(&err, ObjectError::Other { .. }), "{err}");
    assert!(err.to_string().contains("InvalidArgument"), "{err}");
    assert_eq!(server.requests("PUT").len(), 1);
}

#[tokio::test]
async fn create_only_headers_follow_the_cloud_provider() {
    for (provider, header, value) in [
        (CloudProvider::Minio, "if-none-match", "*"),
        (CloudProvider::Aws, "if-none-match", "*"),
        (CloudProvider::Aliyun, "x-oss-forbid-overwrite", "true"),
        (CloudProvider::Tencent, "x-cos-forbid-overwrite", "true"),
    ] {
        let server = ScriptedServer::start(vec![(200, "")]).await;
        let store = S3ObjectStorage::connect(S3Options { cloud_provider: provider, ..server.options() }).await.unwrap();
        store.put_if_absent("seg/0.blk", Bytes::from_static(b"block")).await.unwrap();
        store.put_fence("seg/1.blk").await.unwrap();
        store.put("seg/2.blk", Bytes::from_static(b"plain")).await.unwrap();
        let puts = server.requests("PUT");
        assert_eq!(puts.len(), 3);
        for p in &puts[..2] {
            assert_eq!(p.header(header), Some(value), "{provider:?}: {p:?}");
            if header != "if-none-match" {
                assert_eq!(p.header("if-none-match"), None, "{provider:?}: {p:?}");
            }
            // Signed, so a proxy cannot strip it without breaking the signature.
            let auth = p.header("authorization").unwrap_or_default();
            assert!(auth.contains(header), "{provider:?}: header not signed: {auth}");
        }
        assert_eq!(puts[1].header("x-amz-meta-fenced"), Some("true"));
        assert_eq!(puts[0].header("x-amz-meta-fenced"), None);
        assert_eq!(puts[2].header(header), None, "a plain put must not be conditional");
    }
}

#[tokio::test]
async fn condition_write_disabled_sends_plain_puts() {
    let server = ScriptedServer::start(vec![(200, "")]).await;
    let store = S3ObjectStorage::connect(S3Options { condition_write: false, ..server.options() }).await.unwrap();
    store.put_if_absent("seg/0.blk", Bytes::from_static(b"block")).await.unwrap();
    store.put_fence("seg/1.blk").await.unwrap();
    let puts = server.requests("PUT");
    assert_eq!(puts.len(), 2);
    assert!(puts.iter().all(|p| p.header("if-none-match").is_none()), "{puts:?}");
    assert_eq!(puts[1].header("x-amz-meta-fenced"), Some("true"));
}

#[tokio::test]
async fn conflicts_are_resolved_by_a_head_of_the_object() {
    // 409 (AWS ConditionalRequestConflict, Aliyun FileAlreadyExists) onto a normal object.
    let server = ScriptedServer::start(vec![(409, "ConditionalRequestConflict")]).await;
    let store = S3ObjectStorage::connect(server.options()).await.unwrap();
    let err = store.put_if_absent("seg/3.blk", Bytes::from_static(b"block")).await.unwrap_err();
    assert!(matches!(&err, ObjectError::AlreadyExists { key } if key == "seg/3.blk"), "{err}");
    assert_eq!(server.requests("PUT").len(), 1);
    assert!(server.requests("HEAD").iter().any(|h| h.path.starts_with("/scripted/seg/3.blk")));

    // 412 onto an object whose HEAD carries upstream's fence metadata.
    let server =
        ScriptedServer::start_with_head(vec![(412, "PreconditionFailed")], "X-Amz-Meta-Fenced: true\r\n").await;
    let store = S3ObjectStorage::connect(server.options()).await.unwrap();
    let err = store.put_if_absent("seg/3.blk", Bytes::from_static(b"block")).await.unwrap_err();
    assert!(matches!(&err, ObjectError::Fenced { key } if key == "seg/3.blk"), "{err}");
    store.put_fence("seg/3.blk").await.unwrap();
}
