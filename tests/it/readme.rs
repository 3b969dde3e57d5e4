//! The README's own snippets, extracted from README.md (not copied) and run as written: the
//! walkthrough builds a CA and a three-member TLS cluster and revokes a client; the boot-time
//! enrollment block enrolls and renews a node with curl, openssl and jq against a real server.
//! A README edit that breaks a step breaks this test.
//!
//! The walkthrough's members listen on etcd's usual ports (2379/2380) on 127.0.0.11-13, which
//! no other test uses.

use std::path::Path;
use std::process::{Command, Stdio};

use crate::helpers::{require_tool, CaServer, ETCD_CA};

const README: &str = include_str!("../../README.md");

/// The text of the `## heading` section.
fn section(heading: &str) -> &'static str {
    let start = README
        .find(&format!("\n## {heading}\n"))
        .unwrap_or_else(|| panic!("the README has no section {heading:?}"));
    let body = &README[start + 1..];
    let end = body[3..].find("\n## ").map_or(body.len(), |i| i + 3);
    &body[..end]
}

/// The ```sh blocks of a section, in order.
fn sh_blocks(text: &str) -> Vec<String> {
    let mut blocks = Vec::new();
    let mut rest = text;
    while let Some(start) = rest.find("```sh\n") {
        let body = &rest[start + 6..];
        let end = body.find("```").expect("an unterminated code block");
        blocks.push(body[..end].to_string());
        rest = &body[end + 3..];
    }
    blocks
}

/// Runs a bash script in `dir` with the built etcd-ca first on PATH; output goes to files (the
/// background members would hold a pipe open).
fn bash(dir: &Path, script: &str, env: &[(&str, &str)]) -> (bool, String) {
    let bin_dir = Path::new(ETCD_CA).parent().unwrap();
    let path = format!(
        "{}:{}",
        bin_dir.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let log = dir.join("script.log");
    let status = Command::new("bash")
        .arg("-c")
        .arg(script)
        .current_dir(dir)
        .env("PATH", path)
        .env_remove("ETCD_CA_DATA_DIR")
        .env_remove("ETCD_CA_PASSPHRASE")
        .env_remove("ETCD_CA_PASSPHRASE_FILE")
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&log).unwrap())
        .stderr(std::fs::File::create(dir.join("script.err")).unwrap())
        .status()
        .unwrap();
    let output = format!(
        "{}\n--- stderr ---\n{}",
        std::fs::read_to_string(&log).unwrap_or_default(),
        std::fs::read_to_string(dir.join("script.err")).unwrap_or_default()
    );
    (status.success(), output)
}

/// Kills the members the walkthrough started in the background, whatever happens.
struct Members<'a>(&'a Path);

impl Drop for Members<'_> {
    fn drop(&mut self) {
        let pids = std::fs::read_to_string(self.0.join("etcd.pids")).unwrap_or_default();
        for pid in pids.split_whitespace() {
            let _ = Command::new("kill").arg(pid).status();
        }
        // Wait for them to go (then force it), so none outlives the test or its directory.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        for pid in pids.split_whitespace() {
            let proc_dir = Path::new("/proc").join(pid);
            while proc_dir.exists() && std::time::Instant::now() < deadline {
                std::thread::sleep(std::time::Duration::from_millis(50));
            }
            if proc_dir.exists() {
                let _ = Command::new("kill").args(["-KILL", pid]).status();
            }
        }
    }
}

#[test]
fn the_walkthrough_runs_as_written() {
    for tool in ["etcd", "etcdctl", "jq"] {
        require_tool(tool);
    }
    let blocks = sh_blocks(section(
        "Walkthrough: a three-member TLS cluster with the CLI",
    ));
    assert_eq!(
        blocks.len(),
        5,
        "the walkthrough's steps changed (init, issue, start, health, revoke): update this test\n{blocks:#?}"
    );
    let (init, issue, start, health, revoke) =
        (&blocks[0], &blocks[1], &blocks[2], &blocks[3], &blocks[4]);
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let _members = Members(dir);
    // The blocks as written, with the harness's steps between them marked `# harness`.
    let script = format!(
        "set -euo pipefail\n\
         {init}\n{issue}\n{start}\n\
         jobs -p > etcd.pids  # harness\n\
         for try in $(seq 60); do ( {health} ) >/dev/null 2>&1 && break; sleep 0.5; done  # harness\n\
         {health}\n\
         {revoke}\n\
         echo REVOKED  # harness\n\
         if ETCDCTL_API=3 etcdctl --endpoints https://127.0.0.11:2379 --cacert pki/ops/ca.crt \
            --cert pki/ops/client.crt --key pki/ops/client.key --dial-timeout 3s endpoint health; then \
            echo 'the revoked client was let in'; exit 1; fi  # harness\n"
    );
    let (ok, output) = bash(dir, &script, &[]);
    assert!(ok, "the walkthrough failed:\n{output}");
    assert!(output.contains("is healthy"), "{output}");
    assert!(output.contains("REVOKED"), "{output}");
    // init wrote the passphrase it made, readable by its owner only.
    let mode = std::fs::metadata(dir.join("etcd-ca.passphrase"))
        .map(|m| std::os::unix::fs::PermissionsExt::mode(&m.permissions()) & 0o777)
        .unwrap();
    assert_eq!(mode, 0o600);
}

#[test]
fn the_boot_enrollment_block_runs_as_written() {
    for tool in ["curl", "jq", "openssl"] {
        require_tool(tool);
    }
    let blocks = sh_blocks(section("Enrolling a node at boot"));
    assert_eq!(blocks.len(), 1, "{blocks:#?}");
    let server = CaServer::start(&[], &[]);
    let token = server.ca.token(&[
        "--node",
        "n1",
        "--ip",
        "10.0.0.11",
        "--profiles",
        "server,peer",
    ]);
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let script = format!("set -euo pipefail\n{}", blocks[0]);
    let (ok, output) = bash(
        dir,
        &script,
        &[
            ("CA", server.url.as_str()),
            ("FP", server.fingerprint.as_str()),
            ("TOKEN", token.as_str()),
        ],
    );
    assert!(ok, "the enrollment block failed:\n{output}");
    let verify = Command::new("openssl")
        .args(["verify", "-CAfile", "ca.crt", "server.crt", "peer.crt"])
        .current_dir(dir)
        .output()
        .unwrap();
    assert!(verify.status.success(), "{verify:?}");
    etcd_ca::pki::check_crl_der(&std::fs::read(dir.join("ca.crl")).unwrap()).unwrap();
    // Step 5 renewed the server certificate: the CA holds server, peer and the renewal.
    let listed = crate::helpers::etcd_ca([
        "list",
        "--data-dir",
        server.ca.data_dir(),
        "--node",
        "n1",
        "--profile",
        "server",
        "--json",
    ])
    .ok()
    .stdout;
    let listed: Vec<serde_json::Value> = serde_json::from_str(&listed).unwrap();
    assert_eq!(listed.len(), 2, "{listed:#?}");
}
