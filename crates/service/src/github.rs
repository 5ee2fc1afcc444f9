//! GitHub's secret-scanning partner program: alerts signed by GitHub (ECDSA
//! P-256 over the raw body, with public keys from the configuration), each
//! token handled as a leak report in whatever workspace holds it.

use base64::Engine;
use p256::ecdsa::signature::Verifier;
use p256::ecdsa::{Signature, VerifyingKey};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use utoipa::ToSchema;

use crate::leaks::LeakStatus;
use crate::{Result, Service, ServiceError};

/// One token in a GitHub secret-scanning alert.
#[derive(Deserialize, ToSchema)]
pub struct GithubToken {
    pub token: String,
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(default)]
    pub url: String,
    #[serde(default)]
    pub source: String,
}

impl std::fmt::Debug for GithubToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GithubToken")
            .field("token", &"[redacted]")
            .field("type", &self.kind)
            .field("url", &self.url)
            .finish()
    }
}

/// GitHub's per-token answer label.
#[derive(Debug, Serialize, ToSchema)]
pub struct GithubLabel {
    /// Hex SHA-256 of the token.
    pub token_hash: String,
    pub token_type: String,
    /// `true_positive` or `false_positive`.
    pub label: &'static str,
}

/// The public keys GitHub signs its alerts with, by key identifier.
#[derive(Debug, Clone, Default)]
pub struct GithubKeys(Vec<(String, VerifyingKey)>);

impl GithubKeys {
    /// Parses `(key identifier, SPKI PEM)` pairs as GitHub publishes them.
    pub fn parse(keys: &[(String, String)]) -> std::result::Result<GithubKeys, String> {
        use p256::pkcs8::DecodePublicKey;
        keys.iter()
            .map(|(id, pem)| {
                VerifyingKey::from_public_key_pem(pem.trim())
                    .map(|k| (id.clone(), k))
                    .map_err(|e| format!("key {id}: {e}"))
            })
            .collect::<std::result::Result<_, _>>()
            .map(GithubKeys)
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Checks GitHub's signature of `body`.
    fn verify(&self, key_id: Option<&str>, signature: Option<&str>, body: &[u8]) -> Result<()> {
        let bad = ServiceError::BadSignature;
        let key_id = key_id.ok_or(bad("missing Github-Public-Key-Identifier"))?;
        let signature = signature.ok_or(bad("missing Github-Public-Key-Signature"))?;
        let key =
            self.0.iter().find(|(id, _)| id == key_id).map(|(_, k)| k).ok_or(bad("unknown public key identifier"))?;
        let der = base64::engine::general_purpose::STANDARD
            .decode(signature)
            .map_err(|_| bad("the signature is not base64"))?;
        let sig = Signature::from_der(&der).map_err(|_| bad("the signature is not a DER ECDSA signature"))?;
        key.verify(body, &sig).map_err(|_| bad("the signature does not match the body"))
    }
}

impl Service {
    /// A GitHub secret-scanning alert: signature first, then each token as a
    /// leak (live keys revoked, one incident per workspace), labelled for GitHub.
    pub async fn github_secret_scanning(
        &self,
        keys: &GithubKeys,
        key_id: Option<&str>,
        signature: Option<&str>,
        body: &[u8],
    ) -> Result<Vec<GithubLabel>> {
        if keys.is_empty() {
            return Err(ServiceError::NotConfigured(
                "GitHub secret scanning is not configured on this server (github.public_keys)",
            ));
        }
        keys.verify(key_id, signature, body)?;
        let tokens: Vec<GithubToken> = serde_json::from_slice(body)
            .map_err(|_| crate::validate::invalid("the body is not a list of tokens [{token, type, url}]"))?;
        if tokens.len() > 1000 {
            return Err(crate::validate::invalid("at most 1000 tokens per request"));
        }
        let strings: Vec<String> = tokens.iter().map(|t| t.token.clone()).collect();
        let source = tokens.iter().map(|t| t.url.as_str()).find(|u| !u.is_empty()).unwrap_or("GitHub secret scanning");
        let answer = self.handle_leaks(None, &strings, &format!("GitHub secret scanning: {source}")).await?;
        Ok(tokens
            .iter()
            .zip(answer.results)
            .map(|(t, r)| GithubLabel {
                token_hash: hex::encode(Sha256::digest(t.token.as_bytes())),
                token_type: t.kind.clone(),
                label: match r.status {
                    LeakStatus::Revoked | LeakStatus::AlreadyRevoked => "true_positive",
                    LeakStatus::Unknown | LeakStatus::Malformed => "false_positive",
                },
            })
            .collect())
    }
}
