//! Narrower authority and stricter input: a weak CSR signature, the CA's own node name, a
//! JSON body under another media type, and the client-certificate CA names the TLS handshake
//! advertises (Go clients send no certificate whose issuer is not listed).

use std::process::Command;

use hyper::Method;
use serde_json::{json, Value};

use crate::helpers::{openssl, require_tool, CaServer};

async fn post(server: &CaServer, path: &str, content_type: &str, body: Value) -> (u16, String) {
    let response = server
        .admin()
        .send(
            Method::POST,
            path,
            Some((content_type, body.to_string().into_bytes())),
            &[],
        )
        .await
        .unwrap();
    let answer: Value = serde_json::from_slice(&response.body).unwrap_or(Value::Null);
    (
        response.status.as_u16(),
        answer["code"].as_str().unwrap_or("").to_string(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn weak_csrs_the_servers_own_name_and_other_media_types_are_refused() {
    let server = CaServer::start(&[], &[]);
    let dir = server.ca.tmp.path();

    // A CSR signed with SHA-1.
    openssl(
        dir,
        &[
            "req",
            "-new",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-sha1",
            "-nodes",
            "-subj",
            "/CN=n1",
            "-keyout",
            "sha1.key",
            "-out",
            "sha1.csr",
        ],
    );
    let csr = std::fs::read_to_string(dir.join("sha1.csr")).unwrap();
    let token = server.ca.token(&["--node", "n1", "--profiles", "server"]);
    let enroll = json!({"token": token, "csrs": {"server": csr}});
    assert_eq!(
        post(&server, "/v1/enroll", "application/json", enroll.clone()).await,
        (400, "csr_signature_weak".into())
    );

    // A JSON body sent as another media type, even one ending in +json.
    assert_eq!(
        post(&server, "/v1/enroll", "application/evil+json", enroll).await,
        (415, "content_type_unsupported".into())
    );

    // The node name of the CA server's own certificate.
    for (path, body) in [
        (
            "/v1/tokens",
            json!({"node": "etcd-ca-server", "profiles": ["server"]}),
        ),
        (
            "/v1/issue",
            json!({"profile": "server", "node": "etcd-ca-server", "ips": ["10.0.0.1"]}),
        ),
    ] {
        assert_eq!(
            post(&server, path, "application/json", body).await,
            (403, "node_reserved".into()),
            "{path}"
        );
    }
}

#[test]
fn the_handshake_names_no_client_ca_that_a_rotation_would_make_stale() {
    let server = CaServer::start(&[], &[]);
    server.remote(&["ca", "rotate", "start"]).ok();
    server.remote(&["ca", "rotate", "activate", "--force"]).ok();
    let addr = server.url.trim_start_matches("https://").to_string();
    let out = Command::new(require_tool("openssl"))
        .args(["s_client", "-connect", &addr, "-tls1_3"])
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(
        said.contains("No client certificate CA names sent"),
        "the server lists client CA names: {said}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_type_the_ca_cannot_generate_has_its_own_refusal() {
    let server = CaServer::start(&[], &[]);
    let body = json!({"profile": "client", "node": "ops", "common_name": "ops", "key_type": "rsa"});
    assert_eq!(
        post(&server, "/v1/issue", "application/json", body).await,
        (400, "key_type_unsupported".into())
    );
}
