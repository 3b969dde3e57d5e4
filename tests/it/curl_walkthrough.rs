//! The README's boot-time enrollment with plain curl + openssl + jq (scripts/enroll-with-curl)
//! works against the real server: the protocol really is that simple.

use std::process::Command;

use crate::helpers::{require_tool, CaServer};

#[test]
fn enrollment_with_curl_and_openssl_produces_working_files() {
    for tool in ["curl", "jq", "openssl"] {
        require_tool(tool);
    }
    let server = CaServer::start(&[], &[]);
    let token = server.ca.token(&[
        "--node",
        "n1",
        "--ip",
        "10.0.0.11",
        "--dns",
        "n1.etcd.internal",
        "--profiles",
        "server,peer",
    ]);
    let dir = server.ca.tmp.path().join("pki");
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/enroll-with-curl");
    let run = Command::new(script)
        .env("CA", &server.url)
        .env("FP", &server.fingerprint)
        .env("TOKEN", &token)
        .env("DIR", &dir)
        .output()
        .unwrap();
    assert!(run.status.success(), "{run:?}");

    let verify = Command::new("openssl")
        .arg("verify")
        .arg("-CAfile")
        .arg(dir.join("ca.crt"))
        .arg(dir.join("server.crt"))
        .arg(dir.join("peer.crt"))
        .output()
        .unwrap();
    assert!(verify.status.success(), "{verify:?}");
    let server_pem = std::fs::read_to_string(dir.join("server.crt")).unwrap();
    let summary = etcd_ca::pki::CertSummary::from_der(
        &etcd_ca::pki::pem_certificates(&server_pem).unwrap()[0],
    )
    .unwrap();
    assert!(
        summary.sans.contains(&"DNS:n1.etcd.internal".to_string()),
        "{:?}",
        summary.sans
    );
    assert!(
        summary.sans.contains(&"IP:10.0.0.11".to_string()),
        "{:?}",
        summary.sans
    );
    etcd_ca::pki::check_crl_der(&std::fs::read(dir.join("ca.crl")).unwrap()).unwrap();

    // The renewal step replaced server.crt: the store holds server, peer and the renewal.
    let listed: Vec<serde_json::Value> = serde_json::from_str(
        &crate::helpers::etcd_ca([
            "list",
            "--data-dir",
            server.ca.data_dir(),
            "--node",
            "n1",
            "--json",
        ])
        .ok()
        .stdout,
    )
    .unwrap();
    assert_eq!(listed.len(), 3);
    assert!(listed
        .iter()
        .any(|c| c["serial"] == summary.serial.as_str() && !c["renewed_from"].is_null()));

    // A wrong fingerprint stops the script before any request carrying the token.
    let refused = Command::new(script)
        .env("CA", &server.url)
        .env("FP", format!("sha256:{}", "0".repeat(64)))
        .env("TOKEN", "unused")
        .env("DIR", server.ca.tmp.path().join("other"))
        .output()
        .unwrap();
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("CA fingerprint mismatch"));
}
