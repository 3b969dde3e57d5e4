//! The etcd-ca benchmark, in one run:
//!
//! 1. issuance: the same pre-generated ECDSA P-256 CSRs (etcd peer profile) sent to our server
//!    (HTTPS, durable SQLite, every certificate recorded before it is returned), to our servers
//!    on a PostgreSQL the bench starts (fsync on; one server, and three sharing the database
//!    with the load spread over them) and to `cfssl serve` with and without its SQLite certdb
//!    (also over TLS), by the same load generator (keep-alive connections) at concurrency 1, 8
//!    and 32: throughput, p50, p99, errors;
//! 2. the in-process limit: CSR parse + signature check + sign on one core, no I/O;
//! 3. a renewal storm: N nodes, each with its own client certificate, renewing their three
//!    certificates over one new mTLS connection per node: total time, p99, peak server RSS.
//!
//! Run with `scripts/bench` (or `cargo bench --bench ca -- [--quick] [--json FILE]`).

// A harness: any setup failure should stop the run loudly.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};
use serde::Serialize;

use etcd_ca::pki::{KeyType, VerifiedCsr};

#[path = "../tests/it/postgres_server.rs"]
#[allow(dead_code)]
mod postgres_server;

const ETCD_CA: &str = env!("CARGO_BIN_EXE_etcd-ca");

/// The server binary: this build's, or another one named by `BENCH_ETCD_CA_BIN`, to compare
/// two builds on the same machine minutes apart (runs here vary by ±20%, so A/B needs several).
fn etcd_ca_bin() -> String {
    std::env::var("BENCH_ETCD_CA_BIN").unwrap_or_else(|_| ETCD_CA.to_string())
}
const CONCURRENCY: [usize; 3] = [1, 8, 32];

struct Options {
    quick: bool,
    json: PathBuf,
    /// Drive only the server with this name (`--only etcd-ca`), or `--only storm` for just the
    /// renewal storm: for profiling.
    only: Option<String>,
    /// Skip the renewal storm (`--no-storm`), for profiling.
    storm: bool,
}

impl Options {
    fn parse() -> Self {
        let args: Vec<String> = std::env::args().collect();
        let json = args
            .iter()
            .position(|a| a == "--json")
            .and_then(|i| args.get(i + 1))
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from("target/bench/ca.json"));
        let only = args
            .iter()
            .position(|a| a == "--only")
            .and_then(|i| args.get(i + 1))
            .cloned();
        Self {
            quick: args.iter().any(|a| a == "--quick"),
            json,
            only,
            storm: !args.iter().any(|a| a == "--no-storm"),
        }
    }

    fn requests(&self, concurrency: usize) -> usize {
        match (self.quick, concurrency) {
            (true, _) => 200,
            (false, 1) => 1500,
            (false, _) => 6000,
        }
    }

    fn storm_nodes(&self) -> usize {
        if self.quick {
            200
        } else {
            10_000
        }
    }
}

#[derive(Serialize, Clone, Debug)]
struct IssuanceResult {
    server: String,
    concurrency: usize,
    requests: usize,
    errors: usize,
    seconds: f64,
    per_second: f64,
    p50_ms: f64,
    p99_ms: f64,
    /// Server CPU time (user + system) per certificate, from /proc.
    server_cpu_us_per_cert: f64,
    /// The load generator's own CPU time per certificate (it shares the machine).
    client_cpu_us_per_cert: f64,
}

#[derive(Serialize, Debug)]
struct StormResult {
    nodes: usize,
    certificates: usize,
    errors: usize,
    seconds: f64,
    p99_ms: f64,
    peak_rss_mib: f64,
    server_cpu_us_per_cert: f64,
    client_cpu_us_per_cert: f64,
}

#[derive(Serialize, Debug)]
struct Report {
    machine: String,
    quick: bool,
    in_process_per_second: f64,
    /// Of the in-process time per certificate: parsing the CSR and checking its signature.
    in_process_csr_check_us: f64,
    /// Of the in-process time per certificate: building and signing the certificate.
    in_process_sign_us: f64,
    issuance: Vec<IssuanceResult>,
    storm: Option<StormResult>,
}

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i].as_secs_f64() * 1000.0
}

/// A TLS client config trusting `ca_der`, optionally presenting a certificate.
fn tls_config(ca_der: &[u8], identity: Option<(Vec<u8>, Vec<u8>)>) -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from(ca_der.to_vec()))
        .expect("CA");
    let builder = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("versions")
    .with_root_certificates(roots);
    let config = match identity {
        Some((cert, key)) => builder
            .with_client_auth_cert(
                vec![CertificateDer::from(cert)],
                PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key)),
            )
            .expect("client identity"),
        None => builder.with_no_client_auth(),
    };
    Arc::new(config)
}

type Sender = hyper::client::conn::http1::SendRequest<Full<Bytes>>;

async fn connect(addr: &str, config: Arc<rustls::ClientConfig>) -> Option<Sender> {
    let tcp = tokio::net::TcpStream::connect(addr).await.ok()?;
    tcp.set_nodelay(true).ok()?;
    let name = ServerName::IpAddress(std::net::IpAddr::from([127, 0, 0, 1]).into());
    let tls = tokio_rustls::TlsConnector::from(config)
        .connect(name, tcp)
        .await
        .ok()?;
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
        .await
        .ok()?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Some(sender)
}

async fn post(
    sender: &mut Sender,
    path: &str,
    auth: Option<&str>,
    body: Vec<u8>,
) -> Option<(u16, Bytes)> {
    sender.ready().await.ok()?;
    let mut request = hyper::Request::post(path)
        .header("host", "127.0.0.1")
        .header("content-type", "application/json");
    if let Some(token) = auth {
        request = request.header("authorization", format!("Bearer {token}"));
    }
    let response = sender
        .send_request(request.body(Full::new(Bytes::from(body))).ok()?)
        .await
        .ok()?;
    let status = response.status().as_u16();
    let body = response.into_body().collect().await.ok()?.to_bytes();
    Some((status, body))
}

/// One server under load: how to reach it and how to ask it to sign CSR number `i`.
struct Target {
    name: String,
    /// Every server process of the target (their CPU time is summed).
    pids: Vec<u32>,
    /// Worker `w` connects to `addrs[w % addrs.len()]`.
    addrs: Vec<String>,
    tls: Arc<rustls::ClientConfig>,
    path: &'static str,
    auth: Option<String>,
    body: Arc<dyn Fn(usize) -> Vec<u8> + Send + Sync>,
    ok: fn(u16, &[u8]) -> bool,
}

async fn drive(target: Arc<Target>, concurrency: usize, requests: usize) -> IssuanceResult {
    let next = Arc::new(AtomicUsize::new(0));
    let latencies = Arc::new(Mutex::new(Vec::with_capacity(requests)));
    let errors = Arc::new(AtomicUsize::new(0));
    let servers_cpu =
        |t: &Target| -> Duration { t.pids.iter().map(|p| cpu_time(&p.to_string())).sum() };
    let (server_cpu, client_cpu) = (servers_cpu(&target), cpu_time("self"));
    let started = Instant::now();
    let mut workers = Vec::new();
    for w in 0..concurrency {
        let (target, next, latencies, errors) = (
            target.clone(),
            next.clone(),
            latencies.clone(),
            errors.clone(),
        );
        workers.push(tokio::spawn(async move {
            let mut sender = None;
            let mut mine = Vec::new();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= requests {
                    break;
                }
                if sender.is_none() {
                    let addr = &target.addrs[w % target.addrs.len()];
                    sender = connect(addr, target.tls.clone()).await;
                }
                let t0 = Instant::now();
                let answer = match sender.as_mut() {
                    Some(s) => post(s, target.path, target.auth.as_deref(), (target.body)(i)).await,
                    None => None,
                };
                match answer {
                    Some((status, body)) if (target.ok)(status, &body) => mine.push(t0.elapsed()),
                    Some(_) => {
                        errors.fetch_add(1, Ordering::Relaxed);
                    }
                    None => {
                        errors.fetch_add(1, Ordering::Relaxed);
                        sender = None;
                    }
                }
            }
            latencies.lock().expect("latencies").extend(mine);
        }));
    }
    for w in workers {
        let _ = w.await;
    }
    let seconds = started.elapsed().as_secs_f64();
    let server_cpu = servers_cpu(&target) - server_cpu;
    let client_cpu = cpu_time("self") - client_cpu;
    let mut latencies = latencies.lock().expect("latencies").clone();
    latencies.sort();
    let per_cert = |cpu: Duration| cpu.as_secs_f64() * 1e6 / latencies.len().max(1) as f64;
    IssuanceResult {
        server_cpu_us_per_cert: per_cert(server_cpu),
        client_cpu_us_per_cert: per_cert(client_cpu),
        server: target.name.clone(),
        concurrency,
        requests,
        errors: errors.load(Ordering::Relaxed),
        seconds,
        per_second: latencies.len() as f64 / seconds,
        p50_ms: percentile(&latencies, 0.50),
        p99_ms: percentile(&latencies, 0.99),
    }
}

/// A child process stopped (by PID) when dropped.
struct Process(Child);

impl Drop for Process {
    fn drop(&mut self) {
        let _ = Command::new("kill").arg(self.0.id().to_string()).status();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

fn wait_listening(addr: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::net::TcpStream::connect(addr).is_err() {
        assert!(Instant::now() < deadline, "{addr} never listened");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The CSRs both servers sign: P-256 keys, one IP SAN each (as an etcd peer asks).
fn make_csrs(count: usize) -> Vec<String> {
    (0..count)
        .map(|i| {
            let key = KeyType::EcdsaP256.generate().expect("key");
            let ip = format!("10.{}.{}.{}", (i >> 16) & 255, (i >> 8) & 255, i & 255);
            rcgen::CertificateParams::new(vec![ip])
                .expect("params")
                .serialize_request(&key)
                .expect("csr")
                .pem()
                .expect("pem")
        })
        .collect()
}

/// The in-process limit: CSR parse + signature check + sign, one core, no I/O.
struct InProcess {
    per_second: f64,
    csr_check_us: f64,
    sign_us: f64,
}

/// CSR parse + signature check + sign, one core, no I/O, with the time split between the CSR
/// check and the signature (to read the server's CPU per certificate against).
fn in_process_limit(csrs: &[String]) -> InProcess {
    let key = KeyType::EcdsaP256.generate().expect("key");
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let issuer = rcgen::Issuer::new(params, key);
    let (mut checking, mut signing) = (Duration::ZERO, Duration::ZERO);
    let started = Instant::now();
    let mut done = 0;
    while started.elapsed() < Duration::from_secs(2) {
        let t0 = Instant::now();
        let csr = VerifiedCsr::from_pem(&csrs[done % csrs.len()]).expect("csr");
        let t1 = Instant::now();
        let public = rcgen::SubjectPublicKeyInfo::from_der(&csr.public_key).expect("spki");
        let mut leaf = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
        leaf.serial_number = Some(rcgen::SerialNumber::from_slice(&[0x42; 16]));
        leaf.subject_alt_names = csr
            .sans
            .iter()
            .filter_map(|s| match s {
                etcd_ca::names::San::Ip(ip) => Some(rcgen::SanType::IpAddress(*ip)),
                etcd_ca::names::San::Dns(_) => None,
            })
            .collect();
        std::hint::black_box(leaf.signed_by(&public, &issuer).expect("sign"));
        checking += t1 - t0;
        signing += t1.elapsed();
        done += 1;
    }
    let us_each = |d: Duration| d.as_secs_f64() * 1e6 / done.max(1) as f64;
    InProcess {
        per_second: done as f64 / started.elapsed().as_secs_f64(),
        csr_check_us: us_each(checking),
        sign_us: us_each(signing),
    }
}

/// Our servers of one CA: their processes, addresses, the CA (DER) and an admin token.
struct Ours {
    processes: Vec<Process>,
    addrs: Vec<String>,
    ca_der: Vec<u8>,
    admin: String,
}

impl Ours {
    /// The load target they are: requests spread over every server.
    fn target(
        &self,
        name: &str,
        body: &Arc<dyn Fn(usize) -> Vec<u8> + Send + Sync>,
    ) -> Arc<Target> {
        Arc::new(Target {
            name: name.into(),
            pids: self.processes.iter().map(|p| p.0.id()).collect(),
            addrs: self.addrs.clone(),
            tls: tls_config(&self.ca_der, None),
            path: "/v1/sign",
            auth: Some(self.admin.clone()),
            body: body.clone(),
            ok: |status, _| status == 200,
        })
    }
}

/// The bench CAs' passphrase (a shared database keeps keys sealed).
const PASSPHRASE: &str = "bench passphrase";

/// `etcd-ca ARGS` run to completion (with the bench passphrase); its stdout.
fn etcd_ca(args: &[&str]) -> String {
    let out = Command::new(etcd_ca_bin())
        .args(args)
        .env("ETCD_CA_PASSPHRASE", PASSPHRASE)
        .output()
        .expect("etcd-ca");
    assert!(out.status.success(), "{args:?}: {out:?}");
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// `etcd-ca serve` on `data` (plus `extra` flags), logging to `target/bench/LOG`; the process
/// and its address once it is ready.
fn serve(data: &Path, extra: &[&str], log: &str) -> (Process, String) {
    let mut child = Command::new(etcd_ca_bin())
        .args(["serve", "--listen", "127.0.0.1:0"])
        .args(["--max-failed-attempts-per-source", "1000000"])
        .args(extra)
        .arg("--data-dir")
        .arg(data)
        .env("ETCD_CA_PASSPHRASE", PASSPHRASE)
        .env(
            "ETCD_CA_LOG",
            std::env::var("BENCH_SERVER_LOG").unwrap_or_else(|_| "warn".into()),
        )
        .stdout(Stdio::piped())
        .stderr({
            let _ = std::fs::create_dir_all("target/bench");
            std::fs::File::create(Path::new("target/bench").join(log)).expect("log")
        })
        .spawn()
        .expect("serve");
    let mut line = String::new();
    use std::io::BufRead;
    std::io::BufReader::new(child.stdout.take().expect("stdout"))
        .read_line(&mut line)
        .expect("ready line");
    let addr = line
        .split_whitespace()
        .nth(2)
        .expect("url")
        .trim_start_matches("https://")
        .to_string();
    (Process(child), addr)
}

/// The CA certificate (DER) of a data dir `init` made.
fn ca_der(data: &Path) -> Vec<u8> {
    let ca_pem = std::fs::read_to_string(data.join("ca/gen-1.crt")).expect("ca");
    etcd_ca::pki::pem_certificates(&ca_pem)
        .expect("ca pem")
        .remove(0)
}

/// Our server on a fresh SQLite data dir (its key unsealed: nothing else to measure).
fn start_ours(dir: &Path) -> Ours {
    let data = dir.join("etcd-ca");
    let data_str = data.to_str().expect("utf-8");
    etcd_ca(&["init", "--insecure-unencrypted-key", "--data-dir", data_str]);
    let admin = etcd_ca(&["admin-token", "create", "--data-dir", data_str]);
    let (process, addr) = serve(&data, &[], "server.log");
    Ours {
        processes: vec![process],
        addrs: vec![addr],
        ca_der: ca_der(&data),
        admin,
    }
}

/// `n` servers of one new CA on database `db` of `pg` (few KDF rounds: each server opens the
/// sealed key once).
fn start_ours_on_postgres(dir: &Path, pg: &postgres_server::PgServer, db: &str, n: usize) -> Ours {
    pg.create_database(db);
    let url = pg.url(db);
    let first = dir.join(format!("pg-{db}-0"));
    let first_str = first.to_str().expect("utf-8");
    etcd_ca(&[
        "init",
        "--kdf-iterations",
        "1000",
        "--database",
        &url,
        "--data-dir",
        first_str,
    ]);
    let admin = etcd_ca(&[
        "admin-token",
        "create",
        "--database",
        &url,
        "--data-dir",
        first_str,
    ]);
    let (processes, addrs) = (0..n)
        .map(|i| {
            let data = dir.join(format!("pg-{db}-{i}"));
            serve(
                &data,
                &["--database", &url],
                &format!("server-pg-{db}-{i}.log"),
            )
        })
        .unzip();
    Ours {
        processes,
        addrs,
        ca_der: ca_der(&first),
        admin,
    }
}

/// `cfssl serve` with its own CA, over TLS, with or without the SQLite certdb.
async fn start_cfssl(dir: &Path, with_db: bool) -> (Process, String, Vec<u8>) {
    let dir = dir.join(if with_db { "cfssl-db" } else { "cfssl" });
    std::fs::create_dir_all(&dir).expect("dir");
    let ca_key = KeyType::EcdsaP256.generate().expect("key");
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    params.key_usages = vec![
        rcgen::KeyUsagePurpose::KeyCertSign,
        rcgen::KeyUsagePurpose::CrlSign,
    ];
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "cfssl bench CA");
    params.not_before = time::OffsetDateTime::now_utc() - time::Duration::hours(1);
    params.not_after = time::OffsetDateTime::now_utc() + time::Duration::days(3650);
    let ca = params.self_signed(&ca_key).expect("ca");
    let issuer = rcgen::Issuer::new(params, ca_key);
    let tls_key = KeyType::EcdsaP256.generate().expect("key");
    let mut tls = rcgen::CertificateParams::new(vec!["127.0.0.1".to_string()]).expect("params");
    tls.not_before = time::OffsetDateTime::now_utc() - time::Duration::hours(1);
    tls.not_after = time::OffsetDateTime::now_utc() + time::Duration::days(30);
    let tls_cert = tls.signed_by(&tls_key, &issuer).expect("tls cert");
    let write = |name: &str, text: String| std::fs::write(dir.join(name), text).expect("write");
    write("ca.pem", ca.pem());
    write("ca-key.pem", issuer.key().serialize_pem());
    write("tls.pem", tls_cert.pem());
    write("tls-key.pem", tls_key.serialize_pem());
    write(
        "config.json",
        serde_json::json!({"signing": {
            "default": {"expiry": "2160h", "usages": ["signing", "key encipherment", "server auth", "client auth"]},
            "profiles": {"peer": {"expiry": "2160h", "usages": ["signing", "key encipherment", "server auth", "client auth"]}}
        }})
        .to_string(),
    );
    let port = free_port();
    let mut cmd = Command::new("cfssl");
    cmd.current_dir(&dir).args([
        "serve",
        "-address",
        "127.0.0.1",
        "-port",
        &port.to_string(),
        "-ca",
        "ca.pem",
        "-ca-key",
        "ca-key.pem",
        "-config",
        "config.json",
        "-tls-cert",
        "tls.pem",
        "-tls-key",
        "tls-key.pem",
        "-loglevel",
        "4",
    ]);
    if with_db {
        let db = dir.join("certs.db");
        // cfssl 1.2's certdb schema (certdb/sqlite/migrations).
        let pool = sqlx::SqlitePool::connect_with(
            sqlx::sqlite::SqliteConnectOptions::new()
                .filename(&db)
                .create_if_missing(true),
        )
        .await
        .expect("certdb");
        for statement in [
            "CREATE TABLE certificates (serial_number blob NOT NULL, authority_key_identifier blob NOT NULL,
               ca_label blob, status blob NOT NULL, reason int, expiry timestamp, revoked_at timestamp,
               pem blob NOT NULL, PRIMARY KEY(serial_number, authority_key_identifier))",
            "CREATE TABLE ocsp_responses (serial_number blob NOT NULL, authority_key_identifier blob NOT NULL,
               body blob NOT NULL, expiry timestamp, PRIMARY KEY(serial_number, authority_key_identifier))",
        ] {
            sqlx::query(statement).execute(&pool).await.expect("schema");
        }
        pool.close().await;
        write(
            "db.json",
            serde_json::json!({"driver": "sqlite3", "data_source": db.display().to_string()})
                .to_string(),
        );
        cmd.args(["-db-config", "db.json"]);
    }
    let child = cmd
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("cfssl serve (install golang-cfssl)");
    let addr = format!("127.0.0.1:{port}");
    wait_listening(&addr);
    (Process(child), addr, ca.der().to_vec())
}

/// CPU time (user + system) a process has used so far, from `/proc/PID/stat`.
fn cpu_time(pid: &str) -> Duration {
    let ticks_per_second = 100.0; // USER_HZ on Linux
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|stat| {
            // Fields after the parenthesised command name; utime and stime are 14th and 15th.
            let rest = stat.rsplit_once(')')?.1;
            let fields: Vec<&str> = rest.split_whitespace().collect();
            let utime: f64 = fields.get(11)?.parse().ok()?;
            let stime: f64 = fields.get(12)?.parse().ok()?;
            Some(Duration::from_secs_f64((utime + stime) / ticks_per_second))
        })
        .unwrap_or_default()
}

fn peak_rss_mib(pid: u32) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<f64>().ok())
        })
        .map(|kb| kb / 1024.0)
        .unwrap_or(0.0)
}

/// N nodes, three certificates each; each node renews all three over one new mTLS connection.
async fn storm(addr: &str, ca_der: &[u8], admin: &str, nodes: usize, pid: u32) -> StormResult {
    // Setup (not measured): each node's client, server and peer certificates, signed by our
    // server from CSRs, over keep-alive connections.
    let setup_tls = tls_config(ca_der, None);
    let work = Arc::new(AtomicUsize::new(0));
    let fleet = Arc::new(Mutex::new(Vec::with_capacity(nodes)));
    let mut setup = Vec::new();
    for _ in 0..8 {
        let (work, fleet, tls, addr, admin, ca) = (
            work.clone(),
            fleet.clone(),
            setup_tls.clone(),
            addr.to_string(),
            admin.to_string(),
            ca_der.to_vec(),
        );
        setup.push(tokio::spawn(async move {
            let mut sender = connect(&addr, tls.clone()).await.expect("connect");
            loop {
                let n = work.fetch_add(1, Ordering::Relaxed);
                if n >= nodes {
                    break;
                }
                let ip = format!("10.200.{}.{}", (n >> 8) & 255, n & 255);
                let mut certs = Vec::new();
                for (profile, cn) in [("client", Some(format!("node-{n}"))), ("server", None), ("peer", None)] {
                    let key = KeyType::EcdsaP256.generate().expect("key");
                    // Client certificates carry no names; server and peer ones the node's address.
                    let names = if profile == "client" { vec![] } else { vec![ip.clone()] };
                    let csr = rcgen::CertificateParams::new(names).expect("p").serialize_request(&key).expect("csr").pem().expect("pem");
                    let body = serde_json::json!({"profile": profile, "node": format!("storm-{n}"), "csr": csr, "ips": [ip], "common_name": cn});
                    let (status, answer) = post(&mut sender, "/v1/sign", Some(&admin), body.to_string().into_bytes()).await.expect("sign");
                    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&answer));
                    let v: serde_json::Value = serde_json::from_slice(&answer).expect("json");
                    let der = etcd_ca::pki::pem_certificates(v["certificate_pem"].as_str().expect("pem")).expect("der").remove(0);
                    certs.push((v["serial"].as_str().expect("serial").to_string(), der, key.serialize_der()));
                }
                // Like a real node, each has its TLS identity loaded before it renews; the
                // measured part is the connection, the handshake and the renewal.
                let tls = tls_config(&ca, Some((certs[0].1.clone(), certs[0].2.clone())));
                let body = serde_json::json!({"serials": [certs[1].0, certs[2].0]}).to_string().into_bytes();
                fleet.lock().expect("fleet").push((tls, body));
            }
        }));
    }
    for s in setup {
        s.await.expect("setup");
    }
    let fleet: Vec<_> = std::mem::take(&mut *fleet.lock().expect("fleet"));

    let fleet = Arc::new(fleet);
    let next = Arc::new(AtomicUsize::new(0));
    let latencies = Arc::new(Mutex::new(Vec::with_capacity(nodes)));
    let errors = Arc::new(AtomicUsize::new(0));
    let (server_cpu, client_cpu) = (cpu_time(&pid.to_string()), cpu_time("self"));
    let started = Instant::now();
    let mut workers = Vec::new();
    for _ in 0..64 {
        let (fleet, next, latencies, errors, addr) = (
            fleet.clone(),
            next.clone(),
            latencies.clone(),
            errors.clone(),
            addr.to_string(),
        );
        workers.push(tokio::spawn(async move {
            let mut mine = Vec::new();
            loop {
                let n = next.fetch_add(1, Ordering::Relaxed);
                if n >= fleet.len() {
                    break;
                }
                let (tls, body) = &fleet[n];
                let t0 = Instant::now();
                let ok = match connect(&addr, tls.clone()).await {
                    Some(mut s) => matches!(post(&mut s, "/v1/renew/node", None, body.clone()).await, Some((200, b)) if b.windows(14).filter(|w| w == b"certificate_pe").count() == 3),
                    None => false,
                };
                if ok {
                    mine.push(t0.elapsed());
                } else {
                    errors.fetch_add(1, Ordering::Relaxed);
                }
            }
            latencies.lock().expect("latencies").extend(mine);
        }));
    }
    for w in workers {
        let _ = w.await;
    }
    let seconds = started.elapsed().as_secs_f64();
    let server_cpu = cpu_time(&pid.to_string()) - server_cpu;
    let client_cpu = cpu_time("self") - client_cpu;
    let mut latencies = latencies.lock().expect("latencies").clone();
    latencies.sort();
    let per_cert = |cpu: Duration| cpu.as_secs_f64() * 1e6 / (latencies.len() * 3).max(1) as f64;
    StormResult {
        nodes,
        certificates: latencies.len() * 3,
        server_cpu_us_per_cert: per_cert(server_cpu),
        client_cpu_us_per_cert: per_cert(client_cpu),
        errors: errors.load(Ordering::Relaxed),
        seconds,
        p99_ms: percentile(&latencies, 0.99),
        peak_rss_mib: peak_rss_mib(pid),
    }
}

fn main() {
    let options = Options::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(run(options));
}

async fn run(options: Options) {
    let tmp = tempfile::tempdir().expect("tmp");
    let most = options.requests(32).max(options.requests(1));
    eprintln!("generating {most} CSRs...");
    let csrs = Arc::new(make_csrs(most));
    let in_process = in_process_limit(&csrs);
    eprintln!(
        "in-process limit: {:.0}/s on one core (CSR check {:.0} us, sign {:.0} us)",
        in_process.per_second, in_process.csr_check_us, in_process.sign_us
    );

    let ours = start_ours(tmp.path());
    // PostgreSQL with its durable defaults, one database per target (unless --only leaves
    // them out, e.g. to compare two builds on SQLite with BENCH_ETCD_CA_BIN).
    let with_pg = options
        .only
        .as_ref()
        .is_none_or(|only| only.starts_with("etcd-ca+pg"));
    let pg = with_pg.then(|| postgres_server::PgServer::start_durable(free_port()));
    let on_pg = pg.as_ref().map(|pg| {
        (
            start_ours_on_postgres(tmp.path(), pg, "one", 1),
            start_ours_on_postgres(tmp.path(), pg, "three", 3),
        )
    });
    let our_body = {
        let csrs = csrs.clone();
        Arc::new(move |i: usize| {
            serde_json::json!({"profile": "peer", "node": format!("bench-{}", i % 997), "csr": csrs[i % csrs.len()]}).to_string().into_bytes()
        }) as Arc<dyn Fn(usize) -> Vec<u8> + Send + Sync>
    };
    let (cfssl_db, cfssl_db_addr, cfssl_db_ca) = start_cfssl(tmp.path(), true).await;
    let (cfssl, cfssl_addr, cfssl_ca) = start_cfssl(tmp.path(), false).await;

    let cfssl_body = {
        let csrs = csrs.clone();
        Arc::new(move |i: usize| {
            serde_json::json!({"certificate_request": csrs[i % csrs.len()], "profile": "peer"})
                .to_string()
                .into_bytes()
        }) as Arc<dyn Fn(usize) -> Vec<u8> + Send + Sync>
    };
    let cfssl_ok: fn(u16, &[u8]) -> bool =
        |status, body| status == 200 && body.windows(14).any(|w| w == b"\"success\":true");
    let mut targets = vec![ours.target("etcd-ca", &our_body)];
    if let Some((one, three)) = &on_pg {
        targets.push(one.target("etcd-ca+pg", &our_body));
        targets.push(three.target("etcd-ca+pg x3", &our_body));
    }
    targets.extend([
        Arc::new(Target {
            name: "cfssl+sqlite".into(),
            pids: vec![cfssl_db.0.id()],
            addrs: vec![cfssl_db_addr],
            tls: tls_config(&cfssl_db_ca, None),
            path: "/api/v1/cfssl/sign",
            auth: None,
            body: cfssl_body.clone(),
            ok: cfssl_ok,
        }),
        Arc::new(Target {
            name: "cfssl (no db)".into(),
            pids: vec![cfssl.0.id()],
            addrs: vec![cfssl_addr],
            tls: tls_config(&cfssl_ca, None),
            path: "/api/v1/cfssl/sign",
            auth: None,
            body: cfssl_body,
            ok: cfssl_ok,
        }),
    ]);
    let mut issuance = Vec::new();
    for c in CONCURRENCY {
        for target in &targets {
            if options
                .only
                .as_ref()
                .is_some_and(|only| *only != target.name)
            {
                continue;
            }
            let result = drive(target.clone(), c, options.requests(c)).await;
            eprintln!(
                "{:<14} c={:<2} {:>8.0}/s p50 {:>7.2} ms p99 {:>7.2} ms errors {} cpu/cert server {:.0} us, load generator {:.0} us",
                result.server, c, result.per_second, result.p50_ms, result.p99_ms, result.errors,
                result.server_cpu_us_per_cert, result.client_cpu_us_per_cert
            );
            issuance.push(result);
        }
    }
    drop(cfssl);
    drop(cfssl_db);
    drop(on_pg);
    drop(pg);

    let storm = if options.storm {
        eprintln!("renewal storm: {} nodes...", options.storm_nodes());
        let storm = storm(
            &ours.addrs[0],
            &ours.ca_der,
            &ours.admin,
            options.storm_nodes(),
            ours.processes[0].0.id(),
        )
        .await;
        eprintln!(
            "storm: {:.2} s, p99 {:.1} ms, peak RSS {:.1} MiB, errors {}, server cpu/cert {:.0} us",
            storm.seconds,
            storm.p99_ms,
            storm.peak_rss_mib,
            storm.errors,
            storm.server_cpu_us_per_cert
        );
        Some(storm)
    } else {
        None
    };
    drop(ours);

    let report = Report {
        machine: format!(
            "{} cores",
            std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(0)
        ),
        quick: options.quick,
        in_process_per_second: in_process.per_second,
        in_process_csr_check_us: in_process.csr_check_us,
        in_process_sign_us: in_process.sign_us,
        issuance,
        storm,
    };
    print_table(&report);
    if let Some(parent) = options.json.parent() {
        let _ = std::fs::create_dir_all(parent);
    }
    std::fs::write(
        &options.json,
        serde_json::to_string_pretty(&report).expect("json"),
    )
    .expect("write json");
    println!("\nJSON: {}", options.json.display());
    // A baseline's failed requests are its own result (the errors column of its row); only
    // etcd-ca's make the run fail.
    let baseline_errors: usize = report
        .issuance
        .iter()
        .filter(|x| !x.server.starts_with("etcd-ca"))
        .map(|x| x.errors)
        .sum();
    if baseline_errors > 0 {
        println!("baselines: {baseline_errors} requests failed (see their rows)");
    }
    let failed = report
        .issuance
        .iter()
        .filter(|x| x.server.starts_with("etcd-ca"))
        .map(|x| x.errors)
        .sum::<usize>()
        + report.storm.as_ref().map_or(0, |s| s.errors);
    if failed > 0 {
        eprintln!("{failed} requests failed; see target/bench/server.log");
        std::process::exit(1);
    }
}

fn print_table(r: &Report) {
    let other = |name: &str, c: usize| {
        r.issuance
            .iter()
            .find(|x| x.server == name && x.concurrency == c)
    };
    println!("\n| server | concurrency | certificates/s | p50 ms | p99 ms | errors | vs etcd-ca (SQLite) | vs cfssl+sqlite | vs cfssl (no db) | vs in-process limit | server CPU µs/cert | load generator CPU µs/cert |");
    println!("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |");
    for x in &r.issuance {
        let ours = x.server.starts_with("etcd-ca");
        let ratio = |base: Option<&IssuanceResult>| match base {
            Some(b) if ours && b.per_second > 0.0 => {
                format!("{:.1}x", x.per_second / b.per_second)
            }
            _ => "".into(),
        };
        let limit = if ours {
            format!("{:.0}%", 100.0 * x.per_second / r.in_process_per_second)
        } else {
            String::new()
        };
        let vs_sqlite = match other("etcd-ca", x.concurrency) {
            Some(b) if x.server != "etcd-ca" => ratio(Some(b)),
            _ => String::new(),
        };
        println!(
            "| {} | {} | {:.0} | {:.2} | {:.2} | {} | {} | {} | {} | {} | {:.0} | {:.0} |",
            x.server,
            x.concurrency,
            x.per_second,
            x.p50_ms,
            x.p99_ms,
            x.errors,
            vs_sqlite,
            ratio(other("cfssl+sqlite", x.concurrency)),
            ratio(other("cfssl (no db)", x.concurrency)),
            limit,
            x.server_cpu_us_per_cert,
            x.client_cpu_us_per_cert
        );
    }
    println!(
        "\nIn-process limit (CSR parse + verify + sign, one core, no I/O): {:.0}/s ({:.0} µs per certificate: CSR parse and signature check {:.0} µs, building and signing the certificate {:.0} µs)",
        r.in_process_per_second,
        1e6 / r.in_process_per_second.max(1e-9),
        r.in_process_csr_check_us,
        r.in_process_sign_us
    );
    // What the machine could do if both server and load generator kept every core busy at the
    // CPU per certificate just measured: where the rate is bounded by CPU, not by waiting.
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get()) as f64;
    for x in r.issuance.iter().filter(|x| x.server == "etcd-ca") {
        let cpu_us = x.server_cpu_us_per_cert + x.client_cpu_us_per_cert;
        let ceiling = cores * 1e6 / cpu_us.max(1e-9);
        let vs_cfssl = other("cfssl+sqlite", x.concurrency)
            .filter(|b| b.per_second > 0.0)
            .map(|b| format!(", {:.1}x cfssl+sqlite", ceiling / b.per_second))
            .unwrap_or_default();
        println!(
            "CPU ceiling at c={}: {cores:.0} cores / {cpu_us:.0} µs per certificate (server + load generator) = {ceiling:.0}/s{vs_cfssl}; measured {:.0}% of it",
            x.concurrency,
            100.0 * x.per_second / ceiling
        );
    }
    if let Some(s) = &r.storm {
        println!(
            "Renewal storm: {} nodes, {} certificates over {} mTLS connections in {:.2} s ({:.0} certificates/s), p99 {:.1} ms per node, peak server RSS {:.1} MiB, CPU per certificate {:.0} µs in the server and {:.0} µs in the load generator, {} errors",
            s.nodes, s.certificates, s.nodes, s.seconds, s.certificates as f64 / s.seconds.max(1e-9), s.p99_ms, s.peak_rss_mib, s.server_cpu_us_per_cert, s.client_cpu_us_per_cert, s.errors
        );
    }
}
