//! One node of the cluster does what must happen once: exporting events to
//! the sinks and running the rules engine over everyone's events. The node
//! that holds a session-level advisory lock is that leader; the lock goes
//! with its connection, so when the leader dies (or loses the database) the
//! lock is free and another node takes it within its retry interval.

use postgres::Client;

use crate::{Result, StoreError};

/// The lock the leader holds ("kwld").
pub const LEADER_LOCK: i64 = 0x6b77_6c64;

/// Held leadership: the connection that holds the lock.
pub struct Leadership {
    client: Option<Client>,
}

impl Leadership {
    /// Takes the lock if no other node holds it.
    pub fn try_take(url: &str) -> Result<Option<Leadership>> {
        super::store::off_runtime(|| {
            let mut client = super::connect(url)?;
            let got: bool = client
                .query_one("SELECT pg_try_advisory_lock($1)", &[&LEADER_LOCK])
                .map_err(|source| StoreError::Postgres { context: "taking the leader lock", source })?
                .try_get(0)?;
            Ok(got.then_some(Leadership { client: Some(client) }))
        })
    }

    /// Whether the lock is still held (its connection still answers).
    pub fn holds(&mut self) -> bool {
        let Some(c) = self.client.as_mut() else { return false };
        let alive = super::store::off_runtime(|| c.simple_query("SELECT 1").is_ok());
        if !alive {
            self.release();
        }
        alive
    }

    fn release(&mut self) {
        if let Some(c) = self.client.take() {
            super::store::off_runtime(move || drop(c));
        }
    }
}

impl Drop for Leadership {
    fn drop(&mut self) {
        self.release();
    }
}
