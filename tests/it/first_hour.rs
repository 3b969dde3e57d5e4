//! The operator's first hour: exit statuses that say what kind of failure it was, a server that
//! creates a CA only where it was told to and writes nothing when it cannot listen, keeps its own
//! certificate across restarts and renews it before it expires, and dates counted on the
//! calendar.

use std::time::Duration;

use time::OffsetDateTime;

use crate::helpers::{etcd_ca, wait_for, CaServer, TestCa};

#[test]
fn exit_status_is_0_1_2_or_3_by_what_happened() {
    let ca = TestCa::init(&[]);
    // 0: it worked.
    assert_eq!(ca.cli("list", &[]).code, Some(0));
    // 1: the command line was fine, the request was not (an unknown serial).
    let unknown = ca.cli("show", &["0a0b0c"]);
    assert_eq!(unknown.code, Some(1), "{unknown:?}");
    // 2: the command line itself is wrong: a flag clap knows is missing, a flag value we check
    // ourselves, a flag the agent needs.
    let missing = ca.cli("issue", &["--node", "n1"]);
    assert_eq!(missing.code, Some(2), "{missing:?}");
    let bad_pin = etcd_ca([
        "list",
        "--server",
        "https://127.0.0.1:1",
        "--ca-fingerprint",
        "sha256:nothex",
    ]);
    assert_eq!(bad_pin.code, Some(2), "{bad_pin:?}");
    assert!(
        bad_pin.stderr.contains("--ca-fingerprint"),
        "{}",
        bad_pin.stderr
    );
    let dir = ca.tmp.path().join("pki");
    let agent = etcd_ca([
        "agent",
        "--server",
        "https://127.0.0.1:1",
        "--node",
        "n1",
        "--dir",
        dir.to_str().unwrap(),
        "--once",
    ]);
    assert_eq!(agent.code, Some(2), "{agent:?}");
    assert!(
        agent.stderr.contains("needs --ca-fingerprint"),
        "{}",
        agent.stderr
    );
    // 3: inspect found a certificate that expires within --warn.
    let out = ca.tmp.path().join("out");
    ca.issue(
        &out,
        &[
            "--profile",
            "client",
            "--node",
            "ops",
            "--cn",
            "ops",
            "--lifetime",
            "2d",
        ],
    );
    let warned = etcd_ca([
        "inspect",
        out.join("client.crt").to_str().unwrap(),
        "--warn",
        "30d",
    ]);
    assert_eq!(warned.code, Some(3), "{warned:?}");
}

#[test]
fn serve_creates_a_ca_only_where_it_was_told_and_nothing_when_it_cannot_listen() {
    let tmp = tempfile::tempdir().unwrap();
    // A busy port: refused before anything is created (no CA dir, no passphrase file).
    let busy = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = busy.local_addr().unwrap().to_string();
    let dir = tmp.path().join("new-ca");
    let passphrase = tmp.path().join("passphrase");
    let run = etcd_ca([
        "serve",
        "--data-dir",
        dir.to_str().unwrap(),
        "--passphrase-file",
        passphrase.to_str().unwrap(),
        "--listen",
        &addr,
    ]);
    assert_eq!(run.code, Some(1), "{run:?}");
    assert!(
        run.stderr.contains(&format!("cannot listen on {addr}")),
        "{}",
        run.stderr
    );
    assert!(
        !dir.exists(),
        "a CA was created although the server could not listen"
    );
    assert!(
        !passphrase.exists(),
        "a passphrase was written although the server could not listen"
    );

    // No data dir named at all: the default place is not silently turned into a new CA.
    let default_dir = std::path::Path::new(etcd_ca::cli::DEFAULT_DATA_DIR);
    assert!(
        !default_dir.exists(),
        "this test needs {} not to exist (it checks that serve does not create a CA there)",
        default_dir.display()
    );
    let run = etcd_ca([
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--insecure-unencrypted-key",
    ]);
    let created = default_dir.exists();
    if created {
        let _ = std::fs::remove_dir_all(default_dir);
    }
    assert!(!created, "serve created a CA in {}", default_dir.display());
    assert_eq!(run.code, Some(1), "{run:?}");
    assert!(
        run.stderr.contains("no data dir was named") && run.stderr.contains("--data-dir"),
        "{}",
        run.stderr
    );
}

#[test]
fn a_restart_keeps_the_serving_certificate_and_it_is_renewed_before_it_expires() {
    let mut server = CaServer::start(&[], &[]);
    let first = server.presented_certificate();
    server.restart();
    let again = server.presented_certificate();
    assert_eq!(
        first.serial, again.serial,
        "a restart issued a new serving certificate"
    );
    let listed = server
        .ca
        .cli("list", &["--node", "etcd-ca-server", "--json"])
        .ok();
    let rows: Vec<serde_json::Value> = serde_json::from_str(&listed.stdout).unwrap();
    assert_eq!(rows.len(), 1, "{}", listed.stdout);
    let key_mode = std::fs::metadata(server.ca.dir.join("server/tls.key"))
        .map(|m| std::os::unix::fs::PermissionsExt::mode(&m.permissions()) & 0o777)
        .unwrap();
    assert_eq!(key_mode, 0o600);
    drop(server);

    // A short server_lifetime: the running server replaces its certificate at 2/3 of it,
    // before it expires, and never presents an expired one.
    let tmp = tempfile::tempdir().unwrap();
    let policy = tmp.path().join("short-server.toml");
    let text = crate::helpers::patched_policy(&[(
        "server_lifetime = \"365d\"",
        "server_lifetime = \"15s\"",
        1,
    )]);
    std::fs::write(&policy, text).unwrap();
    let server = CaServer::start(&["--policy", policy.to_str().unwrap()], &[]);
    let first = server.presented_certificate();
    assert!(first.not_after <= OffsetDateTime::now_utc() + time::Duration::seconds(16));
    let mut renewed = None;
    wait_for(
        "the serving certificate to be renewed",
        Duration::from_secs(20),
        || {
            let now = server.presented_certificate();
            assert!(
                now.not_after > OffsetDateTime::now_utc(),
                "the server presents an expired certificate"
            );
            if now.serial != first.serial {
                renewed = Some(now);
            }
            renewed.is_some()
        },
    );
    let renewed = renewed.unwrap();
    assert!(renewed.not_after > first.not_after);
    assert!(
        OffsetDateTime::now_utc() < first.not_after,
        "renewed only after the old certificate expired"
    );
}

#[test]
fn years_are_calendar_years_and_days_left_read_as_people_read_them() {
    let before = OffsetDateTime::now_utc();
    let ca = TestCa::init(&["--validity", "10y"]);
    let after = OffsetDateTime::now_utc();
    let ca_cert = etcd_ca::pki::CertSummary::from_der(
        &etcd_ca::pki::pem_certificates(
            &std::fs::read_to_string(ca.dir.join("ca/gen-1.crt")).unwrap(),
        )
        .unwrap()[0],
    )
    .unwrap();
    let ten_years = |t: OffsetDateTime| t.replace_year(t.year() + 10).unwrap();
    assert!(
        ca_cert.not_after >= ten_years(before) - time::Duration::seconds(1)
            && ca_cert.not_after <= ten_years(after) + time::Duration::seconds(1),
        "10y from {before} ends {}",
        ca_cert.not_after
    );

    let out = ca.tmp.path().join("out");
    ca.issue(
        &out,
        &[
            "--profile",
            "client",
            "--node",
            "ops",
            "--cn",
            "ops",
            "--lifetime",
            "90d",
        ],
    );
    let listed = ca.cli("list", &["--node", "ops"]).ok();
    let row = listed.stdout.lines().nth(1).unwrap();
    let columns: Vec<&str> = row.split_whitespace().collect();
    assert_eq!(columns[columns.len() - 2], "90", "{}", listed.stdout);
    let shown = ca.cli("show", &[columns[0]]).ok();
    assert!(shown.stdout.contains("(90 days left)"), "{}", shown.stdout);
}

#[test]
fn list_shows_superseded_and_retired_certificates_for_what_they_are() {
    let ca = TestCa::init(&[]);
    let out = ca.tmp.path().join("out");
    let client = ["--profile", "client", "--node", "ops", "--cn", "ops"];
    let old = ca.issue(&out.join("old"), &client);
    let new = ca.issue(&out.join("new"), &client);
    let status_of = |listing: &str, serial: &str| {
        listing
            .lines()
            .find(|l| l.starts_with(serial))
            .and_then(|l| l.split_whitespace().last())
            .map(str::to_string)
    };
    let listed = ca.cli("list", &[]).ok().stdout;
    assert_eq!(
        status_of(&listed, &old).as_deref(),
        Some("superseded"),
        "{listed}"
    );
    assert_eq!(
        status_of(&listed, &new).as_deref(),
        Some("valid"),
        "{listed}"
    );
    let superseded = ca.cli("list", &["--status", "superseded"]).ok().stdout;
    assert!(
        superseded.contains(&old) && !superseded.contains(&new),
        "{superseded}"
    );
    let valid = ca.cli("list", &["--status", "valid"]).ok().stdout;
    assert!(valid.contains(&new) && !valid.contains(&old), "{valid}");
    let shown = ca.cli("show", &[&old]).ok().stdout;
    assert!(shown.contains("status:        superseded"), "{shown}");

    // A rotation to the end: what generation 1 signed is trusted by nothing any more.
    for step in ["start", "activate", "finish"] {
        etcd_ca(["ca", "rotate", step, "--force", "--data-dir", ca.data_dir()]).ok();
    }
    let retired = ca.cli("list", &["--status", "retired"]).ok().stdout;
    assert!(
        retired.contains(&old) && retired.contains(&new),
        "{retired}"
    );
    assert_eq!(status_of(&retired, &new).as_deref(), Some("retired"));
    let bad = ca.cli("list", &["--status", "stale"]);
    assert_eq!(bad.code, Some(2), "{bad:?}");
    assert!(bad.stderr.contains("superseded"), "{}", bad.stderr);
}

#[tokio::test]
async fn refusals_outside_the_handlers_are_json_too() {
    let server = CaServer::start(&[], &[]);
    let client = server.client();
    for (method, path, status, code) in [
        (hyper::Method::POST, "/v1/ca", 405, "method_not_allowed"),
        (hyper::Method::GET, "/v1/nothing-here", 404, "not_found"),
    ] {
        let response = client.send(method, path, None, &[]).await.unwrap();
        assert_eq!(response.status.as_u16(), status, "{path}");
        let body: serde_json::Value = serde_json::from_slice(&response.body)
            .unwrap_or_else(|e| panic!("{path}: not JSON ({e}): {:?}", response.body));
        assert_eq!(body["code"], code, "{path}");
    }
}

#[test]
fn malformed_values_and_missing_flags_are_usage_errors_that_name_the_flag() {
    let ca = TestCa::init(&[]);
    for (args, says) in [
        (vec!["revoke", "0a", "--reason", "stolen"], "keyCompromise"),
        (vec!["show", "zz"], "serial"),
        (
            vec![
                "list",
                "--server",
                "http://127.0.0.1:1",
                "--ca-fingerprint",
                "sha256:0000000000000000000000000000000000000000000000000000000000000000",
            ],
            "--server",
        ),
        (
            vec![
                "list",
                "--server",
                "https://127.0.0.1:1",
                "--ca-fingerprint",
                "sha256:0000000000000000000000000000000000000000000000000000000000000000",
            ],
            "--admin-token-file",
        ),
    ] {
        let mut all = args.clone();
        all.extend(["--data-dir", ca.data_dir()]);
        let run = etcd_ca(&all);
        assert_eq!(run.code, Some(2), "{args:?}: {run:?}");
        assert!(run.stderr.contains(says), "{args:?}: {}", run.stderr);
    }
    // No data dir named and none at the default place: how to name one, not how to make one.
    let run = etcd_ca(["list"]);
    assert_eq!(run.code, Some(2), "{run:?}");
    assert!(
        run.stderr.contains("--data-dir") && !run.stderr.contains("etcd-ca init"),
        "{}",
        run.stderr
    );
}

#[test]
fn member_certificates_need_names_and_output_goes_where_it_is_asked() {
    let ca = TestCa::init(&[]);
    let out = ca.tmp.path().join("fresh");
    // An unknown node without --ip/--dns: a peer certificate with no address is useless.
    let run = ca.cli(
        "issue",
        &[
            "--profile",
            "peer",
            "--node",
            "fresh",
            "--out",
            out.to_str().unwrap(),
        ],
    );
    assert_eq!(run.code, Some(1), "{run:?}");
    assert!(run.stderr.contains("give --ip"), "{}", run.stderr);
    assert!(!out.exists(), "nothing is written for a refused request");
    // `crl --out` makes a missing PKI dir, as `issue --out` does.
    let crl = ca.tmp.path().join("new-dir/ca.crl");
    ca.cli("crl", &["--out", crl.to_str().unwrap()]).ok();
    etcd_ca::pki::check_crl_der(&std::fs::read(&crl).unwrap()).unwrap();
    // A reader that stops early (`| head -1`, here one that reads nothing) is not an error.
    let listed = std::process::Command::new("bash")
        .arg("-c")
        .arg(format!(
            "'{}' inspect '{}' | true; echo \"status=${{PIPESTATUS[0]}}\"",
            crate::helpers::ETCD_CA,
            ca.dir.join("ca/gen-1.crt").display()
        ))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&listed.stdout);
    assert!(
        text.contains("status=0"),
        "{text}{}",
        String::from_utf8_lossy(&listed.stderr)
    );
}

#[test]
fn an_admins_refused_request_is_in_the_audit_trail() {
    let server = CaServer::start(&[], &[]);
    let serial = server.remote_issue_client(&server.ca.tmp.path().join("ops"), "ops");
    server.remote(&["revoke", &serial]).ok();
    let err = server.remote(&["revoke", &serial]).fails();
    assert!(err.contains("already_revoked"), "{err}");
    let audit = server.remote(&["audit"]).ok().stdout;
    assert!(
        audit
            .lines()
            .any(|l| l.contains("revoke.refused") && l.contains("admin")),
        "{audit}"
    );
}
