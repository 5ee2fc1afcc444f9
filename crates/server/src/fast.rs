//! The verify fast path: `POST /v1/keys/verify` answered straight from the
//! connection, outside the router and its tower layers, which cost several
//! times the decision itself (issue 11, BENCHMARKS.md). It keeps every
//! promise the stack makes for the route, with the same code: the request id
//! and its span, the URI limit, root-key authentication (`extract::
//! authenticate`), the body limit and deadline (`extract::json_body`), the
//! request deadline (503), a caught panic (500), problem+json bodies and the
//! route's metrics (`request_id::finish`), and the same answer
//! (`routes::keys::verify_answer`). Every other request goes to the router.

use std::net::SocketAddr;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::http::{Method, StatusCode};
use axum::response::{IntoResponse, Response};
use futures_util::FutureExt;
use hyper::body::Incoming;
use keyward_service::api::VerifyRequest;
use tracing::Instrument;

use crate::error::{ApiError, REQUEST_ID};
use crate::request_id::{self, RouteMetrics};
use crate::{AppState, extract, routes};

/// The path the fast path answers (for `POST` only).
pub const VERIFY_PATH: &str = "/v1/keys/verify";

/// What the fast path needs, made once per server.
pub(crate) struct Fast {
    pub state: AppState,
    pub route: Arc<RouteMetrics>,
    pub max_body_bytes: usize,
    pub body_timeout: Duration,
    pub request_timeout: Duration,
}

/// Whether `req` is one the fast path answers.
pub(crate) fn takes<B>(req: &hyper::Request<B>) -> bool {
    req.method() == Method::POST && req.uri().path() == VERIFY_PATH
}

/// Answers one `POST /v1/keys/verify`.
pub(crate) async fn verify(fast: &Fast, req: hyper::Request<Incoming>, peer: SocketAddr) -> Response {
    let id = request_id::request_id(req.headers(), &fast.state.service);
    let span = request_id::span(&id, "POST", VERIFY_PATH);
    let started = Instant::now();
    async move {
        let res = match request_id::too_long(req.uri(), fast.state.max_uri_bytes, &id) {
            Some(res) => res,
            None => {
                let work = REQUEST_ID.scope(id.clone(), async {
                    answer(fast, req, peer, &id).await.unwrap_or_else(IntoResponse::into_response)
                });
                match tokio::time::timeout(fast.request_timeout, AssertUnwindSafe(work).catch_unwind()).await {
                    Ok(Ok(res)) => res,
                    Ok(Err(_panic)) => {
                        tracing::error!("The verify handler panicked.");
                        StatusCode::INTERNAL_SERVER_ERROR.into_response()
                    }
                    Err(_) => StatusCode::SERVICE_UNAVAILABLE.into_response(),
                }
            }
        };
        request_id::finish(res, &id, started, &fast.route)
    }
    .instrument(span)
    .await
}

async fn answer(fast: &Fast, req: hyper::Request<Incoming>, peer: SocketAddr, id: &str) -> Result<Response, ApiError> {
    let (parts, body) = req.into_parts();
    let actor = extract::authenticate(&fast.state, &parts, Some(peer), Some(id.to_owned()))?;
    let req: VerifyRequest = extract::json_body(&parts.headers, body, fast.max_body_bytes, fast.body_timeout).await?;
    let (answer, limits) = fast.state.service.verify_request(&actor, &req, id).await?;
    Ok(routes::keys::verify_answer(answer, limits))
}
