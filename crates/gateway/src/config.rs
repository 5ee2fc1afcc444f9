//! The `[proxy]` section of the config file (and its flags and env).

use std::net::SocketAddr;

use ipnet::IpNet;
use serde::Deserialize;

/// The gateway: where it listens, where it forwards, how it finds the key.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ProxyConfig {
    /// Address of the proxy listener (`--proxy-listen`, env `KEYWARD_PROXY_LISTEN`).
    /// No proxy runs without one.
    pub listen: Option<SocketAddr>,
    /// Upstream of every path not matched by a route (`--upstream`, env
    /// `KEYWARD_UPSTREAM`), e.g. `http://127.0.0.1:3000`.
    pub upstream: Option<String>,
    /// Routes by path prefix; the longest matching prefix wins.
    pub routes: Vec<RouteConfig>,
    /// Headers that carry the key, tried in order. Default `["x-api-key"]`.
    pub key_headers: Vec<String>,
    /// Also take the key from `Authorization: Bearer <key>`. Default true.
    pub bearer: bool,
    /// Also take the key from this query parameter (off unless set: URLs end
    /// up in logs and browser histories). It is removed before forwarding.
    pub query_param: Option<String>,
    /// Workspace whose keys the proxy accepts. Default: the only workspace
    /// (required when there are several).
    pub workspace_id: Option<String>,
    /// Peers whose `X-Forwarded-For` / `Forwarded` are believed (load
    /// balancers in front). From anyone else the connection's address is the
    /// client's. Default none.
    pub trusted_proxies: Vec<IpNet>,
    /// Headers the upstream gets with the key's identity (removed from the
    /// client's request first, so a client cannot forge them).
    pub identity_headers: IdentityHeaders,
    /// Connecting to the upstream gives up after this long (502), ms. Default 5000.
    pub connect_timeout_ms: u64,
    /// The upstream must send its response head within this (504), ms. Default 30000.
    pub upstream_timeout_ms: u64,
    /// Idle pooled upstream connections kept per host. Default 256.
    pub pool_max_idle: usize,
    /// Most open client connections; more are closed at accept (and counted in
    /// `keyward_http_connections_refused_total{cap="proxy"}`). Default 10000.
    pub max_connections: usize,
}

impl Default for ProxyConfig {
    fn default() -> Self {
        ProxyConfig {
            listen: None,
            upstream: None,
            routes: Vec::new(),
            key_headers: vec!["x-api-key".into()],
            bearer: true,
            query_param: None,
            workspace_id: None,
            trusted_proxies: Vec::new(),
            identity_headers: IdentityHeaders::default(),
            connect_timeout_ms: 5_000,
            upstream_timeout_ms: 30_000,
            pool_max_idle: 256,
            max_connections: 10_000,
        }
    }
}

/// One route: requests whose path starts with `prefix` go to `upstream`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteConfig {
    /// Path prefix, e.g. `/billing/`.
    pub prefix: String,
    /// Base URL, e.g. `http://127.0.0.1:3001`; the request's path is kept whole.
    pub upstream: String,
    /// Only keys of this keyspace pass (others are 401, as unknown).
    pub keyspace_id: Option<String>,
    /// Scopes every request of this route needs (on top of the keyspace's
    /// method and path rules).
    #[serde(default)]
    pub scopes: Vec<String>,
}

/// Names of the identity headers; an empty name turns that header off.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct IdentityHeaders {
    /// Default `x-keyward-key-id`.
    pub key_id: String,
    /// Default `x-keyward-owner-id`.
    pub owner_id: String,
    /// Default `x-keyward-keyspace-id`.
    pub keyspace_id: String,
}

impl Default for IdentityHeaders {
    fn default() -> Self {
        IdentityHeaders {
            key_id: "x-keyward-key-id".into(),
            owner_id: "x-keyward-owner-id".into(),
            keyspace_id: "x-keyward-keyspace-id".into(),
        }
    }
}

impl IdentityHeaders {
    pub(crate) fn names(&self) -> [&str; 3] {
        [&self.key_id, &self.owner_id, &self.keyspace_id]
    }
}

impl ProxyConfig {
    /// Every problem with these values, each with its key path.
    pub fn problems(&self) -> Vec<String> {
        let mut p = Vec::new();
        if self.listen.is_some() && self.upstream.is_none() && self.routes.is_empty() {
            p.push("proxy: a proxy listener needs an upstream (--upstream, KEYWARD_UPSTREAM) or proxy.routes".into());
        }
        if let Some(u) = &self.upstream
            && let Err(e) = crate::upstream::Upstream::parse(u)
        {
            p.push(format!("proxy.upstream: {e}"));
        }
        for (i, r) in self.routes.iter().enumerate() {
            if !r.prefix.starts_with('/') {
                p.push(format!("proxy.routes[{i}].prefix: must start with '/'"));
            }
            if let Err(e) = crate::upstream::Upstream::parse(&r.upstream) {
                p.push(format!("proxy.routes[{i}].upstream: {e}"));
            }
        }
        let names = self.key_headers.iter().map(String::as_str).chain(self.identity_headers.names());
        for name in names.filter(|n| !n.is_empty()) {
            if http::HeaderName::from_bytes(name.as_bytes()).is_err() {
                p.push(format!("proxy: '{name}' is not a valid header name"));
            }
        }
        if self.key_headers.is_empty() && !self.bearer && self.query_param.is_none() {
            p.push("proxy: no way to send a key (key_headers empty, bearer off, no query_param)".into());
        }
        if self.max_connections == 0 {
            p.push("proxy.max_connections: must be at least 1".into());
        }
        if self.connect_timeout_ms == 0 || self.upstream_timeout_ms == 0 {
            p.push("proxy: connect_timeout_ms and upstream_timeout_ms must be at least 1".into());
        }
        p
    }
}
