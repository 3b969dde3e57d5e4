//! The command line: clap definitions, and one thin function per command that calls into the
//! library and prints the result. Flags are turned into validated types (node names, SANs,
//! durations) by clap's parsers before anything runs.

use std::io::Write;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand, ValueEnum};
use time::OffsetDateTime;

use crate::authority::{Authority, AuthorityError, InitOptions, IssueRequest, RevocationReason};
use crate::duration::{rfc3339, HumanDuration};
use crate::etcd_flags::{self, FlagFormat};
use crate::fsutil::{self, FsError};
use crate::inspect::{self, Expiry};
use crate::names::{DnsName, NodeName};
use crate::pki::{KeyType, PkiError};
use crate::policy::{Policy, PolicyError};
use crate::store::{CertificateFilter, CertificateRecord, CertificateStatus};

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
    #[error("{0}")]
    Usage(String),
    #[error("cannot write to standard output: {0}")]
    Stdout(#[from] std::io::Error),
    #[error("cannot encode JSON: {0}")]
    Json(#[from] serde_json::Error),
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
    /// The CA's data dir (database, CA keys, policy).
    #[arg(long, env = "ETCD_CA_DATA_DIR", default_value = "/var/lib/etcd-ca")]
    pub data_dir: PathBuf,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Create a CA in a new data dir (or adopt an existing CA with --import-cert/--import-key).
    Init(InitArgs),
    /// Issue a certificate and its key on the CA host, into a directory.
    Issue(IssueArgs),
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
}

#[derive(Debug, Args)]
pub struct IssueArgs {
    #[command(flatten)]
    pub data_dir: DataDirArg,
    /// Policy profile: server, peer or client (or any profile your policy defines).
    #[arg(long)]
    pub profile: String,
    /// The etcd member (or client) this certificate is for.
    #[arg(long)]
    pub node: NodeName,
    /// An address of the node (repeat). Without --ip/--dns the node's registered names are used.
    #[arg(long = "ip")]
    pub ips: Vec<IpAddr>,
    /// A DNS name of the node (repeat).
    #[arg(long = "dns")]
    pub dns_names: Vec<DnsName>,
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
pub struct ListArgs {
    #[command(flatten)]
    pub data_dir: DataDirArg,
    /// Only certificates (still valid) that expire within this window, e.g. 30d.
    #[arg(long)]
    pub expiring_within: Option<HumanDuration>,
    #[arg(long)]
    pub node: Option<String>,
    #[arg(long)]
    pub profile: Option<String>,
    /// valid, revoked or expired.
    #[arg(long, value_parser = parse_status)]
    pub status: Option<CertificateStatus>,
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct ShowArgs {
    #[command(flatten)]
    pub data_dir: DataDirArg,
    /// Serial number in hex (colons allowed).
    pub serial: String,
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct RevokeArgs {
    #[command(flatten)]
    pub data_dir: DataDirArg,
    /// Serial number in hex (colons allowed).
    pub serial: String,
    /// unspecified, keyCompromise, caCompromise, affiliationChanged, superseded,
    /// cessationOfOperation or privilegeWithdrawn.
    #[arg(long, default_value = "unspecified")]
    pub reason: String,
}

#[derive(Debug, Args)]
pub struct CrlArgs {
    #[command(flatten)]
    pub data_dir: DataDirArg,
    /// Where to write the DER CRL (replaced atomically: etcd re-reads it per connection).
    #[arg(long)]
    pub out: PathBuf,
}

#[derive(Debug, Args)]
pub struct InspectArgs {
    /// PEM files holding one or more certificates.
    #[arg(required = true)]
    pub files: Vec<PathBuf>,
    /// Exit with status 3 when a certificate expires within this window (or has expired).
    #[arg(long, default_value = "30d")]
    pub warn: HumanDuration,
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum FlagFormatArg {
    /// --flag=value lines for a unit file's ExecStart.
    Args,
    /// ETCD_FLAG=value lines for an environment file.
    Env,
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
    #[arg(long, value_enum, default_value = "args")]
    pub format: FlagFormatArg,
}

#[derive(Debug, Args)]
pub struct AuditArgs {
    #[command(flatten)]
    pub data_dir: DataDirArg,
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

fn parse_status(s: &str) -> Result<CertificateStatus, String> {
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

/// Opens the data dir, runs the command's future, and closes the database whatever it returned.
macro_rules! with_authority {
    ($args:ident, $authority:ident => $body:expr) => {{
        let dir = $args.data_dir.data_dir.clone();
        let $authority = Authority::open(&dir).await?;
        let result = $body.await;
        $authority.close().await;
        result
    }};
}

/// Runs one command. Returns the exit code for outcomes that are not errors (inspect's warning).
pub async fn run(cli: Cli) -> Result<ExitCode, CliError> {
    // Certificates carry whole seconds; so does everything we print and store.
    let now = OffsetDateTime::now_utc()
        .replace_nanosecond(0)
        .unwrap_or(OffsetDateTime::UNIX_EPOCH);
    match cli.command {
        Command::Init(args) => init(args, now).await,
        Command::Issue(args) => issue(args, now).await,
        Command::List(args) => with_authority!(args, a => list(&a, args, now)),
        Command::Show(args) => with_authority!(args, a => show(&a, args, now)),
        Command::Revoke(args) => with_authority!(args, a => revoke(&a, args, now)),
        Command::Crl(args) => with_authority!(args, a => crl(&a, args, now)),
        Command::Audit(args) => with_authority!(args, a => audit(&a, args)),
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

async fn init(args: InitArgs, now: OffsetDateTime) -> Result<ExitCode, CliError> {
    let policy = match &args.policy {
        Some(path) => Some((path.clone(), read_text(path)?)),
        None => None,
    };
    let import = match (&args.import_cert, &args.import_key) {
        (Some(cert), Some(key)) => Some((read_text(cert)?, read_text(key)?)),
        _ => None,
    };
    let report = Authority::init(
        &args.data_dir.data_dir,
        InitOptions {
            key_type: args.key_type,
            validity: args.validity.as_std(),
            common_name: args.common_name,
            policy,
            import,
        },
        &local_actor(),
        now,
    )
    .await?;
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
    let authority = Authority::open(&args.data_dir.data_dir).await?;
    let request = IssueRequest {
        profile: args.profile.clone(),
        node: args.node.clone(),
        ips: args.ips.clone(),
        dns_names: args.dns_names.clone(),
        common_name: args.cn.clone(),
        lifetime: args.lifetime.map(|l| l.as_std()),
        key_type: args.key_type,
        allow_privileged_common_name: args.allow_root,
    };
    let issued = authority
        .issue_with_new_key(&request, &local_actor(), now)
        .await;
    let bundle = authority.trust_bundle_pem();
    authority.close().await;
    let issued = issued?;

    if !args.out.exists() {
        fsutil::create_private_dir(&args.out)?;
    }
    let cert_file = args.out.join(etcd_flags::files::certificate(&args.profile));
    let key_file = args.out.join(etcd_flags::files::key(&args.profile));
    let ca_file = args.out.join(etcd_flags::files::CA_BUNDLE);
    fsutil::write_atomic(&key_file, issued.key_pem.as_bytes(), fsutil::PRIVATE)?;
    fsutil::write_atomic(
        &cert_file,
        issued.certificate.certificate_pem.as_bytes(),
        fsutil::PUBLIC,
    )?;
    fsutil::write_atomic(&ca_file, bundle.as_bytes(), fsutil::PUBLIC)?;

    let c = &issued.certificate;
    let mut out = stdout();
    writeln!(
        out,
        "Issued {} certificate {} for node {}",
        c.profile, c.serial, c.node
    )?;
    writeln!(out, "  common name: {}", c.common_name)?;
    writeln!(
        out,
        "  SANs:        {}",
        if c.sans.is_empty() {
            "(none)".to_string()
        } else {
            c.sans.join(", ")
        }
    )?;
    writeln!(out, "  expires:     {}", date(c.not_after))?;
    for file in [&cert_file, &key_file, &ca_file] {
        writeln!(out, "  wrote        {}", file.display())?;
    }
    Ok(ExitCode::SUCCESS)
}

/// Fails early (before anything is signed) when the output dir cannot be written.
fn check_output_dir(out: &Path) -> Result<(), CliError> {
    let existing = if out.exists() {
        out
    } else {
        fsutil::parent_of(out)
    };
    if !existing.is_dir() {
        return Err(CliError::Usage(format!(
            "--out {}: {} is not a directory",
            out.display(),
            existing.display()
        )));
    }
    tempfile::tempfile_in(existing)
        .map(drop)
        .map_err(|e| FsError::new("write into", existing, e).into())
}

async fn list(
    authority: &Authority,
    args: ListArgs,
    now: OffsetDateTime,
) -> Result<ExitCode, CliError> {
    let filter = CertificateFilter {
        node: args.node,
        profile: args.profile,
        status: args.status,
        expiring_before: args.expiring_within.map(|d| now + d.as_time()),
    };
    let records = authority.certificates(&filter, now).await?;
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
    records: &[CertificateRecord],
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
                (r.not_after - now).whole_days().to_string(),
                r.status.as_str().to_string(),
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

async fn show(
    authority: &Authority,
    args: ShowArgs,
    now: OffsetDateTime,
) -> Result<ExitCode, CliError> {
    let r = authority.certificate(&args.serial, now).await?;
    let mut out = stdout();
    if args.json {
        serde_json::to_writer_pretty(&mut out, &r)?;
        writeln!(out)?;
        return Ok(ExitCode::SUCCESS);
    }
    writeln!(out, "serial:        {}", r.serial)?;
    writeln!(out, "status:        {}", r.status.as_str())?;
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
        (r.not_after - now).whole_days()
    )?;
    writeln!(out, "issued at:     {}", date(r.issued_at))?;
    write!(out, "{}", r.pem)?;
    Ok(ExitCode::SUCCESS)
}

async fn revoke(
    authority: &Authority,
    args: RevokeArgs,
    now: OffsetDateTime,
) -> Result<ExitCode, CliError> {
    let reason: RevocationReason = args.reason.parse()?;
    let record = authority
        .revoke(&args.serial, reason, &local_actor(), now)
        .await?;
    writeln!(
        stdout(),
        "Revoked {} ({} certificate of node {}, CN {}), reason {}.\nWrite a new CRL where etcd reads it: etcd-ca crl --out PKIDIR/ca.crl",
        record.serial,
        record.profile,
        record.node,
        record.common_name,
        reason.name()
    )?;
    Ok(ExitCode::SUCCESS)
}

async fn crl(
    authority: &Authority,
    args: CrlArgs,
    now: OffsetDateTime,
) -> Result<ExitCode, CliError> {
    let der = authority.crl_der(now).await?;
    fsutil::write_atomic(&args.out, &der, fsutil::PUBLIC)?;
    writeln!(stdout(), "Wrote CRL to {}", args.out.display())?;
    Ok(ExitCode::SUCCESS)
}

async fn audit(authority: &Authority, args: AuditArgs) -> Result<ExitCode, CliError> {
    let events = authority.audit_events(args.limit).await?;
    let mut out = stdout();
    if args.json {
        serde_json::to_writer_pretty(&mut out, &events)?;
        writeln!(out)?;
        return Ok(ExitCode::SUCCESS);
    }
    for e in events {
        writeln!(
            out,
            "{}  {:<16} {:<10} node={} serial={} {}",
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
    let warn = args.warn.as_time();
    let mut found = Vec::new();
    for file in &args.files {
        let text = read_text(file)?;
        let certs = inspect::inspect_pem(file.clone(), &text, now, warn).map_err(|source| {
            CliError::Certificate {
                path: file.clone(),
                source,
            }
        })?;
        found.extend(certs);
    }
    let mut out = stdout();
    if args.json {
        serde_json::to_writer_pretty(&mut out, &found)?;
        writeln!(out)?;
    } else {
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
    let worrying = found.iter().any(|c| c.expiry != Expiry::Ok);
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
    };
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
