//! The client against real etcd processes secured as in production: TLS with client-certificate
//! authentication (`etcd.ssl.*`, certificates generated here) and user/password authentication
//! (`etcd.auth.*`). Each test starts its own etcd on free ports (the test bed's binary).

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::pki::Pki;
use common::server_process::ServerProcess;
use common::{read_n, unique};
use woodpecker_client::{Client, Config, LogMessageId, WoodpeckerError, WriteMessage};
use woodpecker_meta::MetaError;

/// Local segment files in `dir`, metadata in etcd at `endpoint`, with `etcd_extra` (YAML lines indented
/// under `etcd:`) added.
fn config(dir: &Path, endpoint: &str, etcd_extra: &str) -> Config {
    let yaml = format!(
        "woodpecker:\n  meta:\n    type: etcd\n  storage:\n    type: local\n    rootPath: {}\n\
         etcd:\n  endpoints: [\"{endpoint}\"]\n  rootPath: {}\n  requestTimeout: 5000\n{etcd_extra}",
        dir.display(),
        unique("sec"),
    );
    Config::from_yaml_str(&yaml).unwrap_or_else(|e| panic!("config: {e}\n{yaml}"))
}

fn tls_yaml(ca: &Path, cert: &Path, key: &Path) -> String {
    format!(
        "  ssl:\n    enabled: true\n    tlsCACert: {}\n    tlsCert: {}\n    tlsKey: {}\n    tlsMinVersion: \"1.3\"\n",
        ca.display(),
        cert.display(),
        key.display()
    )
}

fn auth_yaml(user: &str, password: &str) -> String {
    format!("  auth:\n    enabled: true\n    userName: {user}\n    password: {password}\n")
}

/// Adds `root` and `wal-user` (password `wal-pass`, read-write on every key) and turns authentication on.
async fn enable_auth(mut admin: etcd_client::Client) {
    admin.user_add("root", "r00t-pass", None).await.unwrap();
    admin.user_grant_role("root", "root").await.unwrap();
    admin.role_add("wal").await.unwrap();
    admin.role_grant_permission("wal", etcd_client::Permission::read_write("").with_all_keys()).await.unwrap();
    admin.user_add("wal-user", "wal-pass", None).await.unwrap();
    admin.user_grant_role("wal-user", "wal").await.unwrap();
    admin.auth_enable().await.unwrap();
}

/// Creates a log, writes three entries, reads them back and closes the client.
async fn write_and_read(cfg: Config) {
    let client = Client::open(cfg).await.expect("open the client");
    client.create_log("secured").await.unwrap();
    let log = client.open_log("secured").await.unwrap();
    let writer = log.open_writer().await.unwrap();
    let mut ids = Vec::new();
    for i in 0..3 {
        ids.push(writer.write(WriteMessage::new(format!("entry-{i}"))).await.unwrap());
    }
    writer.close().await.unwrap();
    let mut reader = log.open_reader(LogMessageId::EARLIEST, "check").await.unwrap();
    let got = read_n(&mut reader, 3, Duration::from_secs(30)).await;
    for (i, m) in got.iter().enumerate() {
        assert_eq!((m.id, m.payload.as_ref()), (ids[i], format!("entry-{i}").as_bytes()));
    }
    reader.close().await.unwrap();
    client.close().await;
}

/// Opens a client that must fail, within `bound`, and returns the metadata error.
async fn open_fails(cfg: Config, bound: Duration) -> MetaError {
    let started = Instant::now();
    let result = tokio::time::timeout(bound * 2, Client::open(cfg)).await.expect("Client::open hung");
    let elapsed = started.elapsed();
    assert!(elapsed < bound, "failing took {elapsed:?} (bound {bound:?})");
    match result {
        Err(WoodpeckerError::Meta(e)) => e,
        Err(other) => panic!("expected a metadata error, got {other}"),
        Ok(_) => panic!("expected the client to be refused"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcd_with_client_certificate_tls_serves_the_client_and_refuses_wrong_certificates_and_passwords() {
    let pki = Pki::generate();
    let etcd = ServerProcess::etcd(Some((&pki.server_cert, &pki.server_key, &pki.ca)));
    let data = tempfile::tempdir().unwrap();
    let hostport = format!("127.0.0.1:{}", etcd.port);
    let https = format!("https://{hostport}");

    // host:port and https:// endpoints both work with the generated CA and client certificate.
    for endpoint in [&hostport, &https] {
        let data = tempfile::tempdir().unwrap();
        write_and_read(config(data.path(), endpoint, &tls_yaml(&pki.ca, &pki.client_cert, &pki.client_key))).await;
    }

    // A CA file that does not exist: refused before connecting, naming the key and the path.
    let missing = pki.ca.with_file_name("no-such-ca.pem");
    let cfg = config(data.path(), &hostport, &tls_yaml(&missing, &pki.client_cert, &pki.client_key));
    match Client::open(cfg).await {
        Err(WoodpeckerError::Config(e)) => {
            assert_eq!(e.key(), Some("etcd.ssl.tlsCACert"));
            assert!(e.to_string().contains("no-such-ca.pem"), "{e}");
        }
        Err(other) => panic!("expected a config error, got {other}"),
        Ok(_) => panic!("a missing CA file was accepted"),
    }

    // A CA that did not sign the server certificate: a TLS error naming the endpoint, at once.
    let cfg = config(data.path(), &hostport, &tls_yaml(&pki.other_ca, &pki.client_cert, &pki.client_key));
    let err = open_fails(cfg, Duration::from_secs(5)).await;
    assert!(matches!(&err, MetaError::Tls { endpoint, .. } if endpoint.contains(&hostport)), "{err:?}");
    let text = err.to_string();
    assert!(text.contains(&hostport) && text.contains("UnknownIssuer"), "{text}");
    assert!(text.contains("etcd.ssl.tlsCACert"), "the message points at the setting: {text}");

    // A client certificate from another CA: etcd refuses it in the handshake.
    let cfg = config(data.path(), &hostport, &tls_yaml(&pki.ca, &pki.other_client_cert, &pki.other_client_key));
    let err = open_fails(cfg, Duration::from_secs(5)).await;
    assert!(matches!(&err, MetaError::Tls { endpoint, .. } if endpoint.contains(&hostport)), "{err:?}");

    // No client certificate at all (empty tlsCert/tlsKey): refused the same way.
    let no_identity = format!(
        "  ssl:\n    enabled: true\n    tlsCACert: {}\n    tlsCert: \"\"\n    tlsKey: \"\"\n",
        pki.ca.display()
    );
    let err = open_fails(config(data.path(), &hostport, &no_identity), Duration::from_secs(5)).await;
    assert!(matches!(&err, MetaError::Tls { .. }), "{err:?}");

    // TLS off against a TLS server: not a hang, an error naming the endpoints.
    let err = open_fails(config(data.path(), &hostport, ""), Duration::from_secs(30)).await;
    assert!(err.to_string().contains(&hostport), "{err}");

    // Both at once, as production etcd often runs: client certificate and user/password.
    let tls = etcd_client::TlsOptions::new()
        .ca_certificate(etcd_client::Certificate::from_pem(std::fs::read(&pki.ca).unwrap()))
        .identity(etcd_client::Identity::from_pem(
            std::fs::read(&pki.client_cert).unwrap(),
            std::fs::read(&pki.client_key).unwrap(),
        ));
    let admin = etcd_client::Client::connect([https.as_str()], Some(etcd_client::ConnectOptions::new().with_tls(tls)))
        .await
        .unwrap();
    enable_auth(admin).await;
    let tls_and_auth = |password: &str| {
        format!("{}{}", tls_yaml(&pki.ca, &pki.client_cert, &pki.client_key), auth_yaml("wal-user", password))
    };
    let data = tempfile::tempdir().unwrap();
    write_and_read(config(data.path(), &hostport, &tls_and_auth("wal-pass"))).await;
    let err = open_fails(config(data.path(), &hostport, &tls_and_auth("wrong")), Duration::from_secs(3)).await;
    assert!(matches!(&err, MetaError::AuthFailed { user, .. } if user == "wal-user"), "{err:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcd_with_user_password_auth_serves_the_client_and_refuses_a_wrong_password() {
    let etcd = ServerProcess::etcd(None);
    let endpoint = format!("127.0.0.1:{}", etcd.port);
    let admin = etcd_client::Client::connect([endpoint.as_str()], None).await.unwrap();
    enable_auth(admin).await;
    let data = tempfile::tempdir().unwrap();

    // A non-root user with read-write permission on all keys writes and reads.
    write_and_read(config(data.path(), &endpoint, &auth_yaml("wal-user", "wal-pass"))).await;

    // A wrong password: an authentication error naming the endpoint and the user, without retries.
    let err = open_fails(config(data.path(), &endpoint, &auth_yaml("wal-user", "wrong")), Duration::from_secs(3)).await;
    assert!(
        matches!(&err, MetaError::AuthFailed { endpoints, user, .. } if endpoints.as_slice() == [endpoint.as_str()] && user == "wal-user"),
        "{err:?}"
    );
    let text = err.to_string();
    assert!(text.contains(&endpoint) && text.contains("authentication failed"), "{text}");

    // No credentials against an etcd with auth on: refused with a message naming the endpoint.
    let err = open_fails(config(data.path(), &endpoint, ""), Duration::from_secs(10)).await;
    assert!(matches!(&err, MetaError::Rejected { .. }), "{err:?}");
    assert!(err.to_string().contains(&endpoint), "{err}");
}
