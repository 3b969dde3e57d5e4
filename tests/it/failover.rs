//! Several servers of one CA behind one `--server` list, as an operator runs them: the CLI and
//! the agent move on when a server is down or answers 5xx, and stop at a refusal (4xx), which
//! is the CA's answer wherever it came from.
//!
//! The second server is the same CA restored from a backup of the first (same keys, same
//! fingerprint, its own database), on a small disk the test can fill.

use crate::disk_full::{fill, SmallDisk};
use crate::helpers::{admin_cli, etcd_ca, run_agent_once, CaServer};

#[test]
fn the_cli_and_the_agent_move_on_from_a_dead_or_failing_server_but_not_from_a_refusal() {
    let a = CaServer::start(&[], &[]);
    let root = a.ca.tmp.path().to_path_buf();
    let pki = root.join("pki");
    let token =
        a.ca.token(&["--node", "n1", "--ip", "10.0.0.11", "--profiles", "server"]);
    let agent = |servers: &str, extra: &[&str]| {
        run_agent_once(servers, &a.fingerprint, "n1", &pki, "server", extra)
    };
    agent(&a.url, &["--token", &token]).ok();
    let enrolled = std::fs::read_to_string(pki.join("server.crt")).unwrap();

    // B: a copy of the CA (A's admin token included) on an 8 MiB disk, with a token of its own.
    let backup = root.join("ca.backup");
    a.remote(&["backup", "--out", backup.to_str().unwrap()])
        .ok();
    let disk = SmallDisk::mount(root.join("small-disk"), "8M");
    let b_dir = disk.dir.join("ca");
    // A planned copy, nothing happened since the backup: the tokens stay valid on both.
    etcd_ca([
        "restore",
        "--no-crl",
        "--keep-tokens",
        "--data-dir",
        b_dir.to_str().unwrap(),
        "--from",
        backup.to_str().unwrap(),
    ])
    .ok();
    let mut b = CaServer::start_on(b_dir, &[]);
    assert_eq!(b.fingerprint, a.fingerprint, "one CA");
    let fp = a.fingerprint.clone();

    // A refusal is the answer: A does not know B's own token, and B is never asked.
    let refused = admin_cli(
        &format!("{},{}", a.url, b.url),
        &fp,
        &b.admin_token_file,
        &["list"],
    )
    .fails();
    assert!(refused.contains("admin_token_invalid"), "{refused}");
    let a_addr = a.url.trim_start_matches("https://");
    assert!(
        refused.contains(&format!("{a_addr} refused")),
        "the refusal names the server: {refused}"
    );
    admin_cli(
        &format!("{},{}", b.url, a.url),
        &fp,
        &b.admin_token_file,
        &["list"],
    )
    .ok();

    // A 5xx is not: B's disk is full, so it cannot record what it would sign; A issues.
    let filler = fill(&disk.dir);
    let issued = admin_cli(
        &format!("{},{}", b.url, a.url),
        &fp,
        &a.admin_token_file,
        &[
            "issue",
            "--profile",
            "client",
            "--node",
            "ops",
            "--cn",
            "ops",
            "--out",
            root.join("ops").to_str().unwrap(),
        ],
    )
    .ok();
    let serial = issued
        .stdout
        .split_whitespace()
        .find(|w| w.len() >= 30 && w.bytes().all(|c| c.is_ascii_hexdigit()))
        .unwrap_or_else(|| panic!("no serial in {}", issued.stdout))
        .to_string();
    a.remote(&["show", &serial]).ok();
    std::fs::remove_file(filler).unwrap();

    // A dead server is skipped: with B stopped, the agent renews through A.
    b.stop();
    agent(&format!("{},{}", b.url, a.url), &["--renew-now"]).ok();
    let renewed = std::fs::read_to_string(pki.join("server.crt")).unwrap();
    assert_ne!(renewed, enrolled, "the agent renewed");
}
