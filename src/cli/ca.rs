//! The CA as a whole: `init`, `ca rotate`, `backup` and `restore`.

use super::*;

#[derive(Debug, Args)]
pub struct BackupArgs {
    #[command(flatten)]
    pub data_dir: DataDirArg,
    #[command(flatten)]
    pub remote: RemoteArgs,
    /// The backup file to write (mode 0600; it holds the sealed CA keys). An existing file is
    /// kept unless --force.
    #[arg(long)]
    pub out: PathBuf,
    /// Replace an existing --out file (only once the new backup is complete).
    #[arg(long)]
    pub force: bool,
}

#[derive(Debug, Args)]
// Exactly one of --crl and --no-crl: clap names both when neither is given.
#[command(group(clap::ArgGroup::new("revocations").required(true).args(["crl", "no_crl"])))]
pub struct RestoreArgs {
    #[command(flatten)]
    pub data_dir: DataDirArg,
    /// The backup file written by `etcd-ca backup`.
    #[arg(long)]
    pub from: PathBuf,
    /// A CRL this CA published after the backup (etcd's ca.crl from the member that fetched
    /// last, DER or PEM): its revocations are re-applied, so none made since the backup is
    /// undone. One of --crl or --no-crl is required.
    #[arg(long)]
    pub crl: Option<PathBuf>,
    /// Restore without a CRL, accepting that revocations made after the backup are undone.
    #[arg(long)]
    pub no_crl: bool,
    /// Keep the backup's tokens usable. By default every admin token is revoked (one revoked
    /// after the backup would work again) and unused bootstrap tokens are withdrawn (one used
    /// after the backup could enroll twice); create new ones with `admin-token create`.
    #[arg(long)]
    pub keep_tokens: bool,
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
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
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

/// Takes a backup through the server and writes it like a local one (atomically, 0600).
pub(super) async fn remote_backup(
    client: &crate::client::ApiClient,
    out: &Path,
) -> Result<crate::authority::BackupReport, CliError> {
    // Streamed into a file next to `out` (0600) that replaces it only once complete.
    let mut staged = fsutil::AtomicFile::create(out, fsutil::PRIVATE)?;
    let headers = client
        .clone()
        .with_timeout(std::time::Duration::from_secs(3600))
        .backup(&mut std::io::BufWriter::new(staged.file()))
        .await?;
    let count = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<i64>().ok())
            .ok_or_else(|| {
                CliError::Failed(format!("the server's backup answer has no {name} header"))
            })
    };
    let generations = count(crate::wire::BACKUP_GENERATIONS)?;
    let certificates = count(crate::wire::BACKUP_CERTIFICATES)?;
    let written = std::fs::File::open(staged.staged_path())
        .map_err(|e| FsError::new("read", staged.staged_path(), e))?;
    let files = crate::authority::archive_names(std::io::BufReader::new(written))?;
    staged.commit()?;
    Ok(crate::authority::BackupReport {
        file: out.to_path_buf(),
        generations: usize::try_from(generations).unwrap_or_default(),
        certificates,
        files,
    })
}

pub(super) async fn rotate(args: RotateArgs, now: OffsetDateTime) -> Result<ExitCode, CliError> {
    let step = match args.step {
        RotateStep::Start => "start",
        RotateStep::Status => "status",
        RotateStep::Activate => "activate",
        RotateStep::Finish => "finish",
        RotateStep::Abort => "abort",
    };
    let body = crate::wire::RotateBody {
        force: args.force,
        key_type: Some(args.key_type.to_string()),
    };
    let status = Target::admin(&args.data_dir, &args.remote)
        .await?
        .run(async |t| match args.step {
            RotateStep::Status => t.rotation_status(now).await,
            _ => t.rotate(step, body, now).await,
        })
        .await?;
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
pub(super) fn write_rotation_status(
    out: &mut impl Write,
    s: &crate::wire::RotationStatus,
) -> std::io::Result<()> {
    let generation = |g: Option<&crate::wire::RotationGeneration>| match g {
        Some(g) => format!("generation {} ({})", g.id, g.fingerprint),
        None => "generation ? (missing)".to_string(),
    };
    let (active, other) = (generation(Some(&s.active)), generation(s.other.as_ref()));
    match s.phase.as_str() {
        "started" => writeln!(
            out,
            "Rotation started: {other} is trusted but not signing; {active} signs."
        )?,
        "activated" => writeln!(
            out,
            "Rotation activated: {active} signs; {other} is still trusted while it retires."
        )?,
        _ => writeln!(out, "No rotation in progress: {active} signs.")?,
    }
    if let Some(step) = &s.last_step {
        writeln!(
            out,
            "Last step: {} at {}: {}.",
            step.step,
            rfc3339(step.at),
            step.outcome
        )?;
    }
    let blocked = s.blocked_by.join(", ");
    if s.next_step.is_none() && !s.blocked_by.is_empty() {
        writeln!(out, "Still converging: {blocked}")?;
    }
    let stale: Vec<&str> = s
        .nodes
        .iter()
        .filter(|n| n.stale)
        .map(|n| n.node.as_str())
        .collect();
    if !stale.is_empty() {
        writeln!(
            out,
            "Not reported since the last step (STALE: their columns may be out of date; a node without a running agent never converges): {}",
            stale.join(", ")
        )?;
    }
    if let Some(step) = &s.next_step {
        if s.blocked_by.is_empty() {
            writeln!(
                out,
                "Next step: etcd-ca ca rotate {step} (every node has converged)"
            )?;
        } else {
            writeln!(
                out,
                "Next step: etcd-ca ca rotate {step}, waiting for: {blocked}"
            )?;
        }
    }
    if let Some((node, until)) = &s.restart_lease {
        writeln!(out, "Restart lease: {node} until {until}")?;
    }
    let list = |v: &Option<Vec<i64>>| match v {
        Some(ids) => ids
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
    for n in &s.nodes {
        let certs: Vec<String> = n
            .certificates
            .iter()
            .map(|(p, g)| format!("{p}:{g}"))
            .collect();
        let reported = match (n.reported_at, n.stale) {
            (Some(at), true) => format!("{} STALE", rfc3339(at)),
            (Some(at), false) => rfc3339(at),
            (None, _) => "never".to_string(),
        };
        writeln!(
            out,
            "{:<14} {:<6} {:<9} {:<9} {:<28} {:<20} {}",
            n.node,
            if n.member { "yes" } else { "no" },
            list(&n.installed_bundle),
            list(&n.running_bundle),
            certs.join(" "),
            reported,
            n.waiting_for.as_deref().unwrap_or("-")
        )?;
    }
    Ok(())
}

pub(super) async fn init(args: InitArgs, now: OffsetDateTime) -> Result<ExitCode, CliError> {
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
            database: args.data_dir.database()?,
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

/// `etcd-ca backup`: on the data dir, or taken by a running server and downloaded.
pub(super) async fn backup(args: BackupArgs, now: OffsetDateTime) -> Result<ExitCode, CliError> {
    // Checked before any backup is taken (and audited): the file must be one that can be
    // written, and an earlier backup is worth keeping (replacing one takes --force).
    if args.out.is_dir() {
        return Err(CliError::Failed(format!(
            "{} is a directory; name the backup file, e.g. {}",
            args.out.display(),
            args.out.join("etcd-ca.backup").display()
        )));
    }
    if !args.force && args.out.exists() {
        return Err(CliError::Failed(format!(
            "{} exists; choose a new file, or pass --force to replace it once the new backup is complete",
            args.out.display()
        )));
    }
    let report = Target::admin(&args.data_dir, &args.remote)
        .await?
        .run(async |t| t.backup(&args.out, now).await)
        .await?;
    writeln!(
        stdout(),
        "Wrote backup {} ({}, {}; files: {})",
        report.file.display(),
        plural(report.generations as u64, "CA generation"),
        plural(report.certificates.max(0) as u64, "certificate"),
        report.files.join(", ")
    )?;
    Ok(ExitCode::SUCCESS)
}

/// `etcd-ca restore`: a backup into a new data dir, checked first.
pub(super) async fn restore(args: RestoreArgs) -> Result<ExitCode, CliError> {
    if args.data_dir.database.is_some() {
        eprintln!(
            "note: restore writes a SQLite data dir; --database (or ETCD_CA_DATABASE_URL) is not used. To run the restored CA on PostgreSQL, move it there afterwards: etcd-ca migrate --database URL --from-sqlite {}",
            args.data_dir.path().display()
        );
    }
    let passphrase = args.data_dir.passphrase()?;
    let checked_keys = passphrase.is_some();
    let later = match &args.crl {
        Some(path) => crate::authority::LaterRevocations::FromCrl(path),
        None => crate::authority::LaterRevocations::Undone,
    };
    let report = Authority::restore(
        &args.from,
        args.data_dir.path(),
        passphrase,
        later,
        args.keep_tokens,
    )
    .await?;
    if !checked_keys {
        eprintln!(
            "warning: no passphrase given (--passphrase-file, ETCD_CA_PASSPHRASE_FILE or \
                 ETCD_CA_PASSPHRASE): the \
             restored CA keys were not opened, so a backup taken under another passphrase \
             would only fail when the CA next signs"
        );
    }
    let mut out = stdout();
    writeln!(
        out,
        "Restored {} into {} ({}, {})",
        report.backup.file.display(),
        args.data_dir.path().display(),
        plural(report.backup.generations as u64, "CA generation"),
        plural(report.backup.certificates.max(0) as u64, "certificate")
    )?;
    let since = report
        .latest_record
        .map_or_else(|| "the backup was taken".to_string(), date);
    writeln!(
        out,
        "The backup knows nothing after {since}: certificates issued since are unknown here (their \
         nodes renew only after `etcd-ca adopt` or a new enrollment token)."
    )?;
    match &report.recovered {
        Some(r) => {
            writeln!(
                out,
                "Re-applied the CRL {} (number {}, issued {}, signed by generation {}): {} \
                 revoked again, {} revoked already, {} issued after the backup kept revoked \
                 (etcd's CRL lists them){}",
                args.crl.as_deref().unwrap_or(Path::new("-")).display(),
                r.crl_number
                    .map_or_else(|| "none".into(), |n| n.to_string()),
                date(r.crl_this_update),
                r.generation,
                plural(r.revoked_again.len() as u64, "certificate"),
                r.already_revoked,
                r.issued_after_backup.len(),
                if r.issued_after_backup.is_empty() {
                    String::new()
                } else {
                    format!(": {}", r.issued_after_backup.join(" "))
                }
            )?;
            if r.older_than_backup {
                eprintln!(
                    "warning: the CRL was issued before the backup's newest record ({since}): it \
                     cannot hold revocations made after the backup; use the newest ca.crl any \
                     member has"
                );
            }
        }
        None => {
            eprintln!(
                "warning: restored with --no-crl: revocations made after {since} are not in the \
                 backup, so they are undone"
            );
        }
    }
    match report.tokens_withdrawn {
        Some((admin, bootstrap)) => writeln!(
            out,
            "Revoked the backup's {} and withdrew {} not yet used (it knows nothing of their use \
             after the backup): create new ones with `etcd-ca admin-token create` and \
             `etcd-ca token create`.",
            plural(admin, "admin token"),
            plural(bootstrap, "bootstrap token")
        )?,
        None => writeln!(out, "Kept the backup's tokens (--keep-tokens).")?,
    }
    writeln!(
        out,
        "CRL numbers continue past any published before: from the current Unix time, {}.",
        crate::clock::now().unix_timestamp()
    )?;
    Ok(ExitCode::SUCCESS)
}
