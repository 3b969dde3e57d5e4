//! No token, key, passphrase or PEM body ever appears in a log line, at any level etcd-ca logs.

use std::process::Command;

use hyper::Method;

use crate::helpers::{agent_once, CaServer, ETCD_CA, PASSPHRASE};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logs_never_hold_secrets() {
    let server = CaServer::start(&[], &[]);
    let dir = server.ca.tmp.path().join("pki");
    let token = server.ca.token(&[
        "--node",
        "n1",
        "--ip",
        "10.0.0.11",
        "--profiles",
        "server,peer",
    ]);
    let agent_log = server.ca.tmp.path().join("agent.log");
    let run = Command::new(ETCD_CA)
        .args([
            "agent",
            "--once",
            "--server",
            &server.url,
            "--ca-fingerprint",
            &server.fingerprint,
        ])
        .args([
            "--node",
            "n1",
            "--dir",
            dir.to_str().unwrap(),
            "--token",
            &token,
        ])
        .env("ETCD_CA_LOG", "etcd_ca=trace,info")
        .stderr(std::fs::File::create(&agent_log).unwrap())
        .status()
        .unwrap();
    assert!(run.success());
    let renew = Command::new(ETCD_CA)
        .args([
            "agent",
            "--once",
            "--renew-now",
            "--server",
            &server.url,
            "--ca-fingerprint",
            &server.fingerprint,
        ])
        .args(["--node", "n1", "--dir", dir.to_str().unwrap()])
        .env("ETCD_CA_LOG", "etcd_ca=trace,info")
        .stderr(
            std::fs::OpenOptions::new()
                .append(true)
                .open(&agent_log)
                .unwrap(),
        )
        .status()
        .unwrap();
    assert!(renew.success());

    // Admin calls with the bearer token, a refused guess at it, a replayed bootstrap token.
    let _: serde_json::Value = server.admin().get_json("/v1/certs").await.unwrap();
    let guess = format!("{}0", &server.admin_token[..server.admin_token.len() - 1]);
    let _ = server
        .client()
        .with_bearer(guess.clone())
        .send(Method::GET, "/v1/certs", None, &[])
        .await;
    let body = serde_json::json!({"token": token, "csrs": {"server": "garbage"}})
        .to_string()
        .into_bytes();
    let _ = server
        .client()
        .send(
            Method::POST,
            "/v1/enroll",
            Some(("application/json", body)),
            &[],
        )
        .await;

    let server_log = server.log_text();
    let agent_log = std::fs::read_to_string(&agent_log).unwrap();
    assert!(
        server_log.contains("issued certificate") && agent_log.contains("renewed certificate"),
        "the logs are not empty"
    );
    let secret_of = |t: &str| t.rsplit('_').next().unwrap().to_string();
    for (name, log) in [("server", &server_log), ("agent", &agent_log)] {
        for (what, needle) in [
            ("bootstrap token", token.clone()),
            ("bootstrap token secret", secret_of(&token)),
            ("admin token secret", secret_of(&server.admin_token)),
            ("guessed admin token", secret_of(&guess)),
            ("passphrase", PASSPHRASE.to_string()),
            ("PEM", "-----BEGIN".to_string()),
            ("PEM", "PRIVATE KEY".to_string()),
        ] {
            assert!(
                !log.contains(&needle),
                "the {name} log holds a {what}:\n{log}"
            );
        }
    }
}

#[test]
fn hooks_do_not_inherit_the_agents_secrets() {
    let server = CaServer::start(&[], &[]);
    let dir = server.ca.tmp.path().join("pki");
    let token = server.ca.token(&["--node", "n1", "--profiles", "server"]);
    let seen = server.ca.tmp.path().join("hook-env");
    let run = agent_once(&server.url, &server.fingerprint, "n1", "server", &dir)
        .arg("--on-renew")
        .arg(format!("env > {}", seen.display()))
        .env("ETCD_CA_TOKEN", &token)
        .env("ETCD_CA_PASSPHRASE", PASSPHRASE)
        .output()
        .unwrap();
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let env = std::fs::read_to_string(&seen).unwrap();
    assert!(env.contains("ETCD_CA_EVENT=enroll"), "{env}");
    assert!(!env.contains(&token), "the hook saw the bootstrap token");
    assert!(!env.contains(PASSPHRASE), "the hook saw the passphrase");
}
