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
    // Node names only for an admin scrape; the public view has the soonest expiry per profile.
    assert!(
        !metrics.contains("node=\"n1\"")
            && metrics.contains("etcd_ca_certificate_expiry_min_seconds{profile=\"server\"}"),
        "{metrics}"
    );
    // A node's own certificate is no admin credential, and no wrong one either: the public view.
    let scraped_by_node = node.get("/metrics").await.unwrap();
    assert_eq!(scraped_by_node.status, 200);
    let node_view = String::from_utf8(scraped_by_node.body.to_vec()).unwrap();
    assert!(
        !node_view.contains("node=\"n1\"")
            && node_view.contains("etcd_ca_certificate_expiry_min_seconds{profile=\"server\"}"),
        "{node_view}"
    );
    let admin_view =
        String::from_utf8(server.admin().get("/metrics").await.unwrap().body.to_vec()).unwrap();
    assert!(
        admin_view.contains("etcd_ca_certificate_expiry_seconds{node=\"n1\",profile=\"server\"}"),
        "{admin_view}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_connection_renews_a_whole_node_and_admins_sign_csrs() {
    let server = CaServer::start(&[], &[]);
    let dir = server.ca.tmp.path().join("node");
    std::fs::create_dir_all(&dir).unwrap();
    let token: Value = server
        .admin()
        .post_json(
            "/v1/tokens",
            &json!({"node": "n1", "ips": ["10.0.0.1"], "profiles": ["server", "peer", "client"], "common_name": "n1-client"}),
        )
        .await
        .unwrap();
    let mut csrs = serde_json::Map::new();
    let mut keys = Vec::new();
    for profile in ["server", "peer", "client"] {
        let (csr_pem, key) = csr::rcgen(&[], etcd_ca::pki::KeyType::EcdsaP256);
        csrs.insert(profile.into(), csr_pem.into());
        keys.push((profile, key));
    }
    let enrolled: Value = server
        .client()
        .post_json(
            "/v1/enroll",
            &json!({"token": token["token"], "csrs": csrs}),
        )
        .await
        .unwrap();
    for (profile, key) in &keys {
        std::fs::write(
            dir.join(format!("{profile}.crt")),
            enrolled["certificates"][profile]["certificate_pem"]
                .as_str()
                .unwrap(),
        )
        .unwrap();
        std::fs::write(dir.join(format!("{profile}.key")), key).unwrap();
    }
    let serial = |p: &str| {
        enrolled["certificates"][p]["serial"]
            .as_str()
            .unwrap()
            .to_string()
    };

    let node = server.client_with_certificate(&dir.join("client.crt"), &dir.join("client.key"));
    let renewed: Value = node
        .post_json(
            "/v1/renew/node",
            &json!({"serials": [serial("server"), serial("peer")]}),
        )
        .await
        .unwrap();
    let certs = renewed["certificates"].as_array().unwrap();
    let profiles: Vec<&str> = certs
        .iter()
        .map(|c| c["profile"].as_str().unwrap())
        .collect();
    assert_eq!(profiles, ["client", "server", "peer"]);
    for c in certs {
        let p = c["profile"].as_str().unwrap();
        assert_ne!(c["serial"].as_str().unwrap(), serial(p));
        assert_eq!(c["sans"], enrolled["certificates"][p]["sans"]);
        assert_eq!(
            public_key_of(c["certificate_pem"].as_str().unwrap()),
            public_key_of(
                enrolled["certificates"][p]["certificate_pem"]
                    .as_str()
                    .unwrap()
            )
        );
    }

    // Another node's certificate cannot be renewed this way.
    let other = server.ca.tmp.path().join("other");
    let other_serial = server.ca.issue(
        &other,
        &["--profile", "peer", "--node", "n2", "--ip", "10.0.0.2"],
    );
    let recorded = || async {
        let page: serde_json::Value = server.admin().get_json("/v1/certs").await.unwrap();
        assert!(page["next"].is_null(), "one page holds them all");
        let certs: Vec<serde_json::Value> = page["certificates"].as_array().unwrap().clone();
        certs.len()
    };
    let before = recorded().await;
    let err = node
        .post_json::<_, Value>(
            "/v1/renew/node",
            &json!({"serials": [serial("server"), other_serial]}),
        )
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some("serial_unknown"));
    // A node's certificates renew all or none: the presented and the server certificate, which
    // were fine, were not renewed either.
    assert_eq!(recorded().await, before);

    // A serial listed twice (in any spelling), or the presented one listed, renews once.
    let upper = serial("server").to_uppercase();
    let renewed: Value = node
        .post_json(
            "/v1/renew/node",
            &json!({"serials": [serial("server"), upper, serial("client")]}),
        )
        .await
        .unwrap();
    let profiles: Vec<&str> = renewed["certificates"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["profile"].as_str().unwrap())
        .collect();
    assert_eq!(profiles, ["client", "server"]);
    let before = recorded().await;
    // A malformed serial or too many serials: refused, nothing renewed.
    let err = node
        .post_json::<_, Value>(
            "/v1/renew/node",
            &json!({"serials": [serial("server"), "not-a-serial"]}),
        )
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some("serial_invalid"));
    let many: Vec<String> = (1..=17).map(|i| format!("{i:040x}")).collect();
    let err = node
        .post_json::<_, Value>("/v1/renew/node", &json!({ "serials": many }))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, etcd_ca::client::ClientError::Api { status: 400, code, .. } if code == "too_many_serials"),
        "{err}"
    );
    assert_eq!(recorded().await, before);

    // An admin signs a CSR (cfssl sign); a node cannot.
    let (csr_pem, _) = csr::rcgen(&["10.0.0.9"], etcd_ca::pki::KeyType::EcdsaP256);
    let body = json!({"profile": "peer", "node": "n9", "csr": csr_pem});
    let signed: Value = server.admin().post_json("/v1/sign", &body).await.unwrap();
    assert_eq!(signed["sans"], json!(["IP:10.0.0.9"]));
    assert_eq!(signed["common_name"], "etcd-peer");
    let err = node
        .post_json::<_, Value>("/v1/sign", &body)
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some("admin_required"));
    let public: Value = json!({"profile": "peer", "node": "n9", "csr": csr::rcgen(&["8.8.8.8"], etcd_ca::pki::KeyType::EcdsaP256).0});
    let err = server
        .admin()
        .post_json::<_, Value>("/v1/sign", &public)
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some("san_not_allowed"));
}
