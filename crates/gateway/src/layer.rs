//! [`KeywardLayer`]: API keys for an axum, tonic or any tower app, added with
//! one `.layer(...)`. Two modes:
//!
//! * **embedded**: the app holds a keyward [`Service`] and every request is
//!   decided in process, in under a microsecond;
//! * **remote**: every request is verified by a keyward server
//!   (`POST /v1/keys/verify`), nothing cached, so a revocation or a limit
//!   acts on the very next request, as on the server. The response's status
//!   and latency go back as a usage report (`POST /v1/usage`).
//!
//! Admitted requests reach the inner service without the key and with a
//! [`KeyIdentity`] extension; refusals are problem+json (401, 403, 429 with
//! `Retry-After` and the rate-limit headers) and never reach it.

use std::future::Future;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Either, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use keyward_core::Outcome;
use keyward_core::policy::RateLimitFields;
use keyward_core::time::now_ms;
use keyward_service::Service;
use keyward_service::verify::{RequestCtx, VerifyInput};

use crate::check::{KeyLocations, KeySource, problem, refusal, set_ratelimit};

/// Who the admitted key is, for the app's handlers (`Extension<KeyIdentity>`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyIdentity {
    pub key_id: String,
    pub owner_id: Option<String>,
    pub keyspace_id: String,
    /// The id of the verification, also in the usage event.
    pub request_id: String,
}

type IpFn = Arc<dyn Fn(&http::Extensions, &HeaderMap) -> Option<IpAddr> + Send + Sync>;

/// The layer; cheap to clone.
#[derive(Clone)]
pub struct KeywardLayer {
    inner: Arc<Settings>,
}

#[derive(Clone)]
struct Settings {
    verifier: Verifier,
    keys: KeyLocations,
    scopes: Vec<String>,
    client_ip: Option<IpFn>,
}

#[derive(Clone)]
enum Verifier {
    Embedded { service: Arc<Service>, workspace_id: String },
    Remote(Box<Remote>),
}

#[derive(Clone)]
struct Remote {
    verify_url: http::Uri,
    usage_url: http::Uri,
    authorization: HeaderValue,
    client: Client<HttpConnector, Full<Bytes>>,
    timeout: Duration,
}

/// A remote verification's answer, as the layer needs it.
struct Answer {
    outcome: Outcome,
    message: Option<String>,
    identity: Option<KeyIdentity>,
    limits: Option<RateLimitFields>,
    /// Embedded mode: the usage event, written once the app has answered.
    event: Option<keyward_core::event::UsageEvent>,
}

/// Why the layer could not be built.
#[derive(Debug, thiserror::Error)]
pub enum LayerError {
    #[error("keyward server URL '{0}' is not an http:// URL")]
    BadUrl(String),
    #[error("the root key is not usable as a header value")]
    BadRootKey,
}

impl KeywardLayer {
    /// Decides in process over `service`, for keys of `workspace_id`.
    pub fn embedded(service: Arc<Service>, workspace_id: impl Into<String>) -> Self {
        Self::with(Verifier::Embedded { service, workspace_id: workspace_id.into() })
    }

    /// Verifies against the keyward server at `base_url` (e.g.
    /// `http://127.0.0.1:8080`) with a root key of role `verifier` or above.
    pub fn remote(base_url: &str, root_key: &str) -> Result<Self, LayerError> {
        let base = base_url.trim_end_matches('/');
        let parse = |path: &str| -> Result<http::Uri, LayerError> {
            let u: http::Uri = format!("{base}{path}").parse().map_err(|_| LayerError::BadUrl(base_url.into()))?;
            match u.scheme_str() {
                Some("http") => Ok(u),
                _ => Err(LayerError::BadUrl(base_url.into())),
            }
        };
        let mut authorization =
            HeaderValue::from_str(&format!("Bearer {root_key}")).map_err(|_| LayerError::BadRootKey)?;
        authorization.set_sensitive(true);
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        let client = Client::builder(TokioExecutor::new()).build(connector);
        Ok(Self::with(Verifier::Remote(Box::new(Remote {
            verify_url: parse("/v1/keys/verify")?,
            usage_url: parse("/v1/usage")?,
            authorization,
            client,
            timeout: Duration::from_secs(5),
        }))))
    }

    fn with(verifier: Verifier) -> Self {
        KeywardLayer {
            inner: Arc::new(Settings { verifier, keys: KeyLocations::default(), scopes: Vec::new(), client_ip: None }),
        }
    }

    fn settings(mut self, f: impl FnOnce(&mut Settings)) -> Self {
        // A layer already cloned keeps its settings; this one gets a copy.
        f(Arc::make_mut(&mut self.inner));
        self
    }

    /// Scopes every request needs (on top of the keyspace's method and path rules).
    pub fn require_scopes(self, scopes: &[&str]) -> Self {
        let scopes = scopes.iter().map(|s| s.to_string()).collect();
        self.settings(|s| s.scopes = scopes)
    }

    /// The header that carries the key (default `x-api-key`, and bearer tokens).
    pub fn key_header(self, name: http::HeaderName) -> Self {
        self.settings(|s| s.keys.headers = vec![name])
    }

    /// How to find the client's address (e.g. axum's `ConnectInfo`), for IP
    /// allowlists and the usage event.
    pub fn client_ip(
        self,
        f: impl Fn(&http::Extensions, &HeaderMap) -> Option<IpAddr> + Send + Sync + 'static,
    ) -> Self {
        self.settings(|s| s.client_ip = Some(Arc::new(f)))
    }
}

impl<S> tower::Layer<S> for KeywardLayer {
    type Service = Keyward<S>;
    fn layer(&self, inner: S) -> Keyward<S> {
        Keyward { inner, settings: self.inner.clone() }
    }
}

/// The service the layer wraps around the app.
#[derive(Clone)]
pub struct Keyward<S> {
    inner: S,
    settings: Arc<Settings>,
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

impl<S, B, R> tower::Service<Request<B>> for Keyward<S>
where
    S: tower::Service<Request<B>, Response = Response<R>> + Clone + Send + 'static,
    S::Future: Send,
    S::Error: Send,
    B: Send + 'static,
    R: http_body::Body<Data = Bytes> + Send + 'static,
{
    type Response = Response<Either<R, Full<Bytes>>>;
    type Error = S::Error;
    type Future = BoxFuture<Result<Self::Response, S::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<B>) -> Self::Future {
        // The clone that was made ready serves this request (tower's rule).
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let settings = self.settings.clone();
        Box::pin(async move {
            let started = Instant::now();
            let refuse = |r: Response<Bytes>| Ok(r.map(|b| Either::Right(Full::new(b))));
            let Some((key, source)) = settings.keys.find(req.headers(), req.uri().query()) else {
                let rid = keyward_core::id::new_request_id(now_ms());
                return refuse(refusal(
                    None,
                    "send an API key in the X-API-Key header or as Authorization: Bearer",
                    &rid,
                    None,
                ));
            };
            let ip = settings.client_ip.as_ref().and_then(|f| f(req.extensions(), req.headers()));
            let method = req.method().as_str().to_owned();
            let path = req.uri().path().to_owned();
            let ua = req.headers().get(header::USER_AGENT).and_then(|v| v.to_str().ok()).map(str::to_owned);
            let (mut answer, request_id) = match settings.verify(&key, ip, &method, &path, ua.as_deref()).await {
                Ok(a) => a,
                Err(rid) => {
                    let detail = "the key could not be verified; try again";
                    return refuse(problem(StatusCode::SERVICE_UNAVAILABLE, "unavailable", detail, &rid, None));
                }
            };
            if !answer.outcome.is_valid() {
                let detail = answer.message.clone().unwrap_or_else(|| answer.outcome.as_str().to_owned());
                let r = refusal(Some(answer.outcome), &detail, &request_id, answer.limits.as_ref());
                settings.report(&request_id, r.status().as_u16(), started.elapsed(), &mut answer);
                return refuse(r);
            }
            match source {
                KeySource::Header(h) => {
                    req.headers_mut().remove(h);
                }
                KeySource::Bearer => {
                    req.headers_mut().remove(header::AUTHORIZATION);
                }
                KeySource::Query(_) => {}
            }
            if let Some(id) = answer.identity.clone() {
                req.extensions_mut().insert(id);
            }
            let mut res = inner.call(req).await?;
            if let Some(l) = &answer.limits {
                set_ratelimit(res.headers_mut(), l, false);
            }
            settings.report(&request_id, res.status().as_u16(), started.elapsed(), &mut answer);
            Ok(res.map(Either::Left))
        })
    }
}

impl Settings {
    /// The decision, and the request id it is recorded under. `Err` (with a
    /// request id) when no decision could be had: the layer fails closed.
    async fn verify(
        &self,
        key: &str,
        ip: Option<IpAddr>,
        method: &str,
        path: &str,
        user_agent: Option<&str>,
    ) -> Result<(Answer, String), String> {
        match &self.verifier {
            Verifier::Embedded { service, workspace_id } => {
                let rid = keyward_core::id::new_request_id(now_ms());
                let input = VerifyInput {
                    key,
                    ip,
                    method: Some(method),
                    path: Some(path),
                    scopes: &self.scopes,
                    cost: 1,
                    keyspace_id: None,
                };
                let ctx = RequestCtx { request_id: &rid, user_agent };
                let d = service.decide_only(workspace_id, &input).await.map_err(|_| rid.clone())?;
                let event = Some(service.gateway_event(workspace_id, &input, &ctx, &d));
                let identity = d.key.as_ref().map(|k| KeyIdentity {
                    key_id: k.id.to_string(),
                    owner_id: k.owner_id.as_deref().map(str::to_owned),
                    keyspace_id: k.keyspace_id().to_owned(),
                    request_id: rid.clone(),
                });
                let limits = d.ratelimit_fields(now_ms());
                Ok((Answer { outcome: d.outcome, message: d.message, identity, limits, event }, rid))
            }
            Verifier::Remote(r) => r.verify(key, ip, method, path, user_agent, &self.scopes).await,
        }
    }

    /// Adds what the app answered to the verification's usage event.
    fn report(&self, request_id: &str, status: u16, elapsed: Duration, answer: &mut Answer) {
        match &self.verifier {
            // In process the event is written now, whole.
            Verifier::Embedded { service, .. } => {
                if let Some(mut e) = answer.event.take() {
                    e.http_status = Some(status);
                    e.latency_us = Some(elapsed.as_micros() as u64);
                    service.record_event(e);
                }
            }
            Verifier::Remote(r) if answer.outcome.is_valid() => r.report(request_id, status, elapsed),
            Verifier::Remote(_) => {}
        }
    }
}

impl Remote {
    async fn verify(
        &self,
        key: &str,
        ip: Option<IpAddr>,
        method: &str,
        path: &str,
        user_agent: Option<&str>,
        scopes: &[String],
    ) -> Result<(Answer, String), String> {
        let body = serde_json::json!({
            "key": key, "ip": ip.map(|i| i.to_string()), "method": method, "path": path,
            "user_agent": user_agent, "scopes": scopes,
        });
        let req = Request::post(self.verify_url.clone())
            .header(header::CONTENT_TYPE, "application/json")
            .header(header::AUTHORIZATION, self.authorization.clone())
            .body(Full::new(Bytes::from(body.to_string())))
            .map_err(|_| String::new())?;
        let fail = |why: &str| {
            tracing::error!(reason = why, "The keyward server could not verify a key; refusing the request.");
            keyward_core::id::new_request_id(now_ms())
        };
        // One deadline for the head and the body of the answer.
        let deadline = tokio::time::Instant::now() + self.timeout;
        let res = match tokio::time::timeout_at(deadline, self.client.request(req)).await {
            Ok(Ok(r)) => r,
            Ok(Err(_)) => return Err(fail("unreachable")),
            Err(_) => return Err(fail("timeout")),
        };
        let status = res.status();
        let rid = res
            .headers()
            .get("x-request-id")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
            .unwrap_or_else(|| keyward_core::id::new_request_id(now_ms()));
        let field = |name: &str| res.headers().get(name).and_then(|v| v.to_str().ok()).map(str::to_owned);
        let limits = match (field("ratelimit-policy"), field("ratelimit")) {
            (Some(policy), Some(state)) => {
                let t = state.rsplit_once(";t=").and_then(|(_, t)| t.parse().ok());
                Some(RateLimitFields { policy, state, retry_after: t.map(|t: u64| t.max(1)) })
            }
            _ => None,
        };
        let bytes = match tokio::time::timeout_at(deadline, res.into_body().collect()).await {
            Ok(Ok(b)) => b.to_bytes(),
            Ok(Err(_)) => return Err(fail("the answer broke off")),
            Err(_) => return Err(fail("timeout")),
        };
        if !status.is_success() {
            return Err(fail(&format!("the server answered {status}")));
        }
        let v: serde_json::Value = serde_json::from_slice(&bytes).map_err(|_| fail("the answer is not JSON"))?;
        let outcome = v["code"].as_str().and_then(Outcome::parse).ok_or_else(|| fail("the answer has no code"))?;
        let text = |k: &str| v[k].as_str().map(str::to_owned);
        let identity = match (text("key_id"), text("keyspace_id")) {
            (Some(key_id), Some(keyspace_id)) => {
                Some(KeyIdentity { key_id, owner_id: text("owner_id"), keyspace_id, request_id: rid.clone() })
            }
            _ => None,
        };
        let limits = limits.map(|mut l| {
            if outcome != Outcome::RateLimited {
                l.retry_after = None;
            }
            l
        });
        Ok((Answer { outcome, message: text("message"), identity, limits, event: None }, rid))
    }

    fn report(&self, request_id: &str, status: u16, elapsed: Duration) {
        let body = serde_json::json!({
            "request_id": request_id, "status": status, "latency_ms": elapsed.as_millis() as u64,
        });
        let Ok(req) = Request::post(self.usage_url.clone())
            .header(header::CONTENT_TYPE, "application/json")
            .header(header::AUTHORIZATION, self.authorization.clone())
            .body(Full::new(Bytes::from(body.to_string())))
        else {
            return;
        };
        let fut = self.client.request(req);
        let timeout = self.timeout;
        // Best effort, bounded: a report that cannot be sent in time is dropped.
        tokio::spawn(tokio::time::timeout(timeout, async move {
            if let Ok(res) = fut.await {
                let _ = res.into_body().collect().await;
            }
        }));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_changed_after_a_clone_leave_the_clone_alone() {
        let a = KeywardLayer::remote("http://127.0.0.1:1", "kw_root_x").unwrap();
        let b = a.clone().require_scopes(&["read"]);
        assert!(a.inner.scopes.is_empty());
        assert_eq!(b.inner.scopes, ["read"]);
        assert!(matches!(KeywardLayer::remote("https://x", "k"), Err(LayerError::BadUrl(_))));
    }
}
