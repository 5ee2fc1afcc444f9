//! What `/metrics` shows of the service beyond its counters: the verify
//! decision's latency, keys by status, and open alerts by rule and severity.
//! Every label is bounded: outcome codes, five statuses, the rule catalogue
//! and four severities; never a key, owner or address.

use std::fmt::Write;
use std::time::{Duration, Instant};

use keyward_core::Outcome;
use keyward_core::histogram::Histogram;
use keyward_core::time::now_ms;
use keyward_core::verify::check_lifecycle;

use crate::{Result, Service};

/// Upper bounds of the verify latency buckets, seconds: a hit is a
/// microsecond, a store miss or a Redis call a millisecond or more.
pub(crate) static VERIFY_BOUNDS: [f64; 15] =
    [1e-6, 2.5e-6, 5e-6, 1e-5, 2.5e-5, 5e-5, 1e-4, 2.5e-4, 5e-4, 1e-3, 2.5e-3, 5e-3, 0.01, 0.1, 1.0];

/// The statuses keys are counted by.
const STATUSES: [&str; 5] = ["active", "disabled", "expired", "revoked", "rotated"];

pub(crate) fn verify_histogram() -> Histogram {
    Histogram::new(&VERIFY_BOUNDS)
}

impl Service {
    /// Records how long a verify decision took.
    pub(crate) fn time_verify(&self, started: Instant) {
        self.verify_latency.record(started.elapsed());
    }

    /// The verify decisions timed so far.
    pub fn verifies_timed(&self) -> u64 {
        self.verify_latency.count()
    }

    /// Keys in the index by status (active, disabled, expired, revoked, rotated).
    pub fn keys_by_status(&self) -> [(&'static str, u64); 5] {
        let now = now_ms();
        let mut n = [0u64; 5];
        for k in self.index.all() {
            let i = match check_lifecycle(&k.lifecycle(), now) {
                Outcome::Revoked => 3,
                Outcome::Rotated => 4,
                Outcome::Disabled => 1,
                Outcome::Expired => 2,
                _ => 0,
            };
            n[i] += 1;
        }
        std::array::from_fn(|i| (STATUSES[i], n[i]))
    }

    /// Open (not resolved) alerts by rule and severity.
    pub async fn open_alerts(&self) -> Result<Vec<(String, String, u64)>> {
        let live = self.blocking(|s| s.live_alerts(i64::MAX)).await?;
        let mut counts = std::collections::BTreeMap::new();
        for a in live.into_iter().filter(|a| a.status != "resolved") {
            *counts.entry((a.rule, a.severity)).or_insert(0u64) += 1;
        }
        Ok(counts.into_iter().map(|((r, s), n)| (r, s, n)).collect())
    }

    /// The service's part of `/metrics`, in the Prometheus text format.
    pub async fn render_metrics(&self) -> String {
        let mut out = String::from(
            "# HELP keyward_verify_duration_seconds Time to decide a verification in process (lookup, checks, limits).\n\
             # TYPE keyward_verify_duration_seconds histogram\n",
        );
        self.verify_latency.render(&mut out, "keyward_verify_duration_seconds", "");
        out.push_str("# HELP keyward_keys Keys known to this node, by status.\n# TYPE keyward_keys gauge\n");
        for (status, n) in self.keys_by_status() {
            let _ = writeln!(out, "keyward_keys{{status=\"{status}\"}} {n}");
        }
        out.push_str(
            "# HELP keyward_alerts_open Alerts not resolved, by rule and severity.\n# TYPE keyward_alerts_open gauge\n",
        );
        match tokio::time::timeout(Duration::from_secs(2), self.open_alerts()).await {
            Ok(Ok(rows)) => {
                for (rule, severity, n) in rows {
                    let _ = writeln!(out, "keyward_alerts_open{{rule=\"{rule}\",severity=\"{severity}\"}} {n}");
                }
            }
            _ => tracing::warn!("Counting open alerts for /metrics failed or took too long."),
        }
        out
    }
}
