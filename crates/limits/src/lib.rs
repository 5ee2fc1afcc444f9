//! Rate-limit windows and quotas on Redis, for several keyward nodes that
//! must enforce one limit together (issue 13). The decision is the single
//! node's, `core::policy::Limiter::admit`, run as one Lua script
//! (`admit.lua`), so it is atomic across the cluster: no window admits more
//! than its limit, the quota never goes below zero, and a refused request
//! consumes nothing. The tests replay random traffic through both and demand
//! the same answer at every step.
//!
//! Time: the caller may pass its clock (tests, and a node that must agree
//! with its own in-memory state), or `None` to use the Redis server's clock,
//! the one clock every node shares.
//!
//! The service decides what a node does when Redis cannot be reached
//! (`redis.on_unavailable`); this crate reports the failure as [`LimitsError`].

use keyward_core::Outcome;
use keyward_core::policy::{Admission, Quota, RateLimit, WindowReport};
use keyward_core::time::UnixMs;

mod error;
pub use error::LimitsError;

/// A connection to Redis and the loaded script.
#[derive(Clone)]
pub struct RedisLimiter {
    conn: redis::aio::ConnectionManager,
    script: redis::Script,
    prefix: String,
}

impl RedisLimiter {
    /// Connects to `url` (`redis://host:port/db`, `unix:///path/to.sock`);
    /// the connection is re-established by itself after a failure. Every call
    /// gives up after `timeout` (a verify must not hang on a lost Redis).
    pub async fn connect(url: &str, prefix: &str, timeout: std::time::Duration) -> Result<RedisLimiter, LimitsError> {
        let client = redis::Client::open(url).map_err(|e| LimitsError::Url(e.to_string()))?;
        let config = redis::aio::ConnectionManagerConfig::new()
            .set_response_timeout(timeout)
            .set_connection_timeout(timeout)
            .set_number_of_retries(1);
        let conn = redis::aio::ConnectionManager::new_with_config(client, config).await.map_err(LimitsError::Redis)?;
        Ok(RedisLimiter { conn, script: redis::Script::new(include_str!("admit.lua")), prefix: prefix.to_owned() })
    }

    /// Decides one request of `cost` units for the limiter `id` (a key, or the
    /// first key of a rotation so that an overlap shares its limits), with its
    /// windows and quota. `quota` seeds the state the first time the limiter
    /// is seen; after that Redis holds it.
    pub async fn admit(
        &self,
        id: &str,
        windows: &[RateLimit],
        quota: Option<&Quota>,
        now: Option<UnixMs>,
        cost: u64,
    ) -> Result<Admission, LimitsError> {
        let mut inv = self.script.key(format!("{}:{id}", self.prefix));
        inv.arg(now.unwrap_or(0)).arg(cost).arg(windows.len());
        for w in windows {
            inv.arg(&w.name).arg(w.limit).arg(w.window_ms);
        }
        match quota {
            Some(q) => {
                let (interval, amount) = q.refill.map_or((0, 0), |r| (r.interval_ms, r.amount));
                inv.arg(1).arg(q.remaining).arg(q.refilled_at).arg(interval).arg(amount);
            }
            None => {
                inv.arg(0).arg(0).arg(0).arg(0).arg(0);
            }
        }
        let mut conn = self.conn.clone();
        let r: (i64, i64, String, u64, i64, u64, i64, i64, i64) =
            inv.invoke_async(&mut conn).await.map_err(LimitsError::Redis)?;
        let (code, has_report, name, limit, window_ms, remaining, reset, has_quota, quota_left) = r;
        let outcome = match code {
            0 => Outcome::Valid,
            1 => Outcome::RateLimited,
            _ => Outcome::UsageExceeded,
        };
        let window = (has_report == 1).then_some(WindowReport { name, limit, window_ms, remaining, reset });
        Ok(Admission { outcome, window, remaining: (has_quota == 1).then_some(quota_left) })
    }

    /// Makes `to`'s limits a copy of `from`'s (its windows and quota), for a
    /// rotation: the new key goes on from the old key's counts, as one
    /// limiter does on a single node. Nothing is overwritten that exists.
    pub async fn copy(&self, from: &str, to: &str, windows: &[RateLimit]) -> Result<(), LimitsError> {
        let mut keys = vec![":q".to_owned()];
        keys.extend(windows.iter().map(|w| format!(":w:{}:{}", w.name, w.window_ms)));
        let mut pipe = redis::pipe();
        for k in &keys {
            pipe.cmd("COPY").arg(format!("{}:{from}{k}", self.prefix)).arg(format!("{}:{to}{k}", self.prefix)).ignore();
        }
        let mut conn = self.conn.clone();
        pipe.query_async::<()>(&mut conn).await.map_err(LimitsError::Redis)
    }

    /// Whether Redis answers (for `/readyz`).
    pub async fn ping(&self) -> Result<(), LimitsError> {
        let mut conn = self.conn.clone();
        redis::cmd("PING").query_async::<String>(&mut conn).await.map(|_| ()).map_err(LimitsError::Redis)
    }
}
