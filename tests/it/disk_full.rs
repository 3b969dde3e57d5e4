//! The disk fills up under the CA and is freed again: the server refuses what it cannot record
//! (5xx, nothing handed out unrecorded), issues again as soon as space is back, without a
//! restart, and every certificate it answered with is in the store.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::helpers::{CaServer, TestCa};

/// A size-limited tmpfs the test mounts (it runs as root, as CI does), unmounted on drop.
pub struct SmallDisk {
    pub dir: PathBuf,
}

impl SmallDisk {
    pub fn mount(dir: PathBuf, size: &str) -> Self {
        std::fs::create_dir_all(&dir).unwrap();
        let status = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(&dir)
            .status()
            .expect("run mount");
        assert!(
            status.success(),
            "this test mounts a small tmpfs and must run as root (as scripts/test does in CI)"
        );
        Self { dir }
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.dir).status();
    }
}

/// Fills the filesystem holding `dir` up to its last byte; returns the filler file.
pub fn fill(dir: &Path) -> PathBuf {
    use std::io::Write;
    let filler = dir.join("filler");
    let mut file = std::fs::File::create(&filler).unwrap();
    let chunk = vec![0u8; 4096];
    while file.write_all(&chunk).is_ok() {}
    while file.write_all(&[0u8]).is_ok() {}
    let _ = file.sync_all();
    filler
}

/// Creates a bootstrap token (its own transaction, not the group committer's).
async fn token(server: &CaServer, n: usize) -> Result<(), u16> {
    let body =
        json!({"node": format!("t{n}"), "profiles": ["client"], "common_name": format!("t{n}")});
    match server
        .admin()
        .post_json::<_, Value>("/v1/tokens", &body)
        .await
    {
        Ok(_) => Ok(()),
        Err(etcd_ca::client::ClientError::Api { status, .. }) => Err(status),
        Err(e) => panic!("{e}; log:\n{}", server.log_text()),
    }
}

async fn issue(server: &CaServer, n: usize) -> Result<String, u16> {
    let body =
        json!({"profile": "client", "node": format!("c{n}"), "common_name": format!("c{n}")});
    match server
        .admin()
        .post_json::<_, Value>("/v1/issue", &body)
        .await
    {
        Ok(answer) => Ok(answer["certificate"]["serial"]
            .as_str()
            .unwrap()
            .to_string()),
        Err(etcd_ca::client::ClientError::Api { status, .. }) => Err(status),
        Err(e) => panic!("{e}; log:\n{}", server.log_text()),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_server_issues_again_once_the_disk_has_room_and_loses_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let disk = SmallDisk::mount(tmp.path().join("disk"), "8m");
    let ca = TestCa::init(&[]);
    // The data dir lives on the small disk.
    let data = disk.dir.join("ca");
    let copy = Command::new("cp")
        .arg("-a")
        .arg(&ca.dir)
        .arg(&data)
        .status()
        .unwrap();
    assert!(copy.success());
    let server = CaServer::start_on(data.clone(), &[]);

    let mut answered = Vec::new();
    for n in 0..5 {
        answered.push(issue(&server, n).await.unwrap());
    }
    let filler = fill(&disk.dir);
    let mut refused = 0;
    for n in 5..40 {
        match issue(&server, n).await {
            Ok(serial) => answered.push(serial),
            Err(status) => {
                assert!(status >= 500, "a full disk is the server's fault: {status}");
                refused += 1;
            }
        }
        if let Err(status) = token(&server, n).await {
            assert!(status >= 500, "a full disk is the server's fault: {status}");
            refused += 1;
        }
        let revoking = Instant::now();
        let _ = server
            .admin()
            .with_timeout(Duration::from_secs(15))
            .post_json::<_, Value>(&format!("/v1/certs/{}/revoke", answered[n % 5]), &json!({}))
            .await;
        // A connection left inside a failed transaction made every later write wait 10 s for
        // its lock ("database is locked").
        assert!(
            revoking.elapsed() < Duration::from_secs(5),
            "round {n}: revoke waited {:?}",
            revoking.elapsed()
        );
    }
    assert!(refused > 0, "the disk never filled up");

    // Space is back: issuing works again within seconds, without a restart.
    std::fs::remove_file(&filler).unwrap();
    let started = Instant::now();
    let mut n = 100;
    loop {
        match issue(&server, n).await {
            Ok(serial) => {
                answered.push(serial);
                break;
            }
            Err(status) => assert!(
                started.elapsed() < Duration::from_secs(15),
                "still refusing ({status}) 15 s after space came back; log:\n{}",
                server.log_text()
            ),
        }
        n += 1;
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    for n in 200..210 {
        answered.push(issue(&server, n).await.unwrap());
        token(&server, n).await.unwrap();
    }

    // Nothing answered is missing.
    let page: serde_json::Value = server.admin().get_json("/v1/certs").await.unwrap();
    assert!(page["next"].is_null(), "one page holds them all");
    let listed: Vec<serde_json::Value> = page["certificates"].as_array().unwrap().clone();
    let stored: std::collections::BTreeSet<&str> =
        listed.iter().filter_map(|c| c["serial"].as_str()).collect();
    for serial in &answered {
        assert!(
            stored.contains(serial.as_str()),
            "{serial} was answered but not stored"
        );
    }
    drop(server);
    drop(disk);
}
