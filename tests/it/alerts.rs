//! The shipped alert rules and dashboard against real metrics: a server and real agents put in
//! known states (an agent failing, one silent, one whose member serves another certificate, a
//! revoked certificate still installed, a certificate about to expire), their `/metrics` scrape
//! and the agents' textfiles turned into promtool input series, and every rule's expression
//! evaluated on them by `promtool test rules`. Also: `promtool check rules`, the rules' own unit
//! tests, and every metric name the rules and the dashboard use present in the real scrape.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::helpers::{agent_once, require_tool, run_command, CaServer, TestClock};

fn deploy(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("deploy")
        .join(path)
}

/// Every `etcd_ca_*` name in `text`.
fn metric_names(text: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let bytes = text.as_bytes();
    let mut i = 0;
    while let Some(found) = text[i..].find("etcd_ca_") {
        let start = i + found;
        let end = start
            + text[start..]
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(text.len() - start);
        let boundary =
            start == 0 || !(bytes[start - 1].is_ascii_alphanumeric() || bytes[start - 1] == b'_');
        // `etcd_ca_agent_*` in prose is a family, not a name.
        if boundary && !text[start..end].ends_with('_') {
            names.insert(text[start..end].to_string());
        }
        i = end;
    }
    names
}

/// The rules file's alerts and their one-line expressions.
fn rules() -> Vec<(String, String)> {
    let text = std::fs::read_to_string(deploy("prometheus/etcd-ca-rules.yaml")).unwrap();
    let mut rules = Vec::new();
    let mut alert = None;
    for line in text.lines().map(str::trim) {
        if let Some(name) = line.strip_prefix("- alert: ") {
            alert = Some(name.to_string());
        } else if let Some(expr) = line.strip_prefix("expr: ") {
            rules.push((
                alert.take().expect("expr after its alert"),
                expr.to_string(),
            ));
        }
    }
    rules
}

/// Samples of a text exposition: `name{labels}` and value.
fn samples(text: &str) -> Vec<(String, f64)> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .map(|l| {
            let (series, value) = l.rsplit_once(' ').unwrap();
            (series.to_string(), value.parse().unwrap())
        })
        .collect()
}

fn promtool(args: &[&str], dir: &Path) -> std::process::Output {
    std::process::Command::new(require_tool("promtool"))
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap()
}

#[test]
fn the_rules_pass_promtool_check_and_their_own_unit_tests() {
    let dir = deploy("prometheus");
    let check = promtool(&["check", "rules", "etcd-ca-rules.yaml"], &dir);
    assert!(check.status.success(), "{check:?}");
    let test = promtool(&["test", "rules", "etcd-ca-rules.test.yaml"], &dir);
    assert!(test.status.success(), "{test:?}");
    // Every alert has a unit test in the file.
    let tests = std::fs::read_to_string(dir.join("etcd-ca-rules.test.yaml")).unwrap();
    let untested: Vec<String> = rules()
        .into_iter()
        .map(|(alert, _)| alert)
        .filter(|alert| !tests.contains(&format!("alertname: {alert}\n")))
        .collect();
    assert!(
        untested.is_empty(),
        "alerts without a unit test: {untested:?}"
    );
}

/// One agent pass for `node` on the test's clock, with the shared textfile dir.
fn agent(
    server: &CaServer,
    clock: &TestClock,
    tmp: &Path,
    node: &str,
    profiles: &str,
    extra: &[&str],
) -> crate::helpers::Run {
    let (key, value) = clock.env();
    run_command(
        agent_once(
            &server.url,
            &server.fingerprint,
            node,
            profiles,
            &tmp.join(node),
        )
        .arg("--textfile-dir")
        .arg(tmp.join("textfiles"))
        .args(extra)
        .env(key, value),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_rule_fires_exactly_on_real_series_and_every_metric_used_exists() {
    let tmp = tempfile::tempdir().unwrap();
    let tmp = tmp.path();
    std::fs::create_dir(tmp.join("textfiles")).unwrap();
    let clock = TestClock::new(tmp);
    let server = CaServer::start_with_clock(&[], &[], &clock);
    let nodes = ["steady", "drifted", "failing", "revoked", "silent"];
    for (i, node) in nodes.iter().enumerate() {
        let ip = format!("127.0.0.{}", 60 + i);
        let token = server.remote_token(node, &ip);
        agent(
            &server,
            &clock,
            tmp,
            node,
            "server,peer",
            &["--token", &token],
        )
        .ok();
    }
    // A certificate issued by an admin for 36 hours: about to expire.
    server
        .remote(&[
            "issue",
            "--profile",
            "client",
            "--node",
            "short",
            "--cn",
            "short",
            "--lifetime",
            "36h",
            "--out",
            tmp.join("short").to_str().unwrap(),
        ])
        .ok();
    // The revoked node's server certificate, after its agent reported it installed.
    let revoked = std::fs::read_to_string(tmp.join("revoked/server.crt")).unwrap();
    let der = &etcd_ca::pki::pem_certificates(&revoked).unwrap()[0];
    let serial = etcd_ca::pki::CertSummary::from_der(der).unwrap().serial;
    server
        .remote(&["revoke", &serial, "--reason", "key-compromise"])
        .ok();

    // Two hours on: the silent and the revoked agents never report again.
    clock.advance(Duration::from_secs(2 * 3600));
    agent(&server, &clock, tmp, "steady", "server,peer", &[]).ok();
    // The drifted member "serves" what the CA server serves: not its own certificate.
    agent(
        &server,
        &clock,
        tmp,
        "drifted",
        "server,peer",
        &["--etcd-endpoint", &server.url],
    )
    .ok();
    // The failing agent is asked for a profile it has no token for (an empty token file).
    std::fs::write(tmp.join("empty.token"), "").unwrap();
    let failing = agent(
        &server,
        &clock,
        tmp,
        "failing",
        "server,peer,client",
        &["--token-file", tmp.join("empty.token").to_str().unwrap()],
    );
    assert_ne!(failing.code, Some(0));

    // The scrape, as Prometheus's admin job gets it, and the textfiles node_exporter reads.
    let scrape =
        String::from_utf8(server.admin().get("/metrics").await.unwrap().body.to_vec()).unwrap();
    let mut textfiles = String::new();
    let mut expositions = vec![scrape.clone()];
    for entry in std::fs::read_dir(tmp.join("textfiles")).unwrap() {
        let text = std::fs::read_to_string(entry.unwrap().path()).unwrap();
        textfiles.push_str(&text);
        expositions.push(text);
    }
    let scraped_at = time::OffsetDateTime::now_utc().unix_timestamp() + 2 * 3600;

    // Both expositions pass Prometheus's own linter, and the textfile states the installed
    // certificate's real expiry.
    for exposition in &expositions {
        let mut lint = std::process::Command::new(require_tool("promtool"))
            .args(["check", "metrics"])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        use std::io::Write as _;
        lint.stdin
            .take()
            .unwrap()
            .write_all(exposition.as_bytes())
            .unwrap();
        let lint = lint.wait_with_output().unwrap();
        assert!(lint.status.success(), "{lint:?}\n{exposition}");
    }
    let steady = std::fs::read_to_string(tmp.join("steady/server.crt")).unwrap();
    let steady =
        etcd_ca::pki::CertSummary::from_der(&etcd_ca::pki::pem_certificates(&steady).unwrap()[0])
            .unwrap();
    let line = format!(
        "etcd_ca_agent_certificate_not_after_timestamp_seconds{{node=\"steady\",profile=\"server\",serial=\"{}\"}} {}",
        steady.serial,
        steady.not_after.unix_timestamp()
    );
    assert!(textfiles.contains(&line), "{line} not in\n{textfiles}");

    // Every metric the rules and the dashboard use exists in a real scrape.
    let present = metric_names(&format!("{scrape}\n{textfiles}"));
    let rules_text = std::fs::read_to_string(deploy("prometheus/etcd-ca-rules.yaml")).unwrap();
    let dashboard_text = std::fs::read_to_string(deploy("grafana/etcd-ca-dashboard.json")).unwrap();
    let dashboard: serde_json::Value = serde_json::from_str(&dashboard_text).unwrap();
    assert!(!dashboard["panels"].as_array().unwrap().is_empty());
    for (what, text) in [("rules", &rules_text), ("dashboard", &dashboard_text)] {
        let missing: Vec<String> = metric_names(text).difference(&present).cloned().collect();
        assert!(
            missing.is_empty(),
            "the {what} use metrics no scrape has: {missing:?}\n{scrape}\n{textfiles}"
        );
    }

    // The scrape as promtool input: constant series; Unix timestamps moved so that promtool's
    // clock (0 at the start, evaluated at 60m) stands where the scrape was taken.
    let mut input = String::new();
    for (series, value) in samples(&scrape).into_iter().chain(samples(&textfiles)) {
        let name = series.split('{').next().unwrap();
        let value = if name.ends_with("_timestamp_seconds") {
            value - scraped_at as f64 + 3600.0
        } else {
            value
        };
        let _ = writeln!(
            input,
            "      - series: '{series}'\n        values: '{value}+0x70'"
        );
    }
    let expected: BTreeMap<&str, Vec<&str>> = [
        (
            "EtcdCaCertificateExpiringSoon",
            vec![r#"{node="short", profile="client"}"#],
        ),
        (
            "EtcdCaCertificateExpiringCritical",
            vec![r#"{node="short", profile="client"}"#],
        ),
        ("EtcdCaProfileExpiringSoon", vec![r#"{profile="client"}"#]),
        ("EtcdCaRenewalFailing", vec![r#"{node="failing"}"#]),
        ("EtcdCaAgentFailing", vec![r#"{node="failing"}"#]),
        ("EtcdCaAgentCertificateExpiringSoon", vec![]),
        (
            "EtcdCaAgentSilent",
            vec![r#"{node="revoked"}"#, r#"{node="silent"}"#],
        ),
        (
            "EtcdCaServedCertificateMismatch",
            vec![r#"{node="drifted", profile="server"}"#],
        ),
        (
            "EtcdCaInstalledCertificateRevoked",
            vec![r#"{node="revoked", profile="server"}"#],
        ),
        ("EtcdCaCrlStale", vec![]),
        ("EtcdCaCaExpiring", vec![]),
        ("EtcdCaCaExpiringCritical", vec![]),
        ("EtcdCaMetricsAbsent", vec![]),
    ]
    .into_iter()
    .collect();
    let rules = rules();
    let names: BTreeSet<&str> = rules.iter().map(|(a, _)| a.as_str()).collect();
    assert_eq!(
        names,
        expected.keys().copied().collect(),
        "every rule has an expectation"
    );
    let mut tests = String::new();
    for (alert, expr) in &rules {
        // Each matching series once, labels only: what the alert would fire for.
        let _ = writeln!(
            tests,
            "      - expr: '({}) * 0 + 1'\n        eval_time: 60m",
            expr.replace('\'', "''")
        );
        let samples = &expected[alert.as_str()];
        if samples.is_empty() {
            let _ = writeln!(tests, "        exp_samples: []");
        } else {
            let _ = writeln!(tests, "        exp_samples:");
            for labels in samples {
                let _ = writeln!(
                    tests,
                    "          - labels: '{labels}'\n            value: 1"
                );
            }
        }
    }
    let file = format!(
        "rule_files:\n  - {}\nevaluation_interval: 1m\ntests:\n  - interval: 1m\n    input_series:\n{input}    promql_expr_test:\n{tests}",
        deploy("prometheus/etcd-ca-rules.yaml").display()
    );
    std::fs::write(tmp.join("real.test.yaml"), &file).unwrap();
    let run = promtool(&["test", "rules", "real.test.yaml"], tmp);
    assert!(
        run.status.success(),
        "{}{}\n{file}",
        String::from_utf8_lossy(&run.stdout),
        String::from_utf8_lossy(&run.stderr)
    );
}
