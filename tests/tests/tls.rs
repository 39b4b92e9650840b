//! TLS on the native protocol: the real daemon with a certificate from a CA
//! generated here; the client with the right CA, a wrong CA, and without TLS.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair};
use sessiond_client::{Client, ClientConfig, CreateOptions, Error, TlsConfig};
use sessiond_e2e::{daemon_bin, free_port, DaemonProcess};

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

/// Three members on loopback, TLS on both ports with `cert`/`key`, checking
/// each other against `ca`; returns them and their client addresses.
fn tls_group(cert: &str, key: &str, ca: &str) -> (Vec<DaemonProcess>, Vec<String>, Vec<String>) {
    let clients: Vec<String> = (0..3)
        .map(|_| format!("127.0.0.1:{}", free_port()))
        .collect();
    let rafts: Vec<String> = (0..3)
        .map(|_| format!("127.0.0.1:{}", free_port()))
        .collect();
    let spec = rafts
        .iter()
        .enumerate()
        .map(|(i, r)| format!("{}={r}", i + 1))
        .collect::<Vec<_>>()
        .join(",");
    let members = (0..3)
        .map(|i| {
            let id = (i + 1).to_string();
            DaemonProcess::start(
                daemon_bin!(),
                &[
                    "--listen",
                    &clients[i],
                    "--node-id",
                    &id,
                    "--cluster",
                    &spec,
                    "--tls-cert",
                    cert,
                    "--tls-key",
                    key,
                    "--cluster-ca",
                    ca,
                ],
            )
            .unwrap()
        })
        .collect();
    (members, clients, rafts)
}

/// A TLS client of the group's members, trusting `ca`.
async fn group_client(clients: &[String], ca: &str, timeout: Duration) -> Client {
    Client::connect_with(
        ClientConfig::new(clients.join(","))
            .connections(1)
            .request_timeout(timeout)
            .tls(TlsConfig::with_ca_file(ca).unwrap()),
    )
    .await
    .unwrap()
}

/// Members talk TLS to each other with the client port's certificate,
/// checking it against `--cluster-ca`: a group whose members cannot check
/// each other's certificates elects no leader; with the right CA it serves,
/// and a plaintext stranger on the inter-node port gets nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn members_talk_tls_and_check_each_others_certificates() {
    let dir = tempfile::tempdir().unwrap();
    let (ca, cert, key) = make_pki(dir.path(), "good");
    let (other_ca, _, _) = make_pki(dir.path(), "other");

    // Wrong CA everywhere: no member can reach another, so no leader.
    let (members, clients, _) = tls_group(&cert, &key, &other_ca);
    let client = group_client(&clients, &ca, Duration::from_secs(2)).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let status = client.cluster_status().await.unwrap();
    assert_eq!(status.leader_id, None, "{status:?}");
    let logs = members[0].logs().to_lowercase();
    assert!(
        logs.contains("certificate") || logs.contains("unknownissuer"),
        "no certificate error logged:\n{logs}"
    );
    drop(members);

    // The right CA: the group elects a leader and replicates over TLS.
    let (_members, clients, rafts) = tls_group(&cert, &key, &ca);
    let client = group_client(&clients, &ca, Duration::from_secs(5)).await;
    let s = client
        .create("app", CreateOptions::new().owner("alice"))
        .await
        .unwrap();
    assert_eq!(client.incr("app", s.id, "n", 1).await.unwrap().value, 1);
    assert!(client.get("app", s.id).await.unwrap().is_some());

    // A plaintext hello on the inter-node port is not understood.
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut plain = tokio::net::TcpStream::connect(&rafts[0]).await.unwrap();
    plain.write_all(&[0, 0, 0, 4, 0, 0, 0, 0]).await.unwrap();
    let mut buf = [0u8; 64];
    let n = tokio::time::timeout(Duration::from_secs(6), plain.read(&mut buf))
        .await
        .unwrap()
        .unwrap_or(0);
    assert!(
        n == 0 || buf[0] == 0x15,
        "a plaintext peer got {n} bytes that are not a TLS alert"
    );
    assert!(client.get("app", s.id).await.unwrap().is_some());
}
