//! Copying one database into another (`rampart migrate-storage`), e.g. a
//! single instance's SQLite file into the PostgreSQL a cluster will share.
//!
//! Both databases are opened with [`Database::connect`], so both carry this
//! binary's schema. Every table (but `_sqlx_migrations`, which each side
//! keeps for itself) is copied row by row, parents before children (by the
//! foreign keys), in one transaction on the target: a failure leaves the
//! target as it was. A target that holds any row is refused, so nothing is
//! ever merged or overwritten.
//!
//! Values are carried by the target column's type (integers, booleans, bytes,
//! text, floats), which is what makes SQLite's loose typing and PostgreSQL's
//! strict one meet; a column of another type is an error naming it, never a
//! silent conversion. The audit log's rows are copied exactly, so its hash
//! chain verifies on the target as it did on the source.
//!
//! ```
//! # tokio::runtime::Runtime::new().unwrap().block_on(async {
//! use rampart::store::{copy::copy_database, Database};
//! let source = Database::connect("sqlite::memory:").await.unwrap();
//! let target = Database::connect("sqlite::memory:").await.unwrap();
//! let report = copy_database(&source, &target).await.unwrap();
//! assert!(report.tables.iter().any(|(t, rows)| t == "users" && *rows == 0));
//! # });
//! ```

use std::collections::{BTreeMap, BTreeSet};

use anyhow::{bail, Context as _};
use futures_util::TryStreamExt as _;
use sqlx::{Postgres, Row as _, Sqlite, Transaction};

use super::Database;

/// The schema table that each database keeps for itself.
const MIGRATIONS_TABLE: &str = "_sqlx_migrations";

/// What was copied: each table with its row count, in copy order.
#[derive(Debug, Default, serde::Serialize)]
pub struct CopyReport {
    pub tables: Vec<(String, u64)>,
}

/// How a column's values are read and written, from the target's column type.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Int16,
    Int32,
    Int64,
    Bool,
    Bytes,
    Text,
    Float,
}

impl Kind {
    /// PostgreSQL's `information_schema.columns.data_type`.
    fn postgres(data_type: &str) -> Option<Self> {
        Some(match data_type {
            "smallint" => Self::Int16,
            "integer" => Self::Int32,
            "bigint" => Self::Int64,
            "boolean" => Self::Bool,
            "bytea" => Self::Bytes,
            "text" | "character varying" | "character" => Self::Text,
            "double precision" => Self::Float,
            _ => return None,
        })
    }

    /// A SQLite declared type (by SQLite's own affinity rules, plus BOOLEAN).
    fn sqlite(declared: &str) -> Option<Self> {
        let t = declared.to_ascii_uppercase();
        Some(if t.contains("BOOL") {
            Self::Bool
        } else if t.contains("INT") {
            Self::Int64
        } else if t.contains("CHAR") || t.contains("CLOB") || t.contains("TEXT") {
            Self::Text
        } else if t.contains("BLOB") {
            Self::Bytes
        } else if t.contains("REAL") || t.contains("FLOA") || t.contains("DOUB") {
            Self::Float
        } else {
            return None;
        })
    }
}

#[derive(Clone, Debug, PartialEq)]
enum Value {
    Null,
    Int(i64),
    Bool(bool),
    Bytes(Vec<u8>),
    Text(String),
    Float(f64),
}

/// A column: its name, how the source's values are read, how the target's are written.
#[derive(Clone, Debug)]
struct Column {
    name: String,
    read: Kind,
    write: Kind,
}

#[derive(Debug)]
struct Table {
    name: String,
    columns: Vec<Column>,
}

/// Copies every table of `source` into the empty `target`.
pub async fn copy_database(source: &Database, target: &Database) -> anyhow::Result<CopyReport> {
    let source_schema = schema(source).await.context("reading the source's tables")?;
    let target_schema = schema(target).await.context("reading the target's tables")?;
    let order = copy_order(&target_schema).context("ordering the target's tables")?;
    if let Some(extra) = source_schema.columns.keys().find(|t| !target_schema.columns.contains_key(*t)) {
        bail!("table `{extra}` of the source has no counterpart in the target");
    }
    let mut tables = Vec::with_capacity(order.len());
    for (name, target_columns) in order {
        let Some(source_columns) = source_schema.columns.get(&name) else {
            bail!("table `{name}` is missing from the source: are both at the same schema version?");
        };
        if source_columns.len() != target_columns.len() {
            bail!("table `{name}` has other columns in the source than in the target");
        }
        let mut columns = Vec::with_capacity(target_columns.len());
        for (column, write) in target_columns {
            let Some((_, read)) = source_columns.iter().find(|(c, _)| *c == column) else {
                bail!("column `{name}.{column}` is missing from the source");
            };
            columns.push(Column { name: column, read: *read, write });
        }
        tables.push(Table { name, columns });
    }
    let mut occupied = Vec::new();
    for table in &tables {
        if has_rows(target, &table.name).await? {
            occupied.push(table.name.clone());
        }
    }
    if !occupied.is_empty() {
        bail!("the target is not empty (rows in {}); refusing to copy into it", occupied.join(", "));
    }

    let mut tx = match target {
        Database::Sqlite(pool) => Target::Sqlite(pool.begin().await?),
        Database::Postgres(pool) => Target::Postgres(pool.begin().await?),
    };
    let mut report = CopyReport::default();
    for table in &tables {
        let rows = copy_table(source, &mut tx, table).await.with_context(|| format!("copying `{}`", table.name))?;
        report.tables.push((table.name.clone(), rows));
    }
    match tx {
        Target::Sqlite(tx) => tx.commit().await?,
        Target::Postgres(tx) => tx.commit().await?,
    }
    Ok(report)
}

/// A table's columns, in order, each with its kind in that database.
type Columns = Vec<(String, Kind)>;

/// Tables, their columns and their foreign-key parents.
struct Schema {
    columns: BTreeMap<String, Columns>,
    parents: BTreeMap<String, BTreeSet<String>>,
}

async fn schema(db: &Database) -> anyhow::Result<Schema> {
    let mut columns: BTreeMap<String, Columns> = BTreeMap::new();
    let mut parents: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    match db {
        Database::Sqlite(pool) => {
            let rows = sqlx::query(
                "SELECT m.name, p.name, p.type FROM sqlite_master m JOIN pragma_table_info(m.name) p \
                 WHERE m.type = 'table' AND m.name NOT LIKE 'sqlite_%' ORDER BY m.name, p.cid",
            )
            .fetch_all(pool)
            .await?;
            for row in rows {
                let (table, column, declared): (String, String, String) = (row.get(0), row.get(1), row.get(2));
                if table == MIGRATIONS_TABLE {
                    continue;
                }
                let kind = Kind::sqlite(&declared)
                    .with_context(|| format!("column `{table}.{column}` has type `{declared}`, which is not copied"))?;
                columns.entry(table).or_default().push((column, kind));
            }
            let rows = sqlx::query(
                "SELECT m.name, p.\"table\" FROM sqlite_master m JOIN pragma_foreign_key_list(m.name) p \
                 WHERE m.type = 'table'",
            )
            .fetch_all(pool)
            .await?;
            for row in rows {
                parents.entry(row.get(0)).or_default().insert(row.get(1));
            }
        }
        Database::Postgres(pool) => {
            let rows = sqlx::query(
                "SELECT c.table_name::text, c.column_name::text, c.data_type::text FROM information_schema.columns c \
                 JOIN information_schema.tables t ON t.table_schema = c.table_schema AND t.table_name = c.table_name \
                 WHERE c.table_schema = current_schema() AND t.table_type = 'BASE TABLE' \
                 ORDER BY c.table_name, c.ordinal_position",
            )
            .fetch_all(pool)
            .await?;
            for row in rows {
                let (table, column, data_type): (String, String, String) = (row.get(0), row.get(1), row.get(2));
                if table == MIGRATIONS_TABLE {
                    continue;
                }
                let kind = Kind::postgres(&data_type).with_context(|| {
                    format!("column `{table}.{column}` has type `{data_type}`, which is not copied")
                })?;
                columns.entry(table).or_default().push((column, kind));
            }
            let rows = sqlx::query(
                "SELECT child.relname::text, parent.relname::text FROM pg_constraint c \
                 JOIN pg_class child ON child.oid = c.conrelid JOIN pg_class parent ON parent.oid = c.confrelid \
                 WHERE c.contype = 'f' AND child.relnamespace = current_schema()::regnamespace",
            )
            .fetch_all(pool)
            .await?;
            for row in rows {
                parents.entry(row.get(0)).or_default().insert(row.get(1));
            }
        }
    }
    Ok(Schema { columns, parents })
}

/// The tables, each after every table it references (alphabetical among
/// equals, so the order is stable).
fn copy_order(schema: &Schema) -> anyhow::Result<Vec<(String, Columns)>> {
    let mut done: BTreeSet<&str> = BTreeSet::new();
    let mut order = Vec::new();
    while order.len() < schema.columns.len() {
        let ready = schema.columns.iter().find(|(name, _)| {
            !done.contains(name.as_str())
                && schema.parents.get(*name).into_iter().flatten().all(|p| p == *name || done.contains(p.as_str()))
        });
        let Some((name, columns)) = ready else {
            bail!("the foreign keys between the tables form a cycle");
        };
        done.insert(name);
        order.push((name.clone(), columns.clone()));
    }
    Ok(order)
}

/// Table and column names come from the database's own catalogue, never from
/// input; quoting still keeps any name from being read as SQL.
fn quote(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

async fn has_rows(db: &Database, table: &str) -> anyhow::Result<bool> {
    let sql = format!("SELECT 1 FROM {} LIMIT 1", quote(table));
    Ok(match db {
        Database::Sqlite(pool) => sqlx::query(&sql).fetch_optional(pool).await?.is_some(),
        Database::Postgres(pool) => sqlx::query(&sql).fetch_optional(pool).await?.is_some(),
    })
}

enum Target {
    Sqlite(Transaction<'static, Sqlite>),
    Postgres(Transaction<'static, Postgres>),
}

impl Target {
    /// Inserts one row (values already in the target's kinds).
    async fn insert(&mut self, sql: &(String, String), columns: &[Column], row: Vec<Value>) -> anyhow::Result<()> {
        match self {
            Self::Sqlite(tx) => {
                let mut q = sqlx::query::<Sqlite>(&sql.0);
                for v in row {
                    q = match v {
                        Value::Null => q.bind(None::<i64>),
                        Value::Int(i) => q.bind(i),
                        Value::Bool(b) => q.bind(b),
                        Value::Bytes(b) => q.bind(b),
                        Value::Text(s) => q.bind(s),
                        Value::Float(f) => q.bind(f),
                    };
                }
                q.execute(&mut **tx).await?;
            }
            Self::Postgres(tx) => {
                // PostgreSQL checks each parameter's type, NULLs included:
                // bind exactly the column's.
                let mut q = sqlx::query::<Postgres>(&sql.1);
                for (v, c) in row.into_iter().zip(columns) {
                    q = match (c.write, v) {
                        (Kind::Int16, Value::Int(i)) => q.bind(i16::try_from(i).context(c.name.clone())?),
                        (Kind::Int16, _) => q.bind(None::<i16>),
                        (Kind::Int32, Value::Int(i)) => q.bind(i32::try_from(i).context(c.name.clone())?),
                        (Kind::Int32, _) => q.bind(None::<i32>),
                        (Kind::Int64, Value::Int(i)) => q.bind(i),
                        (Kind::Int64, _) => q.bind(None::<i64>),
                        (Kind::Bool, Value::Bool(b)) => q.bind(b),
                        (Kind::Bool, _) => q.bind(None::<bool>),
                        (Kind::Bytes, Value::Bytes(b)) => q.bind(b),
                        (Kind::Bytes, _) => q.bind(None::<Vec<u8>>),
                        (Kind::Text, Value::Text(s)) => q.bind(s),
                        (Kind::Text, _) => q.bind(None::<String>),
                        (Kind::Float, Value::Float(f)) => q.bind(f),
                        (Kind::Float, _) => q.bind(None::<f64>),
                    };
                }
                q.execute(&mut **tx).await?;
            }
        }
        Ok(())
    }
}

/// `v`, read as `c.read`, in the shape `c.write` needs: the same, or between
/// integers and booleans (SQLite stores booleans as integers). Anything else
/// is refused rather than guessed.
fn convert(v: Value, c: &Column) -> anyhow::Result<Value> {
    let int = |k: Kind| matches!(k, Kind::Int16 | Kind::Int32 | Kind::Int64);
    Ok(match v {
        Value::Null => Value::Null,
        Value::Int(i) if c.write == Kind::Bool => Value::Bool(i != 0),
        Value::Bool(b) if int(c.write) => Value::Int(i64::from(b)),
        v if c.read == c.write || (int(c.read) && int(c.write)) => v,
        _ => bail!("column `{}`: cannot carry {:?} values into a {:?} column", c.name, c.read, c.write),
    })
}

/// Streams `table` from the source into the target; returns the row count.
async fn copy_table(source: &Database, target: &mut Target, table: &Table) -> anyhow::Result<u64> {
    let names: Vec<String> = table.columns.iter().map(|c| quote(&c.name)).collect();
    let select = format!("SELECT {} FROM {}", names.join(", "), quote(&table.name));
    let insert = |placeholder: &dyn Fn(usize) -> String| {
        let marks: Vec<String> = (1..=names.len()).map(placeholder).collect();
        format!("INSERT INTO {} ({}) VALUES ({})", quote(&table.name), names.join(", "), marks.join(", "))
    };
    let sql = (insert(&|_| "?".to_string()), insert(&|i| format!("${i}")));
    let columns = &table.columns;
    let converted = |values: Vec<Value>| -> anyhow::Result<Vec<Value>> {
        values.into_iter().zip(columns).map(|(v, c)| convert(v, c)).collect()
    };
    let mut count = 0u64;
    match source {
        Database::Sqlite(pool) => {
            let mut rows = sqlx::query(&select).fetch(pool);
            while let Some(row) = rows.try_next().await? {
                target.insert(&sql, columns, converted(sqlite_values(&row, columns)?)?).await?;
                count += 1;
            }
        }
        Database::Postgres(pool) => {
            let mut rows = sqlx::query(&select).fetch(pool);
            while let Some(row) = rows.try_next().await? {
                target.insert(&sql, columns, converted(postgres_values(&row, columns)?)?).await?;
                count += 1;
            }
        }
    }
    Ok(count)
}

/// One source row, each value read as its source column's kind.
fn sqlite_values(row: &sqlx::sqlite::SqliteRow, columns: &[Column]) -> anyhow::Result<Vec<Value>> {
    let mut out = Vec::with_capacity(columns.len());
    for (i, Column { name, read, .. }) in columns.iter().enumerate() {
        let v = match read {
            Kind::Int16 | Kind::Int32 | Kind::Int64 => row.try_get::<Option<i64>, _>(i).map(|v| v.map(Value::Int)),
            Kind::Bool => row.try_get::<Option<bool>, _>(i).map(|v| v.map(Value::Bool)),
            Kind::Bytes => row.try_get::<Option<Vec<u8>>, _>(i).map(|v| v.map(Value::Bytes)),
            Kind::Text => row.try_get::<Option<String>, _>(i).map(|v| v.map(Value::Text)),
            Kind::Float => row.try_get::<Option<f64>, _>(i).map(|v| v.map(Value::Float)),
        };
        out.push(v.with_context(|| format!("column `{name}`"))?.unwrap_or(Value::Null));
    }
    Ok(out)
}

/// As [`sqlite_values`], from PostgreSQL (whose integers come in three widths).
fn postgres_values(row: &sqlx::postgres::PgRow, columns: &[Column]) -> anyhow::Result<Vec<Value>> {
    let mut out = Vec::with_capacity(columns.len());
    for (i, Column { name, read, .. }) in columns.iter().enumerate() {
        let v = match read {
            Kind::Int16 => row.try_get::<Option<i16>, _>(i).map(|v| v.map(|n| Value::Int(n.into()))),
            Kind::Int32 => row.try_get::<Option<i32>, _>(i).map(|v| v.map(|n| Value::Int(n.into()))),
            Kind::Int64 => row.try_get::<Option<i64>, _>(i).map(|v| v.map(Value::Int)),
            Kind::Bool => row.try_get::<Option<bool>, _>(i).map(|v| v.map(Value::Bool)),
            Kind::Bytes => row.try_get::<Option<Vec<u8>>, _>(i).map(|v| v.map(Value::Bytes)),
            Kind::Text => row.try_get::<Option<String>, _>(i).map(|v| v.map(Value::Text)),
            Kind::Float => row.try_get::<Option<f64>, _>(i).map(|v| v.map(Value::Float)),
        };
        out.push(v.with_context(|| format!("column `{name}`"))?.unwrap_or(Value::Null));
    }
    Ok(out)
}
