//! Sections shared with the wider Milvus-style config: `log`, `trace`, `etcd` and `minio`.

use std::time::Duration;

use super::schema::config_section;

config_section! {
    /// `log`: process log output.
    pub struct LogConfig {
        /// Log level: debug, info, warn, error, panic or fatal.
        #[key = "level", with = "crate::config::units::lenient_string"]
        pub level: String = "info".to_owned(),
        /// Log files; empty rootPath logs to stdout/stderr only.
        #[key = "file"]
        pub file: LogFileConfig = LogFileConfig::default(),
        /// Log format: text or json.
        #[key = "format", with = "crate::config::units::lenient_string"]
        pub format: String = "text".to_owned(),
        /// Write logs to stdout.
        #[key = "stdout"]
        pub stdout: bool = true,
    }
}

config_section! {
    /// `log.file`.
    pub struct LogFileConfig {
        /// Directory of log files; empty means no log files.
        #[key = "rootPath", with = "crate::config::units::lenient_string"]
        pub root_path: String = String::new(),
        /// Largest size of one log file, in MB.
        #[key = "maxSize"]
        pub max_size: u64 = 300,
        /// Days a log file is kept.
        #[key = "maxAge"]
        pub max_age: u64 = 10,
        /// Rotated log files kept.
        #[key = "maxBackups"]
        pub max_backups: u64 = 20,
    }
}

config_section! {
    /// `trace`: OpenTelemetry tracing.
    pub struct TraceConfig {
        /// Exporter: noop, stdout, jaeger or otlp.
        #[key = "exporter", with = "crate::config::units::lenient_string"]
        pub exporter: String = "noop".to_owned(),
        /// Fraction of traces sampled, in [0, 1].
        #[key = "sampleFraction"]
        pub sample_fraction: f64 = 1.0,
        /// Jaeger exporter.
        #[key = "jaeger"]
        pub jaeger: JaegerConfig = JaegerConfig::default(),
        /// OTLP exporter.
        #[key = "otlp"]
        pub otlp: OtlpConfig = OtlpConfig::default(),
        /// Time limit of exporter initialisation (seconds).
        #[key = "initTimeoutSeconds", with = "crate::config::units::seconds"]
        pub init_timeout: Duration = Duration::from_secs(10),
    }
}

config_section! {
    /// `trace.jaeger`.
    pub struct JaegerConfig {
        /// Jaeger collector URL (exporter jaeger).
        #[key = "url", with = "crate::config::units::lenient_string"]
        pub url: String = String::new(),
    }
}

config_section! {
    /// `trace.otlp`.
    pub struct OtlpConfig {
        /// OTLP endpoint, e.g. 127.0.0.1:4317 for grpc or 127.0.0.1:4318 for http.
        #[key = "endpoint", with = "crate::config::units::lenient_string"]
        pub endpoint: String = "127.0.0.1:4317".to_owned(),
        /// OTLP transport: grpc or http.
        #[key = "method", with = "crate::config::units::lenient_string"]
        pub method: String = "grpc".to_owned(),
        /// Use TLS to reach the endpoint.
        #[key = "secure"]
        pub secure: bool = false,
    }
}

config_section! {
    /// `etcd`: the metadata store when `woodpecker.meta.type` is etcd.
    pub struct EtcdConfig {
        /// etcd endpoints (host:port).
        #[key = "endpoints", with = "crate::config::units::string_list"]
        pub endpoints: Vec<String> = vec!["localhost:2379".to_owned()],
        /// Root key prefix; metadata lives under rootPath/woodpecker.meta.prefix.
        #[key = "rootPath", with = "crate::config::units::lenient_string"]
        pub root_path: String = "by-dev".to_owned(),
        /// Sub-prefix for metadata (kept for compatibility; unused).
        #[key = "metaSubPath", with = "crate::config::units::lenient_string"]
        pub meta_sub_path: String = "meta".to_owned(),
        /// Sub-prefix for key-value data (kept for compatibility; unused).
        #[key = "kvSubPath", with = "crate::config::units::lenient_string"]
        pub kv_sub_path: String = "kv".to_owned(),
        /// etcd client logging.
        #[key = "log"]
        pub log: EtcdLogConfig = EtcdLogConfig::default(),
        /// TLS to etcd.
        #[key = "ssl"]
        pub ssl: EtcdSslConfig = EtcdSslConfig::default(),
        /// Time limit of one etcd request (milliseconds).
        #[key = "requestTimeout", with = "crate::config::units::millis"]
        pub request_timeout: Duration = Duration::from_millis(10_000),
        /// Embedded etcd switch (kept for compatibility; unused).
        #[key = "use"]
        pub use_: EtcdUseConfig = EtcdUseConfig::default(),
        /// Embedded etcd data (kept for compatibility; unused).
        #[key = "data"]
        pub data: EtcdDataConfig = EtcdDataConfig::default(),
        /// Username/password authentication.
        #[key = "auth"]
        pub auth: EtcdAuthConfig = EtcdAuthConfig::default(),
    }
}

config_section! {
    /// `etcd.log`.
    pub struct EtcdLogConfig {
        /// etcd client log level.
        #[key = "level", with = "crate::config::units::lenient_string"]
        pub level: String = "info".to_owned(),
        /// etcd client log destination: stdout, stderr or a file path.
        #[key = "path", with = "crate::config::units::lenient_string"]
        pub path: String = "stdout".to_owned(),
    }
}

config_section! {
    /// `etcd.ssl`.
    pub struct EtcdSslConfig {
        /// Connect to etcd over TLS (endpoints `host:port` or `https://host:port`).
        #[key = "enabled"]
        pub enabled: bool = false,
        /// Client certificate PEM file, for etcd's `--client-cert-auth`; "" (or the seed's placeholder) with tlsKey for none.
        #[key = "tlsCert", with = "crate::config::units::lenient_string"]
        pub tls_cert: String = "/path/to/etcd-client.pem".to_owned(),
        /// Private key PEM file of tlsCert; set both or neither.
        #[key = "tlsKey", with = "crate::config::units::lenient_string"]
        pub tls_key: String = "/path/to/etcd-client-key.pem".to_owned(),
        /// CA certificates PEM file that signs the etcd servers' certificates; "" (or the seed's placeholder) trusts the system roots.
        #[key = "tlsCACert", with = "crate::config::units::lenient_string"]
        pub tls_ca_cert: String = "/path/to/ca.pem".to_owned(),
        /// Lowest TLS version: 1.0, 1.1, 1.2 or 1.3 (this client never speaks below 1.2).
        #[key = "tlsMinVersion", with = "crate::config::units::lenient_string"]
        pub tls_min_version: String = "1.3".to_owned(),
    }
}

config_section! {
    /// `etcd.use`.
    pub struct EtcdUseConfig {
        /// Run an in-process etcd (unsupported; must stay false).
        #[key = "embed"]
        pub embed: bool = false,
    }
}

config_section! {
    /// `etcd.data`.
    pub struct EtcdDataConfig {
        /// Data directory of an in-process etcd (unused).
        #[key = "dir", with = "crate::config::units::lenient_string"]
        pub dir: String = "default.etcd".to_owned(),
    }
}

config_section! {
    /// `etcd.auth`.
    pub struct EtcdAuthConfig {
        /// Authenticate to etcd with a username and password.
        #[key = "enabled"]
        pub enabled: bool = false,
        /// etcd username.
        #[key = "userName", with = "crate::config::units::lenient_string"]
        pub user_name: String = String::new(),
        /// etcd password; keep it in the overlay file, not in a ConfigMap.
        #[key = "password", with = "crate::config::units::lenient_string"]
        pub password: String = String::new(),
    }
}

config_section! {
    /// `minio`: MinIO/S3-compatible object storage.
    pub struct MinioConfig {
        /// Host of the object storage service.
        #[key = "address", with = "crate::config::units::lenient_string"]
        pub address: String = "localhost".to_owned(),
        /// Port of the object storage service.
        #[key = "port"]
        pub port: u16 = 9000,
        /// Access key id; keep it in the overlay file, not in a ConfigMap.
        #[key = "accessKeyID", with = "crate::config::units::lenient_string"]
        pub access_key_id: String = "minioadmin".to_owned(),
        /// Secret access key; keep it in the overlay file, not in a ConfigMap.
        #[key = "secretAccessKey", with = "crate::config::units::lenient_string"]
        pub secret_access_key: String = "minioadmin".to_owned(),
        /// Reach the object storage over TLS.
        #[key = "useSSL"]
        pub use_ssl: bool = false,
        /// TLS settings.
        #[key = "ssl"]
        pub ssl: MinioSslConfig = MinioSslConfig::default(),
        /// Bucket holding the log data.
        #[key = "bucketName", with = "crate::config::units::lenient_string"]
        pub bucket_name: String = "a-bucket".to_owned(),
        /// Create the bucket at startup when missing; false skips the bucket check entirely.
        #[key = "createBucket"]
        pub create_bucket: bool = true,
        /// Key prefix inside the bucket: empty or a clean relative path.
        #[key = "rootPath", with = "crate::config::units::lenient_string"]
        pub root_path: String = "files".to_owned(),
        /// Take credentials from the AWS default chain (env, profile, web identity/IRSA, container, instance metadata) instead of the access keys.
        #[key = "useIAM"]
        pub use_iam: bool = false,
        /// Cloud provider: aws, gcp, gcpnative, aliyun, azure or tencent.
        #[key = "cloudProvider", with = "crate::config::units::lenient_string"]
        pub cloud_provider: String = "aws".to_owned(),
        /// GCS service account JSON (gcpnative only).
        #[key = "gcpCredentialJSON", with = "crate::config::units::lenient_string"]
        pub gcp_credential_json: String = String::new(),
        /// Custom IAM credentials endpoint (useIAM with aws); empty uses the default.
        #[key = "iamEndpoint", with = "crate::config::units::lenient_string"]
        pub iam_endpoint: String = String::new(),
        /// Log level of the storage SDK.
        #[key = "logLevel", with = "crate::config::units::lenient_string"]
        pub log_level: String = "fatal".to_owned(),
        /// Storage region; empty lets the SDK decide.
        #[key = "region", with = "crate::config::units::lenient_string"]
        pub region: String = String::new(),
        /// Virtual-host style bucket addressing.
        #[key = "useVirtualHost"]
        pub use_virtual_host: bool = false,
        /// Time limit of one object storage request attempt, connect to last byte (milliseconds).
        #[key = "requestTimeoutMs", with = "crate::config::units::millis"]
        pub request_timeout: Duration = Duration::from_millis(10_000),
        /// Objects per ListObjects page; 0 uses the SDK default.
        #[key = "listObjectsMaxKeys"]
        pub list_objects_max_keys: u32 = 0,
    }
}

config_section! {
    /// `minio.ssl`.
    pub struct MinioSslConfig {
        /// CA certificates PEM file for https to the object storage; "" (or the seed's placeholder) trusts the system roots.
        #[key = "tlsCACert", with = "crate::config::units::lenient_string"]
        pub tls_ca_cert: String = "/path/to/public.crt".to_owned(),
    }
}

/// A file key still holding the seed's `/path/to/...` placeholder counts as not set: the seed ships
/// placeholders for every TLS file, and most deployments set only some of them.
fn configured_path(value: &str, placeholder: &str) -> Option<String> {
    let value = value.trim();
    (!value.is_empty() && value != placeholder).then(|| value.to_owned())
}

impl EtcdSslConfig {
    /// `tlsCACert` when set to a real path (not "" nor the placeholder).
    pub fn ca_cert_path(&self) -> Option<String> {
        configured_path(&self.tls_ca_cert, &Self::default().tls_ca_cert)
    }

    /// `tlsCert` when set to a real path.
    pub fn cert_path(&self) -> Option<String> {
        configured_path(&self.tls_cert, &Self::default().tls_cert)
    }

    /// `tlsKey` when set to a real path.
    pub fn key_path(&self) -> Option<String> {
        configured_path(&self.tls_key, &Self::default().tls_key)
    }
}

impl MinioConfig {
    /// Whether requests go over https: `useSSL`, or an `https://` URL in `address` (whose scheme wins).
    pub fn uses_https(&self) -> bool {
        self.use_ssl || self.address.trim_start().starts_with("https://")
    }
}

impl MinioSslConfig {
    /// `tlsCACert` when set to a real path (not "" nor the placeholder).
    pub fn ca_cert_path(&self) -> Option<String> {
        configured_path(&self.tls_ca_cert, &Self::default().tls_ca_cert)
    }
}
