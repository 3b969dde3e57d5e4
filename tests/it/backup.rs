//! Backup of a running CA and restore on a fresh host: a certificate issued before the backup
//! renews against the restored CA.

use std::os::unix::fs::PermissionsExt;

use crate::helpers::{etcd_ca, run_agent_once, CaServer};

#[test]
fn a_restored_ca_renews_a_certificate_issued_before_the_backup() {
    let mut server = CaServer::start(&[], &[]);
    let root = server.ca.tmp.path().to_path_buf();
    let pki = root.join("pki");
    let token = server
        .ca
        .token(&["--node", "n1", "--ip", "10.0.0.11", "--profiles", "server"]);
    let agent = |url: &str, fingerprint: &str, extra: &[&str]| {
        run_agent_once(url, fingerprint, "n1", &pki, "server", extra)
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
        written.stdout.contains("1 CA generation,"),
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
        "--no-crl",
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

    // Without --crl or --no-crl, restore names both, and touches nothing.
    let err = etcd_ca([
        "restore",
        "--data-dir",
        restored.to_str().unwrap(),
        "--from",
        backup.to_str().unwrap(),
    ])
    .fails();
    assert!(err.contains("--crl <CRL>|--no-crl"), "{err}");

    // Restore refuses a data dir that holds a CA, and an archive with unexpected files.
    let err = etcd_ca([
        "restore",
        "--no-crl",
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
        "--no-crl",
        "--data-dir",
        target.to_str().unwrap(),
        "--from",
        evil.to_str().unwrap(),
    ])
    .fails();
    assert!(err.contains("unexpected file"), "{err}");
    assert!(!target.exists() && !fresh.path().join("escape").exists());
}

#[test]
fn an_admin_takes_a_backup_through_the_server_and_it_restores_on_a_fresh_host() {
    let server = CaServer::start(&[], &[]);
    let root = server.ca.tmp.path().to_path_buf();
    let serial = server.remote_issue_client(&root.join("ops"), "ops");

    // Without an admin token: refused, nothing written.
    let refused = root.join("refused.backup");
    let err = etcd_ca([
        "backup",
        "--server",
        &server.url,
        "--ca-fingerprint",
        &server.fingerprint,
        "--out",
        refused.to_str().unwrap(),
    ])
    .fails();
    assert!(err.contains("401") || err.contains("admin"), "{err}");
    assert!(!refused.exists());

    let backup = root.join("remote.backup");
    let written = server
        .remote(&["backup", "--out", backup.to_str().unwrap()])
        .ok();
    assert!(
        written.stdout.contains("1 CA generation,")
            && written.stdout.contains("etcd-ca.db")
            && written.stdout.contains("ca/gen-1.key"),
        "{}",
        written.stdout
    );
    assert_eq!(
        std::fs::metadata(&backup).unwrap().permissions().mode() & 0o777,
        0o600
    );
    // An earlier backup is kept unless replacing it is asked for.
    let before = std::fs::read(&backup).unwrap();
    let err = server
        .remote(&["backup", "--out", backup.to_str().unwrap()])
        .fails();
    assert!(err.contains("exists") && err.contains("--force"), "{err}");
    assert_eq!(std::fs::read(&backup).unwrap(), before);
    server
        .remote(&["backup", "--out", backup.to_str().unwrap(), "--force"])
        .ok();
    let audit = server.remote(&["audit"]).ok().stdout;
    assert!(
        audit
            .lines()
            .any(|l| l.contains("backup") && l.contains("admin")),
        "{audit}"
    );

    let fresh = tempfile::tempdir().unwrap();
    let restored = fresh.path().join("ca");
    etcd_ca([
        "restore",
        "--no-crl",
        "--data-dir",
        restored.to_str().unwrap(),
        "--from",
        backup.to_str().unwrap(),
    ])
    .ok();
    let listed = etcd_ca(["list", "--data-dir", restored.to_str().unwrap()])
        .ok()
        .stdout;
    assert!(listed.contains(&serial), "{listed}");
    let again = CaServer::start_on(restored, &[]);
    assert_eq!(again.fingerprint, server.fingerprint, "the same CA");
}

/// `etcd-ca restore` of `archive` into a new dir; its stderr, after checking it failed and
/// left nothing.
fn restore_refused(
    root: &std::path::Path,
    archive: &std::path::Path,
    env: &[(&str, &str)],
) -> String {
    let target = root.join("restored");
    let run = std::process::Command::new(crate::helpers::ETCD_CA)
        .args([
            "restore",
            "--no-crl",
            "--data-dir",
            target.to_str().unwrap(),
            "--from",
        ])
        .arg(archive)
        .env("ETCD_CA_PASSPHRASE", crate::helpers::PASSPHRASE)
        .envs(env.iter().copied())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&run.stderr).into_owned();
    assert_eq!(run.status.code(), Some(1), "{err}");
    assert!(!target.exists(), "nothing is left behind: {err}");
    err
}

/// The files of a real backup, by name.
fn unpack(archive: &std::path::Path) -> Vec<(String, Vec<u8>)> {
    use std::io::Read;
    let mut tar = tar::Archive::new(std::fs::File::open(archive).unwrap());
    tar.entries()
        .unwrap()
        .map(|e| {
            let mut e = e.unwrap();
            let name = e.path().unwrap().to_string_lossy().into_owned();
            let mut bytes = Vec::new();
            e.read_to_end(&mut bytes).unwrap();
            (name, bytes)
        })
        .collect()
}

fn pack(path: &std::path::Path, files: &[(String, Vec<u8>)], symlink: Option<(&str, &str)>) {
    let mut tar = tar::Builder::new(std::fs::File::create(path).unwrap());
    for (name, bytes) in files {
        let mut header = tar::Header::new_gnu();
        header.set_size(bytes.len() as u64);
        header.set_mode(0o600);
        header.set_cksum();
        tar.append_data(&mut header, name, &bytes[..]).unwrap();
    }
    if let Some((name, target)) = symlink {
        let mut header = tar::Header::new_gnu();
        header.set_entry_type(tar::EntryType::Symlink);
        header.set_size(0);
        header.set_mode(0o777);
        tar.append_link(&mut header, name, target).unwrap();
    }
    tar.finish().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restore_refuses_malicious_archives_and_a_wrong_passphrase() {
    let ca = crate::helpers::TestCa::init(&[]);
    let root = ca.tmp.path();
    let backup = root.join("ca.backup");
    ca.cli("backup", &["--out", backup.to_str().unwrap()]).ok();
    let files = unpack(&backup);
    let without = |skip: &str| -> Vec<(String, Vec<u8>)> {
        files.iter().filter(|(n, _)| n != skip).cloned().collect()
    };

    // The key, or the database, as a symlink to a file elsewhere on the host.
    for name in ["ca/gen-1.key", "etcd-ca.db"] {
        let evil = root.join("symlink.tar");
        pack(&evil, &without(name), Some((name, "/etc/hostname")));
        let err = restore_refused(root, &evil, &[]);
        assert!(err.contains("not a regular file"), "{name}: {err}");
    }

    // A database whose generation points at a key outside the data dir.
    let unpacked = root.join("unpacked.db");
    let db = &files.iter().find(|(n, _)| n == "etcd-ca.db").unwrap().1;
    std::fs::write(&unpacked, db).unwrap();
    {
        use sqlx::ConnectOptions;
        let mut conn = sqlx::sqlite::SqliteConnectOptions::new()
            .filename(&unpacked)
            .connect()
            .await
            .unwrap();
        sqlx::query("UPDATE ca_generations SET key_file = '/etc/hostname'")
            .execute(&mut conn)
            .await
            .unwrap();
    }
    let mut tampered = without("etcd-ca.db");
    tampered.push(("etcd-ca.db".into(), std::fs::read(&unpacked).unwrap()));
    let evil = root.join("outside.tar");
    pack(&evil, &tampered, None);
    let err = restore_refused(root, &evil, &[]);
    assert!(err.contains("\"/etc/hostname\""), "{err}");

    // Not a backup at all.
    let text = root.join("notes.txt");
    std::fs::write(&text, "these are not the droids".repeat(40)).unwrap();
    let err = restore_refused(root, &text, &[]);
    assert!(err.contains("is not an etcd-ca backup"), "{err}");
    assert!(!err.contains("numeric field"), "{err}");

    // The genuine backup with the wrong passphrase: its key would not open.
    let err = restore_refused(
        root,
        &backup,
        &[("ETCD_CA_PASSPHRASE", "not the passphrase at all")],
    );
    assert!(err.contains("passphrase"), "{err}");
}

/// Runs `etcd-ca ARGS` to completion; whether it succeeded and its peak RSS in KiB (its
/// high-water mark, read every 2 ms while it runs: it only grows).
fn run_measured(args: &[&str]) -> (bool, i64) {
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_etcd-ca"))
        .args(args)
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut peak = 0;
    loop {
        if let Some(kib) = std::fs::read_to_string(format!("/proc/{}/status", child.id()))
            .ok()
            .and_then(|s| vm_hwm(&s))
        {
            peak = peak.max(kib);
        }
        if let Some(status) = child.try_wait().unwrap() {
            return (status.success(), peak);
        }
        std::thread::sleep(std::time::Duration::from_millis(2));
    }
}

fn vm_hwm(status: &str) -> Option<i64> {
    status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|kib| kib.parse().ok())
}

fn peak_rss_kib(pid: u32) -> i64 {
    vm_hwm(&std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap()).unwrap()
}

/// A store larger than either process may grow: the server streams the archive from a file
/// and the CLI streams it to one, so neither holds it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backup_larger_than_the_memory_bound_streams_through_server_and_cli() {
    const BOUND_KIB: i64 = 96 * 1024;
    let server = CaServer::start(&[], &[]);
    let root = server.ca.tmp.path().to_path_buf();
    server.remote_issue_client(&root.join("seed"), "seed");
    // 30,000 rows of 8 KiB (a long chain's PEM), multiplied from the real one in SQL.
    {
        use sqlx::Connection;
        let db = std::path::Path::new(server.ca.data_dir()).join("etcd-ca.db");
        let mut conn = sqlx::SqliteConnection::connect(&format!("sqlite://{}", db.display()))
            .await
            .unwrap();
        sqlx::query(
            "WITH RECURSIVE k(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM k WHERE i < 30000)
             INSERT INTO certificates (serial, ca_generation, profile, node, subject, common_name,
                                       sans, key_type, public_key_sha256, not_before, not_after,
                                       pem, status, issued_at, seq)
             SELECT lower(hex(randomblob(16))), t.ca_generation, t.profile, t.node, t.subject,
                    t.common_name, t.sans, t.key_type, t.public_key_sha256, t.not_before,
                    t.not_after, hex(randomblob(4096)), 'valid', t.issued_at, 1000 + i
               FROM k, (SELECT * FROM certificates WHERE node = 'seed') AS t",
        )
        .execute(&mut conn)
        .await
        .unwrap();
        conn.close().await.unwrap();
    }
    let backup = root.join("big.backup");
    let (status, cli_peak) = tokio::task::block_in_place(|| {
        run_measured(&[
            "backup",
            "--server",
            &server.url,
            "--ca-fingerprint",
            &server.fingerprint,
            "--admin-token-file",
            server.admin_token_file.to_str().unwrap(),
            "--out",
            backup.to_str().unwrap(),
        ])
    });
    assert!(status, "the backup failed");
    let size_kib = std::fs::metadata(&backup).unwrap().len() as i64 / 1024;
    assert!(
        size_kib > 2 * BOUND_KIB,
        "the archive is only {size_kib} KiB"
    );
    assert!(
        cli_peak < BOUND_KIB,
        "the CLI peaked at {cli_peak} KiB for a {size_kib} KiB archive"
    );
    let server_peak = peak_rss_kib(server.pid());
    assert!(
        server_peak < BOUND_KIB,
        "the server peaked at {server_peak} KiB for a {size_kib} KiB archive"
    );
    eprintln!("archive {size_kib} KiB, CLI peak {cli_peak} KiB, server peak {server_peak} KiB");
    let names = etcd_ca::authority::archive_names(std::fs::File::open(&backup).unwrap()).unwrap();
    assert_eq!(names[0], "etcd-ca.db", "{names:?}");
}

/// Whether the DER CRL lists `serial`, and its number.
fn crl_lists(der: &[u8], serial: &str) -> (bool, u64) {
    let (_, crl) = etcd_ca::pki::crl_contents(der).unwrap();
    (
        crl.revoked.iter().any(|(s, _, _)| s == serial),
        crl.number.unwrap(),
    )
}

/// The host is lost after revocations the backup does not hold: a restore says so, and with
/// the CRL the members still have it re-applies them (never silently un-revoking).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restore_re_applies_revocations_made_after_the_backup_from_the_crl() {
    let mut server = CaServer::start(&[], &[]);
    let root = server.ca.tmp.path().to_path_buf();
    let issue = |node: &str| server.remote_issue_client(&root.join(node), node);
    let revoke = |serial: &str| {
        server
            .remote(&["revoke", serial, "--reason", "keyCompromise"])
            .ok();
    };
    let kept = issue("kept");
    let early = issue("early");
    let late = issue("late");
    revoke(&early);
    let backup = root.join("ca.backup");
    server
        .remote(&["backup", "--out", backup.to_str().unwrap()])
        .ok();
    // After the backup: one more revocation, and a certificate issued and revoked.
    revoke(&late);
    let after = issue("after");
    revoke(&after);
    let crl_file = root.join("ca.crl");
    server
        .remote(&["crl", "--out", crl_file.to_str().unwrap()])
        .ok();
    let (_, published_number) = crl_lists(&std::fs::read(&crl_file).unwrap(), &late);
    server.stop();

    let fresh = tempfile::tempdir().unwrap();
    let restore = |dir: &str, crl: Option<&std::path::Path>| {
        let target = fresh.path().join(dir);
        let mut args = vec![
            "restore".to_string(),
            "--data-dir".into(),
            target.display().to_string(),
            "--from".into(),
            backup.display().to_string(),
        ];
        match crl {
            Some(crl) => args.extend(["--crl".into(), crl.display().to_string()]),
            None => args.push("--no-crl".into()),
        }
        (target, etcd_ca(&args))
    };
    let status_in = |dir: &std::path::Path, serial: &str| {
        let shown = etcd_ca([
            "show",
            serial,
            "--json",
            "--data-dir",
            dir.to_str().unwrap(),
        ])
        .ok()
        .stdout;
        let record: serde_json::Value = serde_json::from_str(&shown).unwrap();
        record["status"].as_str().unwrap().to_string()
    };

    // Neither --crl nor --no-crl: a usage error, nothing restored.
    let bare = fresh.path().join("bare");
    let run = std::process::Command::new(crate::helpers::ETCD_CA)
        .args(["restore", "--data-dir", bare.to_str().unwrap(), "--from"])
        .arg(&backup)
        .output()
        .unwrap();
    assert_eq!(run.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&run.stderr).contains("--crl"));
    assert!(!bare.exists());

    // With --no-crl: restored, and told in so many words what is undone.
    let (plain, run) = restore("plain", None);
    let run = run.ok();
    assert!(run.stderr.contains("are undone"), "{}", run.stderr);
    assert!(run.stdout.contains("knows nothing after"), "{}", run.stdout);
    assert_eq!(status_in(&plain, &late), "valid", "the backup predates it");

    // A CRL of another CA is refused, and nothing is left behind.
    let other = crate::helpers::TestCa::init(&[]);
    let foreign = root.join("foreign.crl");
    other.write_crl(&foreign);
    let (refused_dir, run) = restore("refused", Some(&foreign));
    let err = run.fails();
    assert!(err.contains("not signed by this CA"), "{err}");
    assert!(!refused_dir.exists());

    // With the members' CRL: every revocation holds again.
    let (recovered, run) = restore("recovered", Some(&crl_file));
    let out = run.ok().stdout;
    assert!(
        out.contains(&format!(
            "1 certificate revoked again, 1 revoked already, 1 issued after the backup kept revoked (etcd's CRL lists them): {after}"
        )),
        "{out}"
    );
    // The backup's tokens no longer open anything: the CA does not know what they did since.
    assert!(out.contains("Revoked the backup's 1 admin token"), "{out}");
    assert_eq!(status_in(&recovered, &late), "revoked");
    assert_eq!(status_in(&recovered, &early), "revoked");
    assert_eq!(status_in(&recovered, &kept), "valid");
    let trail = etcd_ca(["audit", "--data-dir", recovered.to_str().unwrap()])
        .ok()
        .stdout;
    assert!(
        trail
            .lines()
            .any(|l| l.contains("restore") && l.contains("re-applied from a CRL")),
        "{trail}"
    );
    let again = CaServer::start_on(recovered, &[]);
    let stale = crate::helpers::admin_cli(
        &again.url,
        &again.fingerprint,
        &server.admin_token_file,
        &["list"],
    )
    .fails();
    assert!(stale.contains("admin_token_invalid"), "{stale}");
    // A refused revocation names its serial in the audit trail's column.
    let refused = again
        .remote(&["revoke", &early, "--reason", "keyCompromise"])
        .fails();
    assert!(refused.contains("already revoked"), "{refused}");
    let trail: Vec<serde_json::Value> =
        serde_json::from_str(&again.remote(&["audit", "--json"]).ok().stdout).unwrap();
    assert!(
        trail
            .iter()
            .any(|e| e["action"] == "revoke.refused" && e["serial"] == early.as_str()),
        "{trail:?}"
    );
    let crl = again.client().crl(None).await.unwrap();
    for serial in [&early, &late, &after] {
        assert!(crl_lists(&crl, serial).0, "{serial} is not in the new CRL");
    }
    assert!(!crl_lists(&crl, &kept).0);
    let (_, number) = crl_lists(&crl, &kept);
    assert!(
        number > published_number,
        "CRL number {number} after {published_number}"
    );
}
