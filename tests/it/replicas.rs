//! Several CA servers on one PostgreSQL database (started by the test: `initdb` as an
//! unprivileged user). Clients give all of them (`--server A,B,C`); any one may die at any
//! moment. Nothing a client received is lost, no serial repeats, a bootstrap token enrolls once
//! however many servers it is fired at, CRL numbers only grow and every server serves the same
//! CRL, and a stopped PostgreSQL gives clear 503s and no half-written rows.
//!
//! | test                                   | PostgreSQL | servers             |
//! |----------------------------------------|------------|---------------------|
//! | replicas_killed_at_random...           | 22901      | 22911, 22912, 22913 | (etcd 22969/22970)
//! | a_stopped_database...                  | 22902      | 22921, 22922        |
//! | a_sqlite_ca_moves_to_postgres...       | 22903      | 22931, 22932        |

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::csr;
use crate::helpers::*;
use crate::postgres_server::PgServer;

/// A PostgreSQL server, its database, and CA servers on it.
struct Shared {
    pg: PgServer,
    url: String,
    replicas: Vec<CaServer>,
}

impl Shared {
    fn start(pg_port: u16, ports: &[u16], serve_args: &[&str]) -> Self {
        let pg = PgServer::start(pg_port);
        pg.create_database("ca");
        let url = pg.url("ca");
        let replicas = ports
            .iter()
            .enumerate()
            .map(|(i, port)| {
                let listen = format!("127.0.0.1:{port}");
                let mut args = vec!["--listen", listen.as_str()];
                args.extend_from_slice(serve_args);
                CaServer::start_shared(&url, i == 0, &args)
            })
            .collect();
        Shared { pg, url, replicas }
    }

    /// Every server's URL, comma-separated (what agents and the CLI take).
    fn servers(&self) -> String {
        self.replicas
            .iter()
            .map(|r| r.url.clone())
            .collect::<Vec<_>>()
            .join(",")
    }

    /// An admin client that fails over across every server.
    fn admin(&self) -> etcd_ca::client::ApiClient {
        let first = &self.replicas[0];
        etcd_ca::client::ApiClient::new(
            &self.servers(),
            etcd_ca::client::Trust::Fingerprint(first.fingerprint.clone()),
            None,
        )
        .unwrap()
        .with_bearer(first.admin_token.clone())
    }

    /// Every serial the database holds.
    fn stored_serials(&self) -> BTreeSet<String> {
        self.pg
            .psql("ca", "SELECT serial FROM certificates")
            .lines()
            .map(str::to_string)
            .collect()
    }
}

/// A small deterministic generator: the test's "random" choices repeat from run to run.
struct Lcg(u64);

impl Lcg {
    fn next(&mut self, below: u64) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (self.0 >> 33) % below
    }
}

/// Clients issuing client certificates through every server (failing over) until `stop`:
/// the serials they received, and each refusal's status and code (after which a client waits
/// 100 ms). A failure that is not the server's answer fails the test: the servers stay up.
struct Load {
    stop: Arc<AtomicBool>,
    received: Arc<Mutex<Vec<String>>>,
    refusals: Arc<Mutex<Vec<(u16, String)>>>,
    clients: Vec<tokio::task::JoinHandle<()>>,
}

impl Load {
    fn start(shared: &Shared, clients: usize) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let received = Arc::new(Mutex::new(Vec::new()));
        let refusals = Arc::new(Mutex::new(Vec::new()));
        let clients = (0..clients)
            .map(|c| {
                let (admin, stop, received, refusals) = (
                    shared.admin(),
                    stop.clone(),
                    received.clone(),
                    refusals.clone(),
                );
                tokio::spawn(async move {
                    let mut i = 0;
                    while !stop.load(Ordering::Relaxed) {
                        let cn = format!("c{c}n{i}");
                        let body = json!({"profile": "client", "node": "load", "common_name": cn});
                        match admin.post_json::<_, Value>("/v1/issue", &body).await {
                            Ok(answer) => received.lock().unwrap().push(
                                answer["certificate"]["serial"]
                                    .as_str()
                                    .unwrap()
                                    .to_string(),
                            ),
                            Err(etcd_ca::client::ClientError::Api { status, code, .. }) => {
                                refusals.lock().unwrap().push((status, code));
                                tokio::time::sleep(Duration::from_millis(100)).await;
                            }
                            Err(e) => panic!("a client lost every server: {e}"),
                        }
                        i += 1;
                    }
                })
            })
            .collect();
        Load {
            stop,
            received,
            refusals,
            clients,
        }
    }

    fn received(&self) -> usize {
        self.received.lock().unwrap().len()
    }

    /// Stops the clients; what they received and the refusals they saw.
    async fn finish(self) -> (Vec<String>, Vec<(u16, String)>) {
        self.stop.store(true, Ordering::Relaxed);
        for client in self.clients {
            client.await.unwrap();
        }
        let received = self.received.lock().unwrap().clone();
        let refusals = self.refusals.lock().unwrap().clone();
        (received, refusals)
    }
}

async fn token(admin: &etcd_ca::client::ApiClient, node: &str) -> String {
    let body = json!({"node": node, "ips": ["10.1.0.1"], "profiles": ["peer"]});
    let answer: Value = admin.post_json("/v1/tokens", &body).await.unwrap();
    answer["token"].as_str().unwrap().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_killed_at_random_lose_nothing_and_a_token_enrolls_once() {
    // Each losing racer counts as a wrong credential from 127.0.0.1: room for all 200.
    let mut shared = Shared::start(
        22901,
        &[22911, 22912, 22913],
        &["--max-failed-attempts-per-source", "1000"],
    );
    let admin = shared.admin();

    // The same token fired at every server at once, each with other CSRs: exactly one
    // enrollment, the others are told the token is used. A hundred times.
    for round in 0..100 {
        let node = format!("race{round}");
        let token = token(&admin, &node).await;
        let attempts: Vec<_> = shared
            .replicas
            .iter()
            .map(|r| {
                let client = r.client();
                let (csr, _key) = csr::rcgen(&["10.1.0.1"], etcd_ca::pki::KeyType::EcdsaP256);
                let body = json!({"token": token, "csrs": {"peer": csr}});
                tokio::spawn(async move { client.post_json::<_, Value>("/v1/enroll", &body).await })
            })
            .collect();
        let mut enrolled = 0;
        for attempt in attempts {
            match attempt.await.unwrap() {
                Ok(_) => enrolled += 1,
                Err(e) => assert_eq!(e.code(), Some("token_used"), "round {round}: {e}"),
            }
        }
        assert_eq!(
            enrolled, 1,
            "round {round}: the token enrolled {enrolled} times"
        );
    }

    // Three members whose agents know every server, and a cluster on their certificates.
    let work = tempfile::tempdir().unwrap();
    let pki: [std::path::PathBuf; 3] = [1, 2, 3].map(|m| work.path().join(format!("pki-n{m}")));
    let servers = shared.servers();
    let pin = shared.replicas[0].fingerprint.clone();
    for (i, dir) in pki.iter().enumerate() {
        let m = i + 1;
        let node = format!("n{m}");
        let body = json!({"node": node, "ips": [format!("127.0.0.1{m}"), "127.0.0.1"], "profiles": ["server", "peer"]});
        let answer: Value = admin.post_json("/v1/tokens", &body).await.unwrap();
        let token = answer["token"].as_str().unwrap();
        run_agent_once(
            &servers,
            &pin,
            &node,
            dir,
            "server,peer",
            &["--token", token],
        )
        .ok();
    }
    let ops_dir = work.path().join("ops");
    shared.replicas[0].remote_issue_client(&ops_dir, "ops");
    let ops = ClientCreds::in_dir(&ops_dir);
    let cluster = EtcdCluster::start(
        &pki,
        Ports {
            client: 22969,
            peer: 22970,
        },
        &ops,
    );
    // The agents renew again and again while servers die (each run finds a live one).
    let renewals = {
        let (stop, pki, servers, pin) = (
            Arc::new(AtomicBool::new(false)),
            pki.clone(),
            servers.clone(),
            pin.clone(),
        );
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            let mut outcomes = Vec::new();
            while !flag.load(Ordering::Relaxed) {
                for (i, dir) in pki.iter().enumerate() {
                    let node = format!("n{}", i + 1);
                    let run =
                        run_agent_once(&servers, &pin, &node, dir, "server,peer", &["--renew-now"]);
                    outcomes.push((run.code, run.stderr));
                }
            }
            outcomes
        });
        (stop, thread)
    };

    // Issuance from four clients over every server while one server after another is killed.
    let load = Load::start(&shared, 4);
    let mut rng = Lcg(0x5eed);
    let kills = 21;
    for _ in 0..kills {
        tokio::time::sleep(Duration::from_millis(400 + rng.next(600))).await;
        let victim = rng.next(3) as usize;
        shared.replicas[victim].kill();
        tokio::time::sleep(Duration::from_millis(200)).await;
        shared.replicas[victim].start_again();
    }
    let (received, refusals) = load.finish().await;
    renewals.0.store(true, Ordering::Relaxed);
    let renewals = renewals.1.join().unwrap();
    let failed: Vec<_> = renewals
        .iter()
        .filter(|(code, _)| *code != Some(0))
        .collect();
    assert!(failed.is_empty(), "agent renewals failed: {failed:?}");
    assert!(
        renewals.len() >= 6,
        "only {} agent renewals",
        renewals.len()
    );
    // The cluster serves on the renewed certificates, which are all recorded.
    cluster.wait_healthy(&ops, Duration::from_secs(30));
    etcdctl(&cluster.endpoints(), &ops, &["put", "after", "kills"]).ok();
    let stored = shared.stored_serials();
    for dir in &pki {
        for profile in ["server", "peer"] {
            let serial = crate::rotation::serial_of(&dir.join(format!("{profile}.crt")));
            assert!(
                stored
                    .iter()
                    .any(|s| s.trim_start_matches('0') == serial.trim_start_matches('0')),
                "{profile} certificate {serial} in {} is not recorded",
                dir.display()
            );
        }
    }
    let lost: Vec<&String> = received.iter().filter(|s| !stored.contains(*s)).collect();
    assert!(lost.is_empty(), "handed out but not stored: {lost:?}");
    let distinct: BTreeSet<&String> = received.iter().collect();
    assert_eq!(
        distinct.len(),
        received.len(),
        "a serial was handed out twice"
    );
    assert!(
        received.len() > 200,
        "only {} certificates in {kills} kills",
        received.len()
    );
    // Clients are refused only when every server is down at once, which never happens here.
    assert!(refusals.is_empty(), "clients were refused: {refusals:?}");
    let rows: usize = shared
        .pg
        .psql("ca", "SELECT COUNT(*) FROM certificates")
        .parse()
        .unwrap();
    assert_eq!(stored.len(), rows, "serials are unique in the database");
    let used: usize = shared
        .pg
        .psql(
            "ca",
            "SELECT COUNT(*) FROM tokens
              WHERE kind = 'bootstrap' AND node LIKE 'race%' AND used_at IS NOT NULL",
        )
        .parse()
        .unwrap();
    assert_eq!(used, 100, "each raced token was used once");

    // CRLs: a revocation through one server; every server then serves the same bytes, and the
    // numbers only grow.
    let mut numbers = Vec::new();
    for (i, serial) in received.iter().take(3).enumerate() {
        let via = &shared.replicas[i % 3];
        via.remote(&["revoke", serial]).ok();
        let deadline = Instant::now() + Duration::from_secs(10);
        let crl = loop {
            let mut served = BTreeSet::new();
            for r in &shared.replicas {
                served.insert(r.client().crl(None).await.unwrap());
            }
            if served.len() == 1 {
                let crl = served.into_iter().next().unwrap();
                let (_, contents) = etcd_ca::pki::crl_contents(&crl).unwrap();
                if contents.revoked.iter().any(|(s, _, _)| s == serial) {
                    break contents;
                }
            }
            assert!(Instant::now() < deadline, "servers serve different CRLs");
            tokio::time::sleep(Duration::from_millis(200)).await;
        };
        numbers.push(crl.number.unwrap());
    }
    assert!(
        numbers.windows(2).all(|w| w[0] < w[1]),
        "CRL numbers {numbers:?}"
    );
    for r in shared.replicas.iter_mut() {
        r.stop();
    }
    eprintln!(
        "replicas: {} certificates over {kills} kills, 100 token races, CRL numbers {numbers:?} ({})",
        received.len(),
        shared.url
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_database_gives_503s_and_no_half_written_rows_and_a_standby_serves_reads() {
    let mut shared = Shared::start(22902, &[22921, 22922], &[]);

    // Failed attempts count on the database, not per server: a token's fifth wrong secret
    // locks it everywhere, however the guesses were spread.
    let token = token(&shared.admin(), "guessed").await;
    let (prefix, secret) = token.rsplit_once('_').unwrap();
    let wrong = format!("{prefix}_{}", "0".repeat(secret.len()));
    let (csr, _key) = csr::rcgen(&["10.1.0.1"], etcd_ca::pki::KeyType::EcdsaP256);
    let body = json!({"token": wrong, "csrs": {"peer": csr}});
    for i in 0..5 {
        let refused = shared.replicas[i % 2]
            .client()
            .post_json::<_, Value>("/v1/enroll", &body)
            .await
            .unwrap_err();
        assert_eq!(
            refused.code(),
            Some("token_invalid"),
            "guess {i}: {refused}"
        );
    }
    for replica in &shared.replicas {
        let refused = replica
            .client()
            .post_json::<_, Value>("/v1/enroll", &body)
            .await
            .unwrap_err();
        assert_eq!(refused.code(), Some("token_locked"), "{refused}");
    }
    let load = Load::start(&shared, 2);
    tokio::time::sleep(Duration::from_secs(1)).await;
    let mut crls = Vec::new();
    for r in &shared.replicas {
        crls.push(r.client().crl(None).await.unwrap());
    }
    let before_stop = load.received();
    shared.pg.stop();
    tokio::time::sleep(Duration::from_secs(2)).await;
    // Meanwhile each server still serves the CRL it had (etcd needs it on every connection),
    // and says it is not ready.
    for (r, crl) in shared.replicas.iter().zip(&crls) {
        assert_eq!(&r.client().crl(None).await.unwrap(), crl);
        let health = r.client().health().await.unwrap_err();
        assert_eq!(health.code(), Some("database_unavailable"), "{health}");
    }
    tokio::time::sleep(Duration::from_secs(18)).await;
    let during = load.received() - before_stop;
    shared.pg.launch();
    // The servers reconnect on their own: issuance resumes within seconds.
    let resumed_from = load.received();
    let deadline = Instant::now() + Duration::from_secs(15);
    while load.received() < resumed_from + 20 {
        assert!(
            Instant::now() < deadline,
            "issuance did not resume after PostgreSQL came back"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (received, refusals) = load.finish().await;
    assert!(before_stop > 0, "nothing was issued before the stop");
    assert!(
        during <= 8,
        "{during} certificates issued while PostgreSQL was down"
    );
    assert!(
        refusals.len() >= 10,
        "{} refusals in 20 s without a database",
        refusals.len()
    );
    for (status, code) in &refusals {
        assert_eq!(
            (*status, code.as_str()),
            (503, "database_unavailable"),
            "a request while PostgreSQL was down"
        );
    }
    // Nothing half-written: everything handed out is stored, and every stored certificate has
    // its audit event (one transaction).
    let stored = shared.stored_serials();
    let lost: Vec<&String> = received.iter().filter(|s| !stored.contains(*s)).collect();
    assert!(lost.is_empty(), "handed out but not stored: {lost:?}");
    let orphans = shared.pg.psql(
        "ca",
        "SELECT COUNT(*) FROM certificates c
          WHERE NOT EXISTS (SELECT 1 FROM audit_events a WHERE a.serial = c.serial)",
    );
    assert_eq!(orphans, "0", "certificates without their audit event");

    // A server on a read-only connection (what a standby gives): it serves the trust bundle and
    // the CRL the others published, and refuses writes with a 503 that says why.
    let published = shared.replicas[0].client().crl(None).await.unwrap();
    let primary_bundle = shared.replicas[0].client().trust_bundle().await.unwrap();
    let read_only = format!(
        "{}?options=-c%20default_transaction_read_only%3Don",
        shared.url
    );
    let standby = &mut shared.replicas[1];
    standby.stop();
    standby.set_database(&read_only);
    standby.start_again();
    let bundle = standby.client().trust_bundle().await.unwrap();
    assert_eq!(bundle, primary_bundle);
    assert_eq!(standby.client().crl(None).await.unwrap(), published);
    let refused = standby
        .admin()
        .post_json::<_, Value>(
            "/v1/issue",
            &json!({"profile": "client", "node": "load", "common_name": "on-standby"}),
        )
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Some("database_read_only"), "{refused}");
    for r in shared.replicas.iter_mut() {
        r.stop();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sqlite_ca_moves_to_postgres_and_a_postgres_backup_restores_anywhere() {
    // A CA that has been running on SQLite: certificates, a revocation, a CRL published.
    let mut old = CaServer::start(&[], &[]);
    let work = tempfile::tempdir().unwrap();
    let kept = old.remote_issue_client(&work.path().join("a"), "kept");
    let revoked = old.remote_issue_client(&work.path().join("b"), "gone");
    old.remote(&["revoke", &revoked]).ok();
    let old_crl = etcd_ca::pki::crl_contents(&old.client().crl(None).await.unwrap())
        .unwrap()
        .1;
    old.stop();

    // Moved, records, keys and policy, in one command; then served by two servers.
    let pg = PgServer::start(22903);
    pg.create_database("moved");
    let url = pg.url("moved");
    let moved = etcd_ca([
        "migrate",
        "--database",
        &url,
        "--from-sqlite",
        old.ca.data_dir(),
    ])
    .ok();
    assert!(moved.stdout.contains("Moved the CA"), "{}", moved.stdout);
    // The SQLite copy is no CA any more: it neither serves nor signs.
    let stale = etcd_ca(["list", "--data-dir", old.ca.data_dir()]).fails();
    assert!(stale.contains("was moved to the database"), "{stale}");
    // Nothing moves twice into one database.
    let again = etcd_ca([
        "migrate",
        "--database",
        &url,
        "--from-sqlite",
        old.ca.data_dir(),
    ])
    .fails();
    assert!(again.contains("already holds a CA"), "{again}");
    let mut servers: Vec<CaServer> = [22931, 22932]
        .iter()
        .map(|port| {
            let listen = format!("127.0.0.1:{port}");
            CaServer::start_shared(&url, false, &["--listen", &listen])
        })
        .collect();
    assert_eq!(servers[0].fingerprint, old.fingerprint, "the same CA");
    let listed = servers[1].remote(&["list", "--json"]).ok().stdout;
    let listed: Value = serde_json::from_str(&listed).unwrap();
    let state = |serial: &str| {
        listed
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["serial"] == serial)
            .map(|c| c["status"].as_str().unwrap().to_string())
    };
    assert_eq!(state(&kept).as_deref(), Some("valid"));
    assert_eq!(state(&revoked).as_deref(), Some("revoked"));
    let crl = etcd_ca::pki::crl_contents(&servers[0].client().crl(None).await.unwrap())
        .unwrap()
        .1;
    assert!(crl.revoked.iter().any(|(s, _, _)| s.ends_with(&revoked)));
    assert_eq!(
        crl.number, old_crl.number,
        "the CRL published before the move"
    );
    // A revocation after the move: the next CRL's number continues past the old ones.
    let extra = servers[0].remote_issue_client(&work.path().join("e"), "extra");
    servers[1].remote(&["revoke", &extra]).ok();
    let crl = etcd_ca::pki::crl_contents(&servers[1].client().crl(None).await.unwrap())
        .unwrap()
        .1;
    assert!(crl.revoked.iter().any(|(s, _, _)| s.ends_with(&extra)));
    assert!(
        crl.number > old_crl.number,
        "CRL numbers continue: {:?} after {:?}",
        crl.number,
        old_crl.number
    );
    // Signing works on every server (the sealed key came along).
    let new = servers[1].remote_issue_client(&work.path().join("c"), "new");

    // A backup of the shared database is the usual archive: restored into a data dir, the CA
    // runs on SQLite again with everything, the new certificate included.
    let archive = work.path().join("backup.tar");
    servers[0]
        .remote(&["backup", "--out", archive.to_str().unwrap()])
        .ok();
    let restored = work.path().join("restored");
    etcd_ca([
        "restore",
        "--from",
        archive.to_str().unwrap(),
        "--data-dir",
        restored.to_str().unwrap(),
        "--no-crl",
    ])
    .ok();
    // A new policy: published once, refused by every running server within seconds (no two
    // policies at once), taken by each server restarted with it.
    let new_policy = work.path().join("policy-v2.toml");
    let text = std::fs::read_to_string(servers[0].ca.dir.join("policy.toml")).unwrap();
    std::fs::write(&new_policy, format!("{text}\n# v2\n")).unwrap();
    etcd_ca([
        "migrate",
        "--database",
        &url,
        "--policy",
        new_policy.to_str().unwrap(),
    ])
    .ok();
    for s in &servers {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let refused = s.remote(&[
                "issue",
                "--profile",
                "client",
                "--node",
                "p",
                "--cn",
                "p",
                "--out",
                work.path().join("p").to_str().unwrap(),
            ]);
            if refused.code == Some(1) && refused.stderr.contains("policy_changed") {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "{} still signs: {}",
                s.url,
                refused.stderr
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }
    servers[0].stop();
    let old_file = etcd_ca([
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--database",
        &url,
        "--data-dir",
        servers[0].ca.data_dir(),
    ])
    .fails();
    assert!(
        old_file.contains("is not the one the servers"),
        "{old_file}"
    );
    std::fs::copy(&new_policy, servers[0].ca.dir.join("policy.toml")).unwrap();
    servers[0].start_again();
    servers[0].remote_issue_client(&work.path().join("f"), "new-policy");
    for s in servers.iter_mut() {
        s.stop();
    }
    // A CA whose key was kept unencrypted moves only sealed, with a passphrase given.
    let plain_tmp = tempfile::tempdir().unwrap();
    let plain_dir = plain_tmp.path().join("ca");
    let init = std::process::Command::new(ETCD_CA)
        .args(["init", "--insecure-unencrypted-key", "--data-dir"])
        .arg(&plain_dir)
        .env_remove("ETCD_CA_PASSPHRASE")
        .env_remove("ETCD_CA_PASSPHRASE_FILE")
        .output()
        .unwrap();
    assert!(init.status.success(), "{init:?}");
    let plain = TestCa {
        tmp: plain_tmp,
        dir: plain_dir,
    };
    pg.create_database("plain");
    let plain_url = pg.url("plain");
    let refused = std::process::Command::new(ETCD_CA)
        .args(["migrate", "--database", &plain_url, "--from-sqlite"])
        .arg(plain.data_dir())
        .env_remove("ETCD_CA_PASSPHRASE")
        .env_remove("ETCD_CA_PASSPHRASE_FILE")
        .output()
        .unwrap();
    assert!(!refused.status.success());
    let refused = String::from_utf8_lossy(&refused.stderr);
    assert!(
        refused.contains("must be sealed with a passphrase"),
        "{refused}"
    );
    let passphrase_file = work.path().join("passphrase");
    std::fs::write(&passphrase_file, PASSPHRASE).unwrap();
    etcd_ca([
        "migrate",
        "--database",
        &plain_url,
        "--from-sqlite",
        plain.data_dir(),
        "--passphrase-file",
        passphrase_file.to_str().unwrap(),
    ])
    .ok();
    let mut sealed = CaServer::start_shared(&plain_url, false, &[]);
    sealed.remote_issue_client(&work.path().join("g"), "sealed");
    sealed.stop();
    let back = CaServer::start_on(restored, &[]);
    assert_eq!(back.fingerprint, old.fingerprint);
    let listed = back.remote(&["list", "--json"]).ok().stdout;
    for serial in [&kept, &revoked, &new] {
        assert!(listed.contains(serial.as_str()), "{serial} after restore");
    }
    back.remote_issue_client(&work.path().join("d"), "after-restore");
}
