//! Retention as an operator runs it: `etcd-ca tidy --server` (dry run, then for real) while
//! certificates keep being issued, with the server's clock moved forward instead of waiting.

use std::time::Duration;

use serde_json::{json, Value};

use crate::helpers::{CaServer, TestClock};

const DAY: u64 = 86_400;

async fn issue(admin: &etcd_ca::client::ApiClient, node: &str, lifetime: &str) -> String {
    let body =
        json!({"profile": "client", "node": node, "common_name": node, "lifetime": lifetime});
    let answer: Value = admin.post_json("/v1/issue", &body).await.unwrap();
    answer["certificate"]["serial"]
        .as_str()
        .unwrap()
        .to_string()
}

fn tidy_json(server: &CaServer, dry_run: bool) -> Value {
    let mut args = vec!["tidy", "--json"];
    if dry_run {
        args.push("--dry-run");
    }
    serde_json::from_str(&server.remote(&args).ok().stdout).unwrap()
}

fn crl_serials(der: &[u8]) -> Vec<String> {
    use x509_parser::prelude::FromDer;
    let (_, crl) = x509_parser::revocation_list::CertificateRevocationList::from_der(der).unwrap();
    crl.iter_revoked_certificates()
        .map(|r| hex::encode(r.raw_serial()))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tidy_removes_exactly_what_is_past_retention_while_issuance_continues() {
    let clock_dir = tempfile::tempdir().unwrap();
    let clock = TestClock::new(clock_dir.path());
    let server = CaServer::start_with_clock(&[], &[], &clock);
    let admin = server.admin();

    // Node ops renewed twice: two superseded certificates and its current one, all one-day.
    let ops_old = [
        issue(&admin, "ops", "1d").await,
        issue(&admin, "ops", "1d").await,
    ];
    let ops_current = issue(&admin, "ops", "1d").await;
    // A revoked one-day certificate, and a revoked one that is still valid 40 days on.
    let gone = issue(&admin, "gone", "1d").await;
    let stolen = issue(&admin, "stolen", "90d").await;
    for serial in [&gone, &stolen] {
        server
            .remote(&["revoke", serial, "--reason", "keyCompromise"])
            .ok();
    }
    // A bootstrap token that is never used (one hour).
    server
        .remote(&[
            "token", "create", "--node", "n9", "--ip", "10.0.0.9", "--ttl", "1h",
        ])
        .ok();

    // 40 days on: the one-day certificates expired 39 days ago, past the 30-day window.
    clock.advance(Duration::from_secs(40 * DAY));
    let dry = tidy_json(&server, true);
    assert_eq!(dry["dry_run"], true);
    assert_eq!(dry["certificates"], 3, "{dry}");
    assert_eq!(dry["tokens"], 1, "{dry}");
    assert_eq!(dry["audit_events"], 0, "{dry}");
    // A dry run removes nothing (the same counts; its cutoffs move with the clock).
    let again = tidy_json(&server, true);
    for count in ["certificates", "tokens", "audit_events"] {
        assert_eq!(again[count], dry[count], "{count}: {again} after {dry}");
    }

    // Issuance goes on while the server removes.
    let writer = {
        let admin = server.admin();
        tokio::spawn(async move {
            let mut serials = Vec::new();
            for i in 0..30 {
                serials.push(issue(&admin, &format!("live{}", i % 3), "1d").await);
            }
            serials
        })
    };
    let done = tokio::task::block_in_place(|| tidy_json(&server, false));
    let live = writer.await.unwrap();
    assert_eq!(done["dry_run"], false);
    for kind in ["certificates", "tokens", "audit_events"] {
        assert_eq!(done[kind], dry[kind], "{kind}: {done} after {dry}");
    }

    let status = |serial: String| {
        let admin = server.admin();
        async move {
            match admin
                .get_json::<Value>(&format!("/v1/certs/{serial}"))
                .await
            {
                Ok(record) => record["status"].as_str().unwrap().to_string(),
                Err(e) => e.code().unwrap().to_string(),
            }
        }
    };
    for serial in ops_old.iter().chain([&gone]) {
        assert_eq!(status(serial.clone()).await, "serial_unknown", "{serial}");
    }
    // The node's current certificate stays, expired or not; a revoked certificate stays until
    // it expires, and the CRL keeps listing it.
    assert_eq!(status(ops_current).await, "expired");
    assert_eq!(status(stolen.clone()).await, "revoked");
    for serial in live {
        assert_ne!(status(serial).await, "serial_unknown");
    }
    let crl = crl_serials(&admin.crl(None).await.unwrap());
    assert!(
        crl.iter()
            .any(|s| s.trim_start_matches('0') == stolen.trim_start_matches('0')),
        "{crl:?}"
    );

    // The audit trail says what went; nothing is left to remove.
    let audit = server.remote(&["audit", "--json"]).ok().stdout;
    let audit: Vec<Value> = serde_json::from_str(&audit).unwrap();
    let tidy = audit.iter().find(|e| e["action"] == "tidy").unwrap();
    assert!(
        tidy["detail"]
            .as_str()
            .unwrap()
            .starts_with("removed 3 certificates expired before"),
        "{tidy}"
    );
    let again = tidy_json(&server, true);
    assert_eq!(
        (again["certificates"].clone(), again["tokens"].clone()),
        (json!(0), json!(0))
    );
}

/// Paging through `GET /v1/certs` as a script does with curl: `next` until it is absent, no
/// empty page at the end when the count is a multiple of the page size.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pages_end_without_a_next_and_without_an_empty_page() {
    let server = CaServer::start(&[], &[]);
    let admin = server.admin();
    for i in 0..5 {
        issue(&admin, &format!("p{i}"), "30d").await;
    }
    // The server's own certificate is listed too: 6 in all, two pages of 3.
    let mut path = "/v1/certs?limit=3".to_string();
    let mut pages = Vec::new();
    loop {
        let text = admin.get(&path).await.unwrap().body;
        let page: Value = serde_json::from_slice(&text).unwrap();
        pages.push(page["certificates"].as_array().unwrap().len());
        match page.get("next") {
            Some(next) => path = format!("/v1/certs?limit=3&after={}", next.as_str().unwrap()),
            None => break,
        }
    }
    assert_eq!(pages, [3, 3]);
}
