//! `X-Request-Id` on every response, one span per request carrying it, and
//! the last line of defence for error bodies: any 4xx/5xx that is not yet
//! problem+json (a 405 from the router, a timeout, a panic) is made one, and
//! every problem body gets the request id.

use std::sync::Arc;
use std::time::Instant;

use axum::extract::{Request, State};
use axum::http::{HeaderName, HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::Response;
use tracing::Instrument;

use crate::error::problem_response_for;

pub static X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// The id of the current request, in the request's extensions.
#[derive(Debug, Clone)]
pub struct RequestId(pub String);

/// Longest caller-given request id that is kept.
const MAX_ID_LEN: usize = 64;
/// Longest run of letters and digits in a kept request id: a ULID is 26, a
/// W3C trace id 32; a key's body (38) is longer.
const MAX_ID_RUN: usize = 32;

/// A caller's id is kept only when it is short, id-shaped and nothing like a
/// key: it is repeated in every log line, the usage event, the sinks and the
/// response. Anything else is replaced by an id of ours.
fn acceptable(v: &HeaderValue, service: &keyward_service::Service) -> Option<String> {
    let s = v.to_str().ok()?;
    let charset = s.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':'));
    let longest_run = s.split(|c: char| !c.is_ascii_alphanumeric()).map(str::len).max().unwrap_or(0);
    let ok = (1..=MAX_ID_LEN).contains(&s.len()) && charset && longest_run <= MAX_ID_RUN && !service.holds_secret(s);
    ok.then(|| s.to_owned())
}

pub async fn layer(State(state): State<crate::AppState>, mut req: Request, next: Next) -> Response {
    let id = request_id(req.headers(), &state.service);
    req.extensions_mut().insert(RequestId(id.clone()));
    let span = span(&id, req.method().as_str(), req.uri().path());
    let started = Instant::now();
    // The route template, not the path: metric labels stay bounded.
    let route = state.http_metrics.route(req.extensions().get::<axum::extract::MatchedPath>().map(|m| m.as_str()));
    let too_long = too_long(req.uri(), state.max_uri_bytes, &id);
    async move {
        let res = match too_long {
            Some(res) => res,
            None => crate::error::REQUEST_ID.scope(id.clone(), next.run(req)).await,
        };
        finish(res, &id, started, &route)
    }
    .instrument(span)
    .await
}

/// The caller's `X-Request-Id` if [`acceptable`], else a new one.
pub(crate) fn request_id(headers: &axum::http::HeaderMap, service: &keyward_service::Service) -> String {
    headers
        .get(&X_REQUEST_ID)
        .and_then(|v| acceptable(v, service))
        .unwrap_or_else(|| keyward_core::id::new_request_id(keyward_core::time::now_ms()))
}

/// The span of one request: every log line inside it carries the request id.
pub(crate) fn span(id: &str, method: &str, path: &str) -> tracing::Span {
    tracing::info_span!(
        "request",
        request_id = %id,
        method = %method,
        path = %loggable_path(path),
        root_key_id = tracing::field::Empty,
    )
}

/// The 414 of a request target longer than `max_uri` bytes.
pub(crate) fn too_long(uri: &axum::http::Uri, max_uri: usize, id: &str) -> Option<Response> {
    (uri.path_and_query().map_or(0, |pq| pq.as_str().len()) > max_uri).then(|| {
        problem_response_for(
            StatusCode::URI_TOO_LONG,
            "uri-too-long",
            &format!("the request target is longer than {max_uri} bytes; send long input in a JSON body"),
            Some(id.to_owned()),
        )
    })
}

/// The end of every request: a problem body where one is due, the request
/// id, the log line and the route's metrics.
pub(crate) fn finish(res: Response, id: &str, started: Instant, route: &RouteMetrics) -> Response {
    let res = problem_body(res, id);
    let elapsed = started.elapsed();
    tracing::info!(status = res.status().as_u16(), micros = elapsed.as_micros() as u64, "Request handled.");
    route.record(res.status().as_u16(), elapsed);
    res
}

/// The HTTP layer's metric handles, made once per route (and status) and
/// reused: a registry lookup and two label strings per request showed in
/// issue 11's profile.
#[derive(Default)]
pub struct HttpMetrics {
    routes: parking_lot::RwLock<std::collections::HashMap<String, Arc<RouteMetrics>>>,
}

/// One route's handles.
pub struct RouteMetrics {
    route: String,
    duration: keyward_core::histogram::Histogram,
    by_status: parking_lot::RwLock<Vec<(u16, metrics::Counter)>>,
}

/// Upper bounds of the latency buckets, seconds.
static BOUNDS: [f64; 14] =
    [0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0, 5.0, 30.0];

impl HttpMetrics {
    /// The handles of a route template (`None`: no route matched).
    pub fn route(&self, template: Option<&str>) -> Arc<RouteMetrics> {
        let name = template.unwrap_or("unmatched");
        if let Some(r) = self.routes.read().get(name) {
            return r.clone();
        }
        self.routes
            .write()
            .entry(name.to_owned())
            .or_insert_with(|| {
                Arc::new(RouteMetrics {
                    route: name.to_owned(),
                    duration: keyward_core::histogram::Histogram::new(&BOUNDS),
                    by_status: Default::default(),
                })
            })
            .clone()
    }
}

impl HttpMetrics {
    /// `keyward_http_request_duration_seconds` in the Prometheus text format,
    /// one histogram per route (appended to the exporter's text by `/metrics`).
    pub fn render_latency(&self) -> String {
        let mut out = String::from(
            "# HELP keyward_http_request_duration_seconds HTTP request latency by route template.\n\
             # TYPE keyward_http_request_duration_seconds histogram\n",
        );
        let routes = self.routes.read();
        let mut names: Vec<&String> = routes.keys().collect();
        names.sort();
        for name in names {
            routes[name].duration.render(
                &mut out,
                "keyward_http_request_duration_seconds",
                &format!("route=\"{name}\""),
            );
        }
        out
    }
}

impl RouteMetrics {
    fn record(&self, status: u16, elapsed: std::time::Duration) {
        self.duration.record(elapsed);
        if let Some((_, c)) = self.by_status.read().iter().find(|(s, _)| *s == status) {
            c.increment(1);
            return;
        }
        let counter = metrics::counter!(
            "keyward_http_requests_total", "route" => self.route.clone(), "status" => status.to_string()
        );
        counter.increment(1);
        self.by_status.write().push((status, counter));
    }
}

/// Any 4xx/5xx that is not problem+json yet (a 405 from the router, a
/// timeout, a caught panic) becomes one; every response gets `X-Request-Id`.
/// Problem bodies made inside the request already carry its id.
fn problem_body(res: Response, id: &str) -> Response {
    let status = res.status();
    // The dashboard's error pages are HTML, and stay so.
    let is_problem = res.headers().get(header::CONTENT_TYPE).is_some_and(|v| {
        v.as_bytes().starts_with(b"application/problem+json") || v.as_bytes().starts_with(b"text/html")
    });
    let mut res = if (status.is_client_error() || status.is_server_error()) && !is_problem {
        let (slug, detail) = generic_problem(status);
        let mut problem = problem_response_for(status, slug, detail, Some(id.to_owned()));
        for name in [header::ALLOW, header::RETRY_AFTER, header::WWW_AUTHENTICATE] {
            if let Some(v) = res.headers().get(&name) {
                problem.headers_mut().insert(name, v.clone());
            }
        }
        problem
    } else {
        res
    };
    if let Ok(v) = HeaderValue::from_str(id) {
        res.headers_mut().insert(X_REQUEST_ID.clone(), v);
    }
    res
}

/// The request path with any segment too long to be an id, or key-shaped,
/// cut out: a key pasted into a URL must not reach the log.
pub fn loggable_path(path: &str) -> String {
    path.split('/')
        .map(|seg| if seg.len() > 32 || keyward_core::redact::holds_secret(seg, &[]) { "[redacted]" } else { seg })
        .collect::<Vec<_>>()
        .join("/")
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn latency_renders_as_a_cumulative_prometheus_histogram() {
        let m = HttpMetrics::default();
        let r = m.route(Some("/v1/keys/verify"));
        r.duration.record(std::time::Duration::from_micros(50));
        r.duration.record(std::time::Duration::from_micros(700));
        r.duration.record(std::time::Duration::from_secs(60));
        let text = m.render_latency();
        assert!(text.contains("# TYPE keyward_http_request_duration_seconds histogram\n"), "{text}");
        let line = |le: &str| {
            format!("keyward_http_request_duration_seconds_bucket{{route=\"/v1/keys/verify\",le=\"{le}\"}} ")
        };
        assert!(text.contains(&(line("0.0001") + "1\n")), "{text}");
        assert!(text.contains(&(line("0.0005") + "1\n")), "{text}");
        assert!(text.contains(&(line("0.001") + "2\n")), "{text}");
        assert!(text.contains(&(line("30") + "2\n")), "{text}");
        assert!(text.contains(&(line("+Inf") + "3\n")), "{text}");
        assert!(text.contains("keyward_http_request_duration_seconds_count{route=\"/v1/keys/verify\"} 3\n"), "{text}");
        assert!(
            text.contains("keyward_http_request_duration_seconds_sum{route=\"/v1/keys/verify\"} 60.00075\n"),
            "{text}"
        );
    }
}
