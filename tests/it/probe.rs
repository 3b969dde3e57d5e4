//! What a member really serves: a real one-member etcd started on a *copy* of its PKI dir, so
//! the agent renews files etcd never reads. The mismatch must show in `etcd-ca check`, in the
//! metrics and in the web view, and copying the renewed files over must clear it.
//!
//! Member on 127.0.0.41, client port 23079, peer port 23080.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::helpers::{
    agent_once, etcd_ca, require_tool, run_command, wait_for, CaServer, TestClock,
};

const IP: &str = "127.0.0.41";
const CLIENT_PORT: u16 = 23079;
const PEER_PORT: u16 = 23080;

fn client_url() -> String {
    format!("https://{IP}:{CLIENT_PORT}")
}

fn peer_url() -> String {
    format!("https://{IP}:{PEER_PORT}")
}

/// One etcd member reading its certificates from `pki`.
struct Member {
    child: Child,
    _data: tempfile::TempDir,
}

impl Member {
    fn start(pki: &Path) -> Self {
        let etcd = require_tool("etcd");
        let data = tempfile::tempdir().unwrap();
        let flags = etcd_ca([
            "etcd-flags",
            "--node",
            "m1",
            "--dir",
            pki.to_str().unwrap(),
            "--format",
            "lines",
        ])
        .ok()
        .stdout;
        let child = Command::new(etcd)
            .args(flags.lines().map(str::trim).filter(|l| !l.is_empty()))
            .arg(format!("--data-dir={}", data.path().join("m1").display()))
            .arg(format!("--listen-client-urls={}", client_url()))
            .arg(format!("--advertise-client-urls={}", client_url()))
            .arg(format!("--listen-peer-urls={}", peer_url()))
            .arg(format!("--initial-advertise-peer-urls={}", peer_url()))
            .arg(format!("--initial-cluster=m1={}", peer_url()))
            .arg("--initial-cluster-state=new")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(data.path().join("etcd.log")).unwrap())
            .spawn()
            .expect("start etcd");
        wait_for("etcd to listen", Duration::from_secs(30), || {
            std::net::TcpStream::connect((IP, CLIENT_PORT)).is_ok()
        });
        Self { child, _data: data }
    }
}

impl Drop for Member {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Copies the certificate, key, bundle and CRL files of `from` into `to` (etcd's copy).
fn copy_pki(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_str().unwrap().to_string();
        if name.ends_with(".crt") || name.ends_with(".key") || name.ends_with(".crl") {
            std::fs::copy(&path, to.join(&name)).unwrap();
        }
    }
}

fn serial_of(pem_file: &Path) -> String {
    let pem = std::fs::read_to_string(pem_file).unwrap();
    let der = &etcd_ca::pki::pem_certificates(&pem).unwrap()[0];
    etcd_ca::pki::CertSummary::from_der(der).unwrap().serial
}

/// The member's agent, one pass, probing both ports, on the test's clock.
fn agent_pass(server: &CaServer, clock: &TestClock, pki: &Path, extra: &[&str]) {
    let (key, value) = clock.env();
    run_command(
        agent_once(&server.url, &server.fingerprint, "m1", "server,peer", pki)
            .args([
                "--etcd-endpoint",
                &client_url(),
                "--etcd-peer-endpoint",
                &peer_url(),
            ])
            .args(extra)
            .env(key, value),
    )
    .ok();
}

/// The admin-scraped metrics' value of `series` (exact labels), if present.
async fn metric(server: &CaServer, series: &str) -> Option<f64> {
    let text =
        String::from_utf8(server.admin().get("/metrics").await.unwrap().body.to_vec()).unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.trim().parse().ok())
}

/// The marks the web view's fleet table shows on the row of `profile` (the logged-in page).
async fn web_marks(server: &CaServer, profile: &str) -> String {
    let html = server.ui_page("/ui/fleet?sort=node").await;
    let row = format!("data-node=\"m1\" data-profile=\"{profile}\" data-marks=\"");
    let start = html
        .find(&row)
        .unwrap_or_else(|| panic!("no row {row} in {html}"))
        + row.len();
    html[start..].split('"').next().unwrap().to_string()
}

/// A session whose token is not (or no longer) an admin's gets the login page with the reason,
/// and the cookie is dropped; the reason never comes from the URL.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_session_gets_the_login_page_and_loses_its_cookie() {
    let server = CaServer::start(&[], &[]);
    let page = server
        .client()
        .send(
            hyper::Method::GET,
            "/ui/fleet",
            None,
            &[(hyper::header::COOKIE, "etcd_ca_admin=etcdca_bogus".into())],
        )
        .await
        .unwrap();
    assert_eq!(page.status, 401);
    let html = String::from_utf8(page.body.to_vec()).unwrap();
    assert!(html.contains("id=\"login-error\""), "{html}");
    assert!(!html.contains("id=\"fleet\""));
    let cookie = page.headers[hyper::header::SET_COOKIE].to_str().unwrap();
    assert!(
        cookie.starts_with("etcd_ca_admin=;") && cookie.contains("Max-Age=0"),
        "{cookie}"
    );
    let crafted = server
        .client()
        .get("/ui/login?error=call+555-0100")
        .await
        .unwrap();
    assert!(!String::from_utf8(crafted.body.to_vec())
        .unwrap()
        .contains("555-0100"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_serving_an_old_certificate_is_flagged_everywhere_until_fixed() {
    let tmp = tempfile::tempdir().unwrap();
    let clock = TestClock::new(tmp.path());
    let server = CaServer::start_with_clock(&[], &[], &clock);
    let token = server.remote_token("m1", IP);
    let agent_dir = tmp.path().join("agent");
    let etcd_dir = tmp.path().join("etcd");
    agent_pass(&server, &clock, &agent_dir, &["--token", &token]);
    copy_pki(&agent_dir, &etcd_dir);
    let _member = Member::start(&etcd_dir);

    // In step: the member serves what was issued, on both ports.
    agent_pass(&server, &clock, &agent_dir, &[]);
    let check = server.remote(&["check", "--json"]);
    let report: serde_json::Value = serde_json::from_str(&check.stdout).unwrap();
    assert_eq!(check.code, Some(0), "{}\n{}", check.stdout, check.stderr);
    assert_eq!(report["ok"], true);
    let served: Vec<&str> = report["members"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| m["node"] == "m1")
        .map(|m| m["served_serial"].as_str().unwrap())
        .collect();
    assert_eq!(served.len(), 2, "both ports probed: {report}");
    let server_series = "etcd_ca_served_certificate_mismatch{node=\"m1\",profile=\"server\"}";
    assert_eq!(metric(&server, server_series).await, Some(0.0));

    // The agent renews files etcd does not read: the member keeps serving the old certificate.
    let old = serial_of(&etcd_dir.join("server.crt"));
    agent_pass(&server, &clock, &agent_dir, &["--renew-now"]);
    let new = serial_of(&agent_dir.join("server.crt"));
    assert_ne!(old, new);
    let check = server.remote(&["check"]);
    assert_eq!(check.code, Some(1), "{}", check.stdout);
    assert!(
        check.stdout.contains(&format!(
            "serves certificate {old}, but {new} is the newest issued"
        )),
        "{}",
        check.stdout
    );
    // Within the grace period the fleet does not flag it yet; past it, it does.
    assert!(!web_marks(&server, "server").await.contains("mismatch"));
    clock.advance(Duration::from_secs(11 * 60));
    agent_pass(&server, &clock, &agent_dir, &[]);
    assert!(web_marks(&server, "server").await.contains("mismatch"));
    assert!(web_marks(&server, "peer").await.contains("mismatch"));
    assert_eq!(metric(&server, server_series).await, Some(1.0));
    let json: serde_json::Value =
        serde_json::from_str(&server.remote(&["check", "--json"]).stdout).unwrap();
    assert_eq!(json["ok"], false);

    // Fixed: etcd reads the renewed files (it reads them at every handshake).
    copy_pki(&agent_dir, &etcd_dir);
    agent_pass(&server, &clock, &agent_dir, &[]);
    assert_eq!(web_marks(&server, "server").await, "");
    assert_eq!(metric(&server, server_series).await, Some(0.0));
    let check = server.remote(&["check"]);
    assert_eq!(check.code, Some(0), "{}", check.stdout);
    assert!(check.stdout.contains("all ok"), "{}", check.stdout);
}
