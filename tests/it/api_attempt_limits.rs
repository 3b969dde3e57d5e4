//! A brute-forced token gets nowhere: wrong secrets for one token lock it, and an address that
//! keeps failing is refused for a while. Nothing is enrolled either way.

use hyper::Method;
use serde_json::{json, Value};

use crate::csr;
use crate::helpers::CaServer;

async fn enroll(server: &CaServer, token: &str) -> (u16, String) {
    let (csr_pem, _) = csr::rcgen(&["10.0.0.11"], etcd_ca::pki::KeyType::EcdsaP256);
    let body = json!({"token": token, "csrs": {"server": csr_pem}})
        .to_string()
        .into_bytes();
    let response = server
        .client()
        .send(
            Method::POST,
            "/v1/enroll",
            Some(("application/json", body)),
            &[],
        )
        .await
        .unwrap();
    let body: Value = serde_json::from_slice(&response.body).unwrap_or(Value::Null);
    (
        response.status.as_u16(),
        body["code"].as_str().unwrap_or("").to_string(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn guessing_locks_the_token_then_the_source() {
    let server = CaServer::start(&[], &[]);
    let token = server
        .ca
        .token(&["--node", "n1", "--ip", "10.0.0.11", "--profiles", "server"]);
    let (prefix, secret) = token.rsplit_once('_').unwrap();

    // Five wrong secrets for this token's id...
    for guess in 0..5 {
        let wrong = format!("{prefix}_{guess:064x}");
        assert_ne!(wrong, token);
        assert_eq!(enroll(&server, &wrong).await, (401, "token_invalid".into()));
    }
    // ...and the token is locked, even with its right secret.
    assert_eq!(enroll(&server, &token).await, (429, "token_locked".into()));
    assert!(!secret.is_empty());

    // Other tokens still work from here, until this address has failed 20 times in all.
    let other = server
        .ca
        .token(&["--node", "n2", "--ip", "10.0.0.11", "--profiles", "server"]);
    for _ in 0..15 {
        assert_eq!(
            enroll(&server, "etcdca_nonsense").await,
            (401, "token_invalid".into())
        );
    }
    assert_eq!(
        enroll(&server, &other).await,
        (429, "too_many_attempts".into())
    );
    let refused = server
        .admin()
        .send(Method::GET, "/v1/certs", None, &[])
        .await
        .unwrap();
    assert_eq!(
        refused.status.as_u16(),
        429,
        "the admin API too, from this address"
    );

    // Nothing was enrolled.
    let listed = crate::helpers::etcd_ca([
        "list",
        "--data-dir",
        server.ca.data_dir(),
        "--profile",
        "server",
    ])
    .ok()
    .stdout;
    assert!(listed.contains("no certificates match"), "{listed}");
    let metrics =
        String::from_utf8(server.client().get("/metrics").await.unwrap().body.to_vec()).unwrap();
    assert!(
        metrics.contains("reason=\"token_invalid\"} 20"),
        "{metrics}"
    );
}
