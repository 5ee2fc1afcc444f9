//! What the proxy and the tower layer share: finding the key in a request,
//! the client's address, refusals as problem+json with the rate-limit
//! headers, and the hop-by-hop rules of RFC 9110.

use std::net::IpAddr;

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header};
use ipnet::IpNet;
use keyward_core::Outcome;
use keyward_core::policy::RateLimitFields;

/// Where the key was found, so that exactly that is removed before forwarding.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeySource {
    Header(HeaderName),
    Bearer,
    Query(String),
}

/// How a request carries its key.
#[derive(Debug, Clone)]
pub struct KeyLocations {
    pub headers: Vec<HeaderName>,
    pub bearer: bool,
    pub query_param: Option<String>,
}

impl Default for KeyLocations {
    fn default() -> Self {
        KeyLocations { headers: vec![HeaderName::from_static("x-api-key")], bearer: true, query_param: None }
    }
}

impl KeyLocations {
    /// The key and where it was: the configured headers in order, then a
    /// bearer token, then the query parameter (when enabled).
    pub fn find(&self, headers: &HeaderMap, query: Option<&str>) -> Option<(String, KeySource)> {
        for name in &self.headers {
            if let Some(v) = headers.get(name).and_then(|v| v.to_str().ok()).map(str::trim).filter(|v| !v.is_empty()) {
                return Some((v.to_owned(), KeySource::Header(name.clone())));
            }
        }
        if self.bearer
            && let Some((scheme, token)) =
                headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()).and_then(|v| v.split_once(' '))
            && scheme.eq_ignore_ascii_case("bearer")
            && !token.trim().is_empty()
        {
            return Some((token.trim().to_owned(), KeySource::Bearer));
        }
        let param = self.query_param.as_deref()?;
        let value = query?.split('&').find_map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            (k == param && !v.is_empty()).then(|| v.to_owned())
        })?;
        Some((value, KeySource::Query(param.to_owned())))
    }
}

/// The query string without the key's parameter.
pub fn query_without(query: &str, param: &str) -> String {
    query
        .split('&')
        .filter(|pair| pair.split_once('=').map_or(*pair, |(k, _)| k) != param)
        .collect::<Vec<_>>()
        .join("&")
}

/// The client's address: the connection's, unless that is a trusted proxy,
/// in which case the nearest address in `X-Forwarded-For` (or `Forwarded`)
/// that is not itself a trusted proxy.
pub fn client_ip(peer: IpAddr, headers: &HeaderMap, trusted: &[IpNet]) -> IpAddr {
    let peer = peer.to_canonical();
    let is_trusted = |ip: &IpAddr| trusted.iter().any(|n| n.contains(ip));
    if !is_trusted(&peer) {
        return peer;
    }
    let mut chain: Vec<IpAddr> = Vec::new();
    for v in headers.get_all("x-forwarded-for").iter().filter_map(|v| v.to_str().ok()) {
        chain.extend(v.split(',').filter_map(|s| s.trim().parse::<IpAddr>().ok()));
    }
    if chain.is_empty() {
        for v in headers.get_all(header::FORWARDED).iter().filter_map(|v| v.to_str().ok()) {
            for element in v.split(',') {
                for pair in element.split(';') {
                    if let Some((k, val)) = pair.trim().split_once('=')
                        && k.eq_ignore_ascii_case("for")
                        && let Some(ip) = parse_forwarded_for(val)
                    {
                        chain.push(ip);
                    }
                }
            }
        }
    }
    chain.iter().rev().map(|ip| ip.to_canonical()).find(|ip| !is_trusted(ip)).unwrap_or(peer)
}

/// `for=192.0.2.60`, `for="[2001:db8::1]:4711"` (RFC 7239).
fn parse_forwarded_for(v: &str) -> Option<IpAddr> {
    let v = v.trim().trim_matches('"');
    if let Some(rest) = v.strip_prefix('[') {
        return rest.split(']').next()?.parse().ok();
    }
    v.parse().ok().or_else(|| v.rsplit_once(':').and_then(|(ip, _)| ip.parse().ok()))
}

/// The HTTP status of a refusal: 401 when the key does not authenticate,
/// 403 when it may not do this, 429 when it may not do it now.
pub fn refusal_status(o: Outcome) -> StatusCode {
    match o {
        Outcome::Valid => StatusCode::OK,
        Outcome::Malformed
        | Outcome::NotFound
        | Outcome::Disabled
        | Outcome::Expired
        | Outcome::Revoked
        | Outcome::Rotated => StatusCode::UNAUTHORIZED,
        Outcome::IpNotAllowed | Outcome::Forbidden => StatusCode::FORBIDDEN,
        Outcome::RateLimited | Outcome::UsageExceeded => StatusCode::TOO_MANY_REQUESTS,
    }
}

/// Seconds a client told "usage quota exhausted" should wait before retrying
/// when the quota has no known refill: an hour, rather than a busy loop.
const QUOTA_RETRY_SECS: u64 = 3600;

/// A refusal as problem+json, with `WWW-Authenticate` on 401s and the
/// rate-limit headers (and `Retry-After`) where the key has a window.
pub fn refusal(
    outcome: Option<Outcome>,
    detail: &str,
    request_id: &str,
    limits: Option<&RateLimitFields>,
) -> http::Response<Bytes> {
    let (status, slug) = match outcome {
        None => (StatusCode::UNAUTHORIZED, "missing-key".to_owned()),
        Some(o) => (refusal_status(o), o.as_str().to_ascii_lowercase().replace('_', "-")),
    };
    let mut res = problem(status, &slug, detail, request_id, outcome.map(Outcome::as_str));
    let h = res.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/problem+json"));
    if status == StatusCode::UNAUTHORIZED {
        h.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer realm=\"keyward\""));
    }
    if let Some(l) = limits {
        set_ratelimit(h, l, true);
    }
    if outcome == Some(Outcome::UsageExceeded) && !h.contains_key(header::RETRY_AFTER) {
        h.insert(header::RETRY_AFTER, HeaderValue::from(QUOTA_RETRY_SECS));
    }
    res
}

/// A problem+json answer of the gateway's own (with the outcome `code` of a
/// refusal, if any), with `X-Request-Id`. The detail is redacted of anything
/// key-shaped, as the API's problems are.
pub fn problem(
    status: StatusCode,
    slug: &str,
    detail: &str,
    request_id: &str,
    code: Option<&str>,
) -> http::Response<Bytes> {
    let mut body = serde_json::json!({
        "type": format!("urn:keyward:problem:{slug}"),
        "title": status.canonical_reason().unwrap_or("Error"),
        "status": status.as_u16(),
        "detail": keyward_core::redact::redact(detail, &[]),
        "request_id": request_id,
    });
    if let Some(c) = code {
        body["code"] = c.into();
    }
    let mut res = http::Response::new(Bytes::from(body.to_string()));
    *res.status_mut() = status;
    res.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/problem+json"));
    if let Ok(v) = HeaderValue::from_str(request_id) {
        res.headers_mut().insert(HeaderName::from_static("x-request-id"), v);
    }
    res
}

/// Sets `RateLimit-Policy`, `RateLimit` and (when `retry`) `Retry-After`.
pub fn set_ratelimit(h: &mut HeaderMap, l: &RateLimitFields, retry: bool) {
    for (name, value) in l.headers(retry) {
        if let Ok(v) = HeaderValue::from_str(&value) {
            h.insert(HeaderName::from_static(name), v);
        }
    }
}

/// Removes the hop-by-hop fields (RFC 9110, section 7.6.1): `Connection`,
/// every field it names, and the well-known ones.
pub fn strip_hop_by_hop(h: &mut HeaderMap) {
    let named: Vec<HeaderName> = h
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|t| HeaderName::from_bytes(t.trim().as_bytes()).ok())
        .collect();
    for n in named {
        h.remove(n);
    }
    for n in ["connection", "keep-alive", "proxy-connection", "te", "trailer", "transfer-encoding", "upgrade"] {
        h.remove(n);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(HeaderName::from_bytes(k.as_bytes()).unwrap(), HeaderValue::from_str(v).unwrap());
        }
        h
    }

    #[test]
    fn keys_are_found_in_order_and_the_query_only_when_enabled() {
        let loc = KeyLocations::default();
        let h = map(&[("x-api-key", "a"), ("authorization", "Bearer b")]);
        assert_eq!(loc.find(&h, None).unwrap().0, "a");
        let h = map(&[("authorization", "bearer  b ")]);
        assert_eq!(loc.find(&h, None), Some(("b".into(), KeySource::Bearer)));
        assert_eq!(loc.find(&HeaderMap::new(), Some("api_key=c")), None);
        let loc = KeyLocations { query_param: Some("api_key".into()), ..KeyLocations::default() };
        assert_eq!(
            loc.find(&HeaderMap::new(), Some("x=1&api_key=c")),
            Some(("c".into(), KeySource::Query("api_key".into())))
        );
        assert_eq!(query_without("x=1&api_key=c&y", "api_key"), "x=1&y");
    }

    #[test]
    fn forwarded_addresses_count_only_from_trusted_peers() {
        let trusted: Vec<IpNet> = vec!["10.0.0.0/8".parse().unwrap()];
        let h = map(&[("x-forwarded-for", "198.51.100.7, 203.0.113.9, 10.0.0.2")]);
        assert_eq!(client_ip("10.0.0.1".parse().unwrap(), &h, &trusted), "203.0.113.9".parse::<IpAddr>().unwrap());
        assert_eq!(client_ip("192.0.2.1".parse().unwrap(), &h, &trusted), "192.0.2.1".parse::<IpAddr>().unwrap());
        let h = map(&[("forwarded", "for=\"[2001:db8::1]:4711\";proto=http")]);
        assert_eq!(client_ip("10.0.0.1".parse().unwrap(), &h, &trusted), "2001:db8::1".parse::<IpAddr>().unwrap());
        assert_eq!(
            client_ip("10.0.0.1".parse().unwrap(), &HeaderMap::new(), &trusted),
            "10.0.0.1".parse::<IpAddr>().unwrap()
        );
    }

    #[test]
    fn hop_by_hop_fields_go_with_those_connection_names() {
        let mut h =
            map(&[("connection", "close, x-secret-hop"), ("x-secret-hop", "1"), ("te", "trailers"), ("x-kept", "1")]);
        strip_hop_by_hop(&mut h);
        assert_eq!(h.keys().map(|k| k.as_str()).collect::<Vec<_>>(), ["x-kept"]);
    }

    #[test]
    fn every_outcome_has_its_status() {
        for o in Outcome::ALL {
            let s = refusal_status(o);
            assert!(o.is_valid() == (s == StatusCode::OK), "{o:?}");
        }
        let r = refusal(Some(Outcome::Revoked), "revoked", "req_1", None);
        assert_eq!(r.status(), 401);
        assert!(r.headers().contains_key("www-authenticate"));
    }
}
