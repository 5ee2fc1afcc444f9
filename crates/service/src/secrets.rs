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
    /// Reveals per root key in the current minute: (minute, count).
    reveals: parking_lot::Mutex<std::collections::HashMap<String, (i64, u32)>>,
}

/// Reveals one root key may make per minute.
pub const REVEALS_PER_MINUTE: u32 = 10;

/// The AEAD label of a sealed API key: bound to its id, so a sealed copy
/// cannot be moved to another key's row.
fn sealed_aad(key_id: &str) -> Vec<u8> {
    format!("keyward api key {key_id}").into_bytes()
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
        let _ = self.secrets.set(Secrets { ring, source, reveals: Default::default() });
    }

    pub fn keyring(&self) -> Option<&Arc<Keyring>> {
        self.secrets.get().map(|s| &s.ring)
    }

    /// Refuses what needs encryption at rest on a server without it.
    pub(crate) fn require_keyring(&self) -> Result<&Arc<Keyring>> {
        self.keyring().ok_or_else(|| {
            ServiceError::Conflict(
                "recoverable keys need encryption at rest: start keyward with a master key \
                 (KEYWARD_MASTER_KEY_FILE; make one with `keyward master-key generate`)"
                    .into(),
            )
        })
    }

    /// The sealed copy of a new key when its keyspace keeps recoverable keys.
    pub(crate) fn seal_if_recoverable(
        &self,
        ks: &keyward_store::Keyspace,
        key_id: &str,
        raw: &keyward_core::RawKey,
    ) -> Result<Option<Vec<u8>>> {
        if !ks.recoverable {
            return Ok(None);
        }
        let dek = self.require_keyring()?.dek(keyward_store::cipher::Purpose::Secrets);
        Ok(Some(dek.seal(&sealed_aad(key_id), raw.expose().as_bytes())))
    }

    /// Shows a recoverable key again: admin only, at most
    /// [`REVEALS_PER_MINUTE`] per root key, audited (without the key).
    pub async fn reveal_key(&self, actor: &Actor, id: &str) -> Result<crate::api::RevealedKey> {
        actor.require(Permission::SecretsManage, "reveal keys")?;
        let key = self.load_key(actor, id).await?;
        let ks = self.load_keyspace(actor, &key.keyspace_id).await?;
        if !ks.recoverable {
            return Err(ServiceError::Conflict(format!(
                "keyspace {} keeps hashes only, so key {} cannot be shown again; rotate it for a new one",
                ks.id, key.id
            )));
        }
        if key.revoked_at.is_some() {
            return Err(ServiceError::Conflict(format!("key {} is revoked; there is nothing to reveal", key.id)));
        }
        let secrets = self.secrets.get().ok_or(ServiceError::NotConfigured("this server has no master key"))?;
        let now = keyward_core::time::now_ms();
        {
            let mut reveals = secrets.reveals.lock();
            let minute = now / 60_000;
            let entry = reveals.entry(actor.root_key_id.clone()).or_insert((minute, 0));
            if entry.0 != minute {
                *entry = (minute, 0);
            }
            if entry.1 >= REVEALS_PER_MINUTE {
                return Err(ServiceError::TooMany {
                    detail: format!("at most {REVEALS_PER_MINUTE} keys may be revealed per minute per root key"),
                    retry_after_s: (60 - (now / 1000) % 60) as u64,
                });
            }
            entry.1 += 1;
        }
        let (ws, kid) = (actor.workspace_id.clone(), key.id.clone());
        let sealed = self.blocking(move |s| s.sealed_key(&ws, &kid)).await?.ok_or_else(|| {
            ServiceError::Conflict(format!(
                "key {} was created before its keyspace kept recoverable keys; rotate it to get a recoverable one",
                key.id
            ))
        })?;
        let plain =
            secrets.ring.dek(keyward_store::cipher::Purpose::Secrets).open(&sealed_aad(&key.id), &sealed).map_err(
                |_| {
                    ServiceError::Store(keyward_store::StoreError::Corrupt {
                        table: "sealed_keys",
                        detail: format!("the sealed copy of {} does not open", key.id),
                    })
                },
            )?;
        let text = String::from_utf8(plain.to_vec()).map_err(|_| ServiceError::Task)?;
        let audit =
            self.audit_entry(actor, "key.reveal", "key", &key.id, None, Some(serde_json::json!({"hint": key.hint})));
        self.blocking(move |s| s.append_audit(&audit)).await?;
        tracing::warn!(key_id = %key.id, root_key_id = %actor.root_key_id, "A recoverable key was revealed.");
        Ok(crate::api::RevealedKey { id: key.id, key: text })
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
