//! Leak reports: strings found where they should not be (a scanner, a
//! person, GitHub's secret scanning). Each string that is a live key is
//! revoked with reason `leaked`, checked through the verify path, and put on
//! one incident; the answer says, per string, whether it was live, already
//! revoked, unknown or not a key at all, and never repeats the strings.

use keyward_core::event::scrub;
use keyward_core::id::new_id;
use keyward_core::time::{now_ms, to_rfc3339};
use keyward_core::{Permission, Role};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::api::{RevokeKey, RevokeReason};
use crate::incidents::{IncidentFields, IncidentStatus};
use crate::validate::invalid;
use crate::verify::Presented;
use crate::{Actor, Result, Service};

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LeakReport {
    /// The leaked strings, as found (at most 1000).
    pub keys: Vec<String>,
    /// Where they were found (a URL, a path), kept on the incident.
    pub source: Option<String>,
}

impl std::fmt::Debug for LeakReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LeakReport").field("keys", &self.keys.len()).field("source", &self.source).finish()
    }
}

/// What became of one reported string.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum LeakStatus {
    /// It was a live key: now revoked.
    Revoked,
    /// It was a key already revoked (or rotated out).
    AlreadyRevoked,
    /// Well-formed, but no key of this workspace.
    Unknown,
    /// Not a keyward key (format or checksum).
    Malformed,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct LeakResult {
    /// Position in the reported list.
    pub index: usize,
    pub status: LeakStatus,
    pub key_id: Option<String>,
    pub hint: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct LeakAnswer {
    pub results: Vec<LeakResult>,
    pub revoked: usize,
    /// The incident opened for the revoked keys, if any were live.
    pub incident_id: Option<String>,
}

impl Service {
    /// A leak report from a root key: only keys of its workspace are touched.
    pub async fn report_leaks(&self, actor: &Actor, req: LeakReport) -> Result<LeakAnswer> {
        actor.require(Permission::KeysWrite, "report leaked keys")?;
        if req.keys.is_empty() || req.keys.len() > 1000 {
            return Err(invalid("keys must hold 1 to 1000 strings"));
        }
        self.handle_leaks(Some(actor), &req.keys, req.source.as_deref().unwrap_or("leak report")).await
    }

    /// Handles leaked strings. With an actor, only its workspace; without
    /// (GitHub secret scanning), each key in whatever workspace holds it,
    /// acted on as `system`.
    pub async fn handle_leaks(&self, actor: Option<&Actor>, keys: &[String], source: &str) -> Result<LeakAnswer> {
        // Caller text (a report's source, GitHub's URL) reaches notes, alerts, webhooks and
        // exports: scrubbed here, once, for every caller.
        let source = scrub(source, false, 2000, &self.imported.list());
        let source = source.as_str();
        let now = now_ms();
        let mut results = Vec::with_capacity(keys.len());
        // Live keys to revoke, grouped by workspace: (workspace, key id, index).
        let mut live: Vec<(String, String, usize)> = Vec::new();
        for (index, s) in keys.iter().enumerate() {
            let s = s.trim();
            let k = match self.presented(s) {
                Presented::Malformed => {
                    results.push(LeakResult { index, status: LeakStatus::Malformed, key_id: None, hint: None });
                    continue;
                }
                Presented::Known(k) => Some(k),
                Presented::Unknown { .. } => None,
            };
            let found = k.filter(|k| actor.is_none_or(|a| a.workspace_id == k.workspace_id()));
            let Some(k) = found else {
                results.push(LeakResult { index, status: LeakStatus::Unknown, key_id: None, hint: None });
                continue;
            };
            let life = k.lifecycle();
            let dead = life.revoked_at.is_some() || life.overlap_until.is_some_and(|t| t <= now);
            let status = if dead { LeakStatus::AlreadyRevoked } else { LeakStatus::Revoked };
            if !dead && !live.iter().any(|(_, id, _)| **id == *k.id) {
                live.push((k.workspace_id().to_owned(), k.id.to_string(), index));
            }
            self.signal(keyward_alerts::Signal::Leak {
                workspace_id: k.workspace_id().to_owned(),
                subject: keyward_alerts::Subject::Key {
                    key_id: k.id.to_string(),
                    key_hint: Some(k.hint()),
                    keyspace_id: Some(k.keyspace_id().to_owned()),
                    owner_id: k.owner_id.as_deref().map(str::to_owned),
                },
                source: source.chars().take(200).collect(),
                ts: now,
            });
            results.push(LeakResult { index, status, key_id: Some(k.id.to_string()), hint: Some(k.hint()) });
        }
        let mut incident_id = None;
        let mut workspaces: Vec<String> = live.iter().map(|(w, _, _)| w.clone()).collect();
        workspaces.sort();
        workspaces.dedup();
        for ws in workspaces {
            let system;
            let acting = match actor {
                Some(a) => a,
                None => {
                    system = Actor {
                        workspace_id: ws.clone(),
                        root_key_id: "system:leak-report".into(),
                        role: Role::Admin,
                        source_ip: None,
                        request_id: None,
                    };
                    &system
                }
            };
            let inc = new_id("inc", now);
            let ids: Vec<String> = live.iter().filter(|(w, _, _)| *w == ws).map(|(_, id, _)| id.clone()).collect();
            for id in &ids {
                let req = RevokeKey {
                    reason: RevokeReason::Leaked,
                    note: Some(format!("reported leaked: {source}")),
                    incident: Some(inc.clone()),
                };
                match self.revoke_key_for_incident(acting, id, req).await {
                    Ok(_) => {
                        tracing::error!(key_id = %id, "Leaked key revoked.");
                        self.check_revocation(&ws, id).await;
                    }
                    // Revoked by someone else a moment ago: still dead.
                    Err(crate::ServiceError::Conflict(_)) => {}
                    Err(e) => return Err(e),
                }
            }
            let fields = IncidentFields {
                title: format!("{} leaked key(s) reported", ids.len()),
                status: IncidentStatus::Contained,
                key_ids: ids.clone(),
                detected_at: to_rfc3339(now),
                affected_systems: Vec::new(),
                actions_taken: vec![format!("revoked {} key(s) with reason leaked at {}", ids.len(), to_rfc3339(now))],
                impact: String::new(),
                notes: format!("source: {source}"),
            };
            self.save_incident_with_id(acting, inc.clone(), fields).await?;
            incident_id = Some(inc);
        }
        let revoked = results.iter().filter(|r| r.status == LeakStatus::Revoked).count();
        Ok(LeakAnswer { results, revoked, incident_id })
    }
}
