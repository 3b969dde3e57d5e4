//! Retention: removing, in small batches, what nothing needs any more: certificates expired
//! before a cutoff (never a node's current certificate, never one a still-valid token could
//! replay), used or expired bootstrap tokens, and old audit events. Each batch is its own short
//! write transaction, so issuance waits at most one batch.

use super::*;

/// Where each kind of record stops being kept.
#[derive(Clone, Copy, Debug)]
pub struct Cutoffs {
    /// Certificates that expired before this.
    pub certificates: OffsetDateTime,
    /// Bootstrap tokens used or expired before this.
    pub tokens: OffsetDateTime,
    /// Audit events older than this.
    pub audit_events: OffsetDateTime,
}

/// How many records of each kind were (or would be) removed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Removed {
    pub certificates: u64,
    pub tokens: u64,
    pub audit_events: u64,
}

impl Removed {
    pub fn total(&self) -> u64 {
        self.certificates + self.tokens + self.audit_events
    }
}

/// The certificates retention may remove (`$1`: the cutoff, `$2`: now), after `select`.
fn removable_certificates(select: &str, backend: Backend) -> String {
    // The serials a used token that has not expired would replay (a JSON object's values).
    let each_serial = match backend {
        Backend::Sqlite => "json_each(t.issued_serials)",
        Backend::Postgres => "jsonb_each_text(t.issued_serials::jsonb)",
    };
    format!(
        "{select} FROM certificates
          WHERE not_after < $1
            AND NOT EXISTS (SELECT 1 FROM current_certificates cur
                             WHERE cur.node = certificates.node
                               AND cur.profile = certificates.profile
                               AND cur.serial = certificates.serial)
            AND serial NOT IN (SELECT j.value FROM tokens t, {each_serial} j
                                WHERE t.used_at IS NOT NULL AND t.issued_serials IS NOT NULL
                                  AND t.expires_at > $2)"
    )
}

/// The bootstrap tokens retention may remove (`$1`: the cutoff, `$2`: now): used or expired
/// before the cutoff, and never one that could still replay its enrollment.
macro_rules! removable_tokens {
    () => {
        "FROM tokens WHERE kind = 'bootstrap'
           AND ((used_at IS NOT NULL AND used_at < $1 AND expires_at < $2)
                OR (used_at IS NULL AND expires_at < $1))"
    };
}

impl Store {
    /// What [`Store::remove_batch`] would remove in all, counted.
    pub async fn count_removable(
        &self,
        cutoffs: Cutoffs,
        now: OffsetDateTime,
    ) -> Result<Removed, StoreError> {
        let certificates: i64 = self
            .pool
            .scalar(
                Sql::new(removable_certificates("SELECT COUNT(*)", self.backend()))
                    .bind(ts(cutoffs.certificates))
                    .bind(ts(now)),
            )
            .await?;
        let tokens: i64 = self
            .pool
            .scalar(
                Sql::new(concat!("SELECT COUNT(*) ", removable_tokens!()))
                    .bind(ts(cutoffs.tokens))
                    .bind(ts(now)),
            )
            .await?;
        let audit_events: i64 = self
            .pool
            .scalar(
                Sql::new("SELECT COUNT(*) FROM audit_events WHERE at < $1")
                    .bind(ts(cutoffs.audit_events)),
            )
            .await?;
        Ok(Removed {
            certificates: certificates as u64,
            tokens: tokens as u64,
            audit_events: audit_events as u64,
        })
    }

    /// Removes at most `batch` records of each kind in one short transaction; returns what it
    /// removed (less than `batch` of every kind: nothing is left to remove).
    /// Holds retention's removals back until the guard is dropped (they wait; nothing fails):
    /// a live copy relies on no row disappearing while it reads in steps.
    pub(super) async fn pause_removals(&self) -> tokio::sync::OwnedRwLockReadGuard<()> {
        self.removals.clone().read_owned().await
    }

    pub async fn remove_batch(
        &self,
        cutoffs: Cutoffs,
        now: OffsetDateTime,
        batch: u32,
    ) -> Result<Removed, StoreError> {
        let _no_copy_running = self.removals.write().await;
        let mut tx = self.write_transaction().await?;
        let serials: Vec<String> = tx
            .scalars(
                Sql::new(format!(
                    "{} ORDER BY not_after LIMIT $3",
                    removable_certificates("SELECT serial", self.backend())
                ))
                .bind(ts(cutoffs.certificates))
                .bind(ts(now))
                .bind(i64::from(batch)),
            )
            .await?;
        let mut certificates = 0;
        if !serials.is_empty() {
            // A renewal names the certificate it replaced; that link goes with it.
            let mut unlink =
                Sql::new("UPDATE certificates SET renewed_from = NULL WHERE renewed_from IN ");
            unlink.push_list(&serials);
            tx.execute(unlink).await?;
            let mut delete = Sql::new("DELETE FROM certificates WHERE serial IN ");
            delete.push_list(&serials);
            certificates = tx.execute(delete).await?;
        }
        let tokens = tx
            .execute(
                Sql::new(concat!(
                    "DELETE FROM tokens WHERE id IN (SELECT id ",
                    removable_tokens!(),
                    " LIMIT $3)"
                ))
                .bind(ts(cutoffs.tokens))
                .bind(ts(now))
                .bind(i64::from(batch)),
            )
            .await?;
        let audit_events = tx
            .execute(
                Sql::new(
                    "DELETE FROM audit_events WHERE id IN
               (SELECT id FROM audit_events WHERE at < $1 ORDER BY id LIMIT $2)",
                )
                .bind(ts(cutoffs.audit_events))
                .bind(i64::from(batch)),
            )
            .await?;
        // Counts of wrong credentials from windows long over (a window is minutes).
        tx.execute(
            Sql::new("DELETE FROM failed_attempts WHERE window_start < $1").bind(ts(now) - 86_400),
        )
        .await?;
        // Revocations a restore re-applied without a certificate, once none could be valid.
        tx.execute(
            Sql::new("DELETE FROM external_revocations WHERE keep_until < $1").bind(ts(now)),
        )
        .await?;
        tx.commit().await?;
        Ok(Removed {
            certificates,
            tokens,
            audit_events,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::{
        at, certificate, event, identity, on_both_backends, store_with_generation,
    };
    use super::*;

    const DAY: i64 = 86_400;

    on_both_backends! {
        async fn batches_remove_expired_history_but_never_a_current_or_replayable_certificate(backend) {
            let (store, _keep) = store_with_generation(backend).await;
        // 120 renewals of one node, each naming the one before (renewed_from).
        let mut previous: Option<String> = None;
        for i in 0..120 {
            let serial = format!("a{i:04}");
            let cert = certificate(&serial, "n1", previous.as_deref());
            store
                .record_issue(&identity("n1", "10.0.0.1"), &cert, &event(&serial, "n1"))
                .await
                .unwrap();
            previous = Some(serial);
        }
        // n2's older certificate is what a used, still-valid token would replay.
        for serial in ["bb", "bc"] {
            let cert = certificate(serial, "n2", None);
            store
                .record_issue(&identity("n2", "10.0.0.2"), &cert, &event(serial, "n2"))
                .await
                .unwrap();
        }
        let now = at(40 * DAY);
        store.pool.execute(Sql::new(
            "INSERT INTO tokens (id, kind, secret_sha256, node, created_by, created_at,
                                 expires_at, used_at, issued_serials)
             VALUES ('t1', 'bootstrap', $3, 'n2', 'test', $1, $2, $1, '{\"peer\": \"bb\"}')",
        ).bind(ts(at(0))).bind(ts(at(41 * DAY))).bind(&vec![0u8]))
        .await
        .unwrap();

        let cutoffs = Cutoffs {
            certificates: at(10 * DAY),
            tokens: at(10 * DAY),
            audit_events: at(0),
        };
        assert_eq!(
            store
                .count_removable(cutoffs, now)
                .await
                .unwrap()
                .certificates,
            119
        );
        let mut batches = Vec::new();
        loop {
            let removed = store.remove_batch(cutoffs, now, 50).await.unwrap();
            batches.push(removed.certificates);
            if removed.certificates < 50 {
                break;
            }
        }
        assert_eq!(batches, [50, 50, 19]);
        let left: Vec<String> =
            store.pool.scalars(Sql::new("SELECT serial FROM certificates ORDER BY serial"))
                .await
                .unwrap();
        assert_eq!(left, ["a0119", "bb", "bc"]);
        // The link to a removed certificate went with it.
        let link: Option<String> =
            store.pool.scalar(Sql::new("SELECT renewed_from FROM certificates WHERE serial = 'a0119'"))
                .await
                .unwrap();
        assert_eq!(link, None);
        // Once the token has expired, its replayable certificate may go too, and the token.
        let later = at(42 * DAY);
        let removed = store.remove_batch(cutoffs, later, 50).await.unwrap();
        assert_eq!((removed.certificates, removed.tokens), (1, 1));

        }
    }
}
