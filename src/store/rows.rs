//! Records to rows and rows to records: timestamps as Unix seconds, lists as JSON, the
//! multi-row INSERTs the group committer and enrollment use, and the decoding of every row
//! (a row that does not decode is reported as corrupt, naming its table).

use serde::Serialize;
use time::OffsetDateTime;

use super::*;
use crate::names::{NodeIdentity, NodeName};

pub(super) fn ts(t: OffsetDateTime) -> i64 {
    t.unix_timestamp()
}

pub(super) fn from_ts(table: &'static str, secs: i64) -> Result<OffsetDateTime, StoreError> {
    OffsetDateTime::from_unix_timestamp(secs).map_err(|e| StoreError::Corrupt {
        table,
        detail: e.to_string(),
    })
}

/// The most rows one multi-row INSERT carries (a certificate row binds 16 values; SQLite
/// allows 32,766, PostgreSQL 65,535).
pub(super) const ROWS_PER_INSERT: usize = 64;

pub(super) async fn insert_generation(tx: &mut Tx, g: &GenerationRecord) -> Result<(), StoreError> {
    let sql = Sql::new(
        "INSERT INTO ca_generations
           (id, state, key_type, cert_pem, fingerprint, key_file, imported, not_before,
            not_after, created_at, activated_at, endorsement_pem, key_pem)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)",
    )
    .bind(g.id)
    .bind(g.state.as_str())
    .bind(&g.key_type)
    .bind(&g.cert_pem)
    .bind(&g.fingerprint)
    .bind(&g.key_file)
    .bind(g.imported)
    .bind(ts(g.not_before))
    .bind(ts(g.not_after))
    .bind(ts(g.created_at))
    .bind(g.activated_at.map(ts))
    .bind(&g.endorsement_pem)
    .bind(&g.key_pem);
    tx.execute(sql).await?;
    Ok(())
}

pub(super) async fn insert_audit(tx: &mut Tx, event: &AuditEvent) -> Result<(), StoreError> {
    insert_audits(tx, &[event]).await
}

pub(super) async fn insert_audits(tx: &mut Tx, events: &[&AuditEvent]) -> Result<(), StoreError> {
    for chunk in events.chunks(ROWS_PER_INSERT) {
        let mut sql = Sql::default();
        push_audit_insert(&mut sql, chunk);
        tx.execute(sql).await?;
    }
    Ok(())
}

pub(super) async fn upsert_node(
    tx: &mut Tx,
    node: &NodeIdentity,
    at: OffsetDateTime,
) -> Result<(), StoreError> {
    upsert_nodes(tx, &[(node, at)]).await
}

pub(super) async fn upsert_nodes(
    tx: &mut Tx,
    nodes: &[(&NodeIdentity, OffsetDateTime)],
) -> Result<(), StoreError> {
    for chunk in nodes.chunks(ROWS_PER_INSERT) {
        let mut sql = Sql::default();
        push_node_upsert(&mut sql, chunk);
        tx.execute(sql).await?;
    }
    Ok(())
}

pub(super) async fn insert_certificates(
    tx: &mut Tx,
    certs: &[&NewCertificate],
) -> Result<(), StoreError> {
    let backend = tx.backend();
    for chunk in certs.chunks(ROWS_PER_INSERT) {
        let mut sql = Sql::default();
        push_certificate_insert(&mut sql, chunk, backend);
        tx.execute(sql).await?;
    }
    Ok(())
}

/// Appends one statement that adds these audit events (at most [`ROWS_PER_INSERT`]).
pub(super) fn push_audit_insert(sql: &mut Sql, events: &[&AuditEvent]) {
    sql.push("INSERT INTO audit_events (at, actor, action, node, serial, detail) ");
    sql.push_values(events, |row, event| {
        row.bind(ts(event.at))
            .bind(&event.actor)
            .bind(&event.action)
            .bind(&event.node)
            .bind(&event.serial)
            .bind(&event.detail);
    });
}

/// Appends one statement that registers these nodes or updates their names (at most
/// [`ROWS_PER_INSERT`]). A node whose names did not change is left alone.
pub(super) fn push_node_upsert(sql: &mut Sql, nodes: &[(&NodeIdentity, OffsetDateTime)]) {
    // One statement may not name a row twice (PostgreSQL refuses it): the last identity wins.
    let mut last: Vec<&(&NodeIdentity, OffsetDateTime)> = Vec::with_capacity(nodes.len());
    for node in nodes {
        match last.iter_mut().find(|n| n.0.name == node.0.name) {
            Some(seen) => *seen = node,
            None => last.push(node),
        }
    }
    sql.push("INSERT INTO nodes (name, ips, dns_names, created_at, updated_at) ");
    sql.push_values(&last, |row, (node, at)| {
        row.bind(node.name.as_str())
            .bind(to_json(&node.ips))
            .bind(to_json(&node.dns_names))
            .bind(ts(*at))
            .bind(ts(*at));
    });
    sql.push(
        " ON CONFLICT (name) DO UPDATE SET
           ips = excluded.ips, dns_names = excluded.dns_names, updated_at = excluded.updated_at
         WHERE nodes.ips != excluded.ips OR nodes.dns_names != excluded.dns_names",
    );
}

/// Appends one statement that records these certificates (at most [`ROWS_PER_INSERT`]).
///
/// Each row takes the next `seq` (the recording order). On SQLite: one more than the highest so
/// far plus its place in the statement, inside the write transaction, so numbers only grow and
/// never repeat. On PostgreSQL, where several servers insert at once: the column's sequence.
pub(super) fn push_certificate_insert(sql: &mut Sql, certs: &[&NewCertificate], backend: Backend) {
    sql.push(
        "INSERT INTO certificates
           (serial, ca_generation, profile, node, subject, common_name, sans, key_type,
            public_key_sha256, not_before, not_after, pem, status, issued_at, renewed_from",
    );
    sql.push(match backend {
        Backend::Sqlite => ", seq) ",
        Backend::Postgres => ") ",
    });
    let mut place: i64 = 0;
    sql.push_values(certs, |row, cert| {
        place += 1;
        row.bind(&cert.serial)
            .bind(cert.ca_generation)
            .bind(&cert.profile)
            .bind(cert.node.as_str())
            .bind(&cert.subject)
            .bind(&cert.common_name)
            .bind(to_json(&cert.sans))
            .bind(&cert.key_type)
            .bind(&cert.public_key_sha256)
            .bind(ts(cert.not_before))
            .bind(ts(cert.not_after))
            .bind(&cert.pem)
            .bind("valid")
            .bind(ts(cert.issued_at))
            .bind(&cert.renewed_from);
        if backend == Backend::Sqlite {
            row.expr(&format!(
                "(SELECT COALESCE(MAX(seq), 0) FROM certificates) + {place}"
            ));
        }
    });
}

/// JSON for a column. Serialising vectors of strings and addresses cannot fail.
pub(super) fn to_json<T: Serialize>(value: &T) -> String {
    serde_json::to_string(value).unwrap_or_else(|_| "[]".into())
}

pub(super) fn token_from_row(row: &DbRow) -> Result<TokenRecord, StoreError> {
    let corrupt = |detail: String| StoreError::Corrupt {
        table: "tokens",
        detail,
    };
    let kind = match row.col::<String>("kind")?.as_str() {
        "admin" => TokenKind::Admin,
        "bootstrap" => TokenKind::Bootstrap,
        other => return Err(corrupt(format!("unknown kind {other:?}"))),
    };
    let json = |column: &str| -> Result<String, StoreError> { Ok(row.col(column)?) };
    let node: Option<String> = row.col("node")?;
    let identity = match node {
        Some(name) => Some(NodeIdentity::new(
            name.parse()
                .map_err(|e: crate::names::NameError| corrupt(e.to_string()))?,
            serde_json::from_str::<Option<Vec<_>>>(&json("ips")?)
                .map_err(|e| corrupt(e.to_string()))?
                .unwrap_or_default(),
            serde_json::from_str::<Option<Vec<_>>>(&json("dns_names")?)
                .map_err(|e| corrupt(e.to_string()))?
                .unwrap_or_default(),
        )),
        None => None,
    };
    let issued: Option<String> = row.col("issued_serials")?;
    let optional_time = |column: &str| -> Result<Option<OffsetDateTime>, StoreError> {
        row.col::<Option<i64>>(column)?
            .map(|t| from_ts("tokens", t))
            .transpose()
    };
    Ok(TokenRecord {
        id: row.col("id")?,
        kind,
        secret_sha256: row.col("secret_sha256")?,
        identity,
        profiles: serde_json::from_str(&json("profiles")?).map_err(|e| corrupt(e.to_string()))?,
        common_name: row.col("common_name")?,
        allow_privileged_common_name: row.col("allow_privileged_common_name")?,
        created_by: row.col("created_by")?,
        created_at: from_ts("tokens", row.col("created_at")?)?,
        expires_at: optional_time("expires_at")?,
        used_at: optional_time("used_at")?,
        request_sha256: row.col("request_sha256")?,
        issued_serials: match issued {
            Some(text) => serde_json::from_str(&text).map_err(|e| corrupt(e.to_string()))?,
            None => BTreeMap::new(),
        },
        revoked_at: optional_time("revoked_at")?,
    })
}

pub(super) fn generation_from_row(row: &DbRow) -> Result<GenerationRecord, StoreError> {
    let state: String = row.col("state")?;
    Ok(GenerationRecord {
        id: row.col("id")?,
        state: state.parse().map_err(|detail| StoreError::Corrupt {
            table: "ca_generations",
            detail,
        })?,
        key_type: row.col("key_type")?,
        cert_pem: row.col("cert_pem")?,
        fingerprint: row.col("fingerprint")?,
        key_file: row.col("key_file")?,
        imported: row.col("imported")?,
        not_before: from_ts("ca_generations", row.col("not_before")?)?,
        not_after: from_ts("ca_generations", row.col("not_after")?)?,
        activated_at: row
            .col::<Option<i64>>("activated_at")?
            .map(|t| from_ts("ca_generations", t))
            .transpose()?,
        retired_at: row
            .col::<Option<i64>>("retired_at")?
            .map(|t| from_ts("ca_generations", t))
            .transpose()?,
        created_at: from_ts("ca_generations", row.col("created_at")?)?,
        endorsement_pem: row.col("endorsement_pem")?,
        key_pem: row.col("key_pem")?,
    })
}

/// A node's registered identity from a row with its `ips` and `dns_names` columns.
pub(super) fn node_from_row(row: &DbRow, name: NodeName) -> Result<NodeIdentity, StoreError> {
    let corrupt = |detail: String| StoreError::Corrupt {
        table: "nodes",
        detail,
    };
    let ips: String = row.col("ips")?;
    let dns: String = row.col("dns_names")?;
    Ok(NodeIdentity::new(
        name,
        serde_json::from_str(&ips).map_err(|e| corrupt(e.to_string()))?,
        serde_json::from_str(&dns).map_err(|e| corrupt(e.to_string()))?,
    ))
}

pub(super) fn certificate_from_row(
    row: &DbRow,
    now: OffsetDateTime,
) -> Result<CertificateRecord, StoreError> {
    let corrupt = |detail: String| StoreError::Corrupt {
        table: "certificates",
        detail,
    };
    let stored_status: String = row.col("status")?;
    let not_after = from_ts("certificates", row.col("not_after")?)?;
    let status = match stored_status.as_str() {
        "revoked" => CertificateStatus::Revoked,
        "valid" if not_after <= now => CertificateStatus::Expired,
        "valid" => CertificateStatus::Valid,
        other => return Err(corrupt(format!("unknown status {other:?}"))),
    };
    let state = CertificateState::of(status, row.col("ca_retired")?, row.col("superseded")?);
    let sans: String = row.col("sans")?;
    Ok(CertificateRecord {
        serial: row.col("serial")?,
        ca_generation: row.col("ca_generation")?,
        profile: row.col("profile")?,
        node: row.col("node")?,
        subject: row.col("subject")?,
        common_name: row.col("common_name")?,
        sans: serde_json::from_str(&sans).map_err(|e| corrupt(e.to_string()))?,
        key_type: row.col("key_type")?,
        public_key_sha256: row.col("public_key_sha256")?,
        not_before: from_ts("certificates", row.col("not_before")?)?,
        not_after,
        status,
        state,
        revoked_at: row
            .col::<Option<i64>>("revoked_at")?
            .map(|t| from_ts("certificates", t))
            .transpose()?,
        revocation_reason: row.col("revocation_reason")?,
        issued_at: from_ts("certificates", row.col("issued_at")?)?,
        renewed_from: row.col("renewed_from")?,
        pem: row.col("pem")?,
    })
}

pub(super) fn published_crl_from_row(row: &DbRow) -> Result<PublishedCrl, StoreError> {
    Ok(PublishedCrl {
        scope: row.col("scope")?,
        generation: row.col("generation")?,
        number: row.col("number")?,
        epoch: row.col("epoch")?,
        this_update: from_ts("published_crls", row.col("this_update")?)?,
        der: row.col("der")?,
    })
}
