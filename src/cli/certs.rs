//! Certificates: `issue`, `adopt`, `list`, `show`, `revoke`, `crl`, and the audit trail.

use super::*;

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
    /// Only certificates that are neither revoked nor expired (valid or superseded) and
    /// expire within this window, e.g. 30d.
    #[arg(long)]
    pub expiring_within: Option<HumanDuration>,
    /// Only this node's certificates.
    #[arg(long)]
    pub node: Option<String>,
    /// Only certificates of this profile (server, peer, client, admin...).
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
    /// Print JSON instead of text.
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
pub struct AuditArgs {
    #[command(flatten)]
    pub data_dir: DataDirArg,
    #[command(flatten)]
    pub remote: RemoteArgs,
    /// How many of the most recent events to show.
    #[arg(long, default_value_t = 100)]
    pub limit: i64,
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
}

pub(super) async fn issue(args: IssueArgs, now: OffsetDateTime) -> Result<ExitCode, CliError> {
    check_output_dir(&args.out)?;
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
    let answer = Target::admin(&args.data_dir, &args.remote)
        .await?
        .run(async |t| t.issue(body, now).await)
        .await?;
    let (certificate, key_pem, bundle) = (
        answer.certificate,
        answer.private_key_pem,
        answer.trust_bundle,
    );

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
pub(super) fn check_output_dir(out: &Path) -> Result<(), CliError> {
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

pub(super) async fn adopt(args: AdoptArgs, now: OffsetDateTime) -> Result<ExitCode, CliError> {
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

pub(super) async fn list(args: ListArgs, now: OffsetDateTime) -> Result<ExitCode, CliError> {
    let query = crate::wire::CertsQuery {
        node: args.node.clone(),
        profile: args.profile.clone(),
        status: args.status.map(|s| s.as_str().to_string()),
        expiring_within: args.expiring_within.map(|d| d.to_string()),
        ..Default::default()
    };
    let records: Vec<CertificateInfo> = Target::admin(&args.data_dir, &args.remote)
        .await?
        .run(async |t| t.certificates(query, now).await)
        .await?;
    let mut out = stdout();
    if args.json {
        serde_json::to_writer_pretty(&mut out, &records)?;
        writeln!(out)?;
        return Ok(ExitCode::SUCCESS);
    }
    write_table(&mut out, &records, now)?;
    Ok(ExitCode::SUCCESS)
}

pub(super) fn write_table(
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
                if r.not_after <= now {
                    "expired".to_string()
                } else {
                    crate::duration::days_left(r.not_after, now).to_string()
                },
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

pub(super) async fn show(args: ShowArgs, now: OffsetDateTime) -> Result<ExitCode, CliError> {
    let r = Target::admin(&args.data_dir, &args.remote)
        .await?
        .run(async |t| t.certificate(&args.serial, now).await)
        .await?;
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

pub(super) async fn revoke(args: RevokeArgs, now: OffsetDateTime) -> Result<ExitCode, CliError> {
    let reason = args.reason;
    let body = crate::wire::RevokeBody {
        reason: Some(reason.name().to_string()),
    };
    let record = Target::admin(&args.data_dir, &args.remote)
        .await?
        .run(async |t| t.revoke(&args.serial, body, now).await)
        .await?;
    let next = if !args.remote.server.is_empty() {
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

pub(super) async fn crl(args: CrlArgs, now: OffsetDateTime) -> Result<ExitCode, CliError> {
    let der: Vec<u8> = match (args.remote.client()?, args.generation) {
        (Some(client), generation) => client.crl(generation).await?,
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

pub(super) async fn audit(args: AuditArgs) -> Result<ExitCode, CliError> {
    let events: Vec<AuditEntry> = Target::admin(&args.data_dir, &args.remote)
        .await?
        .run(async |t| t.audit(args.limit).await)
        .await?;
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
