//! The usage-event log: its own SQLite file (`events.db`), apart from the
//! management store, so bulk appends never queue behind a management write
//! and retention deletes never touch keys. One writer connection appends in
//! batches (one transaction each); readers use their own connections, which
//! WAL lets run beside the writer. Rows are ordered by `id`, which sinks use
//! as their durable cursor: the log itself is their disk spool.

use parking_lot::Mutex;
use std::path::{Path, PathBuf};

use keyward_core::Outcome;
use keyward_core::event::{EventKind, UsageEvent, UsageReport};
use keyward_core::rollup::{Agg, Granularity, Scope};
use rusqlite::{Connection, OptionalExtension, Row, params};

use crate::{Result, StoreError};

mod runs;
use runs::{RunKind, Runs};

const SCHEMA: &[&str] = &[
    r#"
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
        latency_us   INTEGER,
        key_no       INTEGER
    );
    CREATE INDEX events_key ON events(key_no, id) WHERE key_no IS NOT NULL;
    CREATE TABLE sink_cursors (
        name        TEXT PRIMARY KEY,
        last_id     INTEGER NOT NULL,
        updated_at  INTEGER NOT NULL
    );
"#,
    // One index per filter of `query` (but the owner, served by the key
    // index of each of the owner's keys; outcome codes and status classes
    // are indexed only where rare: refusals and non-2xx, while `VALID` and
    // 2xx pages fill densely from the workspace index), each on a 64-bit number standing
    // for (workspace, value) and ending in `id`: a page is a seek into one
    // index and a walk in id order (issue 8, defect 8: pages used to scan
    // the log from its newest row). Integer keys keep the inserts cheaper
    // (see BENCHMARKS.md); the text columns are still compared, so a
    // collision only costs a row check. Existing rows are numbered by `kw_no`.
    r#"
    ALTER TABLE events ADD COLUMN ws_no INTEGER;
    ALTER TABLE events ADD COLUMN ip_no INTEGER;
    ALTER TABLE events ADD COLUMN code_no INTEGER;
    ALTER TABLE events ADD COLUMN status_no INTEGER;
    UPDATE events SET
        ws_no = kw_ws(workspace_id),
        ip_no = kw_no(workspace_id, ip),
        code_no = kw_no(workspace_id, code),
        status_no = kw_no(workspace_id, CAST(status / 100 AS TEXT));
    CREATE INDEX events_ws ON events(ws_no, id);
    CREATE INDEX events_ip ON events(ip_no, id) WHERE ip_no IS NOT NULL;
    CREATE INDEX events_code ON events(code_no, id) WHERE code != 'VALID';
    CREATE INDEX events_status ON events(status_no, id) WHERE status_no IS NOT NULL AND (status < 200 OR status >= 300);
"#,
    // 3: IP enrichment (country, autonomous system), when configured.
    r#"
    ALTER TABLE events ADD COLUMN country TEXT;
    ALTER TABLE events ADD COLUMN asn INTEGER;
    ALTER TABLE events ADD COLUMN as_org TEXT;
"#,
    // 4: rollups (issue 14): one row per scope, granularity and bucket, the
    // aggregate as JSON (`core::rollup::Agg`); and how far events are folded in.
    r#"
    CREATE TABLE rollups (
        workspace_id TEXT NOT NULL,
        scope        TEXT NOT NULL,
        target       TEXT NOT NULL,
        gran         TEXT NOT NULL,
        bucket       INTEGER NOT NULL,
        requests     INTEGER NOT NULL,
        body         TEXT NOT NULL,
        PRIMARY KEY (workspace_id, scope, target, gran, bucket)
    ) WITHOUT ROWID;
    CREATE INDEX rollups_age ON rollups(gran, bucket);
    CREATE TABLE rollup_state (
        name   TEXT PRIMARY KEY,
        value  INTEGER NOT NULL
    );
"#,
    // 5: top lists (issue 14) summed in SQL: denials and bytes beside
    // requests, and a covering index that reads one scope of one workspace by
    // time without a lookup per row.
    r#"
    ALTER TABLE rollups ADD COLUMN denied INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE rollups ADD COLUMN bytes INTEGER NOT NULL DEFAULT 0;
    CREATE INDEX rollups_top ON rollups(workspace_id, scope, gran, bucket, target, requests, denied, bytes);
"#,
    // 6: the key and address indexes become runs, one row per key and per
    // address per batch (issue 11; `runs`). `open` fills them for the rows
    // already here (`runs::fill`) in the same transaction.
    r#"
    DROP INDEX events_key;
    DROP INDEX events_ip;
"#,
];

/// The migration (its index in `SCHEMA`) after which `runs::fill` indexes the existing rows.
const RUNS_MIGRATION: usize = 5;

/// How far out of time order events may be written (producers enqueue
/// concurrently); time-bounded queries look this much further.
const TS_SLACK_MS: i64 = 60_000;

const COLS: &str = "id, ts, kind, request_id, workspace_id, keyspace_id, key_id, key_hint, owner_id, fingerprint,
    ip, user_agent, method, path, code, status, error, bytes_in, bytes_out, latency_us, country, asn, as_org";

/// The indexed stand-in for a key id: 64 bits of FNV-1a. An integer index
/// is far cheaper to insert into than one over text; queries match the
/// number and then the id itself, so a collision only costs a row check.
pub fn key_no(key_id: &str) -> i64 {
    keyward_core::hash::fnv1a(&[key_id.as_bytes()]) as i64
}

/// The indexed stand-in for a value of one workspace (owner, address,
/// outcome code, status class; `None` for the workspace itself): FNV-1a over
/// the workspace id, a 0 byte, and the value. `None` when the value is.
pub fn scoped_no(workspace_id: &str, value: Option<&str>) -> i64 {
    let h = match value {
        Some(v) => keyward_core::hash::fnv1a(&[workspace_id.as_bytes(), v.as_bytes()]),
        None => keyward_core::hash::fnv1a(&[workspace_id.as_bytes()]),
    };
    h as i64
}

fn status_class(status: u16) -> String {
    (status / 100).to_string()
}

/// Registers `kw_ws(workspace)` and `kw_no(workspace, value)` (NULL for a
/// NULL value), the SQL twins of [`scoped_no`], for the migration that
/// numbers existing rows.
fn register_functions(conn: &Connection) -> Result<()> {
    use rusqlite::functions::FunctionFlags;
    let flags = FunctionFlags::SQLITE_UTF8 | FunctionFlags::SQLITE_DETERMINISTIC;
    conn.create_scalar_function("kw_ws", 1, flags, |ctx| Ok(scoped_no(&ctx.get::<String>(0)?, None)))?;
    conn.create_scalar_function("kw_no", 2, flags, |ctx| {
        let ws: String = ctx.get(0)?;
        let value: Option<String> = ctx.get(1)?;
        Ok(value.map(|v| scoped_no(&ws, Some(&v))))
    })?;
    Ok(())
}

/// One source address of a key's usage review.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IpUse {
    pub ip: String,
    pub count: u64,
    pub first_seen: i64,
    pub last_seen: i64,
}

/// One endpoint of a key's usage review.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EndpointUse {
    pub method: String,
    pub path: String,
    pub count: u64,
}

/// How a key was used in a window (see [`SqliteEventLog::review`]).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct KeyUsageReview {
    pub total: u64,
    pub ips: Vec<IpUse>,
    pub endpoints: Vec<EndpointUse>,
    pub outcomes: Vec<(String, u64)>,
}

/// Which events to read. Filters are ANDed; `workspace_id` always applies.
#[derive(Debug, Clone, Default)]
pub struct EventFilter {
    pub workspace_id: String,
    pub key_id: Option<String>,
    pub owner_id: Option<String>,
    pub ip: Option<String>,
    /// Also matches this value in the ip column (a pseudonym of `ip`).
    pub ip_alt: Option<String>,
    pub code: Option<Outcome>,
    /// 2 for 2xx, 4 for 4xx, …
    pub status_class: Option<u16>,
    pub since: Option<i64>,
    pub until: Option<i64>,
    /// The owner's keys, when `owner_id` is given: the owner's events are
    /// read through the key index of each (see `SqliteEventLog::query`).
    pub owner_keys: Vec<String>,
    /// Only ids greater than this (ascending pages).
    pub after_id: Option<i64>,
    /// Only ids smaller than this (descending pages).
    pub before_id: Option<i64>,
    pub ascending: bool,
    pub limit: u32,
}

/// Names one rollup bucket.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct RollupKey {
    pub workspace_id: String,
    pub scope: Scope,
    /// The key or keyspace id; the workspace id for a workspace.
    pub target: String,
    pub gran: Granularity,
    /// The bucket's start, ms.
    pub bucket: i64,
}

/// What a top list is ordered by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TopBy {
    Requests,
    Denials,
    Bytes,
}

impl TopBy {
    pub fn parse(s: &str) -> Option<TopBy> {
        [TopBy::Requests, TopBy::Denials, TopBy::Bytes].into_iter().find(|b| b.as_str() == s)
    }
    pub fn as_str(self) -> &'static str {
        match self {
            TopBy::Requests => "requests",
            TopBy::Denials => "denials",
            TopBy::Bytes => "bytes",
        }
    }
    /// The rollups column summed (a constant, never input).
    pub(crate) fn column(self) -> &'static str {
        match self {
            TopBy::Requests => "requests",
            TopBy::Denials => "denied",
            TopBy::Bytes => "bytes",
        }
    }
}

/// One entry of a top list: a target's sums over the range.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopRow {
    pub target: String,
    pub requests: u64,
    pub denied: u64,
    pub bytes: u64,
}

/// The `rollup_top` query of both logs (`?`/`$n` placeholders differ):
/// sums of one scope's buckets by target, largest first, zero sums left out
/// (cast: PostgreSQL's SUM of BIGINT is NUMERIC).
pub(crate) fn top_sql(by: TopBy, p: [&str; 6]) -> String {
    let col = by.column();
    format!(
        "SELECT target, CAST(SUM(requests) AS BIGINT), CAST(SUM(denied) AS BIGINT), CAST(SUM(bytes) AS BIGINT) FROM rollups
         WHERE workspace_id = {} AND scope = {} AND gran = {} AND bucket >= {} AND bucket < {}
         GROUP BY target HAVING SUM({col}) > 0 ORDER BY SUM({col}) DESC, target LIMIT {}",
        p[0], p[1], p[2], p[3], p[4], p[5]
    )
}

/// The usage-event log as the pipeline, the sinks and the service use it:
/// [`SqliteEventLog`] embedded, and (issue 13) one on PostgreSQL. Calls block.
pub trait EventLog: Send + Sync + 'static {
    /// Appends a batch in one transaction and sets each event's `id`.
    fn append(&self, events: &mut [UsageEvent]) -> Result<()>;
    /// Adds reported status, bytes and latency to written events, by id;
    /// returns each event's key id (`None` for an unknown id).
    fn apply_usage(&self, updates: &[(i64, UsageReport)]) -> Result<Vec<Option<String>>>;
    /// One page of a workspace's events, filtered.
    fn query(&self, f: &EventFilter) -> Result<Vec<UsageEvent>>;
    /// Events of every workspace after `after_id`, oldest first (for sinks).
    fn after(&self, after_id: i64, limit: u32) -> Result<Vec<UsageEvent>>;
    /// [`EventLog::after`] for the roller: id, time, workspace, keyspace,
    /// key, owner, address, outcome, status, bytes and latency are read; the
    /// other fields may be left empty (a log may read them all).
    fn after_for_rollups(&self, after_id: i64, limit: u32) -> Result<Vec<UsageEvent>> {
        self.after(after_id, limit)
    }
    /// Events of one workspace by id, in id order.
    fn by_ids(&self, workspace_id: &str, ids: &[i64]) -> Result<Vec<UsageEvent>>;
    /// The id of the newest event (0 for an empty log).
    fn max_id(&self) -> Result<i64>;
    /// How one key was used in `[since, until)`.
    fn review(&self, workspace_id: &str, key_id: &str, since: i64, until: i64, top: u32) -> Result<KeyUsageReview>;
    fn count(&self) -> Result<u64>;
    /// Deletes events older than `before_ts` among the oldest `chunk` ids.
    fn purge_chunk(&self, before_ts: i64, chunk: u32) -> Result<usize>;
    /// A sink's position in the log.
    fn cursor(&self, sink: &str) -> Result<Option<i64>>;
    fn set_cursor(&self, sink: &str, last_id: i64, now: i64) -> Result<()>;
    /// The stored values of these rollup buckets (`None` for a new one).
    fn get_rollups(&self, keys: &[RollupKey]) -> Result<Vec<Option<Agg>>>;
    /// Replaces these buckets with their full values, and records for each
    /// granularity given the last event id folded into it, in one transaction.
    fn put_rollups(&self, rows: &[(RollupKey, Agg)], through: &[(Granularity, i64)]) -> Result<()>;
    /// The last event id folded into the rollups of `gran` (0: none).
    fn rollup_watermark(&self, gran: Granularity) -> Result<i64>;
    /// One scope's buckets of `gran` starting in `[since, until)`, oldest first.
    fn rollup_series(
        &self,
        workspace_id: &str,
        scope: Scope,
        target: &str,
        gran: Granularity,
        since: i64,
        until: i64,
    ) -> Result<Vec<(i64, Agg)>>;
    /// Deletes buckets of `gran` that start before `before`; returns how many.
    fn purge_rollups(&self, gran: Granularity, before: i64) -> Result<usize>;
    /// The `limit` targets of `scope` with the largest sums of `by` over the
    /// buckets of `gran` starting in `[since, until)`, summed in the database.
    #[allow(clippy::too_many_arguments)]
    fn rollup_top(
        &self,
        workspace_id: &str,
        scope: Scope,
        gran: Granularity,
        since: i64,
        until: i64,
        by: TopBy,
        limit: u32,
    ) -> Result<Vec<TopRow>>;
}

pub(crate) fn rollup_body(a: &Agg) -> String {
    serde_json::to_string(a).unwrap_or_else(|_| "{}".into())
}

pub(crate) fn rollup_parse(text: &str) -> Result<Agg> {
    serde_json::from_str(text).map_err(|e| StoreError::Corrupt { table: "rollups", detail: e.to_string() })
}

impl EventLog for SqliteEventLog {
    fn get_rollups(&self, keys: &[RollupKey]) -> Result<Vec<Option<Agg>>> {
        let conn = self.writer.lock();
        let mut st = conn.prepare_cached(
            "SELECT body FROM rollups WHERE workspace_id = ?1 AND scope = ?2 AND target = ?3 AND gran = ?4 AND bucket = ?5",
        )?;
        keys.iter()
            .map(|k| {
                let text: Option<String> = st
                    .query_row(params![k.workspace_id, k.scope.as_str(), k.target, k.gran.as_str(), k.bucket], |r| {
                        r.get(0)
                    })
                    .optional()?;
                text.map(|t| rollup_parse(&t)).transpose()
            })
            .collect()
    }
    fn put_rollups(&self, rows: &[(RollupKey, Agg)], through: &[(Granularity, i64)]) -> Result<()> {
        let mut conn = self.writer.lock();
        let tx = conn.transaction()?;
        {
            let mut st = tx.prepare_cached(
                "INSERT OR REPLACE INTO rollups (workspace_id, scope, target, gran, bucket, requests, denied, bytes, body)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
            )?;
            for (k, a) in rows {
                st.execute(params![
                    k.workspace_id,
                    k.scope.as_str(),
                    k.target,
                    k.gran.as_str(),
                    k.bucket,
                    a.requests as i64,
                    a.denied() as i64,
                    a.bytes_column(),
                    rollup_body(a)
                ])?;
            }
            for (gran, id) in through {
                tx.execute(
                    "INSERT INTO rollup_state (name, value) VALUES (?1, ?2)
                     ON CONFLICT(name) DO UPDATE SET value = MAX(value, excluded.value)",
                    params![format!("through_{}", gran.as_str()), id],
                )?;
            }
        }
        tx.commit()?;
        Ok(())
    }
    fn rollup_watermark(&self, gran: Granularity) -> Result<i64> {
        self.read(|c| {
            Ok(c.query_row(
                "SELECT value FROM rollup_state WHERE name = ?1",
                [format!("through_{}", gran.as_str())],
                |r| r.get(0),
            )
            .optional()?
            .unwrap_or(0))
        })
    }
    fn rollup_series(
        &self,
        workspace_id: &str,
        scope: Scope,
        target: &str,
        gran: Granularity,
        since: i64,
        until: i64,
    ) -> Result<Vec<(i64, Agg)>> {
        self.read(|c| {
            let mut st = c.prepare_cached(
                "SELECT bucket, body FROM rollups
                 WHERE workspace_id = ?1 AND scope = ?2 AND target = ?3 AND gran = ?4 AND bucket >= ?5 AND bucket < ?6
                 ORDER BY bucket",
            )?;
            let rows = st
                .query_map(params![workspace_id, scope.as_str(), target, gran.as_str(), since, until], |r| {
                    Ok((r.get::<_, i64>(0)?, r.get::<_, String>(1)?))
                })?;
            rows.map(|r| {
                let (b, t) = r?;
                Ok((b, rollup_parse(&t)?))
            })
            .collect()
        })
    }
    fn purge_rollups(&self, gran: Granularity, before: i64) -> Result<usize> {
        let conn = self.writer.lock();
        Ok(conn.execute("DELETE FROM rollups WHERE gran = ?1 AND bucket < ?2", params![gran.as_str(), before])?)
    }
    fn rollup_top(
        &self,
        workspace_id: &str,
        scope: Scope,
        gran: Granularity,
        since: i64,
        until: i64,
        by: TopBy,
        limit: u32,
    ) -> Result<Vec<TopRow>> {
        self.read(|c| {
            let mut st = c.prepare_cached(&top_sql(by, ["?1", "?2", "?3", "?4", "?5", "?6"]))?;
            let rows = st.query_map(
                params![workspace_id, scope.as_str(), gran.as_str(), since, until, i64::from(limit)],
                |r| {
                    Ok(TopRow {
                        target: r.get(0)?,
                        requests: r.get::<_, i64>(1)? as u64,
                        denied: r.get::<_, i64>(2)? as u64,
                        bytes: r.get::<_, i64>(3)? as u64,
                    })
                },
            )?;
            Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
        })
    }
    fn append(&self, events: &mut [UsageEvent]) -> Result<()> {
        SqliteEventLog::append(self, events)
    }
    fn apply_usage(&self, updates: &[(i64, UsageReport)]) -> Result<Vec<Option<String>>> {
        SqliteEventLog::apply_usage(self, updates)
    }
    fn query(&self, f: &EventFilter) -> Result<Vec<UsageEvent>> {
        SqliteEventLog::query(self, f)
    }
    fn after(&self, after_id: i64, limit: u32) -> Result<Vec<UsageEvent>> {
        SqliteEventLog::after(self, after_id, limit)
    }
    fn after_for_rollups(&self, after_id: i64, limit: u32) -> Result<Vec<UsageEvent>> {
        SqliteEventLog::after_for_rollups(self, after_id, limit)
    }
    fn by_ids(&self, workspace_id: &str, ids: &[i64]) -> Result<Vec<UsageEvent>> {
        SqliteEventLog::by_ids(self, workspace_id, ids)
    }
    fn max_id(&self) -> Result<i64> {
        SqliteEventLog::max_id(self)
    }
    fn review(&self, workspace_id: &str, key_id: &str, since: i64, until: i64, top: u32) -> Result<KeyUsageReview> {
        SqliteEventLog::review(self, workspace_id, key_id, since, until, top)
    }
    fn count(&self) -> Result<u64> {
        SqliteEventLog::count(self)
    }
    fn purge_chunk(&self, before_ts: i64, chunk: u32) -> Result<usize> {
        SqliteEventLog::purge_chunk(self, before_ts, chunk)
    }
    fn cursor(&self, sink: &str) -> Result<Option<i64>> {
        SqliteEventLog::cursor(self, sink)
    }
    fn set_cursor(&self, sink: &str, last_id: i64, now: i64) -> Result<()> {
        SqliteEventLog::set_cursor(self, sink, last_id, now)
    }
}

/// The event log on SQLite.
pub struct SqliteEventLog {
    path: PathBuf,
    /// The `events` DEK when the data dir is encrypted; every connection is keyed with it.
    key: Option<keyward_core::seal::SecretKey>,
    writer: Mutex<Connection>,
    readers: Mutex<Vec<Connection>>,
}

fn open_conn(path: &Path, key: Option<&keyward_core::seal::SecretKey>) -> Result<Connection> {
    let conn = crate::cipher::open_db(path, key)?;
    conn.busy_timeout(std::time::Duration::from_secs(5))?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    // Each batch is one transaction ending in one fsync: the durability bound
    // is the batch interval, and the cost is paid once per batch, not per event.
    conn.pragma_update(None, "synchronous", "FULL")?;
    // Index pages of a busy log are touched all over (one run per key): keep
    // them in memory rather than re-reading them on every batch.
    conn.pragma_update(None, "cache_size", -65_536)?;
    // Checkpoint the WAL every ~64 MiB rather than every 4 MiB: at full
    // ingest the default checkpoints after nearly every batch.
    conn.pragma_update(None, "wal_autocheckpoint", 16_384)?;
    Ok(conn)
}

fn event_from_row(r: &Row<'_>) -> rusqlite::Result<UsageEvent> {
    let outcome = Outcome::parse(r.get_ref(14)?.as_str()?).unwrap_or(Outcome::NotFound);
    let kind = EventKind::parse(r.get_ref(2)?.as_str()?);
    Ok(UsageEvent {
        id: r.get(0)?,
        ts: r.get(1)?,
        kind,
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
        country: r.get(20)?,
        asn: r.get::<_, Option<i64>>(21)?.map(|a| a as u32),
        as_org: r.get(22)?,
        deprecated: false,
        scopes: Vec::new(),
    })
}

/// The columns the rollups count, in [`rollup_event_from_row`]'s order.
const ROLLUP_COLS: &str =
    "id, ts, workspace_id, keyspace_id, key_id, owner_id, ip, code, status, bytes_in, bytes_out, latency_us";

/// An event with only what the rollups count (`ROLLUP_COLS`); the rest empty.
fn rollup_event_from_row(r: &Row<'_>) -> rusqlite::Result<UsageEvent> {
    Ok(UsageEvent {
        id: r.get(0)?,
        ts: r.get(1)?,
        kind: EventKind::Verify,
        request_id: String::new(),
        workspace_id: r.get(2)?,
        keyspace_id: r.get(3)?,
        key_id: r.get(4)?,
        key_hint: None,
        owner_id: r.get(5)?,
        fingerprint: None,
        source_ip: r.get(6)?,
        user_agent: None,
        method: None,
        path: None,
        outcome: Outcome::parse(r.get_ref(7)?.as_str()?).unwrap_or(Outcome::NotFound),
        http_status: r.get::<_, Option<i64>>(8)?.map(|s| s as u16),
        error: None,
        bytes_in: r.get::<_, Option<i64>>(9)?.map(|b| b as u64),
        bytes_out: r.get::<_, Option<i64>>(10)?.map(|b| b as u64),
        latency_us: r.get::<_, Option<i64>>(11)?.map(|b| b as u64),
        country: None,
        asn: None,
        as_org: None,
        deprecated: false,
        scopes: Vec::new(),
    })
}

/// How [`SqliteEventLog::query`] finds a page (see `access`).
enum Access {
    Runs(RunKind, i64),
    Index(&'static str),
}

impl SqliteEventLog {
    pub fn open(path: &Path) -> Result<Self> {
        Self::open_with(path, None)
    }

    /// [`SqliteEventLog::open`], encrypted with `key` (the data dir's `events` DEK) when given.
    pub fn open_with(path: &Path, key: Option<&keyward_core::seal::SecretKey>) -> Result<Self> {
        let mut conn = open_conn(path, key)?;
        register_functions(&conn)?;
        let current: i64 = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
        let supported = SCHEMA.len() as i64;
        if current > supported {
            return Err(StoreError::TooNew { found: current, supported });
        }
        for (i, sql) in SCHEMA.iter().enumerate().skip(current as usize) {
            if current > 0 {
                tracing::info!(version = i + 1, path = %path.display(), "Migrating the event log; large logs take a while.");
            }
            let tx = conn.transaction()?;
            tx.execute_batch(sql)?;
            if i == RUNS_MIGRATION {
                tx.execute_batch(runs::SCHEMA)?;
                runs::fill(&tx)?;
            }
            tx.pragma_update(None, "user_version", (i + 1) as i64)?;
            tx.commit()?;
        }
        Ok(SqliteEventLog {
            path: path.to_owned(),
            key: key.cloned(),
            writer: Mutex::new(conn),
            readers: Mutex::default(),
        })
    }

    fn read<T>(&self, f: impl FnOnce(&Connection) -> Result<T>) -> Result<T> {
        let conn = self.readers.lock().pop();
        let conn = match conn {
            Some(c) => c,
            None => open_conn(&self.path, self.key.as_ref())?,
        };
        let out = f(&conn);
        let mut pool = self.readers.lock();
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
        let mut conn = self.writer.lock();
        let tx = conn.transaction()?;
        let mut runs = Runs::default();
        {
            let mut st = tx.prepare_cached(&format!(
                "INSERT INTO events ({COLS}, key_no, ws_no, ip_no, code_no, status_no)
                 VALUES (NULL, ?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12,
                 ?13, ?14, ?15, ?16, ?17, ?18, ?19, ?20, ?21, ?22, ?23, ?24, ?25, ?26, ?27)"
            ))?;
            for e in events.iter_mut() {
                let key = e.key_id.as_deref().map(key_no);
                let ip = e.source_ip.as_deref().map(|ip| scoped_no(&e.workspace_id, Some(ip)));
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
                    e.country,
                    e.asn.map(i64::from),
                    e.as_org,
                    key,
                    scoped_no(&e.workspace_id, None),
                    ip,
                    scoped_no(&e.workspace_id, Some(e.outcome.as_str())),
                    e.http_status.map(|st| scoped_no(&e.workspace_id, Some(&status_class(st)))),
                ])?;
                e.id = tx.last_insert_rowid();
                if let Some(no) = key {
                    runs.add(RunKind::Key, no, e.id);
                }
                if let Some(no) = ip {
                    runs.add(RunKind::Address, no, e.id);
                }
            }
        }
        runs.write(&tx)?;
        tx.commit()?;
        Ok(())
    }

    /// Adds reported status, bytes and latency to written events, by id.
    pub fn apply_usage(&self, updates: &[(i64, UsageReport)]) -> Result<Vec<Option<String>>> {
        if updates.is_empty() {
            return Ok(Vec::new());
        }
        let mut conn = self.writer.lock();
        let tx = conn.transaction()?;
        let mut keys = Vec::with_capacity(updates.len());
        {
            let mut st = tx.prepare_cached(
                "UPDATE events SET status = COALESCE(?2, status), status_no = COALESCE(?8, status_no),
                        bytes_in = COALESCE(?3, bytes_in), bytes_out = COALESCE(?4, bytes_out),
                        latency_us = COALESCE(?5, latency_us)
                 WHERE id = ?1 AND request_id = ?6 AND workspace_id = ?7
                 RETURNING key_id",
            )?;
            for (id, r) in updates {
                let key: Option<Option<String>> = st
                    .query_row(
                        params![
                            id,
                            r.http_status.map(i64::from),
                            r.bytes_in.map(|b| b as i64),
                            r.bytes_out.map(|b| b as i64),
                            r.latency_us.map(|b| b as i64),
                            r.request_id,
                            r.workspace_id,
                            r.http_status.map(|st| scoped_no(&r.workspace_id, Some(&status_class(st)))),
                        ],
                        |row| row.get(0),
                    )
                    .optional()?;
                keys.push(key.flatten());
            }
        }
        tx.commit()?;
        Ok(keys)
    }

    /// The smallest id whose event is at or after `ts`, by binary search
    /// over ids (`max_id + 1` if none). There is no index on `ts`: ids grow
    /// with time, so a few point reads by id replace one, which keeps
    /// appends fast.
    fn first_id_at_or_after(c: &Connection, ts: i64) -> Result<i64> {
        let bounds: (Option<i64>, Option<i64>) =
            // Two subqueries: SQLite answers a lone MIN or MAX of the rowid
            // from the b-tree's ends, but scans the table for both at once.
            c.query_row("SELECT (SELECT MIN(id) FROM events), (SELECT MAX(id) FROM events)", [], |r| {
                Ok((r.get(0)?, r.get(1)?))
            })?;
        let (Some(mut lo), Some(max)) = bounds else { return Ok(1) };
        let mut hi = max + 1;
        let mut st = c.prepare_cached("SELECT id, ts FROM events WHERE id >= ?1 ORDER BY id LIMIT 1")?;
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            let (id, t): (i64, i64) = st.query_row([mid], |r| Ok((r.get(0)?, r.get(1)?)))?;
            if t >= ts {
                hi = mid;
            } else {
                lo = id + 1;
            }
        }
        Ok(lo)
    }

    /// Events of one workspace, filtered, one page.
    ///
    /// The SQL holds only the filters given, and names the one index that
    /// serves the most selective of them (key, owner, address, outcome,
    /// status class, else the id itself), so every page is a seek and a walk
    /// in id order: its cost is what it returns plus the rows of that index
    /// it skips, whatever the log's size. Time bounds become id bounds.
    pub fn query(&self, f: &EventFilter) -> Result<Vec<UsageEvent>> {
        // An owner: the events of each of its keys, merged in id order (an
        // owner index would cost every append; the owner's keys are known).
        if f.owner_id.is_some() && f.key_id.is_none() {
            let parts = f
                .owner_keys
                .iter()
                .map(|k| EventFilter { key_id: Some(k.clone()), owner_keys: Vec::new(), ..f.clone() })
                .collect();
            return self.merged(f, parts);
        }
        // An address and its pseudonym: two seeks, merged in id order.
        if let (Some(ip), Some(alt)) = (&f.ip, &f.ip_alt) {
            let parts = [ip, alt]
                .into_iter()
                .map(|ip| EventFilter { ip: Some(ip.clone()), ip_alt: None, ..f.clone() })
                .collect();
            return self.merged(f, parts);
        }
        if f.limit == 0 {
            return Ok(Vec::new());
        }
        self.read(|c| match Self::access(f) {
            Access::Runs(kind, no) => Self::query_runs(c, f, kind, no),
            Access::Index(index) => {
                let (sql, args) = Self::query_sql(c, f, index)?;
                let mut st = c.prepare_cached(&sql)?;
                let rows = st.query_map(rusqlite::params_from_iter(args.iter()), event_from_row)?;
                Ok(rows.collect::<rusqlite::Result<_>>()?)
            }
        })
    }

    /// How a page of `f` is found: the runs of its key or address, else the
    /// index of its rarest other filter (outcome, status class) or of the
    /// workspace.
    fn access(f: &EventFilter) -> Access {
        if let Some(k) = &f.key_id {
            Access::Runs(RunKind::Key, key_no(k))
        } else if let Some(ip) = &f.ip {
            Access::Runs(RunKind::Address, scoped_no(&f.workspace_id, Some(ip)))
        } else if f.code.is_some_and(|c| c != Outcome::Valid) {
            Access::Index("events_code")
        } else if f.status_class.is_some_and(|c| c != 2) {
            Access::Index("events_status")
        } else {
            Access::Index("events_ws")
        }
    }

    /// One page of `f` through the runs of `(kind, no)`: each id, in page
    /// order, read by rowid with every filter checked, until the page is full.
    fn query_runs(c: &Connection, f: &EventFilter, kind: RunKind, no: i64) -> Result<Vec<UsageEvent>> {
        let (after, before) = Self::id_bounds(c, f)?;
        let (sql, mut args) = Self::row_sql(f, COLS);
        let mut st = c.prepare_cached(&sql)?;
        let mut out = Vec::new();
        let at = args.len() - 1;
        runs::walk(c, kind, no, after, before, f.ascending, |id| {
            args[at] = rusqlite::types::Value::Integer(id);
            if let Some(e) = st.query_row(rusqlite::params_from_iter(args.iter()), event_from_row).optional()? {
                out.push(e);
            }
            Ok(out.len() < f.limit as usize)
        })?;
        Ok(out)
    }

    /// The SQL that reads `cols` of one event by id (the last argument, a
    /// placeholder to set) if it passes every filter of `f` but the ids.
    fn row_sql(f: &EventFilter, cols: &str) -> (String, Vec<rusqlite::types::Value>) {
        let (mut cond, mut args) = Self::conditions(f, None);
        args.push(rusqlite::types::Value::Null);
        cond.push(format!("id = ?{}", args.len()));
        (format!("SELECT {cols} FROM events WHERE {}", cond.join(" AND ")), args)
    }

    /// One page of `f` from several seekable parts (an owner's keys; an
    /// address and its pseudonym), merged in id order. Each part is read in
    /// chunks of about `limit / parts`, refilled as the merge drains it, so a
    /// page holds O(limit + parts) rows and costs O(limit + parts) seeks,
    /// whatever the number of parts.
    fn merged(&self, f: &EventFilter, parts: Vec<EventFilter>) -> Result<Vec<UsageEvent>> {
        struct Part {
            f: EventFilter,
            buf: std::collections::VecDeque<UsageEvent>,
            done: bool,
        }
        let limit = f.limit as usize;
        let chunk = (limit / parts.len().max(1) + 1).min(limit.max(1)) as u32;
        let order = |e: &UsageEvent| if f.ascending { -e.id } else { e.id };
        let refill = |p: &mut Part| -> Result<()> {
            let rows = self.query(&EventFilter { limit: chunk, ..p.f.clone() })?;
            p.done = rows.len() < chunk as usize;
            if let Some(last) = rows.last() {
                if f.ascending {
                    p.f.after_id = Some(last.id);
                } else {
                    p.f.before_id = Some(last.id);
                }
            }
            p.buf.extend(rows);
            Ok(())
        };
        let mut parts: Vec<Part> =
            parts.into_iter().map(|f| Part { f, buf: Default::default(), done: false }).collect();
        let mut heap = std::collections::BinaryHeap::new();
        for (i, p) in parts.iter_mut().enumerate() {
            refill(p)?;
            if let Some(e) = p.buf.front() {
                heap.push((order(e), i));
            }
        }
        let mut out = Vec::with_capacity(limit.min(1000));
        while out.len() < limit {
            let Some((_, i)) = heap.pop() else { break };
            let p = &mut parts[i];
            if let Some(e) = p.buf.pop_front() {
                out.push(e);
            }
            if p.buf.is_empty() && !p.done {
                refill(p)?;
            }
            if let Some(e) = p.buf.front() {
                heap.push((order(e), i));
            }
        }
        Ok(out)
    }

    /// SQLite's `EXPLAIN QUERY PLAN` of [`SqliteEventLog::query`] for `f`,
    /// one line per step (tests check that every filter seeks): for a key or
    /// an address, the plans of its runs and of the read of one event.
    pub fn plan(&self, f: &EventFilter) -> Result<Vec<String>> {
        self.read(|c| {
            let (sqls, args) = match Self::access(f) {
                Access::Runs(kind, no) => {
                    let (row, mut args) = Self::row_sql(f, COLS);
                    let walk = runs::WALK_DESC
                        .replace("?1", &(kind as i64).to_string())
                        .replace("?2", &no.to_string())
                        .replace("?3", "0")
                        .replace("?4", "0");
                    *args.last_mut().expect("row_sql ends with the id") = rusqlite::types::Value::Integer(1);
                    (vec![walk, row], args)
                }
                Access::Index(index) => {
                    let (sql, args) = Self::query_sql(c, f, index)?;
                    (vec![sql], args)
                }
            };
            let mut out = Vec::new();
            for (i, sql) in sqls.iter().enumerate() {
                let mut st = c.prepare(&format!("EXPLAIN QUERY PLAN {sql}"))?;
                let none: &[rusqlite::types::Value] = &[];
                let args = if i + 1 == sqls.len() { &args[..] } else { none };
                let rows = st.query_map(rusqlite::params_from_iter(args.iter()), |r| r.get::<_, String>(3))?;
                out.extend(rows.collect::<rusqlite::Result<Vec<_>>>()?);
            }
            Ok(out)
        })
    }

    /// The id bounds of `f`: its own, narrowed by its time bounds (with a
    /// minute of slack for events enqueued slightly out of order; rows are
    /// still checked by ts).
    fn id_bounds(c: &Connection, f: &EventFilter) -> Result<(Option<i64>, Option<i64>)> {
        let mut after_id = f.after_id;
        let mut before_id = f.before_id;
        if let Some(since) = f.since {
            let lo = Self::first_id_at_or_after(c, since - TS_SLACK_MS)? - 1;
            after_id = Some(after_id.map_or(lo, |a| a.max(lo)));
        }
        if let Some(until) = f.until {
            let hi = Self::first_id_at_or_after(c, until + TS_SLACK_MS)?;
            before_id = Some(before_id.map_or(hi, |b| b.min(hi)));
        }
        Ok((after_id, before_id))
    }

    /// The conditions of `f` but its ids, numbered `?1`…, for a read through
    /// `index` (which adds that index's own terms) or by rowid (`None`).
    fn conditions(f: &EventFilter, index: Option<&str>) -> (Vec<String>, Vec<rusqlite::types::Value>) {
        use rusqlite::types::Value as V;
        let mut cond: Vec<String> = Vec::new();
        let mut args: Vec<V> = Vec::new();
        let mut arg = |cond: &mut Vec<String>, sql: &str, v: V| {
            args.push(v);
            cond.push(sql.replace('?', &format!("?{}", args.len())));
        };
        let ws = f.workspace_id.as_str();
        if let Some(k) = &f.key_id {
            arg(&mut cond, "key_id = ?", V::Text(k.clone()));
        }
        if index == Some("events_ws") {
            arg(&mut cond, "ws_no = ?", V::Integer(scoped_no(ws, None)));
        }
        arg(&mut cond, "workspace_id = ?", V::Text(ws.to_owned()));
        if let Some(o) = &f.owner_id {
            arg(&mut cond, "owner_id = ?", V::Text(o.clone()));
        }
        // (`query` splits an address and its pseudonym into two reads.)
        if let Some(ip) = &f.ip {
            arg(&mut cond, "ip = ?", V::Text(ip.clone()));
        }
        if let Some(code) = f.code {
            if index == Some("events_code") {
                arg(&mut cond, "code_no = ?", V::Integer(scoped_no(ws, Some(code.as_str()))));
                // The partial index's own condition, so SQLite may use it.
                cond.push("code != 'VALID'".into());
            }
            arg(&mut cond, "code = ?", V::Text(code.as_str().to_owned()));
        }
        if let Some(class) = f.status_class {
            if index == Some("events_status") {
                arg(&mut cond, "status_no = ?", V::Integer(scoped_no(ws, Some(&class.to_string()))));
                cond.push("status_no IS NOT NULL AND (status < 200 OR status >= 300)".into());
            }
            arg(&mut cond, "status / 100 = ?", V::Integer(i64::from(class)));
        }
        if let Some(t) = f.since {
            arg(&mut cond, "ts >= ?", V::Integer(t));
        }
        if let Some(t) = f.until {
            arg(&mut cond, "ts < ?", V::Integer(t));
        }
        (cond, args)
    }

    /// The SQL and arguments of one page of `f` through `index`.
    fn query_sql(c: &Connection, f: &EventFilter, index: &str) -> Result<(String, Vec<rusqlite::types::Value>)> {
        use rusqlite::types::Value as V;
        let (after_id, before_id) = Self::id_bounds(c, f)?;
        let (mut cond, mut args) = Self::conditions(f, Some(index));
        for (id, op) in [(after_id, ">"), (before_id, "<")] {
            if let Some(id) = id {
                args.push(V::Integer(id));
                cond.push(format!("id {op} ?{}", args.len()));
            }
        }
        args.push(V::Integer(i64::from(f.limit)));
        let order = if f.ascending { "ASC" } else { "DESC" };
        let sql = format!(
            "SELECT {COLS} FROM events INDEXED BY {index} WHERE {} ORDER BY id {order} LIMIT ?{}",
            cond.join(" AND "),
            args.len()
        );
        Ok((sql, args))
    }

    /// Events of every workspace after `after_id`, oldest first (for sinks).
    pub fn after(&self, after_id: i64, limit: u32) -> Result<Vec<UsageEvent>> {
        self.read(|c| {
            let mut st = c.prepare_cached(&format!("SELECT {COLS} FROM events WHERE id > ?1 ORDER BY id LIMIT ?2"))?;
            let rows = st.query_map(params![after_id, limit], event_from_row)?;
            Ok(rows.collect::<rusqlite::Result<_>>()?)
        })
    }

    /// [`SqliteEventLog::after`] with only the fields the rollups count.
    pub fn after_for_rollups(&self, after_id: i64, limit: u32) -> Result<Vec<UsageEvent>> {
        self.read(|c| {
            let mut st =
                c.prepare_cached(&format!("SELECT {ROLLUP_COLS} FROM events WHERE id > ?1 ORDER BY id LIMIT ?2"))?;
            let rows = st.query_map(params![after_id, limit], rollup_event_from_row)?;
            Ok(rows.collect::<rusqlite::Result<_>>()?)
        })
    }

    /// Events of one workspace by id (an alert's evidence), in id order; ids
    /// purged or of another workspace are left out.
    pub fn by_ids(&self, workspace_id: &str, ids: &[i64]) -> Result<Vec<UsageEvent>> {
        self.read(|c| {
            let mut st = c.prepare_cached(&format!("SELECT {COLS} FROM events WHERE id = ?1 AND workspace_id = ?2"))?;
            let mut out = Vec::with_capacity(ids.len());
            let mut sorted = ids.to_vec();
            sorted.sort_unstable();
            sorted.dedup();
            for id in sorted {
                if let Some(e) = st.query_row(params![id, workspace_id], event_from_row).optional()? {
                    out.push(e);
                }
            }
            Ok(out)
        })
    }

    /// The id of the newest event (0 for an empty log).
    pub fn max_id(&self) -> Result<i64> {
        self.read(|c| Ok(c.query_row("SELECT COALESCE(MAX(id), 0) FROM events", [], |r| r.get(0))?))
    }

    /// How one key was used in `[since, until)`: totals, source addresses,
    /// endpoints and outcomes (each list at most `top` entries, largest first).
    pub fn review(&self, workspace_id: &str, key_id: &str, since: i64, until: i64, top: u32) -> Result<KeyUsageReview> {
        use std::collections::HashMap;
        // The key's runs, bounded by ids found for the time range: the review
        // reads the key's events in the window, not all of them.
        self.read(|c| {
            let lo = Self::first_id_at_or_after(c, since - TS_SLACK_MS)?;
            let hi = Self::first_id_at_or_after(c, until.saturating_add(TS_SLACK_MS))?;
            let mut st = c.prepare_cached(
                "SELECT ts, COALESCE(ip, '-'), COALESCE(method, '-'), COALESCE(path, '-'), code FROM events
                 WHERE id = ?1 AND key_id = ?2 AND workspace_id = ?3 AND ts >= ?4 AND ts < ?5",
            )?;
            let mut total = 0u64;
            let mut ips: HashMap<String, IpUse> = HashMap::new();
            let mut endpoints: HashMap<(String, String), u64> = HashMap::new();
            let mut outcomes: HashMap<String, u64> = HashMap::new();
            runs::walk(c, RunKind::Key, key_no(key_id), Some(lo - 1), Some(hi), true, |id| {
                let mut rows = st.query(params![id, key_id, workspace_id, since, until])?;
                let Some(r) = rows.next()? else { return Ok(true) };
                let ts: i64 = r.get(0)?;
                total += 1;
                let ip = ips.entry(r.get(1)?).or_insert_with_key(|ip| IpUse {
                    ip: ip.clone(),
                    count: 0,
                    first_seen: ts,
                    last_seen: ts,
                });
                ip.count += 1;
                ip.first_seen = ip.first_seen.min(ts);
                ip.last_seen = ip.last_seen.max(ts);
                *endpoints.entry((r.get(2)?, r.get(3)?)).or_default() += 1;
                *outcomes.entry(r.get(4)?).or_default() += 1;
                Ok(true)
            })?;
            let top = top as usize;
            let mut ips: Vec<IpUse> = ips.into_values().collect();
            ips.sort_by(|a, b| b.count.cmp(&a.count).then_with(|| a.ip.cmp(&b.ip)));
            ips.truncate(top);
            let mut endpoints: Vec<EndpointUse> =
                endpoints.into_iter().map(|((method, path), count)| EndpointUse { method, path, count }).collect();
            endpoints.sort_by(|a, b| {
                b.count.cmp(&a.count).then_with(|| a.path.cmp(&b.path)).then_with(|| a.method.cmp(&b.method))
            });
            endpoints.truncate(top);
            let mut outcomes: Vec<(String, u64)> = outcomes.into_iter().collect();
            outcomes.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
            outcomes.truncate(top);
            Ok(KeyUsageReview { total, ips, endpoints, outcomes })
        })
    }

    pub fn count(&self) -> Result<u64> {
        self.read(|c| Ok(c.query_row("SELECT COUNT(*) FROM events", [], |r| r.get::<_, i64>(0))? as u64))
    }

    /// Deletes events older than `before_ts` among the oldest `chunk` ids;
    /// returns how many. Called until it returns 0, so the writer lock is
    /// held only briefly each time; the oldest events come first by id.
    pub fn purge_chunk(&self, before_ts: i64, chunk: u32) -> Result<usize> {
        let mut conn = self.writer.lock();
        let tx = conn.transaction()?;
        let deleted = {
            let mut st = tx.prepare_cached(
                "DELETE FROM events WHERE id IN (SELECT id FROM events ORDER BY id LIMIT ?2) AND ts < ?1
                 RETURNING id, key_no, ip_no",
            )?;
            let rows = st.query_map(params![before_ts, chunk], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?;
            rows.collect::<rusqlite::Result<Vec<_>>>()?
        };
        runs::forget(&tx, &deleted)?;
        tx.commit()?;
        Ok(deleted.len())
    }

    pub fn cursor(&self, sink: &str) -> Result<Option<i64>> {
        self.read(|c| {
            Ok(c.query_row("SELECT last_id FROM sink_cursors WHERE name = ?1", [sink], |r| r.get(0)).optional()?)
        })
    }

    pub fn set_cursor(&self, sink: &str, last_id: i64, now: i64) -> Result<()> {
        let conn = self.writer.lock();
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
