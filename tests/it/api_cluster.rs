//! Boot-time enrollment through the real HTTPS API, then a real three-member TLS etcd cluster
//! running on exactly what came back. The three nodes make their CSRs three different ways.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde_json::{json, Value};

use crate::csr;
use crate::helpers::{etcdctl, CaServer, ClientCreds, EtcdCluster, Ports};

const PORTS: Ports = Ports {
    client: 22479,
    peer: 22480,
};

async fn token(server: &CaServer, body: Value) -> String {
    let answer: Value = server.admin().post_json("/v1/tokens", &body).await.unwrap();
    answer["token"].as_str().unwrap().to_string()
}

/// Writes what an enrollment returned, with the keys the node kept, into a PKI dir.
fn install(dir: &Path, enrollment: &Value, keys: &BTreeMap<&str, String>) {
    std::fs::create_dir_all(dir).unwrap();
    for (profile, key) in keys {
        let cert = enrollment["certificates"][profile]["certificate_pem"]
            .as_str()
            .unwrap();
        std::fs::write(dir.join(format!("{profile}.crt")), cert).unwrap();
        std::fs::write(dir.join(format!("{profile}.key")), key).unwrap();
    }
    std::fs::write(
        dir.join("ca.crt"),
        enrollment["trust_bundle"].as_str().unwrap(),
    )
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_enroll_over_https_and_form_a_healthy_tls_cluster() {
    let server = CaServer::start(&[], &[]);
    let root = server.ca.tmp.path().to_path_buf();
    let crl = server.client().get("/v1/crl").await.unwrap().body;

    let mut pki: Vec<PathBuf> = Vec::new();
    for m in 1..=3 {
        let node = format!("n{m}");
        let ip = format!("127.0.0.1{m}");
        let token = token(
            &server,
            json!({"node": node, "ips": [ip, "127.0.0.1"], "profiles": ["server", "peer"]}),
        )
        .await;
        // The three ways nodes make CSRs today; CNs and extra extensions are ignored.
        let ((server_csr, server_key), (peer_csr, peer_key)) = match m {
            1 => (
                csr::openssl(&root, "n1-server", &[&ip]),
                csr::openssl(&root, "n1-peer", &[&ip, "127.0.0.1"]),
            ),
            2 => (
                csr::cfssl(&node, &[&ip]),
                csr::cfssl(&node, &[&ip, "127.0.0.1"]),
            ),
            _ => (
                csr::rcgen(&[&ip], etcd_ca::pki::KeyType::EcdsaP256),
                csr::rcgen(&[&ip, "127.0.0.1"], etcd_ca::pki::KeyType::EcdsaP384),
            ),
        };
        let body = json!({"token": token, "csrs": {"server": server_csr, "peer": peer_csr}});
        let enrollment: Value = server
            .client()
            .post_json("/v1/enroll", &body)
            .await
            .unwrap();
        assert_eq!(enrollment["node"], node);
        assert_eq!(enrollment["replayed"], false);

        // A lost response: the same token with the same CSRs gets the same certificates back.
        let again: Value = server
            .client()
            .post_json("/v1/enroll", &body)
            .await
            .unwrap();
        assert_eq!(again["replayed"], true);
        for profile in ["server", "peer"] {
            assert_eq!(
                again["certificates"][profile]["serial"],
                enrollment["certificates"][profile]["serial"]
            );
        }
        // Exactly the SANs etcd needs, whatever the CSR asked for.
        let server_sans = &enrollment["certificates"]["server"]["sans"];
        assert_eq!(
            server_sans,
            &json!([
                format!("IP:127.0.0.1"),
                format!("IP:{ip}"),
                "DNS:localhost",
                "IP:::1"
            ])
        );

        let dir = root.join(format!("pki-{node}"));
        install(
            &dir,
            &enrollment,
            &BTreeMap::from([("server", server_key), ("peer", peer_key)]),
        );
        std::fs::write(dir.join("ca.crl"), &crl).unwrap();
        pki.push(dir);
    }

    // A client for etcdctl, enrolled the same way.
    let ops_token = token(
        &server,
        json!({"node": "ops", "profiles": ["client"], "common_name": "ops"}),
    )
    .await;
    let (ops_csr, ops_key) = csr::rcgen(&[], etcd_ca::pki::KeyType::EcdsaP256);
    let ops: Value = server
        .client()
        .post_json(
            "/v1/enroll",
            &json!({"token": ops_token, "csrs": {"client": ops_csr}}),
        )
        .await
        .unwrap();
    assert_eq!(ops["certificates"]["client"]["common_name"], "ops");
    let ops_dir = root.join("ops");
    install(&ops_dir, &ops, &BTreeMap::from([("client", ops_key)]));
    let ops_creds = ClientCreds::in_dir(&ops_dir);

    let pki: [PathBuf; 3] = [pki[0].clone(), pki[1].clone(), pki[2].clone()];
    let cluster = EtcdCluster::start(&pki, PORTS, &ops_creds);
    let health = etcdctl(&cluster.endpoints(), &ops_creds, &["endpoint", "health"]).ok();
    let text = format!("{}{}", health.stdout, health.stderr);
    assert_eq!(text.matches("is healthy").count(), 3, "{text}");
    etcdctl(
        &cluster.endpoint(3),
        &ops_creds,
        &["put", "enrolled", "yes"],
    )
    .ok();
    let got = etcdctl(
        &cluster.endpoint(1),
        &ops_creds,
        &["get", "enrolled", "--print-value-only"],
    )
    .ok();
    assert_eq!(got.stdout.trim(), "yes");

    // Every certificate handed out is in the store (7 enrolled + the server's own).
    let page: serde_json::Value = server.admin().get_json("/v1/certs").await.unwrap();
    assert!(page["next"].is_null(), "one page holds them all");
    let certs: Vec<serde_json::Value> = page["certificates"].as_array().unwrap().clone();
    assert_eq!(certs.len(), 8);
}
