//! `etcd-ca migrate`: bring a shared PostgreSQL database to this version's schema, move a
//! SQLite CA onto it, or publish the policy its servers sign under.

use super::*;
use crate::authority::ServeLockError;

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
    /// With --from-sqlite: the passphrase that seals a CA key kept unencrypted (created with
    /// --insecure-unencrypted-key) on its way into the database; a file that does not exist yet
    /// gets a random one. Sealed keys move as they are.
    #[arg(long, env = "ETCD_CA_PASSPHRASE_FILE", value_name = "FILE")]
    pub passphrase_file: Option<PathBuf>,
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
        if !DataDir::new(dir).database().exists() {
            return Err(CliError::Usage(format!(
                "--from-sqlite {}: no etcd-ca.db there (name the data dir of the SQLite CA)",
                dir.display()
            )));
        }
        let _lock = DataDir::new(dir).lock_for_server().map_err(|e| match e {
            ServeLockError::Held { pid, .. } => CliError::Failed(format!(
                "etcd-ca serve (PID {pid}) is running on {}: stop it before moving its CA",
                dir.display()
            )),
            other => other.into(),
        })?;
        let data_dir = DataDirArg {
            data_dir: Some(dir.clone()),
            passphrase_file: args.passphrase_file.clone(),
            database: None,
        };
        let generated = data_dir.new_passphrase_file(false)?;
        let passphrase = data_dir.passphrase()?;
        let report =
            Authority::move_to_shared(dir, &config, passphrase.as_ref(), &local_actor(), now)
                .await
                .inspect_err(|_| DataDirArg::forget_passphrase_file(generated.as_deref()))?;
        let rows: Vec<String> = report
            .copied
            .iter()
            .filter(|(_, n)| *n > 0)
            .map(|(table, n)| format!("{table} {n}"))
            .collect();
        writeln!(
            out,
            "Moved the CA of {} ({}) to {}: {}.\nStart its servers with --database. The SQLite data dir is kept as it was, marked moved: it no longer serves or signs.",
            dir.display(),
            plural(report.generations as u64, "CA generation"),
            report.database,
            rows.join(", ")
        )?;
    }
    if let Some(file) = &args.policy {
        let sha = Authority::publish_policy(&config, file, &local_actor(), now).await?;
        writeln!(
            out,
            "Published {} (sha256 {sha}). Running servers stop signing within 2 s until restarted with it: put it in each server's policy.toml, then restart them one by one.",
            file.display()
        )?;
    }
    Ok(ExitCode::SUCCESS)
}
