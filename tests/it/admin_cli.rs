//! The admin CLI works against a running server (`--server URL --admin-token-file F`) exactly as
//! it does on the data dir, and refuses a server whose CA is not the pinned one.

use std::os::unix::fs::PermissionsExt;
use std::process::Command;

use crate::helpers::{etcd_ca, require_tool, CaServer};

#[test]
fn admin_commands_work_remotely_with_a_pinned_ca() {
    let server = CaServer::start(&[], &[]);
    let root = server.ca.tmp.path();
    let token_file = &server.admin_token_file;
    let remote = |cmd: &[&str]| server.remote(cmd);

    // A bootstrap token, with the agent command to paste on the node.
    let created = remote(&[
        "token",
        "create",
        "--node",
        "n1",
        "--ip",
        "10.0.0.1",
        "--profiles",
        "server,peer",
        "--json",
    ])
    .ok();
    let created: serde_json::Value = serde_json::from_str(&created.stdout).unwrap();
    let token = created["token"].as_str().unwrap();
    assert!(token.starts_with("etcdca_"));
    let command = created["agent_command"].as_str().unwrap();
    assert!(
        command.contains(&format!("--server {}", server.url)),
        "{command}"
    );
    assert!(
        command.contains(&format!("--ca-fingerprint {}", server.fingerprint)),
        "{command}"
    );
    // The token goes into a 0600 file; the agent reads it from there, not from its command
    // line (which every `ps` shows).
    let (install, agent) = command.split_once('\n').unwrap();
    assert!(install.contains("install -D -m 0600") && install.contains(token));
    assert!(
        agent.contains("--token-file /etc/etcd-ca/token") && !agent.contains(token),
        "{command}"
    );

    // An openssl-style fingerprint (colons, capitals) is taken as well.
    let colons = server.fingerprint.as_bytes()["sha256:".len()..]
        .chunks(2)
        .map(|pair| std::str::from_utf8(pair).unwrap().to_ascii_uppercase())
        .collect::<Vec<_>>()
        .join(":");
    etcd_ca([
        "list",
        "--server",
        &server.url,
        "--ca-fingerprint",
        &format!("SHA256 Fingerprint={colons}"),
        "--admin-token-file",
        token_file.to_str().unwrap(),
    ])
    .ok();

    // Server-side key generation for a consumer that cannot run the agent.
    let out = root.join("kube-apiserver");
    let unix_seconds = || {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs()
    };
    let before = unix_seconds();
    remote(&[
        "issue",
        "--profile",
        "client",
        "--node",
        "kube-apiserver",
        "--cn",
        "kube-apiserver",
        "--out",
        out.to_str().unwrap(),
    ])
    .ok();
    let key_mode = std::fs::metadata(out.join("client.key"))
        .unwrap()
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(key_mode, 0o600);
    let pem_text = std::fs::read_to_string(out.join("client.crt")).unwrap();
    let summary =
        etcd_ca::pki::CertSummary::from_der(&etcd_ca::pki::pem_certificates(&pem_text).unwrap()[0])
            .unwrap();
    assert_eq!(summary.subject, "CN=kube-apiserver");
    let serial = summary.serial;
    // The serial in the certificate: a marker byte, the time of issue in seconds, then 80
    // random bits (serials issued later sort later in the store's index).
    assert_eq!(serial.len(), 32, "{serial}");
    assert!(serial.starts_with("01"), "{serial}");
    let issued_at = u64::from_str_radix(&serial[2..12], 16).unwrap();
    assert!(
        (before..=unix_seconds()).contains(&issued_at),
        "{serial}: issued at {issued_at}, not between {before} and now"
    );

    let listed = remote(&["list", "--profile", "client", "--json"])
        .ok()
        .stdout;
    let listed: Vec<serde_json::Value> = serde_json::from_str(&listed).unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0]["serial"], serial.as_str());
    let shown = remote(&["show", &serial]).ok().stdout;
    assert!(shown.contains("profile:       client"), "{shown}");

    remote(&["revoke", &serial, "--reason", "superseded"]).ok();
    let crl = root.join("ca.crl");
    remote(&["crl", "--out", crl.to_str().unwrap()]).ok();
    let text = Command::new(require_tool("openssl"))
        .args(["crl", "-inform", "DER", "-noout", "-text", "-in"])
        .arg(&crl)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&text.stdout).to_uppercase();
    assert!(text.contains(&serial.to_uppercase()), "{text}");
    let audit = remote(&["audit"]).ok().stdout;
    assert!(
        audit.contains("token.create") && audit.contains("revoke"),
        "{audit}"
    );

    // The same server with the wrong pin is refused before anything is sent.
    let wrong_pin = format!("sha256:{}", "0".repeat(64));
    let err = etcd_ca([
        "list",
        "--server",
        &server.url,
        "--ca-fingerprint",
        &wrong_pin,
        "--admin-token-file",
        token_file.to_str().unwrap(),
    ])
    .fails();
    assert!(err.contains("not the pinned one"), "{err}");

    // Without an admin token: a usage error naming the missing flag, before any request.
    let run = etcd_ca([
        "list",
        "--server",
        &server.url,
        "--ca-fingerprint",
        &server.fingerprint,
    ]);
    assert_eq!(run.code, Some(2), "{run:?}");
    assert!(run.stderr.contains("--admin-token-file"), "{}", run.stderr);
    // A token the server does not know: refused, saying so.
    let bogus = server.ca.tmp.path().join("bogus.token");
    std::fs::write(&bogus, "garbage\n").unwrap();
    let err =
        crate::helpers::admin_cli(&server.url, &server.fingerprint, &bogus, &["list"]).fails();
    assert!(err.contains("admin_token_invalid"), "{err}");

    // Locally on the CA host, token create needs no server.
    let local = etcd_ca([
        "token",
        "create",
        "--data-dir",
        server.ca.data_dir(),
        "--node",
        "n2",
        "--ip",
        "10.0.0.2",
    ])
    .ok();
    assert!(
        local
            .stdout
            .contains("etcd-ca agent --server https://CA-HOST:8443"),
        "{}",
        local.stdout
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_admin_profile_certificate_opens_the_admin_api_and_a_client_certificate_does_not() {
    let server = CaServer::start(&[], &[]);
    let root = server.ca.tmp.path();
    let admin_dir = root.join("alice-admin");
    server
        .ca
        .issue(&admin_dir, &["--profile", "admin", "--node", "alice"]);
    let user_dir = root.join("alice-user");
    server.ca.issue(
        &user_dir,
        &["--profile", "client", "--node", "alice", "--cn", "alice"],
    );

    let admin =
        server.client_with_certificate(&admin_dir.join("admin.crt"), &admin_dir.join("admin.key"));
    let page: serde_json::Value = admin.get_json("/v1/certs").await.unwrap();
    assert!(page["next"].is_null(), "one page holds them all");
    let certs: Vec<serde_json::Value> = page["certificates"].as_array().unwrap().clone();
    assert!(certs
        .iter()
        .any(|c| c["common_name"] == "etcd-ca-admin:alice"));

    let user =
        server.client_with_certificate(&user_dir.join("client.crt"), &user_dir.join("client.key"));
    let err = user
        .get_json::<serde_json::Value>("/v1/certs")
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some("admin_required"));

    let audit: Vec<serde_json::Value> = admin.get_json("/v1/audit").await.unwrap();
    assert!(audit.iter().any(|e| e["action"] == "admin.refused"));
}

#[test]
fn an_admin_token_file_is_private_and_never_replaced() {
    use std::os::unix::fs::PermissionsExt;
    let ca = crate::helpers::TestCa::init(&[]);
    let file = ca.tmp.path().join("admin.token");
    let create = || {
        etcd_ca([
            "admin-token",
            "create",
            "--data-dir",
            ca.data_dir(),
            "--out",
            file.to_str().unwrap(),
        ])
    };
    let run = create().ok();
    assert!(
        run.stdout.is_empty(),
        "the token is not printed: {}",
        run.stdout
    );
    let mode = std::fs::metadata(&file).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    let first = std::fs::read_to_string(&file).unwrap();
    assert!(first.starts_with("etcdca_"));
    let err = create().fails();
    assert!(err.contains("never replaced"), "{err}");
    assert_eq!(std::fs::read_to_string(&file).unwrap(), first);
}

#[test]
fn issue_makes_a_missing_output_dir_and_revoke_says_what_happens_next() {
    let server = CaServer::start(&[], &[]);
    let out = server.ca.tmp.path().join("pki/ops");
    server.remote_issue_client(&out, "ops");
    assert!(out.join("client.key").exists());
    let serial = server.remote_issue_client(&out, "ops2");
    let said = server.remote(&["revoke", &serial]).ok().stdout;
    assert!(
        said.contains("Agents install the new CRL within seconds"),
        "{said}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_tokens_are_listed_revoked_at_once_and_expire() {
    use hyper::Method;
    let clock_dir = tempfile::tempdir().unwrap();
    let clock = crate::helpers::TestClock::new(clock_dir.path());
    let server = CaServer::start_with_clock(&[], &[], &clock);
    let status = |token: String| {
        let client = server.client().with_bearer(token);
        async move {
            client
                .send(Method::GET, "/v1/certs", None, &[])
                .await
                .unwrap()
                .status
                .as_u16()
        }
    };
    let create = |extra: &[&str]| {
        let file = server
            .ca
            .tmp
            .path()
            .join(format!("admin-{}.token", rand_suffix()));
        let mut args = vec![
            "admin-token",
            "create",
            "--data-dir",
            server.ca.data_dir(),
            "--out",
            file.to_str().unwrap(),
        ];
        args.extend_from_slice(extra);
        etcd_ca(&args).ok();
        std::fs::read_to_string(&file).unwrap().trim().to_string()
    };
    let id_of = |token: &str| token.split('_').nth(1).unwrap().to_string();

    // Revoked through the API: refused at the very next request, although just used (cached).
    let doomed = create(&[]);
    assert_eq!(status(doomed.clone()).await, 200);
    let listed = server.remote(&["admin-token", "list"]).ok().stdout;
    assert!(listed.contains(&id_of(&doomed)), "{listed}");
    assert!(!listed.contains(&doomed), "a secret is never listed");
    server
        .remote(&["admin-token", "revoke", &id_of(&doomed)])
        .ok();
    assert_eq!(status(doomed.clone()).await, 401);
    let err = server
        .remote(&["admin-token", "revoke", &id_of(&doomed)])
        .fails();
    assert!(err.contains("admin_token_unknown"), "{err}");

    // Revoked on the data dir by another process: refused within the server's 2 s poll.
    let other = create(&[]);
    assert_eq!(status(other.clone()).await, 200);
    etcd_ca([
        "admin-token",
        "revoke",
        "--data-dir",
        server.ca.data_dir(),
        &id_of(&other),
    ])
    .ok();
    let revoked_at = std::time::Instant::now();
    while status(other.clone()).await != 401 {
        assert!(
            revoked_at.elapsed() < std::time::Duration::from_secs(4),
            "a token revoked on the data dir still works"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }

    // A token with a TTL stops working when it ends (though the server saw it a moment ago).
    let short = create(&["--ttl", "1h"]);
    assert_eq!(status(short.clone()).await, 200);
    clock.advance(std::time::Duration::from_secs(2 * 3600));
    assert_eq!(status(short).await, 401);
}

fn rand_suffix() -> usize {
    use std::sync::atomic::{AtomicUsize, Ordering};
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    NEXT.fetch_add(1, Ordering::Relaxed)
}
