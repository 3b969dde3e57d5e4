//! A faulty CA answer is never installed. An impostor endpoint with a genuine serving
//! certificate from the real CA (so the agent's TLS checks pass) answers renewals with a
//! truncated certificate, a certificate for another key, one with other names, an error; and
//! the trust bundle and CRL with garbage. Each time the agent refuses and the PKI dir is left
//! exactly as it was.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use http_body_util::Full;
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

use crate::helpers::{snapshot, CaServer, TestClock, ETCD_CA};

pub(crate) type Answer = (u16, &'static str, Vec<u8>);

/// Serves `answer(path)` to every request over TLS with a certificate the real CA signed.
/// Status 0 means: never answer.
pub(crate) async fn impostor(
    ca_dir: &Path,
    answer: Arc<dyn Fn(&str) -> Answer + Send + Sync>,
) -> String {
    let ca_cert = std::fs::read_to_string(ca_dir.join("ca/gen-1.crt")).unwrap();
    let ca_key = crate::helpers::ca_key(ca_dir);
    let issuer = rcgen::Issuer::from_ca_cert_pem(&ca_cert, ca_key).unwrap();
    let key = rcgen::KeyPair::generate().unwrap();
    let mut params = rcgen::CertificateParams::new(vec!["127.0.0.1".to_string()]).unwrap();
    params.not_before = time::OffsetDateTime::now_utc() - time::Duration::minutes(1);
    params.not_after = time::OffsetDateTime::now_utc() + time::Duration::hours(1);
    let leaf = params.signed_by(&key, &issuer).unwrap();
    let chain = vec![
        CertificateDer::from(leaf.der().to_vec()),
        CertificateDer::from(etcd_ca::pki::pem_certificates(&ca_cert).unwrap().remove(0)),
    ];
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(
        chain,
        PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
    )
    .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("https://{}", listener.local_addr().unwrap());
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let (acceptor, answer) = (acceptor.clone(), answer.clone());
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let service = hyper::service::service_fn(
                    move |req: hyper::Request<hyper::body::Incoming>| {
                        let (status, content_type, body) = answer(req.uri().path());
                        async move {
                            if status == 0 {
                                std::future::pending::<()>().await;
                            }
                            hyper::Response::builder()
                                .status(status)
                                .header("content-type", content_type)
                                .body(Full::new(Bytes::from(body)))
                        }
                    },
                );
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(tls), service)
                    .await;
            });
        }
    });
    url
}

/// Runs one agent pass against `server`; returns (exit code, stderr).
async fn agent_once(
    server: &str,
    fingerprint: &str,
    dir: &Path,
    extra: &[&str],
) -> (Option<i32>, String) {
    agent_once_on(server, fingerprint, dir, extra, None).await
}

/// [`agent_once`] with the agent on `clock`.
async fn agent_once_on(
    server: &str,
    fingerprint: &str,
    dir: &Path,
    extra: &[&str],
    clock: Option<&TestClock>,
) -> (Option<i32>, String) {
    let mut command = tokio::process::Command::new(ETCD_CA);
    if let Some(clock) = clock {
        let (name, file) = clock.env();
        command.env(name, file);
    }
    let out = command
        .args([
            "agent",
            "--once",
            "--server",
            server,
            "--ca-fingerprint",
            fingerprint,
            "--node",
            "n1",
        ])
        .arg("--dir")
        .arg(dir)
        .args(["--profiles", "server"])
        .args(extra)
        .output()
        .await
        .unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The PKI dir without the agent's own state file (which records the last error).
fn pki_files(dir: &Path) -> BTreeMap<PathBuf, String> {
    let mut files = snapshot(dir);
    files.remove(Path::new(etcd_ca::agent::STATE_FILE));
    files
}

fn renewal_answer(certificate_pem: &str) -> Vec<u8> {
    serde_json::json!({
        "serial": "00", "profile": "server", "node": "n1", "common_name": "etcd-server:n1",
        "sans": [], "not_before": "2026-01-01T00:00:00Z", "not_after": "2099-01-01T00:00:00Z",
        "certificate_pem": certificate_pem,
    })
    .to_string()
    .into_bytes()
}

/// A certificate the real CA signed for `key`'s public key with the given names.
fn signed_by_ca(ca_dir: &Path, public_key: &impl rcgen::PublicKeyData, sans: &[&str]) -> String {
    let ca_cert = std::fs::read_to_string(ca_dir.join("ca/gen-1.crt")).unwrap();
    let ca_key = crate::helpers::ca_key(ca_dir);
    let issuer = rcgen::Issuer::from_ca_cert_pem(&ca_cert, ca_key).unwrap();
    let mut params =
        rcgen::CertificateParams::new(sans.iter().map(|s| s.to_string()).collect::<Vec<_>>())
            .unwrap();
    params.extended_key_usages = vec![
        rcgen::ExtendedKeyUsagePurpose::ServerAuth,
        rcgen::ExtendedKeyUsagePurpose::ClientAuth,
    ];
    params.not_before = time::OffsetDateTime::now_utc() - time::Duration::minutes(1);
    params.not_after = time::OffsetDateTime::now_utc() + time::Duration::days(30);
    params.signed_by(public_key, &issuer).unwrap().pem()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn faulty_answers_are_never_installed() {
    let server = CaServer::start(&[], &[]);
    let dir = server.ca.tmp.path().join("pki");
    let token = server
        .ca
        .token(&["--node", "n1", "--ip", "10.0.0.11", "--profiles", "server"]);
    let (code, err) =
        agent_once(&server.url, &server.fingerprint, &dir, &["--token", &token]).await;
    assert_eq!(code, Some(0), "{err}");
    let installed = pki_files(&dir);
    assert!(
        installed.contains_key(Path::new("server.crt"))
            && installed.contains_key(Path::new("ca.crl"))
    );

    let good_pem = std::fs::read_to_string(dir.join("server.crt")).unwrap();
    let good_der = etcd_ca::pki::pem_certificates(&good_pem).unwrap().remove(0);
    let spki = etcd_ca::pki::parse_certificate(&good_der)
        .unwrap()
        .public_key()
        .raw
        .to_vec();
    let own_key = rcgen::SubjectPublicKeyInfo::from_der(&spki).unwrap();
    let wrong_names = signed_by_ca(&server.ca.dir, &own_key, &["10.0.0.11", "10.6.6.6"]);
    let other_key = rcgen::KeyPair::generate().unwrap();
    let sans: Vec<String> = etcd_ca::pki::CertSummary::from_der(&good_der).unwrap().sans;
    let bare: Vec<&str> = sans.iter().map(|s| s.split_once(':').unwrap().1).collect();
    let other_keys_cert = signed_by_ca(&server.ca.dir, &other_key, &bare);
    let truncated = good_pem[..good_pem.len() / 2].to_string();

    let renewals: Vec<(&str, Answer, &str)> = vec![
        (
            "truncated",
            (200, "application/json", renewal_answer(&truncated)),
            "not a certificate",
        ),
        (
            "another key",
            (200, "application/json", renewal_answer(&other_keys_cert)),
            "does not belong to the private key",
        ),
        (
            "other names",
            (200, "application/json", renewal_answer(&wrong_names)),
            "SANs changed",
        ),
        (
            "garbage JSON",
            (
                200,
                "application/json",
                b"{\"certificate_pem\": 12".to_vec(),
            ),
            "unexpected answer",
        ),
        (
            "server error",
            (
                500,
                "application/json",
                b"{\"code\":\"internal\",\"message\":\"boom\"}".to_vec(),
            ),
            "internal",
        ),
    ];
    for (name, answer, expected) in renewals {
        // Faulty renewals; everything else answers as the real CA would.
        let health = serde_json::json!({"status": "ok", "ca_fingerprint": server.fingerprint})
            .to_string()
            .into_bytes();
        let url = impostor(
            &server.ca.dir,
            Arc::new(move |path: &str| match path {
                "/v1/renew" => answer.clone(),
                "/v1/health" => (200, "application/json", health.clone()),
                "/v1/ca" | "/v1/crl" => (304, "text/plain", Vec::new()),
                _ => (204, "text/plain", Vec::new()),
            }),
        )
        .await;
        let (code, err) = agent_once(&url, &server.fingerprint, &dir, &["--renew-now"]).await;
        assert_ne!(code, Some(0), "{name}: the agent must report the failure");
        assert!(
            err.contains(expected),
            "{name}: expected {expected:?} in:\n{err}"
        );
        assert_eq!(
            pki_files(&dir),
            installed,
            "{name}: nothing may change in the PKI dir"
        );
    }

    // A garbage trust bundle, then a garbage CRL (a broken CRL file makes etcd refuse everyone).
    let url = impostor(
        &server.ca.dir,
        Arc::new(|path: &str| match path {
            "/v1/ca" => (
                200,
                "application/x-pem-file",
                b"-----BEGIN CERTIFICATE-----\ngarbage\n".to_vec(),
            ),
            _ => (500, "text/plain", Vec::new()),
        }),
    )
    .await;
    let (code, err) = agent_once(&url, &server.fingerprint, &dir, &[]).await;
    assert_ne!(code, Some(0));
    assert!(err.contains("unusable trust bundle"), "{err}");
    assert_eq!(pki_files(&dir), installed);

    let url = impostor(
        &server.ca.dir,
        Arc::new(|path: &str| match path {
            "/v1/ca" => (304, "text/plain", Vec::new()),
            _ => (
                200,
                "application/pkix-crl",
                b"\x30\x82\x01\x00 this is not a CRL".to_vec(),
            ),
        }),
    )
    .await;
    let (code, err) = agent_once(&url, &server.fingerprint, &dir, &[]).await;
    assert_ne!(code, Some(0));
    assert!(err.contains("unusable CRL"), "{err}");
    assert_eq!(pki_files(&dir), installed);

    // The real CA still renews it afterwards.
    let (code, err) = agent_once(&server.url, &server.fingerprint, &dir, &["--renew-now"]).await;
    assert_eq!(code, Some(0), "{err}");
    assert_ne!(
        std::fs::read_to_string(dir.join("server.crt")).unwrap(),
        good_pem
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_certificate_needs_a_new_token_and_re_enrolls_with_the_same_key() {
    // One-day server certificates; the test moves the clock of the server and the agent.
    let tmp = tempfile::tempdir().unwrap();
    let clock = TestClock::new(tmp.path());
    let policy = tmp.path().join("one-day.toml");
    std::fs::write(
        &policy,
        crate::helpers::patched_policy(&[(
            "default_lifetime = \"90d\"",
            "default_lifetime = \"1d\"",
            1,
        )]),
    )
    .unwrap();
    let server = CaServer::start_with_clock(&["--policy", policy.to_str().unwrap()], &[], &clock);
    let dir = server.ca.tmp.path().join("pki");
    let token_file = server.ca.tmp.path().join("token");
    // Tokens from the server, on the server's (moved) clock.
    let admin = server.admin();
    let new_token = || async {
        let body = etcd_ca::wire::TokenBody {
            node: "n1".into(),
            ips: vec!["10.0.0.11".into()],
            dns_names: vec![],
            profiles: vec!["server".into()],
            common_name: None,
            // Outlives the certificate: the first one is spent, not expired, when it is retried.
            ttl: Some("7d".into()),
            allow_root: false,
        };
        let created: etcd_ca::wire::TokenResponse =
            admin.post_json("/v1/tokens", &body).await.unwrap();
        std::fs::write(&token_file, created.token).unwrap();
    };
    let token_arg = ["--token-file", token_file.to_str().unwrap()];
    let (url, fp) = (server.url.as_str(), server.fingerprint.as_str());
    new_token().await;
    let (code, err) = agent_once_on(url, fp, &dir, &token_arg, Some(&clock)).await;
    assert_eq!(code, Some(0), "{err}");
    let key = std::fs::read_to_string(dir.join("server.key")).unwrap();
    let first = std::fs::read_to_string(dir.join("server.crt")).unwrap();

    // The node was off too long: the certificate expired and the old token is spent.
    clock.advance(std::time::Duration::from_secs(2 * 86400));
    let (code, err) = agent_once_on(url, fp, &dir, &token_arg, Some(&clock)).await;
    assert_ne!(code, Some(0));
    assert!(
        err.contains("a new bootstrap token is needed for server"),
        "{err}"
    );
    assert!(err.contains("token_used"), "{err}");
    let (code, err) = agent_once_on(url, fp, &dir, &[], Some(&clock)).await;
    assert_ne!(code, Some(0));
    assert!(err.contains("a certificate expired"), "{err}");
    assert_eq!(
        std::fs::read_to_string(dir.join("server.crt")).unwrap(),
        first,
        "nothing changes until a token comes"
    );

    // A new token in the file: it re-enrolls, keeping its key (only the certificate changes).
    new_token().await;
    let (code, err) = agent_once_on(url, fp, &dir, &token_arg, Some(&clock)).await;
    assert_eq!(code, Some(0), "{err}");
    assert_ne!(
        std::fs::read_to_string(dir.join("server.crt")).unwrap(),
        first
    );
    assert_eq!(
        std::fs::read_to_string(dir.join("server.key")).unwrap(),
        key
    );
}
