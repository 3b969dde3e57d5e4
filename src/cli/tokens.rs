//! Bootstrap tokens (`token create`) and admin tokens (`admin-token create|list|revoke`).

use super::*;

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
    /// Print JSON instead of text.
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
    /// Print JSON instead of text.
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

pub(super) async fn token_create(
    args: TokenCreateArgs,
    now: OffsetDateTime,
) -> Result<ExitCode, CliError> {
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
    let token = Target::admin(&args.data_dir, &args.remote)
        .await?
        .run(async |t| t.create_token(body, now).await)
        .await?;
    let fingerprint = token.ca_fingerprint.clone();
    let server = args
        .server_url
        .or(args.remote.server_list())
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

pub(super) async fn admin_token_list(args: AdminTokenListArgs) -> Result<ExitCode, CliError> {
    let tokens = Target::admin(&args.data_dir, &args.remote)
        .await?
        .run(async |t| t.admin_tokens().await)
        .await?;
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

pub(super) async fn admin_token_revoke(
    args: AdminTokenRevokeArgs,
    now: OffsetDateTime,
) -> Result<ExitCode, CliError> {
    Target::admin(&args.data_dir, &args.remote)
        .await?
        .run(async |t| t.revoke_admin_token(&args.id, now).await)
        .await?;
    writeln!(stdout(), "Revoked admin token {}.", args.id)?;
    Ok(ExitCode::SUCCESS)
}

pub(super) async fn admin_token_create(
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
