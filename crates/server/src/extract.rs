//! Extractors: our [`Json`] and [`Query`] (rejections become problem+json
//! with a sanitized detail), and [`Auth`], the authenticated root key.

use std::net::SocketAddr;
use std::time::Duration;

use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{ConnectInfo, FromRef, FromRequest, FromRequestParts, Request};
use axum::http::HeaderMap;
use axum::http::StatusCode;
use axum::http::header::{self, AUTHORIZATION};
use axum::http::request::Parts;
use http_body_util::BodyExt;
use keyward_service::{Actor, AuthError};
use serde::de::DeserializeOwned;

use crate::error::{ApiError, sanitize};
use crate::request_id::RequestId;
use crate::{App, AppState, BodyLimit, BodyTimeout};

/// Past its limit, a declared body up to this size is still read (and
/// dropped) before the 413 is sent: a client that writes its whole body
/// before reading the answer (most HTTP libraries) then sees the 413 instead
/// of a broken pipe. Larger bodies are refused at once and the connection
/// closed (nginx's lingering close does the same).
const LINGER_BYTES: usize = 1024 * 1024;

/// A JSON body; unknown fields, wrong types, bad syntax, a missing
/// `Content-Type` or an oversized body each get a 4xx saying which.
pub struct Json<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for Json<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, _state: &S) -> Result<Self, ApiError> {
        let timeout = req.extensions().get::<BodyTimeout>().map_or(Duration::from_secs(10), |t| t.0);
        let limit = req.extensions().get::<BodyLimit>().map_or(DEFAULT_LIMIT, |l| l.0);
        let (parts, body) = req.into_parts();
        json_body(&parts.headers, body, limit, timeout).await.map(Json)
    }
}

/// axum's own default body limit, for a route without a [`BodyLimit`].
const DEFAULT_LIMIT: usize = 2 * 1024 * 1024;

/// The body of a request as `T`: the [`Json`] extractor, and the verify fast
/// path, which reads its request outside the router.
pub(crate) async fn json_body<T, B>(
    headers: &HeaderMap,
    body: B,
    limit: usize,
    timeout: Duration,
) -> Result<T, ApiError>
where
    T: DeserializeOwned,
    B: http_body::Body,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    if !json_content_type(headers) {
        return Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported-media-type",
            "send the body as JSON with 'Content-Type: application/json'",
        ));
    }
    let declared = headers.get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()?.parse::<usize>().ok());
    if let Some(declared) = declared
        && declared > limit
    {
        if declared <= LINGER_BYTES {
            let drain = http_body_util::Limited::new(body, LINGER_BYTES).collect();
            let _ = tokio::time::timeout(timeout, drain).await;
        }
        return Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "body-too-large",
            format!("the body is {declared} bytes; this call accepts at most {limit} (see http.max_body_bytes)"),
        ));
    }
    // A body that stalls is the client's fault: 408, not the 503 of the
    // request timeout.
    let bytes = match tokio::time::timeout(timeout, http_body_util::Limited::new(body, limit).collect()).await {
        Ok(Ok(collected)) => collected.to_bytes(),
        Ok(Err(e)) if e.is::<http_body_util::LengthLimitError>() => {
            return Err(ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "body-too-large",
                format!("the body is larger than this call accepts ({limit} bytes, see http.max_body_bytes)"),
            ));
        }
        Ok(Err(_)) => {
            return Err(ApiError::new(StatusCode::BAD_REQUEST, "invalid-body", "the request body could not be read"));
        }
        Err(_) => {
            return Err(ApiError::new(
                StatusCode::REQUEST_TIMEOUT,
                "body-timeout",
                format!("the request body stalled for {} ms; send it whole and promptly", timeout.as_millis()),
            ));
        }
    };
    // The plain parser first (the path-tracking one cost 2.7 % of the HTTP
    // verify profile); only a body it refuses is parsed again for the message.
    serde_json::from_slice::<T>(&bytes)
        .or_else(|_| axum::Json::<T>::from_bytes(&bytes).map(|axum::Json(v)| v).map_err(json_rejection))
}

/// `application/json`, or any `application/…+json`, parameters allowed
/// (axum's rule).
fn json_content_type(headers: &HeaderMap) -> bool {
    let Some(value) = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()) else {
        return false;
    };
    let essence = value.split(';').next().unwrap_or_default().trim();
    let Some((kind, sub)) = essence.split_once('/') else {
        return false;
    };
    kind.eq_ignore_ascii_case("application")
        && (sub.eq_ignore_ascii_case("json")
            || sub.len() > 5 && sub.as_bytes()[sub.len() - 5..].eq_ignore_ascii_case(b"+json"))
}

fn json_rejection(rej: JsonRejection) -> ApiError {
    let status = rej.status();
    let (slug, detail) = match &rej {
        JsonRejection::MissingJsonContentType(_) => {
            ("unsupported-media-type", "send the body as JSON with 'Content-Type: application/json'".to_owned())
        }
        JsonRejection::JsonSyntaxError(_) => {
            ("invalid-json", format!("the body is not valid JSON: {}", sanitize(&rej.body_text())))
        }
        JsonRejection::JsonDataError(_) => ("invalid-body", sanitize(&rej.body_text())),
        JsonRejection::BytesRejection(_) if status == axum::http::StatusCode::PAYLOAD_TOO_LARGE => {
            ("body-too-large", "the body is larger than this server accepts (see max_body_bytes)".to_owned())
        }
        _ => ("invalid-body", sanitize(&rej.body_text())),
    };
    ApiError::new(status, slug, detail)
}

/// Query parameters; unknown names and bad values are a 400.
pub struct Query<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequestParts<S> for Query<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        match axum::extract::Query::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Query(v)) => Ok(Query(v)),
            Err(rej) => Err(query_rejection(rej)),
        }
    }
}

fn query_rejection(rej: QueryRejection) -> ApiError {
    ApiError::bad_request(format!("bad query string: {}", sanitize(&rej.body_text())))
}

/// The caller, authenticated by `Authorization: Bearer <root key>`.
pub struct Auth(pub Actor);

impl<S: Send + Sync> FromRequestParts<S> for Auth
where
    AppState: FromRef<S>,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        let app = AppState::from_ref(state);
        let peer = parts.extensions.get::<ConnectInfo<SocketAddr>>().map(|c| c.0);
        let request_id = parts.extensions.get::<RequestId>().map(|r| r.0.clone());
        authenticate(&app, parts, peer, request_id).map(Auth)
    }
}

/// The root key of `Authorization: Bearer`, as an [`Actor`]: the [`Auth`]
/// extractor, and the verify fast path.
pub(crate) fn authenticate(
    app: &App,
    parts: &Parts,
    peer: Option<SocketAddr>,
    request_id: Option<String>,
) -> Result<Actor, ApiError> {
    // No credential at all is a plain 401, throttled or not: nothing is tried.
    let header = parts.headers.get(AUTHORIZATION).ok_or(AuthError::Missing)?;
    let token = header
        .to_str()
        .ok()
        .and_then(|v| v.split_once(' '))
        // The scheme is case-insensitive (RFC 9110, section 11.1).
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, token)| token.trim())
        .ok_or(AuthError::Malformed);
    authenticate_token(app, parts, peer, request_id, token)
}

/// A presented root key (from a header, or the dashboard's login form), as
/// an [`Actor`]: throttled per address, counted when wrong, and refused
/// without a client certificate where mTLS is required.
pub(crate) fn authenticate_token(
    app: &App,
    parts: &Parts,
    peer: Option<SocketAddr>,
    request_id: Option<String>,
    token: Result<&str, AuthError>,
) -> Result<Actor, ApiError> {
    let now = keyward_core::time::now_ms();
    if let Some(ip) = peer.map(|p| p.ip())
        && let Some(ms) = app.throttle.blocked_for(ip, now)
    {
        app.auth_throttled.increment(1);
        // Still a refused authentication for the rules engine: the flood goes on.
        app.service.note_auth_failure(Some(&ip.to_string()));
        let secs = (ms as u64).div_ceil(1000);
        return Err(ApiError {
            retry_after: Some(secs),
            ..ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                "too-many-auth-failures",
                format!(
                    "too many failed root-key authentications from this address; retry in {secs} s with a valid root key"
                ),
            )
        });
    }
    let source_ip = peer.map(|p| p.ip().to_string());
    let authenticated = token.and_then(|token| app.service.authenticate(token));
    let (workspace_id, root_key_id, role) = match authenticated {
        Ok(who) => who,
        Err(e) => {
            // A wrong root key: counted, throttled per address, and watched
            // by the rules engine for floods.
            app.auth_failures.increment(1);
            if let Some(ip) = peer.map(|p| p.ip())
                && let crate::throttle::Failure::Blocked(ms) = app.throttle.fail(ip, now)
            {
                tracing::warn!(
                    source_ip = %ip,
                    block_s = ms / 1000,
                    "Blocked an address after repeated failed root-key authentications."
                );
            }
            app.service.note_auth_failure(source_ip.as_deref());
            return Err(e.into());
        }
    };
    // mTLS for root-key callers: the key alone is not enough.
    if app.ops.client_cert_for_root_keys
        && parts.extensions.get::<crate::tls::ClientCert>() != Some(&crate::tls::ClientCert(true))
    {
        tracing::warn!(root_key_id = %root_key_id, "Root key refused: no verified client certificate (mTLS).");
        return Err(ApiError {
            www_authenticate: true,
            ..ApiError::new(
                StatusCode::UNAUTHORIZED,
                "client-certificate-required",
                "this server takes root keys only over TLS with a client certificate signed by its client CA (tls.client_ca); connect with one (curl --cert --key, or KEYWARD_CLIENT_CERT/KEYWARD_CLIENT_KEY for the CLI)",
            )
        });
    }
    tracing::Span::current().record("root_key_id", root_key_id.as_str());
    Ok(Actor { workspace_id, root_key_id, role, source_ip, request_id })
}
