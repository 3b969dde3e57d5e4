//! The admin CLI refuses bad requests with a clear message, a non-zero exit status, and a data
//! dir left exactly as it was.

use crate::helpers::{etcd_ca, snapshot, TestCa};

#[test]
fn init_twice_is_refused_and_changes_nothing() {
    let ca = TestCa::init(&[]);
    let before = snapshot(&ca.dir);
    let err = etcd_ca(["init", "--data-dir", ca.data_dir()]).fails();
    assert!(err.contains("already holds a CA"), "{err}");
    assert_eq!(snapshot(&ca.dir), before);
    // Importing over it is refused the same way.
    let cert = ca.dir.join("ca/gen-1.crt");
    let key = ca.dir.join("ca/gen-1.key");
    let err = etcd_ca([
        "init",
        "--data-dir",
        ca.data_dir(),
        "--import-cert",
        cert.to_str().unwrap(),
        "--import-key",
        key.to_str().unwrap(),
    ])
    .fails();
    assert!(err.contains("already holds a CA"), "{err}");
    assert_eq!(snapshot(&ca.dir), before);
}

#[test]
fn a_san_outside_policy_is_refused_naming_the_address_and_the_rule() {
    let ca = TestCa::init(&[]);
    let before = snapshot(&ca.dir);
    let out = ca.tmp.path().join("out");
    let err = ca
        .cli(
            "issue",
            &[
                "--profile",
                "server",
                "--node",
                "n1",
                "--ip",
                "8.8.8.8",
                "--out",
                out.to_str().unwrap(),
            ],
        )
        .fails();
    assert!(
        err.contains("IP 8.8.8.8 is outside the policy's allowed ranges"),
        "{err}"
    );
    assert!(err.contains("10.0.0.0/8"), "{err}");
    let err = ca
        .cli(
            "issue",
            &[
                "--profile",
                "server",
                "--node",
                "n1",
                "--dns",
                "*.example.com",
                "--out",
                out.to_str().unwrap(),
            ],
        )
        .fails();
    assert!(err.contains("wildcard names are never issued"), "{err}");
    assert_eq!(snapshot(&ca.dir), before);
    assert!(
        !out.exists(),
        "nothing may be written for a refused request"
    );
    let listed = ca.cli("list", &["--json"]).ok().stdout;
    assert_eq!(listed.trim(), "[]");
}

#[test]
fn cn_root_needs_the_explicit_override() {
    let ca = TestCa::init(&[]);
    let before = snapshot(&ca.dir);
    let out = ca.tmp.path().join("out");
    let args = [
        "--profile",
        "client",
        "--node",
        "admin-host",
        "--cn",
        "root",
        "--out",
        out.to_str().unwrap(),
    ];
    let err = ca.cli("issue", &args).fails();
    assert!(err.contains("\"root\" holds every permission"), "{err}");
    assert!(err.contains("--allow-root"), "{err}");
    assert_eq!(snapshot(&ca.dir), before);
    assert!(!out.exists());

    let mut allowed = args.to_vec();
    allowed.push("--allow-root");
    ca.cli("issue", &allowed).ok();
    let cert = std::fs::read_to_string(out.join("client.crt")).unwrap();
    let der = etcd_ca::pki::pem_certificates(&cert).unwrap().remove(0);
    let summary = etcd_ca::pki::CertSummary::from_der(&der).unwrap();
    assert_eq!(summary.subject, "CN=root");
    assert_eq!(summary.extended_key_usages, ["clientAuth"]);
}

#[test]
fn an_unknown_profile_lists_the_known_ones() {
    let ca = TestCa::init(&[]);
    let before = snapshot(&ca.dir);
    let out = ca.tmp.path().join("out");
    let err = ca
        .cli(
            "issue",
            &[
                "--profile",
                "healthcheck",
                "--node",
                "n1",
                "--out",
                out.to_str().unwrap(),
            ],
        )
        .fails();
    assert!(
        err.contains(
            "unknown profile \"healthcheck\" (known profiles: admin, client, peer, server)"
        ),
        "{err}"
    );
    assert_eq!(snapshot(&ca.dir), before);
}

#[test]
fn a_corrupt_policy_file_is_reported_with_file_line_and_key() {
    // In a data dir: the CA refuses to issue and names the line.
    let ca = TestCa::init(&[]);
    let policy_path = ca.dir.join("policy.toml");
    let policy = std::fs::read_to_string(&policy_path).unwrap();
    let corrupt =
        crate::helpers::patch(&policy, "max_lifetime = \"365d\"", "max_lifetime = 365", 1);
    std::fs::write(&policy_path, &corrupt).unwrap();
    let line = corrupt
        .lines()
        .position(|l| l == "max_lifetime = 365")
        .unwrap()
        + 1;
    let before = snapshot(&ca.dir);
    let out = ca.tmp.path().join("out");
    let err = ca
        .cli(
            "issue",
            &[
                "--profile",
                "server",
                "--node",
                "n1",
                "--ip",
                "10.0.0.1",
                "--out",
                out.to_str().unwrap(),
            ],
        )
        .fails();
    let expected = format!(
        "policy file {}, line {line}, key `profiles.server.max_lifetime`",
        policy_path.display()
    );
    assert!(err.contains(&expected), "expected {expected:?} in {err}");
    assert_eq!(snapshot(&ca.dir), before);

    // At init: nothing is created.
    let bad = ca.tmp.path().join("bad.toml");
    std::fs::write(
        &bad,
        "[names]\nip_ranges = [\"10.0.0.0/33\"]\ndns_names = [\"*\"]\n",
    )
    .unwrap();
    let fresh = ca.tmp.path().join("fresh");
    let err = etcd_ca([
        "init",
        "--data-dir",
        fresh.to_str().unwrap(),
        "--policy",
        bad.to_str().unwrap(),
    ])
    .fails();
    assert!(
        err.contains(&format!("policy file {}, line 2", bad.display())),
        "{err}"
    );
    assert!(err.contains("names.ip_ranges"), "{err}");
    assert!(!fresh.exists(), "a refused init creates nothing");
    let leftovers: Vec<_> = std::fs::read_dir(ca.tmp.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains("init-"))
        .collect();
    assert!(
        leftovers.is_empty(),
        "staging dirs left behind: {leftovers:?}"
    );
}

#[test]
fn unknown_serials_and_double_revocation_are_refused() {
    let ca = TestCa::init(&[]);
    let err = ca.cli("show", &["0badc0de"]).fails();
    assert!(err.contains("no certificate with serial 0badc0de"), "{err}");
    let err = ca.cli("revoke", &["0badc0de"]).fails();
    assert!(err.contains("no certificate with serial 0badc0de"), "{err}");
    let err = ca.cli("revoke", &["not-hex"]).fails();
    assert!(err.contains("invalid serial"), "{err}");

    let out = ca.tmp.path().join("out");
    let serial = ca.issue(
        &out,
        &["--profile", "client", "--node", "ci", "--cn", "ci-bot"],
    );
    ca.cli("revoke", &[&serial, "--reason", "keyCompromise"])
        .ok();
    let err = ca.cli("revoke", &[&serial]).fails();
    assert!(err.contains("already revoked"), "{err}");
    let shown = ca.cli("show", &[&serial]).ok().stdout;
    assert!(shown.contains("status:        revoked"), "{shown}");
    assert!(shown.contains("keyCompromise"), "{shown}");
}

#[test]
fn inspect_reports_expiry_with_its_exit_status() {
    let ca = TestCa::init(&[]);
    let out = ca.tmp.path().join("out");
    ca.issue(
        &out,
        &[
            "--profile",
            "peer",
            "--node",
            "n1",
            "--ip",
            "10.0.0.1",
            "--lifetime",
            "10d",
        ],
    );
    let crt = out.join("peer.crt");
    let run = etcd_ca(["inspect", crt.to_str().unwrap(), "--warn", "5d"]).ok();
    assert!(
        run.stdout.contains("subject:    CN=etcd-peer"),
        "{}",
        run.stdout
    );
    assert!(
        run.stdout.contains("EKUs:       serverAuth, clientAuth"),
        "{}",
        run.stdout
    );
    assert!(run.stdout.contains("IP:10.0.0.1"), "{}", run.stdout);
    assert!(run.stdout.contains("status:     ok"), "{}", run.stdout);

    let warned = etcd_ca(["inspect", crt.to_str().unwrap(), "--warn", "30d"]);
    assert_eq!(warned.code, Some(3), "{warned:?}");
    assert!(warned.stdout.contains("EXPIRES SOON"), "{}", warned.stdout);

    // Bundles list every certificate; a file with no certificate is an error, not a warning.
    let ca_crt = out.join("ca.crt");
    let run = etcd_ca(["inspect", ca_crt.to_str().unwrap()]).ok();
    assert!(run.stdout.contains("CA:         yes"), "{}", run.stdout);
    let key = out.join("peer.key");
    let err = etcd_ca(["inspect", key.to_str().unwrap()]);
    assert_eq!(err.code, Some(1));
    assert!(
        err.stderr.contains("no PEM CERTIFICATE block"),
        "{}",
        err.stderr
    );
}

#[test]
fn list_filters_by_expiry_node_and_profile() {
    let ca = TestCa::init(&[]);
    let out = ca.tmp.path().join("out");
    let short = ca.issue(
        &out,
        &[
            "--profile",
            "server",
            "--node",
            "n1",
            "--ip",
            "10.0.0.1",
            "--lifetime",
            "7d",
        ],
    );
    let long = ca.issue(&out, &["--profile", "peer", "--node", "n1"]);
    let other = ca.issue(
        &out,
        &["--profile", "server", "--node", "n2", "--ip", "10.0.0.2"],
    );

    let soon = ca.cli("list", &["--expiring-within", "30d"]).ok().stdout;
    assert!(
        soon.contains(&short) && !soon.contains(&long) && !soon.contains(&other),
        "{soon}"
    );

    let n1 = ca.cli("list", &["--node", "n1", "--json"]).ok().stdout;
    let n1: serde_json::Value = serde_json::from_str(&n1).unwrap();
    assert_eq!(n1.as_array().unwrap().len(), 2);
    // The peer certificate was issued without --ip: the node's registered address was used.
    let peer = n1
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["profile"] == "peer")
        .unwrap();
    assert_eq!(peer["sans"], serde_json::json!(["IP:10.0.0.1"]));

    let servers = ca.cli("list", &["--profile", "server"]).ok().stdout;
    assert!(servers.contains(&short) && servers.contains(&other) && !servers.contains(&long));
    assert!(servers.starts_with("SERIAL"), "{servers}");
}

#[test]
fn etcd_flags_warns_about_missing_files_and_prints_plain_lines_for_scripts() {
    let ca = TestCa::init(&[]);
    let empty = ca.tmp.path().join("empty");
    std::fs::create_dir(&empty).unwrap();
    let run = etcd_ca([
        "etcd-flags",
        "--node",
        "n1",
        "--dir",
        empty.to_str().unwrap(),
    ])
    .ok();
    assert!(
        run.stderr.contains("warning:") && run.stderr.contains("server.crt"),
        "{}",
        run.stderr
    );
    let err = etcd_ca([
        "etcd-flags",
        "--node",
        "n1",
        "--dir",
        empty.to_str().unwrap(),
        "--check",
    ])
    .fails();
    assert!(err.contains("has no server.crt"), "{err}");

    // With the files in place: no warning, and one plain flag per line.
    let pki = ca.tmp.path().join("pki");
    ca.issue(
        &pki,
        &["--profile", "server", "--node", "n1", "--ip", "10.0.0.1"],
    );
    ca.issue(
        &pki,
        &["--profile", "peer", "--node", "n1", "--ip", "10.0.0.1"],
    );
    ca.write_crl(&pki.join("ca.crl"));
    let run = etcd_ca([
        "etcd-flags",
        "--node",
        "n1",
        "--dir",
        pki.to_str().unwrap(),
        "--format",
        "lines",
        "--check",
    ])
    .ok();
    assert!(run.stderr.is_empty(), "{}", run.stderr);
    assert!(run
        .stdout
        .lines()
        .all(|l| l.starts_with("--") && !l.contains(' ') && !l.ends_with('\\')));
    assert!(run.stdout.contains("--peer-cert-allowed-cn=etcd-peer\n"));

    // One spelling or the other: --profile and --profiles are both taken.
    etcd_ca([
        "token",
        "create",
        "--data-dir",
        ca.data_dir(),
        "--node",
        "n2",
        "--profile",
        "server",
    ])
    .ok();
}

#[test]
fn inspect_reads_the_der_crl_etcd_reads() {
    let ca = TestCa::init(&[]);
    let out = ca.tmp.path().join("c");
    let serial = ca.issue(&out, &["--profile", "client", "--node", "c", "--cn", "c"]);
    ca.cli("revoke", &[&serial]).ok();
    let crl = ca.tmp.path().join("ca.crl");
    ca.write_crl(&crl);
    // A fresh CRL with the default window is fine (its lifetime is days, not the 30 days
    // certificates are warned about).
    let run = etcd_ca(["inspect", crl.to_str().unwrap()]).ok();
    for expected in [
        "(CRL)",
        "issuer:      CN=etcd-ca generation 1",
        "revoked:     1",
        "status:      ok",
    ] {
        assert!(run.stdout.contains(expected), "{expected}: {}", run.stdout);
    }
    // nextUpdate inside the warning window: exit 3, as for a certificate.
    let run = etcd_ca(["inspect", crl.to_str().unwrap(), "--warn", "3650d"]);
    assert_eq!(run.code, Some(3), "{}", run.stdout);
    assert!(run.stdout.contains("NEXT UPDATE SOON"), "{}", run.stdout);
}

#[test]
fn the_audit_trail_names_the_revoked_node_and_keeps_its_columns() {
    let ca = TestCa::init(&[]);
    let out = ca.tmp.path().join("c");
    let serial = ca.issue(&out, &["--profile", "client", "--node", "c1", "--cn", "c1"]);
    ca.cli("revoke", &[&serial]).ok();
    let events: serde_json::Value =
        serde_json::from_str(&ca.cli("audit", &["--json"]).ok().stdout).unwrap();
    let revoke = events
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["action"] == "revoke")
        .unwrap();
    assert_eq!(revoke["node"], "c1");
    let text = ca.cli("audit", &[]).ok().stdout;
    let columns: std::collections::BTreeSet<usize> =
        text.lines().filter_map(|l| l.find("node=")).collect();
    assert_eq!(
        columns.len(),
        1,
        "node= at one column in every line:\n{text}"
    );
}
