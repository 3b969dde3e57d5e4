//! `etcd-flags --format yaml` as a real etcd member reads it with `--config-file` (which makes
//! etcd ignore every flag): client TLS with the CRL enforced, and the peer port open only to
//! certificates with the peer CN.

use std::process::{Command, Stdio};
use std::time::Duration;

use crate::helpers::{etcd_ca, etcdctl, require_tool, wait_for, ClientCreds, TestCa};

const IP: &str = "127.0.0.14";
const CLIENT_PORT: u16 = 22979;
const PEER_PORT: u16 = 22980;

#[test]
fn a_member_started_from_the_yaml_form_enforces_the_crl_and_the_peer_cn() {
    let ca = TestCa::init(&[]);
    let root = ca.tmp.path();
    let pki = root.join("pki");
    let member = ["--node", "n1", "--ip", IP];
    ca.issue(&pki, &[&["--profile", "server"][..], &member].concat());
    // Peers connect from 127.0.0.1 on a single host (see the README's walkthrough).
    ca.issue(
        &pki,
        &[&["--profile", "peer"][..], &member, &["--ip", "127.0.0.1"]].concat(),
    );
    let client = |name: &str| {
        let dir = root.join(name);
        let serial = ca.issue(&dir, &["--profile", "client", "--node", name, "--cn", name]);
        (ClientCreds::in_dir(&dir), serial)
    };
    let (alice, _) = client("alice");
    let (mallory, revoked) = client("mallory");
    ca.cli("revoke", &[&revoked]).ok();
    ca.write_crl(&pki.join("ca.crl"));

    let mut yaml = etcd_ca([
        "etcd-flags",
        "--node",
        "n1",
        "--dir",
        pki.to_str().unwrap(),
        "--format",
        "yaml",
        "--check",
    ])
    .ok()
    .stdout;
    let client_url = format!("https://{IP}:{CLIENT_PORT}");
    let peer_url = format!("https://{IP}:{PEER_PORT}");
    yaml.push_str(&format!(
        "data-dir: '{}'\nlisten-client-urls: {client_url}\nadvertise-client-urls: {client_url}\n\
         listen-peer-urls: {peer_url}\ninitial-advertise-peer-urls: {peer_url}\n\
         initial-cluster: n1={peer_url}\n",
        root.join("data").display()
    ));
    let config = root.join("etcd.yaml");
    std::fs::write(&config, yaml).unwrap();
    let log = std::fs::File::create(root.join("etcd.log")).unwrap();
    let mut etcd = Command::new(require_tool("etcd"))
        .arg("--config-file")
        .arg(&config)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap();
    let log_text = || std::fs::read_to_string(root.join("etcd.log")).unwrap_or_default();

    wait_for("the member to be healthy", Duration::from_secs(20), || {
        etcdctl(&client_url, &alice, &["endpoint", "health"]).code == Some(0)
    });
    let refused = etcdctl(&client_url, &mallory, &["endpoint", "health"]);
    let peer = |cert: &str, key: &str| {
        Command::new(require_tool("curl"))
            .args(["-s", "--http1.1", "-o", "/dev/null", "-w", "%{http_code}"])
            .arg("--cacert")
            .arg(pki.join("ca.crt"))
            .arg("--cert")
            .arg(cert)
            .arg("--key")
            .arg(key)
            .arg(format!("{peer_url}/members"))
            .output()
            .unwrap()
    };
    let as_peer = peer(
        pki.join("peer.crt").to_str().unwrap(),
        pki.join("peer.key").to_str().unwrap(),
    );
    let as_client = peer(alice.cert.to_str().unwrap(), alice.key.to_str().unwrap());
    let _ = etcd.kill();
    let _ = etcd.wait();

    assert_ne!(
        refused.code,
        Some(0),
        "a revoked client was let in:\n{}",
        log_text()
    );
    assert_eq!(
        String::from_utf8_lossy(&as_peer.stdout),
        "200",
        "the peer certificate was refused on the peer port:\n{}",
        log_text()
    );
    assert_ne!(
        String::from_utf8_lossy(&as_client.stdout),
        "200",
        "a client certificate was accepted on the peer port"
    );
    assert!(log_text().contains("crl-file = "), "{}", log_text());
}
