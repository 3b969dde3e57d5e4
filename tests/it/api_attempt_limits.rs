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

    // Wrong tokens from this address are answered 401 until it has failed 20 times in all,
    // then 429; a valid token from the same address still works (everyone behind one NAT shares
    // it), and so does a valid admin token, while a wrong one is refused.
    for _ in 0..15 {
        assert_eq!(
            enroll(&server, "etcdca_nonsense").await,
            (401, "token_invalid".into())
        );
    }
    assert_eq!(
        enroll(&server, "etcdca_nonsense").await,
        (429, "too_many_attempts".into())
    );
    let other = server
        .ca
        .token(&["--node", "n2", "--ip", "10.0.0.11", "--profiles", "server"]);
    assert_eq!(enroll(&server, &other).await.0, 200);
    let admin = server
        .admin()
        .send(Method::GET, "/v1/certs", None, &[])
        .await
        .unwrap();
    assert_eq!(
        admin.status.as_u16(),
        200,
        "a valid admin token is not refused"
    );
    let wrong_admin = server
        .client()
        .with_bearer("etcdca_0_wrong")
        .send(Method::GET, "/v1/certs", None, &[])
        .await
        .unwrap();
    assert_eq!(wrong_admin.status.as_u16(), 429);

    // Only the valid token enrolled.
    let listed = crate::helpers::etcd_ca([
        "list",
        "--data-dir",
        server.ca.data_dir(),
        "--profile",
        "server",
        "--json",
    ])
    .ok()
    .stdout;
    let listed: Value = serde_json::from_str(&listed).unwrap();
    let nodes: Vec<&str> = listed
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|c| c["node"].as_str())
        .collect();
    assert_eq!(nodes, ["n2"]);
    let metrics =
        String::from_utf8(server.client().get("/metrics").await.unwrap().body.to_vec()).unwrap();
    assert!(
        metrics.contains("reason=\"token_invalid\"} 21"),
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_requests_without_credentials_locks_nobody_out_and_is_audited_once() {
    let mut server = CaServer::start(&[], &[]);
    let audit_rows = |server: &CaServer| {
        let out = crate::helpers::etcd_ca([
            "audit",
            "--data-dir",
            server.ca.data_dir(),
            "--limit",
            "100000",
            "--json",
        ])
        .ok()
        .stdout;
        serde_json::from_str::<Value>(&out).unwrap()
    };
    let before = audit_rows(&server).as_array().unwrap().len();
    for _ in 0..150 {
        let bare = server
            .client()
            .send(Method::GET, "/v1/certs", None, &[])
            .await
            .unwrap();
        assert_eq!(bare.status.as_u16(), 401);
        let renew = server
            .client()
            .send(Method::POST, "/v1/renew", None, &[])
            .await
            .unwrap();
        assert_eq!(renew.status.as_u16(), 401);
    }
    let admin = server
        .admin()
        .send(Method::GET, "/v1/certs", None, &[])
        .await
        .unwrap();
    assert_eq!(admin.status.as_u16(), 200, "the admin is not locked out");
    let metrics =
        String::from_utf8(server.client().get("/metrics").await.unwrap().body.to_vec()).unwrap();
    assert!(
        metrics.contains("etcd_ca_requests_refused_total{action=\"renew\",reason=\"client_certificate_required\"} 150"),
        "{metrics}"
    );
    // 300 refusals, no row each; one summary when the server stops.
    assert_eq!(audit_rows(&server).as_array().unwrap().len(), before);
    server.stop();
    let rows = audit_rows(&server);
    let summaries: Vec<&Value> = rows
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["action"] == "refused.anonymous")
        .collect();
    assert_eq!(summaries.len(), 1, "{rows}");
    let detail = summaries[0]["detail"].as_str().unwrap();
    assert!(
        detail.contains("admin admin_required x150")
            && detail.contains("renew client_certificate_required x150"),
        "{detail}"
    );
    assert!(rows.as_array().unwrap().len() <= before + 2);
}
