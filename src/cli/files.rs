//! What the CLI tells about files, with no CA needed: `inspect`, `etcd-flags`, `policy check`.

use super::*;

#[derive(Debug, Args)]
pub struct InspectArgs {
    /// Certificate files (PEM, one or more certificates each) or CRLs (DER or PEM).
    #[arg(required = true)]
    pub files: Vec<PathBuf>,
    /// Exit with status 3 when a certificate expires within this window (or has expired)
    /// [default: 30d; for a CRL, the last quarter of its lifetime].
    #[arg(long)]
    pub warn: Option<HumanDuration>,
    /// Print JSON instead of text.
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

pub(super) fn inspect(args: InspectArgs, now: OffsetDateTime) -> Result<ExitCode, CliError> {
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

pub(super) fn etcd_flags(args: EtcdFlagsArgs) -> Result<ExitCode, CliError> {
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

pub(super) fn policy_check(file: &Path) -> Result<ExitCode, CliError> {
    let policy = Policy::parse(&read_text(file)?, file)?;
    let mut out = stdout();
    writeln!(out, "{}: ok", file.display())?;
    let r = policy.retention;
    writeln!(
        out,
        "  retention: expired certificates {}, tokens {}, audit events {}",
        HumanDuration::from(r.expired_certificates),
        HumanDuration::from(r.tokens),
        HumanDuration::from(r.audit_events)
    )?;
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
