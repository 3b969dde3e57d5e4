//! Rotation steps in the wrong order are refused, abort goes back from start, and a restart
//! lease held by an agent that died expires.

use time::OffsetDateTime;

use crate::helpers::{etcd_ca, Run, TestCa};

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
