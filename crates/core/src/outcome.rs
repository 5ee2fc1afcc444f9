//! Verification outcome codes, as the API and the event log spell them.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// The decision on one presented key. Only `Valid` admits the request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Outcome {
    /// The key may do what was asked.
    Valid,
    /// Bad format or checksum: rejected without a store lookup.
    Malformed,
    /// Well-formed, but no such key in this workspace.
    NotFound,
    /// The key exists but is switched off.
    Disabled,
    /// Past its `expires_at`.
    Expired,
    /// Revoked by an operator.
    Revoked,
    /// An old key whose rotation overlap has ended.
    Rotated,
    /// The source address is outside the key's allowlist.
    IpNotAllowed,
    /// The key lacks a scope the request needs.
    Forbidden,
    /// A rate-limit window is full.
    RateLimited,
    /// The usage quota is spent.
    UsageExceeded,
}

impl Outcome {
    /// Every outcome, in the order of the API reference.
    pub const ALL: [Outcome; 11] = [
        Outcome::Valid,
        Outcome::Malformed,
        Outcome::NotFound,
        Outcome::Disabled,
        Outcome::Expired,
        Outcome::Revoked,
        Outcome::Rotated,
        Outcome::IpNotAllowed,
        Outcome::Forbidden,
        Outcome::RateLimited,
        Outcome::UsageExceeded,
    ];

    /// The outcome a code spells (`"NOT_FOUND"`), if any.
    pub fn parse(code: &str) -> Option<Outcome> {
        Outcome::ALL.into_iter().find(|o| o.as_str() == code)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Valid => "VALID",
            Outcome::Malformed => "MALFORMED",
            Outcome::NotFound => "NOT_FOUND",
            Outcome::Disabled => "DISABLED",
            Outcome::Expired => "EXPIRED",
            Outcome::Revoked => "REVOKED",
            Outcome::Rotated => "ROTATED",
            Outcome::IpNotAllowed => "IP_NOT_ALLOWED",
            Outcome::Forbidden => "FORBIDDEN",
            Outcome::RateLimited => "RATE_LIMITED",
            Outcome::UsageExceeded => "USAGE_EXCEEDED",
        }
    }

    pub fn is_valid(self) -> bool {
        self == Outcome::Valid
    }
}

impl std::fmt::Display for Outcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_parse_back_and_match_serde() {
        for o in Outcome::ALL {
            assert_eq!(Outcome::parse(o.as_str()), Some(o));
            assert_eq!(serde_json::to_value(o).unwrap(), o.as_str());
        }
        assert_eq!(Outcome::parse("valid"), None);
    }
}
