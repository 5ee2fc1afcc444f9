//! Server-wide secrets: the master key's status and its online rotation. The
//! keyring itself (the store's `cipher::Keyring`) does the wrapping; this
//! module checks the caller, finds the new key and audits the change.

use std::sync::Arc;

use keyward_core::Permission;
use keyward_core::seal::SecretKey;
use keyward_store::KeyringError;
use keyward_store::cipher::Keyring;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::error::ServiceError;
use crate::{Actor, Result, Service};

/// Reads the master key again from where the operator configured it (a file
/// or a command), for a rotation whose request names no new key.
pub type KeySource = Arc<dyn Fn() -> std::result::Result<SecretKey, String> + Send + Sync>;

pub(crate) struct Secrets {
    pub(crate) ring: Arc<Keyring>,
    source: Option<KeySource>,
}

/// `POST /v1/master-key/rotate`.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RotateMasterKey {
    /// The new master key, 64 hex characters. Omitted: the server reads its
    /// configured key file or command again and takes the key found there.
    #[serde(default)]
    pub new_master_key: Option<String>,
}

/// The master key in use.
#[derive(Debug, Serialize, ToSchema)]
pub struct MasterKeyView {
    /// Whether the data dir is encrypted at rest.
    pub encrypted: bool,
    /// The id of the master key (never the key), when encrypted.
    pub master_key_id: Option<String>,
}

/// A completed rotation.
#[derive(Debug, Serialize, ToSchema)]
pub struct MasterKeyRotated {
    pub previous_master_key_id: String,
    pub master_key_id: String,
    /// Data keys re-wrapped (the data they encrypt is unchanged).
    pub data_keys: usize,
    pub rotated_at: String,
}

impl Service {
    /// Attaches the data dir's keyring, and where the master key can be read again.
    pub fn attach_keyring(&self, ring: Arc<Keyring>, source: Option<KeySource>) {
        let _ = self.secrets.set(Secrets { ring, source });
    }

    pub fn keyring(&self) -> Option<&Arc<Keyring>> {
        self.secrets.get().map(|s| &s.ring)
    }

    pub fn master_key(&self, actor: &Actor) -> Result<MasterKeyView> {
        actor.require(Permission::SecretsManage, "read the master key's status")?;
        Ok(MasterKeyView {
            encrypted: self.secrets.get().is_some(),
            master_key_id: self.secrets.get().map(|s| s.ring.kek_id()),
        })
    }

    /// Re-wraps every data key under a new master key, online: verification
    /// and ingest go on, nothing they use changes. Audited with both key ids.
    pub async fn rotate_master_key(&self, actor: &Actor, req: RotateMasterKey) -> Result<MasterKeyRotated> {
        actor.require(Permission::SecretsManage, "rotate the master key")?;
        let secrets = self.secrets.get().ok_or(ServiceError::NotConfigured(
            "the data dir is not encrypted: start keyward with KEYWARD_MASTER_KEY (or _FILE / _COMMAND) first",
        ))?;
        let new = match req.new_master_key {
            Some(hex) => SecretKey::from_hex(&hex).map_err(|_| {
                ServiceError::Invalid(
                    "new_master_key: must be 64 hex characters; make one with `keyward master-key generate`".into(),
                )
            })?,
            None => {
                let source = secrets.source.as_ref().ok_or_else(|| {
                    ServiceError::Invalid(
                        "new_master_key is required: this server's master key comes from KEYWARD_MASTER_KEY, which \
                         cannot change while it runs (a key file or command can)"
                            .into(),
                    )
                })?;
                let source = source.clone();
                tokio::task::spawn_blocking(move || source())
                    .await
                    .map_err(|_| ServiceError::Task)?
                    .map_err(|e| ServiceError::Invalid(format!("reading the new master key: {e}")))?
            }
        };
        let ring = secrets.ring.clone();
        let rotated = tokio::task::spawn_blocking(move || ring.rotate(new)).await.map_err(|_| ServiceError::Task)?;
        let rotated = match rotated {
            Ok(r) => r,
            Err(KeyringError::SameKey(id)) => {
                return Err(ServiceError::Conflict(format!(
                    "the new master key is the one in use (id {id}); generate another with `keyward master-key generate`"
                )));
            }
            Err(e) => {
                tracing::error!(error = %e, "Master-key rotation failed; the keyring is unchanged.");
                return Err(ServiceError::Unavailable(
                    "the keyring could not be written, so the master key is unchanged; see the server log".into(),
                ));
            }
        };
        let audit = self.audit_entry(
            actor,
            "master_key.rotate",
            "master_key",
            &rotated.to,
            Some(serde_json::json!({"master_key_id": rotated.from})),
            Some(serde_json::json!({"master_key_id": rotated.to, "data_keys": rotated.deks})),
        );
        let at = audit.at;
        self.blocking(move |s| s.append_audit(&audit)).await?;
        tracing::warn!(
            from = %rotated.from,
            to = %rotated.to,
            data_keys = rotated.deks,
            "Master key rotated: configure the new key before the next start (the old one no longer opens the data dir)."
        );
        Ok(MasterKeyRotated {
            previous_master_key_id: rotated.from,
            master_key_id: rotated.to,
            data_keys: rotated.deks,
            rotated_at: keyward_core::time::to_rfc3339(at),
        })
    }
}
