//! The usage-event log: its own SQLite file (`events.db`), apart from the
//! management store, so bulk appends never queue behind a management write
//! and retention deletes never touch keys. One writer connection appends in
//! batches (one transaction each); readers use their own connections, which
//! WAL lets run beside the writer. Rows are ordered by `id`, which sinks use
//! as their durable cursor: the log itself is their disk spool.

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use keyward_core::Outcome;
use keyward_core::event::{EventKind, UsageEvent, UsageReport};
use rusqlite::{Connection, OptionalExtension, Row, params};

use crate::{Result, StoreError};

const SCHEMA: &[&str] = &[r#"
    CREATE TABLE events (
        id           INTEGER PRIMARY KEY,
        ts           INTEGER NOT NULL,
        kind         TEXT NOT NULL,
        request_id   TEXT NOT NULL,
        workspace_id TEXT NOT NULL,
        keyspace_id  TEXT,
        key_id       TEXT,
        key_hint     TEXT,
        owner_id     TEXT,
        fingerprint  TEXT,
        ip           TEXT,
        user_agent   TEXT,
        method       TEXT,
        path         TEXT,
        code         TEXT NOT NULL,
        status       INTEGER,
        error        TEXT,
        bytes_in     INTEGER,
        bytes_out    INTEGER,
        latency_us   INTEGER
    );
    CREATE INDEX events_key ON events(key_id, id) WHERE key_id IS NOT NULL;
    CREATE INDEX events_ts ON events(ts);
    CREATE TABLE sink_cursors (
        name        TEXT PRIMARY KEY,
        last_id     INTEGER NOT NULL,
        updated_at  INTEGER NOT NULL
    );
"#];

const COLS: &str = "id, ts, kind, request_id, workspace_id, keyspace_id, key_id, key_hint, owner_id, fingerprint,
    ip, user_agent, method, path, code, status, error, bytes_in, bytes_out, latency_us";

/// Which events to read. Filters are ANDed; `workspace_id` always applies.
#[derive(Debug, Clone, Default)]
pub struct EventFilter {
    pub workspace_id: String,
    pub key_id: Option<String>,
    pub owner_id: Option<String>,
    pub ip: Option<String>,
    pub code: Option<Outcome>,
    /// 2 for 2xx, 4 for 4xx, …
    pub status_class: Option<u16>,
    pub since: Option<i64>,
    pub until: Option<i64>,
    /// Only ids greater than this (ascending pages).
    pub after_id: Option<i64>,
    /// Only ids smaller than this (descending pages).
    pub before_id: Option<i64>,
    pub ascending: bool,
    pub limit: u32,
}

/// The event log on SQLite.
pub struct SqliteEventLog {
    path: PathBuf,
    writer: Mutex<Connection>,
    readers: Mutex<Vec<Connection>>,
}

fn open_conn(path: &Path) -> Result<Connection> {
    let conn =
        Connection::open(path).map_err(|source| StoreError::Open { path: path.display().to_string(), source })?;
    conn.busy_timeout(std::time::Duration::from_secs(5))?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    // Each batch is one transaction ending in one fsync: the durability bound
    // is the batch interval, and the cost is paid once per batch, not per event.
    conn.pragma_update(None, "synchronous", "FULL")?;
    Ok(conn)
}

fn event_from_row(r: &Row<'_>) -> rusqlite::Result<UsageEvent> {
    let code: String = r.get(14)?;
    let outcome = serde_json::from_value(serde_json::Value::String(code)).unwrap_or(Outcome::NotFound);
    let kind: String = r.get(2)?;
    Ok(UsageEvent {
        id: r.get(0)?,
        ts: r.get(1)?,
        kind: EventKind::parse(&kind),
        request_id: r.get(3)?,
        workspace_id: r.get(4)?,
        keyspace_id: r.get(5)?,
        key_id: r.get(6)?,
        key_hint: r.get(7)?,
        owner_id: r.get(8)?,
        fingerprint: r.get(9)?,
        source_ip: r.get(10)?,
        user_agent: r.get(11)?,
        method: r.get(12)?,
        path: r.get(13)?,
        outcome,
        http_status: r.get::<_, Option<i64>>(15)?.map(|s| s as u16),
        error: r.get(16)?,
        bytes_in: r.get::<_, Option<i64>>(17)?.map(|b| b as u64),
        bytes_out: r.get::<_, Option<i64>>(18)?.map(|b| b as u64),
        latency_us: r.get::<_, Option<i64>>(19)?.map(|b| b as u64),
    })
}

impl SqliteEventLog {
    pub fn open(path: &Path) -> Result<Self> {
        let mut conn = open_conn(path)?;
        let current: i64 = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
        let supported = SCHEMA.len() as i64;
        if current > supported {
            return Err(StoreError::TooNew { found: current, supported });
        }
        for (i, sql) in SCHEMA.iter().enumerate().skip(current as usize) {
            let tx = conn.transaction()?;
            tx.execute_batch(sql)?;
            tx.pragma_update(None, "user_version", (i + 1) as i64)?;
            tx.commit()?;
        }
        Ok(SqliteEventLog { path: path.to_owned(), writer: Mutex::new(conn), readers: Mutex::default() })
    }

    fn read<T>(&self, f: impl FnOnce(&Connection) -> Result<T>) -> Result<T> {
        let conn = self.readers.lock().unwrap_or_else(|p| p.into_inner()).pop();
        let conn = match conn {
            Some(c) => c,
            None => open_conn(&self.path)?,
        };
        let out = f(&conn);
        let mut pool = self.readers.lock().unwrap_or_else(|p| p.into_inner());
        if pool.len() < 8 {
            pool.push(conn);
        }
        out
    }

    /// Appends a batch in one transaction and sets each event's `id`.
    pub fn append(&self, events: &mut [UsageEvent]) -> Result<()> {
        if events.is_empty() {
            return Ok(());
        }
        let mut conn = self.writer.lock().unwrap_or_else(|p| p.into_inner());
        let tx = conn.transaction()?;
        {
            let mut st = tx.prepare_cached(&format!(
                "INSERT INTO events ({COLS}) VALUES (NULL, ?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13,
                 ?14, ?15, ?16, ?17, ?18, ?19)"
            ))?;
            for e in events.iter_mut() {
                st.execute(params![
                    e.ts,
                    e.kind.as_str(),
                    e.request_id,
                    e.workspace_id,
                    e.keyspace_id,
                    e.key_id,
                    e.key_hint,
                    e.owner_id,
                    e.fingerprint,
                    e.source_ip,
                    e.user_agent,
                    e.method,
                    e.path,
                    e.outcome.as_str(),
                    e.http_status.map(i64::from),
                    e.error,
                    e.bytes_in.map(|b| b as i64),
                    e.bytes_out.map(|b| b as i64),
                    e.latency_us.map(|b| b as i64),
                ])?;
                e.id = tx.last_insert_rowid();
            }
        }
        tx.commit()?;
        Ok(())
    }

    /// Adds reported status, bytes and latency to written events, by id.
    pub fn apply_usage(&self, updates: &[(i64, UsageReport)]) -> Result<()> {
        if updates.is_empty() {
            return Ok(());
        }
        let mut conn = self.writer.lock().unwrap_or_else(|p| p.into_inner());
        let tx = conn.transaction()?;
        {
            let mut st = tx.prepare_cached(
                "UPDATE events SET status = COALESCE(?2, status), bytes_in = COALESCE(?3, bytes_in),
                        bytes_out = COALESCE(?4, bytes_out), latency_us = COALESCE(?5, latency_us)
                 WHERE id = ?1",
            )?;
            for (id, r) in updates {
                st.execute(params![
                    id,
                    r.http_status.map(i64::from),
                    r.bytes_in.map(|b| b as i64),
                    r.bytes_out.map(|b| b as i64),
                    r.latency_us.map(|b| b as i64)
                ])?;
            }
        }
        tx.commit()?;
        Ok(())
    }

    /// Events of one workspace, filtered, one page.
    pub fn query(&self, f: &EventFilter) -> Result<Vec<UsageEvent>> {
        let order = if f.ascending { "ASC" } else { "DESC" };
        let sql = format!(
            "SELECT {COLS} FROM events
             WHERE workspace_id = ?1
               AND (?2 IS NULL OR key_id = ?2)
               AND (?3 IS NULL OR owner_id = ?3)
               AND (?4 IS NULL OR ip = ?4)
               AND (?5 IS NULL OR code = ?5)
               AND (?6 IS NULL OR status / 100 = ?6)
               AND (?7 IS NULL OR ts >= ?7)
               AND (?8 IS NULL OR ts < ?8)
               AND (?9 IS NULL OR id > ?9)
               AND (?10 IS NULL OR id < ?10)
             ORDER BY id {order} LIMIT ?11"
        );
        self.read(|c| {
            let mut st = c.prepare_cached(&sql)?;
            let rows = st.query_map(
                params![
                    f.workspace_id,
                    f.key_id,
                    f.owner_id,
                    f.ip,
                    f.code.map(|c| c.as_str()),
                    f.status_class,
                    f.since,
                    f.until,
                    f.after_id,
                    f.before_id,
                    f.limit
                ],
                event_from_row,
            )?;
            Ok(rows.collect::<rusqlite::Result<_>>()?)
        })
    }

    /// Events of every workspace after `after_id`, oldest first (for sinks).
    pub fn after(&self, after_id: i64, limit: u32) -> Result<Vec<UsageEvent>> {
        self.read(|c| {
            let mut st = c.prepare_cached(&format!("SELECT {COLS} FROM events WHERE id > ?1 ORDER BY id LIMIT ?2"))?;
            let rows = st.query_map(params![after_id, limit], event_from_row)?;
            Ok(rows.collect::<rusqlite::Result<_>>()?)
        })
    }

    /// The id of the newest event (0 for an empty log).
    pub fn max_id(&self) -> Result<i64> {
        self.read(|c| Ok(c.query_row("SELECT COALESCE(MAX(id), 0) FROM events", [], |r| r.get(0))?))
    }

    pub fn count(&self) -> Result<u64> {
        self.read(|c| Ok(c.query_row("SELECT COUNT(*) FROM events", [], |r| r.get::<_, i64>(0))? as u64))
    }

    /// Deletes up to `chunk` events older than `before_ts`; returns how many.
    /// Called repeatedly, so the writer lock is held only briefly each time.
    pub fn purge_chunk(&self, before_ts: i64, chunk: u32) -> Result<usize> {
        let conn = self.writer.lock().unwrap_or_else(|p| p.into_inner());
        Ok(conn.execute(
            "DELETE FROM events WHERE id IN (SELECT id FROM events WHERE ts < ?1 ORDER BY ts LIMIT ?2)",
            params![before_ts, chunk],
        )?)
    }

    pub fn cursor(&self, sink: &str) -> Result<Option<i64>> {
        self.read(|c| {
            Ok(c.query_row("SELECT last_id FROM sink_cursors WHERE name = ?1", [sink], |r| r.get(0)).optional()?)
        })
    }

    pub fn set_cursor(&self, sink: &str, last_id: i64, now: i64) -> Result<()> {
        let conn = self.writer.lock().unwrap_or_else(|p| p.into_inner());
        conn.execute(
            "INSERT INTO sink_cursors (name, last_id, updated_at) VALUES (?1, ?2, ?3)
             ON CONFLICT(name) DO UPDATE SET last_id = excluded.last_id, updated_at = excluded.updated_at",
            params![sink, last_id, now],
        )?;
        Ok(())
    }
}

#[cfg(test)]
mod tests;
