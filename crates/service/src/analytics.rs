//! Time series of a key's or a keyspace's usage, read from the rollups
//! (`core::rollup`, kept by `events::rollups`): a read of at most
//! [`MAX_POINTS`] buckets, never a scan of raw events.

use keyward_core::Outcome;
use keyward_core::Permission;
use keyward_core::rollup::{Agg, Granularity, Scope};
use keyward_core::time::{now_ms, parse_rfc3339, to_rfc3339};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use crate::validate::invalid;
use crate::{Actor, Result, Service, ServiceError};

/// The most buckets one series returns.
pub const MAX_POINTS: i64 = 2_000;

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct AnalyticsQuery {
    /// RFC 3339; default: `until` minus a day.
    pub since: Option<String>,
    /// RFC 3339; default: now.
    pub until: Option<String>,
    /// `minute`, `hour` (default) or `day`.
    pub granularity: Option<String>,
}

/// One bucket of a series.
#[derive(Debug, Serialize, ToSchema, PartialEq)]
pub struct Point {
    /// The bucket's start.
    pub t: String,
    pub requests: u64,
    pub valid: u64,
    pub denied: u64,
    /// Requests by outcome code (only codes that occurred).
    #[schema(value_type = Object)]
    pub outcomes: std::collections::BTreeMap<&'static str, u64>,
    /// Reported or proxied statuses by class (`2xx`, …; only classes that occurred).
    #[schema(value_type = Object)]
    pub status: std::collections::BTreeMap<&'static str, u64>,
    pub bytes_in: u64,
    pub bytes_out: u64,
    /// Distinct source addresses (exact up to 64, then estimated within a few percent).
    pub distinct_ips: u64,
    /// Latency percentiles in µs, when latencies were reported.
    pub latency_p50_us: Option<u64>,
    pub latency_p95_us: Option<u64>,
    pub latency_p99_us: Option<u64>,
}

/// A series: one point per bucket that saw traffic, and the totals.
#[derive(Debug, Serialize, ToSchema)]
pub struct Series {
    /// `key`, `keyspace` or `workspace`.
    pub scope: &'static str,
    pub id: String,
    pub granularity: &'static str,
    pub since: String,
    pub until: String,
    pub points: Vec<Point>,
    /// The whole range merged.
    pub totals: Point,
}

const CLASSES: [&str; 5] = ["1xx", "2xx", "3xx", "4xx", "5xx"];

fn point(t: i64, a: &Agg) -> Point {
    Point {
        t: to_rfc3339(t),
        requests: a.requests,
        valid: a.of(Outcome::Valid),
        denied: a.denied(),
        outcomes: Outcome::ALL.iter().zip(a.outcomes).filter(|(_, n)| *n > 0).map(|(o, n)| (o.as_str(), n)).collect(),
        status: CLASSES.iter().zip(a.status).filter(|(_, n)| *n > 0).map(|(c, n)| (*c, n)).collect(),
        bytes_in: a.bytes_in,
        bytes_out: a.bytes_out,
        distinct_ips: a.ips.count(),
        latency_p50_us: a.latency.quantile(0.5),
        latency_p95_us: a.latency.quantile(0.95),
        latency_p99_us: a.latency.quantile(0.99),
    }
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct TopQuery {
    /// `key` (default), `owner` or `ip`.
    pub dimension: Option<String>,
    /// `requests` (default), `denials` or `bytes` (in and out).
    pub by: Option<String>,
    /// RFC 3339; default: `until` minus a day.
    pub since: Option<String>,
    /// RFC 3339; default: now.
    pub until: Option<String>,
    /// How many, 1 to 100 (default 10).
    pub limit: Option<u32>,
}

/// One entry of a top list.
#[derive(Debug, Serialize, ToSchema, PartialEq)]
pub struct TopItem {
    /// The key id, owner id or address; `other` sums the addresses past the
    /// first 10,000 of a workspace in one hour or day (the roller's bound).
    pub id: String,
    /// For keys: the key's name and hint, when it still exists.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hint: Option<String>,
    pub requests: u64,
    pub denied: u64,
    /// Bytes in and out.
    pub bytes: u64,
}

/// The largest users of a workspace over a range (`GET /v1/analytics/top`).
#[derive(Debug, Serialize, ToSchema)]
pub struct TopList {
    pub dimension: &'static str,
    pub by: &'static str,
    /// The granularity the range was summed at (whole buckets).
    pub granularity: &'static str,
    pub since: String,
    pub until: String,
    pub items: Vec<TopItem>,
}

/// `[since, until)` in ms from RFC 3339 bounds (default: the day before `until`, now).
fn range(since: &Option<String>, until: &Option<String>) -> Result<(i64, i64)> {
    let at = |field: &str, v: &Option<String>| -> Result<Option<i64>> {
        v.as_deref()
            .map(|s| parse_rfc3339(s).ok_or_else(|| invalid(format!("{field} must be an RFC 3339 instant"))))
            .transpose()
    };
    let until = at("until", until)?.unwrap_or_else(now_ms);
    let since = at("since", since)?.unwrap_or(until - 86_400_000);
    if since >= until {
        return Err(invalid("since must be before until"));
    }
    Ok((since, until))
}

impl Service {
    /// The top keys, owners or addresses of the caller's workspace over a
    /// range, summed in the store from the rollups: by minute up to six
    /// hours, by hour up to 7 days, else by day (addresses: never by minute).
    pub async fn top(&self, actor: &Actor, q: TopQuery) -> Result<TopList> {
        actor.require(Permission::KeysRead, "read analytics")?;
        let scope = match q.dimension.as_deref().unwrap_or("key") {
            "key" => Scope::Key,
            "owner" => Scope::Owner,
            "ip" => Scope::Ip,
            _ => return Err(invalid("dimension must be key, owner or ip")),
        };
        let by = keyward_store::events::TopBy::parse(q.by.as_deref().unwrap_or("requests"))
            .ok_or_else(|| invalid("by must be requests, denials or bytes"))?;
        let limit = q.limit.unwrap_or(10);
        if !(1..=100).contains(&limit) {
            return Err(invalid("limit must be between 1 and 100"));
        }
        let (since, until) = range(&q.since, &q.until)?;
        let span = until - since;
        let gran = if span <= 6 * 3_600_000 && scope != Scope::Ip {
            Granularity::Minute
        } else if span <= 7 * 86_400_000 {
            Granularity::Hour
        } else {
            Granularity::Day
        };
        let (lo, hi) = (gran.bucket(since), gran.bucket(until - 1) + gran.width_ms());
        let Some(events) = self.events() else { return Err(ServiceError::NotConfigured("usage events")) };
        let log = events.log().clone();
        let ws = actor.workspace_id.clone();
        let rows = tokio::task::spawn_blocking(move || log.rollup_top(&ws, scope, gran, lo, hi, by, limit))
            .await
            .map_err(|_| ServiceError::Task)??;
        // Keys are named from the store (at most 100 point reads).
        let (ws, ids) = (actor.workspace_id.clone(), rows.iter().map(|r| r.target.clone()).collect::<Vec<_>>());
        let named: Vec<Option<(Option<String>, String)>> = if scope == Scope::Key {
            self.blocking(move |s| ids.iter().map(|id| Ok(s.get_key(&ws, id)?.map(|k| (k.name, k.hint)))).collect())
                .await?
        } else {
            vec![None; rows.len()]
        };
        let items = rows
            .into_iter()
            .zip(named)
            .map(|(r, n)| {
                let (name, hint) = n.map_or((None, None), |(name, hint)| (name, Some(hint)));
                TopItem { name, hint, id: r.target, requests: r.requests, denied: r.denied, bytes: r.bytes }
            })
            .collect();
        Ok(TopList {
            dimension: scope.as_str(),
            by: by.as_str(),
            granularity: gran.as_str(),
            since: to_rfc3339(lo),
            until: to_rfc3339(hi),
            items,
        })
    }

    /// A key's series (`GET /v1/keys/{id}/analytics`).
    pub async fn key_analytics(&self, actor: &Actor, id: &str, q: AnalyticsQuery) -> Result<Series> {
        actor.require(Permission::KeysRead, "read key analytics")?;
        let (ws, kid) = (actor.workspace_id.clone(), id.to_owned());
        if self.blocking(move |s| s.get_key(&ws, &kid)).await?.is_none() {
            return Err(ServiceError::not_found("key", id));
        }
        self.series(actor, Scope::Key, id, q).await
    }

    /// A keyspace's series (`GET /v1/keyspaces/{id}/analytics`).
    pub async fn keyspace_analytics(&self, actor: &Actor, id: &str, q: AnalyticsQuery) -> Result<Series> {
        actor.require(Permission::KeysRead, "read keyspace analytics")?;
        let (ws, kid) = (actor.workspace_id.clone(), id.to_owned());
        if self.blocking(move |s| s.get_keyspace(&ws, &kid)).await?.is_none() {
            return Err(ServiceError::not_found("keyspace", id));
        }
        self.series(actor, Scope::Keyspace, id, q).await
    }

    /// The caller's whole workspace as one series (the dashboard's overview).
    pub async fn workspace_analytics(&self, actor: &Actor, q: AnalyticsQuery) -> Result<Series> {
        actor.require(Permission::KeysRead, "read workspace analytics")?;
        let ws = actor.workspace_id.clone();
        self.series(actor, Scope::Workspace, &ws, q).await
    }

    async fn series(&self, actor: &Actor, scope: Scope, id: &str, q: AnalyticsQuery) -> Result<Series> {
        let gran = match q.granularity.as_deref() {
            None => Granularity::Hour,
            Some(g) => Granularity::parse(g).ok_or_else(|| invalid("granularity must be minute, hour or day"))?,
        };
        let (since, until) = range(&q.since, &q.until)?;
        // Whole buckets: the one holding `since` to the one holding `until`.
        let (lo, hi) = (gran.bucket(since), gran.bucket(until - 1) + gran.width_ms());
        if (hi - lo) / gran.width_ms() > MAX_POINTS {
            return Err(invalid(format!(
                "that range has more than {MAX_POINTS} {} buckets; ask for a coarser granularity or a shorter range",
                gran.as_str()
            )));
        }
        let Some(events) = self.events() else { return Err(ServiceError::NotConfigured("usage events")) };
        let log = events.log().clone();
        let (ws, target) = (actor.workspace_id.clone(), id.to_owned());
        let rows = tokio::task::spawn_blocking(move || log.rollup_series(&ws, scope, &target, gran, lo, hi))
            .await
            .map_err(|_| ServiceError::Task)??;
        let mut total = Agg::default();
        let points = rows
            .iter()
            .map(|(t, a)| {
                total.merge(a);
                point(*t, a)
            })
            .collect();
        Ok(Series {
            scope: scope.as_str(),
            id: id.to_owned(),
            granularity: gran.as_str(),
            since: to_rfc3339(lo),
            until: to_rfc3339(hi),
            points,
            totals: point(lo, &total),
        })
    }
}
