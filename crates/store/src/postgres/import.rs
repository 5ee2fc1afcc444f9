//! Moving up: an embedded data dir's databases copied into an empty
//! PostgreSQL database (`keyward migrate --to postgres://…`). Rows keep
//! their ids and sequence numbers, so the audit chain verifies as before,
//! sink cursors and alert evidence still point at the same events, and the
//! sequences go on after the highest copied number.
//!
//! Every column of the PostgreSQL table is read from the SQLite table of
//! the same name (the two schemas are kept column for column alike); values
//! are converted by the PostgreSQL column's type. The store's tables are
//! copied in one transaction: all or nothing.

use postgres::binary_copy::BinaryCopyInWriter;
use postgres::types::{ToSql, Type};
use rusqlite::types::Value as Lite;

use crate::{Result, StoreError};

/// The store's tables, parents before children.
pub const STORE_TABLES: &[&str] = &[
    "workspaces",
    "keyspaces",
    "keys",
    "root_keys",
    "audit",
    "settings",
    "reminders",
    "incidents",
    "alerts",
    "alert_rules",
    "alert_learned",
    "webhooks",
    "webhook_messages",
    "webhook_deliveries",
    "webhook_attempts",
    "alert_changes",
    "sealed_keys",
];

/// Rows per progress report.
const STEP: u64 = 10_000;

/// The columns of a PostgreSQL table, in order, with their types.
fn columns(tx: &mut postgres::Transaction<'_>, table: &str) -> Result<Vec<(String, Type)>> {
    let rows = tx.query(
        "SELECT a.attname, a.atttypid FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid
         WHERE c.relname = $1 AND a.attnum > 0 AND NOT a.attisdropped ORDER BY a.attnum",
        &[&table],
    )?;
    rows.iter()
        .map(|r| {
            let name: String = r.try_get(0)?;
            let oid: u32 = r.try_get(1)?;
            let ty = Type::from_oid(oid).ok_or_else(|| StoreError::Corrupt {
                table: "pg_attribute",
                detail: format!("{table}.{name} has a type keyward does not copy"),
            })?;
            Ok((name, ty))
        })
        .collect()
}

/// One SQLite value as the PostgreSQL column's type.
fn convert(v: Lite, ty: &Type, table: &str, col: &str) -> Result<Box<dyn ToSql + Sync>> {
    let bad = |what: &str| StoreError::Corrupt { table: "import", detail: format!("{table}.{col}: {what}") };
    Ok(match (v, ty) {
        (Lite::Null, &Type::INT8) => Box::new(None::<i64>),
        (Lite::Null, &Type::BOOL) => Box::new(None::<bool>),
        (Lite::Null, &Type::BYTEA) => Box::new(None::<Vec<u8>>),
        (Lite::Null, _) => Box::new(None::<String>),
        (Lite::Integer(i), &Type::INT8) => Box::new(i),
        (Lite::Integer(i), &Type::BOOL) => Box::new(i != 0),
        (Lite::Integer(i), &Type::TEXT) => Box::new(i.to_string()),
        (Lite::Real(f), &Type::INT8) => Box::new(f as i64),
        (Lite::Text(t), &Type::TEXT) => Box::new(t),
        (Lite::Text(t), &Type::INT8) => Box::new(t.parse::<i64>().map_err(|_| bad("text where a number belongs"))?),
        (Lite::Blob(b), &Type::BYTEA) => Box::new(b),
        (Lite::Text(t), &Type::BYTEA) => Box::new(t.into_bytes()),
        (v, ty) => return Err(bad(&format!("{v:?} cannot become {ty}"))),
    })
}

/// Copies `table` from SQLite with binary COPY; returns the rows copied.
pub(super) fn copy_table(
    src: &rusqlite::Connection,
    tx: &mut postgres::Transaction<'_>,
    table: &str,
    progress: &mut dyn FnMut(&str, u64, u64),
) -> Result<u64> {
    let cols = columns(tx, table)?;
    let names: Vec<&str> = cols.iter().map(|(n, _)| n.as_str()).collect();
    let types: Vec<Type> = cols.iter().map(|(_, t)| t.clone()).collect();
    let total: i64 = src.query_row(&format!("SELECT COUNT(*) FROM {table}"), [], |r| r.get(0))?;
    let total = total as u64;
    progress(table, 0, total);
    let sink = tx.copy_in(&format!("COPY {table} ({}) FROM STDIN BINARY", names.join(", ")))?;
    let mut w = BinaryCopyInWriter::new(sink, &types);
    let mut st = src.prepare(&format!("SELECT {} FROM {table}", names.join(", ")))?;
    let mut rows = st.query([])?;
    let mut done = 0u64;
    while let Some(r) = rows.next()? {
        let mut values = Vec::with_capacity(cols.len());
        for (i, (name, ty)) in cols.iter().enumerate() {
            values.push(convert(r.get::<_, Lite>(i)?, ty, table, name)?);
        }
        let refs: Vec<&(dyn ToSql + Sync)> = values.iter().map(|v| v.as_ref()).collect();
        w.write(&refs)?;
        done += 1;
        if done.is_multiple_of(STEP) {
            progress(table, done, total);
        }
    }
    w.finish()?;
    progress(table, done, total);
    Ok(done)
}

/// Copies every table of the embedded store into an empty database, in one
/// transaction; returns (table, rows) for each.
pub fn copy_store(
    src: &rusqlite::Connection,
    dst: &mut postgres::Client,
    progress: &mut dyn FnMut(&str, u64, u64),
) -> Result<Vec<(&'static str, u64)>> {
    let mut tx = dst.transaction()?;
    let present: i64 = tx.query_one("SELECT COUNT(*) FROM workspaces", &[])?.try_get(0)?;
    if present > 0 {
        return Err(StoreError::Conflict(format!(
            "the database already holds {present} workspace(s); migrate into an empty database"
        )));
    }
    let mut out = Vec::new();
    for table in STORE_TABLES {
        out.push((*table, copy_table(src, &mut tx, table, progress)?));
    }
    for (table, col) in [("audit", "seq"), ("alert_changes", "seq")] {
        tx.batch_execute(&format!(
            "SELECT setval(pg_get_serial_sequence('{table}', '{col}'), COALESCE((SELECT MAX({col}) FROM {table}), 0) + 1, false)"
        ))?;
    }
    tx.commit()?;
    Ok(out)
}

/// Row counts of `tables` in the embedded database and in PostgreSQL, for the check after a copy.
pub fn counts(
    src: &rusqlite::Connection,
    dst: &mut postgres::Client,
    tables: &[&'static str],
) -> Result<Vec<(&'static str, u64, u64)>> {
    tables
        .iter()
        .map(|t| {
            let a: i64 = src.query_row(&format!("SELECT COUNT(*) FROM {t}"), [], |r| r.get(0))?;
            let b: i64 = dst.query_one(&format!("SELECT COUNT(*) FROM {t}"), &[])?.try_get(0)?;
            Ok((*t, a as u64, b as u64))
        })
        .collect()
}
