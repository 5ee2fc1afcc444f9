//! `/v1/events` (query and NDJSON stream) and `/v1/usage` (reports).

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use keyward_service::events::{EventPage, EventQuery, EventView, UsageAccepted, UsageRequest, event_view};

use crate::AppState;
use crate::error::{ApiError, Problem};
use crate::extract::{Auth, Json, Query};

const NDJSON: &str = "application/x-ndjson";

/// Usage events of the workspace, filtered; newest first unless `order=asc`.
/// With `Accept: application/x-ndjson` the whole range streams as one event per line.
#[utoipa::path(get, path = "/v1/events", operation_id = "listEvents", tag = "events", params(EventQuery),
    responses(
        (status = 200, description = "a page of events (JSON), or with `Accept: application/x-ndjson` every matching event, one per line",
            content((EventPage = "application/json"), (EventView = "application/x-ndjson"))),
        (status = "4XX", body = Problem, content_type = "application/problem+json")),
    security(("root_key" = [])))]
pub async fn list(
    State(state): State<AppState>,
    Auth(actor): Auth,
    headers: HeaderMap,
    Query(query): Query<EventQuery>,
) -> Result<Response, ApiError> {
    let wants_ndjson = headers.get(header::ACCEPT).and_then(|v| v.to_str().ok()).is_some_and(|v| v.contains(NDJSON));
    if !wants_ndjson {
        return Ok(axum::Json(state.service.query_events(&actor, query).await?).into_response());
    }
    let mut filter = state.service.event_filter(&actor, &query, u32::MAX).await?;
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<String, std::io::Error>>(4);
    let service = state.service.clone();
    tokio::spawn(async move {
        let mut left = filter.limit;
        loop {
            let page = 1000.min(left);
            filter.limit = page;
            let rows = match service.read_events(filter.clone()).await {
                Ok(rows) => rows,
                Err(e) => {
                    tracing::error!(error = %e, "Streaming events failed.");
                    let _ = tx.send(Err(std::io::Error::other("reading events failed"))).await;
                    return;
                }
            };
            let got = rows.len() as u32;
            let Some(last) = rows.last().map(|event| event.id) else { return };
            let mut chunk = String::with_capacity(rows.len() * 400);
            for event in rows {
                chunk.push_str(&serde_json::to_string(&event_view(event)).unwrap_or_default());
                chunk.push('\n');
            }
            if tx.send(Ok(chunk)).await.is_err() {
                return; // The client went away.
            }
            left -= got;
            if got < page || left == 0 {
                return;
            }
            if filter.ascending {
                filter.after_id = Some(last);
            } else {
                filter.before_id = Some(last);
            }
        }
    });
    let body = Body::from_stream(tokio_stream::wrappers::ReceiverStream::new(rx));
    Ok(([(header::CONTENT_TYPE, NDJSON)], body).into_response())
}

/// Report what the application saw of a request it verified: final status,
/// bytes and latency are added to that verification's event.
#[utoipa::path(post, path = "/v1/usage", operation_id = "reportUsage", tag = "events", request_body = UsageRequest,
    responses((status = 202, body = UsageAccepted), (status = "4XX", body = Problem, content_type = "application/problem+json")), security(("root_key" = [])))]
pub async fn report(
    State(state): State<AppState>,
    Auth(actor): Auth,
    Json(req): Json<UsageRequest>,
) -> Result<(StatusCode, axum::Json<UsageAccepted>), ApiError> {
    Ok((StatusCode::ACCEPTED, axum::Json(state.service.report_usage(&actor, req).await?)))
}

/// The workspace's top keys, owners or source addresses by requests, denials
/// or bytes over a range, summed from the rollups.
#[utoipa::path(get, path = "/v1/analytics/top", operation_id = "topUsage", tag = "events",
    params(keyward_service::analytics::TopQuery),
    responses((status = 200, body = keyward_service::analytics::TopList), (status = "4XX", body = Problem, content_type = "application/problem+json")), security(("root_key" = [])))]
pub async fn top(
    State(state): State<AppState>,
    Auth(actor): Auth,
    Query(query): Query<keyward_service::analytics::TopQuery>,
) -> Result<axum::Json<keyward_service::analytics::TopList>, ApiError> {
    Ok(axum::Json(state.service.top(&actor, query).await?))
}
