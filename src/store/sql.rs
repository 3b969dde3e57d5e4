//! Statements written once for both backends: [`Sql`] holds a statement's text (with `$N`
//! placeholders, which SQLite and PostgreSQL both read) and its typed arguments; [`Pool`] and
//! [`Tx`] run it on whichever database the store opened; [`DbRow`] reads a column of either's
//! rows. Only this file knows there are two drivers.

use std::borrow::Cow;

use sqlx::postgres::{PgPool, PgRow, Postgres};
use sqlx::sqlite::{Sqlite, SqlitePool, SqliteRow};
use sqlx::Row;

/// One bound value. Integers are 64-bit, times Unix seconds, lists JSON text: the same on
/// both backends.
#[derive(Clone, Debug)]
pub(super) enum Arg {
    Text(Option<String>),
    Int(Option<i64>),
    Bool(bool),
    Blob(Vec<u8>),
}

impl From<&str> for Arg {
    fn from(v: &str) -> Self {
        Arg::Text(Some(v.to_string()))
    }
}
impl From<String> for Arg {
    fn from(v: String) -> Self {
        Arg::Text(Some(v))
    }
}
impl From<&String> for Arg {
    fn from(v: &String) -> Self {
        Arg::Text(Some(v.clone()))
    }
}
impl From<Option<String>> for Arg {
    fn from(v: Option<String>) -> Self {
        Arg::Text(v)
    }
}
impl From<&Option<String>> for Arg {
    fn from(v: &Option<String>) -> Self {
        Arg::Text(v.clone())
    }
}
impl From<Option<&str>> for Arg {
    fn from(v: Option<&str>) -> Self {
        Arg::Text(v.map(str::to_string))
    }
}
impl From<i64> for Arg {
    fn from(v: i64) -> Self {
        Arg::Int(Some(v))
    }
}
impl From<&i64> for Arg {
    fn from(v: &i64) -> Self {
        Arg::Int(Some(*v))
    }
}
impl From<Option<i64>> for Arg {
    fn from(v: Option<i64>) -> Self {
        Arg::Int(v)
    }
}
impl From<bool> for Arg {
    fn from(v: bool) -> Self {
        Arg::Bool(v)
    }
}
impl From<&[u8]> for Arg {
    fn from(v: &[u8]) -> Self {
        Arg::Blob(v.to_vec())
    }
}
impl From<&Vec<u8>> for Arg {
    fn from(v: &Vec<u8>) -> Self {
        Arg::Blob(v.clone())
    }
}

/// Where [`Sql::push_bind`] put a placeholder (never in etcd-ca's own SQL text otherwise).
const PLACEHOLDER: char = '\u{0}';

/// The statement text for a backend: placeholders from [`Sql::push_bind`] become `$N`
/// (numbered) or `?`. A statement either writes its `$N` itself (and binds in that order) or
/// pushes every one; never both.
fn render(text: Cow<'static, str>, numbered: bool) -> Cow<'static, str> {
    if !text.contains(PLACEHOLDER) {
        return text;
    }
    let mut out = String::with_capacity(text.len() + 16);
    let mut n = 0;
    for c in text.chars() {
        if c == PLACEHOLDER {
            n += 1;
            if numbered {
                out.push_str(&format!("${n}"));
            } else {
                out.push('?');
            }
        } else {
            out.push(c);
        }
    }
    Cow::Owned(out)
}

/// A statement and its arguments.
#[derive(Clone, Debug, Default)]
pub(super) struct Sql {
    text: Cow<'static, str>,
    args: Vec<Arg>,
}

impl Sql {
    pub(super) fn new(text: impl Into<Cow<'static, str>>) -> Self {
        Self {
            text: text.into(),
            args: Vec::new(),
        }
    }

    /// Binds the next `$N` of a statement written out in full.
    pub(super) fn bind(mut self, value: impl Into<Arg>) -> Self {
        self.args.push(value.into());
        self
    }

    /// Appends text.
    pub(super) fn push(&mut self, text: &str) -> &mut Self {
        self.text.to_mut().push_str(text);
        self
    }

    /// Appends the next placeholder and binds it. The placeholder is written when the
    /// statement runs: `$N` on PostgreSQL, an anonymous `?` on SQLite, so that the statements
    /// of a group commit's script read the same whatever came before them and SQLite's
    /// statement cache holds one of each shape (as with sqlx's own query builder).
    pub(super) fn push_bind(&mut self, value: impl Into<Arg>) -> &mut Self {
        self.args.push(value.into());
        self.text.to_mut().push(PLACEHOLDER);
        self
    }

    /// Appends `($a, $b, ...)` binding each value.
    pub(super) fn push_list<V: Into<Arg>>(&mut self, values: impl IntoIterator<Item = V>) {
        self.push("(");
        for (i, v) in values.into_iter().enumerate() {
            if i > 0 {
                self.push(", ");
            }
            self.push_bind(v);
        }
        self.push(")");
    }

    /// Appends `VALUES (...), (...)`: one row per item, `row` binding its values.
    pub(super) fn push_values<T>(
        &mut self,
        items: &[T],
        mut row: impl FnMut(&mut ValuesRow<'_>, &T),
    ) {
        self.push("VALUES ");
        for (i, item) in items.iter().enumerate() {
            if i > 0 {
                self.push(", ");
            }
            self.push("(");
            let mut r = ValuesRow {
                sql: self,
                first: true,
            };
            row(&mut r, item);
            self.push(")");
        }
    }
}

/// One row of [`Sql::push_values`]: values separated by commas.
pub(super) struct ValuesRow<'s> {
    sql: &'s mut Sql,
    first: bool,
}

impl ValuesRow<'_> {
    pub(super) fn bind(&mut self, value: impl Into<Arg>) -> &mut Self {
        self.sep();
        self.sql.push_bind(value);
        self
    }

    /// A value written as SQL text (an expression, not a literal from outside).
    pub(super) fn expr(&mut self, text: &str) -> &mut Self {
        self.sep();
        self.sql.push(text);
        self
    }

    fn sep(&mut self) {
        if !self.first {
            self.sql.push(", ");
        }
        self.first = false;
    }
}

/// Turns a [`Sql`] into the driver's query with every argument bound, then calls `$method`
/// on `$executor` (the driver is inferred from the executor).
macro_rules! run {
    ($sql:expr, $executor:expr, $method:ident, $numbered:expr) => {{
        let Sql { text, args } = $sql;
        let mut query = sqlx::query(sqlx::AssertSqlSafe(render(text, $numbered)));
        for arg in args {
            query = match arg {
                Arg::Text(v) => query.bind(v),
                Arg::Int(v) => query.bind(v),
                Arg::Bool(v) => query.bind(v),
                Arg::Blob(v) => query.bind(v),
            };
        }
        query.$method($executor).await
    }};
}

/// Runs a statement (or a script of several) on one SQLite connection: the group committer's.
pub(super) async fn execute_on_sqlite(
    conn: &mut sqlx::SqliteConnection,
    sql: Sql,
) -> Result<u64, sqlx::Error> {
    Ok(run!(sql, conn, execute, false)?.rows_affected())
}

/// A value both drivers decode.
pub(super) trait Col:
    Sized
    + for<'r> sqlx::Decode<'r, Sqlite>
    + sqlx::Type<Sqlite>
    + for<'r> sqlx::Decode<'r, Postgres>
    + sqlx::Type<Postgres>
{
}
impl<T> Col for T where
    T: Sized
        + for<'r> sqlx::Decode<'r, Sqlite>
        + sqlx::Type<Sqlite>
        + for<'r> sqlx::Decode<'r, Postgres>
        + sqlx::Type<Postgres>
{
}

/// A row of either backend.
pub(super) enum DbRow {
    Sqlite(SqliteRow),
    Postgres(PgRow),
}

impl DbRow {
    /// Whether the `i`th column holds integers (by its declared type; SQLite's by the value).
    pub(super) fn is_integer(&self, i: usize) -> bool {
        use sqlx::{Column, TypeInfo};
        let name = match self {
            DbRow::Sqlite(r) => r.columns().get(i).map(|c| c.type_info().name()),
            DbRow::Postgres(r) => r.columns().get(i).map(|c| c.type_info().name()),
        };
        matches!(name, Some("INT8" | "INT4" | "INT2" | "INTEGER"))
    }

    /// The value of column `name`.
    pub(super) fn col<T: Col>(&self, name: &str) -> Result<T, sqlx::Error> {
        match self {
            DbRow::Sqlite(r) => r.try_get(name),
            DbRow::Postgres(r) => r.try_get(name),
        }
    }

    /// The value of the `i`th column.
    pub(super) fn at<T: Col>(&self, i: usize) -> Result<T, sqlx::Error> {
        match self {
            DbRow::Sqlite(r) => r.try_get(i),
            DbRow::Postgres(r) => r.try_get(i),
        }
    }
}

/// Which database a store is on, for the few statements whose SQL differs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Backend {
    Sqlite,
    Postgres,
}

/// The connections of the database the store opened.
#[derive(Clone, Debug)]
pub(super) enum Pool {
    Sqlite(SqlitePool),
    Postgres(PgPool),
}

/// A write transaction on either backend.
pub(super) enum Tx {
    Sqlite(sqlx::Transaction<'static, Sqlite>),
    Postgres(sqlx::Transaction<'static, Postgres>),
}

impl Pool {
    pub(super) fn backend(&self) -> Backend {
        match self {
            Pool::Sqlite(_) => Backend::Sqlite,
            Pool::Postgres(_) => Backend::Postgres,
        }
    }

    pub(super) async fn fetch_all(&self, sql: Sql) -> Result<Vec<DbRow>, sqlx::Error> {
        Ok(match self {
            Pool::Sqlite(p) => run!(sql, p, fetch_all, false)?
                .into_iter()
                .map(DbRow::Sqlite)
                .collect(),
            Pool::Postgres(p) => run!(sql, p, fetch_all, true)?
                .into_iter()
                .map(DbRow::Postgres)
                .collect(),
        })
    }

    pub(super) async fn fetch_optional(&self, sql: Sql) -> Result<Option<DbRow>, sqlx::Error> {
        Ok(match self {
            Pool::Sqlite(p) => run!(sql, p, fetch_optional, false)?.map(DbRow::Sqlite),
            Pool::Postgres(p) => run!(sql, p, fetch_optional, true)?.map(DbRow::Postgres),
        })
    }

    pub(super) async fn fetch_one(&self, sql: Sql) -> Result<DbRow, sqlx::Error> {
        Ok(match self {
            Pool::Sqlite(p) => DbRow::Sqlite(run!(sql, p, fetch_one, false)?),
            Pool::Postgres(p) => DbRow::Postgres(run!(sql, p, fetch_one, true)?),
        })
    }

    /// The rows of `inner` (which selects `columns`, in that order) decoded as `T`, a tuple of
    /// integers and strings (NULL as `None`). For reads of thousands of small rows: on SQLite
    /// the database packs them into one JSON value (`json_group_array`), so one value crosses
    /// from the driver instead of one row at a time (SQLite's driver hands each row from its
    /// worker thread with a wake-up, about 1.5 µs a row). PostgreSQL's driver streams rows in
    /// one answer: there they are read as rows (packing measured slower).
    pub(super) async fn fetch_packed<T: serde::de::DeserializeOwned>(
        &self,
        inner: Sql,
        columns: &[&str],
    ) -> Result<Vec<T>, sqlx::Error> {
        let decode = |e: serde_json::Error| sqlx::Error::Decode(Box::new(e));
        match self {
            Pool::Sqlite(_) => {
                let columns = columns.join(", ");
                let Sql { text, args } = inner;
                let packed = Sql {
                    text: format!(
                        "SELECT json_group_array(json_array({columns})) FROM ({text}) AS packed"
                    )
                    .into(),
                    args,
                };
                let json: String = self.scalar(packed).await?;
                serde_json::from_str(&json).map_err(decode)
            }
            Pool::Postgres(_) => {
                let rows = self.fetch_all(inner).await?;
                let mut values = Vec::with_capacity(rows.len());
                for row in &rows {
                    let mut value = Vec::with_capacity(columns.len());
                    for i in 0..columns.len() {
                        value.push(if row.is_integer(i) {
                            serde_json::Value::from(row.at::<Option<i64>>(i)?)
                        } else {
                            serde_json::Value::from(row.at::<Option<String>>(i)?)
                        });
                    }
                    values.push(serde_json::Value::Array(value));
                }
                serde_json::from_value(serde_json::Value::Array(values)).map_err(decode)
            }
        }
    }

    /// The first column of the one row `sql` returns.
    pub(super) async fn scalar<T: Col>(&self, sql: Sql) -> Result<T, sqlx::Error> {
        self.fetch_one(sql).await?.at(0)
    }

    /// The first column of every row `sql` returns.
    pub(super) async fn scalars<T: Col>(&self, sql: Sql) -> Result<Vec<T>, sqlx::Error> {
        self.fetch_all(sql).await?.iter().map(|r| r.at(0)).collect()
    }

    /// Runs a statement; how many rows it changed.
    pub(super) async fn execute(&self, sql: Sql) -> Result<u64, sqlx::Error> {
        Ok(match self {
            Pool::Sqlite(p) => run!(sql, p, execute, false)?.rows_affected(),
            Pool::Postgres(p) => run!(sql, p, execute, true)?.rows_affected(),
        })
    }
}

impl Tx {
    pub(super) fn backend(&self) -> Backend {
        match self {
            Tx::Sqlite(_) => Backend::Sqlite,
            Tx::Postgres(_) => Backend::Postgres,
        }
    }

    pub(super) async fn fetch_all(&mut self, sql: Sql) -> Result<Vec<DbRow>, sqlx::Error> {
        Ok(match self {
            Tx::Sqlite(t) => run!(sql, &mut **t, fetch_all, false)?
                .into_iter()
                .map(DbRow::Sqlite)
                .collect(),
            Tx::Postgres(t) => run!(sql, &mut **t, fetch_all, true)?
                .into_iter()
                .map(DbRow::Postgres)
                .collect(),
        })
    }

    pub(super) async fn fetch_optional(&mut self, sql: Sql) -> Result<Option<DbRow>, sqlx::Error> {
        Ok(match self {
            Tx::Sqlite(t) => run!(sql, &mut **t, fetch_optional, false)?.map(DbRow::Sqlite),
            Tx::Postgres(t) => run!(sql, &mut **t, fetch_optional, true)?.map(DbRow::Postgres),
        })
    }

    pub(super) async fn fetch_one(&mut self, sql: Sql) -> Result<DbRow, sqlx::Error> {
        Ok(match self {
            Tx::Sqlite(t) => DbRow::Sqlite(run!(sql, &mut **t, fetch_one, false)?),
            Tx::Postgres(t) => DbRow::Postgres(run!(sql, &mut **t, fetch_one, true)?),
        })
    }

    /// The first column of the one row `sql` returns.
    pub(super) async fn scalar<T: Col>(&mut self, sql: Sql) -> Result<T, sqlx::Error> {
        self.fetch_one(sql).await?.at(0)
    }

    /// The first column of every row `sql` returns.
    pub(super) async fn scalars<T: Col>(&mut self, sql: Sql) -> Result<Vec<T>, sqlx::Error> {
        self.fetch_all(sql).await?.iter().map(|r| r.at(0)).collect()
    }

    /// Runs a statement; how many rows it changed.
    pub(super) async fn execute(&mut self, sql: Sql) -> Result<u64, sqlx::Error> {
        Ok(match self {
            Tx::Sqlite(t) => run!(sql, &mut **t, execute, false)?.rows_affected(),
            Tx::Postgres(t) => run!(sql, &mut **t, execute, true)?.rows_affected(),
        })
    }

    pub(super) async fn commit(self) -> Result<(), sqlx::Error> {
        match self {
            Tx::Sqlite(t) => t.commit().await,
            Tx::Postgres(t) => t.commit().await,
        }
    }

    pub(super) async fn rollback(self) -> Result<(), sqlx::Error> {
        match self {
            Tx::Sqlite(t) => t.rollback().await,
            Tx::Postgres(t) => t.rollback().await,
        }
    }
}
