//! `etcd-ca tidy`: remove what is past its retention now (the server also does it a minute after
//! it starts and hourly), or with `--dry-run` only say what would go.

use super::*;
use crate::cli::common::{DataDirArg, RemoteArgs};
use crate::cli::target::Target;
use crate::wire::TidyBody;

#[derive(Debug, Args)]
pub struct TidyArgs {
    #[command(flatten)]
    pub data_dir: DataDirArg,
    #[command(flatten)]
    pub remote: RemoteArgs,
    /// Only count what would be removed.
    #[arg(long)]
    pub dry_run: bool,
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
}

pub(super) async fn tidy(args: TidyArgs, now: OffsetDateTime) -> Result<ExitCode, CliError> {
    let body = TidyBody {
        dry_run: args.dry_run,
    };
    let answer = Target::admin(&args.data_dir, &args.remote)
        .await?
        .run(async |t| t.tidy(body, now).await)
        .await?;
    let mut out = stdout();
    if args.json {
        serde_json::to_writer_pretty(&mut out, &answer)?;
        writeln!(out)?;
        return Ok(ExitCode::SUCCESS);
    }
    let verb = if answer.dry_run {
        "would remove"
    } else {
        "removed"
    };
    writeln!(
        out,
        "{verb} {} that expired before {} (a node's current certificate is kept, expired or not)",
        plural(answer.certificates, "certificate"),
        date(answer.certificates_expired_before)
    )?;
    writeln!(
        out,
        "{verb} {} used or expired before {}",
        plural(answer.tokens, "bootstrap token"),
        date(answer.tokens_before)
    )?;
    writeln!(
        out,
        "{verb} {} older than {}",
        plural(answer.audit_events, "audit event"),
        date(answer.audit_events_before)
    )?;
    Ok(ExitCode::SUCCESS)
}
