//! The CA key at rest: sealed with a passphrase unless the operator explicitly asks otherwise;
//! the server refuses a key file others can read, and says why.

use std::io::BufRead;
use std::os::unix::fs::PermissionsExt;
use std::process::{Command, Stdio};

use crate::helpers::{Run, TestCa, ETCD_CA};

/// `etcd-ca ARGS...` with only the environment given (no test passphrase).
fn etcd_ca_with(envs: &[(&str, &str)], args: &[&str]) -> Run {
    let out = Command::new(ETCD_CA)
        .args(args)
        .env_remove("ETCD_CA_PASSPHRASE")
        .env_remove("ETCD_CA_PASSPHRASE_FILE")
        .env_remove("ETCD_CA_DATA_DIR")
        .envs(envs.iter().copied())
        .stdin(Stdio::null())
        .output()
        .unwrap();
    Run {
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

#[test]
fn the_ca_key_is_sealed_and_opens_only_with_its_passphrase() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("ca");
    let d = dir.to_str().unwrap();

    let err = etcd_ca_with(&[], &["init", "--data-dir", d]).fails();
    assert!(
        err.contains("--passphrase-file") && err.contains("--insecure-unencrypted-key"),
        "{err}"
    );
    assert!(!dir.exists(), "nothing is created");

    let pass_file = tmp.path().join("pass");
    std::fs::write(&pass_file, "a long enough passphrase\n").unwrap();
    let p = pass_file.to_str().unwrap();
    etcd_ca_with(&[], &["init", "--data-dir", d, "--passphrase-file", p]).ok();
    let key = std::fs::read_to_string(dir.join("ca/gen-1.key")).unwrap();
    assert!(
        key.starts_with("-----BEGIN ETCD-CA ENCRYPTED PRIVATE KEY-----"),
        "{key}"
    );
    assert!(!key.contains("BEGIN PRIVATE KEY"));

    // Signing needs the passphrase: from the file, or from the environment; a wrong one fails.
    let out = tmp.path().join("out");
    let o = out.to_str().unwrap();
    let issue = [
        "issue",
        "--data-dir",
        d,
        "--profile",
        "peer",
        "--node",
        "n1",
        "--ip",
        "10.0.0.1",
        "--out",
        o,
    ];
    let err = etcd_ca_with(&[], &issue).fails();
    assert!(err.contains("the CA key is encrypted"), "{err}");
    let err = etcd_ca_with(&[("ETCD_CA_PASSPHRASE", "not the passphrase")], &issue).fails();
    assert!(err.contains("wrong passphrase"), "{err}");
    etcd_ca_with(
        &[("ETCD_CA_PASSPHRASE", "a long enough passphrase")],
        &issue,
    )
    .ok();
    etcd_ca_with(&[("ETCD_CA_PASSPHRASE_FILE", p)], &issue).ok();
    // Reading needs none.
    etcd_ca_with(&[], &["list", "--data-dir", d]).ok();

    // Unencrypted only on explicit request.
    let plain = tmp.path().join("plain");
    etcd_ca_with(
        &[],
        &[
            "init",
            "--data-dir",
            plain.to_str().unwrap(),
            "--insecure-unencrypted-key",
        ],
    )
    .ok();
    let key = std::fs::read_to_string(plain.join("ca/gen-1.key")).unwrap();
    assert!(key.starts_with("-----BEGIN PRIVATE KEY-----"));
}

#[test]
fn the_server_refuses_a_key_file_others_can_read() {
    let ca = TestCa::init(&[]);
    let key = ca.dir.join("ca/gen-1.key");
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
    let run = crate::helpers::etcd_ca([
        "serve",
        "--data-dir",
        ca.data_dir(),
        "--listen",
        "127.0.0.1:0",
    ]);
    assert_ne!(run.code, Some(0));
    assert!(
        run.stderr
            .contains("is readable by other users (mode 644); run chmod 600 on it"),
        "{}",
        run.stderr
    );
}

#[test]
fn a_first_serve_generates_the_passphrase_file() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("ca");
    let pass = tmp.path().join("ca.passphrase");
    let mut child = Command::new(ETCD_CA)
        .args([
            "serve",
            "--data-dir",
            dir.to_str().unwrap(),
            "--listen",
            "127.0.0.1:0",
        ])
        .arg("--passphrase-file")
        .arg(&pass)
        .env_remove("ETCD_CA_PASSPHRASE")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let status = child.wait().unwrap();
    assert!(line.starts_with("etcd-ca serving https://"), "{line}");
    assert!(status.success());
    assert_eq!(
        std::fs::metadata(&pass).unwrap().permissions().mode() & 0o777,
        0o600
    );
    assert!(std::fs::read_to_string(&pass).unwrap().trim().len() >= 32);
    assert!(std::fs::read_to_string(dir.join("ca/gen-1.key"))
        .unwrap()
        .contains("ENCRYPTED"));
}

#[test]
fn a_second_server_on_the_same_data_dir_is_refused_with_the_first_ones_pid() {
    let server = crate::helpers::CaServer::start(&[], &[]);
    let run = std::process::Command::new(crate::helpers::ETCD_CA)
        .args([
            "serve",
            "--data-dir",
            server.ca.data_dir(),
            "--listen",
            "127.0.0.1:0",
        ])
        .env("ETCD_CA_PASSPHRASE", crate::helpers::PASSPHRASE)
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&run.stderr);
    assert_eq!(run.status.code(), Some(1), "{err}");
    assert!(
        err.contains(&format!("another etcd-ca serve (PID {})", server.pid())),
        "{err}"
    );
    // The first one still serves.
    let health = std::process::Command::new("curl")
        .args(["-sk", &format!("{}/v1/health", server.url)])
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&health.stdout).contains("\"ok\""));
}
