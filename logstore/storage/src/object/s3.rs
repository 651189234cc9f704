//! S3-compatible backend (MinIO, AWS S3, GCS XML API, Aliyun OSS, Tencent COS) over `aws-sdk-s3`.
//!
//! * The SDK's own retries are off: every call goes through one retry loop (`with_retry`), which
//!   retries only transient failures (network, timeouts, 5xx, throttling) with bounded,
//!   jittered exponential backoff and then reports [`ObjectError::Unreachable`]. Permanent answers
//!   (404, 403, 412, …) return at once.
//! * Create-if-absent sends `If-None-Match: *` (Aliyun: `x-oss-forbid-overwrite: true`, Tencent:
//!   `x-cos-forbid-overwrite: true`). A 412, or a 409 some providers answer instead, is resolved
//!   with a HEAD: fence metadata → `Fenced`, anything else → `AlreadyExists`.
//! * Credentials: static keys, or (`use_iam`) `aws-config`'s default chain built without default
//!   features: environment, shared profile files (static keys, assume-role, web identity), web
//!   identity token (EKS IRSA), ECS container and EC2 instance metadata. SSO and
//!   `credential_process` profiles are not available (they need aws-config features we leave off).

use std::ops::Range;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use aws_credential_types::provider::error::CredentialsError;
use aws_runtime::auth::PayloadSigningOverride;
use aws_sdk_s3::Client;
use aws_sdk_s3::config::retry::RetryConfig;
use aws_sdk_s3::config::timeout::TimeoutConfig;
use aws_sdk_s3::config::{
    BehaviorVersion, Credentials, Region, RequestChecksumCalculation, ResponseChecksumValidation,
};
use aws_sdk_s3::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{BucketLocationConstraint, CreateBucketConfiguration};
use aws_smithy_runtime_api::client::interceptors::Intercept;
use aws_smithy_runtime_api::client::interceptors::context::BeforeTransmitInterceptorContextMut;
use aws_smithy_runtime_api::client::orchestrator::HttpResponse;
use aws_smithy_runtime_api::client::runtime_components::RuntimeComponents;
use aws_smithy_types::config_bag::ConfigBag;
use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};

use super::error::BoxError;
use super::keys::validate_key;
use super::{FENCE_BODY, FENCE_METADATA_KEY, ObjectError, ObjectInfo, ObjectStorage};
use woodpecker_core::retry::RetryPolicy;

/// Region used when none is configured (`minio.region` empty).
pub const DEFAULT_REGION: &str = "us-east-1";

/// Objects deleted concurrently by `remove_prefix` (GCS has no multi-object delete, so we do
/// single deletes everywhere).
const DELETE_CONCURRENCY: usize = 16;

/// HEADs issued concurrently by `list` to learn whether 1-byte objects are fences.
const HEAD_CONCURRENCY: usize = 16;

/// Attempts `connect` makes before declaring the endpoint unreachable.
const CONNECT_MAX_ATTEMPTS: u32 = 3;

/// `minio.cloudProvider`: which dialect of S3 the endpoint speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CloudProvider {
    /// Amazon S3 (upstream's default value).
    Aws,
    /// MinIO.
    Minio,
    /// Google Cloud Storage through its S3-compatible XML API.
    Gcp,
    /// Alibaba Cloud OSS (`x-oss-forbid-overwrite` instead of `If-None-Match`).
    Aliyun,
    /// Tencent COS (`x-cos-forbid-overwrite` instead of `If-None-Match`).
    Tencent,
    /// Azure Blob Storage: needs its own backend, rejected by [`S3ObjectStorage::connect`].
    Azure,
}

impl FromStr for CloudProvider {
    type Err = ObjectError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "aws" => Ok(CloudProvider::Aws),
            "minio" => Ok(CloudProvider::Minio),
            "gcp" => Ok(CloudProvider::Gcp),
            "aliyun" => Ok(CloudProvider::Aliyun),
            "tencent" => Ok(CloudProvider::Tencent),
            "azure" => Ok(CloudProvider::Azure),
            other => Err(ObjectError::InvalidConfig {
                field: "minio.cloudProvider",
                message: format!("`{other}` is not one of aws, minio, gcp, aliyun, tencent, azure"),
            }),
        }
    }
}

impl CloudProvider {
    /// Header that makes a PUT create-only, as (name, value).
    fn create_only_header(self) -> (&'static str, &'static str) {
        match self {
            CloudProvider::Aliyun => ("x-oss-forbid-overwrite", "true"),
            CloudProvider::Tencent => ("x-cos-forbid-overwrite", "true"),
            CloudProvider::Aws | CloudProvider::Minio | CloudProvider::Gcp | CloudProvider::Azure => {
                ("if-none-match", "*")
            }
        }
    }
}

impl S3Options {
    /// The connection `minio.*` of a `woodpecker.yaml` describes, with conditional writes on (callers may
    /// turn them off). Fails only on an unknown `minio.cloudProvider`, naming it.
    pub fn from_config(m: &woodpecker_core::config::MinioConfig) -> Result<Self, String> {
        let cloud_provider =
            m.cloud_provider.parse().map_err(|e| format!("minio.cloudProvider {:?}: {e}", m.cloud_provider))?;
        Ok(Self {
            endpoint: format!("{}:{}", m.address, m.port),
            use_ssl: m.use_ssl,
            bucket: m.bucket_name.clone(),
            region: if m.region.is_empty() { DEFAULT_REGION.to_owned() } else { m.region.clone() },
            access_key: m.access_key_id.clone(),
            secret_key: m.secret_access_key.clone(),
            use_iam: m.use_iam,
            cloud_provider,
            use_virtual_host: m.use_virtual_host,
            // Unset (or the seed's placeholder) trusts the system roots; a set path must be readable.
            ca_cert_path: m.ssl.ca_cert_path().filter(|_| m.uses_https()).map(PathBuf::from),
            create_bucket: m.create_bucket,
            condition_write: true,
            request_timeout: m.request_timeout,
            ..Self::default()
        })
    }
}

/// Everything [`S3ObjectStorage::connect`] needs, as plain values (the config layer fills it
/// from `woodpecker.yaml`'s `minio.*` keys). `Debug` redacts the secret key.
#[derive(Clone)]
pub struct S3Options {
    /// `minio.address:minio.port`, or a full URL (`http://host:port`) whose scheme wins over `use_ssl`.
    pub endpoint: String,
    /// `minio.useSSL`: https instead of http when `endpoint` has no scheme.
    pub use_ssl: bool,
    /// `minio.bucketName`.
    pub bucket: String,
    /// `minio.region`; empty means [`DEFAULT_REGION`].
    pub region: String,
    /// `minio.accessKeyID` (ignored with `use_iam`).
    pub access_key: String,
    /// `minio.secretAccessKey` (ignored with `use_iam`).
    pub secret_key: String,
    /// `minio.useIAM`: take credentials from the default AWS chain instead of the keys above.
    pub use_iam: bool,
    /// `minio.cloudProvider`.
    pub cloud_provider: CloudProvider,
    /// `minio.useVirtualHost`: bucket in the host name instead of the path.
    pub use_virtual_host: bool,
    /// PEM file of extra CA certificates to trust for https (`minio.ssl.tlsCACert`), if any.
    pub ca_cert_path: Option<PathBuf>,
    /// `minio.createBucket`: create the bucket when it is missing.
    pub create_bucket: bool,
    /// Send create-only headers; when false, conditional writes are plain PUTs (upstream §9.3).
    pub condition_write: bool,
    /// Bound of one HTTP attempt (connect, send, receive the whole body).
    pub request_timeout: Duration,
    /// Bound of establishing one TCP/TLS connection.
    pub connect_timeout: Duration,
    /// Retries after the first attempt for transient failures.
    pub max_retries: u32,
}

impl std::fmt::Debug for S3Options {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("S3Options")
            .field("endpoint", &self.endpoint)
            .field("use_ssl", &self.use_ssl)
            .field("bucket", &self.bucket)
            .field("region", &self.region)
            .field("access_key", &self.access_key)
            .field("secret_key", &if self.secret_key.is_empty() { "" } else { "<redacted>" })
            .field("use_iam", &self.use_iam)
            .field("cloud_provider", &self.cloud_provider)
            .field("use_virtual_host", &self.use_virtual_host)
            .field("ca_cert_path", &self.ca_cert_path)
            .field("create_bucket", &self.create_bucket)
            .field("condition_write", &self.condition_write)
            .field("request_timeout", &self.request_timeout)
            .field("connect_timeout", &self.connect_timeout)
            .field("max_retries", &self.max_retries)
            .finish()
    }
}

impl Default for S3Options {
    fn default() -> Self {
        Self {
            endpoint: "localhost:9000".into(),
            use_ssl: false,
            bucket: "a-bucket".into(),
            region: String::new(),
            access_key: String::new(),
            secret_key: String::new(),
            use_iam: false,
            cloud_provider: CloudProvider::Aws,
            use_virtual_host: false,
            ca_cert_path: None,
            create_bucket: true,
            condition_write: true,
            request_timeout: Duration::from_secs(10),
            connect_timeout: Duration::from_secs(3),
            max_retries: 3,
        }
    }
}

impl S3Options {
    /// The endpoint as a URL, with the scheme implied by `use_ssl` when absent.
    fn endpoint_url(&self) -> Result<String, ObjectError> {
        let endpoint = self.endpoint.trim().trim_end_matches('/');
        if endpoint.is_empty() {
            return Err(ObjectError::InvalidConfig { field: "minio.address", message: "endpoint is empty".into() });
        }
        if endpoint.contains("://") {
            if !(endpoint.starts_with("http://") || endpoint.starts_with("https://")) {
                return Err(ObjectError::InvalidConfig {
                    field: "minio.address",
                    message: format!("`{endpoint}`: only http:// and https:// are supported"),
                });
            }
            return Ok(endpoint.to_owned());
        }
        let scheme = if self.use_ssl { "https" } else { "http" };
        Ok(format!("{scheme}://{endpoint}"))
    }

    fn validate(&self) -> Result<(), ObjectError> {
        if self.cloud_provider == CloudProvider::Azure {
            return Err(ObjectError::InvalidConfig {
                field: "minio.cloudProvider",
                message: "azure is not S3-compatible; it needs the Azure Blob backend".into(),
            });
        }
        if self.bucket.is_empty() {
            return Err(ObjectError::InvalidConfig {
                field: "minio.bucketName",
                message: "bucket name is empty".into(),
            });
        }
        if !self.use_iam && (self.access_key.is_empty() || self.secret_key.is_empty()) {
            return Err(ObjectError::InvalidConfig {
                field: "minio.accessKeyID",
                message: "access key or secret key is empty (set both, or useIAM: true)".into(),
            });
        }
        if self.request_timeout.is_zero() {
            return Err(ObjectError::InvalidConfig {
                field: "minio.requestTimeoutMs",
                message: "request timeout must be positive".into(),
            });
        }
        if self.connect_timeout.is_zero() {
            return Err(ObjectError::InvalidConfig {
                field: "minio.connectTimeout",
                message: "connect timeout must be positive".into(),
            });
        }
        Ok(())
    }
}

/// An S3 bucket as an [`ObjectStorage`].
#[derive(Debug, Clone)]
pub struct S3ObjectStorage {
    client: Client,
    bucket: String,
    provider: CloudProvider,
    condition_write: bool,
    retry: RetryPolicy,
    request_timeout: Duration,
    description: String,
}

/// How one failed SDK call should be treated.
enum Failure {
    /// Worth another attempt (network, timeout, 5xx, throttling, a 409 conflict still settling).
    Transient(BoxError),
    /// The answer; stop.
    Final(ObjectError),
}

/// What an S3 error means, before the operation decides what to do with it.
enum Class {
    Transient(BoxError),
    NotFound,
    NoSuchBucket,
    Precondition,
    Conflict(String),
    Denied(String),
    InvalidRange,
    /// The TLS handshake failed (the reason from rustls): a configuration problem, not retried.
    Tls(String),
    Permanent(String),
}

impl S3ObjectStorage {
    /// Builds the client, checks the bucket (creating it when `opts.create_bucket`), and fails
    /// with a typed error instead of hanging when the endpoint is unreachable (at most
    /// 3 attempts of `connect_timeout`/`request_timeout` each).
    pub async fn connect(opts: S3Options) -> Result<Self, ObjectError> {
        opts.validate()?;
        let endpoint_url = opts.endpoint_url()?;
        let region = if opts.region.is_empty() { DEFAULT_REGION.to_owned() } else { opts.region.clone() };

        let mut builder = aws_sdk_s3::Config::builder()
            .behavior_version(BehaviorVersion::latest())
            .region(Region::new(region.clone()))
            .endpoint_url(&endpoint_url)
            .force_path_style(!opts.use_virtual_host)
            // Our loop retries; the SDK's would hide attempts and retry permanent answers' causes.
            .retry_config(RetryConfig::disabled())
            .timeout_config(
                TimeoutConfig::builder()
                    .connect_timeout(opts.connect_timeout)
                    .operation_attempt_timeout(opts.request_timeout)
                    .build(),
            )
            // Trailing CRC checksums on every PUT are not understood by every S3 look-alike.
            .request_checksum_calculation(RequestChecksumCalculation::WhenRequired)
            .response_checksum_validation(ResponseChecksumValidation::WhenRequired);

        builder = if opts.use_iam {
            let chain = aws_config::default_provider::credentials::DefaultCredentialsChain::builder()
                .region(Region::new(region.clone()))
                .build()
                .await;
            builder.credentials_provider(chain)
        } else {
            builder.credentials_provider(Credentials::new(
                opts.access_key.clone(),
                opts.secret_key.clone(),
                None,
                None,
                "woodpecker-static",
            ))
        };

        if let Some(path) = &opts.ca_cert_path {
            use aws_smithy_http_client::tls::{Provider, TlsContext, TrustStore, rustls_provider::CryptoMode};
            let pem = std::fs::read(path).map_err(|e| ObjectError::io(path, e))?;
            // The TLS layer skips what it cannot parse, which would surface only as "unknown issuer".
            if !pem.windows(27).any(|w| w == b"-----BEGIN CERTIFICATE-----") {
                return Err(ObjectError::InvalidConfig {
                    field: "minio.ssl.tlsCACert",
                    message: format!("{} holds no PEM certificate", path.display()),
                });
            }
            let tls = TlsContext::builder()
                .with_trust_store(TrustStore::default().with_pem_certificate(pem))
                .build()
                .map_err(|e| ObjectError::InvalidConfig {
                field: "minio.ssl.tlsCACert",
                message: format!("{}: {}", path.display(), error_chain(&e)),
            })?;
            let http = aws_smithy_http_client::Builder::new()
                .tls_provider(Provider::Rustls(CryptoMode::AwsLc))
                .tls_context(tls)
                .build_https();
            builder = builder.http_client(http);
        }

        let retry = RetryPolicy { max_attempts: opts.max_retries.saturating_add(1), ..RetryPolicy::default() };
        let store = Self {
            client: Client::from_conf(builder.build()),
            bucket: opts.bucket.clone(),
            provider: opts.cloud_provider,
            condition_write: opts.condition_write,
            retry,
            request_timeout: opts.request_timeout,
            description: format!("s3://{}@{}", opts.bucket, endpoint_url),
        };
        store.ensure_bucket(opts.create_bucket, &region).await?;
        Ok(store)
    }

    /// The bucket this store writes to.
    pub fn bucket(&self) -> &str {
        &self.bucket
    }

    /// Whether conditional writes send create-only headers (false: plain PUTs, upstream §9.3).
    pub fn condition_write(&self) -> bool {
        self.condition_write
    }

    async fn ensure_bucket(&self, create: bool, region: &str) -> Result<(), ObjectError> {
        let connect_retry =
            RetryPolicy { max_attempts: self.retry.max_attempts.min(CONNECT_MAX_ATTEMPTS), ..self.retry };
        let exists = self
            .with_policy(connect_retry, || async {
                match self.client.head_bucket().bucket(&self.bucket).send().await {
                    Ok(_) => Ok(true),
                    Err(e) => match classify(e) {
                        Class::NotFound | Class::NoSuchBucket => Ok(false),
                        other => Err(self.fail("head_bucket", "", other)),
                    },
                }
            })
            .await?;
        if exists {
            return Ok(());
        }
        if !create {
            return Err(self.bucket_missing());
        }
        tracing::info!(store = %self.description, "creating missing bucket");
        self.with_policy(connect_retry, || async {
            let mut req = self.client.create_bucket().bucket(&self.bucket);
            if self.provider == CloudProvider::Aws && region != DEFAULT_REGION {
                req = req.create_bucket_configuration(
                    CreateBucketConfiguration::builder()
                        .location_constraint(BucketLocationConstraint::from(region))
                        .build(),
                );
            }
            match req.send().await {
                Ok(_) => Ok(()),
                Err(e) => match classify(e) {
                    // Created concurrently (by us or by someone else): the HEAD below tells which.
                    Class::Conflict(_) => Ok(()),
                    other => Err(self.fail("create_bucket", "", other)),
                },
            }
        })
        .await?;
        self.with_policy(connect_retry, || async {
            self.client
                .head_bucket()
                .bucket(&self.bucket)
                .send()
                .await
                .map(|_| ())
                .map_err(|e| self.fail("head_bucket", "", classify(e)))
        })
        .await
    }

    /// Runs `attempt` until it succeeds, fails permanently, or the retry budget is spent.
    async fn with_retry<T, F, Fut>(&self, attempt: F) -> Result<T, ObjectError>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, Failure>>,
    {
        self.with_policy(self.retry, attempt).await
    }

    async fn with_policy<T, F, Fut>(&self, policy: RetryPolicy, mut attempt: F) -> Result<T, ObjectError>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, Failure>>,
    {
        let max_attempts = policy.max_attempts.max(1);
        let mut n = 1;
        loop {
            match attempt().await {
                Ok(v) => return Ok(v),
                Err(Failure::Final(e)) => return Err(e),
                Err(Failure::Transient(source)) if n >= max_attempts => {
                    return Err(ObjectError::Unreachable { endpoint: self.description.clone(), attempts: n, source });
                }
                Err(Failure::Transient(source)) => {
                    let delay = policy.delay(n);
                    tracing::debug!(store = %self.description, attempt = n, ?delay, error = %source, "transient object storage failure, retrying");
                    tokio::time::sleep(delay).await;
                    n += 1;
                }
            }
        }
    }

    /// Turns a classified error into the operation's failure, for the cases every operation
    /// treats alike.
    fn fail(&self, op: &'static str, key: &str, class: Class) -> Failure {
        match class {
            Class::Transient(e) => Failure::Transient(e),
            Class::NotFound => Failure::Final(ObjectError::NotFound { key: key.to_owned() }),
            Class::NoSuchBucket => Failure::Final(self.bucket_missing()),
            Class::Denied(message) => Failure::Final(ObjectError::Denied {
                endpoint: self.description.clone(),
                op,
                key: key.to_owned(),
                message,
            }),
            Class::Precondition => Failure::Final(ObjectError::Other {
                op,
                key: key.to_owned(),
                message: "unexpected precondition failure (HTTP 412)".into(),
            }),
            Class::InvalidRange => Failure::Final(ObjectError::Other {
                op,
                key: key.to_owned(),
                message: "unexpected invalid range (HTTP 416)".into(),
            }),
            Class::Conflict(message) | Class::Permanent(message) => {
                Failure::Final(ObjectError::Other { op, key: key.to_owned(), message })
            }
            Class::Tls(reason) => Failure::Final(ObjectError::Tls { endpoint: self.description.clone(), reason }),
        }
    }

    fn bucket_missing(&self) -> ObjectError {
        ObjectError::BucketMissing { bucket: self.bucket.clone(), endpoint: self.description.clone() }
    }

    /// One HEAD, mapped: `Ok(None)` when absent.
    async fn head(&self, key: &str) -> Result<Option<ObjectInfo>, Failure> {
        match self.client.head_object().bucket(&self.bucket).key(key).send().await {
            Ok(out) => {
                let fenced = out.metadata().is_some_and(|m| {
                    m.iter().any(|(k, v)| k.eq_ignore_ascii_case(FENCE_METADATA_KEY) && v.eq_ignore_ascii_case("true"))
                });
                let size = out.content_length().unwrap_or(0).max(0) as u64;
                Ok(Some(ObjectInfo { key: key.to_owned(), size, fenced }))
            }
            Err(e) => match classify(e) {
                Class::NotFound => Ok(None),
                other => Err(self.fail("stat", key, other)),
            },
        }
    }

    /// A conditional PUT of `body` (a fence when `fence`): one attempt, with 412/409 resolved by HEAD.
    async fn create_once(
        &self,
        op: &'static str,
        key: &str,
        body: &Bytes,
        fence: bool,
        sha256: Option<&str>,
    ) -> Result<(), Failure> {
        let sent = self.send_put(key, body, fence, true, sha256).await;
        let class = match sent {
            Ok(()) => return Ok(()),
            Err(class) => class,
        };
        let conflict_detail = match class {
            Class::Precondition => "HTTP 412 PreconditionFailed".to_owned(),
            Class::Conflict(message) => message,
            other => return Err(self.fail(op, key, other)),
        };
        match self.head(key).await? {
            Some(info) if info.fenced && fence => Ok(()),
            Some(info) if info.fenced => Err(Failure::Final(ObjectError::Fenced { key: key.to_owned() })),
            Some(_) => Err(Failure::Final(ObjectError::AlreadyExists { key: key.to_owned() })),
            // The conflicting write has not landed (409) or was removed since: try again.
            None => {
                Err(Failure::Transient(format!("{op} `{key}`: {conflict_detail}, but the object is absent").into()))
            }
        }
    }

    /// A PUT without conditions (condition write disabled): on error, HEAD to tell a fence or an
    /// identical object from a real failure, as upstream does.
    async fn create_unconditionally(
        &self,
        op: &'static str,
        key: &str,
        body: Bytes,
        fence: bool,
        sha256: Option<&str>,
    ) -> Result<(), ObjectError> {
        let put = self
            .with_retry(|| async {
                self.send_put(key, &body, fence, false, sha256).await.map_err(|class| self.fail(op, key, class))
            })
            .await;
        let err = match put {
            Ok(()) => return Ok(()),
            Err(e) => e,
        };
        // Same decisions as upstream's `put*WhenConditionWriteDisabled`.
        match self.stat(key).await {
            Ok(info) if info.fenced && fence => Ok(()),
            Ok(info) if info.fenced => Err(ObjectError::Fenced { key: key.to_owned() }),
            Ok(_) if fence => Err(ObjectError::AlreadyExists { key: key.to_owned() }),
            Ok(info) if info.size == body.len() as u64 => Err(ObjectError::AlreadyExists { key: key.to_owned() }),
            _ => Err(err),
        }
    }

    async fn send_put(
        &self,
        key: &str,
        body: &Bytes,
        fence: bool,
        create_only: bool,
        sha256: Option<&str>,
    ) -> Result<(), Class> {
        let mut req = self.client.put_object().bucket(&self.bucket).key(key).body(ByteStream::from(body.clone()));
        if fence {
            req = req.metadata(FENCE_METADATA_KEY, "true");
        }
        let header = match (create_only, self.provider.create_only_header()) {
            (false, _) => None,
            (true, ("if-none-match", value)) => {
                req = req.if_none_match(value);
                None
            }
            (true, other) => Some(other),
        };
        let mut op = req.customize();
        if let Some((name, value)) = header {
            op = op.mutate_request(move |r| {
                r.headers_mut().insert(name, value);
            });
        }
        if let Some(sha) = sha256 {
            op = op.interceptor(PayloadSha256(sha.to_owned()));
        }
        op.send().await.map(|_| ()).map_err(classify)
    }
}

/// Signs a request with a payload digest computed by the caller instead of hashing the body again.
#[derive(Debug)]
struct PayloadSha256(String);

impl Intercept for PayloadSha256 {
    fn name(&self) -> &'static str {
        "PayloadSha256"
    }

    fn modify_before_signing(
        &self,
        _context: &mut BeforeTransmitInterceptorContextMut<'_>,
        _components: &RuntimeComponents,
        cfg: &mut ConfigBag,
    ) -> Result<(), aws_smithy_runtime_api::box_error::BoxError> {
        cfg.interceptor_state().store_put(PayloadSigningOverride::Precomputed(self.0.clone()));
        Ok(())
    }
}

fn hex_lower(bytes: &[u8]) -> String {
    use std::fmt::Write;
    bytes.iter().fold(String::with_capacity(bytes.len() * 2), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

/// Classifies any SDK error by HTTP status, S3 error code and transport failure kind.
fn classify<E>(err: SdkError<E, HttpResponse>) -> Class
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    let context = error_chain(&err);
    match &err {
        SdkError::TimeoutError(_) | SdkError::ResponseError(_) => Class::Transient(context.into()),
        SdkError::DispatchFailure(failure) => {
            if let Some(reason) = woodpecker_core::tls_failure::tls_cause::<rustls::Error>(&err) {
                return Class::Tls(reason);
            }
            if let Some(cred) = find_credentials_error(&err) {
                return match cred {
                    CredentialsError::CredentialsNotLoaded(_) | CredentialsError::InvalidConfiguration(_) => {
                        Class::Denied(format!("no usable credentials: {context}"))
                    }
                    _ => Class::Transient(context.into()),
                };
            }
            if failure.is_user() { Class::Permanent(context) } else { Class::Transient(context.into()) }
        }
        SdkError::ServiceError(service) => {
            let status = service.raw().status().as_u16();
            // HEAD answers have no body; S3 and MinIO name the bucket's region in this header instead.
            let bucket_region = service.raw().headers().get("x-amz-bucket-region").map(str::to_owned);
            let code = service.err().code().unwrap_or("");
            let message = match (code, service.err().message()) {
                // HEAD answers carry no body, so no error code: say what a bare 403 usually means.
                ("", _) if status == 401 || status == 403 => {
                    format!("HTTP {status} (check the access key, secret key and bucket policy)")
                }
                ("", _) => format!("HTTP {status}"),
                (code, Some(m)) => format!("HTTP {status} {code}: {m}"),
                (code, None) => format!("HTTP {status} {code}"),
            };
            match (status, code) {
                (_, "NoSuchBucket") => Class::NoSuchBucket,
                (_, "NoSuchKey") | (404, _) => Class::NotFound,
                (412, _) | (_, "PreconditionFailed") => Class::Precondition,
                (416, _) | (_, "InvalidRange") => Class::InvalidRange,
                (
                    _,
                    "SlowDown"
                    | "Throttling"
                    | "ThrottlingException"
                    | "RequestTimeout"
                    | "InternalError"
                    | "ServiceUnavailable"
                    | "XMinioServerNotInitialized",
                )
                | (429, _)
                | (500..=599, _) => Class::Transient(message.into()),
                (401 | 403, _) => Class::Denied(message),
                (409, _) => Class::Conflict(message),
                (301 | 400, _) if bucket_region.is_some() => Class::Permanent(format!(
                    "{message} (the bucket is in region {}; set minio.region to it)",
                    bucket_region.unwrap_or_default()
                )),
                (301, _) => Class::Permanent(format!("{message} (bucket in another region? check minio.region)")),
                _ => Class::Permanent(message),
            }
        }
        _ => Class::Permanent(context),
    }
}

/// `outer: cause: root cause`, each error's own message once (the SDK's `Debug` is too noisy for logs).
fn error_chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut out = err.to_string();
    let mut cur = err.source();
    while let Some(e) = cur {
        let msg = e.to_string();
        if !out.ends_with(&msg) {
            out.push_str(": ");
            out.push_str(&msg);
        }
        cur = e.source();
    }
    out
}

/// Finds a credentials-provider failure in an error's source chain.
fn find_credentials_error<'a>(err: &'a (dyn std::error::Error + 'static)) -> Option<&'a CredentialsError> {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(err);
    while let Some(e) = cur {
        if let Some(c) = e.downcast_ref::<CredentialsError>() {
            return Some(c);
        }
        cur = e.source();
    }
    None
}

#[async_trait::async_trait]
impl ObjectStorage for S3ObjectStorage {
    fn describe(&self) -> String {
        self.description.clone()
    }

    async fn get(&self, key: &str, range: Option<Range<u64>>) -> Result<Bytes, ObjectError> {
        validate_key(key)?;
        let header = match &range {
            None => None,
            Some(r) if r.start > r.end => {
                return Err(ObjectError::InvalidRange { key: key.to_owned(), start: r.start, end: r.end, size: None });
            }
            // HTTP cannot ask for zero bytes; existence is all there is to check.
            Some(r) if r.start == r.end => {
                self.stat(key).await?;
                return Ok(Bytes::new());
            }
            Some(r) => Some(format!("bytes={}-{}", r.start, r.end - 1)),
        };
        self.with_retry(|| async {
            let out =
                self.client.get_object().bucket(&self.bucket).key(key).set_range(header.clone()).send().await.map_err(
                    |e| match classify(e) {
                        Class::InvalidRange => {
                            let r = range.clone().unwrap_or_default();
                            Failure::Final(ObjectError::InvalidRange {
                                key: key.to_owned(),
                                start: r.start,
                                end: r.end,
                                size: None,
                            })
                        }
                        other => self.fail("get", key, other),
                    },
                )?;
            // The attempt timeout ends with the response headers; bound reading the body too.
            let collected = tokio::time::timeout(self.request_timeout, out.body.collect()).await.map_err(|_| {
                Failure::Transient(
                    format!("reading body of `{key}` took longer than {:?}", self.request_timeout).into(),
                )
            })?;
            let body = collected
                .map_err(|e| Failure::Transient(format!("reading body of `{key}`: {}", error_chain(&e)).into()))?;
            Ok(body.into_bytes())
        })
        .await
    }

    async fn put(&self, key: &str, body: Bytes) -> Result<(), ObjectError> {
        validate_key(key)?;
        self.with_retry(|| async {
            self.send_put(key, &body, false, false, None).await.map_err(|c| self.fail("put", key, c))
        })
        .await
    }

    async fn put_if_absent(&self, key: &str, body: Bytes) -> Result<(), ObjectError> {
        validate_key(key)?;
        if !self.condition_write {
            return self.create_unconditionally("put_if_absent", key, body, false, None).await;
        }
        self.with_retry(|| self.create_once("put_if_absent", key, &body, false, None)).await
    }

    async fn put_if_absent_hashed(&self, key: &str, body: Bytes, sha256: [u8; 32]) -> Result<(), ObjectError> {
        validate_key(key)?;
        let sha = hex_lower(&sha256);
        if !self.condition_write {
            return self.create_unconditionally("put_if_absent", key, body, false, Some(&sha)).await;
        }
        self.with_retry(|| self.create_once("put_if_absent", key, &body, false, Some(&sha))).await
    }

    async fn put_fence(&self, key: &str) -> Result<(), ObjectError> {
        validate_key(key)?;
        let body = Bytes::from_static(FENCE_BODY);
        if !self.condition_write {
            return self.create_unconditionally("put_fence", key, body, true, None).await;
        }
        self.with_retry(|| self.create_once("put_fence", key, &body, true, None)).await
    }

    async fn stat(&self, key: &str) -> Result<ObjectInfo, ObjectError> {
        validate_key(key)?;
        self.with_retry(|| async { self.head(key).await })
            .await?
            .ok_or_else(|| ObjectError::NotFound { key: key.to_owned() })
    }

    async fn list(&self, prefix: &str) -> Result<Vec<ObjectInfo>, ObjectError> {
        let mut out = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let page = self
                .with_retry(|| async {
                    self.client
                        .list_objects_v2()
                        .bucket(&self.bucket)
                        .prefix(prefix)
                        .set_continuation_token(token.clone())
                        .send()
                        .await
                        .map_err(|e| self.fail("list", prefix, classify(e)))
                })
                .await?;
            for obj in page.contents() {
                let Some(key) = obj.key() else { continue };
                out.push(ObjectInfo {
                    key: key.to_owned(),
                    size: obj.size().unwrap_or(0).max(0) as u64,
                    fenced: false,
                });
            }
            token = page.next_continuation_token().map(str::to_owned);
            if page.is_truncated() != Some(true) || token.is_none() {
                break;
            }
        }
        // A fence is exactly one byte and real blocks never are, so only those need a HEAD.
        let candidates: Vec<usize> =
            out.iter().enumerate().filter(|(_, o)| o.size == FENCE_BODY.len() as u64).map(|(i, _)| i).collect();
        let heads: Vec<(usize, Option<ObjectInfo>)> = futures::stream::iter(candidates)
            .map(|i| {
                let key = out[i].key.clone();
                async move { self.with_retry(|| self.head(&key)).await.map(|info| (i, info)) }
            })
            .buffer_unordered(HEAD_CONCURRENCY)
            .try_collect()
            .await?;
        let mut gone = Vec::new();
        for (i, info) in heads {
            match info {
                Some(info) => out[i].fenced = info.fenced,
                None => gone.push(i),
            }
        }
        // Removed between the listing and the HEAD: no longer part of the answer.
        gone.sort_unstable();
        for i in gone.into_iter().rev() {
            out.remove(i);
        }
        out.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(out)
    }

    async fn remove(&self, key: &str) -> Result<(), ObjectError> {
        validate_key(key)?;
        self.with_retry(|| async {
            match self.client.delete_object().bucket(&self.bucket).key(key).send().await {
                Ok(_) => Ok(()),
                Err(e) => match classify(e) {
                    Class::NotFound => Ok(()),
                    other => Err(self.fail("remove", key, other)),
                },
            }
        })
        .await
    }

    async fn remove_prefix(&self, prefix: &str) -> Result<usize, ObjectError> {
        let keys: Vec<String> = self.list(prefix).await?.into_iter().map(|o| o.key).collect();
        let removed = keys.len();
        futures::stream::iter(keys)
            .map(|key| async move { self.remove(&key).await })
            .buffer_unordered(DELETE_CONCURRENCY)
            .try_collect::<Vec<()>>()
            .await?;
        Ok(removed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoint_url_adds_the_scheme_from_use_ssl() {
        let mut o = S3Options { endpoint: "127.0.0.1:9000".into(), ..S3Options::default() };
        assert_eq!(o.endpoint_url().unwrap(), "http://127.0.0.1:9000");
        o.use_ssl = true;
        assert_eq!(o.endpoint_url().unwrap(), "https://127.0.0.1:9000");
        o.endpoint = "http://minio:9000/".into();
        assert_eq!(o.endpoint_url().unwrap(), "http://minio:9000");
        o.endpoint = "ftp://minio".into();
        assert!(o.endpoint_url().is_err());
        o.endpoint = " ".into();
        assert!(o.endpoint_url().is_err());
    }

    #[tokio::test]
    async fn an_unusable_ca_file_is_a_config_error_not_an_unknown_issuer_later() {
        let dir = tempfile::tempdir().unwrap();
        let junk = dir.path().join("ca.pem");
        std::fs::write(&junk, "not a certificate").unwrap();
        let base = S3Options { access_key: "a".into(), secret_key: "b".into(), use_ssl: true, ..S3Options::default() };
        let err = S3ObjectStorage::connect(S3Options { ca_cert_path: Some(junk), ..base.clone() }).await.unwrap_err();
        assert!(matches!(err, ObjectError::InvalidConfig { field: "minio.ssl.tlsCACert", .. }), "{err}");
        let missing = dir.path().join("missing.pem");
        let err = S3ObjectStorage::connect(S3Options { ca_cert_path: Some(missing), ..base }).await.unwrap_err();
        assert!(matches!(err, ObjectError::Io { .. }), "{err}");
    }

    #[test]
    fn debug_output_never_shows_the_secret_key() {
        let o = S3Options { access_key: "AKID".into(), secret_key: "hunter2-secret".into(), ..S3Options::default() };
        let shown = format!("{o:?}");
        assert!(shown.contains("AKID") && shown.contains("<redacted>"), "{shown}");
        assert!(!shown.contains("hunter2"), "{shown}");
    }

    #[test]
    fn cloud_provider_parses_upstream_names_and_rejects_others() {
        assert_eq!("aws".parse::<CloudProvider>().unwrap(), CloudProvider::Aws);
        assert_eq!("MinIO".parse::<CloudProvider>().unwrap(), CloudProvider::Minio);
        assert_eq!("aliyun".parse::<CloudProvider>().unwrap(), CloudProvider::Aliyun);
        let err = "s4".parse::<CloudProvider>().unwrap_err();
        assert!(err.to_string().contains("minio.cloudProvider"), "{err}");
        assert_eq!(CloudProvider::Aliyun.create_only_header(), ("x-oss-forbid-overwrite", "true"));
        assert_eq!(CloudProvider::Tencent.create_only_header(), ("x-cos-forbid-overwrite", "true"));
        assert_eq!(CloudProvider::Minio.create_only_header(), ("if-none-match", "*"));
    }

    mod classify_table {
        use aws_credential_types::provider::error::CredentialsError;
        use aws_sdk_s3::error::SdkError;
        use aws_sdk_s3::operation::put_object::PutObjectError;
        use aws_smithy_runtime_api::client::orchestrator::HttpResponse;
        use aws_smithy_runtime_api::client::result::ConnectorError;
        use aws_smithy_runtime_api::http::StatusCode;
        use aws_smithy_types::body::SdkBody;
        use aws_smithy_types::error::ErrorMetadata;

        use super::super::{Class, classify};

        fn service(status: u16, code: &str) -> SdkError<PutObjectError, HttpResponse> {
            let mut meta = ErrorMetadata::builder().message("server says no");
            if !code.is_empty() {
                meta = meta.code(code);
            }
            let resp = HttpResponse::new(StatusCode::try_from(status).unwrap(), SdkBody::empty());
            SdkError::service_error(PutObjectError::generic(meta.build()), resp)
        }

        fn name(c: &Class) -> &'static str {
            match c {
                Class::Transient(_) => "transient",
                Class::NotFound => "not-found",
                Class::NoSuchBucket => "no-bucket",
                Class::Precondition => "precondition",
                Class::Conflict(_) => "conflict",
                Class::Denied(_) => "denied",
                Class::InvalidRange => "range",
                Class::Tls(_) => "tls",
                Class::Permanent(_) => "permanent",
            }
        }

        #[test]
        fn service_errors_are_classified_by_status_and_code() {
            let table: &[(u16, &str, &str)] = &[
                (412, "PreconditionFailed", "precondition"),
                (412, "", "precondition"),
                (409, "ConditionalRequestConflict", "conflict"),
                (409, "FileAlreadyExists", "conflict"),
                (404, "NoSuchKey", "not-found"),
                (404, "", "not-found"),
                (404, "NoSuchBucket", "no-bucket"),
                (403, "AccessDenied", "denied"),
                (403, "InvalidAccessKeyId", "denied"),
                (403, "SignatureDoesNotMatch", "denied"),
                (403, "", "denied"),
                (416, "InvalidRange", "range"),
                (500, "InternalError", "transient"),
                (502, "", "transient"),
                (503, "SlowDown", "transient"),
                (503, "XMinioServerNotInitialized", "transient"),
                (429, "", "transient"),
                (400, "RequestTimeout", "transient"),
                (400, "InvalidArgument", "permanent"),
                (301, "PermanentRedirect", "permanent"),
            ];
            for (status, code, want) in table {
                assert_eq!(name(&classify(service(*status, code))), *want, "HTTP {status} {code}");
            }
        }

        #[test]
        fn transport_failures_are_transient_and_missing_credentials_are_denied() {
            let refused: SdkError<PutObjectError, HttpResponse> =
                SdkError::dispatch_failure(ConnectorError::io("connection refused".into()));
            assert_eq!(name(&classify(refused)), "transient");
            let timeout: SdkError<PutObjectError, HttpResponse> = SdkError::timeout_error("attempt timed out");
            assert_eq!(name(&classify(timeout)), "transient");
            let no_creds: SdkError<PutObjectError, HttpResponse> = SdkError::dispatch_failure(ConnectorError::other(
                Box::new(CredentialsError::not_loaded("no provider in the chain had credentials")),
                None,
            ));
            let class = classify(no_creds);
            assert_eq!(name(&class), "denied");
            if let Class::Denied(message) = class {
                assert!(message.contains("no provider in the chain"), "{message}");
            }
            let imds_down: SdkError<PutObjectError, HttpResponse> = SdkError::dispatch_failure(ConnectorError::other(
                Box::new(CredentialsError::provider_timed_out(std::time::Duration::from_secs(1))),
                None,
            ));
            assert_eq!(name(&classify(imds_down)), "transient");
        }
    }

    #[tokio::test]
    async fn unsupported_or_incomplete_options_fail_before_any_request() {
        let base = S3Options { access_key: "a".into(), secret_key: "b".into(), ..S3Options::default() };
        let azure = S3Options { cloud_provider: CloudProvider::Azure, ..base.clone() };
        assert!(matches!(
            S3ObjectStorage::connect(azure).await,
            Err(ObjectError::InvalidConfig { field: "minio.cloudProvider", .. })
        ));
        let no_keys = S3Options { access_key: String::new(), ..base.clone() };
        assert!(matches!(
            S3ObjectStorage::connect(no_keys).await,
            Err(ObjectError::InvalidConfig { field: "minio.accessKeyID", .. })
        ));
        let no_bucket = S3Options { bucket: String::new(), ..base.clone() };
        assert!(matches!(
            S3ObjectStorage::connect(no_bucket).await,
            Err(ObjectError::InvalidConfig { field: "minio.bucketName", .. })
        ));
        let no_timeout = S3Options { request_timeout: Duration::ZERO, ..base };
        assert!(matches!(S3ObjectStorage::connect(no_timeout).await, Err(ObjectError::InvalidConfig { .. })));
    }
}
