//! The reverse proxy: each request's key is verified in process (method,
//! path, client address, the route's keyspace and scopes), taken off the
//! request, and the request forwarded over pooled keep-alive connections with
//! its body streamed both ways. The verify's usage event gets the upstream's
//! status, the bytes each way and the upstream latency.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{HeaderName, HeaderValue, Request, Response, StatusCode, header};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use ipnet::IpNet;
use keyward_core::Outcome;
use keyward_core::time::now_ms;
use keyward_service::Service;
use keyward_service::verify::{RequestCtx, VerifyInput};

use crate::body::{Counted, PendingEvent, Recorded};
use crate::check::{
    KeyLocations, KeySource, client_ip, problem, query_without, refusal, set_ratelimit, strip_hop_by_hop,
};
use crate::config::ProxyConfig;
use crate::upstream::Upstream;

/// What the proxy answers with: an upstream body streamed through, or one of ours.
pub type ProxyBody = BoxBody<Bytes, hyper::Error>;

struct Route {
    prefix: String,
    upstream: Upstream,
    keyspace_id: Option<String>,
    scopes: Vec<String>,
}

/// The proxy, shared by every connection.
pub struct Gateway {
    service: Arc<Service>,
    workspace_id: String,
    keys: KeyLocations,
    /// Longest prefix first; the default upstream last, as `/`.
    routes: Vec<Route>,
    trusted: Vec<IpNet>,
    identity: Vec<(HeaderName, Identity)>,
    client: Client<HttpConnector, Counted<Incoming>>,
    upstream_timeout: Duration,
    header_read_timeout: Duration,
    connections: Arc<tokio::sync::Semaphore>,
}

#[derive(Clone, Copy)]
enum Identity {
    Key,
    Owner,
    Keyspace,
}

impl Gateway {
    /// The proxy of `cfg` over `service`. Fails with a sentence saying what
    /// to fix (no workspace to choose, a bad upstream).
    pub fn new(service: Arc<Service>, cfg: &ProxyConfig) -> Result<Gateway, String> {
        if let Some(p) = cfg.problems().into_iter().next() {
            return Err(p);
        }
        let workspace_id = match &cfg.workspace_id {
            Some(w) => w.clone(),
            None => {
                let ids = service.workspace_ids();
                match ids.as_slice() {
                    [one] => one.clone(),
                    [] => return Err("proxy: no workspace yet; run `keyward init` first".into()),
                    _ => {
                        return Err(format!(
                            "proxy: {} workspaces; set proxy.workspace_id to the one whose keys the proxy accepts",
                            ids.len()
                        ));
                    }
                }
            }
        };
        let mut routes = cfg
            .routes
            .iter()
            .map(|r| {
                Ok(Route {
                    prefix: r.prefix.clone(),
                    upstream: Upstream::parse(&r.upstream)?,
                    keyspace_id: r.keyspace_id.clone(),
                    scopes: r.scopes.clone(),
                })
            })
            .collect::<Result<Vec<_>, String>>()?;
        routes.sort_by_key(|r| std::cmp::Reverse(r.prefix.len()));
        if let Some(u) = &cfg.upstream {
            routes.push(Route {
                prefix: "/".into(),
                upstream: Upstream::parse(u)?,
                keyspace_id: None,
                scopes: Vec::new(),
            });
        }
        let keys = KeyLocations {
            headers: cfg.key_headers.iter().filter_map(|h| HeaderName::from_bytes(h.as_bytes()).ok()).collect(),
            bearer: cfg.bearer,
            query_param: cfg.query_param.clone(),
        };
        let ih = &cfg.identity_headers;
        let identity =
            [(&ih.key_id, Identity::Key), (&ih.owner_id, Identity::Owner), (&ih.keyspace_id, Identity::Keyspace)]
                .into_iter()
                .filter(|(n, _)| !n.is_empty())
                .filter_map(|(n, i)| Some((HeaderName::from_bytes(n.as_bytes()).ok()?, i)))
                .collect();
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        connector.set_connect_timeout(Some(Duration::from_millis(cfg.connect_timeout_ms)));
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(90))
            .pool_max_idle_per_host(cfg.pool_max_idle)
            .pool_timer(TokioTimer::new())
            .build(connector);
        Ok(Gateway {
            service,
            workspace_id,
            keys,
            routes,
            trusted: cfg.trusted_proxies.clone(),
            identity,
            client,
            upstream_timeout: Duration::from_millis(cfg.upstream_timeout_ms),
            header_read_timeout: Duration::from_secs(10),
            connections: Arc::new(tokio::sync::Semaphore::new(cfg.max_connections)),
        })
    }

    fn route(&self, path: &str) -> Option<&Route> {
        self.routes.iter().find(|r| path.starts_with(&r.prefix))
    }

    /// Answers one client request.
    pub async fn handle(&self, mut req: Request<Incoming>, peer: SocketAddr) -> Response<ProxyBody> {
        let request_id = keyward_core::id::new_request_id(now_ms());
        let Some(route) = self.route(req.uri().path()) else {
            return ours(not_routed(&request_id));
        };
        let Some((key, source)) = self.keys.find(req.headers(), req.uri().query()) else {
            metrics::counter!("keyward_proxy_refused_total", "code" => "MISSING").increment(1);
            return ours(refusal(
                None,
                "send an API key in the X-API-Key header or as Authorization: Bearer",
                &request_id,
                None,
            ));
        };
        let ip = client_ip(peer.ip(), req.headers(), &self.trusted);
        let path = req.uri().path().to_owned();
        let input = VerifyInput {
            key: &key,
            ip: Some(ip),
            method: Some(req.method().as_str()),
            path: Some(&path),
            scopes: &route.scopes,
            cost: 1,
            keyspace_id: route.keyspace_id.as_deref(),
        };
        let decision = match self.service.decide_only(&self.workspace_id, &input).await {
            Ok(d) => d,
            Err(e) => {
                tracing::error!(error = %e, "The proxy could not verify a key.");
                return ours(unavailable(&request_id, "keyward could not verify the key; try again"));
            }
        };
        let user_agent = req.headers().get(header::USER_AGENT).and_then(|v| v.to_str().ok());
        let ctx = RequestCtx { request_id: &request_id, user_agent };
        let mut event = self.service.gateway_event(&self.workspace_id, &input, &ctx, &decision);
        let limits = decision.ratelimit_fields(now_ms());
        if !decision.outcome.is_valid() {
            let detail = decision.message.clone().unwrap_or_else(|| refusal_detail(decision.outcome).to_owned());
            let res = refusal(Some(decision.outcome), &detail, &request_id, limits.as_ref());
            metrics::counter!("keyward_proxy_refused_total", "code" => decision.outcome.as_str()).increment(1);
            event.http_status = Some(res.status().as_u16());
            event.bytes_out = Some(res.body().len() as u64);
            self.service.record_event(event);
            return ours(res);
        }
        drop(key);

        // Forward: the key off, the identity on, hop-by-hop fields gone.
        let query = req.uri().query().map(|q| match &source {
            KeySource::Query(p) => query_without(q, p),
            _ => q.to_owned(),
        });
        let uri = match route.upstream.uri(&path, query.as_deref()) {
            Ok(u) => u,
            Err(_) => return ours(bad_target(&request_id)),
        };
        let original_host = req.headers().get(header::HOST).cloned();
        let headers = req.headers_mut();
        strip_hop_by_hop(headers);
        match &source {
            KeySource::Header(h) => {
                headers.remove(h);
            }
            KeySource::Bearer => {
                headers.remove(header::AUTHORIZATION);
            }
            KeySource::Query(_) => {}
        }
        headers.remove(header::HOST);
        for (name, which) in &self.identity {
            headers.remove(name);
            let value = match which {
                Identity::Key => event.key_id.as_deref(),
                Identity::Owner => event.owner_id.as_deref(),
                Identity::Keyspace => event.keyspace_id.as_deref(),
            };
            if let Some(v) = value.and_then(|v| HeaderValue::from_str(v).ok()) {
                headers.insert(name.clone(), v);
            }
        }
        let forwarded_for = match headers.get("x-forwarded-for").and_then(|v| v.to_str().ok()) {
            Some(prev) if self.trusted.iter().any(|n| n.contains(&peer.ip().to_canonical())) => {
                format!("{prev}, {}", peer.ip().to_canonical())
            }
            _ => peer.ip().to_canonical().to_string(),
        };
        if let Ok(v) = HeaderValue::from_str(&forwarded_for) {
            headers.insert("x-forwarded-for", v);
        }
        headers.insert("x-forwarded-proto", HeaderValue::from_static("http"));
        if let Some(h) = original_host {
            headers.insert("x-forwarded-host", h);
        }
        if let Ok(v) = HeaderValue::from_str(&request_id) {
            headers.insert("x-request-id", v);
        }
        let bytes_in = Arc::new(AtomicU64::new(0));
        let client_version = req.version();
        let (mut parts, body) = req.into_parts();
        parts.uri = uri;
        parts.version = http::Version::HTTP_11;
        let upstream_req = Request::from_parts(parts, Counted::new(body, bytes_in.clone()));

        let sent = Instant::now();
        let answered = tokio::time::timeout(self.upstream_timeout, self.client.request(upstream_req)).await;
        let upstream_latency = sent.elapsed();
        let mut res = match answered {
            Ok(Ok(res)) => res,
            failed => {
                let (status, slug, why) = match failed {
                    Err(_) => (StatusCode::GATEWAY_TIMEOUT, "upstream-timeout", "the upstream did not answer in time"),
                    Ok(Err(e)) if e.is_connect() => (
                        StatusCode::BAD_GATEWAY,
                        "upstream-unreachable",
                        "the upstream refused or dropped the connection",
                    ),
                    Ok(_) => (StatusCode::BAD_GATEWAY, "upstream-failed", "the upstream's answer was not valid HTTP"),
                };
                tracing::warn!(upstream = %route.upstream.authority(), status = status.as_u16(), reason = why, request_id = %request_id, "Proxying failed.");
                metrics::counter!("keyward_proxy_upstream_errors_total", "status" => status.as_str().to_owned())
                    .increment(1);
                let res = problem(status, slug, why, &request_id, None);
                event.http_status = Some(status.as_u16());
                event.error = Some(why.to_owned());
                event.bytes_in = Some(bytes_in.load(std::sync::atomic::Ordering::Relaxed));
                event.bytes_out = Some(res.body().len() as u64);
                event.latency_us = Some(upstream_latency.as_micros() as u64);
                self.service.record_event(event);
                return ours(res);
            }
        };
        event.http_status = Some(res.status().as_u16());
        // The client's protocol, not the upstream's (an HTTP/1.0 upstream
        // must not turn the client's keep-alive HTTP/1.1 into 1.0).
        *res.version_mut() = client_version;
        strip_hop_by_hop(res.headers_mut());
        if let Some(l) = &limits {
            set_ratelimit(res.headers_mut(), l, false);
        }
        if let Ok(v) = HeaderValue::from_str(&request_id) {
            res.headers_mut().insert("x-request-id", v);
        }
        let pending = PendingEvent { service: self.service.clone(), event, bytes_in, upstream_latency };
        res.map(|b| Recorded::new(b, pending).boxed())
    }
}

fn ours(res: Response<Bytes>) -> Response<ProxyBody> {
    res.map(|b| Full::new(b).map_err(|never: Infallible| match never {}).boxed())
}

fn refusal_detail(o: Outcome) -> &'static str {
    match o {
        Outcome::Malformed => "the API key is not a valid key",
        Outcome::NotFound => "no such API key",
        Outcome::Disabled => "the API key is disabled",
        Outcome::Expired => "the API key has expired",
        Outcome::Revoked => "the API key was revoked",
        Outcome::Rotated => "the API key was rotated out; use its successor",
        Outcome::IpNotAllowed => "the API key may not be used from this address",
        Outcome::Forbidden => "the API key lacks a scope this request needs",
        Outcome::RateLimited => "rate limit reached; retry after the Retry-After seconds",
        Outcome::UsageExceeded => "the API key's usage quota is spent",
        Outcome::Valid => "",
    }
}

fn not_routed(request_id: &str) -> Response<Bytes> {
    problem(StatusCode::NOT_FOUND, "no-route", "no proxy route matches this path", request_id, None)
}

fn bad_target(request_id: &str) -> Response<Bytes> {
    problem(StatusCode::BAD_REQUEST, "bad-target", "the request target cannot be forwarded", request_id, None)
}

fn unavailable(request_id: &str, detail: &str) -> Response<Bytes> {
    problem(StatusCode::SERVICE_UNAVAILABLE, "unavailable", detail, request_id, None)
}

/// Serves the proxy on `listener` (HTTP/1.1, and HTTP/2 by prior knowledge)
/// until `shutdown` resolves, then lets requests in flight finish (up to `grace`).
pub async fn serve(
    listener: tokio::net::TcpListener,
    gateway: Arc<Gateway>,
    tls: Option<Arc<keyward_server::tls::Tls>>,
    shutdown: impl std::future::Future<Output = ()>,
    grace: Duration,
) {
    let mut builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
    builder.http1().timer(TokioTimer::new()).header_read_timeout(gateway.header_read_timeout);
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let (io, peer) = match accepted {
                    Ok(a) => a,
                    Err(e) => {
                        // Out of file descriptors and the like: wait, then go on.
                        tracing::warn!(error = %e, "Accepting a proxy connection failed.");
                        tokio::time::sleep(Duration::from_millis(10)).await;
                        continue;
                    }
                };
                let Ok(permit) = gateway.connections.clone().try_acquire_owned() else {
                    metrics::counter!("keyward_http_connections_refused_total", "cap" => "proxy").increment(1);
                    drop(io);
                    continue;
                };
                let _ = io.set_nodelay(true);
                let gw = gateway.clone();
                let hsts = tls.as_ref().and_then(|t| t.hsts().cloned());
                let svc = hyper::service::service_fn(move |req| {
                    let gw = gw.clone();
                    let hsts = hsts.clone();
                    async move {
                        let mut res = gw.handle(req, peer).await;
                        if let Some(h) = hsts {
                            res.headers_mut().insert(header::STRICT_TRANSPORT_SECURITY, h);
                        }
                        Ok::<_, Infallible>(res)
                    }
                });
                match &tls {
                    None => {
                        let conn = graceful.watch(builder.serve_connection(TokioIo::new(io), svc).into_owned());
                        tokio::spawn(async move {
                            let _ = conn.await;
                            drop(permit);
                        });
                    }
                    Some(tls) => {
                        let (acceptor, builder, watcher) = (tls.acceptor(), builder.clone(), graceful.watcher());
                        let handshake = gateway.header_read_timeout;
                        tokio::spawn(async move {
                            // The handshake shares the head's deadline.
                            if let Ok(Ok(stream)) = tokio::time::timeout(handshake, acceptor.accept(io)).await {
                                let _ = watcher.watch(builder.serve_connection(TokioIo::new(stream), svc).into_owned()).await;
                            }
                            drop(permit);
                        });
                    }
                }
            }
            _ = &mut shutdown => break,
        }
    }
    drop(listener);
    if tokio::time::timeout(grace, graceful.shutdown()).await.is_err() {
        tracing::warn!("Proxy requests still in flight at the end of the grace period were cut.");
    }
}
