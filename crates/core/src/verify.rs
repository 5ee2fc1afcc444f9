//! The verification decision over a key's state at an instant. Pure: the
//! caller has already parsed the key and found its record.

use crate::outcome::Outcome;
use crate::time::UnixMs;

/// What the decision needs to know about a key's lifecycle.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Lifecycle {
    pub enabled: bool,
    pub expires_at: Option<UnixMs>,
    pub revoked_at: Option<UnixMs>,
    /// Set on a key that was rotated: it keeps working until this instant.
    pub overlap_until: Option<UnixMs>,
}

/// The lifecycle checks, in their documented order: a revoked key reports
/// `REVOKED` even when it is also disabled or expired, since revocation is
/// final and the most useful thing to tell the caller; then `ROTATED` from
/// exactly the end of the rotation overlap (also final); then `DISABLED`,
/// then `EXPIRED` from exactly the `expires_at` instant on. A key inside its
/// overlap passes (see [`is_deprecated`]).
pub fn check_lifecycle(k: &Lifecycle, now: UnixMs) -> Outcome {
    if k.revoked_at.is_some_and(|t| t <= now) {
        Outcome::Revoked
    } else if k.overlap_until.is_some_and(|t| t <= now) {
        Outcome::Rotated
    } else if !k.enabled {
        Outcome::Disabled
    } else if k.expires_at.is_some_and(|t| t <= now) {
        Outcome::Expired
    } else {
        Outcome::Valid
    }
}

/// Whether a key that passes is an old key inside its rotation overlap.
pub fn is_deprecated(k: &Lifecycle) -> bool {
    k.overlap_until.is_some()
}

/// The status shown for a key in listings, derived from the same checks.
pub fn status(k: &Lifecycle, now: UnixMs) -> &'static str {
    match check_lifecycle(k, now) {
        Outcome::Revoked => "revoked",
        Outcome::Rotated => "rotated",
        Outcome::Valid if is_deprecated(k) => "rotating",
        Outcome::Disabled => "disabled",
        Outcome::Expired => "expired",
        _ => "active",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(k: Lifecycle, now: UnixMs, expect: Outcome) {
        assert_eq!(check_lifecycle(&k, now), expect, "{k:?} at {now}");
    }

    #[test]
    fn lifecycle_order_and_boundaries() {
        let on = Lifecycle { enabled: true, ..Default::default() };
        check(on.clone(), 0, Outcome::Valid);
        check(Lifecycle { enabled: false, ..on.clone() }, 0, Outcome::Disabled);
        check(Lifecycle { expires_at: Some(100), ..on.clone() }, 99, Outcome::Valid);
        check(Lifecycle { expires_at: Some(100), ..on.clone() }, 100, Outcome::Expired);
        check(
            Lifecycle { revoked_at: Some(5), enabled: false, expires_at: Some(1), overlap_until: None },
            10,
            Outcome::Revoked,
        );
        check(
            Lifecycle { enabled: false, expires_at: Some(1), revoked_at: None, overlap_until: None },
            10,
            Outcome::Disabled,
        );
        let rotating = Lifecycle { overlap_until: Some(100), ..on.clone() };
        check(rotating.clone(), 99, Outcome::Valid);
        check(rotating.clone(), 100, Outcome::Rotated);
        check(Lifecycle { enabled: false, ..rotating.clone() }, 100, Outcome::Rotated);
        check(Lifecycle { revoked_at: Some(1), ..rotating }, 50, Outcome::Revoked);
    }
}
