//! `etcd-ca serve`: bind, create the CA where one was named, lock the data dir, and run the
//! API with its follower until SIGTERM or SIGINT.

use super::*;

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
    /// How long wrong credentials count against an address or a token (and how long a
    /// locked address gets 429).
    #[arg(long, default_value = "5m")]
    pub failed_attempts_window: HumanDuration,
    /// With --database: apply the schema migrations this version needs before serving
    /// (otherwise a database that lacks one is refused; see `etcd-ca migrate`). Never on a
    /// read-only standby.
    #[arg(long)]
    pub migrate: bool,
}

pub(super) async fn serve(args: ServeArgs) -> Result<ExitCode, CliError> {
    let dir = args.data_dir.path();
    let now = crate::clock::now();
    // Bind first: a busy port fails before anything is created, issued or recorded.
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .map_err(|source| CliError::Listen {
            addr: args.listen,
            source,
        })?;
    let shared = args.data_dir.database()?;
    if shared.is_some() {
        // A shared database's CA is created once, with `etcd-ca init --database`; this
        // dir only holds this server's own files (created when the CA opens).
    } else if args.migrate {
        return Err(CliError::Usage(
            "--migrate applies to a shared database: give --database URL (a SQLite file is always migrated)".into(),
        ));
    } else if DataDir::new(dir).existing_ca_marker().is_none() {
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
                database: args.data_dir.database()?,
            },
            "etcd-ca serve",
            now,
        )
        .await
        .inspect_err(|_| DataDirArg::forget_passphrase_file(generated.as_deref()))?;
        tracing::info!(data_dir = %dir.display(), ca_fingerprint = %report.fingerprint, "created a new CA");
    }
    let migrations = if args.migrate {
        Migrations::Apply
    } else {
        Migrations::Check
    };
    let (_lock, authority) = if shared.is_some() {
        let authority = args.data_dir.open_with(migrations).await?;
        // One server per data dir (held until this process ends).
        match fsutil::create_private_dir(dir)
            .map_err(CliError::from)
            .and_then(|()| Ok(DataDir::new(dir).lock_for_server()?))
        {
            Ok(lock) => (lock, authority),
            Err(e) => {
                authority.close().await;
                return Err(e);
            }
        }
    } else {
        let lock = DataDir::new(dir).lock_for_server()?;
        (lock, args.data_dir.open_with(migrations).await?)
    };
    let authority = Arc::new(authority);
    let result = run_server(&authority, listener, &args).await;
    authority.close().await;
    result
}

/// The API on `listener` until SIGTERM or SIGINT, printing the ready line scripts wait for.
async fn run_server(
    authority: &Arc<Authority>,
    listener: tokio::net::TcpListener,
    args: &ServeArgs,
) -> Result<ExitCode, CliError> {
    let sans = crate::api::run::server_names(args.listen, &args.sans);
    if args.listen.ip().is_unspecified() && args.sans.is_empty() {
        tracing::warn!("listening on all addresses without --san: nodes can only reach this server by a name in its certificate");
    }
    let settings = crate::api::run::Settings {
        sans,
        attempts: crate::api::limits::AttemptLimits {
            per_source: args.max_failed_attempts_per_source,
            per_token: args.max_failed_attempts_per_token,
            window: args.failed_attempts_window.as_std(),
        },
        limits: crate::api::server::Limits {
            handshake_timeout: args.handshake_timeout.as_std(),
            header_timeout: args.header_timeout.as_std(),
            max_connections: args.max_connections.max(1),
            max_connections_per_address: args.max_connections_per_address.max(1),
            write_timeout: args.write_timeout.as_std(),
            ..Default::default()
        },
    };
    // Watch the signals before saying we are ready: a SIGTERM right after the ready line stops
    // the server cleanly instead of killing it.
    let signalled = shutdown_signal()?;
    let ready = |addr: std::net::SocketAddr, fingerprint: &str| {
        let mut out = stdout();
        let _ = writeln!(
            out,
            "etcd-ca serving https://{addr} (CA fingerprint {fingerprint})"
        );
        let _ = out.flush();
    };
    crate::api::run::run(authority.clone(), listener, settings, ready, signalled).await?;
    Ok(ExitCode::SUCCESS)
}

/// Watches SIGINT and SIGTERM from now on; the future completes on either.
pub(super) fn shutdown_signal() -> Result<impl std::future::Future<Output = ()>, CliError> {
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
