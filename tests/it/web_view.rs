//! The web view in a real browser: Debian's headless Chromium driven through chromedriver
//! (WebDriver, by fantoccini). Log in with an admin token, see a three-node fleet kept by real
//! agents, sort it by time left, see a revoked and an expiring certificate marked, follow a CA
//! rotation's phases as they happen; without credentials nothing but the login page is shown.
//! A screenshot of each page is saved under `target/web-view/` (the README shows one).
//!
//! chromedriver listens on 127.0.0.1:23190.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use fantoccini::{Client, ClientBuilder, Locator};

use crate::helpers::{
    agent_once, require_tool, run_command, wait_for, AgentProcess, CaServer, TestClock,
};

const DRIVER_PORT: u16 = 23190;

/// chromedriver, stopped (by PID) when dropped.
struct Driver(Child);

impl Driver {
    fn start() -> Self {
        let child = Command::new(require_tool("chromedriver"))
            .arg(format!("--port={DRIVER_PORT}"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start chromedriver");
        wait_for("chromedriver to listen", Duration::from_secs(20), || {
            std::net::TcpStream::connect(("127.0.0.1", DRIVER_PORT)).is_ok()
        });
        Driver(child)
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A fresh headless Chromium (no cookies), accepting the CA server's certificate (signed by
/// the test's own CA, which the browser does not know).
async fn browser(profile: &Path) -> Client {
    require_tool("chromium");
    // Debian's /usr/bin/chromium is a wrapper script; chromedriver starts the browser itself.
    let chromium = "/usr/lib/chromium/chromium";
    let mut caps = serde_json::Map::new();
    caps.insert("acceptInsecureCerts".into(), serde_json::json!(true));
    caps.insert(
        "goog:chromeOptions".into(),
        serde_json::json!({
            "binary": chromium,
            "args": [
                "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--window-size=1500,900", "--no-first-run", "--disable-extensions",
                format!("--user-data-dir={}", profile.display()),
            ],
        }),
    );
    ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
        .capabilities(caps)
        .connect(&format!("http://127.0.0.1:{DRIVER_PORT}"))
        .await
        .expect("a chromium session through chromedriver")
}

fn screenshots() -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/web-view");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

async fn screenshot(browser: &Client, name: &str) {
    let png = browser.screenshot().await.unwrap();
    std::fs::write(screenshots().join(format!("{name}.png")), png).unwrap();
}

/// Clicks a link or a submit button and waits until the page it leaves is gone, so what is read
/// next comes from the page it loads (a click returns before the navigation it starts).
async fn click(browser: &Client, css: &str) {
    let old = browser.find(Locator::Css("html")).await.unwrap();
    browser
        .find(Locator::Css(css))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while old.tag_name().await.is_ok() {
        assert!(
            std::time::Instant::now() < deadline,
            "clicking {css} loaded no new page"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn fill(browser: &Client, css: &str, text: &str) {
    browser
        .find(Locator::Css(css))
        .await
        .unwrap()
        .send_keys(text)
        .await
        .unwrap();
}

/// The text of the element at `css`, waiting (up to 20 s) for the page to have one.
async fn text(browser: &Client, css: &str) -> String {
    browser
        .wait()
        .at_most(Duration::from_secs(20))
        .for_element(Locator::Css(css))
        .await
        .unwrap_or_else(|e| panic!("no {css}: {e}"))
        .text()
        .await
        .unwrap()
}

/// Each row of the fleet table: node, profile, marks, seconds left.
async fn fleet_rows(browser: &Client) -> Vec<(String, String, String, i64)> {
    let mut rows = Vec::new();
    for row in browser
        .find_all(Locator::Css("#fleet tbody tr"))
        .await
        .unwrap()
    {
        let attr = |name: &'static str| {
            let row = row.clone();
            async move { row.attr(name).await.unwrap().unwrap_or_default() }
        };
        rows.push((
            attr("data-node").await,
            attr("data-profile").await,
            attr("data-marks").await,
            attr("data-left").await.parse().unwrap_or(i64::MAX),
        ));
    }
    rows
}

/// Reloads `path` until `condition` holds on the page's text of `css`.
async fn wait_page(
    browser: &Client,
    url: &str,
    css: &str,
    what: &str,
    condition: impl Fn(&str) -> bool,
) -> String {
    let deadline = std::time::Instant::now() + Duration::from_secs(90);
    loop {
        browser.goto(url).await.unwrap();
        let found = browser.find(Locator::Css(css)).await;
        if let Ok(element) = found {
            let text = element.text().await.unwrap();
            if condition(&text) {
                return text;
            }
        }
        if std::time::Instant::now() > deadline {
            let page = text(browser, "main").await;
            panic!("timed out waiting for {what} on {url}:\n{page}");
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_admin_sees_the_fleet_marks_and_a_rotation_in_a_real_browser() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let clock = TestClock::new(root);
    let server = CaServer::start_with_clock(&[], &[], &clock);
    let _driver = Driver::start();

    // Nine hours ago (the server's clock set back): a fourth node's agent ran once, then its
    // server certificate was revoked; a backup job got a certificate for 10 hours, so it now
    // has one hour left: expiring. (Certificates dated in the past: rustls checks validity
    // against the real clock, so the test clock never runs ahead of it.)
    clock.set_offset(-9 * 3600);
    let token = server.remote_token("n4", "127.0.0.74");
    run_command(
        agent_once(
            &server.url,
            &server.fingerprint,
            "n4",
            "server,peer",
            &root.join("n4"),
        )
        .args(["--token", &token]),
    )
    .ok();
    let revoked = std::fs::read_to_string(root.join("n4/server.crt")).unwrap();
    let der = &etcd_ca::pki::pem_certificates(&revoked).unwrap()[0];
    let revoked_serial = etcd_ca::pki::CertSummary::from_der(der).unwrap().serial;
    server.remote(&["revoke", &revoked_serial]).ok();
    server
        .remote(&[
            "issue",
            "--profile",
            "client",
            "--node",
            "backup",
            "--cn",
            "backup",
            "--lifetime",
            "10h",
            "--out",
            root.join("backup").to_str().unwrap(),
        ])
        .ok();
    clock.set_offset(0);

    // Three members kept by real agents ("restarting" etcd is a hook that succeeds).
    let mut agents = Vec::new();
    for m in 1..=3 {
        let node = format!("n{m}");
        let ip = format!("127.0.0.7{m}");
        let token = server.remote_token(&node, &ip);
        agents.push(AgentProcess::spawn(
            &[
                "--server",
                &server.url,
                "--ca-fingerprint",
                &server.fingerprint,
                "--node",
                &node,
                "--dir",
                root.join(&node).to_str().unwrap(),
                "--token",
                &token,
                "--on-trust-change",
                "true",
            ],
            root.join(format!("agent-{node}.log")),
            root.join(format!("hooks-{node}.log")),
        ));
    }

    let base = server.url.clone();
    let profile = tempfile::tempdir().unwrap();
    let browser = browser(profile.path()).await;

    // Without credentials: every page is the login page.
    for page in ["fleet", "ca", "rotation", "audit"] {
        browser.goto(&format!("{base}/ui/{page}")).await.unwrap();
        assert!(
            browser
                .current_url()
                .await
                .unwrap()
                .path()
                .ends_with("/ui/login"),
            "{page}"
        );
        assert!(browser
            .find(Locator::Css("#fleet, #generations, #rotation, #audit"))
            .await
            .is_err());
        assert!(browser.find(Locator::Css("form#login")).await.is_ok());
    }
    screenshot(&browser, "login").await;
    // A wrong token is refused on the login page.
    fill(&browser, "#token", "not-a-token").await;
    click(&browser, "form#login button").await;
    assert!(text(&browser, "#login-error").await.contains("admin token"));
    assert!(browser.find(Locator::Css("#fleet")).await.is_err());

    // Log in.
    browser.goto(&format!("{base}/ui/login")).await.unwrap();
    fill(&browser, "#token", &server.admin_token).await;
    click(&browser, "form#login button").await;
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let landed = browser.current_url().await.unwrap();
        if landed.path().ends_with("/ui/fleet") {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{landed}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // The fleet: three members with both profiles, each reported by its agent.
    wait_page(
        &browser,
        &format!("{base}/ui/fleet?sort=node"),
        "#fleet",
        "the three agents' reports",
        |t| t.matches("same (valid)").count() >= 6,
    )
    .await;
    let rows = fleet_rows(&browser).await;
    for m in 1..=3 {
        for profile in ["server", "peer"] {
            assert!(
                rows.iter().any(|(n, p, marks, _)| *n == format!("n{m}")
                    && p == profile
                    && marks.is_empty()),
                "n{m} {profile} unmarked: {rows:?}"
            );
        }
    }
    let marks_of = |node: &str, profile: &str| {
        rows.iter()
            .find(|(n, p, _, _)| n == node && p == profile)
            .map(|r| r.2.clone())
            .unwrap_or_else(|| panic!("no row {node} {profile}: {rows:?}"))
    };
    assert!(marks_of("n4", "server").contains("revoked"), "{rows:?}");
    assert!(
        marks_of("backup", "client").contains("expiring"),
        "{rows:?}"
    );
    assert!(!marks_of("n4", "peer").contains("revoked"));
    // n4's agent last reported nine hours ago: stale.
    assert!(marks_of("n4", "peer").contains("stale"), "{rows:?}");

    // Sorted by node, then by time left (the column's link): soonest first.
    click(&browser, "#sort-left").await;
    let by_left = fleet_rows(&browser).await;
    let lefts: Vec<i64> = by_left.iter().map(|r| r.3).collect();
    assert!(lefts.windows(2).all(|w| w[0] <= w[1]), "{by_left:?}");
    assert_eq!(by_left[0].0, "backup");
    click(&browser, "#sort-node").await;
    let by_node: Vec<String> = fleet_rows(&browser)
        .await
        .into_iter()
        .map(|r| r.0)
        .collect();
    assert!(by_node.windows(2).all(|w| w[0] <= w[1]), "{by_node:?}");
    // Filtered to the marked rows.
    browser
        .goto(&format!("{base}/ui/fleet?mark=any"))
        .await
        .unwrap();
    let marked: Vec<String> = fleet_rows(&browser)
        .await
        .into_iter()
        .map(|r| r.0)
        .collect();
    assert_eq!(marked, ["backup", "n4", "n4"]);
    browser.goto(&format!("{base}/ui/fleet")).await.unwrap();
    screenshot(&browser, "fleet").await;

    // The CA page: one active generation, the bundle, the CRL listing the revocation.
    browser.goto(&format!("{base}/ui/ca")).await.unwrap();
    assert!(text(&browser, "#generations").await.contains("active"));
    assert!(text(&browser, "#bundle")
        .await
        .contains("BEGIN CERTIFICATE"));
    assert!(
        text(&browser, "#crl").await.contains("Revoked 1"),
        "{}",
        text(&browser, "#crl").await
    );
    screenshot(&browser, "ca").await;

    // The audit lookup by serial shows the revocation.
    browser.goto(&format!("{base}/ui/audit")).await.unwrap();
    fill(&browser, "#serial", &revoked_serial).await;
    click(&browser, "form.filter button").await;
    assert!(text(&browser, "#certificates").await.contains("revoked"));
    assert!(text(&browser, "#audit").await.contains("revoke"));
    screenshot(&browser, "audit").await;

    // A rotation, followed on the rotation page as each step is taken.
    let rotation = format!("{base}/ui/rotation");
    assert_eq!(text_after_goto(&browser, &rotation, "#phase").await, "idle");
    // Each step through the CLI, as an admin takes it; n4's agent is gone, so once the three
    // running members have converged the page names n4 alone as what blocks the next step,
    // and the step is forced past it.
    let step = |args: &'static [&'static str]| {
        let run = server.remote(args);
        assert_eq!(run.code, Some(0), "{args:?}: {}", run.stderr);
    };
    let only_n4 = |t: &str| t.contains("n4") && !["n1", "n2", "n3"].iter().any(|n| t.contains(n));
    step(&["ca", "rotate", "start"]);
    wait_page(&browser, &rotation, "#phase", "phase started", |t| {
        t == "started"
    })
    .await;
    wait_page(
        &browser,
        &rotation,
        "#blocked-by",
        "the members to install the new CA",
        only_n4,
    )
    .await;
    screenshot(&browser, "rotation").await;
    step(&["ca", "rotate", "activate", "--force"]);
    wait_page(&browser, &rotation, "#phase", "phase activated", |t| {
        t == "activated"
    })
    .await;
    wait_page(
        &browser,
        &rotation,
        "#blocked-by",
        "the members to renew from the new CA",
        only_n4,
    )
    .await;
    step(&["ca", "rotate", "finish", "--force"]);
    wait_page(&browser, &rotation, "#phase", "phase idle again", |t| {
        t == "idle"
    })
    .await;
    assert!(text(&browser, "#last-step").await.starts_with("finish"));

    // Logging out ends the session.
    click(&browser, "header form button").await;
    browser.goto(&format!("{base}/ui/fleet")).await.unwrap();
    assert!(browser
        .current_url()
        .await
        .unwrap()
        .path()
        .ends_with("/ui/login"));
    browser.close().await.unwrap();
    for agent in agents {
        agent.stop();
    }
}

async fn text_after_goto(browser: &Client, url: &str, css: &str) -> String {
    browser.goto(url).await.unwrap();
    text(browser, css).await
}
