//! Incidents, leak reports, and GitHub's secret-scanning partner endpoint.

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use base64::Engine;
use keyward_service::incidents::{
    CreateIncident, IncidentPage, IncidentQuery, IncidentView, ListIncidentsQuery, PatchIncident,
};
use keyward_service::leaks::{LeakAnswer, LeakReport, LeakStatus};
use p256::ecdsa::signature::Verifier;
use p256::ecdsa::{Signature, VerifyingKey};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use utoipa::ToSchema;

use crate::AppState;
use crate::error::{ApiError, Problem};
use crate::extract::{Auth, Json, Query};

/// Open an incident: keys, detection time, affected systems, actions, impact.
#[utoipa::path(post, path = "/v1/incidents", operation_id = "createIncident", tag = "incidents", request_body = CreateIncident,
    responses((status = 201, body = IncidentView), (status = "4XX", body = Problem, content_type = "application/problem+json")), security(("root_key" = [])))]
pub async fn create_incident(
    State(st): State<AppState>,
    Auth(a): Auth,
    Json(req): Json<CreateIncident>,
) -> Result<(StatusCode, axum::Json<IncidentView>), ApiError> {
    Ok((StatusCode::CREATED, axum::Json(st.service.create_incident(&a, req).await?)))
}

/// List incidents.
#[utoipa::path(get, path = "/v1/incidents", operation_id = "listIncidents", tag = "incidents", params(ListIncidentsQuery),
    responses((status = 200, body = IncidentPage), (status = "4XX", body = Problem, content_type = "application/problem+json")), security(("root_key" = [])))]
pub async fn list_incidents(
    State(st): State<AppState>,
    Auth(a): Auth,
    Query(q): Query<ListIncidentsQuery>,
) -> Result<axum::Json<IncidentPage>, ApiError> {
    Ok(axum::Json(st.service.list_incidents(&a, q).await?))
}

/// One incident, with a review of its keys' recent usage from the usage events.
#[utoipa::path(get, path = "/v1/incidents/{id}", operation_id = "getIncident", tag = "incidents", params(("id" = String, Path), IncidentQuery),
    responses((status = 200, body = IncidentView), (status = "4XX", body = Problem, content_type = "application/problem+json")), security(("root_key" = [])))]
pub async fn get_incident(
    State(st): State<AppState>,
    Auth(a): Auth,
    Path(id): Path<String>,
    Query(q): Query<IncidentQuery>,
) -> Result<axum::Json<IncidentView>, ApiError> {
    Ok(axum::Json(st.service.get_incident(&a, &id, q).await?))
}

/// Update an incident (status, actions taken, impact, notes, …).
#[utoipa::path(patch, path = "/v1/incidents/{id}", operation_id = "patchIncident", tag = "incidents", params(("id" = String, Path)), request_body = PatchIncident,
    responses((status = 200, body = IncidentView), (status = "4XX", body = Problem, content_type = "application/problem+json")), security(("root_key" = [])))]
pub async fn patch_incident(
    State(st): State<AppState>,
    Auth(a): Auth,
    Path(id): Path<String>,
    Json(req): Json<PatchIncident>,
) -> Result<axum::Json<IncidentView>, ApiError> {
    Ok(axum::Json(st.service.patch_incident(&a, &id, req).await?))
}

/// Report leaked key strings: live keys of this workspace are revoked (reason
/// `leaked`) and put on a new incident. The answer never repeats the strings.
#[utoipa::path(post, path = "/v1/leaks", operation_id = "reportLeaks", tag = "incidents", request_body = LeakReport,
    responses((status = 200, body = LeakAnswer), (status = "4XX", body = Problem, content_type = "application/problem+json")), security(("root_key" = [])))]
pub async fn report_leaks(
    State(st): State<AppState>,
    Auth(a): Auth,
    Json(req): Json<LeakReport>,
) -> Result<axum::Json<LeakAnswer>, ApiError> {
    Ok(axum::Json(st.service.report_leaks(&a, req).await?))
}

/// One token in a GitHub secret-scanning alert.
#[derive(Deserialize, ToSchema)]
pub struct GithubToken {
    pub token: String,
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(default)]
    pub url: String,
    #[serde(default)]
    pub source: String,
}

impl std::fmt::Debug for GithubToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GithubToken")
            .field("token", &"[redacted]")
            .field("type", &self.kind)
            .field("url", &self.url)
            .finish()
    }
}

/// GitHub's per-token answer label.
#[derive(Debug, Serialize, ToSchema)]
pub struct GithubLabel {
    /// Hex SHA-256 of the token.
    pub token_hash: String,
    pub token_type: String,
    /// `true_positive` or `false_positive`.
    pub label: &'static str,
}

/// GitHub secret-scanning partner endpoint. Authenticated by GitHub's ECDSA
/// signature of the body (headers `Github-Public-Key-Identifier` and
/// `Github-Public-Key-Signature`) against public keys from the configuration;
/// each token is handled as a leak report in whatever workspace holds it.
#[utoipa::path(post, path = "/v1/github/secret-scanning", operation_id = "githubSecretScanning", tag = "incidents", request_body = Vec<GithubToken>,
    responses((status = 200, body = Vec<GithubLabel>), (status = "4XX", body = Problem, content_type = "application/problem+json")))]
pub async fn github_secret_scanning(
    State(st): State<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<axum::Json<Vec<GithubLabel>>, ApiError> {
    if st.ops.github_keys.is_empty() {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "not-configured",
            "GitHub secret scanning is not configured on this server (github.public_keys)",
        ));
    }
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok()).map(str::trim).filter(|v| !v.is_empty());
    let unauthorized = |why: &str| ApiError::new(StatusCode::UNAUTHORIZED, "bad-signature", why.to_owned());
    let key_id =
        header("github-public-key-identifier").ok_or_else(|| unauthorized("missing Github-Public-Key-Identifier"))?;
    let sig_b64 =
        header("github-public-key-signature").ok_or_else(|| unauthorized("missing Github-Public-Key-Signature"))?;
    let key = st
        .ops
        .github_keys
        .iter()
        .find(|(id, _)| id == key_id)
        .map(|(_, k)| k)
        .ok_or_else(|| unauthorized("unknown public key identifier"))?;
    let der = base64::engine::general_purpose::STANDARD
        .decode(sig_b64)
        .map_err(|_| unauthorized("the signature is not base64"))?;
    let sig = Signature::from_der(&der).map_err(|_| unauthorized("the signature is not a DER ECDSA signature"))?;
    key.verify(&body, &sig).map_err(|_| unauthorized("the signature does not match the body"))?;
    let tokens: Vec<GithubToken> = serde_json::from_slice(&body).map_err(|e| {
        ApiError::bad_request(format!("the body is not a list of tokens: {}", crate::error::sanitize(&e.to_string())))
    })?;
    if tokens.len() > 1000 {
        return Err(ApiError::bad_request("at most 1000 tokens per request"));
    }
    let strings: Vec<String> = tokens.iter().map(|t| t.token.clone()).collect();
    let source = tokens.iter().map(|t| t.url.as_str()).find(|u| !u.is_empty()).unwrap_or("GitHub secret scanning");
    let answer = st.service.handle_leaks(None, &strings, &format!("GitHub secret scanning: {source}")).await?;
    let labels = tokens
        .iter()
        .zip(answer.results)
        .map(|(t, r)| GithubLabel {
            token_hash: hex::encode(Sha256::digest(t.token.as_bytes())),
            token_type: t.kind.clone(),
            label: match r.status {
                LeakStatus::Revoked | LeakStatus::AlreadyRevoked => "true_positive",
                LeakStatus::Unknown | LeakStatus::Malformed => "false_positive",
            },
        })
        .collect();
    Ok(axum::Json(labels))
}

/// Parses a configured GitHub public key (SPKI PEM, as GitHub publishes them).
pub fn parse_github_key(pem: &str) -> Result<VerifyingKey, String> {
    use p256::pkcs8::DecodePublicKey;
    VerifyingKey::from_public_key_pem(pem.trim()).map_err(|e| e.to_string())
}
