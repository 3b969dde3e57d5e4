//! The command line: clap definitions, and one thin function per command that calls into the
//! library and prints the result. Flags are turned into validated types (node names, SANs,
//! durations) by clap's parsers before anything runs.

use std::io::Write;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand, ValueEnum};
use time::OffsetDateTime;

use std::sync::Arc;

use crate::authority::keyfile::Passphrase;
use crate::authority::{
    Authority, AuthorityError, CrlIssuer, DataDir, InitOptions, IssueRequest, KeyProtection,
    RevocationReason, TokenRequest,
};
use crate::duration::{rfc3339, HumanDuration};
use crate::etcd_flags::{self, FlagFormat};
use crate::fsutil::{self, FsError};
use crate::inspect::{self, Expiry};
use crate::names::{DnsName, NodeName, San};
use crate::pki::{KeyType, PkiError};
use crate::policy::{Policy, PolicyError};
use crate::store::{CertificateFilter, CertificateState};
use crate::wire::{AuditEntry, CertificateInfo};

/// Errors the CLI reports. Each carries enough to act on.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    #[error(transparent)]
    Authority(#[from] AuthorityError),
    #[error(transparent)]
    Policy(#[from] PolicyError),
    #[error(transparent)]
    Fs(#[from] FsError),
    #[error("{}: {source}", path.display())]
    Certificate {
        path: PathBuf,
        #[source]
        source: PkiError,
    },
    /// The command line itself is wrong (a missing or malformed flag): exit status 2.
    #[error("{0}")]
    Usage(String),
    /// The command ran and could not do what was asked, for the reason given: exit status 1.
    #[error("{0}")]
    Failed(String),
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        addr: std::net::SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot write to standard output: {0}")]
    Stdout(#[from] std::io::Error),
    #[error("cannot encode JSON: {0}")]
    Json(#[from] serde_json::Error),
    #[error(transparent)]
    Client(#[from] crate::client::ClientError),
    #[error(transparent)]
    Name(#[from] crate::names::NameError),
    #[error(transparent)]
    Agent(#[from] crate::agent::AgentError),
    #[error(transparent)]
    ServeLock(#[from] crate::authority::ServeLockError),
}

impl CliError {
    /// True when standard output was closed by its reader (`etcd-ca list | head`): not a
    /// failure of the command.
    pub fn is_broken_pipe(&self) -> bool {
        matches!(self, CliError::Stdout(e) if e.kind() == std::io::ErrorKind::BrokenPipe)
    }

    /// The process exit status for this error: 2 when the command line was wrong, else 1
    /// (`inspect` returns 3 itself, as a result rather than an error).
    pub fn exit_code(&self) -> u8 {
        match self {
            CliError::Usage(_) => 2,
            _ => 1,
        }
    }
}

/// A certificate authority built for etcd clusters.
#[derive(Debug, Parser)]
#[command(name = "etcd-ca", version, about, long_about = None, propagate_version = true)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Args)]
pub struct DataDirArg {
    /// The CA's data dir (database, CA keys, policy) [default: /var/lib/etcd-ca].
    #[arg(long, env = "ETCD_CA_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// File holding the passphrase of the CA keys (or set ETCD_CA_PASSPHRASE).
    #[arg(long, env = "ETCD_CA_PASSPHRASE_FILE")]
    pub passphrase_file: Option<PathBuf>,
}

/// Where the CA lives when neither --data-dir nor ETCD_CA_DATA_DIR names it.
pub const DEFAULT_DATA_DIR: &str = "/var/lib/etcd-ca";

impl DataDirArg {
    /// The data dir: the one named, else the default.
    pub fn path(&self) -> &Path {
        self.data_dir
            .as_deref()
            .unwrap_or(Path::new(DEFAULT_DATA_DIR))
    }

    /// The passphrase, from --passphrase-file or ETCD_CA_PASSPHRASE, if one was given.
    fn passphrase(&self) -> Result<Option<Passphrase>, CliError> {
        if let Some(file) = &self.passphrase_file {
            let text = zeroize::Zeroizing::new(read_text(file)?);
            return Ok(Some(Passphrase::new(&text)?));
        }
        match std::env::var("ETCD_CA_PASSPHRASE") {
            Ok(text) => Ok(Some(Passphrase::new(&zeroize::Zeroizing::new(text))?)),
            Err(_) => Ok(None),
        }
    }

    /// Opens the data dir with its passphrase.
    async fn open(&self) -> Result<Authority, CliError> {
        // No dir named and none at the default place: say how to name one, not how to create
        // a second CA.
        if self.data_dir.is_none() && DataDir::new(self.path()).existing_ca_marker().is_none() {
            return Err(CliError::Usage(format!(
                "no CA in {}, the default data dir: give --data-dir DIR (or ETCD_CA_DATA_DIR) \
                 where the CA lives, or --server URL to use a running CA server",
                self.path().display()
            )));
        }
        let passphrase = self.passphrase()?;
        Ok(Authority::open(self.path())
            .await?
            .with_passphrase(passphrase))
    }

    /// For a new CA: when --passphrase-file names a file that does not exist yet, writes a
    /// strong random passphrase there (only its owner can read it), so one command creates a
    /// CA. Returns the file it wrote.
    fn new_passphrase_file(&self, unencrypted: bool) -> Result<Option<PathBuf>, CliError> {
        match &self.passphrase_file {
            Some(file) if !file.exists() && !unencrypted => {
                let (_, text) = Passphrase::generate()?;
                fsutil::write_new(
                    file,
                    format!("{}\n", text.as_str()).as_bytes(),
                    fsutil::PRIVATE,
                )?;
                eprintln!(
                    "Wrote a new random passphrase for the CA keys to {} (mode 0600): keep a copy somewhere safe.",
                    file.display()
                );
                Ok(Some(file.clone()))
            }
            _ => Ok(None),
        }
    }

    /// Removes a passphrase file [`Self::new_passphrase_file`] wrote for a CA that was then
    /// not created.
    fn forget_passphrase_file(file: Option<&Path>) {
        if let Some(file) = file {
            let _ = std::fs::remove_file(file);
        }
    }

    /// How `init` (or a first `serve`) keeps the new CA key.
    fn key_protection(
        &self,
        unencrypted: bool,
        iterations: u32,
    ) -> Result<KeyProtection, CliError> {
        match (self.passphrase()?, unencrypted) {
            (Some(p), _) => Ok(KeyProtection::Passphrase(p, iterations)),
            (None, true) => Ok(KeyProtection::Unencrypted),
            (None, false) => Err(CliError::Usage(
                "the CA key is encrypted with a passphrase: give one with --passphrase-file FILE or ETCD_CA_PASSPHRASE \
                 (or pass --insecure-unencrypted-key to store it in the clear)"
                    .into(),
            )),
        }
    }
}

/// How a new CA key is protected.
#[derive(Debug, Args)]
pub struct KeyProtectionArgs {
    /// Store the CA key unencrypted (anyone who can read the file can sign as this CA).
    #[arg(long)]
    pub insecure_unencrypted_key: bool,
    /// PBKDF2 iterations when sealing the CA key.
    #[arg(long, default_value_t = crate::authority::keyfile::DEFAULT_ITERATIONS, hide = true)]
    pub kdf_iterations: u32,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the CA server (HTTPS API); creates a CA on first start if the data dir is empty.
    Serve(ServeArgs),
    /// Create a CA in a new data dir (or adopt an existing CA with --import-cert/--import-key).
    Init(InitArgs),
    /// Bootstrap tokens for node enrollment.
    #[command(subcommand)]
    Token(TokenCommand),
    /// Admin tokens for the admin API (run on the CA host).
    #[command(subcommand)]
    AdminToken(AdminTokenCommand),
    /// The renewal agent: enroll this node, renew before expiry, keep bundle and CRL fresh.
    Agent(AgentCommand),
    /// CA operations.
    #[command(subcommand)]
    Ca(CaCommand),
    /// Write a consistent copy of the CA (database, policy, CA certificates and sealed keys) to
    /// one file; safe while the server runs.
    Backup(BackupArgs),
    /// Bring a backup back into a new data dir (on a fresh host).
    Restore(RestoreArgs),
    /// Issue a certificate and its key on the CA host, into a directory.
    Issue(IssueArgs),
    /// Record certificates this CA signed before etcd-ca managed it (kubeadm, cfssl), so the
    /// agent renews them like its own.
    Adopt(AdoptArgs),
    /// List issued certificates.
    List(ListArgs),
    /// Show one issued certificate.
    Show(ShowArgs),
    /// Revoke a certificate (then write a new CRL with `etcd-ca crl`).
    Revoke(RevokeArgs),
    /// Write the CRL (DER) to a file, atomically.
    Crl(CrlArgs),
    /// Show what is in any PEM certificate files and warn about expiry.
    Inspect(InspectArgs),
    /// Print the TLS flags for an etcd member whose certificates live in a PKI dir.
    EtcdFlags(EtcdFlagsArgs),
    /// Show the audit trail: every issue, revocation and CA change.
    Audit(AuditArgs),
    /// Policy files.
    #[command(subcommand)]
    Policy(PolicyCommand),
}

#[derive(Debug, Args)]
pub struct ServeArgs {
    #[command(flatten)]
    pub data_dir: DataDirArg,
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:8443")]
    pub listen: std::net::SocketAddr,
    /// A name or address nodes use to reach this server (repeat); goes into its certificate.
    #[arg(long = "san")]
    pub sans: Vec<San>,
    /// Close connections that have not finished the TLS handshake within this.
    #[arg(long, default_value = "10s")]
    pub handshake_timeout: HumanDuration,
    /// Close connections that do not send a request's headers within this (also an idle
    /// keep-alive connection between two requests).
    #[arg(long, default_value = "10s")]
    pub header_timeout: HumanDuration,
    /// Close a connection whose client has not taken a response's bytes for this long (a
    /// client that sends requests but never reads the answers).
    #[arg(long, default_value = "10s")]
    pub write_timeout: HumanDuration,
    /// Connections served at once; more wait in the kernel's accept queue.
    #[arg(long, default_value_t = 1024)]
    pub max_connections: usize,
    /// Connections one client address may hold at once; more are closed at once, so one
    /// address cannot take every slot. Each agent holds one (its long poll).
    #[arg(long, default_value_t = 128)]
    pub max_connections_per_address: usize,
    #[command(flatten)]
    pub protection: KeyProtectionArgs,
    /// Failed token authentications (bootstrap or admin) from one address before it is
    /// refused (429) for --failed-attempts-window.
    #[arg(long, default_value_t = 20)]
    pub max_failed_attempts_per_source: u32,
    /// Wrong secrets for one bootstrap token before it is locked.
    #[arg(long, default_value_t = 5)]
    pub max_failed_attempts_per_token: u32,
    #[arg(long, default_value = "5m")]
    pub failed_attempts_window: HumanDuration,
}

#[derive(Debug, Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct AgentCommand {
    #[command(subcommand)]
    pub status: Option<AgentStatusCommand>,
    #[command(flatten)]
    pub run: AgentArgs,
}

#[derive(Debug, Subcommand)]
pub enum AgentStatusCommand {
    /// Show each certificate in a PKI dir, its expiry and next renewal, and the agent's state.
    Status {
        /// The PKI dir the agent manages.
        #[arg(long)]
        dir: PathBuf,
    },
}

#[derive(Debug, Args)]
pub struct AgentArgs {
    /// The CA server, e.g. https://ca.example:8443.
    #[arg(long, env = "ETCD_CA_SERVER")]
    pub server: Option<String>,
    /// The CA's fingerprint (sha256:HEX): the only way the agent trusts the server at first.
    #[arg(long, env = "ETCD_CA_FINGERPRINT")]
    pub ca_fingerprint: Option<String>,
    /// This node's name (the etcd member name the token was created for).
    #[arg(long)]
    pub node: Option<NodeName>,
    /// The PKI dir etcd reads (ca.crt, ca.crl, server.crt/.key, peer.crt/.key...).
    #[arg(long)]
    pub dir: Option<PathBuf>,
    /// A bootstrap token (prefer --token-file: command lines are visible to other users).
    /// --print-unit never writes it into the unit: the unit reads --token-file (default
    /// /etc/etcd-ca/token) instead.
    #[arg(long, conflicts_with = "token_file", env = "ETCD_CA_TOKEN")]
    pub token: Option<String>,
    /// A file holding a bootstrap token; re-read whenever one is needed.
    #[arg(long)]
    pub token_file: Option<PathBuf>,
    /// Profiles to keep, comma-separated (`--profile` is taken too).
    #[arg(
        long,
        alias = "profile",
        value_delimiter = ',',
        default_value = "server,peer"
    )]
    pub profiles: Vec<String>,
    /// Command run (sh -c) after certificates change; ETCD_CA_CHANGED_FILES lists them.
    #[arg(long)]
    pub on_renew: Option<String>,
    /// Command run after the trust bundle changes (etcd reads it only at start: restart it).
    /// Runs while holding the cluster-wide restart lease: one member at a time.
    #[arg(long)]
    pub on_trust_change: Option<String>,
    /// The local member's client URL (https://IP:2379): after a restart, wait until it is
    /// healthy with the new bundle before the next member may restart.
    #[arg(long)]
    pub etcd_endpoint: Option<String>,
    /// Enroll or renew what is needed, refresh bundle and CRL, then exit.
    #[arg(long)]
    pub once: bool,
    /// Renew every certificate now, even if not due (as SIGHUP does to a running agent).
    #[arg(long)]
    pub renew_now: bool,
    /// How often to check the trust bundle and the CRL.
    #[arg(long, default_value = "5m")]
    pub refresh_interval: HumanDuration,
    /// First retry delay after a failure (it doubles, up to --backoff-max).
    #[arg(long, default_value = "1s")]
    pub backoff: HumanDuration,
    #[arg(long, default_value = "5m")]
    pub backoff_max: HumanDuration,
    /// Print a systemd unit running the agent with every flag given here (and the values taken
    /// from ETCD_CA_* variables), and exit. A --token is replaced by --token-file.
    #[arg(long)]
    pub print_unit: bool,
}

impl AgentArgs {
    /// The validated settings, or the first missing or bad flag.
    fn settings(&self) -> Result<crate::agent::AgentSettings, CliError> {
        let need = |flag: &str| CliError::Usage(format!("etcd-ca agent needs --{flag}"));
        let fingerprint = self
            .ca_fingerprint
            .clone()
            .ok_or_else(|| need("ca-fingerprint"))?;
        let fingerprint = fingerprint_arg(&fingerprint)?;
        if self.profiles.is_empty() {
            return Err(need("profiles"));
        }
        Ok(crate::agent::AgentSettings {
            server: self.server.clone().ok_or_else(|| need("server"))?,
            ca_fingerprint: fingerprint,
            node: self.node.clone().ok_or_else(|| need("node"))?,
            dir: self.dir.clone().ok_or_else(|| need("dir"))?,
            token: match (&self.token, &self.token_file) {
                (Some(t), _) => Some(crate::agent::TokenSource::Literal(t.clone())),
                (None, Some(f)) => Some(crate::agent::TokenSource::File(f.clone())),
                (None, None) => None,
            },
            profiles: self.profiles.clone(),
            on_renew: self.on_renew.clone(),
            on_trust_change: self.on_trust_change.clone(),
            etcd_endpoint: self.etcd_endpoint.clone(),
            once: self.once,
            renew_now: self.renew_now,
            refresh_interval: self.refresh_interval.as_std(),
            backoff_base: self.backoff.as_std(),
            backoff_cap: self.backoff_max.as_std(),
        })
    }

    /// The flags of the unit's `ExecStart`: every flag this agent was given, from the parsed
    /// values (so those read from the environment too), except `--print-unit` and a literal
    /// token, which the unit reads from `--token-file` ([`UNIT_TOKEN_FILE`] unless given).
    fn unit_args(&self) -> Vec<String> {
        // No `..`: a new flag does not compile until it is decided here how the unit carries it.
        let Self {
            server,
            ca_fingerprint,
            node,
            dir,
            token: _,
            token_file,
            profiles,
            on_renew,
            on_trust_change,
            etcd_endpoint,
            once,
            renew_now,
            refresh_interval,
            backoff,
            backoff_max,
            print_unit: _,
        } = self;
        let token_file = token_file
            .as_ref()
            .map_or_else(|| UNIT_TOKEN_FILE.into(), |f| f.display().to_string());
        let valued = [
            ("--server", server.clone()),
            ("--ca-fingerprint", ca_fingerprint.clone()),
            ("--node", node.as_ref().map(ToString::to_string)),
            ("--dir", dir.as_ref().map(|d| d.display().to_string())),
            ("--token-file", Some(token_file)),
            ("--profiles", Some(profiles.join(","))),
            ("--on-renew", on_renew.clone()),
            ("--on-trust-change", on_trust_change.clone()),
            ("--etcd-endpoint", etcd_endpoint.clone()),
            ("--refresh-interval", Some(refresh_interval.to_string())),
            ("--backoff", Some(backoff.to_string())),
            ("--backoff-max", Some(backoff_max.to_string())),
        ];
        let switches = [("--once", *once), ("--renew-now", *renew_now)];
        // `--flag=value`, one word each: a value starting with `-` stays a value.
        valued
            .into_iter()
            .filter_map(|(flag, value)| Some(format!("{flag}={}", value?)))
            .chain(
                switches
                    .into_iter()
                    .filter(|(_, on)| *on)
                    .map(|(flag, _)| flag.to_string()),
            )
            .collect()
    }
}

/// Where a printed unit reads the bootstrap token when no --token-file was given.
const UNIT_TOKEN_FILE: &str = "/etc/etcd-ca/token";

#[derive(Debug, Args)]
pub struct BackupArgs {
    #[command(flatten)]
    pub data_dir: DataDirArg,
    #[command(flatten)]
    pub remote: RemoteArgs,
    /// The backup file to write (mode 0600; it holds the sealed CA keys).
    #[arg(long)]
    pub out: PathBuf,
}

#[derive(Debug, Args)]
pub struct RestoreArgs {
    #[command(flatten)]
    pub data_dir: DataDirArg,
    /// The backup file written by `etcd-ca backup`.
    #[arg(long)]
    pub from: PathBuf,
}

#[derive(Debug, Subcommand)]
pub enum CaCommand {
    /// Rotate the CA with the cluster serving throughout: start, activate, finish.
    Rotate(RotateArgs),
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum RotateStep {
    /// Create the next CA generation: trusted, not signing. Members restart one at a time.
    Start,
    /// Show each node's bundle and certificates, and what blocks the next step.
    Status,
    /// The new generation signs; agents re-issue their certificates.
    Activate,
    /// Retire the old generation; the bundle holds only the new one.
    Finish,
    /// Go back from start: retire the new generation, which never signed.
    Abort,
}

#[derive(Debug, Args)]
pub struct RotateArgs {
    #[arg(value_enum)]
    pub step: RotateStep,
    #[command(flatten)]
    pub data_dir: DataDirArg,
    #[command(flatten)]
    pub remote: RemoteArgs,
    /// Take the step although some nodes have not converged.
    #[arg(long)]
    pub force: bool,
    /// Key type of the new generation (start).
    #[arg(long, default_value = "ecdsa-p256", value_parser = parse_key_type)]
    pub key_type: KeyType,
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Create a single-use bootstrap token bound to a node's identity and profiles.
    Create(TokenCreateArgs),
}

#[derive(Debug, Args)]
pub struct TokenCreateArgs {
    #[command(flatten)]
    pub data_dir: DataDirArg,
    #[command(flatten)]
    pub remote: RemoteArgs,
    /// The node (etcd member name) the token is for.
    #[arg(long)]
    pub node: NodeName,
    #[command(flatten)]
    pub names: NodeNamesArgs,
    /// Profiles the node may enroll, comma-separated (`--profile` is taken too).
    #[arg(
        long,
        alias = "profile",
        value_delimiter = ',',
        default_value = "server,peer"
    )]
    pub profiles: Vec<String>,
    /// The etcd user name for a client profile.
    #[arg(long)]
    pub cn: Option<String>,
    /// How long the token is valid (at most 7 days).
    #[arg(long, default_value = "30m")]
    pub ttl: HumanDuration,
    /// Allow a privileged common name such as `root` for the client profile.
    #[arg(long)]
    pub allow_root: bool,
    /// The CA server URL to print in the agent command (default: --server, or a placeholder).
    #[arg(long)]
    pub server_url: Option<String>,
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Subcommand)]
pub enum AdminTokenCommand {
    /// Create an admin token and print it (once) on standard output, or write it to --out.
    Create {
        #[command(flatten)]
        data_dir: DataDirArg,
        /// Write the token to this new file (mode 0600; an existing file is never replaced)
        /// instead of standard output.
        #[arg(long)]
        out: Option<PathBuf>,
        /// The token stops working after this long (default: until revoked).
        #[arg(long)]
        ttl: Option<HumanDuration>,
    },
    /// List the admin tokens: id, who created it and when, expiry, revocation (never secrets).
    List(AdminTokenListArgs),
    /// Revoke an admin token by its id (the part after `etcdca_`, as `list` shows it): refused
    /// at once on this server, within 2 seconds on others.
    Revoke(AdminTokenRevokeArgs),
}

#[derive(Debug, Args)]
pub struct AdminTokenListArgs {
    #[command(flatten)]
    pub data_dir: DataDirArg,
    #[command(flatten)]
    pub remote: RemoteArgs,
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct AdminTokenRevokeArgs {
    #[command(flatten)]
    pub data_dir: DataDirArg,
    #[command(flatten)]
    pub remote: RemoteArgs,
    /// The token's id.
    pub id: String,
}

/// Talk to a running CA server instead of opening the data dir.
#[derive(Debug, Args)]
pub struct RemoteArgs {
    /// The CA server, e.g. https://ca.example:8443. Without it, the command opens --data-dir.
    #[arg(long, env = "ETCD_CA_SERVER")]
    pub server: Option<String>,
    /// File holding an admin token (from `etcd-ca admin-token create`).
    #[arg(long, env = "ETCD_CA_ADMIN_TOKEN_FILE")]
    pub admin_token_file: Option<PathBuf>,
    /// Trust the server whose CA has this fingerprint (sha256:HEX, printed by `serve` and `init`).
    #[arg(long, env = "ETCD_CA_FINGERPRINT")]
    pub ca_fingerprint: Option<String>,
    /// Trust the server's CA from this PEM file instead.
    #[arg(long)]
    pub ca_file: Option<PathBuf>,
}

/// A node's addresses and DNS names: the most its certificates may carry. When issuing without
/// them, the names registered for the node are used.
#[derive(Debug, Args)]
pub struct NodeNamesArgs {
    /// An address of the node (repeat).
    #[arg(long = "ip")]
    pub ips: Vec<IpAddr>,
    /// A DNS name of the node (repeat).
    #[arg(long = "dns")]
    pub dns_names: Vec<DnsName>,
}

impl NodeNamesArgs {
    /// The names as the JSON strings the API takes.
    fn json(&self) -> (Vec<String>, Vec<String>) {
        (
            self.ips.iter().map(|i| i.to_string()).collect(),
            self.dns_names.iter().map(|d| d.to_string()).collect(),
        )
    }
}

#[derive(Debug, Args)]
pub struct InitArgs {
    #[command(flatten)]
    pub data_dir: DataDirArg,
    /// Key type of the new CA.
    #[arg(long, default_value = "ecdsa-p256", value_parser = parse_key_type)]
    pub key_type: KeyType,
    /// How long the CA certificate is valid.
    #[arg(long, default_value = "10y")]
    pub validity: HumanDuration,
    /// Common name of the CA (" generation N" is appended).
    #[arg(long, default_value = "etcd-ca")]
    pub common_name: String,
    /// Policy file to install (default: the built-in policies/etcd.toml).
    #[arg(long)]
    pub policy: Option<PathBuf>,
    /// Adopt this existing CA certificate (kubeadm's pki/etcd/ca.crt, cfssl's ca.pem).
    #[arg(long, requires = "import_key")]
    pub import_cert: Option<PathBuf>,
    /// The adopted CA's private key (PKCS#8, SEC1 or PKCS#1 PEM).
    #[arg(long, requires = "import_cert")]
    pub import_key: Option<PathBuf>,
    #[command(flatten)]
    pub protection: KeyProtectionArgs,
}

#[derive(Debug, Args)]
pub struct IssueArgs {
    #[command(flatten)]
    pub data_dir: DataDirArg,
    #[command(flatten)]
    pub remote: RemoteArgs,
    /// Policy profile: server, peer or client (or any profile your policy defines;
    /// `--profiles` is taken too).
    #[arg(long, alias = "profiles")]
    pub profile: String,
    /// The etcd member (or client) this certificate is for.
    #[arg(long)]
    pub node: NodeName,
    #[command(flatten)]
    pub names: NodeNamesArgs,
    /// Common name: the etcd user name of a client certificate.
    #[arg(long)]
    pub cn: Option<String>,
    /// Lifetime (capped by the profile's max_lifetime; default: the profile's default).
    #[arg(long)]
    pub lifetime: Option<HumanDuration>,
    /// Key type of the generated key.
    #[arg(long, default_value = "ecdsa-p256", value_parser = parse_key_type)]
    pub key_type: KeyType,
    /// Allow a privileged common name such as `root` (every permission in etcd).
    #[arg(long)]
    pub allow_root: bool,
    /// Directory for PROFILE.crt, PROFILE.key (0600) and ca.crt.
    #[arg(long)]
    pub out: PathBuf,
}

#[derive(Debug, Args)]
pub struct AdoptArgs {
    #[command(flatten)]
    pub data_dir: DataDirArg,
    /// The profile these certificates belong to (server, peer, client...).
    #[arg(long)]
    pub profile: String,
    /// The node (etcd member name) they belong to.
    #[arg(long)]
    pub node: NodeName,
    /// PEM certificate files, e.g. /etc/kubernetes/pki/etcd/server.crt.
    #[arg(required = true)]
    pub files: Vec<PathBuf>,
}

#[derive(Debug, Args)]
pub struct ListArgs {
    #[command(flatten)]
    pub data_dir: DataDirArg,
    #[command(flatten)]
    pub remote: RemoteArgs,
    /// Only certificates (still valid) that expire within this window, e.g. 30d.
    #[arg(long)]
    pub expiring_within: Option<HumanDuration>,
    #[arg(long)]
    pub node: Option<String>,
    #[arg(long)]
    pub profile: Option<String>,
    /// valid (the one in use), superseded (a newer one exists for the node and profile),
    /// retired (its CA generation is retired), revoked or expired.
    #[arg(long, value_parser = parse_status)]
    pub status: Option<CertificateState>,
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct ShowArgs {
    #[command(flatten)]
    pub data_dir: DataDirArg,
    #[command(flatten)]
    pub remote: RemoteArgs,
    /// Serial number in hex (colons allowed).
    #[arg(value_parser = parse_serial)]
    pub serial: String,
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct RevokeArgs {
    #[command(flatten)]
    pub data_dir: DataDirArg,
    #[command(flatten)]
    pub remote: RemoteArgs,
    /// Serial number in hex (colons allowed).
    #[arg(value_parser = parse_serial)]
    pub serial: String,
    /// unspecified, keyCompromise, caCompromise, affiliationChanged, superseded,
    /// cessationOfOperation or privilegeWithdrawn.
    #[arg(long, default_value = "unspecified", value_parser = parse_reason)]
    pub reason: RevocationReason,
}

#[derive(Debug, Args)]
pub struct CrlArgs {
    #[command(flatten)]
    pub data_dir: DataDirArg,
    #[command(flatten)]
    pub remote: RemoteArgs,
    /// Where to write the DER CRL (replaced atomically: etcd re-reads it per connection).
    #[arg(long)]
    pub out: PathBuf,
    /// Write this trusted CA generation's own CRL instead (signed by it, listing only what it
    /// issued), for checkers that want a CRL from each certificate's issuer
    /// (`openssl verify -crl_check`). etcd needs the default CRL, which lists every generation.
    #[arg(long, value_parser = clap::value_parser!(i64).range(1..))]
    pub generation: Option<i64>,
}

#[derive(Debug, Args)]
pub struct InspectArgs {
    /// PEM files holding one or more certificates.
    #[arg(required = true)]
    pub files: Vec<PathBuf>,
    /// Exit with status 3 when a certificate expires within this window (or has expired)
    /// [default: 30d; for a CRL, the last quarter of its lifetime].
    #[arg(long)]
    pub warn: Option<HumanDuration>,
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum FlagFormatArg {
    /// --flag=value lines for a unit file's ExecStart.
    Args,
    /// ETCD_FLAG=value lines for an environment file.
    Env,
    /// --flag=value, one per line and nothing else, for scripts.
    Lines,
    /// YAML keys for etcd --config-file.
    Yaml,
}

#[derive(Debug, Args)]
pub struct EtcdFlagsArgs {
    /// The member's name (etcd --name).
    #[arg(long)]
    pub node: NodeName,
    /// The member's PKI dir (where the agent or `etcd-ca issue --out` put the files).
    #[arg(long)]
    pub dir: PathBuf,
    /// The CN every peer certificate carries (the peer profile's common_name).
    #[arg(long, default_value = "etcd-peer")]
    pub peer_cn: String,
    /// args: for a unit file (trailing backslashes); lines: one flag per line, for scripts;
    /// env: ETCD_* variables.
    #[arg(long, value_enum, default_value = "args")]
    pub format: FlagFormatArg,
    /// Fail (exit 1) instead of warning when the dir lacks a file the flags name.
    #[arg(long)]
    pub check: bool,
}

#[derive(Debug, Args)]
pub struct AuditArgs {
    #[command(flatten)]
    pub data_dir: DataDirArg,
    #[command(flatten)]
    pub remote: RemoteArgs,
    /// How many of the most recent events to show.
    #[arg(long, default_value_t = 100)]
    pub limit: i64,
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Subcommand)]
pub enum PolicyCommand {
    /// Check a policy file and print its profiles.
    Check {
        /// The policy file.
        file: PathBuf,
    },
}

fn parse_key_type(s: &str) -> Result<KeyType, String> {
    s.parse()
}

fn parse_serial(s: &str) -> Result<String, String> {
    crate::authority::normalize_serial(s).map_err(|e| e.to_string())
}

fn parse_reason(s: &str) -> Result<RevocationReason, String> {
    s.parse::<RevocationReason>().map_err(|e| e.to_string())
}

fn parse_status(s: &str) -> Result<CertificateState, String> {
    s.parse()
}

/// Who the audit trail names for commands run on the CA host.
fn local_actor() -> String {
    use std::os::unix::fs::MetadataExt;
    let user = std::env::var("USER")
        .or_else(|_| std::env::var("LOGNAME"))
        .unwrap_or_else(|_| match std::fs::metadata("/proc/self") {
            Ok(m) => format!("uid{}", m.uid()),
            Err(_) => "unknown".into(),
        });
    format!("cli:{user}")
}

/// Opens the data dir, awaits `$body` with the authority bound to `$authority`, closes the
/// database whatever happened, and returns the body's result (`?` applied).
macro_rules! locally {
    ($data_dir:expr, $authority:ident => $body:expr) => {{
        let $authority = $data_dir.open().await?;
        let result = $body.await;
        $authority.close().await;
        result?
    }};
}

/// Runs one command. Returns the exit code for outcomes that are not errors (inspect's warning).
pub async fn run(cli: Cli) -> Result<ExitCode, CliError> {
    // Certificates carry whole seconds; so does everything we print and store.
    let now = crate::clock::now();
    match cli.command {
        Command::Serve(args) => serve(args).await,
        Command::Init(args) => init(args, now).await,
        Command::Token(TokenCommand::Create(args)) => token_create(args, now).await,
        Command::AdminToken(AdminTokenCommand::Create { data_dir, out, ttl }) => {
            admin_token_create(&data_dir, out.as_deref(), ttl, now).await
        }
        Command::AdminToken(AdminTokenCommand::List(args)) => admin_token_list(args).await,
        Command::AdminToken(AdminTokenCommand::Revoke(args)) => admin_token_revoke(args, now).await,
        Command::Issue(args) => issue(args, now).await,
        Command::Adopt(args) => adopt(args, now).await,
        Command::List(args) => list(args, now).await,
        Command::Show(args) => show(args, now).await,
        Command::Revoke(args) => revoke(args, now).await,
        Command::Crl(args) => crl(args, now).await,
        Command::Audit(args) => audit(args).await,
        Command::Agent(AgentCommand {
            status: Some(AgentStatusCommand::Status { dir }),
            ..
        }) => {
            write!(stdout(), "{}", crate::agent::status_report(&dir, now)?)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Agent(AgentCommand { status: None, run }) => agent(run).await,
        Command::Ca(CaCommand::Rotate(args)) => rotate(args, now).await,
        Command::Backup(args) => {
            let report = match args.remote.admin_client()? {
                Some(client) => remote_backup(&client, &args.out).await?,
                None => locally!(args.data_dir, a => a.backup(&args.out, &local_actor(), now)),
            };
            writeln!(
                stdout(),
                "Wrote backup {} ({} CA generations, {} certificates; files: {})",
                report.file.display(),
                report.generations,
                report.certificates,
                report.files.join(", ")
            )?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Restore(args) => {
            let passphrase = args.data_dir.passphrase()?;
            let checked_keys = passphrase.is_some();
            let report = Authority::restore(&args.from, args.data_dir.path(), passphrase).await?;
            if !checked_keys {
                eprintln!(
                    "warning: no passphrase given (--passphrase-file or ETCD_CA_PASSPHRASE): the \
                     restored CA keys were not opened, so a backup taken under another passphrase \
                     would only fail when the CA next signs"
                );
            }
            writeln!(
                stdout(),
                "Restored {} into {} ({} CA generations, {} certificates)",
                report.file.display(),
                args.data_dir.path().display(),
                report.generations,
                report.certificates
            )?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Inspect(args) => inspect(args, now),
        Command::EtcdFlags(args) => etcd_flags(args),
        Command::Policy(PolicyCommand::Check { file }) => policy_check(&file),
    }
}

fn read_text(path: &Path) -> Result<String, CliError> {
    std::fs::read_to_string(path).map_err(|e| FsError::new("read", path, e).into())
}

fn stdout() -> std::io::StdoutLock<'static> {
    std::io::stdout().lock()
}

fn date(t: OffsetDateTime) -> String {
    rfc3339(t)
}

async fn serve(args: ServeArgs) -> Result<ExitCode, CliError> {
    let dir = args.data_dir.path();
    let now = crate::clock::now();
    // Bind first: a busy port fails before anything is created, issued or recorded.
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .map_err(|source| CliError::Listen {
            addr: args.listen,
            source,
        })?;
    if DataDir::new(dir).existing_ca_marker().is_none() {
        // A new CA only where the operator said: a forgotten --data-dir must not start a
        // second, unrelated CA in the default place.
        if args.data_dir.data_dir.is_none() {
            return Err(CliError::Failed(format!(
                "{} holds no CA, and no data dir was named: give --data-dir DIR (or \
                 ETCD_CA_DATA_DIR) to use an existing CA or create one there",
                dir.display()
            )));
        }
        Authority::check_new_dir(dir)?;
        let generated = args
            .data_dir
            .new_passphrase_file(args.protection.insecure_unencrypted_key)?;
        let report = Authority::init(
            dir,
            InitOptions {
                key_type: KeyType::EcdsaP256,
                validity: "10y"
                    .parse::<HumanDuration>()
                    .map_err(|e| CliError::Failed(e.to_string()))?
                    .span_from(now),
                common_name: "etcd-ca".into(),
                policy: None,
                import: None,
                key_protection: args.data_dir.key_protection(
                    args.protection.insecure_unencrypted_key,
                    args.protection.kdf_iterations,
                )?,
            },
            "etcd-ca serve",
            now,
        )
        .await
        .inspect_err(|_| DataDirArg::forget_passphrase_file(generated.as_deref()))?;
        tracing::info!(data_dir = %dir.display(), ca_fingerprint = %report.fingerprint, "created a new CA");
    }
    // One server per data dir (held until this process ends).
    let _lock = DataDir::new(dir).lock_for_server()?;
    let authority = Arc::new(args.data_dir.open().await?);
    let result = run_server(&authority, listener, &args).await;
    authority.close().await;
    result
}

async fn run_server(
    authority: &Arc<Authority>,
    listener: tokio::net::TcpListener,
    args: &ServeArgs,
) -> Result<ExitCode, CliError> {
    let mut sans = args.sans.clone();
    let listen_ip = args.listen.ip();
    if !listen_ip.is_unspecified() {
        sans.push(San::Ip(listen_ip));
    }
    if listen_ip.is_loopback() || listen_ip.is_unspecified() {
        sans.push(San::parse_loose("localhost")?);
        sans.push(San::Ip(IpAddr::from([127, 0, 0, 1])));
    }
    sans.sort();
    sans.dedup();
    if listen_ip.is_unspecified() && args.sans.is_empty() {
        tracing::warn!("listening on all addresses without --san: nodes can only reach this server by a name in its certificate");
    }
    // One task follows every change of the CA, however it was made: it re-issues the server's
    // own certificate from the signing generation and tells waiting agents.
    let (follower, serving, watched) =
        crate::api::follow::Follower::start(authority.clone(), sans.clone()).await?;
    let tls =
        crate::api::tls::server_config(serving).map_err(|e| CliError::Failed(e.to_string()))?;
    let addr = listener
        .local_addr()
        .map_err(|e| CliError::Failed(format!("cannot read the listening address: {e}")))?;
    // Watch the signals before saying we are ready: a SIGTERM right after the ready line stops
    // the server cleanly instead of killing it.
    let signalled = shutdown_signal()?;
    let fingerprint = authority.fingerprint()?.to_string();
    let names: Vec<String> = sans.iter().map(|s| s.to_string()).collect();
    tracing::info!(listen = %addr, ca_fingerprint = %fingerprint, server_names = %names.join(","), "etcd-ca server ready");
    {
        let mut out = stdout();
        writeln!(
            out,
            "etcd-ca serving https://{addr} (CA fingerprint {fingerprint})"
        )?;
        out.flush()?;
    }
    let state = crate::api::AppState {
        authority: authority.clone(),
        metrics: Arc::new(crate::api::metrics::Metrics::default()),
        limiter: Arc::new(crate::api::limits::AttemptLimiter::new(
            crate::api::limits::AttemptLimits {
                per_source: args.max_failed_attempts_per_source,
                per_token: args.max_failed_attempts_per_token,
                window: args.failed_attempts_window.as_std(),
            },
        )),
        watched,
        anonymous: Arc::new(crate::api::limits::RefusalDigest::default()),
    };
    // Refusals of requests without credentials go to the audit trail as one line a minute.
    let digest = state.anonymous.clone();
    let summaries = {
        let (authority, digest) = (authority.clone(), state.anonymous.clone());
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(std::time::Duration::from_secs(60));
            tick.tick().await;
            loop {
                tick.tick().await;
                if let Some(summary) = digest.take() {
                    authority
                        .audit_summary("refused.anonymous", &summary, crate::clock::now())
                        .await;
                }
            }
        })
    };
    let (stop, stopping) = tokio::sync::watch::channel(false);
    let stopped = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|s| *s).await;
    };
    let follower = tokio::spawn(follower.run(stopped(stopping.clone())));
    tokio::spawn(async move {
        signalled.await;
        let _ = stop.send(true);
    });
    crate::api::server::serve(
        listener,
        tls,
        crate::api::app(state),
        crate::api::server::Limits {
            handshake_timeout: args.handshake_timeout.as_std(),
            header_timeout: args.header_timeout.as_std(),
            max_connections: args.max_connections.max(1),
            max_connections_per_address: args.max_connections_per_address.max(1),
            write_timeout: args.write_timeout.as_std(),
            ..Default::default()
        },
        stopped(stopping),
    )
    .await;
    let _ = follower.await;
    summaries.abort();
    if let Some(summary) = digest.take() {
        authority
            .audit_summary("refused.anonymous", &summary, crate::clock::now())
            .await;
    }
    tracing::info!("etcd-ca server stopped");
    Ok(ExitCode::SUCCESS)
}

/// Takes a backup through the server and writes it like a local one (atomically, 0600).
async fn remote_backup(
    client: &crate::client::ApiClient,
    out: &Path,
) -> Result<crate::authority::BackupReport, CliError> {
    let response = client
        .clone()
        .with_timeout(std::time::Duration::from_secs(600))
        .get("/v1/backup")
        .await?;
    let count = |name: &str| {
        response
            .headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<i64>().ok())
            .ok_or_else(|| {
                CliError::Failed(format!("the server's backup answer has no {name} header"))
            })
    };
    let generations = count(crate::wire::BACKUP_GENERATIONS)?;
    let certificates = count(crate::wire::BACKUP_CERTIFICATES)?;
    let files = crate::authority::archive_names(&response.body)?;
    fsutil::write_atomic(out, &response.body, fsutil::PRIVATE)?;
    Ok(crate::authority::BackupReport {
        file: out.to_path_buf(),
        generations: usize::try_from(generations).unwrap_or_default(),
        certificates,
        files,
    })
}

/// Watches SIGINT and SIGTERM from now on; the future completes on either.
fn shutdown_signal() -> Result<impl std::future::Future<Output = ()>, CliError> {
    use tokio::signal::unix::{signal, SignalKind};
    let watch = |kind: SignalKind, name: &str| {
        signal(kind).map_err(|e| CliError::Failed(format!("cannot watch {name}: {e}")))
    };
    let mut term = watch(SignalKind::terminate(), "SIGTERM")?;
    let mut int = watch(SignalKind::interrupt(), "SIGINT")?;
    Ok(async move {
        tokio::select! {
            _ = int.recv() => {}
            _ = term.recv() => {}
        }
        tracing::info!("shutting down: finishing in-flight requests");
    })
}

async fn agent(args: AgentArgs) -> Result<ExitCode, CliError> {
    let settings = args.settings()?;
    if args.print_unit {
        let exe =
            std::env::current_exe().unwrap_or_else(|_| PathBuf::from("/usr/local/bin/etcd-ca"));
        write!(
            stdout(),
            "{}",
            crate::agent::systemd_unit(&exe, &args.unit_args())
        )?;
        return Ok(ExitCode::SUCCESS);
    }
    crate::agent::Agent::new(settings)?.run().await?;
    Ok(ExitCode::SUCCESS)
}

async fn rotate(args: RotateArgs, now: OffsetDateTime) -> Result<ExitCode, CliError> {
    use crate::authority::rotation::RotationStatus;
    let step = match args.step {
        RotateStep::Start => "start",
        RotateStep::Status => "status",
        RotateStep::Activate => "activate",
        RotateStep::Finish => "finish",
        RotateStep::Abort => "abort",
    };
    let status: serde_json::Value = match args.remote.admin_client()? {
        Some(client) => {
            if step == "status" {
                client.get_json("/v1/rotation").await?
            } else {
                let body = crate::wire::RotateBody {
                    force: args.force,
                    key_type: Some(args.key_type.to_string()),
                };
                client
                    .post_json(&format!("/v1/rotation/{step}"), &body)
                    .await?
            }
        }
        None => {
            let status: RotationStatus = locally!(args.data_dir, a => async {
                let actor = local_actor();
                match args.step {
                    RotateStep::Start => { a.rotate_start(args.key_type, &actor, now).await?; }
                    RotateStep::Status => {}
                    RotateStep::Activate => a.rotate_activate(args.force, &actor, now).await?,
                    RotateStep::Finish => a.rotate_finish(args.force, &actor, now).await?,
                    RotateStep::Abort => a.rotate_abort(&actor, now).await?,
                }
                Ok::<_, CliError>(a.rotation_status(now).await?)
            });
            serde_json::to_value(status)?
        }
    };
    let mut out = stdout();
    if args.json {
        serde_json::to_writer_pretty(&mut out, &status)?;
        writeln!(out)?;
        return Ok(ExitCode::SUCCESS);
    }
    write_rotation_status(&mut out, &status)?;
    Ok(ExitCode::SUCCESS)
}

/// The rotation status as a short explanation and a table.
fn write_rotation_status(out: &mut impl Write, s: &serde_json::Value) -> std::io::Result<()> {
    let generation = |g: &serde_json::Value| {
        format!(
            "generation {} ({})",
            g["id"],
            g["fingerprint"].as_str().unwrap_or("")
        )
    };
    match s["phase"].as_str().unwrap_or("") {
        "started" => writeln!(
            out,
            "Rotation started: {} is trusted but not signing; {} signs.",
            generation(&s["other"]),
            generation(&s["active"])
        )?,
        "activated" => writeln!(
            out,
            "Rotation activated: {} signs; {} is still trusted while it retires.",
            generation(&s["active"]),
            generation(&s["other"])
        )?,
        _ => writeln!(
            out,
            "No rotation in progress: {} signs.",
            generation(&s["active"])
        )?,
    }
    if let Some(step) = s["last_step"].as_object() {
        writeln!(
            out,
            "Last step: {} at {}: {}.",
            step["step"].as_str().unwrap_or(""),
            step["at"].as_str().unwrap_or(""),
            step["outcome"].as_str().unwrap_or("")
        )?;
    }
    let blocked: Vec<&str> = s["blocked_by"]
        .as_array()
        .map(|a| a.iter().filter_map(|v| v.as_str()).collect())
        .unwrap_or_default();
    if s["next_step"].is_null() && !blocked.is_empty() {
        writeln!(out, "Still converging: {}", blocked.join(", "))?;
    }
    let stale: Vec<&str> = s["nodes"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|n| n["stale"] == true)
        .filter_map(|n| n["node"].as_str())
        .collect();
    if !stale.is_empty() {
        writeln!(
            out,
            "Not reported since the last step (STALE: their columns may be out of date; a node without a running agent never converges): {}",
            stale.join(", ")
        )?;
    }
    if let Some(step) = s["next_step"].as_str() {
        if blocked.is_empty() {
            writeln!(
                out,
                "Next step: etcd-ca ca rotate {step} (every node has converged)"
            )?;
        } else {
            writeln!(
                out,
                "Next step: etcd-ca ca rotate {step}, waiting for: {}",
                blocked.join(", ")
            )?;
        }
    }
    if let Some(lease) = s["restart_lease"].as_array() {
        writeln!(
            out,
            "Restart lease: {} until {}",
            lease[0].as_str().unwrap_or(""),
            lease[1].as_str().unwrap_or("")
        )?;
    }
    let list = |v: &serde_json::Value| match v.as_array() {
        Some(a) => a
            .iter()
            .map(|x| x.to_string())
            .collect::<Vec<_>>()
            .join(","),
        None => "-".into(),
    };
    writeln!(
        out,
        "{:<14} {:<6} {:<9} {:<9} {:<28} {:<20} WAITING FOR",
        "NODE", "MEMBER", "INSTALLED", "RUNNING", "CERTIFICATES (generation)", "REPORTED"
    )?;
    for n in s["nodes"].as_array().into_iter().flatten() {
        let certs: Vec<String> = n["certificates"]
            .as_object()
            .map(|m| m.iter().map(|(p, g)| format!("{p}:{g}")).collect())
            .unwrap_or_default();
        let reported = match (n["reported_at"].as_str(), n["stale"] == true) {
            (Some(at), true) => format!("{at} STALE"),
            (Some(at), false) => at.to_string(),
            (None, _) => "never".to_string(),
        };
        writeln!(
            out,
            "{:<14} {:<6} {:<9} {:<9} {:<28} {:<20} {}",
            n["node"].as_str().unwrap_or(""),
            if n["member"].as_bool().unwrap_or(false) {
                "yes"
            } else {
                "no"
            },
            list(&n["installed_bundle"]),
            list(&n["running_bundle"]),
            certs.join(" "),
            reported,
            n["waiting_for"].as_str().unwrap_or("-")
        )?;
    }
    Ok(())
}

async fn token_create(args: TokenCreateArgs, now: OffsetDateTime) -> Result<ExitCode, CliError> {
    let (token, fingerprint) = match args.remote.admin_client()? {
        Some(client) => {
            let (ips, dns_names) = args.names.json();
            let body = crate::wire::TokenBody {
                node: args.node.to_string(),
                ips,
                dns_names,
                profiles: args.profiles.clone(),
                common_name: args.cn.clone(),
                ttl: Some(args.ttl.to_string()),
                allow_root: args.allow_root,
            };
            let answer: crate::wire::TokenResponse = client.post_json("/v1/tokens", &body).await?;
            let token = crate::authority::CreatedToken {
                token: answer.token,
                id: answer.id,
                expires_at: answer.expires_at,
                node: answer.node,
                profiles: answer.profiles,
            };
            (token, answer.ca_fingerprint)
        }
        None => {
            let authority = args.data_dir.open().await?;
            let request = TokenRequest {
                node: args.node.clone(),
                ips: args.names.ips.clone(),
                dns_names: args.names.dns_names.clone(),
                profiles: args.profiles.clone(),
                common_name: args.cn.clone(),
                ttl: args.ttl.as_std(),
                allow_privileged_common_name: args.allow_root,
            };
            let created = authority
                .create_bootstrap_token(&request, &local_actor(), now)
                .await;
            let fingerprint = authority.fingerprint();
            authority.close().await;
            (created?, fingerprint?)
        }
    };
    let server = args
        .server_url
        .or(args.remote.server.clone())
        .unwrap_or_else(|| "https://CA-HOST:8443".into());
    // The token goes into a file, not onto a command line every `ps` shows.
    let agent = format!(
        "install -D -m 0600 /dev/stdin /etc/etcd-ca/token <<< '{}'\n  etcd-ca agent --server {server} --ca-fingerprint {fingerprint} --node {} --dir /etc/etcd/pki --profiles {} --token-file /etc/etcd-ca/token",
        token.token,
        args.node,
        args.profiles.join(","),
    );
    let mut out = stdout();
    if args.json {
        serde_json::to_writer_pretty(
            &mut out,
            &serde_json::json!({
                "token": token.token,
                "id": token.id,
                "expires_at": token.expires_at.map(rfc3339),
                "node": args.node.to_string(),
                "profiles": args.profiles,
                "ca_fingerprint": fingerprint,
                "agent_command": agent,
            }),
        )?;
        writeln!(out)?;
    } else {
        writeln!(
            out,
            "Bootstrap token for node {} (profiles {}), single use, expires {}:",
            args.node,
            args.profiles.join(","),
            token.expires_at.map(rfc3339).unwrap_or_default()
        )?;
        writeln!(out, "  {}", token.token)?;
        writeln!(
            out,
            "On {}, keep the token in a file only root can read and start the agent (its PKI dir here is etcd's usual /etc/etcd/pki):",
            args.node
        )?;
        writeln!(out, "  {agent}")?;
    }
    Ok(ExitCode::SUCCESS)
}

async fn admin_token_list(args: AdminTokenListArgs) -> Result<ExitCode, CliError> {
    let tokens: Vec<crate::authority::AdminTokenView> = match args.remote.admin_client()? {
        Some(client) => client.get_json("/v1/admin-tokens").await?,
        None => locally!(args.data_dir, a => a.admin_tokens()),
    };
    let mut out = stdout();
    if args.json {
        serde_json::to_writer_pretty(&mut out, &tokens)?;
        writeln!(out)?;
        return Ok(ExitCode::SUCCESS);
    }
    writeln!(
        out,
        "{:<18} {:<20} {:<24} {:<20} REVOKED",
        "ID", "CREATED", "BY", "EXPIRES"
    )?;
    for t in tokens {
        writeln!(
            out,
            "{:<18} {:<20} {:<24} {:<20} {}",
            t.id,
            rfc3339(t.created_at),
            t.created_by,
            t.expires_at.map(rfc3339).unwrap_or_else(|| "never".into()),
            t.revoked_at.map(rfc3339).unwrap_or_else(|| "-".into())
        )?;
    }
    Ok(ExitCode::SUCCESS)
}

async fn admin_token_revoke(
    args: AdminTokenRevokeArgs,
    now: OffsetDateTime,
) -> Result<ExitCode, CliError> {
    match args.remote.admin_client()? {
        Some(client) => {
            let _: crate::wire::AdminTokenRevoked = client
                .post_json(&format!("/v1/admin-tokens/{}/revoke", args.id), &())
                .await?;
        }
        None => locally!(args.data_dir, a => a.revoke_admin_token(&args.id, &local_actor(), now)),
    }
    writeln!(stdout(), "Revoked admin token {}.", args.id)?;
    Ok(ExitCode::SUCCESS)
}

async fn admin_token_create(
    data_dir: &DataDirArg,
    out: Option<&Path>,
    ttl: Option<HumanDuration>,
    now: OffsetDateTime,
) -> Result<ExitCode, CliError> {
    if let Some(file) = out.filter(|f| f.exists()) {
        return Err(CliError::Failed(format!(
            "--out {}: the file exists; an admin token file is never replaced",
            file.display()
        )));
    }
    let authority = data_dir.open().await?;
    let created = authority
        .create_admin_token(ttl.map(HumanDuration::as_std), &local_actor(), now)
        .await;
    authority.close().await;
    let created = created?;
    match out {
        Some(file) => {
            fsutil::write_new(
                file,
                format!("{}\n", created.token).as_bytes(),
                fsutil::PRIVATE,
            )?;
            eprintln!(
                "admin token {} written to {} (mode 0600); pass --admin-token-file {}.",
                created.id,
                file.display(),
                file.display()
            );
        }
        None => {
            writeln!(stdout(), "{}", created.token)?;
            eprintln!(
                "admin token {} created; it is shown only this once. Keep it in a file readable only by you (or use --out FILE) and pass --admin-token-file.",
                created.id
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

impl RemoteArgs {
    /// An API client when --server was given.
    fn client(&self) -> Result<Option<crate::client::ApiClient>, CliError> {
        let Some(url) = &self.server else {
            return Ok(None);
        };
        let trust = match (&self.ca_fingerprint, &self.ca_file) {
            (Some(fp), _) => crate::client::Trust::Fingerprint(fingerprint_arg(fp)?),
            (None, Some(file)) => crate::client::Trust::Bundle(
                crate::pki::pem_certificates(&read_text(file)?).map_err(|source| {
                    CliError::Certificate {
                        path: file.clone(),
                        source,
                    }
                })?,
            ),
            (None, None) => {
                return Err(CliError::Usage(
                    "--server needs --ca-fingerprint sha256:... or --ca-file to know it talks to the right CA".into(),
                ))
            }
        };
        // A --server the client cannot use at all (not https, no host) is a wrong flag.
        let mut client = crate::client::ApiClient::new(url, trust, None)
            .map_err(|e| CliError::Usage(format!("--server {url}: {e}")))?;
        if let Some(file) = &self.admin_token_file {
            client = client.with_bearer(read_text(file)?.trim().to_string());
        }
        Ok(Some(client))
    }

    /// [`Self::client`] for the admin API: --server needs --admin-token-file too.
    fn admin_client(&self) -> Result<Option<crate::client::ApiClient>, CliError> {
        let client = self.client()?;
        if client.is_some() && self.admin_token_file.is_none() {
            return Err(CliError::Usage(
                "--server needs --admin-token-file FILE (an admin token from `etcd-ca admin-token create`) for this command".into(),
            ));
        }
        Ok(client)
    }
}

/// A `--ca-fingerprint`, normalised (openssl's colon form is taken too).
fn fingerprint_arg(text: &str) -> Result<String, CliError> {
    crate::pki::parse_fingerprint(text).ok_or_else(|| {
        CliError::Usage(format!(
            "--ca-fingerprint {text:?}: expected sha256: and 64 hex digits (or openssl's \
             SHA256 Fingerprint=AB:CD:..., as `openssl x509 -noout -fingerprint -sha256` prints)"
        ))
    })
}

async fn init(args: InitArgs, now: OffsetDateTime) -> Result<ExitCode, CliError> {
    let policy = match &args.policy {
        Some(path) => Some((path.clone(), read_text(path)?)),
        None => None,
    };
    let import = match (&args.import_cert, &args.import_key) {
        (Some(cert), Some(key)) => Some((read_text(cert)?, read_text(key)?)),
        _ => None,
    };
    // A CA is only made where none is; refuse before writing a passphrase for it.
    Authority::check_new_dir(args.data_dir.path())?;
    let generated = args
        .data_dir
        .new_passphrase_file(args.protection.insecure_unencrypted_key)?;
    let report = Authority::init(
        args.data_dir.path(),
        InitOptions {
            key_type: args.key_type,
            validity: args.validity.span_from(now),
            common_name: args.common_name,
            policy,
            import,
            key_protection: args.data_dir.key_protection(
                args.protection.insecure_unencrypted_key,
                args.protection.kdf_iterations,
            )?,
        },
        &local_actor(),
        now,
    )
    .await
    .inspect_err(|_| DataDirArg::forget_passphrase_file(generated.as_deref()))?;
    let mut out = stdout();
    let verb = if report.imported {
        "Adopted"
    } else {
        "Created"
    };
    writeln!(out, "{verb} CA in {}", report.data_dir.display())?;
    writeln!(out, "  subject:     {}", report.subject)?;
    writeln!(out, "  key type:    {}", report.key_type)?;
    writeln!(out, "  expires:     {}", date(report.not_after))?;
    writeln!(out, "  fingerprint: {}", report.fingerprint)?;
    for note in &report.notes {
        eprintln!("note: {note}");
    }
    Ok(ExitCode::SUCCESS)
}

async fn issue(args: IssueArgs, now: OffsetDateTime) -> Result<ExitCode, CliError> {
    check_output_dir(&args.out)?;
    let (certificate, key_pem, bundle) = match args.remote.admin_client()? {
        Some(client) => {
            let (ips, dns_names) = args.names.json();
            let body = crate::wire::IssueBody {
                profile: args.profile.clone(),
                node: args.node.to_string(),
                ips,
                dns_names,
                common_name: args.cn.clone(),
                lifetime: args.lifetime.map(|l| l.to_string()),
                key_type: Some(args.key_type.to_string()),
                allow_root: args.allow_root,
            };
            let answer: crate::wire::IssueResponse = client.post_json("/v1/issue", &body).await?;
            (
                answer.certificate,
                answer.private_key_pem,
                answer.trust_bundle,
            )
        }
        None => {
            let request = IssueRequest {
                profile: args.profile.clone(),
                node: args.node.clone(),
                ips: args.names.ips.clone(),
                dns_names: args.names.dns_names.clone(),
                common_name: args.cn.clone(),
                lifetime: args.lifetime.map(|l| l.span_from(now)),
                key_type: args.key_type,
                allow_privileged_common_name: args.allow_root,
            };
            locally!(args.data_dir, a => async {
                let issued = a.issue_with_new_key(&request, &local_actor(), now).await?;
                Ok::<_, CliError>((
                    crate::wire::Certificate::from(issued.certificate),
                    issued.key_pem,
                    a.trust_bundle_pem(),
                ))
            })
        }
    };

    let cert_file = args.out.join(etcd_flags::files::certificate(&args.profile));
    let key_file = args.out.join(etcd_flags::files::key(&args.profile));
    let ca_file = args.out.join(etcd_flags::files::CA_BUNDLE);
    if !args.out.exists() {
        // Made only now that there is something to write (0700: a key goes there).
        fsutil::create_private_dir(&args.out)?;
    }
    fsutil::write_all_atomic(&[
        (&key_file, key_pem.as_bytes(), fsutil::PRIVATE),
        (
            &cert_file,
            certificate.certificate_pem.as_bytes(),
            fsutil::PUBLIC,
        ),
        (&ca_file, bundle.as_bytes(), fsutil::PUBLIC),
    ])?;

    let c = &certificate;
    let mut out = stdout();
    writeln!(
        out,
        "Issued {} certificate {} for node {}",
        c.profile, c.serial, c.node
    )?;
    writeln!(out, "  common name: {}", c.common_name)?;
    writeln!(out, "  SANs:        {}", none_if_empty(&c.sans))?;
    writeln!(out, "  expires:     {}", date(c.not_after))?;
    for file in [&cert_file, &key_file, &ca_file] {
        writeln!(out, "  wrote        {}", file.display())?;
    }
    Ok(ExitCode::SUCCESS)
}

/// Fails early (before anything is signed) when the output dir cannot be written.
/// Checks, before anything is signed, that `out` can be written or made: it, or the nearest
/// of its parents that exists, is a directory we can write into.
fn check_output_dir(out: &Path) -> Result<(), CliError> {
    let existing = out
        .ancestors()
        .find(|p| p.exists())
        .unwrap_or(Path::new("."));
    if !existing.is_dir() {
        return Err(CliError::Failed(format!(
            "--out {}: {} exists and is not a directory",
            out.display(),
            existing.display()
        )));
    }
    tempfile::tempfile_in(existing)
        .map(drop)
        .map_err(|e| FsError::new("write into", existing, e).into())
}

async fn adopt(args: AdoptArgs, now: OffsetDateTime) -> Result<ExitCode, CliError> {
    let mut certificates = Vec::new();
    for file in &args.files {
        let ders = crate::pki::pem_certificates(&read_text(file)?).map_err(|source| {
            CliError::Certificate {
                path: file.clone(),
                source,
            }
        })?;
        certificates.push((file.clone(), ders.into_iter().next().unwrap_or_default()));
    }
    let adopted = locally!(args.data_dir, a => async {
        let mut adopted = Vec::new();
        for (file, der) in &certificates {
            let c = a.adopt(der, &args.profile, &args.node, &local_actor(), now).await?;
            adopted.push((file.clone(), c));
        }
        Ok::<_, CliError>(adopted)
    });
    let mut out = stdout();
    for (file, c) in adopted {
        writeln!(
            out,
            "Adopted {} as {} certificate {} of node {} (SANs {}; expires {})",
            file.display(),
            c.profile,
            c.serial,
            c.node,
            none_if_empty(&c.sans),
            date(c.not_after)
        )?;
    }
    Ok(ExitCode::SUCCESS)
}

async fn list(args: ListArgs, now: OffsetDateTime) -> Result<ExitCode, CliError> {
    let records: Vec<CertificateInfo> = match args.remote.admin_client()? {
        Some(client) => {
            let query = serde_urlencoded::to_string(crate::wire::CertsQuery {
                node: args.node.clone(),
                profile: args.profile.clone(),
                status: args.status.map(|s| s.as_str().to_string()),
                expiring_within: args.expiring_within.map(|d| d.to_string()),
            })
            .map_err(|e| CliError::Failed(e.to_string()))?;
            client.get_json(&format!("/v1/certs?{query}")).await?
        }
        None => {
            let filter = CertificateFilter {
                node: args.node.clone(),
                profile: args.profile.clone(),
                state: args.status,
                expiring_before: args.expiring_within.map(|d| now + d.as_time()),
                ..Default::default()
            };
            let records = locally!(args.data_dir, a => a.certificates(&filter, now));
            records.into_iter().map(Into::into).collect()
        }
    };
    let mut out = stdout();
    if args.json {
        serde_json::to_writer_pretty(&mut out, &records)?;
        writeln!(out)?;
        return Ok(ExitCode::SUCCESS);
    }
    write_table(&mut out, &records, now)?;
    Ok(ExitCode::SUCCESS)
}

fn write_table(
    out: &mut impl Write,
    records: &[CertificateInfo],
    now: OffsetDateTime,
) -> std::io::Result<()> {
    let header = [
        "SERIAL",
        "GEN",
        "PROFILE",
        "NODE",
        "COMMON NAME",
        "NOT AFTER",
        "DAYS LEFT",
        "STATUS",
    ];
    let rows: Vec<[String; 8]> = records
        .iter()
        .map(|r| {
            [
                r.serial.clone(),
                r.ca_generation.to_string(),
                r.profile.clone(),
                r.node.clone(),
                r.common_name.clone(),
                date(r.not_after),
                crate::duration::days_left(r.not_after, now).to_string(),
                r.status.clone(),
            ]
        })
        .collect();
    let mut widths = header.map(str::len);
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.len());
        }
    }
    let line = |cells: &[&str]| -> String {
        cells
            .iter()
            .zip(widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect::<Vec<_>>()
            .join("  ")
            .trim_end()
            .to_string()
    };
    writeln!(out, "{}", line(&header))?;
    for row in &rows {
        let cells: Vec<&str> = row.iter().map(String::as_str).collect();
        writeln!(out, "{}", line(&cells))?;
    }
    if rows.is_empty() {
        writeln!(out, "(no certificates match)")?;
    }
    Ok(())
}

async fn show(args: ShowArgs, now: OffsetDateTime) -> Result<ExitCode, CliError> {
    let r: CertificateInfo = match args.remote.admin_client()? {
        Some(client) => {
            let serial = crate::authority::normalize_serial(&args.serial)?;
            client.get_json(&format!("/v1/certs/{serial}")).await?
        }
        None => locally!(args.data_dir, a => a.certificate(&args.serial, now)).into(),
    };
    let mut out = stdout();
    if args.json {
        serde_json::to_writer_pretty(&mut out, &r)?;
        writeln!(out)?;
        return Ok(ExitCode::SUCCESS);
    }
    writeln!(out, "serial:        {}", r.serial)?;
    writeln!(out, "status:        {}", r.status)?;
    if let Some(at) = r.revoked_at {
        writeln!(
            out,
            "revoked:       {} ({})",
            date(at),
            r.revocation_reason.as_deref().unwrap_or("unspecified")
        )?;
    }
    writeln!(out, "profile:       {}", r.profile)?;
    writeln!(out, "node:          {}", r.node)?;
    writeln!(out, "subject:       {}", r.subject)?;
    writeln!(out, "SANs:          {}", r.sans.join(", "))?;
    writeln!(out, "key type:      {}", r.key_type)?;
    writeln!(out, "CA generation: {}", r.ca_generation)?;
    writeln!(out, "not before:    {}", date(r.not_before))?;
    writeln!(
        out,
        "not after:     {} ({} days left)",
        date(r.not_after),
        crate::duration::days_left(r.not_after, now)
    )?;
    writeln!(out, "issued at:     {}", date(r.issued_at))?;
    write!(out, "{}", r.pem)?;
    Ok(ExitCode::SUCCESS)
}

async fn revoke(args: RevokeArgs, now: OffsetDateTime) -> Result<ExitCode, CliError> {
    let reason = args.reason;
    let record: CertificateInfo = match args.remote.admin_client()? {
        Some(client) => {
            let serial = crate::authority::normalize_serial(&args.serial)?;
            let body = crate::wire::RevokeBody {
                reason: Some(reason.name().to_string()),
            };
            client
                .post_json(&format!("/v1/certs/{serial}/revoke"), &body)
                .await?
        }
        None => {
            locally!(args.data_dir, a => a.revoke(&args.serial, reason, &local_actor(), now)).into()
        }
    };
    let next = if args.remote.server.is_some() {
        "Agents install the new CRL within seconds; members without an agent need it written where etcd reads it: etcd-ca crl --out PKIDIR/ca.crl"
    } else {
        "Agents install the new CRL within seconds (through a running server); members without an agent need it written where etcd reads it: etcd-ca crl --out PKIDIR/ca.crl"
    };
    writeln!(
        stdout(),
        "Revoked {} ({} certificate of node {}, CN {}), reason {}.\n{next}",
        record.serial,
        record.profile,
        record.node,
        record.common_name,
        reason.name()
    )?;
    Ok(ExitCode::SUCCESS)
}

async fn crl(args: CrlArgs, now: OffsetDateTime) -> Result<ExitCode, CliError> {
    let der: Vec<u8> = match (args.remote.client()?, args.generation) {
        (Some(client), None) => client.get("/v1/crl").await?.body.to_vec(),
        (Some(client), Some(id)) => client
            .get(&format!("/v1/crl?generation={id}"))
            .await?
            .body
            .to_vec(),
        (None, None) => locally!(args.data_dir, a => a.crl_der(now)),
        (None, Some(id)) => {
            let issuer = CrlIssuer::Generation(id);
            locally!(args.data_dir, a => a.generation_crl_der(&issuer, now))
        }
    };
    // Never install something etcd cannot parse: a broken CRL makes it refuse every client.
    crate::pki::check_crl_der(&der).map_err(|e| {
        CliError::Failed(format!(
            "the CRL received is unusable ({e}); nothing was written"
        ))
    })?;
    // Like `issue --out`: a PKI dir that does not exist yet is made (0700).
    let parent = fsutil::parent_of(&args.out);
    if !parent.exists() {
        fsutil::create_private_dir(parent)?;
    }
    fsutil::write_atomic(&args.out, &der, fsutil::PUBLIC)?;
    match args.generation {
        Some(id) => writeln!(
            stdout(),
            "Wrote the CRL of CA generation {id} to {}",
            args.out.display()
        )?,
        None => writeln!(stdout(), "Wrote CRL to {}", args.out.display())?,
    }
    Ok(ExitCode::SUCCESS)
}

async fn audit(args: AuditArgs) -> Result<ExitCode, CliError> {
    let events: Vec<AuditEntry> = match args.remote.admin_client()? {
        Some(client) => {
            client
                .get_json(&format!("/v1/audit?limit={}", args.limit))
                .await?
        }
        None => {
            let events = locally!(args.data_dir, a => a.audit_events(args.limit));
            events.into_iter().map(Into::into).collect()
        }
    };
    let mut out = stdout();
    if args.json {
        serde_json::to_writer_pretty(&mut out, &events)?;
        writeln!(out)?;
        return Ok(ExitCode::SUCCESS);
    }
    // Columns as wide as their longest value, so long actors do not shift the rest.
    let width = |f: &dyn Fn(&AuditEntry) -> usize| events.iter().map(f).max().unwrap_or(0);
    let actor = width(&|e| e.actor.len());
    let action = width(&|e| e.action.len());
    let node = width(&|e| e.node.as_deref().unwrap_or("-").len());
    for e in &events {
        writeln!(
            out,
            "{}  {:<actor$}  {:<action$}  node={:<node$}  serial={} {}",
            date(e.at),
            e.actor,
            e.action,
            e.node.as_deref().unwrap_or("-"),
            e.serial.as_deref().unwrap_or("-"),
            e.detail
        )?;
    }
    Ok(ExitCode::SUCCESS)
}

fn inspect(args: InspectArgs, now: OffsetDateTime) -> Result<ExitCode, CliError> {
    let warn = args.warn.map(HumanDuration::as_time);
    let certificate_warn = warn.unwrap_or(time::Duration::days(30));
    let mut found = Vec::new();
    let mut crls = Vec::new();
    for file in &args.files {
        let bytes = std::fs::read(file).map_err(|e| FsError::new("read", file, e))?;
        if let Some(crl) = inspect::inspect_crl(file.clone(), &bytes, now, warn) {
            crls.push(crl);
            continue;
        }
        let text = String::from_utf8(bytes).map_err(|_| CliError::Certificate {
            path: file.clone(),
            source: PkiError::Pem("neither a PEM certificate file nor a CRL".into()),
        })?;
        let certs =
            inspect::inspect_pem(file.clone(), &text, now, certificate_warn).map_err(|source| {
                CliError::Certificate {
                    path: file.clone(),
                    source,
                }
            })?;
        found.extend(certs);
    }
    let mut out = stdout();
    if args.json {
        // One shape whatever the files held, so scripts can rely on it.
        #[derive(serde::Serialize)]
        struct Inspected<'a> {
            certificates: &'a [inspect::Inspected],
            crls: &'a [inspect::InspectedCrl],
        }
        let inspected = Inspected {
            certificates: &found,
            crls: &crls,
        };
        serde_json::to_writer_pretty(&mut out, &inspected)?;
        writeln!(out)?;
    } else {
        for c in &crls {
            let state = match c.expiry {
                Expiry::Ok => "ok",
                Expiry::ExpiresSoon => "NEXT UPDATE SOON",
                Expiry::Expired => "PAST ITS NEXT UPDATE",
                Expiry::NotYetValid => "NOT YET VALID",
            };
            writeln!(out, "{} (CRL)", c.file.display())?;
            writeln!(out, "  issuer:      {}", c.issuer)?;
            writeln!(
                out,
                "  number:      {}",
                c.crl_number.as_deref().unwrap_or("-")
            )?;
            writeln!(out, "  this update: {}", date(c.this_update))?;
            writeln!(
                out,
                "  next update: {}",
                c.next_update.map(date).unwrap_or_else(|| "-".into())
            )?;
            writeln!(out, "  revoked:     {}", c.revoked)?;
            writeln!(out, "  status:      {state}")?;
        }
        for c in &found {
            let s = &c.summary;
            let state = match c.expiry {
                Expiry::Ok => "ok",
                Expiry::ExpiresSoon => "EXPIRES SOON",
                Expiry::Expired => "EXPIRED",
                Expiry::NotYetValid => "NOT YET VALID",
            };
            let suffix = if c.index > 0 {
                format!(" (certificate {})", c.index + 1)
            } else {
                String::new()
            };
            writeln!(out, "{}{suffix}", c.file.display())?;
            writeln!(out, "  subject:    {}", s.subject)?;
            writeln!(out, "  issuer:     {}", s.issuer)?;
            writeln!(out, "  serial:     {}", s.serial)?;
            if s.is_ca {
                writeln!(out, "  CA:         yes")?;
            }
            writeln!(out, "  key type:   {}", s.key_type)?;
            writeln!(out, "  SANs:       {}", none_if_empty(&s.sans))?;
            writeln!(
                out,
                "  EKUs:       {}",
                none_if_empty(&s.extended_key_usages)
            )?;
            writeln!(out, "  not before: {}", date(s.not_before))?;
            writeln!(
                out,
                "  not after:  {} ({} days left)",
                date(s.not_after),
                c.days_left
            )?;
            writeln!(out, "  status:     {state}")?;
        }
    }
    let worrying =
        found.iter().any(|c| c.expiry != Expiry::Ok) || crls.iter().any(|c| c.expiry != Expiry::Ok);
    Ok(if worrying {
        ExitCode::from(3)
    } else {
        ExitCode::SUCCESS
    })
}

fn none_if_empty(items: &[String]) -> String {
    if items.is_empty() {
        "(none)".into()
    } else {
        items.join(", ")
    }
}

fn etcd_flags(args: EtcdFlagsArgs) -> Result<ExitCode, CliError> {
    let dir = std::path::absolute(&args.dir).map_err(|e| FsError::new("resolve", &args.dir, e))?;
    let format = match args.format {
        FlagFormatArg::Args => FlagFormat::Args,
        FlagFormatArg::Env => FlagFormat::Env,
        FlagFormatArg::Lines => FlagFormat::Lines,
        FlagFormatArg::Yaml => FlagFormat::Yaml,
    };
    let missing = etcd_flags::missing_files(&dir);
    if !missing.is_empty() {
        let message = format!(
            "{} has no {} yet: etcd will not start with these flags until the agent (or `etcd-ca issue --out`) writes them",
            dir.display(),
            missing.join(", ")
        );
        if args.check {
            return Err(CliError::Failed(message));
        }
        eprintln!("warning: {message}");
    }
    write!(
        stdout(),
        "{}",
        etcd_flags::render(args.node.as_str(), &dir, &args.peer_cn, format)
    )?;
    Ok(ExitCode::SUCCESS)
}

fn policy_check(file: &Path) -> Result<ExitCode, CliError> {
    let policy = Policy::load(file)?;
    let mut out = stdout();
    writeln!(out, "{}: ok", file.display())?;
    for name in policy.profile_names() {
        let p = policy.profile(&name)?;
        let ekus: Vec<String> = p
            .extended_key_usages
            .iter()
            .map(|e| e.to_string())
            .collect();
        writeln!(
            out,
            "  {name:<8} {:<22} default {}, max {}",
            ekus.join("+"),
            HumanDuration::from(p.default_lifetime),
            HumanDuration::from(p.max_lifetime)
        )?;
    }
    Ok(ExitCode::SUCCESS)
}
