//! TLS to etcd (`etcd.ssl.*`): which CA to trust, which client certificate to present, and telling a
//! failed handshake apart from an unreachable server.
//!
//! etcd-client talks to a balanced tonic channel, which keeps retrying an endpoint whose handshake
//! fails and lets requests wait until their timeout (or fail with a bare "connection closed"): a wrong
//! CA would look like an outage. So before the client is built, [`probe`] makes one TLS handshake with
//! each endpoint using the same files; when none succeeds and one of them failed in TLS, connecting
//! fails at once with [`MetaError::Tls`] naming that endpoint and rustls' reason.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use etcd_client::{Certificate, Identity, TlsOptions};
use rustls::pki_types::ServerName;

use crate::error::{MetaError, MetaResult};

const HTTP: &str = "http://";
const HTTPS: &str = "https://";

/// TLS settings of the etcd connection. Without a CA file the system's trust roots are used.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct EtcdTls {
    /// PEM file of the CA certificates that sign the servers' certificates (`etcd.ssl.tlsCACert`);
    /// `None` trusts the system's roots.
    pub ca_cert: Option<PathBuf>,
    /// PEM files of the client certificate and its private key (`etcd.ssl.tlsCert`, `etcd.ssl.tlsKey`),
    /// for etcd servers started with `--client-cert-auth`.
    pub client_identity: Option<(PathBuf, PathBuf)>,
    /// Lowest TLS version the server must speak (`etcd.ssl.tlsMinVersion`).
    pub min_version: EtcdTlsVersion,
}

/// Lowest TLS version required of etcd servers. rustls implements 1.2 and 1.3 only, so the seed's
/// 1.0 and 1.1 mean 1.2 here (stricter, never weaker).
///
/// tonic's TLS settings have no version bound, so the connection itself offers 1.3 and 1.2. With
/// [`EtcdTlsVersion::Tls13`] the handshake probe made before connecting speaks TLS 1.3 only, which fails against a server
/// that does not speak it; a server that does negotiates 1.3 with the real connection too, and TLS 1.3's
/// downgrade protection (RFC 8446 §4.1.3, checked by rustls) stops a man in the middle forcing 1.2.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum EtcdTlsVersion {
    /// TLS 1.2 or later.
    #[default]
    Tls12,
    /// TLS 1.3 only.
    Tls13,
}

impl EtcdTlsVersion {
    /// From `etcd.ssl.tlsMinVersion` (`1.0` … `1.3`; validated by the config layer).
    pub fn from_config(value: &str) -> Self {
        if value.trim() == "1.3" { Self::Tls13 } else { Self::Tls12 }
    }
}

impl fmt::Debug for EtcdTls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EtcdTls")
            .field("ca_cert", &self.ca_cert)
            .field("client_cert", &self.client_identity.as_ref().map(|(cert, _)| cert))
            .field("min_version", &self.min_version)
            .finish()
    }
}

impl EtcdTls {
    /// The tonic TLS configuration: files are read now, so a missing or non-PEM file fails here,
    /// naming its config key and path.
    pub(crate) fn client_config(&self) -> MetaResult<TlsOptions> {
        let mut config = TlsOptions::new();
        config = match &self.ca_cert {
            Some(path) => {
                config.ca_certificate(Certificate::from_pem(read_pem("etcd.ssl.tlsCACert", path, "CERTIFICATE")?))
            }
            None => config.with_native_roots(),
        };
        if let Some((cert, key)) = &self.client_identity {
            let cert = read_pem("etcd.ssl.tlsCert", cert, "CERTIFICATE")?;
            let key = read_pem("etcd.ssl.tlsKey", key, "PRIVATE KEY")?;
            config = config.identity(Identity::from_pem(cert, key));
        }
        Ok(config)
    }
}

impl EtcdTls {
    /// The same trust and identity as [`EtcdTls::client_config`], as a rustls configuration for the probe.
    fn rustls_config(&self) -> MetaResult<rustls::ClientConfig> {
        use rustls::pki_types::pem::PemObject;
        use rustls::pki_types::{CertificateDer, PrivateKeyDer};
        let mut roots = rustls::RootCertStore::empty();
        match &self.ca_cert {
            Some(path) => {
                let pem = read_pem("etcd.ssl.tlsCACert", path, "CERTIFICATE")?;
                for cert in CertificateDer::pem_slice_iter(&pem) {
                    let added = cert.map_err(|e| e.to_string()).and_then(|c| roots.add(c).map_err(|e| e.to_string()));
                    added.map_err(|reason| MetaError::TlsFile {
                        key: "etcd.ssl.tlsCACert",
                        path: path.clone(),
                        reason,
                    })?;
                }
            }
            None => {
                for cert in rustls_native_certs::load_native_certs().certs {
                    // A system root rustls cannot parse is skipped here as tonic skips it.
                    let _ = roots.add(cert);
                }
            }
        }
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let versions: &[&rustls::SupportedProtocolVersion] = match self.min_version {
            EtcdTlsVersion::Tls13 => &[&rustls::version::TLS13],
            EtcdTlsVersion::Tls12 => rustls::DEFAULT_VERSIONS,
        };
        let builder = rustls::ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(versions)
            .map_err(|e| MetaError::TlsFile { key: "etcd.ssl", path: PathBuf::new(), reason: e.to_string() })?
            .with_root_certificates(roots);
        let mut config = match &self.client_identity {
            None => builder.with_no_client_auth(),
            Some((cert_path, key_path)) => {
                let cert_pem = read_pem("etcd.ssl.tlsCert", cert_path, "CERTIFICATE")?;
                let key_pem = read_pem("etcd.ssl.tlsKey", key_path, "PRIVATE KEY")?;
                let chain = CertificateDer::pem_slice_iter(&cert_pem).collect::<Result<Vec<_>, _>>().map_err(|e| {
                    MetaError::TlsFile { key: "etcd.ssl.tlsCert", path: cert_path.clone(), reason: e.to_string() }
                })?;
                let key = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|e| MetaError::TlsFile {
                    key: "etcd.ssl.tlsKey",
                    path: key_path.clone(),
                    reason: e.to_string(),
                })?;
                builder.with_client_auth_cert(chain, key).map_err(|e| MetaError::TlsFile {
                    key: "etcd.ssl.tlsKey",
                    path: key_path.clone(),
                    reason: format!("does not match etcd.ssl.tlsCert: {e}"),
                })?
            }
        };
        config.alpn_protocols = vec![b"h2".to_vec()];
        Ok(config)
    }
}

/// Reads a PEM file and checks it holds a block of `kind` (rustls skips what it cannot parse, which would
/// otherwise surface only as an unexplained handshake failure).
fn read_pem(key: &'static str, path: &Path, kind: &str) -> MetaResult<Vec<u8>> {
    let pem =
        std::fs::read(path).map_err(|e| MetaError::TlsFile { key, path: path.to_owned(), reason: e.to_string() })?;
    let text = String::from_utf8_lossy(&pem);
    let has_block =
        text.lines().any(|l| l.starts_with("-----BEGIN ") && l.trim_end().ends_with(&format!("{kind}-----")));
    if !has_block {
        return Err(MetaError::TlsFile { key, path: path.to_owned(), reason: format!("holds no PEM {kind} block") });
    }
    Ok(pem)
}

/// The endpoints as URLs for etcd-client: with TLS, `host:port` becomes `https://host:port` and an
/// `http://` endpoint is refused (it would silently skip TLS); without TLS they are kept as given.
pub(crate) fn endpoint_urls(endpoints: &[String], tls: bool) -> MetaResult<Vec<String>> {
    endpoints
        .iter()
        .map(|e| {
            let e = e.trim();
            if !tls {
                return Ok(e.to_owned());
            }
            if e.starts_with(HTTP) {
                return Err(MetaError::InvalidEndpoint {
                    endpoint: e.to_owned(),
                    reason: "http:// with etcd.ssl.enabled: use https:// or host:port".into(),
                });
            }
            Ok(if e.starts_with(HTTPS) { e.to_owned() } else { format!("{HTTPS}{e}") })
        })
        .collect()
}

/// Whether any endpoint asks for TLS by its scheme.
pub(crate) fn any_https(endpoints: &[String]) -> bool {
    endpoints.iter().any(|e| e.trim().starts_with(HTTPS))
}

/// One TLS handshake per endpoint with the configured trust and client certificate, each bounded by
/// `timeout`. `Ok` when one endpoint completes the handshake and accepts the client certificate, or when
/// none failed in TLS (the caller's retries then handle an outage); [`MetaError::Tls`] naming the first
/// endpoint whose handshake failed otherwise.
///
/// With TLS 1.3 the server checks the client certificate after the client considers the handshake done,
/// so the probe also waits for the server's first bytes (etcd's gRPC server sends its HTTP/2 settings at
/// once): a refused certificate arrives as an alert instead.
pub(crate) async fn probe(urls: &[String], tls: &EtcdTls, timeout: Duration) -> MetaResult<()> {
    let connector = tokio_rustls::TlsConnector::from(Arc::new(tls.rustls_config()?));
    let mut tls_failure = None;
    for url in urls {
        match tokio::time::timeout(timeout, handshake(&connector, url)).await {
            Ok(Ok(())) => return Ok(()),
            Ok(Err(Probe::Tls(reason))) => {
                tls_failure.get_or_insert(MetaError::Tls { endpoint: url.clone(), reason });
            }
            Ok(Err(Probe::Other(e))) => tracing::debug!(endpoint = %url, error = %e, "etcd TLS probe: not reachable"),
            Err(_) => tracing::debug!(endpoint = %url, ?timeout, "etcd TLS probe timed out"),
        }
    }
    tls_failure.map_or(Ok(()), Err)
}

/// Why a probe of one endpoint failed.
enum Probe {
    Tls(String),
    Other(String),
}

async fn handshake(connector: &tokio_rustls::TlsConnector, url: &str) -> Result<(), Probe> {
    use tokio::io::AsyncReadExt;
    let uri: http::Uri = url.parse().map_err(|e: http::uri::InvalidUri| Probe::Other(e.to_string()))?;
    let host = uri.host().ok_or_else(|| Probe::Other("no host".into()))?;
    let host = host.trim_start_matches('[').trim_end_matches(']').to_owned();
    let port = uri.port_u16().unwrap_or(2379);
    let tcp = tokio::net::TcpStream::connect((host.as_str(), port)).await.map_err(|e| Probe::Other(e.to_string()))?;
    let name = ServerName::try_from(host).map_err(|e| Probe::Other(e.to_string()))?;
    let failed = |e: std::io::Error| match tls_cause(&e) {
        Some(reason) => Probe::Tls(reason),
        None => Probe::Other(e.to_string()),
    };
    let mut stream = connector.connect(name, tcp).await.map_err(failed)?;
    let mut first = [0u8; 1];
    match stream.read(&mut first).await.map_err(failed)? {
        0 => Err(Probe::Other("closed the connection after the handshake".into())),
        _ => Ok(()),
    }
}

/// rustls' reason when `err` or its causes are a TLS failure.
pub(crate) fn tls_cause(err: &(dyn std::error::Error + 'static)) -> Option<String> {
    woodpecker_core::tls_failure::tls_cause::<rustls::Error>(err)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_get_https_with_tls_and_http_is_refused() {
        let eps = vec!["127.0.0.1:2379".to_owned(), "https://etcd-0:2379".to_owned()];
        assert_eq!(endpoint_urls(&eps, true).unwrap(), ["https://127.0.0.1:2379", "https://etcd-0:2379"]);
        assert_eq!(endpoint_urls(&eps, false).unwrap(), eps);
        let err = endpoint_urls(&["http://etcd-0:2379".to_owned()], true).unwrap_err();
        assert!(
            matches!(&err, MetaError::InvalidEndpoint { endpoint, .. } if endpoint == "http://etcd-0:2379"),
            "{err}"
        );
        assert!(any_https(&eps) && !any_https(&["etcd:2379".to_owned()]));
    }

    #[test]
    fn missing_or_non_pem_files_name_their_key_and_path() {
        let dir = tempfile::tempdir().unwrap();
        let missing = EtcdTls { ca_cert: Some(dir.path().join("nope.pem")), ..EtcdTls::default() };
        let err = missing.client_config().unwrap_err();
        assert!(matches!(&err, MetaError::TlsFile { key: "etcd.ssl.tlsCACert", .. }), "{err}");
        assert!(err.to_string().contains("nope.pem"), "{err}");

        let cert = dir.path().join("cert.pem");
        std::fs::write(&cert, "not a certificate").unwrap();
        let garbage = EtcdTls { client_identity: Some((cert.clone(), cert)), ..EtcdTls::default() };
        let err = garbage.client_config().unwrap_err();
        assert!(matches!(&err, MetaError::TlsFile { key: "etcd.ssl.tlsCert", .. }), "{err}");
        assert!(err.to_string().contains("no PEM CERTIFICATE block"), "{err}");
    }

    /// A TLS 1.2-only server on loopback with a certificate from a fresh CA; returns its URL and the CA file.
    async fn tls12_only_server(dir: &Path) -> (String, PathBuf) {
        use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
        use rustls::pki_types::PrivateKeyDer;
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().unwrap()).unwrap();
        let key = KeyPair::generate().unwrap();
        let cert = CertificateParams::new(vec!["127.0.0.1".to_owned()]).unwrap().signed_by(&key, &ca).unwrap();
        let ca_path = dir.join("ca.pem");
        std::fs::write(&ca_path, ca.pem()).unwrap();

        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let config = rustls::ServerConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS12])
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(vec![cert.der().clone()], PrivateKeyDer::Pkcs8(key.serialize_der().into()))
            .unwrap();
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("https://{}", listener.local_addr().unwrap());
        tokio::spawn(async move {
            use tokio::io::AsyncWriteExt;
            while let Ok((tcp, _)) = listener.accept().await {
                if let Ok(mut tls) = acceptor.accept(tcp).await {
                    // Like etcd's HTTP/2 server: the first bytes come at once.
                    let _ = tls.write_all(b"settings").await;
                    let _ = tls.flush().await;
                    tokio::time::sleep(Duration::from_secs(2)).await;
                }
            }
        });
        (url, ca_path)
    }

    #[tokio::test]
    async fn tls_1_3_minimum_refuses_a_server_that_speaks_only_1_2() {
        let dir = tempfile::tempdir().unwrap();
        let (url, ca) = tls12_only_server(dir.path()).await;
        let urls = [url.clone()];
        let timeout = Duration::from_secs(5);
        let lenient = EtcdTls { ca_cert: Some(ca.clone()), min_version: EtcdTlsVersion::Tls12, ..EtcdTls::default() };
        probe(&urls, &lenient, timeout).await.expect("TLS 1.2 is enough with tlsMinVersion 1.2");
        let strict = EtcdTls { ca_cert: Some(ca), min_version: EtcdTlsVersion::Tls13, ..EtcdTls::default() };
        let err = probe(&urls, &strict, timeout).await.unwrap_err();
        assert!(matches!(&err, MetaError::Tls { endpoint, .. } if endpoint == &url), "{err:?}");
        assert_eq!(EtcdTlsVersion::from_config("1.3"), EtcdTlsVersion::Tls13);
        assert_eq!(EtcdTlsVersion::from_config("1.0"), EtcdTlsVersion::Tls12);
    }
}
