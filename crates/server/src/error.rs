//! The one error type of the HTTP layer. [`ApiError`] picks the status and
//! the RFC 9457 problem+json body, and logs the internal cause; handlers use
//! `?`. Public detail and internal cause stay apart, and neither ever holds a
//! key or an auth header: details built from client input pass [`sanitize`].

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use keyward_service::{AuthError, ServiceError};
use serde::Serialize;
use utoipa::ToSchema;

tokio::task_local! {
    /// The id of the request being handled (set by the request-id layer), for
    /// problem bodies made anywhere in it.
    pub(crate) static REQUEST_ID: String;
}

/// The id of the request being handled, inside the request-id layer.
fn current_request_id() -> Option<String> {
    REQUEST_ID.try_with(Clone::clone).ok()
}

/// An RFC 9457 problem document.
#[derive(Debug, Serialize, ToSchema)]
pub struct Problem {
    /// A URI naming the kind of problem, stable across releases.
    #[serde(rename = "type")]
    pub kind: String,
    pub title: String,
    pub status: u16,
    /// What is wrong, and where useful what to do.
    pub detail: String,
    /// The `X-Request-Id` of the failed request, to quote to an operator.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
}

/// An error answer. `detail` is public; `internal` goes to the log only.
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub slug: &'static str,
    pub detail: String,
    pub internal: Option<String>,
    pub www_authenticate: bool,
    /// Seconds for a `Retry-After` header (429, 503).
    pub retry_after: Option<u64>,
}

impl ApiError {
    pub fn new(status: StatusCode, slug: &'static str, detail: impl Into<String>) -> Self {
        ApiError { status, slug, detail: detail.into(), internal: None, www_authenticate: false, retry_after: None }
    }

    pub fn bad_request(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "invalid-request", detail)
    }

    pub fn unauthorized(reason: AuthError) -> Self {
        let detail = match reason {
            AuthError::Missing => "send a root key as 'Authorization: Bearer <root key>'",
            AuthError::Expired => {
                "the root key has expired; an admin can give you a new one (POST /v1/root-keys, or rotate it)"
            }
            _ => "the root key is not valid; check that it was copied whole and has not been revoked",
        };
        ApiError {
            internal: Some(reason.to_string()),
            www_authenticate: true,
            ..Self::new(StatusCode::UNAUTHORIZED, "unauthorized", detail)
        }
    }

    pub fn internal(cause: impl std::fmt::Display) -> Self {
        ApiError {
            internal: Some(cause.to_string()),
            ..Self::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                "the server failed to handle this request; quote the request id to an operator",
            )
        }
    }
}

impl From<ServiceError> for ApiError {
    fn from(e: ServiceError) -> Self {
        match &e {
            ServiceError::Invalid(_) => Self::new(StatusCode::BAD_REQUEST, "invalid-request", e.to_string()),
            ServiceError::NotFound { .. } => Self::new(StatusCode::NOT_FOUND, "not-found", e.to_string()),
            ServiceError::Forbidden { .. } => Self::new(StatusCode::FORBIDDEN, "forbidden", e.to_string()),
            ServiceError::Conflict(_) => Self::new(StatusCode::CONFLICT, "conflict", e.to_string()),
            ServiceError::Store(inner) => Self::internal(inner),
            ServiceError::BadSignature(_) => Self::new(StatusCode::UNAUTHORIZED, "bad-signature", e.to_string()),
            ServiceError::NotConfigured(_) => Self::new(StatusCode::NOT_FOUND, "not-configured", e.to_string()),
            ServiceError::Unavailable(_) => Self::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable", e.to_string()),
            ServiceError::TooMany { retry_after_s, .. } => ApiError {
                retry_after: Some(*retry_after_s),
                ..Self::new(StatusCode::TOO_MANY_REQUESTS, "too-many-requests", e.to_string())
            },
            ServiceError::PepperMismatch(_) | ServiceError::PepperMissing(_) | ServiceError::Task => Self::internal(&e),
        }
    }
}

impl From<AuthError> for ApiError {
    fn from(e: AuthError) -> Self {
        Self::unauthorized(e)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if let Some(cause) = &self.internal {
            if self.status.is_server_error() {
                tracing::error!(status = self.status.as_u16(), cause = %cause, "Request failed.");
            } else {
                tracing::warn!(status = self.status.as_u16(), cause = %cause, "Request refused.");
            }
        }
        let mut res = problem_response(self.status, self.slug, &self.detail);
        if self.www_authenticate {
            res.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        if let Some(secs) = self.retry_after {
            res.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        res
    }
}

/// A problem+json response carrying the current request's id.
pub fn problem_response(status: StatusCode, slug: &str, detail: &str) -> Response {
    problem_response_for(status, slug, detail, current_request_id())
}

/// A problem+json response for the given request id.
pub fn problem_response_for(status: StatusCode, slug: &str, detail: &str, request_id: Option<String>) -> Response {
    let body = Problem {
        kind: format!("urn:keyward:problem:{slug}"),
        title: status.canonical_reason().unwrap_or("Error").to_owned(),
        status: status.as_u16(),
        // The last net: whatever built the detail, nothing key-shaped leaves.
        detail: keyward_core::redact::redact(detail, &[]),
        request_id,
    };
    let mut res = (status, axum::Json(body)).into_response();
    res.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/problem+json"));
    res
}

/// Makes client-derived text safe to echo: anything quoted that is longer
/// than a field name is cut out (serde quotes the offending value, which may
/// be a key pasted into the wrong field), and the whole is capped in length.
pub fn sanitize(text: &str) -> String {
    let mut out = String::with_capacity(text.len().min(600));
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '"' || c == '`' {
            let quoted: String = chars.by_ref().take_while(|&d| d != c).collect();
            out.push(c);
            if quoted.chars().count() > 24 || !keyward_core::key::find_keys(&quoted).is_empty() {
                out.push('…');
            } else {
                out.push_str(&quoted);
            }
            out.push(c);
        } else {
            out.push(c);
        }
        if out.len() > 500 {
            out.push('…');
            break;
        }
    }
    // Unquoted parts (a field path before the message) may hold one too:
    // `problem_response_for` redacts every detail last.
    out
}

/// A certificate, key or CA file could not be used for TLS. Says which file
/// and why; never prints key material.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("reading {path}: {source}")]
    Read { path: String, source: std::io::Error },
    #[error("{path} holds no {what} in PEM form (-----BEGIN …-----)")]
    Pem { path: String, what: &'static str },
    #[error("the TLS certificate and key do not make a usable configuration: {0}")]
    Config(String),
}

#[cfg(test)]
mod tests {
    use super::sanitize;

    #[test]
    fn sanitize_cuts_long_quoted_values() {
        assert_eq!(
            sanitize("invalid type: string \"kw_live_0123456789abcdefghijklmnopqrstuvwxyzAB\", expected u32"),
            "invalid type: string \"…\", expected u32"
        );
        assert_eq!(sanitize("unknown field `colour`, expected `name`"), "unknown field `colour`, expected `name`");
        assert!(sanitize(&"x".repeat(2000)).len() < 600);
    }
}
