//! TLS to etcd (`etcd.ssl.*`): which CA to trust, which client certificate to present, and telling a
//! failed handshake apart from an unreachable server.
//!
//! etcd-client talks to a balanced tonic channel, which keeps retrying an endpoint whose handshake
//! fails and lets requests wait until their timeout (or fail with a bare "connection closed"): a wrong
//! CA would look like an outage. So before the client is built, [`probe`] makes one TLS handshake with
//! each endpoint using the same files; when none succeeds and one of them failed in TLS, connecting
//! fails at once with [`MetaError::Tls`] naming that endpoint and rustls' reason.

use std::error::Error as StdError;
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
}

impl fmt::Debug for EtcdTls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EtcdTls")
            .field("ca_cert", &self.ca_cert)
            .field("client_cert", &self.client_identity.as_ref().map(|(cert, _)| cert))
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
        let builder = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
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

/// rustls' reason when `err` (or anything in its source chain) is a TLS failure. `io::Error` hides a
/// wrapped error from `source()`, so its inner error is looked at explicitly.
pub(crate) fn tls_cause(err: &(dyn StdError + 'static)) -> Option<String> {
    let mut next = Some(err);
    while let Some(e) = next {
        if let Some(tls) = e.downcast_ref::<rustls::Error>() {
            return Some(tls.to_string());
        }
        if let Some(io) = e.downcast_ref::<std::io::Error>()
            && let Some(inner) = io.get_ref()
        {
            if let Some(reason) = tls_cause(inner) {
                return Some(reason);
            }
            // tokio-rustls reports an alert from the peer (a client certificate the server refused, seen
            // only after a TLS 1.3 handshake completed) as an io::Error carrying rustls' message as text.
            let text = inner.to_string();
            if io.kind() == std::io::ErrorKind::InvalidData && text.starts_with("received fatal alert") {
                return Some(text);
            }
        }
        next = e.source();
    }
    None
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
        let missing = EtcdTls { ca_cert: Some(dir.path().join("nope.pem")), client_identity: None };
        let err = missing.client_config().unwrap_err();
        assert!(matches!(&err, MetaError::TlsFile { key: "etcd.ssl.tlsCACert", .. }), "{err}");
        assert!(err.to_string().contains("nope.pem"), "{err}");

        let cert = dir.path().join("cert.pem");
        std::fs::write(&cert, "not a certificate").unwrap();
        let garbage = EtcdTls { ca_cert: None, client_identity: Some((cert.clone(), cert)) };
        let err = garbage.client_config().unwrap_err();
        assert!(matches!(&err, MetaError::TlsFile { key: "etcd.ssl.tlsCert", .. }), "{err}");
        assert!(err.to_string().contains("no PEM CERTIFICATE block"), "{err}");
    }

    #[test]
    fn tls_cause_sees_through_io_errors() {
        let inner = rustls::Error::InvalidCertificate(rustls::CertificateError::UnknownIssuer);
        let io = std::io::Error::new(std::io::ErrorKind::InvalidData, inner);
        assert!(tls_cause(&io).unwrap().contains("UnknownIssuer"));
        assert_eq!(tls_cause(&std::io::Error::other("refused")), None);
        let alert = std::io::Error::new(std::io::ErrorKind::InvalidData, "received fatal alert: BadCertificate");
        assert_eq!(tls_cause(&alert).as_deref(), Some("received fatal alert: BadCertificate"));
    }
}
