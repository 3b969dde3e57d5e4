//! CA generations and the rotation between them: the generations in their states
//! (compare-and-set steps), the restart lease, and what each node's agent reports.

use time::OffsetDateTime;

use super::*;

impl Store {
    /// The highest generation id recorded (0 for none).
    pub async fn last_generation_id(&self) -> Result<i64, StoreError> {
        Ok(self
            .pool
            .scalar(Sql::new("SELECT COALESCE(MAX(id), 0) FROM ca_generations"))
            .await?)
    }

    pub async fn insert_generation(&self, g: &GenerationRecord) -> Result<(), StoreError> {
        let mut tx = self.write_transaction().await?;
        insert_generation(&mut tx, g).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Every CA generation, oldest first.
    pub async fn generations(&self) -> Result<Vec<GenerationRecord>, StoreError> {
        let rows = self
            .pool
            .fetch_all(Sql::new(
                "SELECT id, state, key_type, cert_pem, fingerprint, key_file, imported, not_before,
                    not_after, activated_at, retired_at, created_at, endorsement_pem, key_pem
             FROM ca_generations ORDER BY id",
            ))
            .await?;
        rows.iter().map(generation_from_row).collect()
    }

    /// A rotation step: moves generations between states in one transaction with its audit
    /// event, each `(id, from, to)` in order (at most one generation is active at a time), and
    /// only if each is still in state `from`. Returns false, changing nothing, when another step
    /// got there first (compare-and-set: of two concurrent steps exactly one wins).
    pub async fn set_generation_states(
        &self,
        changes: &[(i64, GenerationState, GenerationState)],
        event: &AuditEvent,
    ) -> Result<bool, StoreError> {
        let mut tx = self.write_transaction().await?;
        for (id, from, to) in changes {
            let updated = tx
                .execute(
                    Sql::new(
                        "UPDATE ca_generations SET state = $1,
                   activated_at = CASE WHEN $1 = 'active' THEN $2 ELSE activated_at END,
                   retired_at = CASE WHEN $1 = 'retired' THEN $2 ELSE retired_at END
                 WHERE id = $3 AND state = $4",
                    )
                    .bind(to.as_str())
                    .bind(ts(event.at))
                    .bind(id)
                    .bind(from.as_str()),
                )
                .await?;
            if updated != 1 {
                tx.rollback().await?;
                return Ok(false);
            }
        }
        insert_audit(&mut tx, event).await?;
        tx.commit().await?;
        Ok(true)
    }

    /// Stores the generation a rotation starts, with its audit event, only if no rotation is in
    /// progress (no `next` generation) and its id follows the last one. Returns false, changing
    /// nothing, when another start got there first.
    pub async fn add_generation(
        &self,
        g: &GenerationRecord,
        event: &AuditEvent,
    ) -> Result<bool, StoreError> {
        let mut tx = self.write_transaction().await?;
        let row = tx.fetch_one(Sql::new(
            "SELECT COUNT(*) FILTER (WHERE state = 'next'), COALESCE(MAX(id), 0) FROM ca_generations",
        ))
        .await?;
        let (in_progress, last): (i64, i64) = (row.at(0)?, row.at(1)?);
        if in_progress != 0 || g.id != last + 1 {
            tx.rollback().await?;
            return Ok(false);
        }
        insert_generation(&mut tx, g).await?;
        insert_audit(&mut tx, event).await?;
        tx.commit().await?;
        Ok(true)
    }

    /// What an agent last reported.
    pub async fn upsert_node_report(&self, report: &NodeReport) -> Result<(), StoreError> {
        self.pool.execute(Sql::new(
            "INSERT INTO node_reports (node, installed_bundle, running_bundle, certificates, reported_at, details)
             VALUES ($1, $2, $3, $4, $5, $6)
             ON CONFLICT (node) DO UPDATE SET installed_bundle = excluded.installed_bundle,
               running_bundle = excluded.running_bundle, certificates = excluded.certificates,
               reported_at = excluded.reported_at, details = excluded.details",
        ).bind(&report.node).bind(to_json(&report.installed_bundle)).bind(to_json(&report.running_bundle)).bind(to_json(&report.certificates)).bind(ts(report.reported_at)).bind(&report.details))
        .await?;
        Ok(())
    }

    /// What every agent last reported of its bundles, as rotation status reads it.
    pub async fn bundle_reports(&self) -> Result<Vec<BundleReport>, StoreError> {
        let rows: Vec<(String, String, String, i64)> = self
            .pool
            .fetch_packed(
                Sql::new(
                    "SELECT node, installed_bundle, running_bundle, reported_at FROM node_reports",
                ),
                &["node", "installed_bundle", "running_bundle", "reported_at"],
            )
            .await?;
        let corrupt = |e: serde_json::Error| StoreError::Corrupt {
            table: "node_reports",
            detail: e.to_string(),
        };
        rows.into_iter()
            .map(|(node, installed, running, reported_at)| {
                Ok(BundleReport {
                    node,
                    installed_bundle: serde_json::from_str(&installed).map_err(corrupt)?,
                    running_bundle: serde_json::from_str(&running).map_err(corrupt)?,
                    reported_at: from_ts("node_reports", reported_at)?,
                })
            })
            .collect()
    }

    /// Every agent's report as the fleet reads it (no bundles: fewer columns to decode).
    pub async fn fleet_reports(&self) -> Result<Vec<FleetReport>, StoreError> {
        let rows: Vec<(String, String, i64, String)> = self
            .pool
            .fetch_packed(
                Sql::new("SELECT node, certificates, reported_at, details FROM node_reports"),
                &["node", "certificates", "reported_at", "details"],
            )
            .await?;
        let mut reports = rows
            .into_iter()
            .map(|(node, certificates, reported_at, details)| {
                Ok(FleetReport {
                    node,
                    certificates: serde_json::from_str(&certificates).map_err(|e| {
                        StoreError::Corrupt {
                            table: "node_reports",
                            detail: e.to_string(),
                        }
                    })?,
                    reported_at: from_ts("node_reports", reported_at)?,
                    details,
                })
            })
            .collect::<Result<Vec<_>, StoreError>>()?;
        reports.sort_by(|a, b| a.node.cmp(&b.node));
        Ok(reports)
    }

    /// Takes the restart lease for `node` until `expires_at`, if it is free, expired or already
    /// held by `node`. Returns who holds it afterwards.
    pub async fn take_restart_lease(
        &self,
        node: &str,
        now: OffsetDateTime,
        expires_at: OffsetDateTime,
    ) -> Result<(String, OffsetDateTime), StoreError> {
        let mut tx = self.write_transaction().await?;
        tx.execute(
            Sql::new(
                "INSERT INTO restart_lease (id, node, expires_at) VALUES (1, $1, $3)
             ON CONFLICT (id) DO UPDATE SET node = $1, expires_at = $3
             WHERE restart_lease.node = $1 OR restart_lease.expires_at <= $2",
            )
            .bind(node)
            .bind(ts(now))
            .bind(ts(expires_at)),
        )
        .await?;
        let row = tx
            .fetch_one(Sql::new(
                "SELECT node, expires_at FROM restart_lease WHERE id = 1",
            ))
            .await?;
        tx.commit().await?;
        Ok((
            row.col("node")?,
            from_ts("restart_lease", row.col("expires_at")?)?,
        ))
    }

    /// Gives the lease back if `node` holds it.
    pub async fn release_restart_lease(&self, node: &str) -> Result<(), StoreError> {
        self.pool
            .execute(Sql::new("DELETE FROM restart_lease WHERE id = 1 AND node = $1").bind(node))
            .await?;
        Ok(())
    }

    /// Who holds the restart lease now, if anyone.
    pub async fn restart_lease(
        &self,
        now: OffsetDateTime,
    ) -> Result<Option<(String, OffsetDateTime)>, StoreError> {
        let row = self
            .pool
            .fetch_optional(
                Sql::new(
                    "SELECT node, expires_at FROM restart_lease WHERE id = 1 AND expires_at > $1",
                )
                .bind(ts(now)),
            )
            .await?;
        row.map(|r| {
            Ok((
                r.col("node")?,
                from_ts("restart_lease", r.col("expires_at")?)?,
            ))
        })
        .transpose()
    }
}

impl Store {
    /// True when the store holds the CA keys itself (PostgreSQL: every server reads them from
    /// the database), false when they are files in the data dir (SQLite).
    pub fn holds_keys(&self) -> bool {
        self.backend() == Backend::Postgres
    }

    /// A shared setting, if set.
    pub async fn setting(&self, name: &str) -> Result<Option<String>, StoreError> {
        let row = self
            .pool
            .fetch_optional(Sql::new("SELECT value FROM settings WHERE name = $1").bind(name))
            .await?;
        row.map(|r| Ok(r.col("value")?)).transpose()
    }

    /// Sets a shared setting unless it is set already; returns the value it holds afterwards.
    pub async fn setting_or_init(&self, name: &str, value: &str) -> Result<String, StoreError> {
        let mut tx = self.write_transaction().await?;
        tx.execute(
            Sql::new(
                "INSERT INTO settings (name, value) VALUES ($1, $2) ON CONFLICT (name) DO NOTHING",
            )
            .bind(name)
            .bind(value),
        )
        .await?;
        let now: String = tx
            .scalar(Sql::new("SELECT value FROM settings WHERE name = $1").bind(name))
            .await?;
        tx.commit().await?;
        Ok(now)
    }

    /// Replaces a shared setting, with its audit event.
    pub async fn set_setting(
        &self,
        name: &str,
        value: &str,
        event: &AuditEvent,
    ) -> Result<(), StoreError> {
        let mut tx = self.write_transaction().await?;
        upsert_setting(&mut tx, name, value).await?;
        insert_audit(&mut tx, event).await?;
        tx.commit().await?;
        Ok(())
    }
}

/// Sets a shared setting, replacing its value.
pub(super) async fn upsert_setting(tx: &mut Tx, name: &str, value: &str) -> Result<(), StoreError> {
    tx.execute(
        Sql::new(
            "INSERT INTO settings (name, value) VALUES ($1, $2)
             ON CONFLICT (name) DO UPDATE SET value = excluded.value",
        )
        .bind(name)
        .bind(value),
    )
    .await?;
    Ok(())
}
