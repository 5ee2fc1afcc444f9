//! Usage events from the service's side: building one per verification, and
//! the event queries and usage reports of the API.

use keyward_core::Outcome;
use keyward_core::Permission;
use keyward_core::event::{EventKind, UsageEvent, UsageReport, scrub};
use keyward_core::policy::{ScopeRequest, missing_scopes};
use keyward_core::time::{now_ms, parse_rfc3339, to_rfc3339};
use keyward_events::Reported;
use keyward_store::events::EventFilter;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use crate::decision::Decision;
use crate::validate::invalid;
use crate::verify::{RequestCtx, VerifyInput};
use crate::{Actor, Result, Service, ServiceError};

/// Most keys an owner filter of the event log reads through.
const MAX_OWNER_KEYS: usize = 10_000;

/// `GET /v1/events` parameters.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct EventQuery {
    pub key_id: Option<String>,
    pub owner_id: Option<String>,
    /// Source address as recorded.
    pub ip: Option<String>,
    /// Outcome code, e.g. `RATE_LIMITED`.
    pub code: Option<String>,
    /// Status class: `2xx`, `3xx`, `4xx` or `5xx` (of reported or proxied requests).
    pub status: Option<String>,
    /// RFC 3339; events at or after.
    pub since: Option<String>,
    /// RFC 3339; events before.
    pub until: Option<String>,
    /// The `next_cursor` of the previous page.
    pub cursor: Option<String>,
    /// 1 to 1000, default 100 (NDJSON: no limit unless given).
    #[param(minimum = 1)]
    pub limit: Option<u32>,
    /// `desc` (default, newest first) or `asc`.
    pub order: Option<String>,
}

/// One usage event as the API shows it.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct EventView {
    pub id: i64,
    pub timestamp: String,
    /// `verify` or `proxy`.
    pub kind: String,
    pub request_id: String,
    pub keyspace_id: Option<String>,
    pub key_id: Option<String>,
    pub key_hint: Option<String>,
    pub owner_id: Option<String>,
    /// For MALFORMED / NOT_FOUND: a fingerprint of the presented string, to correlate repeats.
    pub fingerprint: Option<String>,
    pub ip: Option<String>,
    pub user_agent: Option<String>,
    pub method: Option<String>,
    pub path: Option<String>,
    pub code: Outcome,
    pub status: Option<u16>,
    pub error: Option<String>,
    pub bytes_in: Option<u64>,
    pub bytes_out: Option<u64>,
    pub latency_ms: Option<u64>,
    /// The source's country (ISO 3166-1 alpha-2), with IP enrichment configured.
    pub country: Option<String>,
    /// The source's autonomous system number and organization.
    pub asn: Option<u32>,
    pub as_org: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct EventPage {
    pub data: Vec<EventView>,
    /// Pass as `cursor` for the next page; null on the last page.
    pub next_cursor: Option<String>,
}

/// `POST /v1/usage`: what the application saw of a request it verified.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UsageRequest {
    /// The `X-Request-Id` of the verify call.
    pub request_id: String,
    /// The final HTTP status the application answered.
    pub status: Option<u16>,
    pub bytes_in: Option<u64>,
    pub bytes_out: Option<u64>,
    /// Latency of the whole request, milliseconds.
    pub latency_ms: Option<u64>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct UsageAccepted {
    pub request_id: String,
    pub accepted: bool,
}

pub fn event_view(e: UsageEvent) -> EventView {
    EventView {
        id: e.id,
        timestamp: to_rfc3339(e.ts),
        kind: e.kind.as_str().to_owned(),
        request_id: e.request_id,
        keyspace_id: e.keyspace_id,
        key_id: e.key_id,
        key_hint: e.key_hint,
        owner_id: e.owner_id,
        fingerprint: e.fingerprint,
        ip: e.source_ip,
        user_agent: e.user_agent,
        method: e.method,
        path: e.path,
        code: e.outcome,
        status: e.http_status,
        error: e.error,
        bytes_in: e.bytes_in,
        bytes_out: e.bytes_out,
        latency_ms: e.latency_us.map(|u| u / 1000),
        country: e.country,
        asn: e.asn,
        as_org: e.as_org,
    }
}

impl Service {
    /// The event of a request the gateway checked (and, when admitted,
    /// forwarded): the caller adds status, bytes and latency.
    pub fn gateway_event(
        &self,
        workspace_id: &str,
        input: &VerifyInput<'_>,
        ctx: &RequestCtx<'_>,
        d: &Decision,
    ) -> UsageEvent {
        UsageEvent { kind: EventKind::Proxy, ..self.usage_event(workspace_id, input, ctx, d) }
    }

    /// The event of one verification. Caller text is scrubbed of anything
    /// that validates as a key; an unmatched key leaves only a fingerprint.
    pub(crate) fn usage_event(
        &self,
        workspace_id: &str,
        input: &VerifyInput<'_>,
        ctx: &RequestCtx<'_>,
        d: &Decision,
    ) -> UsageEvent {
        let k = d.key.as_deref();
        let prefixes = self.imported.list();
        // Country and network of the real address (kept even where the address
        // itself is pseudonymized: they are coarse, and the rules need them).
        let geo = match (self.geo.get(), input.ip) {
            (Some(g), Some(ip)) => g.lookup(&ip.to_canonical().to_string()),
            _ => keyward_events::geo::GeoInfo::default(),
        };
        let fingerprint =
            matches!(d.outcome, Outcome::Malformed | Outcome::NotFound).then(|| self.hasher().fingerprint(input.key));
        UsageEvent {
            id: 0,
            ts: now_ms(),
            kind: EventKind::Verify,
            request_id: ctx.request_id.to_owned(),
            workspace_id: workspace_id.to_owned(),
            keyspace_id: k.map(|k| k.keyspace_id().to_owned()),
            key_id: k.map(|k| k.id.to_string()),
            key_hint: k.map(|k| k.hint()),
            owner_id: k.and_then(|k| k.owner_id.as_deref().map(str::to_owned)),
            fingerprint,
            source_ip: input.ip.map(|ip| {
                let ip = ip.to_canonical().to_string();
                match d.key.as_ref() {
                    Some(k) if k.keyspace.get().pseudonymize_ips => self.pseudonym(&ip),
                    _ => ip,
                }
            }),
            user_agent: ctx.user_agent.map(|ua| scrub(ua, false, 512, &prefixes)),
            method: input.method.map(|m| m.to_ascii_uppercase()),
            path: input.path.map(|p| scrub(p, true, 2048, &prefixes)),
            outcome: d.outcome,
            http_status: None,
            error: d.message.as_deref().map(|m| scrub(m, false, 512, &prefixes)),
            bytes_in: None,
            bytes_out: None,
            latency_us: None,
            country: geo.country,
            asn: geo.asn,
            as_org: geo.as_org,
            deprecated: d.deprecated_until().is_some(),
            scopes: match k {
                // What the request needed (given, and by the keyspace's path rules), for
                // the rules engine's sensitive-scope rule: worked out only when a rule in
                // force watches sensitive scopes, so other verifies pay nothing for it.
                Some(k)
                    if d.outcome.is_valid()
                        && (input.method.is_some() || input.path.is_some() || !input.scopes.is_empty())
                        && self.scopes_wanted.load(std::sync::atomic::Ordering::Relaxed) =>
                {
                    let req = ScopeRequest { method: input.method, path: input.path, scopes: input.scopes };
                    missing_scopes(&[], &k.keyspace.get().path_rules, &req)
                }
                _ => Vec::new(),
            },
        }
    }

    /// The stand-in for an address in a pseudonymizing keyspace: a keyed hash,
    /// stable (so repeats correlate) but not reversible without the pepper.
    pub fn pseudonym(&self, ip: &str) -> String {
        format!("anon:{}", self.hasher().fingerprint(&format!("ip\0{ip}")))
    }

    fn pipeline(&self) -> Result<&std::sync::Arc<keyward_events::EventPipeline>> {
        self.events().ok_or_else(|| ServiceError::Conflict("usage events are not enabled on this server".into()))
    }

    /// Adds an application's report to a recent event of this workspace.
    pub async fn report_usage(&self, actor: &Actor, req: UsageRequest) -> Result<UsageAccepted> {
        actor.require(Permission::Verify, "report usage")?;
        if req.request_id.is_empty() || req.request_id.len() > 128 {
            return Err(invalid("request_id must be 1 to 128 characters"));
        }
        if req.status.is_some_and(|s| !(100..=599).contains(&s)) {
            return Err(invalid("status must be an HTTP status between 100 and 599"));
        }
        let report = UsageReport {
            request_id: req.request_id.clone(),
            workspace_id: actor.workspace_id.clone(),
            http_status: req.status,
            bytes_in: req.bytes_in,
            bytes_out: req.bytes_out,
            latency_us: req.latency_ms.map(|ms| ms.saturating_mul(1000)),
        };
        match self.pipeline()?.report(report).await {
            Reported::Applied => Ok(UsageAccepted { request_id: req.request_id, accepted: true }),
            Reported::NoSuchRequest => {
                Err(ServiceError::not_found("recent verification with request_id", &req.request_id))
            }
            Reported::SuccessAfterRefusal => Err(ServiceError::Conflict(format!(
                "the verification of request {} refused the key, so the request cannot have succeeded: \
                 report the status your API answered (e.g. 401, 403 or 429)",
                req.request_id
            ))),
        }
    }

    /// Validates an event query into a filter for this workspace.
    pub async fn event_filter(&self, actor: &Actor, q: &EventQuery, default_limit: u32) -> Result<EventFilter> {
        actor.require(Permission::AuditRead, "read usage events")?;
        let limit = match q.limit.unwrap_or(default_limit) {
            0 => return Err(invalid("limit must be at least 1")),
            l => l,
        };
        let code = match &q.code {
            None => None,
            Some(c) => Some(
                serde_json::from_value::<Outcome>(serde_json::Value::String(c.clone()))
                    .map_err(|_| invalid("code must be an outcome code such as VALID or RATE_LIMITED"))?,
            ),
        };
        let status_class = match q.status.as_deref() {
            None => None,
            Some(s @ ("1xx" | "2xx" | "3xx" | "4xx" | "5xx")) => Some(u16::from(s.as_bytes()[0] - b'0')),
            Some(_) => return Err(invalid("status must be a class: 2xx, 3xx, 4xx or 5xx")),
        };
        let instant = |field: &str, v: &Option<String>| -> Result<Option<i64>> {
            v.as_deref()
                .map(|s| parse_rfc3339(s).ok_or_else(|| invalid(format!("{field} must be an RFC 3339 instant"))))
                .transpose()
        };
        let ascending = match q.order.as_deref() {
            None | Some("desc") => false,
            Some("asc") => true,
            Some(_) => return Err(invalid("order must be asc or desc")),
        };
        let cursor = crate::validate::seq_cursor(q.cursor.as_deref())?;
        let owner_keys = match &q.owner_id {
            Some(owner) => self.owner_key_ids(&actor.workspace_id, owner).await?,
            None => Vec::new(),
        };
        Ok(EventFilter {
            owner_keys,
            workspace_id: actor.workspace_id.clone(),
            key_id: q.key_id.clone(),
            owner_id: q.owner_id.clone(),
            ip: q.ip.clone(),
            // An address given in clear also finds its pseudonym.
            ip_alt: q
                .ip
                .as_deref()
                .and_then(|ip| ip.parse::<std::net::IpAddr>().ok())
                .map(|ip| self.pseudonym(&ip.to_canonical().to_string())),
            code,
            status_class,
            since: instant("since", &q.since)?,
            until: instant("until", &q.until)?,
            after_id: if ascending { cursor } else { None },
            before_id: if ascending { None } else { cursor },
            ascending,
            limit,
        })
    }

    /// One page of events.
    pub async fn query_events(&self, actor: &Actor, q: EventQuery) -> Result<EventPage> {
        let mut f = self.event_filter(actor, &q, 100).await?;
        if f.limit > 1000 {
            return Err(invalid("limit must be between 1 and 1000; use Accept: application/x-ndjson for more"));
        }
        let limit = f.limit as usize;
        f.limit += 1;
        let mut rows = self.read_events(f).await?;
        let next_cursor = if rows.len() > limit {
            rows.truncate(limit);
            rows.last().map(|e| e.id.to_string())
        } else {
            None
        };
        Ok(EventPage { data: rows.into_iter().map(event_view).collect(), next_cursor })
    }

    /// The ids of every key of an owner (the event log reads an owner's
    /// events through its keys' index).
    async fn owner_key_ids(&self, workspace_id: &str, owner: &str) -> Result<Vec<String>> {
        let mut ids = Vec::new();
        let mut after = None;
        loop {
            let f = keyward_store::KeyFilter {
                workspace_id: workspace_id.to_owned(),
                owner_id: Some(owner.to_owned()),
                after: after.clone(),
                limit: 1000,
                ..Default::default()
            };
            let page = self.blocking(move |s| s.list_keys(&f)).await?;
            let n = page.len();
            ids.extend(page.into_iter().map(|k| k.id));
            if n < 1000 {
                return Ok(ids);
            }
            // Each key is one seek per page of events: bound the fan-out.
            if ids.len() >= MAX_OWNER_KEYS {
                return Err(invalid(format!(
                    "owner_id has more than {MAX_OWNER_KEYS} keys; query its events by key_id or by time instead"
                )));
            }
            after = ids.last().cloned();
        }
    }

    /// Reads events matching `f` on a blocking thread.
    pub async fn read_events(&self, f: EventFilter) -> Result<Vec<UsageEvent>> {
        let log = self.pipeline()?.log().clone();
        tokio::task::spawn_blocking(move || log.query(&f)).await.map_err(|_| ServiceError::Task)?.map_err(Into::into)
    }
}
