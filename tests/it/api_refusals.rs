//! Bad input gets a 4xx with a specific code, and nothing is written: no certificate is
//! recorded and the bootstrap token is not consumed (it still works afterwards). Refusals are
//! only counted in the metrics and noted in the audit trail.

use std::path::Path;

use hyper::Method;
use serde_json::{json, Value};

use crate::csr;
use crate::helpers::{CaServer, TestCa, TestClock};
use etcd_ca::client::{ApiClient, Response};

/// One refusal of the table: what it is, who asks, method, path, content type, body, and the
/// status and code it must get.
type Case<'a> = (
    &'a str,
    &'a ApiClient,
    Method,
    &'a str,
    &'a str,
    Option<Vec<u8>>,
    (u16, &'a str),
);

/// Status and error code of a refused request.
fn refusal(response: Response) -> (u16, String) {
    let body: Value = serde_json::from_slice(&response.body)
        .unwrap_or_else(|_| panic!("not JSON: {:?}", String::from_utf8_lossy(&response.body)));
    assert!(
        body["message"].as_str().is_some_and(|m| !m.is_empty()),
        "{body}"
    );
    (
        response.status.as_u16(),
        body["code"].as_str().unwrap().to_string(),
    )
}

/// Status and error code of a bodiless request that must be refused.
async fn refused(client: &ApiClient, method: Method, path: &str) -> (u16, String) {
    refusal(client.send(method, path, None, &[]).await.unwrap())
}

async fn post(client: &ApiClient, path: &str, content_type: &str, body: Vec<u8>) -> (u16, String) {
    refusal(
        client
            .send(Method::POST, path, Some((content_type, body)), &[])
            .await
            .unwrap(),
    )
}

async fn enroll(client: &ApiClient, token: &str, csrs: Value) -> (u16, String) {
    let body = json!({"token": token, "csrs": csrs})
        .to_string()
        .into_bytes();
    post(client, "/v1/enroll", "application/json", body).await
}

async fn certificate_count(server: &CaServer) -> usize {
    let page: serde_json::Value = server.admin().get_json("/v1/certs").await.unwrap();
    assert!(page["next"].is_null(), "one page holds them all");
    let certs: Vec<serde_json::Value> = page["certificates"].as_array().unwrap().clone();
    certs.len()
}

/// Signs a leaf with the CA's own key, bypassing the authority: a certificate the store never saw.
fn unrecorded_certificate(ca_dir: &Path, out: &Path) {
    let ca_cert = std::fs::read_to_string(ca_dir.join("ca/gen-1.crt")).unwrap();
    let ca_key = crate::helpers::ca_key(ca_dir);
    let issuer = rcgen::Issuer::from_ca_cert_pem(&ca_cert, ca_key).unwrap();
    let key = rcgen::KeyPair::generate().unwrap();
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth];
    params.not_before = time::OffsetDateTime::now_utc() - time::Duration::minutes(5);
    params.not_after = time::OffsetDateTime::now_utc() + time::Duration::days(1);
    let cert = params.signed_by(&key, &issuer).unwrap();
    std::fs::create_dir_all(out).unwrap();
    std::fs::write(out.join("client.crt"), cert.pem()).unwrap();
    std::fs::write(out.join("client.key"), key.serialize_pem()).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_bad_input_gets_a_specific_4xx_and_writes_nothing() {
    // Expiry without sleeping: the server's clock is moved a day on near the end.
    let clock_dir = tempfile::tempdir().unwrap();
    let clock = TestClock::new(clock_dir.path());
    let server = CaServer::start_with_clock(&[], &[], &clock);
    let root = server.ca.tmp.path().to_path_buf();
    let client = server.client();
    let admin = server.admin();

    // Fixtures for renewal refusals, made before counting.
    let revoked_dir = root.join("revoked");
    let revoked = server.ca.issue(
        &revoked_dir,
        &["--profile", "client", "--node", "ops", "--cn", "alice"],
    );
    let _: Value = admin
        .post_json(
            &format!("/v1/certs/{revoked}/revoke"),
            &json!({"reason": "keyCompromise"}),
        )
        .await
        .unwrap();
    let expired_dir = root.join("expired");
    server.ca.issue(
        &expired_dir,
        &[
            "--profile",
            "client",
            "--node",
            "ops",
            "--cn",
            "bob",
            "--lifetime",
            "1h",
        ],
    );
    let foreign = TestCa::init(&[]);
    let foreign_dir = foreign.tmp.path().join("foreign");
    foreign.issue(
        &foreign_dir,
        &["--profile", "client", "--node", "ops", "--cn", "carol"],
    );
    let unrecorded_dir = root.join("unrecorded");
    unrecorded_certificate(&server.ca.dir, &unrecorded_dir);

    let token: Value = admin
        .post_json(
            "/v1/tokens",
            &json!({"node": "n1", "ips": ["10.0.0.1"], "profiles": ["server", "client"], "common_name": "app"}),
        )
        .await
        .unwrap();
    let token = token["token"].as_str().unwrap().to_string();
    let short: Value = admin
        .post_json(
            "/v1/tokens",
            &json!({"node": "n2", "ips": ["10.0.0.2"], "profiles": ["server"], "ttl": "1h"}),
        )
        .await
        .unwrap();
    let before = certificate_count(&server).await;

    let (good_csr, _) = csr::rcgen(&["10.0.0.1"], etcd_ca::pki::KeyType::EcdsaP256);
    let garbage = "-----BEGIN CERTIFICATE REQUEST-----\nnot base64 at all!\n-----END CERTIFICATE REQUEST-----\n";
    let forged = {
        let mut der = pem::parse(&good_csr).unwrap().into_contents();
        let last = der.len() - 1;
        der[last] ^= 0x55;
        pem::encode(&pem::Pem::new("CERTIFICATE REQUEST", der))
    };
    let p521 = csr::openssl_with_key(
        &root,
        "p521",
        &["ecparam", "-name", "secp521r1", "-genkey", "-noout"],
    );
    let (wide_csr, _) = csr::rcgen(&["10.0.0.1", "10.0.0.99"], etcd_ca::pki::KeyType::EcdsaP256);
    let enroll_body = |token: &str, csrs: Value| {
        Some(
            json!({"token": token, "csrs": csrs})
                .to_string()
                .into_bytes(),
        )
    };
    let wrong = client
        .clone()
        .with_bearer(format!("etcdca_{}_{}", "1".repeat(16), "2".repeat(64)));
    let node_token = client.clone().with_bearer(token.clone());
    let with_cert = |dir: &Path| {
        server.client_with_certificate(&dir.join("client.crt"), &dir.join("client.key"))
    };

    // Every refusal: what it is, who asks, the request, and the status and code it must get.
    let json_type = "application/json";
    let cases: Vec<Case> = vec![
        (
            "malformed PEM",
            &client,
            Method::POST,
            "/v1/enroll",
            json_type,
            enroll_body(&token, json!({"server": garbage})),
            (400, "csr_malformed"),
        ),
        (
            "not PEM at all",
            &client,
            Method::POST,
            "/v1/enroll",
            json_type,
            enroll_body(&token, json!({"server": "hello"})),
            (400, "csr_malformed"),
        ),
        (
            "a CSR whose signature does not verify",
            &client,
            Method::POST,
            "/v1/enroll",
            json_type,
            enroll_body(&token, json!({"server": forged})),
            (400, "csr_signature_invalid"),
        ),
        (
            "a key type the CA does not issue for (P-521)",
            &client,
            Method::POST,
            "/v1/enroll",
            json_type,
            enroll_body(&token, json!({"server": p521})),
            (400, "key_type_not_allowed"),
        ),
        (
            "a SAN outside the token's identity",
            &client,
            Method::POST,
            "/v1/enroll",
            json_type,
            enroll_body(&token, json!({"server": wide_csr})),
            (403, "san_outside_identity"),
        ),
        (
            "a profile the token does not allow",
            &client,
            Method::POST,
            "/v1/enroll",
            json_type,
            enroll_body(&token, json!({"peer": good_csr})),
            (403, "profile_not_allowed"),
        ),
        (
            "no CSR at all",
            &client,
            Method::POST,
            "/v1/enroll",
            json_type,
            enroll_body(&token, json!({})),
            (400, "csr_missing"),
        ),
        (
            "a token for CN=root without the explicit flag",
            &admin,
            Method::POST,
            "/v1/tokens",
            json_type,
            Some(
                json!({"node": "ops", "profiles": ["client"], "common_name": "root"})
                    .to_string()
                    .into_bytes(),
            ),
            (403, "common_name_privileged"),
        ),
        (
            "an unknown token",
            &client,
            Method::POST,
            "/v1/enroll",
            json_type,
            enroll_body(
                &format!("etcdca_{}_{}", "0".repeat(16), "0".repeat(64)),
                json!({"server": good_csr}),
            ),
            (401, "token_invalid"),
        ),
        (
            "a malformed token",
            &client,
            Method::POST,
            "/v1/enroll",
            json_type,
            enroll_body("guess", json!({"server": good_csr})),
            (401, "token_invalid"),
        ),
        (
            "a wrong content type",
            &client,
            Method::POST,
            "/v1/enroll",
            "text/plain",
            enroll_body(&token, json!({"server": good_csr})),
            (415, "content_type_unsupported"),
        ),
        (
            "invalid JSON",
            &client,
            Method::POST,
            "/v1/enroll",
            json_type,
            Some(b"{".to_vec()),
            (400, "body_invalid"),
        ),
        (
            "an unknown field",
            &client,
            Method::POST,
            "/v1/enroll",
            json_type,
            Some(
                json!({"token": token, "csrs": {}, "sans": ["10.9.9.9"]})
                    .to_string()
                    .into_bytes(),
            ),
            (400, "body_invalid"),
        ),
        (
            "an oversized body",
            &client,
            Method::POST,
            "/v1/enroll",
            json_type,
            enroll_body(&token, json!({"server": "A".repeat(100 * 1024)})),
            (413, "body_too_large"),
        ),
        (
            "a page of no certificates",
            &admin,
            Method::GET,
            "/v1/certs?limit=0",
            "",
            None,
            (400, "query_invalid"),
        ),
        (
            "a page cursor that is not one",
            &admin,
            Method::GET,
            "/v1/certs?after=garbage",
            "",
            None,
            (400, "query_invalid"),
        ),
        (
            "an expiry window that is not a duration",
            &admin,
            Method::GET,
            "/v1/certs?expiring_within=abc",
            "",
            None,
            (400, "query_invalid"),
        ),
        (
            "an audit trail of no events",
            &admin,
            Method::GET,
            "/v1/audit?limit=0",
            "",
            None,
            (400, "query_invalid"),
        ),
        (
            "the admin API without a token",
            &client,
            Method::GET,
            "/v1/certs",
            "",
            None,
            (401, "admin_required"),
        ),
        (
            "the admin API with a wrong token",
            &wrong,
            Method::GET,
            "/v1/certs",
            "",
            None,
            (401, "admin_token_invalid"),
        ),
        (
            "a bootstrap token is not an admin token",
            &node_token,
            Method::GET,
            "/v1/certs",
            "",
            None,
            (401, "admin_token_invalid"),
        ),
        (
            "an unknown serial",
            &admin,
            Method::GET,
            "/v1/certs/00ff",
            "",
            None,
            (404, "serial_unknown"),
        ),
        (
            "revoking an unknown serial",
            &admin,
            Method::POST,
            "/v1/certs/00ff/revoke",
            "",
            None,
            (404, "serial_unknown"),
        ),
        (
            "a serial that is not hex",
            &admin,
            Method::GET,
            "/v1/certs/not-hex",
            "",
            None,
            (400, "serial_invalid"),
        ),
        (
            "renewal without a certificate",
            &client,
            Method::POST,
            "/v1/renew",
            "",
            None,
            (401, "client_certificate_required"),
        ),
    ];
    for (what, who, method, path, content_type, body, want) in cases {
        let body = body.map(|b| (content_type, b));
        let got = refusal(who.send(method, path, body, &[]).await.unwrap());
        assert_eq!(got, (want.0, want.1.to_string()), "{what}");
    }
    // Renewal with a foreign CA's certificate, a revoked one, one never recorded.
    for (what, dir, want) in [
        (
            "a foreign CA's certificate",
            &foreign_dir,
            (401, "client_certificate_untrusted"),
        ),
        (
            "a revoked certificate",
            &revoked_dir,
            (403, "client_certificate_revoked"),
        ),
        (
            "a certificate never recorded",
            &unrecorded_dir,
            (403, "client_certificate_unknown"),
        ),
    ] {
        let got = refused(&with_cert(dir), Method::POST, "/v1/renew").await;
        assert_eq!(got, (want.0, want.1.to_string()), "{what}");
    }
    let renew_with = with_cert;
    let renew = |c: ApiClient| async move { refused(&c, Method::POST, "/v1/renew").await };

    // Nothing was written by any of that.
    assert_eq!(certificate_count(&server).await, before);

    // The token was not consumed: it still enrolls. A CSR asking for CN=root gets the token's CN.
    let (root_csr, _) = {
        let key = etcd_ca::pki::KeyType::EcdsaP256.generate().unwrap();
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.distinguished_name = rcgen::DistinguishedName::new();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "root");
        (params.serialize_request(&key).unwrap().pem().unwrap(), key)
    };
    let enrolled: Value = client
        .post_json(
            "/v1/enroll",
            &json!({"token": token, "csrs": {"server": good_csr, "client": root_csr}}),
        )
        .await
        .unwrap();
    assert_eq!(enrolled["certificates"]["client"]["common_name"], "app");
    assert_eq!(certificate_count(&server).await, before + 2);

    // Reusing it with other CSRs is refused, and writes nothing.
    let (other_csr, _) = csr::rcgen(&["10.0.0.1"], etcd_ca::pki::KeyType::EcdsaP256);
    assert_eq!(
        enroll(&client, &token, json!({"server": other_csr})).await,
        (409, "token_used".into())
    );
    assert_eq!(certificate_count(&server).await, before + 2);

    // A day later: the one-hour token and the one-hour certificate have expired.
    clock.advance(std::time::Duration::from_secs(86400));
    assert_eq!(
        enroll(
            &client,
            short["token"].as_str().unwrap(),
            json!({"server": good_csr})
        )
        .await,
        (401, "token_expired".into())
    );
    assert_eq!(
        renew(renew_with(&expired_dir)).await,
        (401, "client_certificate_expired".into())
    );
    assert_eq!(certificate_count(&server).await, before + 2);

    // Refusals are counted and audited.
    let metrics = String::from_utf8(client.get("/metrics").await.unwrap().body.to_vec()).unwrap();
    assert!(
        metrics
            .contains("etcd_ca_requests_refused_total{action=\"enroll\",reason=\"token_used\"} 1"),
        "{metrics}"
    );
    assert!(metrics.contains("etcd_ca_requests_refused_total{action=\"renew\",reason=\"client_certificate_revoked\"} 1"), "{metrics}");
    let audit: Vec<Value> = admin.get_json("/v1/audit?limit=200").await.unwrap();
    assert!(audit.iter().any(|e| e["action"] == "enroll.refused"));
    assert!(audit.iter().any(|e| e["action"] == "renew.refused"));
}
