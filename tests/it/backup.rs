//! Backup of a running CA and restore on a fresh host: a certificate issued before the backup
//! renews against the restored CA.

use std::os::unix::fs::PermissionsExt;

use crate::helpers::{etcd_ca, CaServer};

#[test]
fn a_restored_ca_renews_a_certificate_issued_before_the_backup() {
    let mut server = CaServer::start(&[], &[]);
    let root = server.ca.tmp.path().to_path_buf();
    let pki = root.join("pki");
    let token = server
        .ca
        .token(&["--node", "n1", "--ip", "10.0.0.11", "--profiles", "server"]);
    let agent = |url: &str, fingerprint: &str, extra: &[&str]| {
        let mut args = vec![
            "agent",
            "--once",
            "--server",
            url,
            "--ca-fingerprint",
            fingerprint,
            "--node",
            "n1",
            "--dir",
            pki.to_str().unwrap(),
            "--profiles",
            "server",
        ];
        args.extend_from_slice(extra);
        etcd_ca(&args)
    };
    agent(&server.url, &server.fingerprint, &["--token", &token]).ok();
    let before = std::fs::read_to_string(pki.join("server.crt")).unwrap();

    // Online: the server keeps running (and issuing) while the backup is taken.
    let backup = root.join("ca.backup");
    let written = etcd_ca([
        "backup",
        "--data-dir",
        server.ca.data_dir(),
        "--out",
        backup.to_str().unwrap(),
    ])
    .ok();
    assert!(
        written.stdout.contains("1 CA generations"),
        "{}",
        written.stdout
    );
    assert_eq!(
        std::fs::metadata(&backup).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let after_backup = root.join("later");
    server.ca.issue(
        &after_backup,
        &["--profile", "client", "--node", "later", "--cn", "later"],
    );
    server.stop();

    // A fresh host: restore, serve, renew the certificate issued before the backup.
    let fresh = tempfile::tempdir().unwrap();
    let restored = fresh.path().join("ca");
    let out = etcd_ca([
        "restore",
        "--data-dir",
        restored.to_str().unwrap(),
        "--from",
        backup.to_str().unwrap(),
    ])
    .ok();
    assert!(out.stdout.contains("Restored"), "{}", out.stdout);
    let key_mode = std::fs::metadata(restored.join("ca/gen-1.key"))
        .unwrap()
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(key_mode, 0o600);
    let listed = etcd_ca([
        "list",
        "--data-dir",
        restored.to_str().unwrap(),
        "--node",
        "n1",
    ])
    .ok()
    .stdout;
    let serial =
        etcd_ca::pki::CertSummary::from_der(&etcd_ca::pki::pem_certificates(&before).unwrap()[0])
            .unwrap()
            .serial;
    assert!(listed.contains(&serial), "{listed}");
    let later = etcd_ca([
        "list",
        "--data-dir",
        restored.to_str().unwrap(),
        "--node",
        "later",
    ])
    .ok()
    .stdout;
    assert!(
        later.contains("no certificates match"),
        "what came after the backup is not in it"
    );

    let mut again = CaServer::start_on(restored.clone(), &[]);
    assert_eq!(again.fingerprint, server.fingerprint, "the same CA");
    agent(&again.url, &again.fingerprint, &["--renew-now"]).ok();
    let renewed = std::fs::read_to_string(pki.join("server.crt")).unwrap();
    assert_ne!(renewed, before);
    again.stop();

    // Restore refuses a data dir that holds a CA, and an archive with unexpected files.
    let err = etcd_ca([
        "restore",
        "--data-dir",
        restored.to_str().unwrap(),
        "--from",
        backup.to_str().unwrap(),
    ])
    .fails();
    assert!(err.contains("already holds a CA"), "{err}");
    let evil = fresh.path().join("evil.tar");
    {
        let mut tar = tar::Builder::new(std::fs::File::create(&evil).unwrap());
        let data = b"x";
        let mut header = tar::Header::new_old();
        let name = b"ca/../../escape";
        header.as_old_mut().name[..name.len()].copy_from_slice(name);
        header.set_size(1);
        header.set_mode(0o644);
        header.set_cksum();
        tar.append(&header, &data[..]).unwrap();
        tar.finish().unwrap();
    }
    let target = fresh.path().join("other");
    let err = etcd_ca([
        "restore",
        "--data-dir",
        target.to_str().unwrap(),
        "--from",
        evil.to_str().unwrap(),
    ])
    .fails();
    assert!(err.contains("unexpected file"), "{err}");
    assert!(!target.exists() && !fresh.path().join("escape").exists());
}
