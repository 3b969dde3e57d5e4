//! Faults that retrying cannot fix stop the agent at once with an error that names the cause,
//! with `--once` and as a daemon, and leave nothing behind; signals stop it within a second even
//! in the middle of a request, and an enrollment cut short resumes with the same key.

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::agent_faults::{impostor, Answer};
use crate::helpers::{snapshot, wait_for, CaServer, ETCD_CA};

/// Runs the agent for node `node` into `dir` with `extra` flags; `--once` unless `daemon`.
fn agent(server: &CaServer, node: &str, dir: &Path, daemon: bool, extra: &[&str]) -> Output {
    let mut command = Command::new(ETCD_CA);
    command
        .args(["agent", "--server", &server.url, "--node", node])
        .arg("--dir")
        .arg(dir)
        .args(["--profiles", "server"])
        .args(extra)
        .stdin(Stdio::null());
    if !daemon {
        command.arg("--once");
    }
    if !extra.contains(&"--ca-fingerprint") {
        command.args(["--ca-fingerprint", &server.fingerprint]);
    }
    let child = command
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // A daemon must stop by itself on these faults: give it 20 s, then fail.
    let started = Instant::now();
    let pid = child.id();
    let waiter = std::thread::spawn(move || child.wait_with_output().unwrap());
    while !waiter.is_finished() {
        if started.elapsed() > Duration::from_secs(20) {
            let _ = Command::new("kill").arg(pid.to_string()).status();
            panic!("the agent kept running on a fault retrying cannot fix");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    waiter.join().unwrap()
}

/// Asserts the agent failed with exit status 1 and a message containing every `expected`.
fn failed_with(out: &Output, expected: &[&str]) {
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    for e in expected {
        assert!(err.contains(e), "expected {e:?} in:\n{err}");
    }
    assert!(
        !err.contains("retrying"),
        "a permanent fault is not retried:\n{err}"
    );
}

fn nothing_in(dir: &Path) {
    let files = snapshot(dir);
    assert!(files.is_empty(), "nothing may be written: {files:?}");
}

#[test]
fn a_pin_that_does_not_match_stops_the_agent_and_writes_nothing() {
    let server = CaServer::start(&[], &[]);
    let token = server.ca.token(&["--node", "n1", "--profiles", "server"]);
    let wrong = format!("sha256:{}", "ab".repeat(32));
    for daemon in [false, true] {
        let dir = server.ca.tmp.path().join(format!("pki-{daemon}"));
        let out = agent(
            &server,
            "n1",
            &dir,
            daemon,
            &["--token", &token, "--ca-fingerprint", &wrong],
        );
        // It names what the server presents instead.
        failed_with(
            &out,
            &[
                &format!("is not the CA pinned by --ca-fingerprint {wrong}"),
                &format!("it presents CA {}", server.fingerprint),
            ],
        );
        assert!(!dir.exists(), "the dir it made is gone again");
    }
}

#[test]
fn a_dir_that_cannot_be_written_stops_the_agent() {
    let server = CaServer::start(&[], &[]);
    let not_a_dir = server.ca.tmp.path().join("file");
    std::fs::write(&not_a_dir, "x").unwrap();
    let dir = not_a_dir.join("pki");
    for daemon in [false, true] {
        let out = agent(&server, "n1", &dir, daemon, &["--token", "etcdca_x_y"]);
        failed_with(&out, &[&format!("cannot use --dir {}", dir.display())]);
        assert!(!dir.exists());
    }
}

#[test]
fn a_missing_or_unreadable_token_file_is_named() {
    let server = CaServer::start(&[], &[]);
    let missing = server.ca.tmp.path().join("no-such-token");
    let a_directory = server.ca.tmp.path().join("token-dir");
    std::fs::create_dir(&a_directory).unwrap();
    for (file, reason) in [(&missing, "it does not exist"), (&a_directory, "directory")] {
        for daemon in [false, true] {
            let dir = server.ca.tmp.path().join(format!("pki-{daemon}"));
            let out = agent(
                &server,
                "n1",
                &dir,
                daemon,
                &["--token-file", file.to_str().unwrap()],
            );
            failed_with(
                &out,
                &[
                    &format!("cannot read the --token-file {}", file.display()),
                    reason,
                ],
            );
            nothing_in(&dir);
        }
    }
}

#[test]
fn a_token_for_another_node_is_refused_and_not_spent() {
    let server = CaServer::start(&[], &[]);
    let token = server.ca.token(&["--node", "n2", "--profiles", "server"]);
    let dir = server.ca.tmp.path().join("pki");
    let out = agent(&server, "n1", &dir, true, &["--token", &token]);
    failed_with(
        &out,
        &["node_mismatch", "this token is for node n2, not n1"],
    );
    nothing_in(&dir);
    // The token was not consumed: the right node still enrolls with it.
    let out = agent(&server, "n2", &dir, false, &["--token", &token]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(dir.join("server.crt").exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigint_stops_an_enrollment_in_flight_at_once_and_the_next_run_keeps_its_key() {
    let server = CaServer::start(&[], &[]);
    // A CA endpoint that never answers the enrollment.
    let answer: Arc<dyn Fn(&str) -> Answer + Send + Sync> = Arc::new(|path: &str| match path {
        "/v1/enroll" => (0, "", Vec::new()),
        _ => (
            200,
            "application/json",
            br#"{"status":"ok","ca_fingerprint":""}"#.to_vec(),
        ),
    });
    let url = impostor(&server.ca.dir, answer).await;
    let dir = server.ca.tmp.path().join("pki");
    let token = server.ca.token(&["--node", "n1", "--profiles", "server"]);
    let mut child = tokio::process::Command::new(ETCD_CA)
        .args([
            "agent",
            "--server",
            &url,
            "--node",
            "n1",
            "--profiles",
            "server",
        ])
        .args(["--ca-fingerprint", &server.fingerprint, "--token", &token])
        .arg("--dir")
        .arg(&dir)
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let pending = dir.join(".server.key.pending");
    wait_for("the enrollment to be sent", Duration::from_secs(20), || {
        pending.exists()
    });
    tokio::time::sleep(Duration::from_millis(500)).await;
    let key = std::fs::read_to_string(&pending).unwrap();
    let signalled = Instant::now();
    let _ = Command::new("kill")
        .args(["-INT", &child.id().unwrap().to_string()])
        .status();
    let status = tokio::time::timeout(Duration::from_secs(5), child.wait())
        .await
        .expect("the agent did not stop on SIGINT")
        .unwrap();
    let took = signalled.elapsed();
    assert!(took < Duration::from_secs(1), "SIGINT took {took:?}");
    assert_eq!(status.code(), Some(0));
    let files: Vec<_> = snapshot(&dir).into_keys().collect();
    assert_eq!(
        files,
        vec![std::path::PathBuf::from(".server.key.pending")],
        "only the pending key, whole"
    );

    // The next run enrolls with the key the interrupted one made.
    let out = agent(&server, "n1", &dir, false, &["--token", &token]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        std::fs::read_to_string(dir.join("server.key")).unwrap(),
        key
    );
}
