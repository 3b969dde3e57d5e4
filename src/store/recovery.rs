//! What a restore re-applies from a CRL newer than its backup: revocations made after the backup
//! was taken (marked on the certificates the backup holds, kept as external revocations for
//! those it does not), and CRL numbers that must not go back.

use super::*;

/// What re-applying a CRL's revocations did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Reapplied {
    /// Certificates the backup held as valid, revoked again.
    pub revoked_again: Vec<String>,
    /// Revoked in the backup already.
    pub already_revoked: usize,
    /// Serials the backup holds no certificate for (issued after it): kept revoked as external
    /// revocations, listed by etcd's CRL.
    pub unknown: Vec<String>,
}

impl Store {
    /// Marks each `(serial, revoked_at, reason)` revoked, in one transaction: on its certificate
    /// when the store has one (with an audit event by `actor`), else as an external revocation
    /// kept until `keep_until(revoked_at)`.
    pub async fn reapply_revocations(
        &self,
        revoked: &[(String, OffsetDateTime, String)],
        keep_until: impl Fn(OffsetDateTime) -> OffsetDateTime,
        actor: &str,
        at: OffsetDateTime,
    ) -> Result<Reapplied, StoreError> {
        let mut tx = self.write_transaction().await?;
        let mut done = Reapplied::default();
        for (serial, revoked_at, reason) in revoked {
            if mark_revoked(&mut tx, serial, *revoked_at, reason).await? {
                let event = AuditEvent {
                    at,
                    actor: actor.to_string(),
                    action: "revoke".into(),
                    node: None,
                    serial: Some(serial.clone()),
                    detail: format!(
                        "reason {reason}, re-applied from a CRL at restore (revoked at {})",
                        crate::duration::rfc3339(*revoked_at)
                    ),
                };
                insert_audit(&mut tx, &event).await?;
                done.revoked_again.push(serial.clone());
                continue;
            }
            let known = tx
                .fetch_optional(
                    Sql::new("SELECT serial FROM certificates WHERE serial = $1").bind(serial),
                )
                .await?;
            if known.is_some() {
                done.already_revoked += 1;
                continue;
            }
            tx.execute(
                Sql::new(
                    "INSERT INTO external_revocations (serial, revoked_at, reason, keep_until)
                 VALUES ($1, $2, $3, $4) ON CONFLICT (serial) DO NOTHING",
                )
                .bind(serial)
                .bind(ts(*revoked_at))
                .bind(reason)
                .bind(ts(keep_until(*revoked_at))),
            )
            .await?;
            done.unknown.push(serial.clone());
        }
        tx.commit().await?;
        Ok(done)
    }

    /// Raises a generation's CRL counter to at least `number`, so the next CRL it signs comes
    /// after one already published.
    pub async fn raise_crl_number(&self, generation: i64, number: i64) -> Result<(), StoreError> {
        self.pool.execute(Sql::new("UPDATE ca_generations SET crl_number = CASE WHEN crl_number < $1 THEN $1 ELSE crl_number END WHERE id = $2").bind(number).bind(generation))
            .await?;
        Ok(())
    }

    /// Withdraws what a backup's tokens could still do after a restore: every admin token is
    /// revoked (one revoked after the backup would work again) and every unused bootstrap
    /// token expires (one used after the backup could enroll twice). Returns how many of each.
    pub async fn withdraw_tokens(&self, at: OffsetDateTime) -> Result<(u64, u64), StoreError> {
        let mut tx = self.write_transaction().await?;
        let admin = tx
            .execute(
                Sql::new(
                    "UPDATE tokens SET revoked_at = $1 WHERE kind = 'admin' AND revoked_at IS NULL",
                )
                .bind(ts(at)),
            )
            .await?;
        let bootstrap = tx
            .execute(
                Sql::new(
                    "UPDATE tokens SET expires_at = $1
             WHERE kind = 'bootstrap' AND used_at IS NULL AND expires_at > $1",
                )
                .bind(ts(at)),
            )
            .await?;
        tx.commit().await?;
        Ok((admin, bootstrap))
    }

    /// Raises every generation's CRL counter to at least `floor` and forgets the CRLs the
    /// backup had published, so that the next ones are built anew, numbered past `floor`.
    pub async fn raise_crl_numbers(&self, floor: i64) -> Result<(), StoreError> {
        let mut tx = self.write_transaction().await?;
        tx.execute(Sql::new("UPDATE ca_generations SET crl_number = CASE WHEN crl_number < $1 THEN $1 ELSE crl_number END").bind(floor))
            .await?;
        tx.execute(Sql::new("DELETE FROM published_crls")).await?;
        tx.commit().await?;
        Ok(())
    }

    /// When the newest audit event was recorded: how recent what the store knows is.
    pub async fn latest_record(&self) -> Result<Option<OffsetDateTime>, StoreError> {
        let at: Option<i64> = self
            .pool
            .scalar(Sql::new("SELECT MAX(at) FROM audit_events"))
            .await?;
        at.map(|at| from_ts("audit_events", at)).transpose()
    }
}
