//! Bootstrap and admin tokens: creation, lookup, single use (an enrollment consumes its token
//! in the transaction that records its certificates), admin token revocation.

use super::*;

impl Store {
    /// Stores a token (and registers the node a bootstrap token is bound to) with its audit event.
    pub async fn insert_token(
        &self,
        token: &TokenRecord,
        event: &AuditEvent,
    ) -> Result<(), StoreError> {
        let mut tx = self.write_transaction().await?;
        if let Some(identity) = &token.identity {
            upsert_node(&mut tx, identity, token.created_at).await?;
        }
        tx.execute(Sql::new(
            "INSERT INTO tokens (id, kind, secret_sha256, node, ips, dns_names, profiles, common_name,
                                 allow_privileged_common_name, created_by, created_at, expires_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)",
        ).bind(&token.id).bind(token.kind.as_str()).bind(&token.secret_sha256).bind(token.identity.as_ref().map(|i| i.name.as_str())).bind(to_json(&token.identity.as_ref().map(|i| &i.ips))).bind(to_json(&token.identity.as_ref().map(|i| &i.dns_names))).bind(to_json(&token.profiles)).bind(&token.common_name).bind(token.allow_privileged_common_name).bind(&token.created_by).bind(ts(token.created_at)).bind(token.expires_at.map(ts)))
        .await?;
        insert_audit(&mut tx, event).await?;
        tx.commit().await?;
        Ok(())
    }

    pub async fn token(&self, id: &str) -> Result<Option<TokenRecord>, StoreError> {
        let row = self
            .pool
            .fetch_optional(
                Sql::new(
                    "SELECT id, kind, secret_sha256, node, ips, dns_names, profiles, common_name,
                    allow_privileged_common_name, created_by, created_at, expires_at, used_at,
                    request_sha256, issued_serials, revoked_at
             FROM tokens WHERE id = $1",
                )
                .bind(id),
            )
            .await?;
        row.map(|r| token_from_row(&r)).transpose()
    }

    /// Every admin token, oldest first.
    pub async fn admin_tokens(&self) -> Result<Vec<TokenRecord>, StoreError> {
        let rows = self
            .pool
            .fetch_all(Sql::new(
                "SELECT id, kind, secret_sha256, node, ips, dns_names, profiles, common_name,
                    allow_privileged_common_name, created_by, created_at, expires_at, used_at,
                    request_sha256, issued_serials, revoked_at
             FROM tokens WHERE kind = 'admin' ORDER BY created_at, id",
            ))
            .await?;
        rows.iter().map(token_from_row).collect()
    }

    /// Revokes an admin token with its audit event. False when there is no such admin token
    /// or it was already revoked (nothing written).
    pub async fn revoke_admin_token(
        &self,
        id: &str,
        event: &AuditEvent,
    ) -> Result<bool, StoreError> {
        let mut tx = self.write_transaction().await?;
        let revoked = tx.execute(Sql::new(
            "UPDATE tokens SET revoked_at = $1 WHERE id = $2 AND kind = 'admin' AND revoked_at IS NULL",
        ).bind(ts(event.at)).bind(id))
        .await?;
        if revoked != 1 {
            tx.rollback().await?;
            return Ok(false);
        }
        insert_audit(&mut tx, event).await?;
        tx.commit().await?;
        Ok(true)
    }

    /// Changes whenever an admin token is revoked (by any process).
    pub async fn admin_token_revocations(&self) -> Result<(i64, i64), StoreError> {
        let row = self
            .pool
            .fetch_one(Sql::new(
                "SELECT COUNT(revoked_at) AS n, COALESCE(MAX(revoked_at), 0) AS latest
             FROM tokens WHERE kind = 'admin'",
            ))
            .await?;
        Ok((row.col("n")?, row.col("latest")?))
    }

    /// Consumes a bootstrap token and records the certificates it paid for, in one transaction.
    /// Returns false (and writes nothing) when the token was already used.
    pub async fn complete_enrollment(&self, e: &EnrollmentRecord<'_>) -> Result<bool, StoreError> {
        let serials: BTreeMap<&str, &str> = e
            .certificates
            .iter()
            .map(|c| (c.profile.as_str(), c.serial.as_str()))
            .collect();
        let mut tx = self.write_transaction().await?;
        let consumed = tx
            .execute(
                Sql::new(
                    "UPDATE tokens SET used_at = $1, request_sha256 = $2, issued_serials = $3
             WHERE id = $4 AND used_at IS NULL",
                )
                .bind(ts(e.at))
                .bind(e.request_sha256)
                .bind(to_json(&serials))
                .bind(e.token_id),
            )
            .await?;
        if consumed != 1 {
            tx.rollback().await?;
            return Ok(false);
        }
        upsert_node(&mut tx, e.identity, e.at).await?;
        insert_certificates(&mut tx, &e.certificates.iter().collect::<Vec<_>>()).await?;
        for event in e.events {
            insert_audit(&mut tx, event).await?;
        }
        tx.commit().await?;
        Ok(true)
    }
}

impl Store {
    /// Counts one wrong credential for `key` in a window of `window_secs` that starts at the
    /// first failure; returns the failures counted in the current window, this one included,
    /// and when the window started. One statement: servers sharing the database count
    /// together.
    pub async fn count_failed_attempt(
        &self,
        key: &str,
        now: OffsetDateTime,
        window_secs: i64,
    ) -> Result<(i64, OffsetDateTime), StoreError> {
        let row = self
            .pool
            .fetch_one(
                Sql::new(
                    "INSERT INTO failed_attempts (key, window_start, failures) VALUES ($1, $2, 1)
                     ON CONFLICT (key) DO UPDATE SET
                       failures = CASE WHEN failed_attempts.window_start <= $2 - $3 THEN 1
                                       ELSE failed_attempts.failures + 1 END,
                       window_start = CASE WHEN failed_attempts.window_start <= $2 - $3 THEN $2
                                           ELSE failed_attempts.window_start END
                     RETURNING failures, window_start",
                )
                .bind(key)
                .bind(ts(now))
                .bind(window_secs),
            )
            .await?;
        Ok((
            row.col("failures")?,
            from_ts("failed_attempts", row.col("window_start")?)?,
        ))
    }

    /// The failures counted for `key` in its current window and when that window started;
    /// None when its window has passed.
    pub async fn failed_attempts(
        &self,
        key: &str,
        now: OffsetDateTime,
        window_secs: i64,
    ) -> Result<Option<(i64, OffsetDateTime)>, StoreError> {
        let row = self
            .pool
            .fetch_optional(
                Sql::new(
                    "SELECT failures, window_start FROM failed_attempts
                     WHERE key = $1 AND window_start > $2 - $3",
                )
                .bind(key)
                .bind(ts(now))
                .bind(window_secs),
            )
            .await?;
        row.map(|r| {
            Ok((
                r.col("failures")?,
                from_ts("failed_attempts", r.col("window_start")?)?,
            ))
        })
        .transpose()
    }
}
