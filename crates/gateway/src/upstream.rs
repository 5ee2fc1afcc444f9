//! An upstream's base URL.

use http::Uri;
use http::uri::{Authority, PathAndQuery, Scheme};

/// An upstream base URL: `http://host:port` and an optional base path.
#[derive(Debug, Clone)]
pub struct Upstream {
    scheme: Scheme,
    authority: Authority,
    base: String,
}

impl Upstream {
    pub fn parse(url: &str) -> Result<Upstream, String> {
        let uri: Uri = url.parse().map_err(|e| format!("'{url}' is not a URL: {e}"))?;
        if uri.scheme() != Some(&Scheme::HTTP) {
            return Err(format!(
                "'{url}': only http:// upstreams are supported for now (reach the upstream over http on a private network)"
            ));
        }
        let authority = uri.authority().cloned().ok_or_else(|| format!("'{url}' has no host"))?;
        if uri.query().is_some() {
            return Err(format!("'{url}': an upstream takes no query string"));
        }
        Ok(Upstream { scheme: Scheme::HTTP, authority, base: uri.path().trim_end_matches('/').to_owned() })
    }

    pub(crate) fn authority(&self) -> &Authority {
        &self.authority
    }

    pub(crate) fn uri(&self, path: &str, query: Option<&str>) -> Result<Uri, http::Error> {
        let pq = match query {
            Some(q) if !q.is_empty() => format!("{}{path}?{q}", self.base),
            _ => format!("{}{path}", self.base),
        };
        Uri::builder()
            .scheme(self.scheme.clone())
            .authority(self.authority.clone())
            .path_and_query(PathAndQuery::try_from(pq)?)
            .build()
    }
}
