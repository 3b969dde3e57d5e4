//! Retention: the policy's windows turned into cutoffs, and removal of what nothing needs any
//! more in small batches (the server every hour, `etcd-ca tidy` on demand), with one audit
//! event summing up each run that removed anything.

use std::time::Duration;

use time::OffsetDateTime;

use super::{to_time, AuditAction, Authority, AuthorityError};
use crate::duration::rfc3339;
use crate::store::{Cutoffs, Removed};

/// Records of each kind one batch removes at most: one short write transaction.
const BATCH: u32 = 500;

/// The pause between batches, so issuance and renewals run in between.
const PAUSE: Duration = Duration::from_millis(20);

/// What a run removed (or, in a dry run, would remove), and the cutoffs it used.
#[derive(Clone, Copy, Debug)]
pub struct TidyReport {
    pub dry_run: bool,
    pub removed: Removed,
    pub cutoffs: Cutoffs,
}

impl Authority {
    /// Where each kind of record stops being kept at `now`, from the policy's `[retention]`.
    pub fn retention_cutoffs(&self, now: OffsetDateTime) -> Cutoffs {
        let retention = self.policy.retention;
        Cutoffs {
            certificates: now - to_time(retention.expired_certificates),
            tokens: now - to_time(retention.tokens),
            audit_events: now - to_time(retention.audit_events),
        }
    }

    /// Removes (or with `dry_run` counts) everything past its retention, batch by batch. A run
    /// is audited when it removed anything, or always when `audit_always` (an admin asked).
    pub async fn tidy(
        &self,
        dry_run: bool,
        audit_always: bool,
        actor: &str,
        now: OffsetDateTime,
    ) -> Result<TidyReport, AuthorityError> {
        let cutoffs = self.retention_cutoffs(now);
        if dry_run {
            let removed = self.store.count_removable(cutoffs, now).await?;
            return Ok(TidyReport {
                dry_run,
                removed,
                cutoffs,
            });
        }
        let mut removed = Removed::default();
        loop {
            let batch = self.store.remove_batch(cutoffs, now, BATCH).await?;
            if batch.total() > 0 {
                // A batch frees a few hundred pages; give them back as it goes.
                self.store.reclaim_space().await?;
            }
            removed.certificates += batch.certificates;
            removed.tokens += batch.tokens;
            removed.audit_events += batch.audit_events;
            let more = [batch.certificates, batch.tokens, batch.audit_events]
                .into_iter()
                .any(|n| n >= u64::from(BATCH));
            if !more {
                break;
            }
            tokio::time::sleep(PAUSE).await;
        }
        if removed.total() > 0 || audit_always {
            let event =
                AuditAction::Tidy.event(actor, now, None, None, summary(&removed, &cutoffs));
            self.store.record_audit(&event).await?;
            tracing::info!(
                certificates = removed.certificates,
                tokens = removed.tokens,
                audit_events = removed.audit_events,
                "removed what is past its retention"
            );
        }
        Ok(TidyReport {
            dry_run,
            removed,
            cutoffs,
        })
    }
}

/// The audit trail's line for a run.
fn summary(removed: &Removed, cutoffs: &Cutoffs) -> String {
    format!(
        "removed {} certificates expired before {}, {} tokens used or expired before {}, {} audit events before {}",
        removed.certificates,
        rfc3339(cutoffs.certificates),
        removed.tokens,
        rfc3339(cutoffs.tokens),
        removed.audit_events,
        rfc3339(cutoffs.audit_events)
    )
}
