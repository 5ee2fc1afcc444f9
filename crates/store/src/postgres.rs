//! PostgreSQL, for several keyward nodes over one database (issue 13):
//! [`PgStore`] (the `Store` and `AlertStore` over a connection pool), the
//! schema, and versioned migrations that are safe when several nodes start
//! at once.
//!
//! Migrations are numbered by their place in the list. Each runs in its own
//! transaction under a transaction-scoped advisory lock, with the version in
//! `keyward_schema`: a node that starts while another migrates waits for the
//! lock, then finds the work done. A database from a newer binary is refused.

use postgres::{Client, NoTls};

use crate::error::StoreError;

mod alerts;
pub mod changes;
mod events;
pub mod import;
pub mod leader;
pub mod schema;
mod store;

pub use events::PgEventLog;
pub use store::{CHANNEL, PgStore};

/// The advisory lock every migration takes ("keyw" in ASCII).
const MIGRATION_LOCK: i64 = 0x6b65_7977;

/// Opens a connection to `url` (`postgres://user@host:port/db`).
pub fn connect(url: &str) -> Result<Client, StoreError> {
    Client::connect(url, NoTls).map_err(|source| StoreError::Postgres { context: "connecting", source })
}

/// Brings the schema to `migrations.len()`; returns how many this call applied.
pub fn migrate(client: &mut Client, migrations: &[&str]) -> Result<usize, StoreError> {
    let pg = |context: &'static str| move |source| StoreError::Postgres { context, source };
    let supported = migrations.len() as i64;
    let mut applied = 0;
    loop {
        let mut tx = client.transaction().map_err(pg("starting a migration"))?;
        tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK]).map_err(pg("taking the migration lock"))?;
        // Under the lock: two nodes creating it at once would race in the catalog
        // (found by the test below: "relation already exists").
        tx.batch_execute("CREATE TABLE IF NOT EXISTS keyward_schema (version INTEGER NOT NULL)")
            .map_err(pg("creating keyward_schema"))?;
        let current: i64 = tx
            .query_opt("SELECT version::BIGINT FROM keyward_schema", &[])
            .map_err(pg("reading the schema version"))?
            .map_or(0, |r| r.get(0));
        if current > supported {
            return Err(StoreError::TooNew { found: current, supported });
        }
        if current == supported {
            tx.commit().map_err(pg("ending the migration check"))?;
            return Ok(applied);
        }
        tx.batch_execute(migrations[current as usize]).map_err(pg("applying a migration"))?;
        let next = (current + 1) as i32;
        if current == 0 {
            tx.execute("INSERT INTO keyward_schema (version) VALUES ($1)", &[&next])
        } else {
            tx.execute("UPDATE keyward_schema SET version = $1", &[&next])
        }
        .map_err(pg("recording the schema version"))?;
        tx.commit().map_err(pg("committing a migration"))?;
        tracing::info!(version = next, "Applied PostgreSQL migration.");
        applied += 1;
    }
}

#[cfg(test)]
mod tests;
