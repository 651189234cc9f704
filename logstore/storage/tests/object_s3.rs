//! `S3ObjectStorage` against a real MinIO (the project's test bed).
//!
//! Needs `WP_MINIO_ENDPOINT`, `WP_MINIO_ACCESS_KEY`, `WP_MINIO_SECRET_KEY`, `WP_MINIO_BUCKET`:
//! `scripts/testbed.sh start && eval "$(scripts/testbed.sh env)"`. Without them every test fails
//! with that instruction; nothing is skipped silently.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use woodpecker_storage::object::{
    CloudProvider, ObjectError, ObjectInfo, ObjectStorage, S3ObjectStorage, S3Options, probe_condition_write,
};

fn env(name: &str) -> String {
    match std::env::var(name) {
        Ok(v) if !v.is_empty() => v,
        _ => panic!(
            "{name} is not set: these tests need the real MinIO of the test bed; run \
             `scripts/testbed.sh start && eval \"$(scripts/testbed.sh env)\"` first"
        ),
    }
}

fn options() -> S3Options {
    S3Options {
        endpoint: env("WP_MINIO_ENDPOINT"),
        bucket: env("WP_MINIO_BUCKET"),
        access_key: env("WP_MINIO_ACCESS_KEY"),
        secret_key: env("WP_MINIO_SECRET_KEY"),
        region: std::env::var("WP_MINIO_REGION").unwrap_or_default(),
        cloud_provider: CloudProvider::Minio,
        create_bucket: true,
        ..S3Options::default()
    }
}

async fn store() -> S3ObjectStorage {
    S3ObjectStorage::connect(options()).await.expect("connect to the test bed's MinIO")
}

/// A prefix no other test (or earlier run) uses.
fn unique_prefix(test: &str) -> String {
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos();
    format!("object-s3-tests/{test}-{}-{nanos}", std::process::id())
}

/// A raw SDK client on the same server, to check what is on the wire independently of our code.
async fn raw_client() -> aws_sdk_s3::Client {
    let creds = aws_sdk_s3::config::Credentials::new(
        env("WP_MINIO_ACCESS_KEY"),
        env("WP_MINIO_SECRET_KEY"),
        None,
        None,
        "test",
    );
    let conf = aws_sdk_s3::Config::builder()
        .behavior_version(aws_sdk_s3::config::BehaviorVersion::latest())
        .region(aws_sdk_s3::config::Region::new("us-east-1"))
        .endpoint_url(env("WP_MINIO_ENDPOINT"))
        .force_path_style(true)
        .credentials_provider(creds)
        .build();
    aws_sdk_s3::Client::from_conf(conf)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sixteen_racing_creates_have_exactly_one_winner() {
    let store = Arc::new(store().await);
    let prefix = unique_prefix("race");
    for round in 0..3 {
        let key = format!("{prefix}/{round}/0.blk");
        let barrier = Arc::new(tokio::sync::Barrier::new(16));
        let mut tasks = Vec::new();
        for i in 0..16u8 {
            let (store, barrier, key) = (store.clone(), barrier.clone(), key.clone());
            tasks.push(tokio::spawn(async move {
                barrier.wait().await;
                (i, store.put_if_absent(&key, Bytes::from(vec![i; 100 + usize::from(i)])).await)
            }));
        }
        let mut winners = Vec::new();
        for t in tasks {
            match t.await.unwrap() {
                (i, Ok(())) => winners.push(i),
                (_, Err(ObjectError::AlreadyExists { key: k })) => assert_eq!(k, key),
                (i, Err(e)) => panic!("round {round} task {i}: unexpected {e}"),
            }
        }
        assert_eq!(winners.len(), 1, "round {round}: winners {winners:?}");
        let w = winners[0];
        assert_eq!(store.get(&key, None).await.unwrap(), Bytes::from(vec![w; 100 + usize::from(w)]));
    }
    assert_eq!(store.remove_prefix(&prefix).await.unwrap(), 3);
}

#[tokio::test]
async fn fence_objects_are_idempotent_refuse_late_blocks_and_match_upstream_metadata() {
    let store = store().await;
    let prefix = unique_prefix("fence");
    let fence = format!("{prefix}/5.blk");

    store.put_fence(&fence).await.unwrap();
    store.put_fence(&fence).await.unwrap();
    assert_eq!(store.stat(&fence).await.unwrap(), ObjectInfo { key: fence.clone(), size: 1, fenced: true });
    assert_eq!(store.get(&fence, None).await.unwrap(), &b"F"[..]);

    // A stale writer's If-None-Match upload onto the fence: 412, then HEAD says fenced.
    let err = store.put_if_absent(&fence, Bytes::from_static(b"late block")).await.unwrap_err();
    assert!(matches!(&err, ObjectError::Fenced { key } if *key == fence), "{err}");
    assert!(!err.is_retryable());
    assert_eq!(store.get(&fence, None).await.unwrap(), &b"F"[..]);

    // Fencing onto a real block is refused and leaves it intact, even a 1-byte one.
    let block = format!("{prefix}/4.blk");
    store.put_if_absent(&block, Bytes::from_static(b"F")).await.unwrap();
    let err = store.put_fence(&block).await.unwrap_err();
    assert!(matches!(&err, ObjectError::AlreadyExists { key } if *key == block), "{err}");
    assert!(!store.stat(&block).await.unwrap().fenced);

    // On the wire it is what upstream writes: body "F" and `x-amz-meta-fenced: true`.
    let raw = raw_client().await;
    let head = raw.head_object().bucket(env("WP_MINIO_BUCKET")).key(&fence).send().await.unwrap();
    assert_eq!(head.metadata().and_then(|m| m.get("fenced")).map(String::as_str), Some("true"));
    assert_eq!(head.content_length(), Some(1));

    // A fence written by upstream's minio-go (`UserMetadata{"Fenced": "true"}`) is recognised too.
    let upstream_fence = format!("{prefix}/9.blk");
    raw.put_object()
        .bucket(env("WP_MINIO_BUCKET"))
        .key(&upstream_fence)
        .metadata("Fenced", "true")
        .body(Bytes::from_static(b"F").into())
        .send()
        .await
        .unwrap();
    assert!(store.stat(&upstream_fence).await.unwrap().fenced);
    assert!(matches!(
        store.put_if_absent(&upstream_fence, Bytes::from_static(b"x")).await,
        Err(ObjectError::Fenced { .. })
    ));

    let listed = store.list(&format!("{prefix}/")).await.unwrap();
    let flags: Vec<(String, bool)> = listed.into_iter().map(|o| (o.key, o.fenced)).collect();
    assert_eq!(flags, vec![(block.clone(), false), (fence.clone(), true), (upstream_fence.clone(), true)]);

    assert_eq!(store.remove_prefix(&prefix).await.unwrap(), 3);
}

#[tokio::test]
async fn ranged_get_returns_exactly_the_requested_bytes() {
    let store = store().await;
    let key = format!("{}/0.blk", unique_prefix("range"));
    let body: Vec<u8> = (0..=255u8).cycle().take(100_000).collect();
    store.put(&key, Bytes::from(body.clone())).await.unwrap();

    assert_eq!(store.get(&key, None).await.unwrap(), body);
    assert_eq!(store.get(&key, Some(0..9)).await.unwrap(), body[0..9]);
    assert_eq!(store.get(&key, Some(99_947..100_000)).await.unwrap(), body[99_947..]);
    assert_eq!(store.get(&key, Some(50_000..50_001)).await.unwrap(), body[50_000..50_001]);
    assert_eq!(store.get(&key, Some(99_990..200_000)).await.unwrap(), body[99_990..]);
    assert_eq!(store.get(&key, Some(7..7)).await.unwrap(), &b""[..]);
    assert!(matches!(store.get(&key, Some(100_000..100_010)).await, Err(ObjectError::InvalidRange { .. })));
    assert_eq!(store.stat(&key).await.unwrap().size, 100_000);

    let missing = format!("{key}.missing");
    assert!(matches!(store.get(&missing, Some(0..10)).await, Err(ObjectError::NotFound { key }) if key == missing));
    assert!(matches!(store.get(&missing, Some(3..3)).await, Err(ObjectError::NotFound { .. })));
    assert!(matches!(store.stat(&missing).await, Err(ObjectError::NotFound { .. })));
    store.remove(&key).await.unwrap();
    store.remove(&key).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn list_and_remove_prefix_page_through_more_than_a_thousand_keys() {
    use futures::StreamExt;
    let store = Arc::new(store().await);
    let prefix = unique_prefix("many");
    let n = 1105;
    let results: Vec<Result<(), ObjectError>> = futures::stream::iter(0..n)
        .map(|i| {
            let store = store.clone();
            let key = format!("{prefix}/{i:05}.blk");
            async move { store.put(&key, Bytes::from(format!("body {i}"))).await }
        })
        .buffer_unordered(32)
        .collect()
        .await;
    assert!(results.iter().all(Result::is_ok), "some puts failed");
    // A sibling that shares the string prefix but not the directory must not be listed.
    store.put(&format!("{prefix}x/other"), Bytes::from_static(b"x")).await.unwrap();

    let listed = store.list(&format!("{prefix}/")).await.unwrap();
    assert_eq!(listed.len(), n);
    for (i, o) in listed.iter().enumerate() {
        assert_eq!(o.key, format!("{prefix}/{i:05}.blk"));
        assert_eq!(o.size, format!("body {i}").len() as u64);
    }
    assert_eq!(store.list(&prefix).await.unwrap().len(), n + 1);
    assert_eq!(store.remove_prefix(&format!("{prefix}/")).await.unwrap(), n);
    assert!(store.list(&format!("{prefix}/")).await.unwrap().is_empty());
    assert_eq!(store.remove_prefix(&prefix).await.unwrap(), 1);
}

#[tokio::test]
async fn minio_passes_the_condition_write_probe_and_it_cleans_up() {
    let store = store().await;
    let root = unique_prefix("probe");
    assert!(probe_condition_write(&store, &root).await.unwrap());
    assert!(store.list(&root).await.unwrap().is_empty(), "probe objects left behind");
}

#[tokio::test]
async fn with_condition_write_disabled_creates_are_plain_puts_and_the_probe_says_so() {
    let store = S3ObjectStorage::connect(S3Options { condition_write: false, ..options() }).await.unwrap();
    assert!(!store.condition_write());
    let prefix = unique_prefix("nocond");
    let key = format!("{prefix}/0.blk");
    store.put_if_absent(&key, Bytes::from_static(b"one")).await.unwrap();
    // Upstream §9.3: without conditions the second create silently overwrites.
    store.put_if_absent(&key, Bytes::from_static(b"two")).await.unwrap();
    assert_eq!(store.get(&key, None).await.unwrap(), &b"two"[..]);
    assert!(!probe_condition_write(&store, &prefix).await.unwrap());
    store.remove_prefix(&prefix).await.unwrap();
}

#[tokio::test]
async fn unreachable_endpoint_fails_fast_with_a_typed_error() {
    let started = Instant::now();
    let opts = S3Options { endpoint: "127.0.0.1:1".into(), ..options() };
    let err = S3ObjectStorage::connect(opts).await.unwrap_err();
    let elapsed = started.elapsed();
    eprintln!("unreachable: {err}");
    match &err {
        ObjectError::Unreachable { endpoint, attempts, .. } => {
            assert!(endpoint.contains("127.0.0.1:1"), "{endpoint}");
            assert_eq!(*attempts, 3);
        }
        other => panic!("expected Unreachable, got {other}"),
    }
    assert!(err.is_retryable());
    assert!(elapsed < Duration::from_secs(10), "took {elapsed:?}");
    let message = err.to_string();
    assert!(message.contains("127.0.0.1:1") && message.contains("3 attempt"), "{message}");
}

#[tokio::test]
async fn blackholed_endpoint_times_out_instead_of_hanging() {
    // A listener that accepts connections and never answers: every attempt hits the timeout.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let hold = tokio::spawn(async move {
        let mut open = Vec::new();
        while let Ok((sock, _)) = listener.accept().await {
            open.push(sock);
        }
    });
    let started = Instant::now();
    let opts = S3Options {
        endpoint: addr.to_string(),
        request_timeout: Duration::from_millis(500),
        max_retries: 1,
        ..options()
    };
    let err = S3ObjectStorage::connect(opts).await.unwrap_err();
    assert!(matches!(err, ObjectError::Unreachable { attempts: 2, .. }), "{err}");
    assert!(started.elapsed() < Duration::from_secs(5), "took {:?}", started.elapsed());
    hold.abort();
}

#[tokio::test]
async fn wrong_credentials_are_denied() {
    let opts = S3Options { secret_key: "definitely-wrong".into(), ..options() };
    let err = S3ObjectStorage::connect(opts).await.unwrap_err();
    eprintln!("denied: {err}");
    assert!(matches!(err, ObjectError::Denied { .. }), "{err}");
    assert!(!err.is_retryable());

    // An unknown access key is refused at once too, not retried.
    let opts = S3Options { access_key: "no-such-user".into(), create_bucket: false, ..options() };
    let started = Instant::now();
    let err = S3ObjectStorage::connect(opts).await.unwrap_err();
    assert!(matches!(&err, ObjectError::Denied { op: "head_bucket", .. }), "{err}");
    assert!(started.elapsed() < Duration::from_secs(2), "a denial must not be retried");
}

#[tokio::test]
async fn missing_bucket_is_created_or_reported() {
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos();
    let bucket = format!("wp-object-tests-{}", nanos % 1_000_000_000_000);
    let err = S3ObjectStorage::connect(S3Options { bucket: bucket.clone(), create_bucket: false, ..options() })
        .await
        .unwrap_err();
    assert!(matches!(&err, ObjectError::BucketMissing { bucket: b, .. } if *b == bucket), "{err}");

    let store =
        S3ObjectStorage::connect(S3Options { bucket: bucket.clone(), create_bucket: true, ..options() }).await.unwrap();
    store.put("k", Bytes::from_static(b"v")).await.unwrap();
    assert_eq!(store.get("k", None).await.unwrap(), &b"v"[..]);
    // Connecting again to the now existing bucket is fine, creating or not.
    S3ObjectStorage::connect(S3Options { bucket: bucket.clone(), create_bucket: true, ..options() }).await.unwrap();
    store.remove("k").await.unwrap();
    raw_client().await.delete_bucket().bucket(&bucket).send().await.unwrap();
    assert!(store.describe().contains(&bucket));
}

#[tokio::test]
async fn usable_as_a_shared_trait_object() {
    let store: Arc<dyn ObjectStorage> = Arc::new(store().await);
    let prefix = unique_prefix("dyn");
    let key = format!("{prefix}/footer.blk");
    store.put_if_absent(&key, Bytes::from_static(b"footer")).await.unwrap();
    assert!(matches!(
        store.put_if_absent(&key, Bytes::from_static(b"footer")).await,
        Err(ObjectError::AlreadyExists { .. })
    ));
    assert!(store.describe().starts_with("s3://"));
    assert_eq!(store.remove_prefix(&prefix).await.unwrap(), 1);
}

const IAM_EXPECT_ENV: &str = "WP_OBJECT_IAM_CHILD_EXPECT";

/// Child process of `iam_mode_uses_the_default_credential_chain`, which sets its environment.
#[tokio::test]
#[ignore = "helper process for iam_mode_uses_the_default_credential_chain"]
async fn iam_child() {
    let expect = std::env::var(IAM_EXPECT_ENV).expect("started by iam_mode_uses_the_default_credential_chain");
    let opts = S3Options { use_iam: true, access_key: String::new(), secret_key: String::new(), ..options() };
    let result = S3ObjectStorage::connect(opts).await;
    match (expect.as_str(), result) {
        ("ok", Ok(store)) => {
            let key = format!("{}/iam", unique_prefix("iam"));
            store.put(&key, Bytes::from_static(b"via the default chain")).await.unwrap();
            store.remove(&key).await.unwrap();
        }
        ("denied", Err(ObjectError::Denied { message, .. })) => {
            assert!(message.contains("credentials"), "{message}");
        }
        (expect, other) => panic!("expected {expect}, got {other:?}"),
    }
}

#[tokio::test]
async fn iam_mode_uses_the_default_credential_chain() {
    // The chain reads the process environment, so each case runs in a child process.
    let run = |expect: &str, with_keys: bool| {
        let mut cmd = std::process::Command::new(std::env::current_exe().unwrap());
        cmd.args(["--exact", "iam_child", "--ignored", "--nocapture"])
            .env(IAM_EXPECT_ENV, expect)
            .env("AWS_EC2_METADATA_DISABLED", "true")
            .env("AWS_CONFIG_FILE", "/nonexistent/wp-test-aws-config")
            .env("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent/wp-test-aws-credentials")
            .env_remove("AWS_PROFILE")
            .env_remove("AWS_SESSION_TOKEN")
            .env_remove("AWS_WEB_IDENTITY_TOKEN_FILE")
            .env_remove("AWS_CONTAINER_CREDENTIALS_RELATIVE_URI")
            .env_remove("AWS_CONTAINER_CREDENTIALS_FULL_URI");
        if with_keys {
            cmd.env("AWS_ACCESS_KEY_ID", env("WP_MINIO_ACCESS_KEY"))
                .env("AWS_SECRET_ACCESS_KEY", env("WP_MINIO_SECRET_KEY"));
        } else {
            cmd.env_remove("AWS_ACCESS_KEY_ID").env_remove("AWS_SECRET_ACCESS_KEY");
        }
        let started = Instant::now();
        let out = cmd.output().unwrap();
        (out, started.elapsed())
    };
    for (expect, with_keys) in [("ok", true), ("denied", false)] {
        let (out, elapsed) = run(expect, with_keys);
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success() && stdout.contains("1 passed"),
            "IAM case `{expect}` failed:\n{stdout}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(elapsed < Duration::from_secs(20), "IAM case `{expect}` took {elapsed:?}");
    }
}

#[tokio::test]
async fn a_precomputed_payload_digest_is_what_the_request_is_signed_with() {
    use sha2::{Digest, Sha256};
    let s = store().await;
    let prefix = unique_prefix("hashed");
    let body = Bytes::from(vec![0x42u8; 300_000]);
    let digest: [u8; 32] = Sha256::digest(&body).into();
    let key = format!("{prefix}ok.blk");
    s.put_if_absent_hashed(&key, body.clone(), digest).await.unwrap();
    assert_eq!(s.get(&key, None).await.unwrap(), body);
    // The same create again is refused as for put_if_absent.
    assert!(matches!(s.put_if_absent_hashed(&key, body.clone(), digest).await, Err(ObjectError::AlreadyExists { .. })));
    // MinIO checks the signed digest against the body: a wrong one is rejected and nothing is stored, which
    // shows the digest sent is the caller's and not one the SDK computed itself.
    let mut wrong = digest;
    wrong[0] ^= 1;
    let bad = format!("{prefix}bad.blk");
    assert!(s.put_if_absent_hashed(&bad, body, wrong).await.is_err());
    assert!(matches!(s.stat(&bad).await, Err(ObjectError::NotFound { .. })));
    s.remove_prefix(&prefix).await.unwrap();
}
