//! What a big store costs: the same server binary on stores of 0, 100k and 1M certificates
//! (`--sizes 0,20000` is the smoke run CI does), each reported as a ratio to the empty store
//! measured in the same run.
//!
//! Each store starts as a real CA that issued real certificates through its API; the history is
//! then multiplied in SQL, with the server stopped (fresh serials, 10,000 nodes, three profiles,
//! issued evenly over four years with 90-day lifetimes, 1% revoked; one audit event each), so
//! most rows are long expired, as in a fleet that never tidied; every node has an agent report;
//! leaf serials in the CA's layout, in order of issue), then written out to disk (`sync`; on
//! PostgreSQL a `CHECKPOINT` first) so that no measurement shares the disk with the store's own
//! bulk load. Then, with the server running on it: issuance at concurrency 1 (2,000 requests,
//! after 200 not measured) and 8 (4,000) (throughput, p99), a node's listing, the expiring list's
//! first page, `/metrics`, rotation status, a CRL rebuilt after a revocation and served from
//! cache, the server's RSS after every valid certificate was listed page by page, and a remote
//! backup (time, the CLI's and the server's peak RSS, issuance at c=1 meanwhile and the WAL's
//! peak size); then, with the server stopped, `etcd-ca
//! tidy` with the policy's 30-day retention: its time and the database file before and after.
//!
//! Each size runs on SQLite, then on PostgreSQL (a server the bench starts, fsync on): the
//! same multiplied store moved there with `etcd-ca migrate --from-sqlite`, the server started
//! with `--database`; the database's size is PostgreSQL's own count (`pg_database_size`).
//!
//! Run with `scripts/bench --scale` (`cargo bench --bench scale -- [--sizes 0,100000,1000000]
//! [--backend sqlite|postgres|both]`). `--build-only DIR` builds the SQLite stores into
//! `DIR/SIZE/ca` (admin token in `DIR/SIZE/admin-token`) and measures nothing: stores to profile
//! one request against.

// A harness: any setup failure should stop the run loudly.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde::Serialize;
use serde_json::{json, Value};

use etcd_ca::client::{ApiClient, Trust};

const ETCD_CA: &str = env!("CARGO_BIN_EXE_etcd-ca");
/// The bench CAs' passphrase (a shared database keeps keys sealed; few KDF rounds).
const PASSPHRASE: &str = "scale bench";

#[path = "../tests/it/postgres_server.rs"]
#[allow(dead_code)]
mod postgres_server;

/// Where a measured store lives.
enum Backend<'a> {
    Sqlite,
    /// A database (by name) on this PostgreSQL server.
    Postgres(&'a postgres_server::PgServer, String),
}

/// `etcd-ca ARGS` with the bench passphrase; its stdout, or a loud failure.
fn etcd_ca(args: &[&str]) -> String {
    let out = Command::new(ETCD_CA)
        .args(args)
        .env("ETCD_CA_PASSPHRASE", PASSPHRASE)
        .output()
        .unwrap();
    assert!(out.status.success(), "{args:?}: {out:?}");
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}
const NODES: i64 = 10_000;
const DAY: i64 = 86_400;

struct Server {
    child: Child,
    url: String,
    fingerprint: String,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .arg(self.child.id().to_string())
            .status();
        let _ = self.child.wait();
    }
}

fn start(data: &Path, database: Option<&str>) -> Server {
    let mut child = Command::new(ETCD_CA)
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(data)
        .args(["--max-failed-attempts-per-source", "1000000"])
        .args(
            database
                .map(|url| ["--database", url])
                .into_iter()
                .flatten(),
        )
        .env("ETCD_CA_PASSPHRASE", PASSPHRASE)
        .env("ETCD_CA_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("serve");
    let mut line = String::new();
    use std::io::BufRead;
    std::io::BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let url = line.split_whitespace().nth(2).unwrap().to_string();
    let fingerprint = line
        .split_whitespace()
        .find(|w| w.starts_with("sha256:"))
        .unwrap()
        .trim_end_matches(')')
        .to_string();
    Server {
        child,
        url,
        fingerprint,
    }
}

fn anonymous(server: &Server) -> ApiClient {
    ApiClient::new(
        &server.url,
        Trust::Fingerprint(server.fingerprint.clone()),
        None,
    )
    .unwrap()
}

fn client(server: &Server, token: &str) -> ApiClient {
    anonymous(server).with_bearer(token.to_string())
}

fn status_kib(pid: u32, field: &str) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(field))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<f64>().ok())
        })
        .unwrap_or(0.0)
}

/// A CA with real issued certificates, its history multiplied to `rows` certificates.
async fn build_store(dir: &Path, rows: i64) -> (PathBuf, String) {
    let data = dir.join("ca");
    etcd_ca(&[
        "init",
        "--kdf-iterations",
        "1000",
        "--data-dir",
        data.to_str().unwrap(),
    ]);
    // Measured as a store that was never tidied: the server's hourly retention run (its first
    // comes a minute after start) would otherwise remove most of the history mid-run.
    let policy = data.join("policy.toml");
    let text = std::fs::read_to_string(&policy).unwrap();
    let kept = text.replace(
        "expired_certificates = \"30d\"",
        "expired_certificates = \"36500d\"",
    );
    assert_ne!(kept, text, "the policy's retention line changed");
    std::fs::write(&policy, kept).unwrap();
    let token = etcd_ca(&[
        "admin-token",
        "create",
        "--data-dir",
        data.to_str().unwrap(),
    ]);
    {
        let server = start(&data, None);
        let admin = client(&server, &token);
        for i in 0..30 {
            issue(&admin, &format!("seed-{i}")).await.unwrap();
        }
    }
    if rows > 0 {
        multiply(&data.join("etcd-ca.db"), rows).await;
    }
    settle();
    (data, token)
}

/// Writes out what the kernel still holds of the store just built (a gigabyte at 1M rows), so
/// that the measurements do not share the disk with it.
fn settle() {
    let synced = Command::new("sync").status().unwrap();
    assert!(synced.success(), "sync failed");
}

/// Adds `rows` certificates (and an audit event each) copied from a real one.
async fn multiply(db: &Path, rows: i64) {
    use sqlx::Connection;
    let mut conn = sqlx::SqliteConnection::connect(&format!("sqlite://{}", db.display()))
        .await
        .unwrap();
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let span = 4 * 365 * DAY;
    let started = Instant::now();
    sqlx::query("BEGIN").execute(&mut conn).await.unwrap();
    sqlx::query(
        "WITH RECURSIVE k(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM k WHERE i + 1 < $1)
         INSERT OR IGNORE INTO nodes (name, ips, dns_names, created_at, updated_at)
         SELECT 'fleet-' || i, '[\"10.0.0.1\"]', '[]', 0, 0 FROM k",
    )
    .bind(NODES)
    .execute(&mut conn)
    .await
    .unwrap();
    let base: i64 = sqlx::query_scalar("SELECT MAX(seq) FROM certificates")
        .fetch_one(&mut conn)
        .await
        .unwrap();
    sqlx::query(
        "WITH RECURSIVE k(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM k WHERE i < $1)
         INSERT INTO certificates (serial, ca_generation, profile, node, subject, common_name,
                                   sans, key_type, public_key_sha256, not_before, not_after, pem,
                                   status, revoked_at, revocation_reason, issued_at, seq)
         SELECT printf('01%010x', $3 - $4 + i * $4 / $1)
                || lower(hex(randomblob(10))), t.ca_generation,
                CASE i % 3 WHEN 0 THEN 'server' WHEN 1 THEN 'peer' ELSE 'client' END,
                'fleet-' || (i % $2), t.subject, t.common_name, t.sans, t.key_type,
                t.public_key_sha256,
                $3 - $4 + i * $4 / $1, $3 - $4 + i * $4 / $1 + 90 * 86400, t.pem,
                CASE WHEN i % 100 = 0 THEN 'revoked' ELSE 'valid' END,
                CASE WHEN i % 100 = 0 THEN $3 - $4 + i * $4 / $1 + 86400 END,
                CASE WHEN i % 100 = 0 THEN 'keyCompromise' END,
                $3 - $4 + i * $4 / $1, $5 + i
           FROM k, (SELECT * FROM certificates WHERE node LIKE 'seed-%' LIMIT 1) AS t",
    )
    .bind(rows)
    .bind(NODES)
    .bind(now)
    .bind(span)
    .bind(base)
    .execute(&mut conn)
    .await
    .unwrap();
    sqlx::query(
        "INSERT INTO audit_events (at, actor, action, node, serial, detail)
         SELECT issued_at, 'node:bench', 'renew', node, serial, 'profile ' || profile
           FROM certificates WHERE seq > $1",
    )
    .bind(base)
    .execute(&mut conn)
    .await
    .unwrap();
    // Every node's agent has reported what it installed and runs with.
    sqlx::query(
        "INSERT OR REPLACE INTO node_reports
           (node, installed_bundle, running_bundle, certificates, reported_at)
         SELECT n.name, json_array(g.fingerprint), json_array(g.fingerprint), '{}', $1
           FROM nodes n, ca_generations g WHERE n.name LIKE 'fleet-%' AND g.state = 'active'",
    )
    .bind(now)
    .execute(&mut conn)
    .await
    .unwrap();
    sqlx::query("COMMIT").execute(&mut conn).await.unwrap();
    sqlx::query("PRAGMA wal_checkpoint(TRUNCATE)")
        .execute(&mut conn)
        .await
        .unwrap();
    eprintln!(
        "  multiplied to {rows} certificates in {:.1} s",
        started.elapsed().as_secs_f64()
    );
}

async fn issue(admin: &ApiClient, node: &str) -> Result<(), String> {
    let body = json!({"profile": "client", "node": node, "common_name": node});
    admin
        .post_json::<_, Value>("/v1/issue", &body)
        .await
        .map(|_| ())
        .map_err(|e| e.to_string())
}

#[derive(Serialize, Clone, Copy, Default)]
struct Issuance {
    per_second: f64,
    p99_ms: f64,
    errors: usize,
}

async fn issuance(admin: &ApiClient, concurrency: usize, requests: usize) -> Issuance {
    let started = Instant::now();
    let mut tasks = Vec::new();
    for c in 0..concurrency {
        let admin = admin.clone();
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            let mut errors = 0;
            for i in 0..requests / concurrency {
                let t = Instant::now();
                match issue(&admin, &format!("fleet-{}", (c * 7919 + i) % 10_000)).await {
                    Ok(()) => latencies.push(t.elapsed()),
                    Err(_) => errors += 1,
                }
            }
            (latencies, errors)
        }));
    }
    let mut all = Vec::new();
    let mut errors = 0;
    for task in tasks {
        let (latencies, e) = task.await.unwrap();
        all.extend(latencies);
        errors += e;
    }
    let elapsed = started.elapsed();
    all.sort();
    let p99 = all
        .get(((all.len() as f64) * 0.99) as usize)
        .or(all.last())
        .copied()
        .unwrap_or_default();
    Issuance {
        per_second: all.len() as f64 / elapsed.as_secs_f64(),
        p99_ms: p99.as_secs_f64() * 1000.0,
        errors,
    }
}

/// The median time of `times` runs of a GET, in milliseconds.
async fn median_get(client: &ApiClient, path: &str, times: usize) -> f64 {
    let mut ms = Vec::new();
    for _ in 0..times {
        let t = Instant::now();
        client.get(path).await.unwrap();
        ms.push(t.elapsed().as_secs_f64() * 1000.0);
    }
    ms.sort_by(|a, b| a.total_cmp(b));
    ms[ms.len() / 2]
}

#[derive(Serialize, Default, Clone)]
struct Row {
    certificates: i64,
    issuance_c1: Issuance,
    issuance_c8: Issuance,
    node_lookup_ms: f64,
    expiring_page_ms: f64,
    metrics_ms: f64,
    metrics_per_node_ms: f64,
    rotation_status_ms: f64,
    crl_rebuild_ms: f64,
    crl_cached_ms: f64,
    backup_s: f64,
    /// Issued per second, one request at a time, while the backup ran.
    issuance_during_backup: f64,
    /// The WAL file's largest size during the backup (SQLite).
    wal_peak_during_backup_mib: f64,
    backup_cli_peak_mib: f64,
    server_peak_before_backup_mib: f64,
    server_peak_mib: f64,
    server_rss_after_listing_mib: f64,
    listed_valid: usize,
    tidy_s: f64,
    tidy_removed: u64,
    db_mib_before_tidy: f64,
    db_mib_after_tidy: f64,
}

async fn measure(dir: &Path, rows: i64, quick: bool, backend: &Backend<'_>) -> Row {
    let (data, token) = build_store(dir, rows).await;
    // On PostgreSQL: the same store moved there, served from a data dir of its own.
    let (data, database) = match backend {
        Backend::Sqlite => {
            eprintln!("store of {rows} certificates on SQLite");
            (data, None)
        }
        Backend::Postgres(pg, db) => {
            eprintln!("store of {rows} certificates on PostgreSQL (moving it there)");
            pg.create_database(db);
            let url = pg.url(db);
            let started = Instant::now();
            etcd_ca(&[
                "migrate",
                "--database",
                &url,
                "--from-sqlite",
                data.to_str().unwrap(),
            ]);
            eprintln!("moved in {:.1} s", started.elapsed().as_secs_f64());
            // Measured as a store that has settled, not one whose bulk load is still being
            // written out: PostgreSQL's checkpoint after it would otherwise run through the
            // issuance figures.
            pg.psql(db, "CHECKPOINT");
            settle();
            (dir.join("pg-server"), Some(url))
        }
    };
    let server = start(&data, database.as_deref());
    let admin = client(&server, &token);
    let pid = server.child.id();
    let mut row = Row {
        certificates: rows,
        ..Default::default()
    };
    // Enough that a p99 is not the fourth-slowest request.
    let requests = if quick { 64 } else { 2000 };
    // Warm-up, not measured: the first requests of a fresh server read the indexes from disk.
    issuance(&admin, 1, requests / 10).await;
    row.issuance_c1 = issuance(&admin, 1, requests).await;
    row.issuance_c8 = issuance(&admin, 8, requests * 2).await;
    row.node_lookup_ms = median_get(&admin, "/v1/certs?node=fleet-42", 5).await;
    row.expiring_page_ms = median_get(&admin, "/v1/certs?expiring_within=30d", 3).await;
    row.metrics_ms = median_get(&anonymous(&server), "/metrics", 3).await;
    row.metrics_per_node_ms = median_get(&admin, "/metrics", 3).await;
    row.rotation_status_ms = median_get(&admin, "/v1/rotation", 3).await;
    // A revocation, then the CRL rebuilt once and served from cache after.
    let page: Value = admin
        .get_json("/v1/certs?node=seed-0&limit=1")
        .await
        .unwrap();
    let serial = page["certificates"][0]["serial"].as_str().unwrap();
    let _: Value = admin
        .post_json(&format!("/v1/certs/{serial}/revoke"), &json!({}))
        .await
        .unwrap();
    row.crl_rebuild_ms = median_get(&admin, "/v1/crl", 1).await;
    row.crl_cached_ms = median_get(&admin, "/v1/crl", 21).await;
    // Every valid certificate, page by page: the largest answer any client can ask for.
    let mut path = "/v1/certs?status=valid".to_string();
    loop {
        let page: Value = admin.get_json(&path).await.unwrap();
        row.listed_valid += page["certificates"].as_array().unwrap().len();
        match page["next"].as_str() {
            Some(next) => path = format!("/v1/certs?status=valid&after={next}"),
            None => break,
        }
    }
    row.server_rss_after_listing_mib = status_kib(pid, "VmRSS:") / 1024.0;
    row.server_peak_before_backup_mib = status_kib(pid, "VmHWM:") / 1024.0;
    // A remote backup, as an operator takes it.
    let token_file = dir.join("admin-token");
    std::fs::write(&token_file, &token).unwrap();
    let started = Instant::now();
    let mut backup = Command::new(ETCD_CA)
        .args(["backup", "--server", &server.url, "--ca-fingerprint"])
        .arg(&server.fingerprint)
        .arg("--admin-token-file")
        .arg(&token_file)
        .arg("--out")
        .arg(dir.join("backup.tar"))
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    // Meanwhile a client keeps issuing, one request at a time, and the WAL's size is watched.
    let issuing = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
    let during = {
        let (admin, issuing) = (admin.clone(), issuing.clone());
        tokio::spawn(async move {
            let started = Instant::now();
            let mut issued = 0;
            while issuing.load(std::sync::atomic::Ordering::Relaxed) {
                if issue(&admin, &format!("fleet-{}", issued % 10_000))
                    .await
                    .is_ok()
                {
                    issued += 1;
                }
            }
            issued as f64 / started.elapsed().as_secs_f64()
        })
    };
    let wal = data.join("etcd-ca.db-wal");
    let mut cli_peak: f64 = 0.0;
    let mut wal_peak: u64 = 0;
    loop {
        cli_peak = cli_peak.max(status_kib(backup.id(), "VmHWM:"));
        wal_peak = wal_peak.max(std::fs::metadata(&wal).map(|m| m.len()).unwrap_or(0));
        if let Some(status) = backup.try_wait().unwrap() {
            assert!(status.success(), "backup failed");
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    row.backup_s = started.elapsed().as_secs_f64();
    issuing.store(false, std::sync::atomic::Ordering::Relaxed);
    row.issuance_during_backup = during.await.unwrap();
    row.wal_peak_during_backup_mib = wal_peak as f64 / 1048576.0;
    row.backup_cli_peak_mib = cli_peak / 1024.0;
    row.server_peak_mib = status_kib(pid, "VmHWM:") / 1024.0;
    drop(server);
    // Then the retention this store never had: `etcd-ca tidy` with the policy's 30 days (on
    // PostgreSQL, published as the database's policy first).
    let policy = data.join("policy.toml");
    let text = std::fs::read_to_string(&policy).unwrap();
    std::fs::write(
        &policy,
        text.replace(
            "expired_certificates = \"36500d\"",
            "expired_certificates = \"30d\"",
        ),
    )
    .unwrap();
    let size_mib = || match backend {
        Backend::Sqlite => {
            std::fs::metadata(data.join("etcd-ca.db")).unwrap().len() as f64 / 1048576.0
        }
        Backend::Postgres(pg, db) => {
            let bytes: f64 = pg
                .psql(db, "SELECT pg_database_size(current_database())")
                .parse()
                .unwrap();
            bytes / 1048576.0
        }
    };
    let mut tidy = vec!["tidy", "--json", "--data-dir", data.to_str().unwrap()];
    if let Some(url) = &database {
        etcd_ca(&[
            "migrate",
            "--database",
            url,
            "--policy",
            policy.to_str().unwrap(),
        ]);
        tidy.extend(["--database", url.as_str()]);
    }
    row.db_mib_before_tidy = size_mib();
    let started = Instant::now();
    let out = etcd_ca(&tidy);
    row.tidy_s = started.elapsed().as_secs_f64();
    let report: Value = serde_json::from_str(&out).unwrap();
    row.tidy_removed = report["certificates"].as_u64().unwrap_or_default();
    row.db_mib_after_tidy = size_mib();
    row
}

fn ratio(value: f64, base: f64) -> String {
    if base > 0.0 {
        format!("{value:.2} ({:.2}x)", value / base)
    } else {
        format!("{value:.2}")
    }
}

fn print_table(title: &str, rows: &[Row]) {
    let base = rows[0].clone();
    println!("\n{title}");
    println!(
        "\n| measure | {} |",
        rows.iter()
            .map(|r| format!("{} certificates", r.certificates))
            .collect::<Vec<_>>()
            .join(" | ")
    );
    println!(
        "|---|{}|",
        rows.iter().map(|_| "---").collect::<Vec<_>>().join("|")
    );
    let line = |name: &str, f: &dyn Fn(&Row) -> f64| {
        println!(
            "| {name} | {} |",
            rows.iter()
                .map(|r| ratio(f(r), f(&base)))
                .collect::<Vec<_>>()
                .join(" | ")
        );
    };
    line("issuance c=1 (per s)", &|r| r.issuance_c1.per_second);
    line("issuance c=1 p99 (ms)", &|r| r.issuance_c1.p99_ms);
    line("issuance c=8 (per s)", &|r| r.issuance_c8.per_second);
    line("issuance c=8 p99 (ms)", &|r| r.issuance_c8.p99_ms);
    line("node lookup (ms)", &|r| r.node_lookup_ms);
    line("expiring list, first page (ms)", &|r| r.expiring_page_ms);
    line("/metrics (ms)", &|r| r.metrics_ms);
    line("/metrics with every node, as admin (ms)", &|r| {
        r.metrics_per_node_ms
    });
    line("rotation status (ms)", &|r| r.rotation_status_ms);
    line("CRL rebuild (ms)", &|r| r.crl_rebuild_ms);
    line("CRL cached GET (ms)", &|r| r.crl_cached_ms);
    line("backup (s)", &|r| r.backup_s);
    line("issuance c=1 during the backup (per s)", &|r| {
        r.issuance_during_backup
    });
    line("WAL peak during the backup (MiB)", &|r| {
        r.wal_peak_during_backup_mib
    });
    line("backup CLI peak RSS (MiB)", &|r| r.backup_cli_peak_mib);
    line("server peak RSS before the backup (MiB)", &|r| {
        r.server_peak_before_backup_mib
    });
    line("server peak RSS after the backup (MiB)", &|r| {
        r.server_peak_mib
    });
    line(
        "server RSS after listing every valid certificate (MiB)",
        &|r| r.server_rss_after_listing_mib,
    );
    line("database before tidy (MiB)", &|r| r.db_mib_before_tidy);
    line("tidy (s)", &|r| r.tidy_s);
    line("certificates tidy removed", &|r| r.tidy_removed as f64);
    line("database after tidy (MiB)", &|r| r.db_mib_after_tidy);
    let errors: usize = rows
        .iter()
        .map(|r| r.issuance_c1.errors + r.issuance_c8.errors)
        .sum();
    println!("\nissuance errors: {errors}");
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let sizes: Vec<i64> = args
        .iter()
        .position(|a| a == "--sizes")
        .and_then(|i| args.get(i + 1))
        .map(|s| s.split(',').map(|n| n.parse().unwrap()).collect())
        .unwrap_or_else(|| vec![0, 100_000, 1_000_000]);
    let quick = args.iter().any(|a| a == "--quick");
    let backend = args
        .iter()
        .position(|a| a == "--backend")
        .and_then(|i| args.get(i + 1))
        .map_or("both", |b| b.as_str());
    let (sqlite, postgres) = match backend {
        "sqlite" => (true, false),
        "postgres" => (false, true),
        "both" => (true, true),
        other => panic!("--backend takes sqlite, postgres or both, not {other:?}"),
    };
    let build_only = args
        .iter()
        .position(|a| a == "--build-only")
        .and_then(|i| args.get(i + 1))
        .map(PathBuf::from);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    if let Some(root) = build_only {
        runtime.block_on(async {
            for size in sizes {
                let dir = root.join(size.to_string());
                std::fs::create_dir_all(&dir).unwrap();
                let (data, token) = build_store(&dir, size).await;
                std::fs::write(dir.join("admin-token"), token).unwrap();
                eprintln!("built {}", data.display());
            }
        });
        return;
    }
    let (on_sqlite, on_postgres) = runtime.block_on(async {
        let mut on_sqlite = Vec::new();
        let mut on_postgres = Vec::new();
        let pg = postgres.then(|| {
            let port = std::net::TcpListener::bind("127.0.0.1:0")
                .and_then(|l| l.local_addr())
                .map(|a| a.port())
                .unwrap();
            postgres_server::PgServer::start_durable(port)
        });
        for size in sizes {
            if sqlite {
                let dir = tempfile::tempdir().unwrap();
                on_sqlite.push(measure(dir.path(), size, quick, &Backend::Sqlite).await);
            }
            if let Some(pg) = &pg {
                let dir = tempfile::tempdir().unwrap();
                let db = Backend::Postgres(pg, format!("scale{size}"));
                on_postgres.push(measure(dir.path(), size, quick, &db).await);
            }
        }
        (on_sqlite, on_postgres)
    });
    if !on_sqlite.is_empty() {
        print_table("On SQLite:", &on_sqlite);
    }
    if !on_postgres.is_empty() {
        print_table("On PostgreSQL:", &on_postgres);
    }
    let _ = std::fs::create_dir_all("target/bench");
    std::fs::write(
        "target/bench/scale.json",
        serde_json::to_string_pretty(&json!({"sqlite": on_sqlite, "postgres": on_postgres}))
            .unwrap(),
    )
    .unwrap();
}
