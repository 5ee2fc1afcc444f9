//! The change feed: every write that affects verification (a key, keyspace,
//! root key or setting) adds a row to `changes` in its own transaction and
//! `NOTIFY`s [`CHANNEL`] at commit. A node follows the feed with a
//! [`ChangeFeed`]: it waits on `LISTEN` (so a change reaches it within
//! milliseconds) or for at most the poll interval (so a lost notification
//! costs one interval, never correctness), then reads every row after the
//! last one it applied. Rows are numbered in commit order (the writers hold
//! the write lock, see `store.rs`), so reading `seq > last` misses nothing.

use std::time::{Duration, Instant};

use postgres::Client;
use postgres::fallible_iterator::FallibleIterator;

use super::CHANNEL;
use crate::{Result, StoreError};

/// One change, for a node to reload what it names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    pub seq: i64,
    /// `key`, `keyspace`, `root_key`, `setting` or `rules`.
    pub kind: String,
    pub workspace_id: String,
    pub id: String,
    /// The node that made it.
    pub node: Option<String>,
}

/// What a poll found.
#[derive(Debug)]
pub enum Batch {
    /// Changes after the last one applied (possibly none).
    Changes(Vec<Change>),
    /// The node was away longer than the feed keeps rows: reload everything.
    Resync,
}

/// How long rows stay in `changes`.
pub const RETENTION_MS: i64 = 24 * 3_600_000;
/// A node that has not read the feed for this long reloads everything,
/// well before the rows it missed can have been purged.
const RESYNC_AFTER: Duration = Duration::from_secs(3_600);
/// How often a node purges rows past their retention.
const PURGE_EVERY: Duration = Duration::from_secs(600);

/// One node's position in the feed, over a connection of its own.
pub struct ChangeFeed {
    url: String,
    client: Option<Client>,
    last: i64,
    last_read: Instant,
    purged: Instant,
}

impl ChangeFeed {
    /// The newest change now: a node that loads its state after reading this
    /// follows from here and misses nothing (a change in between is applied
    /// twice, which is harmless: applying reloads).
    pub fn head(url: &str) -> Result<i64> {
        super::store::off_runtime(|| {
            let mut c = super::connect(url)?;
            Ok(c.query_one("SELECT COALESCE(MAX(seq), 0)::BIGINT FROM changes", &[])?.try_get(0)?)
        })
    }

    /// Follows the feed after `last`.
    pub fn new(url: &str, last: i64) -> ChangeFeed {
        ChangeFeed { url: url.to_owned(), client: None, last, last_read: Instant::now(), purged: Instant::now() }
    }

    /// The last change read.
    pub fn position(&self) -> i64 {
        self.last
    }

    /// Waits for a notification for at most `wait`, then reads what is new.
    /// An error means the database could not be reached; the next call
    /// reconnects (and reads everything it missed meanwhile).
    pub fn next(&mut self, wait: Duration) -> Result<Batch> {
        let out = self.poll(wait);
        if out.is_err() {
            self.client = None;
        }
        out
    }

    fn poll(&mut self, wait: Duration) -> Result<Batch> {
        if self.client.is_none() {
            let mut c = super::connect(&self.url)?;
            c.batch_execute(&format!("LISTEN {CHANNEL}"))
                .map_err(|source| StoreError::Postgres { context: "listening for changes", source })?;
            self.client = Some(c);
        } else if let Some(c) = self.client.as_mut() {
            let mut notes = c.notifications();
            let woken = notes
                .timeout_iter(wait)
                .next()
                .map_err(|source| StoreError::Postgres { context: "waiting for changes", source })?
                .is_some();
            // Take the others already queued: one read covers them all.
            while woken
                && notes
                    .iter()
                    .next()
                    .map_err(|source| StoreError::Postgres { context: "reading notifications", source })?
                    .is_some()
            {}
        }
        if self.last_read.elapsed() > RESYNC_AFTER {
            self.last = Self::head(&self.url)?;
            self.last_read = Instant::now();
            return Ok(Batch::Resync);
        }
        let Some(c) = self.client.as_mut() else {
            return Err(StoreError::Pool("the change feed's connection is gone".into()));
        };
        let rows = c
            .query(
                "SELECT seq, kind, workspace_id, target_id, node FROM changes WHERE seq > $1 ORDER BY seq LIMIT 10000",
                &[&self.last],
            )
            .map_err(|source| StoreError::Postgres { context: "reading changes", source })?;
        let changes = rows
            .iter()
            .map(|r| {
                Ok(Change {
                    seq: r.try_get(0)?,
                    kind: r.try_get(1)?,
                    workspace_id: r.try_get(2)?,
                    id: r.try_get(3)?,
                    node: r.try_get(4)?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        if let Some(c) = changes.last() {
            self.last = c.seq;
        }
        self.last_read = Instant::now();
        if self.purged.elapsed() > PURGE_EVERY {
            self.purged = Instant::now();
            let before = keyward_core::time::now_ms() - RETENTION_MS;
            c.execute("DELETE FROM changes WHERE at < $1", &[&before])
                .map_err(|source| StoreError::Postgres { context: "purging old changes", source })?;
        }
        Ok(Batch::Changes(changes))
    }
}
