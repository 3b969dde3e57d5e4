//! Rotation steps in the wrong order are refused, abort goes back from start, a restart lease
//! held by an agent that died expires, a running server follows steps taken on the data dir,
//! and status flags nodes that have not reported since the last step.

use std::collections::BTreeMap;
use std::time::Duration;

use time::OffsetDateTime;

use crate::helpers::{etcd_ca, wait_for, CaServer, Run, TestCa, PASSPHRASE};
use crate::rotation::server_presents;

/// `etcd-ca ca rotate ARGS... --data-dir DIR`
fn rotate(ca: &TestCa, args: &[&str]) -> Run {
    let mut all = vec!["ca", "rotate"];
    all.extend_from_slice(args);
    all.extend(["--data-dir", ca.data_dir()]);
    etcd_ca(&all)
}

fn bundle_size(ca: &TestCa) -> usize {
    let out = ca.tmp.path().join("probe");
    ca.issue(
        &out,
        &["--profile", "client", "--node", "probe", "--cn", "probe"],
    );
    std::fs::read_to_string(out.join("ca.crt"))
        .unwrap()
        .matches("BEGIN CERTIFICATE")
        .count()
}

#[test]
fn steps_follow_the_phases_and_abort_goes_back() {
    let ca = TestCa::init(&[]);
    let err = rotate(&ca, &["activate"]).fails();
    assert!(
        err.contains("cannot activate now: the rotation is idle"),
        "{err}"
    );
    let err = rotate(&ca, &["abort"]).fails();
    assert!(err.contains("cannot abort now"), "{err}");

    assert_eq!(bundle_size(&ca), 1);
    let started = rotate(&ca, &["start", "--key-type", "ecdsa-p384"])
        .ok()
        .stdout;
    assert!(
        started.starts_with("Rotation started: generation 2"),
        "{started}"
    );
    assert_eq!(bundle_size(&ca), 2, "the bundle holds old and new");
    let err = rotate(&ca, &["start"]).fails();
    assert!(
        err.contains("cannot start now: the rotation is started"),
        "{err}"
    );

    // Abort: the new generation never signed and is no longer trusted.
    let aborted = rotate(&ca, &["abort"]).ok().stdout;
    assert!(
        aborted.starts_with("No rotation in progress: generation 1"),
        "{aborted}"
    );
    assert_eq!(bundle_size(&ca), 1);

    // A second rotation. A member without an agent blocks activate; a client still on the old
    // CA blocks finish. Both are named; --force takes the step anyway.
    let member = ca.tmp.path().join("n1");
    ca.issue(
        &member,
        &["--profile", "server", "--node", "n1", "--ip", "10.0.0.1"],
    );
    rotate(&ca, &["start"]).ok();
    let err = rotate(&ca, &["activate"]).fails();
    assert!(
        err.contains("have not converged: n1 (waiting for an agent report"),
        "{err}"
    );
    rotate(&ca, &["activate", "--force"]).ok();
    let err = rotate(&ca, &["abort"]).fails();
    assert!(
        err.contains("cannot abort now: the rotation is activated"),
        "{err}"
    );
    ca.issue(&member, &["--profile", "server", "--node", "n1"]);
    let status = rotate(&ca, &["status", "--json"]).ok().stdout;
    let status: serde_json::Value = serde_json::from_str(&status).unwrap();
    assert_eq!(
        status["active"]["id"], 3,
        "generation 2 was aborted; 3 signs now"
    );
    let n1 = status["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["node"] == "n1")
        .unwrap();
    assert_eq!(n1["certificates"]["server"], 3);
    assert_eq!(status["blocked_by"], serde_json::json!(["probe"]));
    let err = rotate(&ca, &["finish"]).fails();
    assert!(
        err.contains(
            "probe (waiting for certificates re-issued by generation 3: client (generation 1))"
        ),
        "{err}"
    );
    rotate(&ca, &["finish", "--force"]).ok();
    assert_eq!(bundle_size(&ca), 1);
    let audit = ca.cli("audit", &[]).ok().stdout;
    for action in [
        "ca.rotate.start",
        "ca.rotate.abort",
        "ca.rotate.activate",
        "ca.rotate.finish",
    ] {
        assert!(audit.contains(action), "{audit}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_member_restarts_at_a_time_and_a_dead_holders_lease_expires() {
    let ca = TestCa::init(&[]);
    let authority = etcd_ca::authority::Authority::open(&ca.dir).await.unwrap();
    let now = OffsetDateTime::now_utc();
    let until = authority.take_restart_lease("n1", now).await.unwrap();
    assert!(until > now);
    // n2 must wait; n1 may take it again (a retry of its own).
    let err = authority.take_restart_lease("n2", now).await.unwrap_err();
    assert!(err.to_string().contains("held by n1"), "{err}");
    authority.take_restart_lease("n1", now).await.unwrap();
    // n1 died holding it: after the TTL it is n2's turn.
    let later = until + time::Duration::seconds(1);
    authority.take_restart_lease("n2", later).await.unwrap();
    // Returning it lets the next one in at once.
    authority.release_restart_lease("n2").await.unwrap();
    authority.take_restart_lease("n3", later).await.unwrap();
    authority.close().await;
}

#[test]
fn a_running_server_follows_steps_taken_on_the_data_dir() {
    let server = CaServer::start(&[], &[]);
    rotate(&server.ca, &["start"]).ok();
    rotate(&server.ca, &["activate"]).ok();
    // The server polls the store every 2 s.
    wait_for(
        "the server to present a generation 2 certificate",
        Duration::from_millis(4500),
        || server_presents(&server, 2),
    );
    rotate(&server.ca, &["finish"]).ok();
    wait_for(
        "the server to drop generation 1 from the bundle",
        Duration::from_millis(4500),
        || {
            let bundle = server
                .remote(&["ca", "rotate", "status", "--json"])
                .ok()
                .stdout;
            let status: serde_json::Value = serde_json::from_str(&bundle).unwrap();
            status["phase"] == "idle" && status["last_step"]["step"] == "finish"
        },
    );
    assert!(server_presents(&server, 2));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_that_has_not_reported_since_the_last_step_is_stale() {
    let ca = TestCa::init(&[]);
    let member = ca.tmp.path().join("n1");
    ca.issue(
        &member,
        &["--profile", "peer", "--node", "n1", "--ip", "10.0.0.1"],
    );
    let passphrase = etcd_ca::authority::keyfile::Passphrase::new(PASSPHRASE).unwrap();
    let authority = etcd_ca::authority::Authority::open(&ca.dir)
        .await
        .unwrap()
        .with_passphrase(Some(passphrase));
    let t0 = OffsetDateTime::now_utc().replace_nanosecond(0).unwrap();
    let bundle = vec![server_fingerprint(&authority)];
    authority
        .record_node_report(
            "n1",
            bundle.clone(),
            bundle.clone(),
            BTreeMap::new(),
            "{}".into(),
            t0,
        )
        .await
        .unwrap();
    let status = authority.rotation_status(t0).await.unwrap();
    assert!(status.last_step.is_none(), "no rotation yet");
    assert!(!status.nodes[0].stale);

    let t1 = t0 + time::Duration::seconds(10);
    authority
        .rotate_start(etcd_ca::pki::KeyType::EcdsaP256, "test", t1)
        .await
        .unwrap();
    let status = authority.rotation_status(t1).await.unwrap();
    assert_eq!(status.last_step.as_ref().unwrap().step, "start");
    assert!(status.nodes[0].stale, "reported before start");
    let t2 = t1 + time::Duration::seconds(1);
    authority
        .record_node_report(
            "n1",
            bundle.clone(),
            bundle,
            BTreeMap::new(),
            "{}".into(),
            t2,
        )
        .await
        .unwrap();
    let status = authority.rotation_status(t2).await.unwrap();
    assert!(!status.nodes[0].stale);
    authority
        .rotate_abort("test", t2 + time::Duration::seconds(1))
        .await
        .unwrap();
    let status = authority.rotation_status(t2).await.unwrap();
    let last = status.last_step.unwrap();
    assert_eq!(last.step, "abort");
    assert!(last.outcome.contains("aborted"), "{}", last.outcome);
    authority.close().await;
}

fn server_fingerprint(authority: &etcd_ca::authority::Authority) -> String {
    authority.fingerprint().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_member_certificates_take_the_restart_lease_or_report_for_a_member() {
    use hyper::Method;
    let server = CaServer::start(&[], &[]);
    let root = server.ca.tmp.path();
    let issue = |dir: &str, args: &[&str]| {
        let out = root.join(dir);
        server.ca.issue(&out, args);
        out
    };
    let member = issue(
        "n1",
        &["--profile", "peer", "--node", "n1", "--ip", "10.0.0.1"],
    );
    // A client certificate of the member's own node, and one of a client-only node.
    let same_node = issue(
        "n1-client",
        &["--profile", "client", "--node", "n1", "--cn", "n1-ops"],
    );
    let client_only = issue(
        "app",
        &["--profile", "client", "--node", "app", "--cn", "app"],
    );
    let with = |dir: &std::path::Path, profile: &str| {
        server.client_with_certificate(
            &dir.join(format!("{profile}.crt")),
            &dir.join(format!("{profile}.key")),
        )
    };
    let report = serde_json::json!({"installed_bundle": [], "running_bundle": []})
        .to_string()
        .into_bytes();
    let post = |client: etcd_ca::client::ApiClient, path: &'static str, body: Option<Vec<u8>>| async move {
        let response = client
            .send(
                Method::POST,
                path,
                body.map(|b| ("application/json", b)),
                &[],
            )
            .await
            .unwrap();
        let code = serde_json::from_slice::<serde_json::Value>(&response.body)
            .map(|v| v["code"].as_str().unwrap_or("").to_string())
            .unwrap_or_default();
        (response.status.as_u16(), code)
    };
    let refused = (403, "member_certificate_required".to_string());
    assert_eq!(
        post(with(&same_node, "client"), "/v1/rotation/lease", None).await,
        refused
    );
    assert_eq!(
        post(with(&client_only, "client"), "/v1/rotation/lease", None).await,
        refused
    );
    assert_eq!(
        post(
            with(&same_node, "client"),
            "/v1/agent/report",
            Some(report.clone())
        )
        .await,
        refused,
        "a client certificate cannot claim what the member's etcd runs with"
    );
    // A client-only node's agent reports with its client certificate; a member with its own.
    assert_eq!(
        post(
            with(&client_only, "client"),
            "/v1/agent/report",
            Some(report.clone())
        )
        .await
        .0,
        204
    );
    assert_eq!(
        post(with(&member, "peer"), "/v1/agent/report", Some(report))
            .await
            .0,
        204
    );
    assert_eq!(
        post(with(&member, "peer"), "/v1/rotation/lease", None)
            .await
            .0,
        200
    );
}
