//! `X-Request-Id` on every response, one span per request carrying it, and
//! the last line of defence for error bodies: any 4xx/5xx that is not yet
//! problem+json (a 405 from the router, a timeout, a panic) is made one, and
//! every problem body gets the request id.

use std::time::Instant;

use axum::body::Body;
use axum::extract::Request;
use axum::http::{HeaderName, HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::Response;
use http_body_util::BodyExt;
use tracing::Instrument;

use crate::error::problem_response;

pub static X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// The id of the current request, in the request's extensions.
#[derive(Debug, Clone)]
pub struct RequestId(pub String);

/// A caller's id is kept when it is short and plain; otherwise we make one.
fn acceptable(v: &HeaderValue) -> Option<String> {
    let s = v.to_str().ok()?;
    let ok = (1..=128).contains(&s.len())
        && s.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':'));
    ok.then(|| s.to_owned())
}

pub async fn layer(mut req: Request, next: Next) -> Response {
    let id = req
        .headers()
        .get(&X_REQUEST_ID)
        .and_then(acceptable)
        .unwrap_or_else(|| keyward_core::id::new_id("req", keyward_core::time::now_ms()));
    req.extensions_mut().insert(RequestId(id.clone()));
    let span = tracing::info_span!(
        "request",
        request_id = %id,
        method = %req.method(),
        path = %loggable_path(req.uri().path()),
        root_key_id = tracing::field::Empty,
    );
    let started = Instant::now();
    // The route template, not the path: metric labels stay bounded.
    let route = req
        .extensions()
        .get::<axum::extract::MatchedPath>()
        .map(|m| m.as_str().to_owned())
        .unwrap_or_else(|| "unmatched".to_owned());

    async move {
        let res = next.run(req).await;
        let res = problem_body(res, &id).await;
        let elapsed = started.elapsed();
        tracing::info!(status = res.status().as_u16(), micros = elapsed.as_micros() as u64, "Request handled.");
        let status = res.status().as_u16().to_string();
        metrics::counter!("keyward_http_requests_total", "route" => route.clone(), "status" => status).increment(1);
        metrics::histogram!("keyward_http_request_duration_seconds", "route" => route).record(elapsed.as_secs_f64());
        res
    }
    .instrument(span)
    .await
}

async fn problem_body(res: Response, id: &str) -> Response {
    let mut res = if res.status().is_client_error() || res.status().is_server_error() {
        let is_problem = res
            .headers()
            .get(header::CONTENT_TYPE)
            .is_some_and(|v| v.as_bytes().starts_with(b"application/problem+json"));
        let (parts, body) = res.into_parts();
        let bytes = body.collect().await.map(|b| b.to_bytes()).unwrap_or_default();
        let mut res = if is_problem {
            with_request_id(Response::from_parts(parts, Body::from(bytes)), id).await
        } else {
            let (slug, detail) = generic_problem(parts.status);
            let mut res = problem_response(parts.status, slug, detail);
            for name in [header::ALLOW, header::RETRY_AFTER, header::WWW_AUTHENTICATE] {
                if let Some(v) = parts.headers.get(&name) {
                    res.headers_mut().insert(name, v.clone());
                }
            }
            with_request_id(res, id).await
        };
        res.headers_mut().remove(header::CONTENT_LENGTH);
        res
    } else {
        res
    };
    if let Ok(v) = HeaderValue::from_str(id) {
        res.headers_mut().insert(X_REQUEST_ID.clone(), v);
    }
    res
}

/// Adds `request_id` to a problem body.
async fn with_request_id(res: Response, id: &str) -> Response {
    let (parts, body) = res.into_parts();
    let bytes = body.collect().await.map(|b| b.to_bytes()).unwrap_or_default();
    let body = match serde_json::from_slice::<serde_json::Value>(&bytes) {
        Ok(serde_json::Value::Object(mut m)) => {
            m.insert("request_id".into(), id.into());
            serde_json::to_vec(&m).map(Body::from).unwrap_or_else(|_| Body::from(bytes))
        }
        _ => Body::from(bytes),
    };
    Response::from_parts(parts, body)
}

/// The request path with any segment too long to be an id cut out: a key
/// pasted into a URL must not reach the log.
pub fn loggable_path(path: &str) -> String {
    path.split('/').map(|seg| if seg.len() > 32 { "[redacted]" } else { seg }).collect::<Vec<_>>().join("/")
}

fn generic_problem(status: StatusCode) -> (&'static str, &'static str) {
    match status {
        StatusCode::NOT_FOUND => ("not-found", "no such route; see /openapi.json for the API"),
        StatusCode::METHOD_NOT_ALLOWED => {
            ("method-not-allowed", "this route does not take that method; see the Allow header")
        }
        StatusCode::REQUEST_TIMEOUT | StatusCode::SERVICE_UNAVAILABLE => {
            ("timeout", "the request took too long; try again")
        }
        StatusCode::PAYLOAD_TOO_LARGE => ("body-too-large", "the body is larger than this server accepts"),
        StatusCode::INTERNAL_SERVER_ERROR => {
            ("internal", "the server failed to handle this request; quote the request id to an operator")
        }
        _ => ("error", "the request failed"),
    }
}
