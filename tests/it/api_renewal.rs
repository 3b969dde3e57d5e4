//! Renewal over mTLS: a new serial with the same identity and, by default, the same key; a CSR
//! re-keys but cannot add names.

use serde_json::{json, Value};

use crate::csr;
use crate::helpers::CaServer;

fn public_key_of(pem_text: &str) -> Vec<u8> {
    let der = etcd_ca::pki::pem_certificates(pem_text).unwrap().remove(0);
    let cert = etcd_ca::pki::parse_certificate(&der).unwrap();
    cert.public_key().raw.to_vec()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn renewal_keeps_identity_and_key_and_never_widens_names() {
    let server = CaServer::start(&[], &[]);
    let dir = server.ca.tmp.path().join("node");
    std::fs::create_dir_all(&dir).unwrap();

    let token: Value = server
        .admin()
        .post_json(
            "/v1/tokens",
            &json!({"node": "n1", "ips": ["10.0.0.1"], "dns_names": ["n1.etcd.internal"], "profiles": ["server"]}),
        )
        .await
        .unwrap();
    let (server_csr, server_key) = csr::rcgen(&["10.0.0.1"], etcd_ca::pki::KeyType::EcdsaP256);
    let enrolled: Value = server
        .client()
        .post_json(
            "/v1/enroll",
            &json!({"token": token["token"], "csrs": {"server": server_csr}}),
        )
        .await
        .unwrap();
    let first = &enrolled["certificates"]["server"];
    std::fs::write(
        dir.join("server.crt"),
        first["certificate_pem"].as_str().unwrap(),
    )
    .unwrap();
    std::fs::write(dir.join("server.key"), &server_key).unwrap();

    // Same key, no body.
    let node = server.client_with_certificate(&dir.join("server.crt"), &dir.join("server.key"));
    let renewed: Value = node.post_json("/v1/renew", &json!({})).await.unwrap();
    assert_ne!(renewed["serial"], first["serial"]);
    assert_eq!(renewed["sans"], first["sans"]);
    assert_eq!(renewed["common_name"], "etcd-server:n1");
    assert_eq!(renewed["profile"], "server");
    assert_eq!(
        public_key_of(renewed["certificate_pem"].as_str().unwrap()),
        public_key_of(first["certificate_pem"].as_str().unwrap()),
        "renewal reuses the key by default"
    );
    let record: Value = server
        .admin()
        .get_json(&format!(
            "/v1/certs/{}",
            renewed["serial"].as_str().unwrap()
        ))
        .await
        .unwrap();
    assert_eq!(record["renewed_from"], first["serial"]);

    // A renewal that asks for more names (and a new key) gets the key but not the names.
    let (greedy_csr, _greedy_key) = csr::rcgen(
        &["10.0.0.1", "10.9.9.9", "evil.example", "localhost"],
        etcd_ca::pki::KeyType::EcdsaP384,
    );
    let rekeyed: Value = node
        .post_json("/v1/renew", &json!({"csr": greedy_csr}))
        .await
        .unwrap();
    assert_eq!(rekeyed["sans"], first["sans"]);
    let text = rekeyed["certificate_pem"].as_str().unwrap();
    let summary =
        etcd_ca::pki::CertSummary::from_der(&etcd_ca::pki::pem_certificates(text).unwrap()[0])
            .unwrap();
    assert_eq!(summary.key_type, "ecdsa-p384");
    assert!(!summary
        .sans
        .iter()
        .any(|s| s.contains("10.9.9.9") || s.contains("evil")));

    let metrics =
        String::from_utf8(server.client().get("/metrics").await.unwrap().body.to_vec()).unwrap();
    assert!(
        metrics.contains("etcd_ca_certificates_renewed_total{profile=\"server\"} 2"),
        "{metrics}"
    );
    assert!(
        metrics.contains("etcd_ca_certificate_expiry_seconds{node=\"n1\",profile=\"server\"}"),
        "{metrics}"
    );
}
