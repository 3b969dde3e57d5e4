//! Records to rows and rows to records: timestamps as Unix seconds, lists as JSON, the
//! multi-row INSERTs the group committer and enrollment use, and the decoding of every row
//! (a row that does not decode is reported as corrupt, naming its table).

use serde::Serialize;
use sqlx::sqlite::{Sqlite, SqliteRow};
use sqlx::Row;
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
/// allows 32,766).
pub(super) const ROWS_PER_INSERT: usize = 64;

pub(super) type Tx<'c> = sqlx::Transaction<'c, sqlx::Sqlite>;
pub(super) type Sql = sqlx::QueryBuilder<Sqlite>;

pub(super) async fn insert_generation(
    tx: &mut Tx<'_>,
    g: &GenerationRecord,
) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO ca_generations
           (id, state, key_type, cert_pem, fingerprint, key_file, imported, not_before,
            not_after, created_at, activated_at, endorsement_pem)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)",
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
    .execute(&mut **tx)
    .await?;
    Ok(())
}

pub(super) async fn insert_audit(tx: &mut Tx<'_>, event: &AuditEvent) -> Result<(), StoreError> {
    let mut sql = Sql::new("");
    push_audit_inserts(&mut sql, &[event]);
    sql.build().execute(&mut **tx).await?;
    Ok(())
}

pub(super) async fn upsert_node(
    tx: &mut Tx<'_>,
    node: &NodeIdentity,
    at: OffsetDateTime,
) -> Result<(), StoreError> {
    let mut sql = Sql::new("");
    push_node_upserts(&mut sql, &[(node, at)]);
    sql.build().execute(&mut **tx).await?;
    Ok(())
}

pub(super) async fn insert_certificates(
    tx: &mut Tx<'_>,
    certs: &[&NewCertificate],
) -> Result<(), StoreError> {
    let mut sql = Sql::new("");
    push_certificate_inserts(&mut sql, certs);
    sql.build().execute(&mut **tx).await?;
    Ok(())
}

/// Appends statements that add audit events, one per [`ROWS_PER_INSERT`] rows.
pub(super) fn push_audit_inserts(sql: &mut Sql, events: &[&AuditEvent]) {
    for chunk in events.chunks(ROWS_PER_INSERT) {
        sql.push("INSERT INTO audit_events (at, actor, action, node, serial, detail) ");
        sql.push_values(chunk, |mut row, event| {
            row.push_bind(ts(event.at))
                .push_bind(&event.actor)
                .push_bind(&event.action)
                .push_bind(&event.node)
                .push_bind(&event.serial)
                .push_bind(&event.detail);
        });
        sql.push(";\n");
    }
}

/// Appends statements that register nodes or update their names, one per [`ROWS_PER_INSERT`]
/// rows. A node whose names did not change is left alone; rows apply in order, so the last
/// identity wins.
pub(super) fn push_node_upserts(sql: &mut Sql, nodes: &[(&NodeIdentity, OffsetDateTime)]) {
    for chunk in nodes.chunks(ROWS_PER_INSERT) {
        sql.push("INSERT INTO nodes (name, ips, dns_names, created_at, updated_at) ");
        sql.push_values(chunk, |mut row, (node, at)| {
            row.push_bind(node.name.as_str())
                .push_bind(to_json(&node.ips))
                .push_bind(to_json(&node.dns_names))
                .push_bind(ts(*at))
                .push_bind(ts(*at));
        });
        sql.push(
            " ON CONFLICT (name) DO UPDATE SET
               ips = excluded.ips, dns_names = excluded.dns_names, updated_at = excluded.updated_at
             WHERE ips != excluded.ips OR dns_names != excluded.dns_names;\n",
        );
    }
}

/// Appends statements that record certificates, one per [`ROWS_PER_INSERT`] rows.
///
/// Each row takes the next `seq` (the recording order): one more than the highest so far plus its
/// place in the batch, inside the write transaction, so numbers only grow and never repeat.
pub(super) fn push_certificate_inserts(sql: &mut Sql, certs: &[&NewCertificate]) {
    for chunk in certs.chunks(ROWS_PER_INSERT) {
        sql.push(
            "INSERT INTO certificates
               (serial, ca_generation, profile, node, subject, common_name, sans, key_type,
                public_key_sha256, not_before, not_after, pem, status, issued_at, renewed_from,
                seq) ",
        );
        let mut place: i64 = 0;
        sql.push_values(chunk, |mut row, cert| {
            place += 1;
            row.push_bind(&cert.serial)
                .push_bind(cert.ca_generation)
                .push_bind(&cert.profile)
                .push_bind(cert.node.as_str())
                .push_bind(&cert.subject)
                .push_bind(&cert.common_name)
                .push_bind(to_json(&cert.sans))
                .push_bind(&cert.key_type)
                .push_bind(&cert.public_key_sha256)
                .push_bind(ts(cert.not_before))
                .push_bind(ts(cert.not_after))
                .push_bind(&cert.pem)
                .push_bind("valid")
                .push_bind(ts(cert.issued_at))
                .push_bind(&cert.renewed_from)
                .push("(SELECT COALESCE(MAX(seq), 0) FROM certificates) + ")
                .push_bind_unseparated(place);
        });
        sql.push(";\n");
    }
}

/// JSON for a column. Serialising vectors of strings and addresses cannot fail.
pub(super) fn to_json<T: Serialize>(value: &T) -> String {
    serde_json::to_string(value).unwrap_or_else(|_| "[]".into())
}

pub(super) fn token_from_row(row: &SqliteRow) -> Result<TokenRecord, StoreError> {
    let corrupt = |detail: String| StoreError::Corrupt {
        table: "tokens",
        detail,
    };
    let kind = match row.try_get::<String, _>("kind")?.as_str() {
        "admin" => TokenKind::Admin,
        "bootstrap" => TokenKind::Bootstrap,
        other => return Err(corrupt(format!("unknown kind {other:?}"))),
    };
    let json = |column: &str| -> Result<String, StoreError> { Ok(row.try_get(column)?) };
    let node: Option<String> = row.try_get("node")?;
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
    let issued: Option<String> = row.try_get("issued_serials")?;
    let optional_time = |column: &str| -> Result<Option<OffsetDateTime>, StoreError> {
        row.try_get::<Option<i64>, _>(column)?
            .map(|t| from_ts("tokens", t))
            .transpose()
    };
    Ok(TokenRecord {
        id: row.try_get("id")?,
        kind,
        secret_sha256: row.try_get("secret_sha256")?,
        identity,
        profiles: serde_json::from_str(&json("profiles")?).map_err(|e| corrupt(e.to_string()))?,
        common_name: row.try_get("common_name")?,
        allow_privileged_common_name: row.try_get("allow_privileged_common_name")?,
        created_by: row.try_get("created_by")?,
        created_at: from_ts("tokens", row.try_get("created_at")?)?,
        expires_at: optional_time("expires_at")?,
        used_at: optional_time("used_at")?,
        request_sha256: row.try_get("request_sha256")?,
        issued_serials: match issued {
            Some(text) => serde_json::from_str(&text).map_err(|e| corrupt(e.to_string()))?,
            None => BTreeMap::new(),
        },
        revoked_at: optional_time("revoked_at")?,
    })
}

pub(super) fn generation_from_row(row: &SqliteRow) -> Result<GenerationRecord, StoreError> {
    let state: String = row.try_get("state")?;
    Ok(GenerationRecord {
        id: row.try_get("id")?,
        state: state.parse().map_err(|detail| StoreError::Corrupt {
            table: "ca_generations",
            detail,
        })?,
        key_type: row.try_get("key_type")?,
        cert_pem: row.try_get("cert_pem")?,
        fingerprint: row.try_get("fingerprint")?,
        key_file: row.try_get("key_file")?,
        imported: row.try_get("imported")?,
        not_before: from_ts("ca_generations", row.try_get("not_before")?)?,
        not_after: from_ts("ca_generations", row.try_get("not_after")?)?,
        activated_at: row
            .try_get::<Option<i64>, _>("activated_at")?
            .map(|t| from_ts("ca_generations", t))
            .transpose()?,
        retired_at: row
            .try_get::<Option<i64>, _>("retired_at")?
            .map(|t| from_ts("ca_generations", t))
            .transpose()?,
        created_at: from_ts("ca_generations", row.try_get("created_at")?)?,
        endorsement_pem: row.try_get("endorsement_pem")?,
    })
}

/// A node's registered identity from a row with its `ips` and `dns_names` columns.
pub(super) fn node_from_row(row: &SqliteRow, name: NodeName) -> Result<NodeIdentity, StoreError> {
    let corrupt = |detail: String| StoreError::Corrupt {
        table: "nodes",
        detail,
    };
    let ips: String = row.try_get("ips")?;
    let dns: String = row.try_get("dns_names")?;
    Ok(NodeIdentity::new(
        name,
        serde_json::from_str(&ips).map_err(|e| corrupt(e.to_string()))?,
        serde_json::from_str(&dns).map_err(|e| corrupt(e.to_string()))?,
    ))
}

pub(super) fn certificate_from_row(
    row: &SqliteRow,
    now: OffsetDateTime,
) -> Result<CertificateRecord, StoreError> {
    let corrupt = |detail: String| StoreError::Corrupt {
        table: "certificates",
        detail,
    };
    let stored_status: String = row.try_get("status")?;
    let not_after = from_ts("certificates", row.try_get("not_after")?)?;
    let status = match stored_status.as_str() {
        "revoked" => CertificateStatus::Revoked,
        "valid" if not_after <= now => CertificateStatus::Expired,
        "valid" => CertificateStatus::Valid,
        other => return Err(corrupt(format!("unknown status {other:?}"))),
    };
    let state = CertificateState::of(
        status,
        row.try_get("ca_retired")?,
        row.try_get("superseded")?,
    );
    let sans: String = row.try_get("sans")?;
    Ok(CertificateRecord {
        serial: row.try_get("serial")?,
        ca_generation: row.try_get("ca_generation")?,
        profile: row.try_get("profile")?,
        node: row.try_get("node")?,
        subject: row.try_get("subject")?,
        common_name: row.try_get("common_name")?,
        sans: serde_json::from_str(&sans).map_err(|e| corrupt(e.to_string()))?,
        key_type: row.try_get("key_type")?,
        public_key_sha256: row.try_get("public_key_sha256")?,
        not_before: from_ts("certificates", row.try_get("not_before")?)?,
        not_after,
        status,
        state,
        revoked_at: row
            .try_get::<Option<i64>, _>("revoked_at")?
            .map(|t| from_ts("certificates", t))
            .transpose()?,
        revocation_reason: row.try_get("revocation_reason")?,
        issued_at: from_ts("certificates", row.try_get("issued_at")?)?,
        renewed_from: row.try_get("renewed_from")?,
        pem: row.try_get("pem")?,
    })
}

pub(super) fn published_crl_from_row(row: &SqliteRow) -> Result<PublishedCrl, StoreError> {
    Ok(PublishedCrl {
        scope: row.try_get("scope")?,
        generation: row.try_get("generation")?,
        number: row.try_get("number")?,
        epoch: row.try_get("epoch")?,
        this_update: from_ts("published_crls", row.try_get("this_update")?)?,
        der: row.try_get("der")?,
    })
}
