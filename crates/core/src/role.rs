//! Root-key roles and what each may do on the management API.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// The role of a root key. Roles are fixed sets of [`Permission`]s.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Everything in its workspace, including root keys and new workspaces.
    Admin,
    /// Keyspaces and keys: read and write. No root keys, no verify.
    KeyManager,
    /// Read-only: keyspaces, keys, root keys (without secrets) and the audit log.
    Auditor,
    /// Verify only.
    Verifier,
}

/// One thing a management call needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Permission {
    Verify,
    KeysRead,
    KeysWrite,
    RootKeysRead,
    RootKeysWrite,
    AuditRead,
    WorkspacesCreate,
    /// Read alerts, alert rules, webhooks and their deliveries.
    AlertsRead,
    /// Acknowledge and resolve alerts.
    AlertsWrite,
    /// Change alert rules and webhook endpoints.
    AlertsConfigure,
    /// Server-wide secrets: rotate the master key, reveal recoverable keys.
    SecretsManage,
}

impl Role {
    pub fn allows(self, p: Permission) -> bool {
        use Permission::*;
        match self {
            Role::Admin => true,
            Role::KeyManager => matches!(p, KeysRead | KeysWrite | AlertsRead | AlertsWrite),
            Role::Auditor => matches!(p, KeysRead | RootKeysRead | AuditRead | AlertsRead),
            Role::Verifier => matches!(p, Verify),
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::KeyManager => "key_manager",
            Role::Auditor => "auditor",
            Role::Verifier => "verifier",
        }
    }

    pub fn parse(s: &str) -> Option<Role> {
        Some(match s {
            "admin" => Role::Admin,
            "key_manager" => Role::KeyManager,
            "auditor" => Role::Auditor,
            "verifier" => Role::Verifier,
            _ => return None,
        })
    }
}
