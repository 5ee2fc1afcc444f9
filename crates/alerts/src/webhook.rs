//! Webhook signatures per the Standard Webhooks specification
//! (standardwebhooks.com), so receivers can verify with an existing library:
//! the signed content is `{webhook-id}.{webhook-timestamp}.{body}`, the
//! signature `v1,` + base64 of its HMAC-SHA256 under the secret's bytes
//! (the base64 after `whsec_`). Retries keep the id and sign afresh with a
//! new timestamp.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, Mac};
use sha2::Sha256;

/// The prefix of a webhook signing secret.
pub const SECRET_PREFIX: &str = "whsec_";

/// How far a timestamp may be from the receiver's clock, seconds (the spec's 5 minutes).
pub const TOLERANCE_S: i64 = 300;

/// A new signing secret: `whsec_` + base64 of 32 random bytes from the OS.
pub fn new_secret() -> Result<String, getrandom::Error> {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes)?;
    Ok(format!("{SECRET_PREFIX}{}", STANDARD.encode(bytes)))
}

/// The HMAC of a secret's key bytes (`None` for a secret that is no base64).
fn mac(secret: &str) -> Option<Hmac<Sha256>> {
    Hmac::<Sha256>::new_from_slice(&key(secret)?).ok()
}

/// The key bytes of a secret (the prefix is optional, as in the reference libraries).
fn key(secret: &str) -> Option<Vec<u8>> {
    STANDARD.decode(secret.strip_prefix(SECRET_PREFIX).unwrap_or(secret)).ok().filter(|k| !k.is_empty())
}

/// Whether a secret has the right shape.
pub fn is_secret(secret: &str) -> bool {
    secret.starts_with(SECRET_PREFIX) && key(secret).is_some_and(|k| k.len() >= 24)
}

/// The `webhook-signature` header value for one delivery attempt (`None`
/// when the secret is not one `new_secret` makes).
pub fn sign(secret: &str, id: &str, timestamp_s: i64, body: &[u8]) -> Option<String> {
    let mut mac = mac(secret)?;
    mac.update(id.as_bytes());
    mac.update(b".");
    mac.update(timestamp_s.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    Some(format!("v1,{}", STANDARD.encode(mac.finalize().into_bytes())))
}

/// Why a delivery does not verify.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    #[error("the webhook-timestamp is not a number")]
    BadTimestamp,
    #[error("the webhook-timestamp is more than 5 minutes from now (a replay?)")]
    Stale,
    #[error("no v1 signature matches")]
    NoMatch,
}

/// Verifies a delivery as a receiver would: the timestamp within
/// [`TOLERANCE_S`] of `now_s`, and one of the space-separated `v1,`
/// signatures matching, compared in constant time.
pub fn verify(
    secret: &str,
    id: &str,
    timestamp: &str,
    signatures: &str,
    body: &[u8],
    now_s: i64,
) -> Result<(), VerifyError> {
    let ts: i64 = timestamp.trim().parse().map_err(|_| VerifyError::BadTimestamp)?;
    if (now_s - ts).abs() > TOLERANCE_S {
        return Err(VerifyError::Stale);
    }
    for sig in signatures.split(' ') {
        let Some(b64) = sig.strip_prefix("v1,") else { continue };
        let Ok(given) = STANDARD.decode(b64) else { continue };
        let mut mac = mac(secret).ok_or(VerifyError::NoMatch)?;
        mac.update(format!("{id}.{ts}.").as_bytes());
        mac.update(body);
        if mac.verify_slice(&given).is_ok() {
            return Ok(());
        }
    }
    Err(VerifyError::NoMatch)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The specification's own test vector: what every receiver library checks against.
    #[test]
    fn the_specification_test_vector() {
        let secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
        let (id, ts, body) = ("msg_p5jXN8AQM9LWM0D4loKWxJek", 1_614_265_330, br#"{"test": 2432232314}"#);
        let sig = sign(secret, id, ts, body).unwrap();
        assert_eq!(sig, "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=");
        assert_eq!(verify(secret, id, "1614265330", &format!("v1,bm9wZQ== {sig}"), body, ts + 10), Ok(()));
        assert_eq!(verify(secret, id, "1614265330", &sig, b"{}", ts), Err(VerifyError::NoMatch));
        assert_eq!(verify(secret, "msg_other", "1614265330", &sig, body, ts), Err(VerifyError::NoMatch));
        assert_eq!(verify(secret, id, "1614265330", &sig, body, ts + 301), Err(VerifyError::Stale));
        assert_eq!(verify(secret, id, "soon", &sig, body, ts), Err(VerifyError::BadTimestamp));
    }

    #[test]
    fn new_secrets_are_well_formed_and_distinct() {
        let (a, b) = (new_secret().unwrap(), new_secret().unwrap());
        assert!(is_secret(&a) && is_secret(&b) && a != b);
        assert!(!is_secret("whsec_") && !is_secret("nope"));
    }
}
