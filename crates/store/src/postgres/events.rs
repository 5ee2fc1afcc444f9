//! The usage-event log on PostgreSQL, shared by every node: partitioned by
//! day on `ts`, appended with binary `COPY`, retention by dropping whole
//! partitions.
//!
//! Invariant: ids are handed out in commit order. Each append takes one
//! advisory lock (`APPEND_LOCK`) for its transaction and numbers its rows
//! from the sequence under it, so a reader that has seen id `n` has seen
//! every event with a smaller id: sinks keep `id > cursor` as their
//! position, as on the embedded log. The lock is held for one batch (the
//! writer commits every 100 ms), so nodes take turns per batch, not per event.

use parking_lot::Mutex;
use std::collections::HashSet;

use keyward_core::Outcome;
use keyward_core::event::{EventKind, UsageEvent, UsageReport};
use postgres::Row;
use postgres::binary_copy::BinaryCopyInWriter;
use postgres::types::{ToSql, Type};

use super::store::{Pool, off_runtime, pool};
use crate::events::{
    EndpointUse, EventFilter, EventLog, IpUse, KeyUsageReview, RollupKey, TopBy, TopRow, rollup_body, rollup_parse,
    top_sql,
};
use crate::{Result, StoreError};
use keyward_core::rollup::{Agg, Granularity, Scope};

/// The lock every append takes ("kwev").
const APPEND_LOCK: i64 = 0x6b77_6576;
const DAY_MS: i64 = 86_400_000;

const COLS: &str = "id, ts, kind, request_id, workspace_id, keyspace_id, key_id, key_hint, owner_id, fingerprint,
    ip, user_agent, method, path, code, status, error, bytes_in, bytes_out, latency_us, country, asn, as_org";

/// The event log on PostgreSQL.
pub struct PgEventLog {
    pool: Option<Pool>,
    /// Days whose partition is known to exist.
    days: Mutex<HashSet<i64>>,
}

impl Drop for PgEventLog {
    fn drop(&mut self) {
        let pool = self.pool.take();
        off_runtime(move || drop(pool));
    }
}

fn event_from_row(r: &Row) -> Result<UsageEvent> {
    let outcome = Outcome::parse(r.try_get(14)?).unwrap_or(Outcome::NotFound);
    let kind: String = r.try_get(2)?;
    Ok(UsageEvent {
        id: r.try_get(0)?,
        ts: r.try_get(1)?,
        kind: EventKind::parse(&kind),
        request_id: r.try_get(3)?,
        workspace_id: r.try_get(4)?,
        keyspace_id: r.try_get(5)?,
        key_id: r.try_get(6)?,
        key_hint: r.try_get(7)?,
        owner_id: r.try_get(8)?,
        fingerprint: r.try_get(9)?,
        source_ip: r.try_get(10)?,
        user_agent: r.try_get(11)?,
        method: r.try_get(12)?,
        path: r.try_get(13)?,
        outcome,
        http_status: r.try_get::<_, Option<i64>>(15)?.map(|s| s as u16),
        error: r.try_get(16)?,
        bytes_in: r.try_get::<_, Option<i64>>(17)?.map(|b| b as u64),
        bytes_out: r.try_get::<_, Option<i64>>(18)?.map(|b| b as u64),
        latency_us: r.try_get::<_, Option<i64>>(19)?.map(|b| b as u64),
        country: r.try_get(20)?,
        asn: r.try_get::<_, Option<i64>>(21)?.map(|a| a as u32),
        as_org: r.try_get(22)?,
        deprecated: false,
        scopes: Vec::new(),
    })
}

/// The partition of the day `day` (days since the epoch, UTC).
fn partition(day: i64) -> String {
    format!("events_d{day}")
}

impl PgEventLog {
    /// Connects and brings the schema up to date (the same migrations as [`super::PgStore`]).
    pub fn open(url: &str, pool_size: u32) -> Result<Self> {
        let pool = off_runtime(|| pool(url, pool_size, None))?;
        let log = PgEventLog { pool: Some(pool), days: Mutex::default() };
        log.with("migrating", |c| super::migrate(c, super::schema::MIGRATIONS).map(|_| ()))?;
        let today = keyward_core::time::now_ms().div_euclid(DAY_MS);
        log.ensure_days(&[today, today + 1])?;
        Ok(log)
    }

    fn with<T>(&self, context: &'static str, f: impl FnOnce(&mut postgres::Client) -> Result<T>) -> Result<T> {
        off_runtime(|| {
            let pool = self.pool.as_ref().expect("the pool lives as long as the log");
            let mut c = pool.get().map_err(|e| StoreError::Pool(e.to_string()))?;
            f(&mut c).map_err(|e| e.in_context(context))
        })
    }

    /// Creates the partitions of `days` that do not exist yet.
    fn ensure_days(&self, days: &[i64]) -> Result<()> {
        let missing: Vec<i64> = {
            let known = self.days.lock();
            days.iter().copied().filter(|d| !known.contains(d)).collect()
        };
        if missing.is_empty() {
            return Ok(());
        }
        self.with("creating event partitions", |c| {
            let mut tx = c.transaction()?;
            tx.execute("SELECT pg_advisory_xact_lock($1)", &[&APPEND_LOCK])?;
            for d in &missing {
                let (lo, hi) = (d * DAY_MS, (d + 1) * DAY_MS);
                let rows_in_default: i64 = tx
                    .query_one("SELECT COUNT(*) FROM events_default WHERE ts >= $1 AND ts < $2", &[&lo, &hi])?
                    .try_get(0)?;
                // Events of a day with no partition wait in the default one;
                // that day keeps them there rather than fail every append.
                if rows_in_default == 0 {
                    tx.batch_execute(&format!(
                        "CREATE TABLE IF NOT EXISTS {} PARTITION OF events FOR VALUES FROM ({lo}) TO ({hi})",
                        partition(*d)
                    ))?;
                }
            }
            tx.commit()?;
            Ok(())
        })?;
        self.days.lock().extend(missing);
        Ok(())
    }

    /// Copies an embedded event log (`events.db`) into this empty one, ids
    /// and sink cursors kept; returns the events copied.
    pub fn import_from(&self, src: &rusqlite::Connection, progress: &mut dyn FnMut(&str, u64, u64)) -> Result<u64> {
        if self.count()? > 0 {
            return Err(StoreError::Conflict(
                "the database's event log is not empty; migrate into an empty database".into(),
            ));
        }
        let (lo, hi): (Option<i64>, Option<i64>) =
            src.query_row("SELECT MIN(ts), MAX(ts) FROM events", [], |r| Ok((r.get(0)?, r.get(1)?)))?;
        if let (Some(lo), Some(hi)) = (lo, hi) {
            // A partition per day (at most the last 400 days: older ones wait in the default partition).
            let (first, last) = (lo.div_euclid(DAY_MS), hi.div_euclid(DAY_MS));
            let days: Vec<i64> = (first.max(last - 400)..=last + 1).collect();
            self.ensure_days(&days)?;
        }
        self.with("importing events", |c| {
            let mut tx = c.transaction()?;
            tx.execute("SELECT pg_advisory_xact_lock($1)", &[&APPEND_LOCK])?;
            let n = super::import::copy_table(src, &mut tx, "events", progress)?;
            super::import::copy_table(src, &mut tx, "sink_cursors", progress)?;
            tx.batch_execute("SELECT setval('events_id_seq', COALESCE((SELECT MAX(id) FROM events), 0) + 1, false)")?;
            tx.commit()?;
            Ok(n)
        })
    }

    /// One page of `f`: the SQL holds only the filters given; time bounds
    /// prune partitions; each filter has an index ending in id.
    fn page(&self, f: &EventFilter) -> Result<Vec<UsageEvent>> {
        let mut cond: Vec<String> = vec!["workspace_id = $1".into()];
        let mut args: Vec<Box<dyn ToSql + Sync>> = vec![Box::new(f.workspace_id.clone())];
        let mut arg = |cond: &mut Vec<String>, sql: &str, v: Box<dyn ToSql + Sync>| {
            args.push(v);
            cond.push(sql.replace('?', &format!("${}", args.len())));
        };
        if let Some(k) = &f.key_id {
            arg(&mut cond, "key_id = ?", Box::new(k.clone()));
        }
        if let Some(o) = &f.owner_id {
            arg(&mut cond, "owner_id = ?", Box::new(o.clone()));
            if f.key_id.is_none() {
                // The owner's keys, so the key index serves it.
                arg(&mut cond, "key_id = ANY(?)", Box::new(f.owner_keys.clone()));
            }
        }
        match (&f.ip, &f.ip_alt) {
            (Some(ip), Some(alt)) => arg(&mut cond, "ip = ANY(?)", Box::new(vec![ip.clone(), alt.clone()])),
            (Some(ip), None) => arg(&mut cond, "ip = ?", Box::new(ip.clone())),
            _ => {}
        }
        if let Some(code) = f.code {
            if code != Outcome::Valid {
                cond.push("code <> 'VALID'".into());
            }
            arg(&mut cond, "code = ?", Box::new(code.as_str().to_owned()));
        }
        if let Some(class) = f.status_class {
            if class != 2 {
                cond.push("status IS NOT NULL AND (status < 200 OR status >= 300)".into());
            }
            arg(&mut cond, "status / 100 = ?", Box::new(i64::from(class)));
        }
        if let Some(t) = f.since {
            arg(&mut cond, "ts >= ?", Box::new(t));
        }
        if let Some(t) = f.until {
            arg(&mut cond, "ts < ?", Box::new(t));
        }
        if let Some(id) = f.after_id {
            arg(&mut cond, "id > ?", Box::new(id));
        }
        if let Some(id) = f.before_id {
            arg(&mut cond, "id < ?", Box::new(id));
        }
        args.push(Box::new(i64::from(f.limit)));
        let order = if f.ascending { "ASC" } else { "DESC" };
        let sql =
            format!("SELECT {COLS} FROM events WHERE {} ORDER BY id {order} LIMIT ${}", cond.join(" AND "), args.len());
        let params: Vec<&(dyn ToSql + Sync)> = args.iter().map(|a| a.as_ref()).collect();
        self.with("reading events", |c| c.query(&sql, &params)?.iter().map(event_from_row).collect())
    }
}

impl EventLog for PgEventLog {
    fn get_rollups(&self, keys: &[RollupKey]) -> Result<Vec<Option<Agg>>> {
        self.with("reading rollups", |c| {
            let st = c.prepare(
                "SELECT body FROM rollups WHERE workspace_id = $1 AND scope = $2 AND target = $3 AND gran = $4 AND bucket = $5",
            )?;
            keys.iter()
                .map(|k| {
                    let row = c.query_opt(&st, &[&k.workspace_id, &k.scope.as_str(), &k.target, &k.gran.as_str(), &k.bucket])?;
                    row.map(|r| rollup_parse(&r.try_get::<_, String>(0)?)).transpose()
                })
                .collect()
        })
    }
    fn put_rollups(&self, rows: &[(RollupKey, Agg)], through: &[(Granularity, i64)]) -> Result<()> {
        self.with("writing rollups", |c| {
            let mut tx = c.transaction()?;
            let st = tx.prepare(
                "INSERT INTO rollups (workspace_id, scope, target, gran, bucket, requests, denied, bytes, body)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
                 ON CONFLICT (workspace_id, scope, target, gran, bucket)
                 DO UPDATE SET requests = excluded.requests, denied = excluded.denied, bytes = excluded.bytes, body = excluded.body",
            )?;
            for (k, a) in rows {
                let body = rollup_body(a);
                tx.execute(
                    &st,
                    &[
                        &k.workspace_id,
                        &k.scope.as_str(),
                        &k.target,
                        &k.gran.as_str(),
                        &k.bucket,
                        &(a.requests as i64),
                        &(a.denied() as i64),
                        &a.bytes_column(),
                        &body,
                    ],
                )?;
            }
            for (gran, id) in through {
                tx.execute(
                    "INSERT INTO rollup_state (name, value) VALUES ($1, $2)
                     ON CONFLICT (name) DO UPDATE SET value = GREATEST(rollup_state.value, excluded.value)",
                    &[&format!("through_{}", gran.as_str()), id],
                )?;
            }
            tx.commit()?;
            Ok(())
        })
    }
    fn rollup_watermark(&self, gran: Granularity) -> Result<i64> {
        self.with("reading the rollup watermark", |c| {
            Ok(c.query_opt("SELECT value FROM rollup_state WHERE name = $1", &[&format!("through_{}", gran.as_str())])?
                .map(|r| r.try_get(0))
                .transpose()?
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
        self.with("reading rollups", |c| {
            c.query(
                "SELECT bucket, body FROM rollups
                 WHERE workspace_id = $1 AND scope = $2 AND target = $3 AND gran = $4 AND bucket >= $5 AND bucket < $6
                 ORDER BY bucket",
                &[&workspace_id, &scope.as_str(), &target, &gran.as_str(), &since, &until],
            )?
            .iter()
            .map(|r| Ok((r.try_get::<_, i64>(0)?, rollup_parse(&r.try_get::<_, String>(1)?)?)))
            .collect()
        })
    }
    fn purge_rollups(&self, gran: Granularity, before: i64) -> Result<usize> {
        self.with("purging rollups", |c| {
            Ok(c.execute("DELETE FROM rollups WHERE gran = $1 AND bucket < $2", &[&gran.as_str(), &before])? as usize)
        })
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
        self.with("reading top lists", |c| {
            c.query(
                &top_sql(by, ["$1", "$2", "$3", "$4", "$5", "$6"]),
                &[&workspace_id, &scope.as_str(), &gran.as_str(), &since, &until, &i64::from(limit)],
            )?
            .iter()
            .map(|r| {
                Ok(TopRow {
                    target: r.try_get(0)?,
                    requests: r.try_get::<_, i64>(1)? as u64,
                    denied: r.try_get::<_, i64>(2)? as u64,
                    bytes: r.try_get::<_, i64>(3)? as u64,
                })
            })
            .collect()
        })
    }

    fn append(&self, events: &mut [UsageEvent]) -> Result<()> {
        if events.is_empty() {
            return Ok(());
        }
        let mut days: Vec<i64> = events.iter().map(|e| e.ts.div_euclid(DAY_MS)).collect();
        days.sort_unstable();
        days.dedup();
        // Tomorrow's too, made before it is needed.
        if let Some(last) = days.last().copied() {
            days.push(last + 1);
        }
        self.ensure_days(&days)?;
        self.with("appending events", |c| {
            let mut tx = c.transaction()?;
            tx.execute("SELECT pg_advisory_xact_lock($1)", &[&APPEND_LOCK])?;
            let n = events.len() as i64;
            // One step of n under the lock: the ids are last-n+1 ..= last.
            let last: i64 =
                tx.query_one("SELECT setval('events_id_seq', nextval('events_id_seq') + $1 - 1)", &[&n])?.try_get(0)?;
            let first = last - n + 1;
            let sink = tx.copy_in(&format!("COPY events ({COLS}) FROM STDIN BINARY"))?;
            let types = [
                Type::INT8,
                Type::INT8,
                Type::TEXT,
                Type::TEXT,
                Type::TEXT,
                Type::TEXT,
                Type::TEXT,
                Type::TEXT,
                Type::TEXT,
                Type::TEXT,
                Type::TEXT,
                Type::TEXT,
                Type::TEXT,
                Type::TEXT,
                Type::TEXT,
                Type::INT8,
                Type::TEXT,
                Type::INT8,
                Type::INT8,
                Type::INT8,
                Type::TEXT,
                Type::INT8,
                Type::TEXT,
            ];
            let mut w = BinaryCopyInWriter::new(sink, &types);
            for (i, e) in events.iter_mut().enumerate() {
                e.id = first + i as i64;
                let status = e.http_status.map(i64::from);
                let (bi, bo, lat) =
                    (e.bytes_in.map(|b| b as i64), e.bytes_out.map(|b| b as i64), e.latency_us.map(|b| b as i64));
                let asn = e.asn.map(i64::from);
                w.write(&[
                    &e.id,
                    &e.ts,
                    &e.kind.as_str(),
                    &e.request_id,
                    &e.workspace_id,
                    &e.keyspace_id,
                    &e.key_id,
                    &e.key_hint,
                    &e.owner_id,
                    &e.fingerprint,
                    &e.source_ip,
                    &e.user_agent,
                    &e.method,
                    &e.path,
                    &e.outcome.as_str(),
                    &status,
                    &e.error,
                    &bi,
                    &bo,
                    &lat,
                    &e.country,
                    &asn,
                    &e.as_org,
                ])?;
            }
            w.finish()?;
            tx.commit()?;
            Ok(())
        })
    }

    fn apply_usage(&self, updates: &[(i64, UsageReport)]) -> Result<Vec<Option<String>>> {
        if updates.is_empty() {
            return Ok(Vec::new());
        }
        self.with("recording usage reports", |c| {
            let mut tx = c.transaction()?;
            let st = tx.prepare(
                "UPDATE events SET status = COALESCE($2, status), bytes_in = COALESCE($3, bytes_in),
                        bytes_out = COALESCE($4, bytes_out), latency_us = COALESCE($5, latency_us)
                 WHERE id = $1 AND request_id = $6 AND workspace_id = $7
                 RETURNING key_id",
            )?;
            let mut keys = Vec::with_capacity(updates.len());
            for (id, r) in updates {
                let row = tx.query_opt(
                    &st,
                    &[
                        id,
                        &r.http_status.map(i64::from),
                        &r.bytes_in.map(|b| b as i64),
                        &r.bytes_out.map(|b| b as i64),
                        &r.latency_us.map(|b| b as i64),
                        &r.request_id,
                        &r.workspace_id,
                    ],
                )?;
                keys.push(row.map(|r| r.try_get::<_, Option<String>>(0)).transpose()?.flatten());
            }
            tx.commit()?;
            Ok(keys)
        })
    }

    fn query(&self, f: &EventFilter) -> Result<Vec<UsageEvent>> {
        if f.owner_id.is_some() && f.key_id.is_none() && f.owner_keys.is_empty() {
            return Ok(Vec::new());
        }
        self.page(f)
    }

    fn after(&self, after_id: i64, limit: u32) -> Result<Vec<UsageEvent>> {
        self.with("reading events", |c| {
            c.query(
                &format!("SELECT {COLS} FROM events WHERE id > $1 ORDER BY id LIMIT $2"),
                &[&after_id, &i64::from(limit)],
            )?
            .iter()
            .map(event_from_row)
            .collect()
        })
    }

    fn by_ids(&self, workspace_id: &str, ids: &[i64]) -> Result<Vec<UsageEvent>> {
        self.with("reading events", |c| {
            c.query(
                &format!("SELECT {COLS} FROM events WHERE id = ANY($1) AND workspace_id = $2 ORDER BY id"),
                &[&ids, &workspace_id],
            )?
            .iter()
            .map(event_from_row)
            .collect()
        })
    }

    fn max_id(&self) -> Result<i64> {
        self.with("reading events", |c| {
            Ok(c.query_one("SELECT COALESCE(MAX(id), 0)::BIGINT FROM events", &[])?.try_get(0)?)
        })
    }

    fn review(&self, workspace_id: &str, key_id: &str, since: i64, until: i64, top: u32) -> Result<KeyUsageReview> {
        let filter = "key_id = $1 AND workspace_id = $2 AND ts >= $3 AND ts < $4";
        let top = i64::from(top);
        self.with("reviewing a key's usage", |c| {
            let p: &[&(dyn ToSql + Sync)] = &[&key_id, &workspace_id, &since, &until, &top];
            let total: i64 = c.query_one(&format!("SELECT COUNT(*) FROM events WHERE {filter}"), &p[..4])?.try_get(0)?;
            let ips = c
                .query(
                    &format!(
                        "SELECT COALESCE(ip, '-'), COUNT(*), MIN(ts), MAX(ts) FROM events WHERE {filter}
                         GROUP BY ip ORDER BY COUNT(*) DESC, ip LIMIT $5"
                    ),
                    p,
                )?
                .iter()
                .map(|r| {
                    Ok(IpUse {
                        ip: r.try_get(0)?,
                        count: r.try_get::<_, i64>(1)? as u64,
                        first_seen: r.try_get(2)?,
                        last_seen: r.try_get(3)?,
                    })
                })
                .collect::<Result<_>>()?;
            let endpoints = c
                .query(
                    &format!(
                        "SELECT COALESCE(method, '-'), COALESCE(path, '-'), COUNT(*) FROM events WHERE {filter}
                         GROUP BY method, path ORDER BY COUNT(*) DESC, 2 LIMIT $5"
                    ),
                    p,
                )?
                .iter()
                .map(|r| {
                    Ok(EndpointUse { method: r.try_get(0)?, path: r.try_get(1)?, count: r.try_get::<_, i64>(2)? as u64 })
                })
                .collect::<Result<_>>()?;
            let outcomes = c
                .query(
                    &format!(
                        "SELECT code, COUNT(*) FROM events WHERE {filter} GROUP BY code ORDER BY COUNT(*) DESC, code LIMIT $5"
                    ),
                    p,
                )?
                .iter()
                .map(|r| Ok((r.try_get::<_, String>(0)?, r.try_get::<_, i64>(1)? as u64)))
                .collect::<Result<_>>()?;
            Ok(KeyUsageReview { total: total as u64, ips, endpoints, outcomes })
        })
    }

    fn count(&self) -> Result<u64> {
        self.with("counting events", |c| {
            let n: i64 = c.query_one("SELECT COUNT(*) FROM events", &[])?.try_get(0)?;
            Ok(n as u64)
        })
    }

    /// Drops the partitions wholly older than `before_ts` (counting their
    /// rows), else deletes up to `chunk` older rows from the others.
    fn purge_chunk(&self, before_ts: i64, chunk: u32) -> Result<usize> {
        let dropped = self.with("dropping old event partitions", |c| {
            let mut tx = c.transaction()?;
            tx.execute("SELECT pg_advisory_xact_lock($1)", &[&APPEND_LOCK])?;
            let names: Vec<String> = tx
                .query(
                    "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
                     JOIN pg_class p ON p.oid = i.inhparent WHERE p.relname = 'events' AND c.relname LIKE 'events_d%'",
                    &[],
                )?
                .iter()
                .map(|r| r.try_get(0))
                .collect::<Result<_, _>>()?;
            let mut rows = 0usize;
            let mut gone = Vec::new();
            for name in names {
                let Some(day) = name.strip_prefix("events_d").and_then(|d| d.parse::<i64>().ok()) else { continue };
                if (day + 1) * DAY_MS <= before_ts {
                    let n: i64 = tx.query_one(&format!("SELECT COUNT(*) FROM {name}"), &[])?.try_get(0)?;
                    tx.batch_execute(&format!("DROP TABLE {name}"))?;
                    rows += n as usize;
                    gone.push(day);
                }
            }
            tx.commit()?;
            Ok((rows, gone))
        })?;
        if !dropped.1.is_empty() {
            let mut days = self.days.lock();
            for d in &dropped.1 {
                days.remove(d);
            }
        }
        if dropped.0 > 0 {
            return Ok(dropped.0);
        }
        self.with("purging old events", |c| {
            Ok(c.execute(
                "DELETE FROM events WHERE id IN (SELECT id FROM events WHERE ts < $1 ORDER BY id LIMIT $2) AND ts < $1",
                &[&before_ts, &i64::from(chunk)],
            )? as usize)
        })
    }

    fn cursor(&self, sink: &str) -> Result<Option<i64>> {
        self.with("reading a sink cursor", |c| {
            c.query_opt("SELECT last_id FROM sink_cursors WHERE name = $1", &[&sink])?
                .map(|r| r.try_get(0))
                .transpose()
                .map_err(Into::into)
        })
    }

    fn set_cursor(&self, sink: &str, last_id: i64, now: i64) -> Result<()> {
        self.with("writing a sink cursor", |c| {
            c.execute(
                "INSERT INTO sink_cursors (name, last_id, updated_at) VALUES ($1, $2, $3)
                 ON CONFLICT (name) DO UPDATE SET last_id = excluded.last_id, updated_at = excluded.updated_at",
                &[&sink, &last_id, &now],
            )?;
            Ok(())
        })
    }
}
