//! Certificates generated for the TLS tests: a CA with a server and a client certificate, and an
//! unrelated CA with its own client certificate for the negative cases.

use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
    KeyUsagePurpose,
};

/// PEM files in a temporary directory, removed on drop.
pub struct Pki {
    dir: tempfile::TempDir,
    /// CA that signed `server_cert` and `client_cert`.
    pub ca: PathBuf,
    /// Server certificate for `127.0.0.1` and `localhost`.
    pub server_cert: PathBuf,
    /// Its private key (PKCS#8).
    pub server_key: PathBuf,
    /// Client certificate (CN `root`) signed by `ca`.
    pub client_cert: PathBuf,
    /// Its private key.
    pub client_key: PathBuf,
    /// A CA unrelated to everything above.
    pub other_ca: PathBuf,
    /// A client certificate signed by `other_ca`.
    pub other_client_cert: PathBuf,
    /// Its private key.
    pub other_client_key: PathBuf,
}

fn ca(name: &str) -> CertifiedIssuer<'static, KeyPair> {
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.distinguished_name.push(DnType::CommonName, name);
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
    CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap()
}

/// A leaf certificate signed by `issuer`, written as `<name>.pem` and `<name>-key.pem`.
fn leaf(dir: &Path, name: &str, cn: &str, issuer: &CertifiedIssuer<'static, KeyPair>) -> (PathBuf, PathBuf) {
    let mut params = CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()]).unwrap();
    params.distinguished_name.push(DnType::CommonName, cn);
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature, KeyUsagePurpose::KeyEncipherment];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth, ExtendedKeyUsagePurpose::ClientAuth];
    let key = KeyPair::generate().unwrap();
    let cert = params.signed_by(&key, issuer).unwrap();
    let (cert_path, key_path) = (dir.join(format!("{name}.pem")), dir.join(format!("{name}-key.pem")));
    std::fs::write(&cert_path, cert.pem()).unwrap();
    std::fs::write(&key_path, key.serialize_pem()).unwrap();
    (cert_path, key_path)
}

impl Pki {
    /// Generates everything (ECDSA P-256) into a fresh temporary directory.
    pub fn generate() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let (ca_issuer, other_issuer) = (ca("woodpecker test CA"), ca("unrelated test CA"));
        let (ca_path, other_ca) = (dir.path().join("ca.pem"), dir.path().join("other-ca.pem"));
        std::fs::write(&ca_path, ca_issuer.pem()).unwrap();
        std::fs::write(&other_ca, other_issuer.pem()).unwrap();
        let (server_cert, server_key) = leaf(dir.path(), "server", "server", &ca_issuer);
        let (client_cert, client_key) = leaf(dir.path(), "client", "root", &ca_issuer);
        let (other_client_cert, other_client_key) = leaf(dir.path(), "other-client", "root", &other_issuer);
        Self {
            dir,
            ca: ca_path,
            server_cert,
            server_key,
            client_cert,
            client_key,
            other_ca,
            other_client_cert,
            other_client_key,
        }
    }

    /// A directory in MinIO's `--certs-dir` layout (`public.crt`, `private.key`) with the server certificate.
    pub fn minio_certs_dir(&self) -> PathBuf {
        let certs = self.dir.path().join("minio-certs");
        std::fs::create_dir_all(&certs).unwrap();
        std::fs::copy(&self.server_cert, certs.join("public.crt")).unwrap();
        std::fs::copy(&self.server_key, certs.join("private.key")).unwrap();
        certs
    }
}
