//! `etcd-ca migrate`: bring a shared PostgreSQL database to this version's schema, move a
//! SQLite CA onto it, or publish the policy its servers sign under.

use super::*;

#[derive(Debug, Args)]
pub struct MigrateArgs {
    /// The PostgreSQL database the CA servers share (postgres://USER[:PASSWORD]@HOST:PORT/DB).
    #[arg(
        long,
        env = "ETCD_CA_DATABASE_URL",
        hide_env_values = true,
        value_name = "URL"
    )]
    pub database: String,
    /// Move the SQLite CA of this data dir onto the database, which must hold no CA yet: every
    /// record, the sealed CA keys and the policy, in one transaction; nothing is re-issued.
    /// Its server must be stopped (the dir's lock is taken).
    #[arg(long, value_name = "DIR")]
    pub from_sqlite: Option<PathBuf>,
    /// Publish this policy file as the one every server on the database signs under (each
    /// takes it at its next start; one whose own policy.toml differs is refused).
    #[arg(long, value_name = "FILE")]
    pub policy: Option<PathBuf>,
}

pub(super) async fn migrate(args: MigrateArgs, now: OffsetDateTime) -> Result<ExitCode, CliError> {
    let config = StoreConfig::from_url_or(Some(&args.database), PathBuf::new())
        .map_err(|e| CliError::Usage(e.to_string()))?;
    Authority::migrate(&config).await?;
    let mut out = stdout();
    writeln!(out, "{} has the schema of this etcd-ca.", config.describe())?;
    if let Some(dir) = &args.from_sqlite {
        // No server may write the SQLite file while it is copied.
        let _lock = DataDir::new(dir).lock_for_server()?;
        let report = Authority::move_to_shared(dir, &config, &local_actor(), now).await?;
        let rows: Vec<String> = report
            .copied
            .iter()
            .filter(|(_, n)| *n > 0)
            .map(|(table, n)| format!("{table} {n}"))
            .collect();
        writeln!(
            out,
            "Moved the CA of {} ({} generations) to {}: {}.\nStart its servers with --database; the SQLite file is left as it was (keep it until they run).",
            dir.display(),
            report.generations,
            report.database,
            rows.join(", ")
        )?;
    }
    if let Some(file) = &args.policy {
        let sha = Authority::publish_policy(&config, file, &local_actor(), now).await?;
        writeln!(
            out,
            "Published {} (sha256 {sha}); restart each server to take it.",
            file.display()
        )?;
    }
    Ok(ExitCode::SUCCESS)
}
