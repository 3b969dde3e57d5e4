//! Copying every record from one store into another, in one read snapshot of the source and
//! one write transaction on the target: a backup of a PostgreSQL store (into a new SQLite
//! file, the backup archive's format), and the move of a SQLite CA onto PostgreSQL. Nothing is
//! re-issued: serials, sequence numbers and audit ids are kept.

use std::path::Path;

use super::sql::Arg;
use super::*;

/// How a column is read and written.
#[derive(Clone, Copy)]
enum Kind {
    Text,
    Int,
    Bool,
    Blob,
}
use Kind::*;

/// A table, its key (the order it is read in, a page at a time) and its columns.
struct Table {
    name: &'static str,
    key: &'static str,
    columns: &'static [(&'static str, Kind)],
}

/// Every table, parents before children. `current_certificates` is left out: the target's
/// triggers rebuild it as the certificates arrive in recording order; `revocation_epoch` is
/// copied last, over what those triggers counted.
const TABLES: &[Table] = &[
    Table {
        name: "ca_generations",
        key: "id",
        columns: &[
            ("id", Int),
            ("state", Text),
            ("key_type", Text),
            ("cert_pem", Text),
            ("fingerprint", Text),
            ("key_file", Text),
            ("imported", Bool),
            ("not_before", Int),
            ("not_after", Int),
            ("crl_number", Int),
            ("created_at", Int),
            ("activated_at", Int),
            ("retired_at", Int),
            ("endorsement_pem", Text),
            ("key_pem", Text),
        ],
    },
    Table {
        name: "nodes",
        key: "name",
        columns: &[
            ("name", Text),
            ("ips", Text),
            ("dns_names", Text),
            ("created_at", Int),
            ("updated_at", Int),
        ],
    },
    Table {
        name: "certificates",
        key: "seq",
        columns: &[
            ("serial", Text),
            ("ca_generation", Int),
            ("profile", Text),
            ("node", Text),
            ("subject", Text),
            ("common_name", Text),
            ("sans", Text),
            ("key_type", Text),
            ("public_key_sha256", Text),
            ("not_before", Int),
            ("not_after", Int),
            ("pem", Text),
            ("status", Text),
            ("revoked_at", Int),
            ("revocation_reason", Text),
            ("issued_at", Int),
            ("renewed_from", Text),
            ("seq", Int),
        ],
    },
    Table {
        name: "audit_events",
        key: "id",
        columns: &[
            ("id", Int),
            ("at", Int),
            ("actor", Text),
            ("action", Text),
            ("node", Text),
            ("serial", Text),
            ("detail", Text),
        ],
    },
    Table {
        name: "tokens",
        key: "id",
        columns: &[
            ("id", Text),
            ("kind", Text),
            ("secret_sha256", Blob),
            ("node", Text),
            ("ips", Text),
            ("dns_names", Text),
            ("profiles", Text),
            ("common_name", Text),
            ("allow_privileged_common_name", Bool),
            ("created_by", Text),
            ("created_at", Int),
            ("expires_at", Int),
            ("used_at", Int),
            ("request_sha256", Text),
            ("issued_serials", Text),
            ("revoked_at", Int),
        ],
    },
    Table {
        name: "node_reports",
        key: "node",
        columns: &[
            ("node", Text),
            ("installed_bundle", Text),
            ("running_bundle", Text),
            ("certificates", Text),
            ("reported_at", Int),
            ("details", Text),
        ],
    },
    Table {
        name: "restart_lease",
        key: "id",
        columns: &[("id", Int), ("node", Text), ("expires_at", Int)],
    },
    Table {
        name: "external_revocations",
        key: "serial",
        columns: &[
            ("serial", Text),
            ("revoked_at", Int),
            ("reason", Text),
            ("keep_until", Int),
        ],
    },
    Table {
        name: "settings",
        key: "name",
        columns: &[("name", Text), ("value", Text)],
    },
    Table {
        name: "published_crls",
        key: "scope",
        columns: &[
            ("scope", Text),
            ("generation", Int),
            ("number", Int),
            ("epoch", Int),
            ("this_update", Int),
            ("der", Blob),
        ],
    },
];

/// Rows read per page.
const PAGE: i64 = 500;

/// How many rows of each table were copied.
pub type Copied = Vec<(&'static str, u64)>;

/// What a move adds to the copy: generation keys read from their files (by generation id),
/// and shared settings.
#[derive(Clone, Debug, Default)]
pub struct CopyExtras {
    pub key_pems: BTreeMap<i64, String>,
    pub settings: Vec<(String, String)>,
}

/// Copies every record of `from` into `to`, which must hold no CA yet, with `extras`. One
/// read snapshot of `from`, one write transaction on `to`: the target has all or nothing.
pub async fn copy_all(from: &Store, to: &Store, extras: &CopyExtras) -> Result<Copied, StoreError> {
    let mut target = to.write_transaction().await?;
    let existing: i64 = target
        .scalar(Sql::new("SELECT COUNT(*) FROM ca_generations"))
        .await?;
    if existing != 0 {
        target.rollback().await?;
        return Err(StoreError::Config(
            "the target database already holds a CA: a move only fills an empty one".into(),
        ));
    }
    let mut source = from.read_snapshot().await?;
    let mut copied = Vec::new();
    for table in TABLES {
        let n = copy_table(&mut source, &mut target, table, extras).await?;
        copied.push((table.name, n));
    }
    for (name, value) in &extras.settings {
        super::rotation::upsert_setting(&mut target, name, value).await?;
    }
    let epoch: i64 = source
        .scalar(Sql::new("SELECT epoch FROM revocation_epoch WHERE id = 1"))
        .await?;
    target
        .execute(Sql::new("UPDATE revocation_epoch SET epoch = $1 WHERE id = 1").bind(epoch))
        .await?;
    if target.backend() == Backend::Postgres {
        // Identity columns continue after the copied values.
        for (table, column) in [("certificates", "seq"), ("audit_events", "id")] {
            target
                .execute(Sql::new(format!(
                    "SELECT setval(pg_get_serial_sequence('{table}', '{column}'),
                            COALESCE((SELECT MAX({column}) FROM {table}), 0) + 1, false)"
                )))
                .await?;
        }
    }
    source.rollback().await?;
    target.commit().await?;
    Ok(copied)
}

async fn copy_table(
    source: &mut Tx,
    target: &mut Tx,
    table: &Table,
    extras: &CopyExtras,
) -> Result<u64, StoreError> {
    let names: Vec<&str> = table.columns.iter().map(|(n, _)| *n).collect();
    let list = names.join(", ");
    let key_index = names
        .iter()
        .position(|n| *n == table.key)
        .ok_or_else(|| StoreError::Config(format!("{}: key not copied", table.name)))?;
    let mut after: Option<Arg> = None;
    let mut total = 0;
    loop {
        let mut read = Sql::new(format!("SELECT {list} FROM {} WHERE ", table.name));
        match after.take() {
            Some(key) => {
                read.push(table.key).push(" > ").push_bind(key);
            }
            None => {
                read.push("TRUE");
            }
        }
        read.push(&format!(" ORDER BY {} LIMIT ", table.key))
            .push_bind(PAGE);
        let rows = source.fetch_all(read).await?;
        if rows.is_empty() {
            break;
        }
        let mut values = Vec::with_capacity(rows.len());
        for row in &rows {
            let mut v = Vec::with_capacity(names.len());
            for (name, kind) in table.columns {
                v.push(match kind {
                    Text => Arg::Text(row.col(name)?),
                    Int => Arg::Int(row.col(name)?),
                    Bool => Arg::Bool(row.col(name)?),
                    Blob => Arg::Blob(row.col(name)?),
                });
            }
            if table.name == "ca_generations" {
                let id: i64 = row.col("id")?;
                let key: Option<String> = row.col("key_pem")?;
                if let (None, Some(file)) = (key, extras.key_pems.get(&id)) {
                    if let Some(i) = names.iter().position(|n| *n == "key_pem") {
                        v[i] = Arg::Text(Some(file.clone()));
                    }
                }
            }
            values.push(v);
        }
        after = values.last().map(|v| v[key_index].clone());
        for chunk in values.chunks(ROWS_PER_INSERT) {
            let mut write = Sql::new(format!("INSERT INTO {} ({list}) ", table.name));
            write.push_values(chunk, |row, v| {
                for arg in v {
                    row.bind(arg.clone());
                }
            });
            target.execute(write).await?;
        }
        total += rows.len() as u64;
        if (rows.len() as i64) < PAGE {
            break;
        }
    }
    Ok(total)
}

/// Writes a copy of a PostgreSQL store to a new SQLite file at `path`.
/// Returns how many certificates it holds.
pub(super) async fn to_new_sqlite(from: &Store, path: &Path) -> Result<i64, StoreError> {
    let to = Store::create(path).await?;
    let result = copy_all(from, &to, &CopyExtras::default()).await;
    to.close().await;
    let copied = result?;
    Ok(copied
        .iter()
        .find(|(table, _)| *table == "certificates")
        .map_or(0, |(_, n)| *n as i64))
}
