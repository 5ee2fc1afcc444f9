//! Several nodes over one PostgreSQL store: each node keeps its in-memory
//! index in step with the others by following the change feed
//! (`keyward_store::postgres::changes`), and refuses to verify when it has
//! lost the feed for longer than its staleness bound.
//!
//! Invariants:
//! * A change made on another node is in this node's index within one
//!   notification round trip (milliseconds), and within one poll interval
//!   even if the notification is lost.
//! * A node that has not read the feed for `max_staleness_ms` answers
//!   verifications 503 instead of a decision it can no longer vouch for.

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::time::Duration;

use keyward_core::time::now_ms;
use keyward_store::postgres::changes::{Batch, Change, ChangeFeed};

use crate::index::QuotaFrom;
use crate::{Result, Service, ServiceError};

/// How a node follows the others.
#[derive(Debug, Clone)]
pub struct ClusterConfig {
    /// The longest time a node keeps answering without having read the feed, ms.
    pub max_staleness_ms: i64,
    /// How long a follower waits for a notification before it polls anyway, ms.
    pub poll_ms: u64,
}

impl Default for ClusterConfig {
    fn default() -> Self {
        ClusterConfig { max_staleness_ms: 5_000, poll_ms: 1_000 }
    }
}

/// What a node does when Redis, which holds the cluster's limits, cannot
/// be reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum OnUnavailable {
    /// Refuse verifications (503): no limit is ever exceeded. The default.
    Closed,
    /// Fall back to this node's own in-memory limits: the service stays up,
    /// and each node enforces the limits alone (up to n × a limit in all).
    Local,
}

/// Rate limits and quotas shared by the cluster, on Redis.
pub(crate) struct SharedLimits {
    pub(crate) redis: keyward_limits::RedisLimiter,
    pub(crate) on_unavailable: OnUnavailable,
    /// Whether the last call reached Redis.
    pub(crate) up: AtomicBool,
}

/// This node's view of its place in the cluster.
pub(crate) struct ClusterState {
    /// When the feed was last read in full.
    synced_at: AtomicI64,
    max_staleness_ms: i64,
    /// Whether the node was stale at its last check (logged once per episode).
    stale: AtomicBool,
    node: String,
}

impl Service {
    /// Makes this service a cluster node named `node` (the store's name for it in `changes`).
    pub fn join_cluster(&self, node: &str, config: &ClusterConfig) {
        let _ = self.cluster.set(ClusterState {
            synced_at: AtomicI64::new(now_ms()),
            max_staleness_ms: config.max_staleness_ms,
            stale: AtomicBool::new(false),
            node: node.to_owned(),
        });
    }

    /// Keeps rate limits and quotas in Redis, shared with every node.
    pub fn share_limits(&self, redis: keyward_limits::RedisLimiter, on_unavailable: OnUnavailable) {
        metrics::gauge!("keyward_redis_up").set(1.0);
        let _ = self.limits.set(SharedLimits { redis, on_unavailable, up: AtomicBool::new(true) });
    }

    /// Whether Redis holds the limits, and whether it answered last time.
    pub fn limits_state(&self) -> Option<(bool, OnUnavailable)> {
        self.limits.get().map(|l| (l.up.load(Ordering::Relaxed), l.on_unavailable))
    }

    /// Checks Redis now (for `/readyz`); records the answer.
    pub async fn check_limits(&self) -> Option<(bool, OnUnavailable)> {
        let l = self.limits.get()?;
        let up = l.redis.ping().await.is_ok();
        l.mark(up);
        Some((up, l.on_unavailable))
    }

    /// Milliseconds since the feed was last read (`None` on a single node).
    pub fn cluster_lag_ms(&self) -> Option<i64> {
        self.cluster.get().map(|c| now_ms() - c.synced_at.load(Ordering::Relaxed))
    }

    /// [`Service::check_fresh`], for `/readyz`.
    pub fn check_fresh_now(&self) -> Result<()> {
        self.check_fresh()
    }

    /// Refuses when this node may be missing changes made elsewhere.
    pub(crate) fn check_fresh(&self) -> Result<()> {
        let Some(c) = self.cluster.get() else { return Ok(()) };
        let lag = now_ms() - c.synced_at.load(Ordering::Relaxed);
        if lag <= c.max_staleness_ms {
            return Ok(());
        }
        if !c.stale.swap(true, Ordering::Relaxed) {
            tracing::error!(lag_ms = lag, bound_ms = c.max_staleness_ms, "Lost the change feed: refusing to verify.");
        }
        Err(ServiceError::Unavailable(format!(
            "this node has not heard from the database for {} ms (bound {} ms), so it cannot vouch for any key's \
             state; retry on another node, or check the database connection",
            lag, c.max_staleness_ms
        )))
    }

    fn mark_synced(&self) {
        if let Some(c) = self.cluster.get() {
            c.synced_at.store(now_ms(), Ordering::Relaxed);
            if c.stale.swap(false, Ordering::Relaxed) {
                tracing::info!("Change feed back: verifying again.");
            }
        }
    }

    /// Reloads what each change names (those this node made are in its memory already).
    pub fn apply_changes(&self, changes: &[Change]) -> Result<usize> {
        let own = self.cluster.get().map(|c| c.node.as_str());
        let mut seen = HashSet::new();
        let mut applied = 0;
        let mut roots = false;
        for ch in changes {
            if ch.node.as_deref().is_some_and(|n| Some(n) == own) || !seen.insert((&ch.kind, &ch.id)) {
                continue;
            }
            applied += 1;
            match ch.kind.as_str() {
                "key" => self.reload_key(&ch.workspace_id, &ch.id)?,
                "keyspace" => {
                    if let Some(ks) = self.store.get_keyspace(&ch.workspace_id, &ch.id)? {
                        self.keyspace_cell(&ks.id).set(crate::index::KeyspacePolicy::from_record(&ks));
                    }
                }
                "root_key" => roots = true,
                // Settings (pepper checks) and alert rules are read where they are used.
                _ => {}
            }
        }
        if roots {
            for r in self.store.all_root_keys()? {
                self.put_root(r);
            }
        }
        Ok(applied)
    }

    fn reload_key(&self, workspace_id: &str, id: &str) -> Result<()> {
        let Some(rec) = self.store.get_key(workspace_id, id)? else { return Ok(()) };
        self.negative.remove(&rec.hash);
        self.imported.note(&rec);
        let cell = self.keyspace_cell(&rec.keyspace_id);
        let successor = rec
            .rotated_to
            .clone()
            .filter(|_| rec.revoked_at.is_none() && rec.overlap_until.is_some_and(|t| t > now_ms()));
        // The node's own count of the quota stays: without Redis, quotas are per node.
        let cached = self.index.put(rec, cell, QuotaFrom::Live);
        if let Some(next) = successor
            && let Some(next) = self.store.get_key(workspace_id, &next)?
            && let Some(next) = self.index.get(&next.hash)
        {
            self.index.share_limiter(&cached, &next);
        }
        Ok(())
    }

    /// Reloads every key, keyspace and root key (after a long absence).
    pub fn reload_all(&self) -> Result<()> {
        for ks in self.store.all_keyspaces()? {
            self.keyspace_cell(&ks.id).set(crate::index::KeyspacePolicy::from_record(&ks));
        }
        let mut keys = Vec::new();
        self.store.for_each_key(&mut |k| keys.push((k.workspace_id, k.id)))?;
        for (ws, id) in keys {
            self.reload_key(&ws, &id)?;
        }
        for r in self.store.all_root_keys()? {
            self.put_root(r);
        }
        Ok(())
    }
}

impl SharedLimits {
    pub(crate) fn mark(&self, up: bool) {
        let was = self.up.swap(up, Ordering::Relaxed);
        if was != up {
            metrics::gauge!("keyward_redis_up").set(if up { 1.0 } else { 0.0 });
            match (up, self.on_unavailable) {
                (true, _) => tracing::info!("Redis answers again: limits are shared by the cluster."),
                (false, OnUnavailable::Closed) => {
                    tracing::error!(
                        "Redis cannot be reached: verifications are refused (redis.on_unavailable = closed)."
                    )
                }
                (false, OnUnavailable::Local) => tracing::error!(
                    "Redis cannot be reached: each node enforces limits alone until it is back (redis.on_unavailable = local)."
                ),
            }
        }
    }
}

/// Follows the feed on a thread of its own until `stop` is set.
pub fn follow(
    service: Arc<Service>,
    mut feed: ChangeFeed,
    config: ClusterConfig,
    stop: Arc<AtomicBool>,
    runtime: tokio::runtime::Handle,
) -> std::io::Result<std::thread::JoinHandle<()>> {
    std::thread::Builder::new().name("keyward-follow".into()).spawn(move || {
        let wait = Duration::from_millis(config.poll_ms.max(10));
        let mut failing = false;
        while !stop.load(Ordering::Relaxed) {
            let step = feed.next(wait).map_err(ServiceError::from).and_then(|batch| match batch {
                Batch::Changes(changes) => {
                    let n = service.apply_changes(&changes)?;
                    // Alert rules changed elsewhere: the engine here (on the leader) reads them again.
                    let own = service.cluster.get().map(|c| c.node.as_str());
                    if changes.iter().any(|c| c.kind == "rules" && c.node.as_deref() != own) {
                        runtime.block_on(service.reload_rules())?;
                    }
                    if n > 0 {
                        metrics::counter!("keyward_cluster_changes_applied_total").increment(n as u64);
                        tracing::debug!(applied = n, position = feed.position(), "Applied changes from other nodes.");
                    }
                    Ok(())
                }
                Batch::Resync => {
                    tracing::warn!("Away from the change feed too long: reloading every key.");
                    service.reload_all()
                }
            });
            match step {
                Ok(()) => {
                    service.mark_synced();
                    if std::mem::take(&mut failing) {
                        tracing::info!("Reading the change feed again.");
                    }
                }
                Err(e) => {
                    if !std::mem::replace(&mut failing, true) {
                        tracing::warn!(error = %e, "Cannot read the change feed; retrying.");
                    }
                    std::thread::sleep(Duration::from_millis(200));
                }
            }
        }
    })
}
