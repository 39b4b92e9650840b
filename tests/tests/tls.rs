//! TLS on the native protocol: the real daemon with a certificate from a CA
//! generated here; the client with the right CA, a wrong CA, and without TLS.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair};
use sessiond_client::{Client, ClientConfig, CreateOptions, Error, TlsConfig};
use sessiond_e2e::{daemon_bin, DaemonProcess};

/// Writes a CA and a server certificate for 127.0.0.1/localhost signed by it;
/// returns the CA's PEM path.
fn make_pki(dir: &Path, name: &str) -> (String, String, String) {
    let ca_key = KeyPair::generate().unwrap();
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca_cert = ca.self_signed(&ca_key).unwrap();
    let key = KeyPair::generate().unwrap();
    let params =
        CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()]).unwrap();
    let cert = params.signed_by(&key, &ca_cert, &ca_key).unwrap();
    let path = |f: &str| dir.join(format!("{name}-{f}")).to_str().unwrap().to_owned();
    std::fs::write(path("ca.pem"), ca_cert.pem()).unwrap();
    std::fs::write(path("cert.pem"), cert.pem()).unwrap();
    std::fs::write(path("key.pem"), key.serialize_pem()).unwrap();
    (path("ca.pem"), path("cert.pem"), path("key.pem"))
}

fn config(daemon: &DaemonProcess) -> ClientConfig {
    ClientConfig::new(daemon.addr().to_string())
        .connections(1)
        .connect_timeout(Duration::from_secs(3))
}

#[tokio::test]
async fn tls_with_the_right_ca_works_and_anything_else_fails() {
    let dir = tempfile::tempdir().unwrap();
    let (ca, cert, key) = make_pki(dir.path(), "good");
    let (other_ca, _, _) = make_pki(dir.path(), "other");
    let daemon =
        DaemonProcess::start(daemon_bin!(), &["--tls-cert", &cert, "--tls-key", &key]).unwrap();

    let client = Client::connect_with(config(&daemon).tls(TlsConfig::with_ca_file(&ca).unwrap()))
        .await
        .unwrap();
    let s = client
        .create("app", CreateOptions::new().owner("alice"))
        .await
        .unwrap();
    assert!(client.get("app", s.id).await.unwrap().is_some());

    let err =
        Client::connect_with(config(&daemon).tls(TlsConfig::with_ca_file(&other_ca).unwrap()))
            .await
            .unwrap_err();
    assert!(matches!(err, Error::Connect { .. }), "{err}");
    assert!(
        err.to_string().to_lowercase().contains("certificate"),
        "{err}"
    );

    // A plain client gets no session data, only a failed handshake.
    assert!(Client::connect_with(config(&daemon)).await.is_err());
    // The daemon is unharmed.
    assert!(client.get("app", s.id).await.unwrap().is_some());

    // sessionctl verifies with --tls-ca too.
    let out = Command::new(env!("CARGO_BIN_EXE_e2e-sessionctl"))
        .args([
            "--addr",
            &daemon.addr().to_string(),
            "--tls-ca",
            &ca,
            "ping",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    assert!(TlsConfig::with_ca_file(dir.path().join("missing.pem")).is_err());
}
