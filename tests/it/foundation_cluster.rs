//! A real three-member TLS etcd cluster built only from certificates `etcd-ca issue` wrote, with
//! the flags `etcd-ca etcd-flags` printed: client and peer certificate auth, CRLs, and the peer
//! CN lock all on.

use std::path::PathBuf;

use crate::helpers::{
    etcdctl, https_post_json, tls_client_config, tls_connect, ClientCreds, EtcdCluster, Ports,
    TestCa,
};

const PORTS: Ports = Ports {
    client: 22379,
    peer: 22380,
};

fn b64(text: &str) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(text)
}

#[test]
fn cluster_from_issued_certificates_enforces_identity_and_revocation() {
    let ca = TestCa::init(&[]);
    let root = ca.tmp.path().to_path_buf();

    // Per-member PKI dirs, exactly as an operator would build them with the CLI.
    let pki: [PathBuf; 3] = [1, 2, 3].map(|m| root.join(format!("pki-n{m}")));
    for (i, dir) in pki.iter().enumerate() {
        let m = i + 1;
        let node = format!("n{m}");
        let ip = EtcdCluster::ip(m).to_string();
        let dns = format!("n{m}.etcd.test");
        ca.issue(
            dir,
            &[
                "--profile",
                "server",
                "--node",
                &node,
                "--ip",
                &ip,
                "--dns",
                &dns,
            ],
        );
        // On one host, peers connect from 127.0.0.1: the peer certificate needs that address.
        ca.issue(
            dir,
            &[
                "--profile",
                "peer",
                "--node",
                &node,
                "--ip",
                &ip,
                "--ip",
                "127.0.0.1",
                "--dns",
                &dns,
            ],
        );
        ca.write_crl(&dir.join("ca.crl"));
    }
    let bob_dir = root.join("bob");
    let alice_dir = root.join("alice");
    ca.issue(
        &bob_dir,
        &["--profile", "client", "--node", "ops", "--cn", "bob"],
    );
    let alice_serial = ca.issue(
        &alice_dir,
        &["--profile", "client", "--node", "ops", "--cn", "alice"],
    );
    let bob = ClientCreds::in_dir(&bob_dir);
    let alice = ClientCreds::in_dir(&alice_dir);

    let cluster = EtcdCluster::start(&pki, PORTS, &bob);

    // endpoint health on all three members.
    let health = etcdctl(&cluster.endpoints(), &bob, &["endpoint", "health"]).ok();
    assert_eq!(
        health.stdout.matches("is healthy").count() + health.stderr.matches("is healthy").count(),
        3,
        "{health:?}"
    );

    // A write through member 1 is read back through members 2 and 3.
    etcdctl(&cluster.endpoint(1), &bob, &["put", "foundation/key", "v1"]).ok();
    for m in [2, 3] {
        let got = etcdctl(
            &cluster.endpoint(m),
            &bob,
            &["get", "foundation/key", "--print-value-only"],
        )
        .ok();
        assert_eq!(got.stdout.trim(), "v1", "member {m}");
    }

    // etcd's HTTP/JSON gateway dials the local listener with the server certificate: this read
    // fails when the server certificate lacks clientAuth.
    let stream = tls_connect(
        cluster.client_addr(2),
        EtcdCluster::ip(2),
        tls_client_config(&bob.ca, Some(&bob)),
    )
    .unwrap();
    let (status, body) = https_post_json(
        stream,
        "127.0.0.12",
        "/v3/kv/range",
        &format!("{{\"key\":\"{}\"}}", b64("foundation/key")),
    );
    assert_eq!(status, 200, "{body}");
    assert!(body.contains(&b64("v1")), "{body}");

    // A client certificate from another CA is refused.
    let foreign = TestCa::init(&[]);
    let foreign_dir = foreign.tmp.path().join("bob");
    foreign.issue(
        &foreign_dir,
        &["--profile", "client", "--node", "ops", "--cn", "bob"],
    );
    let mut foreign_bob = ClientCreds::in_dir(&foreign_dir);
    foreign_bob.ca = bob.ca.clone(); // it trusts the right server; only its own certificate is foreign
    etcdctl(
        &cluster.endpoint(1),
        &foreign_bob,
        &["get", "foundation/key"],
    )
    .fails();
    assert!(
        cluster.log_text().contains("rejected connection"),
        "etcd logs the refusal"
    );

    // Revocation: alice works, is revoked, the CRL files are rewritten, alice is refused while
    // bob still works. etcd re-reads the CRL file on every connection.
    etcdctl(&cluster.endpoint(1), &alice, &["get", "foundation/key"]).ok();
    ca.cli("revoke", &[&alice_serial, "--reason", "keyCompromise"])
        .ok();
    for dir in &pki {
        ca.write_crl(&dir.join("ca.crl"));
    }
    for m in 1..=3 {
        etcdctl(&cluster.endpoint(m), &alice, &["get", "foundation/key"]).fails();
        etcdctl(&cluster.endpoint(m), &bob, &["get", "foundation/key"]).ok();
    }

    // Member 1's server certificate is valid for its own address and not for member 2's.
    let config = tls_client_config(&bob.ca, Some(&bob));
    tls_connect(cluster.client_addr(1), EtcdCluster::ip(1), config.clone()).unwrap();
    let Err(err) = tls_connect(cluster.client_addr(1), EtcdCluster::ip(2), config) else {
        panic!("member 1's certificate must not verify as 127.0.0.12");
    };
    assert!(err.contains("not valid for name \"127.0.0.12\""), "{err}");
}
