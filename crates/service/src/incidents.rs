//! Incident records: what was detected, when, what it touched, what was done
//! and what it cost, with a review of the keys' recent usage attached from the
//! usage events (distinct IPs with counts and first/last seen, endpoints,
//! outcomes), and a Markdown rendering for reports.

use keyward_core::Permission;
use keyward_core::id::{is_id, new_id};
use keyward_core::time::{now_ms, parse_rfc3339, to_rfc3339};
use keyward_store::IncidentRecord;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::{IntoParams, ToSchema};

use crate::validate::{invalid, page_limit, to_value};
use crate::{Actor, Result, Service, ServiceError};

/// The state of an incident.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum IncidentStatus {
    Open,
    Contained,
    Resolved,
}

/// The stored fields of an incident (the `body` of its record).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct IncidentFields {
    pub title: String,
    pub status: IncidentStatus,
    pub key_ids: Vec<String>,
    /// When the compromise was detected (RFC 3339).
    pub detected_at: String,
    pub affected_systems: Vec<String>,
    pub actions_taken: Vec<String>,
    pub impact: String,
    pub notes: String,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateIncident {
    pub title: String,
    pub key_ids: Vec<String>,
    /// RFC 3339; default now.
    pub detected_at: Option<String>,
    #[serde(default)]
    pub affected_systems: Vec<String>,
    #[serde(default)]
    pub actions_taken: Vec<String>,
    #[serde(default)]
    pub impact: String,
    #[serde(default)]
    pub notes: String,
    /// Default `open`.
    pub status: Option<IncidentStatus>,
}

#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PatchIncident {
    pub title: Option<String>,
    pub status: Option<IncidentStatus>,
    pub key_ids: Option<Vec<String>>,
    pub detected_at: Option<String>,
    pub affected_systems: Option<Vec<String>>,
    pub actions_taken: Option<Vec<String>>,
    pub impact: Option<String>,
    pub notes: Option<String>,
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct IncidentQuery {
    /// Days of usage to review, back from now (default 7, at most 90).
    #[param(minimum = 1, maximum = 90)]
    pub review_days: Option<i64>,
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ListIncidentsQuery {
    pub cursor: Option<String>,
    #[param(minimum = 1, maximum = 1000)]
    pub limit: Option<u32>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct IpUseView {
    pub ip: String,
    pub count: u64,
    pub first_seen: String,
    pub last_seen: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct EndpointUseView {
    pub method: String,
    pub path: String,
    pub count: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct OutcomeCount {
    pub code: String,
    pub count: u64,
}

/// One key's usage in the review window.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct KeyReview {
    pub key_id: String,
    pub hint: Option<String>,
    pub status: Option<String>,
    pub total: u64,
    pub ips: Vec<IpUseView>,
    pub endpoints: Vec<EndpointUseView>,
    pub outcomes: Vec<OutcomeCount>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct UsageReview {
    pub since: String,
    pub until: String,
    pub keys: Vec<KeyReview>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct IncidentView {
    pub id: String,
    #[serde(flatten)]
    pub fields: IncidentFields,
    pub created_at: String,
    pub updated_at: String,
    /// Present on `GET /v1/incidents/{id}`.
    pub review: Option<UsageReview>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct IncidentPage {
    pub data: Vec<IncidentView>,
    pub next_cursor: Option<String>,
}

fn check_list(field: &str, v: &[String]) -> Result<()> {
    if v.len() > 100 || v.iter().any(|s| s.chars().count() > 2000) {
        return Err(invalid(format!("{field} may hold at most 100 entries of at most 2000 characters")));
    }
    Ok(())
}

fn view(r: &IncidentRecord) -> Result<IncidentView> {
    let fields: IncidentFields = serde_json::from_value(r.body.clone()).map_err(|e| {
        ServiceError::Store(keyward_store::StoreError::Corrupt { table: "incidents", detail: e.to_string() })
    })?;
    Ok(IncidentView {
        id: r.id.clone(),
        fields,
        created_at: to_rfc3339(r.created_at),
        updated_at: to_rfc3339(r.updated_at),
        review: None,
    })
}

impl Service {
    async fn check_key_ids(&self, actor: &Actor, ids: &[String]) -> Result<()> {
        if ids.is_empty() || ids.len() > 1000 {
            return Err(invalid("key_ids must name 1 to 1000 keys"));
        }
        for id in ids {
            self.load_key(actor, id).await?;
        }
        Ok(())
    }

    /// Opens an incident (role key_manager or admin).
    pub async fn create_incident(&self, actor: &Actor, req: CreateIncident) -> Result<IncidentView> {
        actor.require(Permission::KeysWrite, "open incidents")?;
        crate::validate::check_opt_text("title", &Some(req.title.clone()), 300)?;
        self.check_key_ids(actor, &req.key_ids).await?;
        check_list("affected_systems", &req.affected_systems)?;
        check_list("actions_taken", &req.actions_taken)?;
        let now = now_ms();
        let detected = match &req.detected_at {
            Some(s) => parse_rfc3339(s).ok_or_else(|| invalid("detected_at must be an RFC 3339 instant"))?,
            None => now,
        };
        let fields = IncidentFields {
            title: req.title,
            status: req.status.unwrap_or(IncidentStatus::Open),
            key_ids: req.key_ids,
            detected_at: to_rfc3339(detected),
            affected_systems: req.affected_systems,
            actions_taken: req.actions_taken,
            impact: req.impact,
            notes: req.notes,
        };
        self.save_incident(actor, new_id("inc", now), fields, now, None).await
    }

    /// Opens an incident with an id chosen beforehand (leak reports name it
    /// on the revocations they make).
    pub(crate) async fn save_incident_with_id(
        &self,
        actor: &Actor,
        id: String,
        fields: IncidentFields,
    ) -> Result<IncidentView> {
        self.save_incident(actor, id, fields, now_ms(), None).await
    }

    async fn save_incident(
        &self,
        actor: &Actor,
        id: String,
        fields: IncidentFields,
        now: i64,
        before: Option<(i64, Value)>,
    ) -> Result<IncidentView> {
        let body = to_value(&fields);
        let (created_at, before_body) = match before {
            Some((c, b)) => (c, Some(b)),
            None => (now, None),
        };
        let (b, a) = match &before_body {
            Some(b) => {
                let (b, a) = crate::views::diff(b, &body);
                (Some(b), Some(a))
            }
            None => (None, Some(body.clone())),
        };
        let action = if before_body.is_some() { "incident.update" } else { "incident.create" };
        let audit = self.audit_entry(actor, action, "incident", &id, b, a);
        let rec = IncidentRecord { id, workspace_id: actor.workspace_id.clone(), body, created_at, updated_at: now };
        let r = rec.clone();
        self.blocking(move |s| s.put_incident(&r, &audit)).await?;
        view(&rec)
    }

    async fn load_incident(&self, actor: &Actor, id: &str) -> Result<IncidentRecord> {
        if !is_id("inc", id) {
            return Err(ServiceError::not_found("incident", id));
        }
        let (ws, i) = (actor.workspace_id.clone(), id.to_owned());
        self.blocking(move |s| s.get_incident(&ws, &i)).await?.ok_or_else(|| ServiceError::not_found("incident", id))
    }

    pub async fn patch_incident(&self, actor: &Actor, id: &str, req: PatchIncident) -> Result<IncidentView> {
        actor.require(Permission::KeysWrite, "change incidents")?;
        let rec = self.load_incident(actor, id).await?;
        let mut f = view(&rec)?.fields;
        if let Some(t) = req.title {
            crate::validate::check_opt_text("title", &Some(t.clone()), 300)?;
            f.title = t;
        }
        if let Some(s) = req.status {
            f.status = s;
        }
        if let Some(k) = req.key_ids {
            self.check_key_ids(actor, &k).await?;
            f.key_ids = k;
        }
        if let Some(d) = req.detected_at {
            f.detected_at =
                to_rfc3339(parse_rfc3339(&d).ok_or_else(|| invalid("detected_at must be an RFC 3339 instant"))?);
        }
        if let Some(v) = req.affected_systems {
            check_list("affected_systems", &v)?;
            f.affected_systems = v;
        }
        if let Some(v) = req.actions_taken {
            check_list("actions_taken", &v)?;
            f.actions_taken = v;
        }
        if let Some(v) = req.impact {
            f.impact = v;
        }
        if let Some(v) = req.notes {
            f.notes = v;
        }
        self.save_incident(actor, rec.id.clone(), f, now_ms(), Some((rec.created_at, rec.body))).await
    }

    /// Checks that `incident`, when given, names an incident of the actor's
    /// workspace (revocations refer to one; it must exist).
    pub(crate) async fn check_incident_ref(&self, actor: &Actor, incident: Option<&str>) -> Result<()> {
        let Some(id) = incident else { return Ok(()) };
        if !keyward_core::id::is_id("inc", id) {
            return Err(invalid("incident must be the id of an incident (inc_…) of this workspace"));
        }
        let (ws, id) = (actor.workspace_id.clone(), id.to_owned());
        match self.blocking(move |s| s.get_incident(&ws, &id)).await? {
            Some(_) => Ok(()),
            None => Err(invalid("incident names no incident of this workspace; create it with POST /v1/incidents")),
        }
    }

    pub async fn list_incidents(&self, actor: &Actor, q: ListIncidentsQuery) -> Result<IncidentPage> {
        actor.require(Permission::KeysRead, "read incidents")?;
        let limit = page_limit(q.limit)?;
        crate::validate::id_cursor("inc", q.cursor.as_deref())?;
        let (ws, cursor) = (actor.workspace_id.clone(), q.cursor);
        let mut rows = self.blocking(move |s| s.list_incidents(&ws, cursor.as_deref(), limit + 1)).await?;
        let next_cursor = if rows.len() > limit as usize {
            rows.truncate(limit as usize);
            rows.last().map(|r| r.id.clone())
        } else {
            None
        };
        Ok(IncidentPage { data: rows.iter().map(view).collect::<Result<_>>()?, next_cursor })
    }

    /// An incident with the usage review of its keys over the last `review_days`.
    pub async fn get_incident(&self, actor: &Actor, id: &str, q: IncidentQuery) -> Result<IncidentView> {
        actor.require(Permission::KeysRead, "read incidents")?;
        let days = q.review_days.unwrap_or(7);
        if !(1..=90).contains(&days) {
            return Err(invalid("review_days must be between 1 and 90"));
        }
        let rec = self.load_incident(actor, id).await?;
        let mut v = view(&rec)?;
        let until = now_ms() + 1;
        let since = until - days * 24 * 3600 * 1000;
        let mut keys = Vec::new();
        for key_id in &v.fields.key_ids {
            let k = self.load_key(actor, key_id).await.ok();
            let review = match self.events() {
                Some(p) => {
                    let (log, ws, kid) = (p.log().clone(), actor.workspace_id.clone(), key_id.clone());
                    tokio::task::spawn_blocking(move || log.review(&ws, &kid, since, until, 50))
                        .await
                        .map_err(|_| ServiceError::Task)??
                }
                None => Default::default(),
            };
            keys.push(KeyReview {
                key_id: key_id.clone(),
                hint: k.as_ref().map(|k| k.hint.clone()),
                status: k.as_ref().map(|k| self.view_of(k, now_ms()).status),
                total: review.total,
                ips: review
                    .ips
                    .into_iter()
                    .map(|u| IpUseView {
                        ip: u.ip,
                        count: u.count,
                        first_seen: to_rfc3339(u.first_seen),
                        last_seen: to_rfc3339(u.last_seen),
                    })
                    .collect(),
                endpoints: review
                    .endpoints
                    .into_iter()
                    .map(|e| EndpointUseView { method: e.method, path: e.path, count: e.count })
                    .collect(),
                outcomes: review.outcomes.into_iter().map(|(code, count)| OutcomeCount { code, count }).collect(),
            });
        }
        v.review = Some(UsageReview { since: to_rfc3339(since), until: to_rfc3339(until), keys });
        Ok(v)
    }
}

/// An incident as a Markdown report.
pub fn markdown(v: &IncidentView) -> String {
    let f = &v.fields;
    let list = |items: &[String]| {
        if items.is_empty() {
            "- (none recorded)\n".to_owned()
        } else {
            items.iter().map(|i| format!("- {i}\n")).collect()
        }
    };
    let mut out = format!(
        "# Incident {}: {}\n\n| | |\n|---|---|\n| Status | {:?} |\n| Detected | {} |\n| Opened | {} |\n| Last updated | {} |\n| Keys | {} |\n\n",
        v.id,
        f.title,
        f.status,
        f.detected_at,
        v.created_at,
        v.updated_at,
        f.key_ids.join(", ")
    );
    out.push_str(&format!("## Affected systems\n\n{}\n", list(&f.affected_systems)));
    out.push_str(&format!("## Actions taken\n\n{}\n", list(&f.actions_taken)));
    out.push_str(&format!("## Impact\n\n{}\n\n", if f.impact.is_empty() { "(not yet assessed)" } else { &f.impact }));
    if !f.notes.is_empty() {
        out.push_str(&format!("## Notes\n\n{}\n\n", f.notes));
    }
    if let Some(r) = &v.review {
        out.push_str(&format!("## Usage review ({} to {})\n\n", r.since, r.until));
        for k in &r.keys {
            out.push_str(&format!(
                "### Key {} ({}, {})\n\n{} uses in the window.\n\n",
                k.key_id,
                k.hint.as_deref().unwrap_or("?"),
                k.status.as_deref().unwrap_or("unknown"),
                k.total
            ));
            if !k.ips.is_empty() {
                out.push_str("| Source IP | Requests | First seen | Last seen |\n|---|---:|---|---|\n");
                for i in &k.ips {
                    out.push_str(&format!("| {} | {} | {} | {} |\n", i.ip, i.count, i.first_seen, i.last_seen));
                }
                out.push('\n');
            }
            if !k.endpoints.is_empty() {
                out.push_str("| Method | Path | Requests |\n|---|---|---:|\n");
                for e in &k.endpoints {
                    out.push_str(&format!("| {} | {} | {} |\n", e.method, e.path, e.count));
                }
                out.push('\n');
            }
            if !k.outcomes.is_empty() {
                out.push_str("| Outcome | Count |\n|---|---:|\n");
                for o in &k.outcomes {
                    out.push_str(&format!("| {} | {} |\n", o.code, o.count));
                }
                out.push('\n');
            }
        }
    }
    out
}
