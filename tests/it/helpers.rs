//! Helpers that make each test read like its scenario: run the CLI, snapshot a data dir, start a
//! three-member TLS etcd cluster from a set of PKI dirs, call etcdctl, do a TLS handshake.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tempfile::TempDir;

/// The binary under test, built once by cargo for every integration test.
pub const ETCD_CA: &str = env!("CARGO_BIN_EXE_etcd-ca");

/// What a finished command did.
#[derive(Debug)]
pub struct Run {
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    /// Asserts success and returns self, showing stderr when it failed.
    #[track_caller]
    pub fn ok(self) -> Self {
        assert_eq!(
            self.code,
            Some(0),
            "command failed:\n{}{}",
            self.stdout,
            self.stderr
        );
        self
    }

    /// Asserts failure (non-zero exit) and returns stderr.
    #[track_caller]
    pub fn fails(self) -> String {
        assert!(
            self.code.is_some() && self.code != Some(0),
            "command unexpectedly succeeded:\n{}{}",
            self.stdout,
            self.stderr
        );
        self.stderr
    }
}

fn run(cmd: &mut Command) -> Run {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    Run {
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// A clock the test moves for the processes it starts (debug builds read the offset file named
/// by `ETCD_CA_CLOCK_OFFSET_FILE` at every "now"): expiry without sleeping.
pub struct TestClock {
    file: PathBuf,
}

impl TestClock {
    /// A clock at the real time, kept in `dir`.
    pub fn new(dir: &Path) -> Self {
        let file = dir.join("clock-offset");
        std::fs::write(&file, "0").unwrap();
        Self { file }
    }

    /// Moves every process started with [`Self::env`] forward by `by`.
    pub fn advance(&self, by: Duration) {
        let now: i64 = std::fs::read_to_string(&self.file)
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        let by = i64::try_from(by.as_secs()).unwrap();
        std::fs::write(&self.file, (now + by).to_string()).unwrap();
    }

    /// Sets every such process's clock to the real time plus `seconds` (negative: in the past).
    pub fn set_offset(&self, seconds: i64) {
        std::fs::write(&self.file, seconds.to_string()).unwrap();
    }

    /// The environment a process needs to read this clock.
    pub fn env(&self) -> (&'static str, &Path) {
        (etcd_ca::clock::OFFSET_FILE_ENV, &self.file)
    }
}

/// `text` with `from` replaced by `to` exactly `count` times; panics when `from` does not occur
/// that often, so a policy patch never silently does nothing after the policy changed.
#[track_caller]
pub fn patch(text: &str, from: &str, to: &str, count: usize) -> String {
    let found = text.matches(from).count();
    assert!(
        found >= count,
        "the patch {from:?} -> {to:?} needs {count} occurrences, the text has {found}"
    );
    text.replacen(from, to, count)
}

/// The default policy with every `(from, to, count)` patch applied (see [`patch`]).
#[track_caller]
pub fn patched_policy(patches: &[(&str, &str, usize)]) -> String {
    patches.iter().fold(
        etcd_ca::policy::DEFAULT_POLICY.to_string(),
        |text, (from, to, count)| patch(&text, from, to, *count),
    )
}

/// The passphrase of every test CA's keys.
pub const PASSPHRASE: &str = "test passphrase, not a secret";

/// Runs `etcd-ca ARGS...` (with the test CAs' passphrase in the environment).
pub fn etcd_ca<I, S>(args: I) -> Run
where
    I: IntoIterator<Item = S>,
    S: AsRef<std::ffi::OsStr>,
{
    run(Command::new(ETCD_CA)
        .args(args)
        .env_remove("ETCD_CA_DATA_DIR")
        .env_remove("ETCD_CA_PASSPHRASE_FILE")
        .env("ETCD_CA_PASSPHRASE", PASSPHRASE))
}

/// The CA key of a test data dir, opened with the test passphrase (for tests that forge).
pub fn ca_key(ca_dir: &Path) -> rcgen::KeyPair {
    let sealed = std::fs::read_to_string(ca_dir.join("ca/gen-1.key")).unwrap();
    let passphrase = etcd_ca::authority::keyfile::Passphrase::new(PASSPHRASE).unwrap();
    let pem_text = etcd_ca::authority::keyfile::open(&sealed, Some(&passphrase)).unwrap();
    rcgen::KeyPair::from_pem(&pem_text).unwrap()
}

/// Runs openssl in `dir`, panicking with its stderr on failure; returns stdout.
pub fn openssl(dir: &Path, args: &[&str]) -> String {
    let out = Command::new(require_tool("openssl"))
        .current_dir(dir)
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "openssl {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A tool the tests need; the test command installs it, so a missing one is a loud failure.
pub fn require_tool(name: &str) -> &str {
    let found = std::env::var_os("PATH")
        .map(|paths| std::env::split_paths(&paths).any(|p| p.join(name).is_file()))
        .unwrap_or(false);
    assert!(
        found,
        "{name} is not installed: run the README's test command (scripts/test), which installs it"
    );
    name
}

/// Every file under `dir` with a hash of its content: compare two to prove nothing changed.
pub fn snapshot(dir: &Path) -> BTreeMap<PathBuf, String> {
    let mut files = BTreeMap::new();
    if !dir.exists() {
        return files;
    }
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path.clone());
                files.insert(path.strip_prefix(dir).unwrap().to_path_buf(), "dir".into());
            } else {
                let hash = etcd_ca::pki::sha256_hex(&std::fs::read(&path).unwrap());
                files.insert(path.strip_prefix(dir).unwrap().to_path_buf(), hash);
            }
        }
    }
    files
}

/// A CA data dir in a temporary directory, created with `etcd-ca init`.
pub struct TestCa {
    pub tmp: TempDir,
    pub dir: PathBuf,
}

impl TestCa {
    pub fn init(extra: &[&str]) -> Self {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("ca");
        // Few KDF iterations: tests open the key in many short-lived processes.
        let mut args = vec![
            "init",
            "--data-dir",
            dir.to_str().unwrap(),
            "--kdf-iterations",
            "1000",
        ];
        args.extend_from_slice(extra);
        etcd_ca(&args).ok();
        Self { tmp, dir }
    }

    pub fn data_dir(&self) -> &str {
        self.dir.to_str().unwrap()
    }

    /// `etcd-ca SUBCOMMAND --data-dir DIR ARGS...`
    pub fn cli(&self, subcommand: &str, args: &[&str]) -> Run {
        let mut all = vec![subcommand, "--data-dir", self.data_dir()];
        all.extend_from_slice(args);
        etcd_ca(&all)
    }

    /// Issues a certificate into `out` and returns its serial.
    pub fn issue(&self, out: &Path, args: &[&str]) -> String {
        let mut all = vec!["--out", out.to_str().unwrap()];
        all.extend_from_slice(args);
        issued_serial(&self.cli("issue", &all).ok())
    }

    /// Creates a bootstrap token with `etcd-ca token create ARGS... --json` and returns it.
    pub fn token(&self, args: &[&str]) -> String {
        let mut all = vec!["create", "--data-dir", self.data_dir(), "--json"];
        all.extend_from_slice(args);
        let mut cmd = vec!["token"];
        cmd.extend(all);
        let created: serde_json::Value = serde_json::from_str(&etcd_ca(&cmd).ok().stdout).unwrap();
        created["token"].as_str().unwrap().to_string()
    }

    /// Writes the CRL to `path`.
    pub fn write_crl(&self, path: &Path) {
        self.cli("crl", &["--out", path.to_str().unwrap()]).ok();
    }
}

/// A client identity for etcdctl and TLS handshakes.
#[derive(Clone, Debug)]
pub struct ClientCreds {
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl ClientCreds {
    /// The `client.crt`/`client.key`/`ca.crt` that `etcd-ca issue --profile client` wrote.
    pub fn in_dir(dir: &Path) -> Self {
        Self {
            ca: dir.join("ca.crt"),
            cert: dir.join("client.crt"),
            key: dir.join("client.key"),
        }
    }
}

/// Runs etcdctl (v3 API) against `endpoints` with the given client identity.
pub fn etcdctl(endpoints: &str, creds: &ClientCreds, args: &[&str]) -> Run {
    run(Command::new(require_tool("etcdctl"))
        .env("ETCDCTL_API", "3")
        .arg(format!("--endpoints={endpoints}"))
        .arg(format!("--cacert={}", creds.ca.display()))
        .arg(format!("--cert={}", creds.cert.display()))
        .arg(format!("--key={}", creds.key.display()))
        .args(["--dial-timeout=3s", "--command-timeout=5s"])
        .args(args))
}

/// Ports of one test cluster; every test that starts a cluster uses its own pair.
#[derive(Clone, Copy, Debug)]
pub struct Ports {
    pub client: u16,
    pub peer: u16,
}

/// A running three-member TLS etcd cluster on 127.0.0.11, .12 and .13.
pub struct EtcdCluster {
    pub ports: Ports,
    members: Vec<Child>,
    pub logs: Vec<PathBuf>,
    _data: TempDir,
}

impl EtcdCluster {
    pub fn ip(member: usize) -> IpAddr {
        format!("127.0.0.1{member}").parse().unwrap()
    }

    pub fn endpoint(&self, member: usize) -> String {
        format!("https://127.0.0.1{member}:{}", self.ports.client)
    }

    pub fn endpoints(&self) -> String {
        (1..=3)
            .map(|m| self.endpoint(m))
            .collect::<Vec<_>>()
            .join(",")
    }

    pub fn client_addr(&self, member: usize) -> SocketAddr {
        SocketAddr::new(Self::ip(member), self.ports.client)
    }

    /// Starts members n1..n3; member i's TLS flags come from `etcd-ca etcd-flags` for
    /// `pki_dirs[i-1]`. Waits until every member reports healthy to `health_client`.
    pub fn start(pki_dirs: &[PathBuf; 3], ports: Ports, health_client: &ClientCreds) -> Self {
        let etcd = require_tool("etcd");
        let data = tempfile::tempdir().unwrap();
        let token = format!("etcd-ca-test-{}", ports.client);
        let initial_cluster = (1..=3)
            .map(|m| format!("n{m}=https://127.0.0.1{m}:{}", ports.peer))
            .collect::<Vec<_>>()
            .join(",");
        let mut members = Vec::new();
        let mut logs = Vec::new();
        for (i, pki) in pki_dirs.iter().enumerate() {
            let m = i + 1;
            let ip = Self::ip(m);
            let tls = etcd_ca([
                "etcd-flags",
                "--node",
                &format!("n{m}"),
                "--dir",
                pki.to_str().unwrap(),
            ])
            .ok()
            .stdout;
            let tls_flags: Vec<String> = tls
                .lines()
                .map(|l| l.trim().trim_end_matches('\\').trim().to_string())
                .filter(|l| !l.is_empty())
                .collect();
            let log_path = data.path().join(format!("n{m}.log"));
            let log = std::fs::File::create(&log_path).unwrap();
            let child = Command::new(etcd)
                .args(&tls_flags)
                .arg(format!(
                    "--data-dir={}",
                    data.path().join(format!("n{m}")).display()
                ))
                .args(["--logger=zap", "--log-outputs=stderr"])
                .arg(format!(
                    "--listen-client-urls=https://{ip}:{}",
                    ports.client
                ))
                .arg(format!(
                    "--advertise-client-urls=https://{ip}:{}",
                    ports.client
                ))
                .arg(format!("--listen-peer-urls=https://{ip}:{}", ports.peer))
                .arg(format!(
                    "--initial-advertise-peer-urls=https://{ip}:{}",
                    ports.peer
                ))
                .arg(format!("--initial-cluster={initial_cluster}"))
                .arg("--initial-cluster-state=new")
                .arg(format!("--initial-cluster-token={token}"))
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(log)
                .spawn()
                .expect("start etcd");
            members.push(child);
            logs.push(log_path);
        }
        let cluster = Self {
            ports,
            members,
            logs,
            _data: data,
        };
        cluster.wait_healthy(health_client, Duration::from_secs(60));
        cluster
    }

    /// Waits until `endpoint health` succeeds on every member.
    pub fn wait_healthy(&self, creds: &ClientCreds, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        loop {
            let run = etcdctl(&self.endpoints(), creds, &["endpoint", "health"]);
            if run.code == Some(0) {
                return;
            }
            if Instant::now() > deadline {
                let tail: String = self
                    .logs
                    .iter()
                    .map(|l| {
                        let text = std::fs::read_to_string(l).unwrap_or_default();
                        let lines: Vec<&str> = text.lines().collect();
                        format!(
                            "--- {}\n{}\n",
                            l.display(),
                            lines[lines.len().saturating_sub(15)..].join("\n")
                        )
                    })
                    .collect();
                panic!(
                    "cluster not healthy after {timeout:?}:\n{}{}\n{tail}",
                    run.stdout, run.stderr
                );
            }
            std::thread::sleep(Duration::from_millis(300));
        }
    }

    /// Everything the members logged so far.
    pub fn log_text(&self) -> String {
        self.logs
            .iter()
            .map(|l| std::fs::read_to_string(l).unwrap_or_default())
            .collect()
    }
}

impl Drop for EtcdCluster {
    fn drop(&mut self) {
        for child in &mut self.members {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// A TLS client (rustls, ring) trusting the CA bundle at `ca`, optionally presenting a client
/// certificate.
pub fn tls_client_config(ca: &Path, client: Option<&ClientCreds>) -> Arc<rustls::ClientConfig> {
    build_tls_client_config(ca, client).expect("TLS client configuration")
}

/// The same, or None while the files are being replaced (a key that does not match its
/// certificate yet): clients that reload their files per connection retry.
pub fn try_tls_client_config(ca: &Path, client: &ClientCreds) -> Option<Arc<rustls::ClientConfig>> {
    build_tls_client_config(ca, Some(client)).ok()
}

fn build_tls_client_config(
    ca: &Path,
    client: Option<&ClientCreds>,
) -> Result<Arc<rustls::ClientConfig>, String> {
    let e = |e: &dyn std::fmt::Display| e.to_string();
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(ca).map_err(|x| e(&x))? {
        roots.add(cert.map_err(|x| e(&x))?).map_err(|x| e(&x))?;
    }
    let builder = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|x| e(&x))?
    .with_root_certificates(roots);
    let config = match client {
        Some(c) => {
            let chain = CertificateDer::pem_file_iter(&c.cert)
                .map_err(|x| e(&x))?
                .collect::<Result<Vec<_>, _>>()
                .map_err(|x| e(&x))?;
            let key = PrivateKeyDer::from_pem_file(&c.key).map_err(|x| e(&x))?;
            builder
                .with_client_auth_cert(chain, key)
                .map_err(|x| e(&x))?
        }
        None => builder.with_no_client_auth(),
    };
    Ok(Arc::new(config))
}

/// Connects to `addr` and completes a TLS handshake expecting the server to be `name`.
/// Returns the stream, or the handshake error as text.
pub fn tls_connect(
    addr: SocketAddr,
    name: IpAddr,
    config: Arc<rustls::ClientConfig>,
) -> Result<rustls::StreamOwned<rustls::ClientConnection, TcpStream>, String> {
    let mut sock =
        TcpStream::connect_timeout(&addr, Duration::from_secs(5)).map_err(|e| e.to_string())?;
    sock.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut conn = rustls::ClientConnection::new(config, ServerName::IpAddress(name.into()))
        .map_err(|e| e.to_string())?;
    while conn.is_handshaking() {
        conn.complete_io(&mut sock).map_err(|e| e.to_string())?;
    }
    Ok(rustls::StreamOwned::new(conn, sock))
}

/// POSTs a JSON body over an established TLS stream (HTTP/1.1, Connection: close) and returns
/// the status code and body.
pub fn https_post_json(
    mut stream: rustls::StreamOwned<rustls::ClientConnection, TcpStream>,
    host: &str,
    path: &str,
    body: &str,
) -> (u16, String) {
    let request = format!(
        "POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(request.as_bytes()).unwrap();
    let mut response = Vec::new();
    // A peer closing without close_notify is fine for a Connection: close response.
    let _ = stream.read_to_end(&mut response);
    let text = String::from_utf8_lossy(&response).into_owned();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = text.split("\r\n\r\n").nth(1).unwrap_or("").to_string();
    (status, body)
}

/// A running `etcd-ca serve` on an ephemeral port with a fresh data dir, plus an admin token.
pub struct CaServer {
    pub ca: TestCa,
    pub url: String,
    pub fingerprint: String,
    pub admin_token: String,
    /// The admin token in a file, for `--admin-token-file`.
    pub admin_token_file: PathBuf,
    pub log: PathBuf,
    serve_args: Vec<String>,
    /// Extra environment of the server process (a [`TestClock`]).
    env: Vec<(String, PathBuf)>,
    child: Option<Child>,
}

impl CaServer {
    /// Initialises a CA (with `init_args`), creates an admin token, starts the server.
    pub fn start(init_args: &[&str], serve_args: &[&str]) -> Self {
        Self::serve(TestCa::init(init_args), serve_args, None)
    }

    /// [`Self::start`] with the server on `clock`.
    pub fn start_with_clock(init_args: &[&str], serve_args: &[&str], clock: &TestClock) -> Self {
        Self::serve(TestCa::init(init_args), serve_args, Some(clock))
    }

    /// Starts a server on an existing data dir (e.g. a restored one) with a new admin token.
    pub fn start_on(dir: PathBuf, serve_args: &[&str]) -> Self {
        let tmp = tempfile::tempdir().unwrap();
        Self::serve(TestCa { tmp, dir }, serve_args, None)
    }

    /// A server on the shared PostgreSQL `database` with a data dir of its own; `create`: the
    /// first one, which creates the CA there (`init --database`).
    pub fn start_shared(database: &str, create: bool, serve_args: &[&str]) -> Self {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("ca");
        if create {
            etcd_ca([
                "init",
                "--data-dir",
                dir.to_str().unwrap(),
                "--kdf-iterations",
                "1000",
                "--database",
                database,
            ])
            .ok();
        }
        let mut args: Vec<&str> = serve_args.to_vec();
        args.extend(["--database", database]);
        Self::serve(TestCa { tmp, dir }, &args, None)
    }

    fn serve(ca: TestCa, serve_args: &[&str], clock: Option<&TestClock>) -> Self {
        let mut admin = vec!["admin-token", "create", "--data-dir", ca.data_dir()];
        if let Some(i) = serve_args.iter().position(|a| *a == "--database") {
            admin.extend(["--database", serve_args[i + 1]]);
        }
        let admin_token = etcd_ca(&admin).ok().stdout.trim().to_string();
        let admin_token_file = ca.tmp.path().join("admin.token");
        std::fs::write(&admin_token_file, format!("{admin_token}\n")).unwrap();
        let mut server = Self {
            ca,
            url: String::new(),
            fingerprint: String::new(),
            admin_token,
            admin_token_file,
            log: PathBuf::new(),
            serve_args: serve_args.iter().map(|s| s.to_string()).collect(),
            env: clock
                .map(|c| {
                    let (name, file) = c.env();
                    vec![(name.to_string(), file.to_path_buf())]
                })
                .unwrap_or_default(),
            child: None,
        };
        server.spawn();
        server
    }

    /// SIGKILLs the server (no chance to clean up) and leaves it down.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Points a stopped server at another database URL (its next start uses it).
    pub fn set_database(&mut self, url: &str) {
        let i = self
            .serve_args
            .iter()
            .position(|a| a == "--database")
            .expect("a server on a shared database");
        self.serve_args[i + 1] = url.to_string();
    }

    /// Starts a stopped or killed server again on its data dir.
    pub fn start_again(&mut self) {
        assert!(self.child.is_none(), "the server is running");
        self.spawn();
    }

    /// SIGKILLs the server (no chance to clean up) and starts it again on the same data dir.
    pub fn crash_and_restart(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        self.spawn();
    }

    /// Starts the server again on the same data dir (and the same --listen, if one was given).
    pub fn restart(&mut self) {
        self.stop();
        self.spawn();
    }

    fn spawn(&mut self) {
        use std::io::BufRead;
        self.log = self.ca.tmp.path().join("serve.log");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .unwrap();
        let listen: &[&str] = if self.serve_args.iter().any(|a| a == "--listen") {
            &[]
        } else {
            &["--listen", "127.0.0.1:0"]
        };
        let mut child = Command::new(ETCD_CA)
            .args(["serve", "--data-dir", self.ca.data_dir()])
            .args(listen)
            .args(&self.serve_args)
            .env("ETCD_CA_LOG", "info")
            .env("ETCD_CA_PASSPHRASE", PASSPHRASE)
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .expect("start etcd-ca serve");
        let stdout = child.stdout.take().unwrap();
        let mut line = String::new();
        std::io::BufReader::new(stdout)
            .read_line(&mut line)
            .unwrap();
        assert!(
            line.starts_with("etcd-ca serving https://"),
            "unexpected first line {line:?}; log:\n{}",
            std::fs::read_to_string(&self.log).unwrap_or_default()
        );
        let mut words = line.split_whitespace();
        self.url = words.nth(2).unwrap().to_string();
        self.fingerprint = words.nth(2).unwrap().trim_end_matches(')').to_string();
        self.child = Some(child);
    }

    /// The admin CLI against this server: `etcd-ca ARGS... --server URL --ca-fingerprint FP
    /// --admin-token-file F`, pinned to the fingerprint the server printed at its last start.
    pub fn remote(&self, args: &[&str]) -> Run {
        admin_cli(&self.url, &self.fingerprint, &self.admin_token_file, args)
    }

    /// A bootstrap token for `node` at `ip` (profiles server and peer), created through this
    /// server as an admin does: `token create --json`.
    pub fn remote_token(&self, node: &str, ip: &str) -> String {
        let run = self
            .remote(&["token", "create", "--node", node, "--ip", ip, "--json"])
            .ok();
        let answer: serde_json::Value = serde_json::from_str(&run.stdout).unwrap();
        answer["token"].as_str().unwrap().to_string()
    }

    /// `issue --profile client --node NODE --cn NODE --out OUT` through this server; the serial.
    pub fn remote_issue_client(&self, out: &Path, node: &str) -> String {
        issued_serial(
            &self
                .remote(&[
                    "issue",
                    "--profile",
                    "client",
                    "--node",
                    node,
                    "--cn",
                    node,
                    "--out",
                    out.to_str().unwrap(),
                ])
                .ok(),
        )
    }

    /// A page of the web view as a logged-in admin gets it (the session cookie holds the admin
    /// token); it must answer 200.
    pub async fn ui_page(&self, path: &str) -> String {
        let page = self
            .client()
            .send(
                hyper::Method::GET,
                path,
                None,
                &[(
                    hyper::header::COOKIE,
                    format!("etcd_ca_admin={}", self.admin_token),
                )],
            )
            .await
            .unwrap();
        assert_eq!(page.status, 200, "{path}");
        String::from_utf8(page.body.to_vec()).unwrap()
    }

    /// A client that trusts this server by its CA fingerprint.
    pub fn client(&self) -> etcd_ca::client::ApiClient {
        etcd_ca::client::ApiClient::new(
            &self.url,
            etcd_ca::client::Trust::Fingerprint(self.fingerprint.clone()),
            None,
        )
        .unwrap()
    }

    /// The same, authenticated as admin.
    pub fn admin(&self) -> etcd_ca::client::ApiClient {
        self.client().with_bearer(self.admin_token.clone())
    }

    /// A client presenting the certificate and key in these PEM files.
    pub fn client_with_certificate(&self, cert: &Path, key: &Path) -> etcd_ca::client::ApiClient {
        let chain =
            etcd_ca::pki::pem_certificates(&std::fs::read_to_string(cert).unwrap()).unwrap();
        let key = PrivateKeyDer::from_pem_file(key).unwrap();
        etcd_ca::client::ApiClient::new(
            &self.url,
            etcd_ca::client::Trust::Fingerprint(self.fingerprint.clone()),
            Some(etcd_ca::client::Identity { chain, key }),
        )
        .unwrap()
    }

    /// The certificate the server presents in a TLS handshake now (verified against the
    /// first CA generation).
    pub fn presented_certificate(&self) -> etcd_ca::pki::CertSummary {
        let addr: SocketAddr = self
            .url
            .trim_start_matches("https://")
            .parse()
            .expect("the server URL is https://IP:PORT");
        let config = tls_client_config(&self.ca.dir.join("ca/gen-1.crt"), None);
        let stream = tls_connect(addr, addr.ip(), config).expect("TLS handshake with the server");
        let der = stream.conn.peer_certificates().unwrap()[0].to_vec();
        etcd_ca::pki::CertSummary::from_der(&der).unwrap()
    }

    /// The server's process id, to signal it.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().unwrap().id()
    }

    /// Stops the server with SIGTERM and waits for it; returns its exit code.
    pub fn stop(&mut self) -> Option<i32> {
        let mut child = self.child.take()?;
        let _ = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                return status.code();
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!("etcd-ca serve did not stop on SIGTERM");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for CaServer {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// A running `etcd-ca agent`, its log, and the file its --on-renew hook appends to.
pub struct AgentProcess {
    pub log: PathBuf,
    pub hooks: PathBuf,
    child: Child,
}

impl AgentProcess {
    pub fn spawn(args: &[&str], log: PathBuf, hooks: PathBuf) -> Self {
        Self::spawn_on(args, log, hooks, None)
    }

    /// [`Self::spawn`] with the agent on `clock` (when given).
    pub fn spawn_on(
        args: &[&str],
        log: PathBuf,
        hooks: PathBuf,
        clock: Option<&TestClock>,
    ) -> Self {
        let log_file = std::fs::File::create(&log).unwrap();
        let hook = format!(
            "echo \"$ETCD_CA_EVENT $ETCD_CA_CHANGED_FILES\" >> {}",
            hooks.display()
        );
        let child = Command::new(ETCD_CA)
            .arg("agent")
            .args(args)
            .args(["--on-renew", &hook])
            .env("ETCD_CA_LOG", "info")
            .envs(clock.map(TestClock::env))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log_file)
            .spawn()
            .expect("start etcd-ca agent");
        Self { log, hooks, child }
    }

    /// How many times the hook ran for `event` (enroll, renew).
    pub fn hook_count(&self, event: &str) -> usize {
        std::fs::read_to_string(&self.hooks)
            .unwrap_or_default()
            .lines()
            .filter(|l| l.starts_with(event))
            .count()
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn signal(&self, signal: &str) {
        let _ = Command::new("kill")
            .args([signal, &self.child.id().to_string()])
            .status();
    }

    /// SIGTERM, then wait; returns the exit code.
    pub fn stop(mut self) -> Option<i32> {
        self.signal("-TERM");
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return status.code();
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        None
    }
}

impl Drop for AgentProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Polls `condition` every 200 ms until it holds or `timeout` passes; panics with `what`.
#[track_caller]
pub fn wait_for(what: &str, timeout: Duration, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !condition() {
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// The admin CLI against a running server, as the README tells an operator to run it:
/// `etcd-ca ARGS... --server URL --ca-fingerprint PIN --admin-token-file FILE`.
pub fn admin_cli(url: &str, pin: &str, token_file: &Path, args: &[&str]) -> Run {
    let mut all: Vec<&str> = args.to_vec();
    all.extend([
        "--server",
        url,
        "--ca-fingerprint",
        pin,
        "--admin-token-file",
        token_file.to_str().unwrap(),
    ]);
    etcd_ca(&all)
}

/// The serial `etcd-ca issue` printed ("... certificate SERIAL ...").
pub fn issued_serial(run: &Run) -> String {
    run.stdout
        .split_whitespace()
        .skip_while(|w| *w != "certificate")
        .nth(1)
        .expect("issue prints the serial")
        .to_string()
}

/// `etcd-ca agent --once` for `node` into `dir` against the server at `url`, pinned to `pin`:
/// add flags (`--token`, `--renew-now`, hooks) and environment, then run it.
pub fn agent_once(url: &str, pin: &str, node: &str, profiles: &str, dir: &Path) -> Command {
    let mut command = Command::new(ETCD_CA);
    command
        .args(["agent", "--once", "--server", url, "--ca-fingerprint", pin])
        .args(["--node", node, "--profiles", profiles])
        .arg("--dir")
        .arg(dir)
        .stdin(Stdio::null());
    command
}

/// Runs a command built by [`agent_once`] and the like; its outcome.
pub fn run_command(command: &mut Command) -> Run {
    run(command)
}

/// `etcd-ca agent --once` for `node` into `pki`, against `servers` pinned to `fingerprint`,
/// run to completion.
pub fn run_agent_once(
    servers: &str,
    fingerprint: &str,
    node: &str,
    pki: &Path,
    profiles: &str,
    extra: &[&str],
) -> Run {
    let mut args = vec![
        "agent",
        "--once",
        "--server",
        servers,
        "--ca-fingerprint",
        fingerprint,
        "--node",
        node,
        "--dir",
        pki.to_str().unwrap(),
        "--profiles",
        profiles,
    ];
    args.extend_from_slice(extra);
    etcd_ca(&args)
}
