//! The store on its own: how fast issued certificates become durable through the group
//! committer (`Store::record_issue`), at concurrency 1, 8 and 32, against a baseline measured
//! in the same run on the same disk: bare SQLite (one connection, WAL, full sync) committing
//! one single-row transaction at a time.
//!
//! No TLS, HTTP or signing: this isolates what a caller waits for after its certificate is
//! signed. Run with `cargo bench --bench store` (`-- --quick` for a short smoke run).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use etcd_ca::names::NodeIdentity;
use etcd_ca::store::{AuditEvent, GenerationRecord, GenerationState, NewCertificate, Store};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqliteSynchronous};
use sqlx::{ConnectOptions, Connection};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use time::OffsetDateTime;

/// A certificate row about the size of a real peer certificate's.
fn certificate(i: usize, now: OffsetDateTime) -> (NodeIdentity, NewCertificate, AuditEvent) {
    let node = format!("bench-{}", i % 997);
    let serial = format!("{:032x}", rand_u128(i));
    let cert = NewCertificate {
        serial: serial.clone(),
        ca_generation: 1,
        profile: "peer".into(),
        node: node.parse().unwrap(),
        subject: "CN=etcd-peer".into(),
        common_name: "etcd-peer".into(),
        sans: vec!["IP:10.0.0.1".into()],
        key_type: "ecdsa-p256".into(),
        public_key_sha256: "ab".repeat(32),
        not_before: now,
        not_after: now + Duration::from_secs(86_400),
        pem: "A".repeat(900),
        issued_at: now,
        renewed_from: None,
    };
    let event = AuditEvent {
        at: now,
        actor: "admin:bench".into(),
        action: "issue".into(),
        node: Some(node.clone()),
        serial: Some(serial),
        detail: "profile peer, CN etcd-peer".into(),
    };
    let identity = NodeIdentity::new(
        node.parse().unwrap(),
        vec!["10.0.0.1".parse().unwrap()],
        vec![],
    );
    (identity, cert, event)
}

/// Serials spread over the key space like random ones (splitmix64), reproducibly.
fn rand_u128(i: usize) -> u128 {
    let mut z = (i as u64).wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    let hi = z ^ (z >> 31);
    ((hi as u128) << 64) | i as u128
}

struct Run {
    per_second: f64,
    p50_us: u64,
    p99_us: u64,
}

async fn store_run(dir: &std::path::Path, concurrency: usize, total: usize) -> Run {
    let store = Store::create(&dir.join(format!("store-{concurrency}.db")))
        .await
        .unwrap();
    let now = OffsetDateTime::now_utc();
    let generation = GenerationRecord {
        id: 1,
        state: GenerationState::Active,
        key_type: "ecdsa-p256".into(),
        cert_pem: "not parsed here".into(),
        fingerprint: "sha256:00".into(),
        key_file: "ca/gen-1.key".into(),
        imported: false,
        not_before: now,
        not_after: now,
        activated_at: Some(now),
        retired_at: None,
        created_at: now,
        endorsement_pem: None,
        key_pem: None,
    };
    store.insert_generation(&generation).await.unwrap();
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let callers: Vec<_> = (0..concurrency)
        .map(|_| {
            let (store, next) = (store.clone(), next.clone());
            tokio::spawn(async move {
                let mut latencies = Vec::new();
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= total {
                        return latencies;
                    }
                    let (identity, cert, event) = certificate(i, now);
                    let t = Instant::now();
                    store.record_issue(&identity, &cert, &event).await.unwrap();
                    latencies.push(t.elapsed());
                }
            })
        })
        .collect();
    let mut latencies = Vec::with_capacity(total);
    for caller in callers {
        latencies.extend(caller.await.unwrap());
    }
    let elapsed = started.elapsed();
    store.close().await;
    summarize(latencies, elapsed)
}

/// Bare SQLite: one connection, WAL, full sync, one single-row transaction per certificate.
async fn bare_sqlite_run(dir: &std::path::Path, total: usize) -> Run {
    let mut conn = SqliteConnectOptions::new()
        .filename(dir.join("bare.db"))
        .create_if_missing(true)
        .journal_mode(SqliteJournalMode::Wal)
        .synchronous(SqliteSynchronous::Full)
        .connect()
        .await
        .unwrap();
    sqlx::query("CREATE TABLE certificates (serial TEXT PRIMARY KEY, node TEXT, pem TEXT)")
        .execute(&mut conn)
        .await
        .unwrap();
    let now = OffsetDateTime::now_utc();
    let mut latencies = Vec::with_capacity(total);
    let started = Instant::now();
    for i in 0..total {
        let (_, cert, _) = certificate(i, now);
        let t = Instant::now();
        let mut tx = conn.begin().await.unwrap();
        sqlx::query("INSERT INTO certificates VALUES (?, ?, ?)")
            .bind(&cert.serial)
            .bind(cert.node.as_str())
            .bind(&cert.pem)
            .execute(&mut *tx)
            .await
            .unwrap();
        tx.commit().await.unwrap();
        latencies.push(t.elapsed());
    }
    let elapsed = started.elapsed();
    conn.close().await.unwrap();
    summarize(latencies, elapsed)
}

fn summarize(mut latencies: Vec<Duration>, elapsed: Duration) -> Run {
    latencies.sort();
    let at = |q: f64| latencies[((latencies.len() - 1) as f64 * q) as usize].as_micros() as u64;
    Run {
        per_second: latencies.len() as f64 / elapsed.as_secs_f64(),
        p50_us: at(0.50),
        p99_us: at(0.99),
    }
}

#[tokio::main]
async fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    let total = if quick { 300 } else { 5_000 };
    // On the disk the server's data dir would be on, not a tmpfs.
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let bare = bare_sqlite_run(dir.path(), total).await;
    println!(
        "| writer | concurrency | certificates/s | p50 µs | p99 µs | vs bare SQLite |\n| --- | --- | --- | --- | --- | --- |"
    );
    println!(
        "| bare SQLite, one row per transaction | 1 | {:.0} | {} | {} | 1.0x |",
        bare.per_second, bare.p50_us, bare.p99_us
    );
    for concurrency in [1, 8, 32] {
        let run = store_run(dir.path(), concurrency, total).await;
        println!(
            "| store (group commit) | {concurrency} | {:.0} | {} | {} | {:.1}x |",
            run.per_second,
            run.p50_us,
            run.p99_us,
            run.per_second / bare.per_second
        );
    }
}
