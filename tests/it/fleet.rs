//! The fleet as the CA sees it through agents' reports, and the web view's login limits:
//! what a newcomer's pass found wanting.

use crate::helpers::{agent_once, run_command, CaServer};

fn serial_of(pem_file: &std::path::Path) -> String {
    let pem = std::fs::read_to_string(pem_file).unwrap();
    let der = &etcd_ca::pki::pem_certificates(&pem).unwrap()[0];
    etcd_ca::pki::CertSummary::from_der(der).unwrap().serial
}

async fn fleet_entry(
    server: &CaServer,
    node: &str,
    profile: &str,
) -> (serde_json::Value, serde_json::Value) {
    let fleet: serde_json::Value = server.admin().get_json("/v1/fleet").await.unwrap();
    let node = fleet["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["node"] == node)
        .unwrap_or_else(|| panic!("no {node} in {fleet}"))
        .clone();
    let entry = node["entries"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["profile"] == profile)
        .unwrap()
        .clone();
    (node, entry)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_node_fails_at_once_and_goes_on_reporting_with_its_valid_certificate() {
    let tmp = tempfile::tempdir().unwrap();
    let server = CaServer::start(&[], &[]);
    let token = server.remote_token("n1", "127.0.0.81");
    let pki = tmp.path().join("n1");
    let once = |extra: &[&str]| {
        run_command(
            agent_once(&server.url, &server.fingerprint, "n1", "server,peer", &pki).args(extra),
        )
    };
    once(&["--token", &token]).ok();
    // The first report carries the pass it ends.
    let (node, _) = fleet_entry(&server, "n1", "server").await;
    assert!(node["agent"]["last_success"].is_string(), "{node}");
    assert_eq!(node["agent"]["failures"], 0);

    let serial = serial_of(&pki.join("server.crt"));
    server.remote(&["revoke", &serial]).ok();
    // The pass that installs the CRL listing it says so, without waiting for another pass.
    let run = once(&[]);
    assert_eq!(run.code, Some(1), "{}", run.stderr);
    assert!(
        run.stderr.contains("bootstrap token") && run.stderr.contains("revoked"),
        "{}",
        run.stderr
    );
    // `agent status` says which certificate is revoked.
    let status = crate::helpers::etcd_ca(["agent", "status", "--dir", pki.to_str().unwrap()])
        .ok()
        .stdout;
    assert!(status.contains("REVOKED (listed in ca.crl)"), "{status}");
    assert_eq!(
        status.matches("REVOKED").count(),
        1,
        "only the server certificate: {status}"
    );
    // ... and the CA hears of it, through the peer certificate.
    let (node, server_entry) = fleet_entry(&server, "n1", "server").await;
    let marks = server_entry["marks"].to_string();
    assert!(
        marks.contains("revoked") && marks.contains("failing"),
        "{server_entry}"
    );
    assert_eq!(node["agent"]["failures"], 1);
    assert!(
        node["agent"]["last_error"]
            .as_str()
            .unwrap()
            .contains("token"),
        "{node}"
    );

    // The audit lookup takes the serial as an operator types it (upper case, colons).
    let typed: String = serial
        .to_uppercase()
        .as_bytes()
        .chunks(2)
        .map(|c| std::str::from_utf8(c).unwrap())
        .collect::<Vec<_>>()
        .join(":");
    // The fleet page shows a bounded number of rows, soonest expiry first, and says so.
    let page = server.ui_page("/ui/fleet?limit=1").await;
    assert_eq!(page.matches("<tr data-node=").count(), 1, "{page}");
    assert!(
        page.contains("id=\"truncated\"") && page.contains("The first 1 of 3 rows"),
        "{page}"
    );

    // The revoked row has no countdown, and its serial links to its lookup.
    let page = server.ui_page("/ui/fleet?mark=revoked").await;
    assert!(page.contains("<td class=\"left\">revoked</td>"), "{page}");
    assert!(
        page.contains(&format!("href=\"/ui/audit?serial={serial}\"")),
        "{page}"
    );
    // An unknown mark or node says so.
    let page = server.ui_page("/ui/fleet?mark=bogus").await;
    assert!(page.contains("There is no mark bogus"), "{page}");
    let page = server.ui_page("/ui/audit?node=nosuch").await;
    assert!(page.contains("id=\"lookup-empty\""), "{page}");

    let page = server.ui_page(&format!("/ui/audit?serial={typed}")).await;
    assert!(page.contains("data-action=\"revoke\""), "{page}");
    assert!(page.contains(&format!("data-serial=\"{serial}\"")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_locked_out_web_login_says_so_with_429() {
    let server = CaServer::start(&[], &[]);
    let mut last = None;
    for _ in 0..60 {
        let page = server
            .client()
            .send(
                hyper::Method::POST,
                "/ui/login",
                Some((
                    "application/x-www-form-urlencoded",
                    b"token=etcdca_wrong".to_vec(),
                )),
                &[],
            )
            .await
            .unwrap();
        let status = page.status.as_u16();
        assert!(status == 401 || status == 429, "{status}");
        if status == 429 {
            last = Some(String::from_utf8(page.body.to_vec()).unwrap());
            break;
        }
    }
    let page = last.expect("locked out within 60 attempts");
    assert!(page.contains("too many"), "{page}");
    let metrics =
        String::from_utf8(server.admin().get("/metrics").await.unwrap().body.to_vec()).unwrap();
    assert!(
        metrics.contains(
            "etcd_ca_requests_refused_total{action=\"admin\",reason=\"too_many_attempts\"}"
        ),
        "{metrics}"
    );
}
