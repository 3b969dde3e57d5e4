//! The CRLs a CA publishes: the last one of each scope (stored DER every server serves), the
//! per-issuer numbers that only grow, and building one at most once across servers.

use super::*;

impl Store {
    /// The CRL `scope` last published, if any.
    pub async fn published_crl(&self, scope: &str) -> Result<Option<PublishedCrl>, StoreError> {
        let row = self
            .pool
            .fetch_optional(
                Sql::new(
                    "SELECT scope, generation, number, epoch, this_update, der FROM published_crls
             WHERE scope = $1",
                )
                .bind(scope),
            )
            .await?;
        row.map(|r| published_crl_from_row(&r)).transpose()
    }

    /// The CRL of `scope`, built at most once however many servers ask at once: in one write
    /// transaction (serialised with every other on the database), the published one if
    /// `is_current` accepts it, else a new one `build` signs with the next number of
    /// `generation`'s counter, published before the transaction ends. No lease can outlive
    /// its holder: the lock goes with the transaction (or the holder's connection).
    pub async fn crl_once<E>(
        &self,
        scope: &str,
        generation: i64,
        is_current: impl FnOnce(&PublishedCrl) -> bool,
        build: impl FnOnce(i64) -> Result<PublishedCrl, E>,
    ) -> Result<PublishedCrl, E>
    where
        E: From<StoreError>,
    {
        let mut tx = self.write_transaction().await?;
        let stored = tx
            .fetch_optional(
                Sql::new(
                    "SELECT scope, generation, number, epoch, this_update, der FROM published_crls
                     WHERE scope = $1",
                )
                .bind(scope),
            )
            .await
            .map_err(StoreError::from)?;
        if let Some(row) = stored {
            let stored = published_crl_from_row(&row)?;
            if is_current(&stored) {
                tx.commit().await.map_err(StoreError::from)?;
                return Ok(stored);
            }
        }
        let number: i64 = tx
            .scalar(
                Sql::new(
                    "UPDATE ca_generations SET crl_number = crl_number + 1 WHERE id = $1
                     RETURNING crl_number",
                )
                .bind(generation),
            )
            .await
            .map_err(StoreError::from)?;
        let crl = build(number)?;
        let published = publish(&mut tx, &crl).await?;
        tx.commit().await.map_err(StoreError::from)?;
        Ok(published)
    }

    /// Publishes `crl` unless its scope already holds one with a higher number (another process
    /// got there first); returns what the scope holds afterwards.
    pub async fn publish_crl(&self, crl: &PublishedCrl) -> Result<PublishedCrl, StoreError> {
        let mut tx = self.write_transaction().await?;
        let published = publish(&mut tx, crl).await?;
        tx.commit().await?;
        Ok(published)
    }
}

async fn publish(tx: &mut Tx, crl: &PublishedCrl) -> Result<PublishedCrl, StoreError> {
    tx.execute(
        Sql::new(
            "INSERT INTO published_crls (scope, generation, number, epoch, this_update, der)
             VALUES ($1, $2, $3, $4, $5, $6)
             ON CONFLICT (scope) DO UPDATE SET generation = excluded.generation,
               number = excluded.number, epoch = excluded.epoch,
               this_update = excluded.this_update, der = excluded.der
             WHERE excluded.number > published_crls.number",
        )
        .bind(&crl.scope)
        .bind(crl.generation)
        .bind(crl.number)
        .bind(crl.epoch)
        .bind(ts(crl.this_update))
        .bind(&crl.der),
    )
    .await?;
    let row = tx
        .fetch_one(
            Sql::new(
                "SELECT scope, generation, number, epoch, this_update, der FROM published_crls
             WHERE scope = $1",
            )
            .bind(&crl.scope),
        )
        .await?;
    published_crl_from_row(&row)
}

impl Store {
    /// The next CRL number of a generation (monotonic, starting at 1).
    pub async fn next_crl_number(&self, generation: i64) -> Result<i64, StoreError> {
        let number: i64 = self.pool.scalar(Sql::new(
            "UPDATE ca_generations SET crl_number = crl_number + 1 WHERE id = $1 RETURNING crl_number",
        ).bind(generation))
        .await?;
        Ok(number)
    }
}
