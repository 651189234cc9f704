//! `minio.useIAM` through the AWS default credential chain's container (ECS/EKS Pod Identity) and
//! instance-metadata (EC2 IMDSv2) branches, against the test bed's real MinIO.
//!
//! Both branches hand out temporary credentials (key, secret and session token). Real ones come from
//! MinIO's own STS (`AssumeRole`); a small HTTP server in this test plays the credential endpoint
//! (there is no ECS agent or EC2 metadata service here) and MinIO checks the signature and the session
//! token. The chain reads the process environment, so each case runs in a child process.

use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use woodpecker_storage::object::{CloudProvider, ObjectError, ObjectStorage, S3ObjectStorage, S3Options};

const EXPECT_ENV: &str = "WP_IAM_CHAIN_CHILD_EXPECT";

fn env(name: &str) -> String {
    match std::env::var(name) {
        Ok(v) if !v.is_empty() => v,
        _ => panic!("{name} is not set: run `scripts/testbed.sh start && eval \"$(scripts/testbed.sh env)\"` first"),
    }
}

fn iam_options() -> S3Options {
    S3Options {
        endpoint: env("WP_MINIO_ENDPOINT"),
        bucket: env("WP_MINIO_BUCKET"),
        use_iam: true,
        cloud_provider: CloudProvider::Minio,
        create_bucket: true,
        ..S3Options::default()
    }
}

/// Child of `temporary_credentials_from_the_container_and_instance_metadata_branches_reach_minio`.
#[tokio::test]
#[ignore = "helper process for temporary_credentials_from_the_container_and_instance_metadata_branches_reach_minio"]
async fn iam_chain_child() {
    let expect = std::env::var(EXPECT_ENV).expect("started by the parent test");
    match (expect.as_str(), S3ObjectStorage::connect(iam_options()).await) {
        ("ok", Ok(store)) => {
            let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos();
            let key = format!("object-s3-iam-chain/{}-{nanos}", std::process::id());
            store.put(&key, Bytes::from_static(b"via temporary credentials")).await.unwrap();
            assert_eq!(store.get(&key, None).await.unwrap(), Bytes::from_static(b"via temporary credentials"));
            store.remove(&key).await.unwrap();
        }
        ("denied", Err(ObjectError::Denied { .. })) => {}
        (expect, other) => panic!("expected {expect}, got {other:?}"),
    }
}

/// Temporary credentials for the test bed's root user from MinIO's STS.
async fn assume_role() -> (String, String, String) {
    let creds = aws_sdk_sts::config::Credentials::new(
        env("WP_MINIO_ACCESS_KEY"),
        env("WP_MINIO_SECRET_KEY"),
        None,
        None,
        "test",
    );
    let conf = aws_sdk_sts::Config::builder()
        .behavior_version(aws_sdk_sts::config::BehaviorVersion::latest())
        .region(aws_sdk_sts::config::Region::new("us-east-1"))
        .endpoint_url(env("WP_MINIO_ENDPOINT"))
        .credentials_provider(creds)
        .build();
    let out = aws_sdk_sts::Client::from_conf(conf)
        .assume_role()
        .role_arn("arn:xxx:xxx:xxx:xxxx")
        .role_session_name("woodpecker-iam-chain-test")
        .duration_seconds(900)
        .send()
        .await
        .expect("MinIO STS AssumeRole");
    let c = out.credentials().expect("credentials in the AssumeRole answer");
    (c.access_key_id().to_owned(), c.secret_access_key().to_owned(), c.session_token().to_owned())
}

/// Serves the container endpoint's JSON on any path but IMDS's, and IMDSv2's token, role list and
/// role credentials. Returns the port.
async fn credential_endpoint(key: String, secret: String, token: String) -> u16 {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let expiration = "2099-01-01T00:00:00Z";
    let json = format!(
        "{{\"Code\":\"Success\",\"LastUpdated\":\"2026-01-01T00:00:00Z\",\"Type\":\"AWS-HMAC\",\
         \"AccessKeyId\":\"{key}\",\"SecretAccessKey\":\"{secret}\",\"Token\":\"{token}\",\"Expiration\":\"{expiration}\"}}"
    );
    tokio::spawn(async move {
        while let Ok((mut sock, _)) = listener.accept().await {
            let json = json.clone();
            tokio::spawn(async move {
                let mut buf = vec![0u8; 8192];
                let Ok(n) = sock.read(&mut buf).await else { return };
                let head = String::from_utf8_lossy(&buf[..n]);
                let path = head.split_whitespace().nth(1).unwrap_or("/").to_owned();
                let body = if path.contains("/api/token") {
                    "imds-session-token".to_owned()
                } else if path.ends_with("/security-credentials/") || path.ends_with("/security-credentials-extended/")
                {
                    "wp-role".to_owned()
                } else {
                    json
                };
                let resp = format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nx-aws-ec2-metadata-token-ttl-seconds: 21600\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = sock.write_all(resp.as_bytes()).await;
                let _ = sock.shutdown().await;
            });
        }
    });
    port
}

fn run_child(expect: &str, branch: &[(&str, String)]) -> (std::process::Output, Duration) {
    let mut cmd = std::process::Command::new(std::env::current_exe().unwrap());
    cmd.args(["--exact", "iam_chain_child", "--ignored", "--nocapture"])
        .env(EXPECT_ENV, expect)
        // Only the branch under test may answer: no keys in the environment or in profile files.
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .env("AWS_CONFIG_FILE", "/nonexistent/wp-test-aws-config")
        .env("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent/wp-test-aws-credentials");
    for var in [
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
        "AWS_SESSION_TOKEN",
        "AWS_PROFILE",
        "AWS_WEB_IDENTITY_TOKEN_FILE",
        "AWS_ROLE_ARN",
        "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
        "AWS_CONTAINER_CREDENTIALS_FULL_URI",
        "AWS_CONTAINER_AUTHORIZATION_TOKEN",
        "AWS_EC2_METADATA_SERVICE_ENDPOINT",
    ] {
        cmd.env_remove(var);
    }
    for (k, v) in branch {
        cmd.env(k, v);
    }
    let started = Instant::now();
    let out = cmd.output().unwrap();
    (out, started.elapsed())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn temporary_credentials_from_the_container_and_instance_metadata_branches_reach_minio() {
    let (key, secret, token) = assume_role().await;
    let good = credential_endpoint(key.clone(), secret.clone(), token.clone()).await;
    let tampered = credential_endpoint(key, format!("{secret}x"), token).await;

    let container = |port: u16| vec![("AWS_CONTAINER_CREDENTIALS_FULL_URI", format!("http://127.0.0.1:{port}/creds"))];
    let imds = |port: u16| {
        vec![
            ("AWS_EC2_METADATA_DISABLED", "false".to_owned()),
            ("AWS_EC2_METADATA_SERVICE_ENDPOINT", format!("http://127.0.0.1:{port}")),
        ]
    };
    let cases = [
        ("container endpoint", "ok", container(good)),
        ("instance metadata", "ok", imds(good)),
        // A wrong secret from the endpoint: MinIO refuses the signature, so the credentials really came from it.
        ("container endpoint, tampered secret", "denied", container(tampered)),
    ];
    for (what, expect, branch) in cases {
        let (out, elapsed) = run_child(expect, &branch);
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success() && stdout.contains("1 passed"),
            "{what}: expected {expect}:\n{stdout}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(elapsed < Duration::from_secs(30), "{what} took {elapsed:?}");
    }
}
