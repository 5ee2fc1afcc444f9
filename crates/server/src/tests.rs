//! Handler tests without a socket: the whole stack from `app`, driven with
//! `tower::ServiceExt::oneshot` (problem+json, extractors, request ids).

use std::sync::Arc;

use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use keyward_core::{KeyHasher, Pepper};
use keyward_service::Service;
use tower::ServiceExt;

use crate::{HttpConfig, Ops, app};

/// An app over an in-memory store, and its admin root key.
async fn setup() -> (axum::Router, String) {
    let service = Service::in_memory(KeyHasher::new(&Pepper::generate(1), &[])).unwrap();
    let root = service.bootstrap().await.unwrap().unwrap().key;
    (app(Arc::new(service), &HttpConfig::default(), Ops::default()), root)
}

/// Sends one request; returns status, content type, the `X-Request-Id` and the body.
async fn check(app: &axum::Router, req: Request<Body>) -> (StatusCode, String, String, serde_json::Value) {
    let res = app.clone().oneshot(req).await.unwrap();
    let status = res.status();
    let header =
        |n: header::HeaderName| res.headers().get(n).and_then(|v| v.to_str().ok()).unwrap_or_default().to_owned();
    let (ctype, rid) = (header(header::CONTENT_TYPE), header(header::HeaderName::from_static("x-request-id")));
    let bytes = axum::body::to_bytes(res.into_body(), 1 << 20).await.unwrap();
    (status, ctype, rid, serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null))
}

fn post(path: &str, auth: Option<&str>, body: &str) -> Request<Body> {
    let mut r = Request::post(path).header(header::CONTENT_TYPE, "application/json");
    if let Some(a) = auth {
        r = r.header(header::AUTHORIZATION, a);
    }
    r.body(Body::from(body.to_owned())).unwrap()
}

#[tokio::test]
async fn errors_are_problem_json_with_the_request_id() {
    let (app, root) = setup().await;
    let bearer = format!("Bearer {root}");
    let cases = [
        (Request::get("/nowhere").body(Body::empty()).unwrap(), StatusCode::NOT_FOUND, "urn:keyward:problem:not-found"),
        (post("/v1/keys/verify", None, "{}"), StatusCode::UNAUTHORIZED, "urn:keyward:problem:unauthorized"),
        (
            post("/v1/keys/verify", Some(&bearer), "{not json"),
            StatusCode::BAD_REQUEST,
            "urn:keyward:problem:invalid-json",
        ),
        (
            post("/v1/keys/verify", Some(&bearer), r#"{"key": 5}"#),
            StatusCode::UNPROCESSABLE_ENTITY,
            "urn:keyward:problem:invalid-body",
        ),
        (
            post("/v1/keys/verify", Some(&bearer), &format!(r#"{{"key": "{}"}}"#, "x".repeat(70_000))),
            StatusCode::PAYLOAD_TOO_LARGE,
            "urn:keyward:problem:body-too-large",
        ),
        (
            Request::delete("/healthz").body(Body::empty()).unwrap(),
            StatusCode::METHOD_NOT_ALLOWED,
            "urn:keyward:problem:method-not-allowed",
        ),
    ];
    for (req, status, kind) in cases {
        let what = format!("{} {}", req.method(), req.uri());
        let (got, ctype, rid, body) = check(&app, req).await;
        assert_eq!(got, status, "{what}: {body}");
        assert_eq!(ctype, "application/problem+json", "{what}");
        assert_eq!(body["type"], kind, "{what}: {body}");
        assert_eq!(body["request_id"], rid.as_str(), "{what}: the body names the request's id");
        assert!(rid.starts_with("req_"), "{what}: {rid}");
    }
}

#[tokio::test]
async fn the_bearer_scheme_is_case_insensitive_and_request_ids_are_vetted() {
    let (app, root) = setup().await;
    for scheme in ["Bearer", "bearer", "BEARER"] {
        let (status, _, _, body) =
            check(&app, post("/v1/keys/verify", Some(&format!("{scheme} {root}")), r#"{"key": "nope"}"#)).await;
        assert_eq!(status, StatusCode::OK, "{scheme}: {body}");
        assert_eq!(body["code"], "MALFORMED");
    }
    let with_id = |id: &str| Request::get("/healthz").header("x-request-id", id).body(Body::empty()).unwrap();
    let (_, _, rid, _) = check(&app, with_id("trace-0af7651916cd43dd")).await;
    assert_eq!(rid, "trace-0af7651916cd43dd");
    // A root key as a request id is replaced, never echoed.
    let (_, _, rid, _) = check(&app, with_id(&root)).await;
    assert!(rid.starts_with("req_") && !rid.contains(&root[8..]), "{rid}");
}
