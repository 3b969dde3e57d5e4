//! The command line: clap definitions, and one thin function per command that calls into the
//! library and prints the result. Flags are turned into validated types (node names, SANs,
//! durations) by clap's parsers before anything runs.
//!
//! This file holds the error type (and its exit statuses), the command tree and the dispatch;
//! each command group has its file: `serve`, `agent`, `ca` (init, rotation, backup, restore),
//! `tokens`, `certs` (issue, list, show, revoke, CRL, audit), `files` (inspect, etcd-flags,
//! policy check), and `common` the flags they share (data dir, `--server` and its pin).

use std::io::Write;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand, ValueEnum};
use time::OffsetDateTime;

use std::sync::Arc;

use crate::authority::keyfile::Passphrase;
use crate::authority::{
    Authority, AuthorityError, CrlIssuer, DataDir, InitOptions, KeyProtection, RevocationReason,
};
use crate::duration::{rfc3339, HumanDuration};
use crate::etcd_flags::{self, FlagFormat};
use crate::fsutil::{self, FsError};
use crate::inspect::{self, Expiry};
use crate::names::{DnsName, NodeName, San};
use crate::pki::{KeyType, PkiError};
use crate::policy::{Policy, PolicyError};
use crate::store::{CertificateState, Migrations, StoreConfig};
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
    #[error(transparent)]
    Serve(#[from] crate::api::run::RunError),
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
    /// Revoke a certificate. Through a server (--server) agents fetch the new CRL within seconds;
    /// on the data dir, write it for the members with `etcd-ca crl`.
    Revoke(RevokeArgs),
    /// Write the CRL (DER) to a file, atomically.
    Crl(CrlArgs),
    /// Show what is in any PEM certificate files and warn about expiry.
    Inspect(InspectArgs),
    /// Print the TLS flags for an etcd member whose certificates live in a PKI dir.
    EtcdFlags(EtcdFlagsArgs),
    /// Show the audit trail: every issue, revocation and CA change.
    Audit(AuditArgs),
    /// Remove what is past its retention (policy [retention]): certificates long expired, used
    /// tokens, old audit events. The server does this a minute after start and hourly;
    /// --dry-run only counts.
    Tidy(TidyArgs),
    /// Check what every member really serves against what the CA issued (serial, SANs, chain,
    /// revocation, expiry) and that the CRL is fresh; exit status 1 on any failure.
    Check(CheckArgs),
    /// Policy files.
    #[command(subcommand)]
    Policy(PolicyCommand),
    /// Prepare a PostgreSQL database several CA servers share: apply its schema, move a SQLite
    /// CA onto it (--from-sqlite), publish the policy its servers sign under (--policy).
    Migrate(MigrateArgs),
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

mod agent;
mod ca;
mod certs;
mod check;
mod common;
mod files;
mod migrate;
mod serve;
mod target;
mod tidy;
mod tokens;

use agent::agent;
pub use agent::{AgentArgs, AgentCommand, AgentStatusCommand};
use ca::{backup, init, restore, rotate};
pub use ca::{BackupArgs, CaCommand, InitArgs, RestoreArgs, RotateArgs, RotateStep};
use certs::{adopt, audit, crl, issue, list, revoke, show};
pub use certs::{AdoptArgs, AuditArgs, CrlArgs, IssueArgs, ListArgs, RevokeArgs, ShowArgs};
use check::check;
pub use check::{CheckArgs, CheckReport};
use common::fingerprint_arg;
pub use common::{DataDirArg, KeyProtectionArgs, NodeNamesArgs, RemoteArgs, DEFAULT_DATA_DIR};
use files::{etcd_flags, inspect, policy_check};
pub use files::{EtcdFlagsArgs, FlagFormatArg, InspectArgs};
use migrate::migrate;
pub use migrate::MigrateArgs;
use serve::serve;
pub use serve::ServeArgs;
use target::Target;
use tidy::tidy;
pub use tidy::TidyArgs;
use tokens::{admin_token_create, admin_token_list, admin_token_revoke, token_create};
pub use tokens::{
    AdminTokenCommand, AdminTokenListArgs, AdminTokenRevokeArgs, TokenCommand, TokenCreateArgs,
};

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
        Command::Tidy(args) => tidy(args, now).await,
        Command::Check(args) => check(args, now).await,
        Command::Agent(AgentCommand {
            status: Some(AgentStatusCommand::Status { dir }),
            ..
        }) => {
            write!(stdout(), "{}", crate::agent::status_report(&dir, now)?)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Agent(AgentCommand { status: None, run }) => agent(run).await,
        Command::Ca(CaCommand::Rotate(args)) => rotate(args, now).await,
        Command::Backup(args) => backup(args, now).await,
        Command::Restore(args) => restore(args).await,
        Command::Inspect(args) => inspect(args, now),
        Command::EtcdFlags(args) => etcd_flags(args),
        Command::Policy(PolicyCommand::Check { file }) => policy_check(&file),
        Command::Migrate(args) => migrate(args, now).await,
    }
}

fn read_text(path: &Path) -> Result<String, CliError> {
    std::fs::read_to_string(path).map_err(|e| FsError::new("read", path, e).into())
}

/// `1 certificate`, `3 certificates`.
fn plural(n: u64, what: &str) -> String {
    match n {
        1 => format!("1 {what}"),
        _ => format!("{n} {what}s"),
    }
}

fn stdout() -> std::io::StdoutLock<'static> {
    std::io::stdout().lock()
}

fn date(t: OffsetDateTime) -> String {
    rfc3339(t)
}

fn none_if_empty(items: &[String]) -> String {
    if items.is_empty() {
        "(none)".into()
    } else {
        items.join(", ")
    }
}
