//! Rotation steps are compare-and-set: of two steps sent at once exactly one wins and the other
//! gets 409 `rotation_phase`, every time, and the data dir always starts. A `start` that died
//! after writing its key file but before its row does not wedge the next one.

use etcd_ca::client::{ApiClient, ClientError};
use serde_json::{json, Value};

use crate::helpers::CaServer;

/// `POST /v1/rotation/{step}` as admin: Ok, or the refusal's status and code.
async fn step(admin: &ApiClient, step: &str, force: bool) -> Result<(), (u16, String)> {
    match admin
        .post_json::<_, Value>(&format!("/v1/rotation/{step}"), &json!({ "force": force }))
        .await
    {
        Ok(_) => Ok(()),
        Err(ClientError::Api { status, code, .. }) => Err((status, code)),
        Err(e) => panic!("{step}: {e}"),
    }
}

/// Of two concurrent steps, exactly one won; the other was refused with `rotation_phase`.
/// Returns which won (0 or 1).
fn one_winner(a: Result<(), (u16, String)>, b: Result<(), (u16, String)>) -> usize {
    let refused = (409, "rotation_phase".to_string());
    match (a, b) {
        (Ok(()), Err(e)) if e == refused => 0,
        (Err(e), Ok(())) if e == refused => 1,
        other => panic!("expected exactly one winner and a 409 rotation_phase: {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_steps_have_exactly_one_winner_and_the_ca_always_starts() {
    // An unsealed key: each start makes a CA key, and sealing it would dominate the test.
    let mut server = CaServer::start(&["--insecure-unencrypted-key"], &[]);
    let admin = server.admin();
    let (mut activated, mut aborted) = (0, 0);
    for round in 0..50 {
        if round % 10 == 0 {
            let (a, b) = tokio::join!(step(&admin, "start", false), step(&admin, "start", false));
            one_winner(a, b);
        } else if let Err(e) = step(&admin, "start", false).await {
            panic!("start: {e:?}; server log:\n{}", server.log_text());
        }
        let (a, b) = tokio::join!(step(&admin, "activate", true), step(&admin, "abort", false));
        if one_winner(a, b) == 0 {
            activated += 1;
            step(&admin, "finish", true).await.unwrap();
        } else {
            aborted += 1;
        }
        let status: Value = admin.get_json("/v1/rotation").await.unwrap();
        assert_eq!(status["phase"], "idle", "round {round}");
    }
    eprintln!("50 races: activate won {activated}, abort won {aborted}");

    // The audit trail agrees: every generation but the active one retired, once each.
    server.restart();
    let admin = server.admin();
    let status: Value = admin.get_json("/v1/rotation").await.unwrap();
    assert_eq!(status["phase"], "idle");
    let audit: Value = admin.get_json("/v1/audit?limit=1000").await.unwrap();
    let count = |action: &str| {
        audit
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| e["action"] == action)
            .count()
    };
    assert_eq!(count("ca.rotate.start"), 50);
    assert_eq!(count("ca.rotate.activate"), activated);
    assert_eq!(count("ca.rotate.finish"), activated);
    assert_eq!(count("ca.rotate.abort"), aborted);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_start_that_died_before_its_row_does_not_wedge_the_next() {
    let server = CaServer::start(&[], &[]);
    // What a start killed between writing the key and recording the generation leaves.
    let orphan = server.ca.dir.join("ca/gen-2.key");
    std::fs::write(&orphan, "a key nobody recorded").unwrap();
    let admin = server.admin();
    step(&admin, "start", false).await.unwrap();
    let status: Value = admin.get_json("/v1/rotation").await.unwrap();
    assert_eq!(status["phase"], "started");
    assert_eq!(status["other"]["id"], 2);
    assert_ne!(
        std::fs::read_to_string(&orphan).unwrap(),
        "a key nobody recorded"
    );
    // The new generation signs with that key.
    step(&admin, "activate", true).await.unwrap();
    let out = server.ca.tmp.path().join("probe");
    server.remote_issue_client(&out, "probe");
}
