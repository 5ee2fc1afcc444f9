//! `keyward keyspaces|root-keys|workspaces|audit|incident …`.

use anyhow::Context;
use clap::{Args, Subcommand};
use serde_json::{Value, json};

use super::output::{Paint, Table, text, when};
use super::{Conn, call, encode, parse_duration, print_json, query, show_secret};

#[derive(Subcommand)]
pub enum KeyspacesCmd {
    /// Create a keyspace: a prefix and the defaults its keys get.
    #[command(after_help = "Examples:
  keyward keyspaces create --name prod --prefix sk_live
  keyward keyspaces create --name ci --prefix ci --default-ttl 30d")]
    Create {
        #[command(flatten)]
        conn: Conn,
        #[arg(long)]
        name: String,
        /// Key prefix, e.g. sk_live (default kw_live).
        #[arg(long)]
        prefix: Option<String>,
        /// Lifetime of new keys: 30d, 12h (a bare number is milliseconds).
        #[arg(long, visible_alias = "default-ttl-ms", value_name = "DURATION")]
        default_ttl: Option<String>,
        /// A scope new keys get when created without any (repeat).
        #[arg(long = "default-scope", value_name = "SCOPE")]
        default_scopes: Vec<String>,
    },
    /// List keyspaces.
    #[command(after_help = "Example:\n  keyward keyspaces list")]
    List {
        #[command(flatten)]
        conn: Conn,
    },
}

pub fn keyspaces(cmd: KeyspacesCmd) -> anyhow::Result<()> {
    match cmd {
        KeyspacesCmd::Create { conn, name, prefix, default_ttl, default_scopes } => {
            let mut body = json!({ "name": name });
            if let Some(prefix) = prefix {
                body["prefix"] = prefix.into();
            }
            if let Some(ttl) = default_ttl {
                let ms = parse_duration(&ttl)
                    .with_context(|| format!("--default-ttl {ttl:?}: write a duration such as 30d or 12h"))?;
                body["default_ttl_ms"] = ms.into();
            }
            if !default_scopes.is_empty() {
                body["default_scopes"] = json!(default_scopes);
            }
            let ks = call(&conn, "POST", "/v1/keyspaces", Some(body))?;
            if conn.json {
                return print_json(&ks);
            }
            println!("{}  {}  prefix {}", text(&ks, "id"), text(&ks, "name"), text(&ks, "prefix"));
            Ok(())
        }
        KeyspacesCmd::List { conn } => {
            let list = call(&conn, "GET", "/v1/keyspaces", None)?;
            if conn.json {
                return print_json(&list);
            }
            let mut table = Table::new(&["ID", "NAME", "PREFIX", "DEFAULT SCOPES", "CREATED"]);
            for ks in list.as_array().or(list["data"].as_array()).into_iter().flatten() {
                table.row(vec![
                    text(ks, "id"),
                    text(ks, "name"),
                    text(ks, "prefix"),
                    text(ks, "default_scopes"),
                    when(ks, "created_at"),
                ]);
            }
            table.print(Paint::stdout());
            Ok(())
        }
    }
}

#[derive(Subcommand)]
pub enum RootKeysCmd {
    /// Create a root key for the API; prints it once, alone on stdout.
    #[command(after_help = "Examples:
  keyward root-keys create --name ci-verifier --role verifier
  KEYWARD_ROOT_KEY=$(keyward root-keys create --name ops --role key_manager)")]
    Create {
        #[command(flatten)]
        conn: Conn,
        #[arg(long)]
        name: String,
        /// admin, key_manager, auditor or verifier.
        #[arg(long)]
        role: String,
        /// Lifetime: 90d, 12h; the key stops authenticating after it.
        #[arg(long, value_name = "DURATION")]
        ttl: Option<String>,
    },
    /// A new secret for a root key (same name and role), printed once; the old one stops
    /// now, or after --overlap so that its users can switch.
    #[command(after_help = "Examples:
  keyward root-keys rotate rk_01J... --overlap 1h
  KEYWARD_ROOT_KEY=$(keyward root-keys rotate rk_01J...)")]
    Rotate {
        #[command(flatten)]
        conn: Conn,
        id: String,
        /// How long the old key keeps working: 10m, 1h (at most 7d). Default: it stops at once.
        #[arg(long, value_name = "DURATION")]
        overlap: Option<String>,
        /// Lifetime of the new key: 90d, 12h.
        #[arg(long, value_name = "DURATION")]
        ttl: Option<String>,
    },
    /// List this workspace's root keys (hints only).
    #[command(after_help = "Example:\n  keyward root-keys list")]
    List {
        #[command(flatten)]
        conn: Conn,
    },
    /// Revoke a root key at once (not the last admin key).
    #[command(after_help = "Example:\n  keyward root-keys delete rk_01J...")]
    Delete {
        #[command(flatten)]
        conn: Conn,
        id: String,
    },
}

fn root_key_table(conn: &Conn, keys: &[Value]) -> anyhow::Result<()> {
    if conn.json {
        return print_json(&json!(keys));
    }
    let mut table = Table::new(&["ID", "NAME", "ROLE", "HINT", "CREATED", "LAST USED", "EXPIRES", "REVOKED"]);
    for k in keys {
        table.row(vec![
            text(k, "id"),
            text(k, "name"),
            text(k, "role"),
            text(k, "hint"),
            when(k, "created_at"),
            when(k, "last_used_at"),
            when(k, "expires_at"),
            when(k, "revoked_at"),
        ]);
    }
    table.print(Paint::stdout());
    Ok(())
}

fn duration_flag(flag: &str, value: &str) -> anyhow::Result<i64> {
    parse_duration(value).with_context(|| format!("{flag} {value:?}: write a duration such as 90d, 12h or 10m"))
}

pub fn root_keys(cmd: RootKeysCmd) -> anyhow::Result<()> {
    match cmd {
        RootKeysCmd::Create { conn, name, role, ttl } => {
            let mut body = json!({ "name": name, "role": role });
            if let Some(ttl) = ttl {
                body["ttl_ms"] = duration_flag("--ttl", &ttl)?.into();
            }
            let created = call(&conn, "POST", "/v1/root-keys", Some(body))?;
            show_secret(&conn, &created, &format!("Created {role} root key"))
        }
        RootKeysCmd::Rotate { conn, id, overlap, ttl } => {
            let mut body = json!({});
            if let Some(o) = overlap {
                body["overlap_ms"] = duration_flag("--overlap", &o)?.into();
            }
            if let Some(ttl) = ttl {
                body["ttl_ms"] = duration_flag("--ttl", &ttl)?.into();
            }
            let rotated = call(&conn, "POST", &format!("/v1/root-keys/{}/rotate", encode(&id)), Some(body))?;
            let until = rotated["previous"]["expires_at"].as_str().unwrap_or("now");
            show_secret(&conn, &rotated, &format!("Rotated root key {id} (the old key stops {until}); new key"))
        }
        RootKeysCmd::List { conn } => {
            let list = call(&conn, "GET", "/v1/root-keys", None)?;
            root_key_table(&conn, list.as_array().map(Vec::as_slice).unwrap_or_default())
        }
        RootKeysCmd::Delete { conn, id } => {
            let revoked = call(&conn, "DELETE", &format!("/v1/root-keys/{}", encode(&id)), None)?;
            root_key_table(&conn, std::slice::from_ref(&revoked))
        }
    }
}

#[derive(Subcommand)]
pub enum WorkspacesCmd {
    /// Create an isolated workspace; prints its first admin root key once.
    #[command(after_help = "Example:\n  KEYWARD_ROOT_KEY=$(keyward workspaces create --name acme)")]
    Create {
        #[command(flatten)]
        conn: Conn,
        #[arg(long)]
        name: String,
    },
}

pub fn workspaces(cmd: WorkspacesCmd) -> anyhow::Result<()> {
    match cmd {
        WorkspacesCmd::Create { conn, name } => {
            let created = call(&conn, "POST", "/v1/workspaces", Some(json!({ "name": name })))?;
            if conn.json {
                return print_json(&created);
            }
            show_secret(
                &conn,
                &created["root_key"],
                &format!("Created workspace {} with admin root key", text(&created, "id")),
            )
        }
    }
}

/// `keyward audit`: the admin audit log, newest first; `--verify` checks its hash chain.
#[derive(Args, Debug)]
#[command(after_help = "Examples:
  keyward audit --action key.revoke --limit 20
  keyward audit --verify            # exit 1 when the chain is broken")]
pub struct AuditCmd {
    #[command(flatten)]
    conn: Conn,
    /// Recompute the hash chain instead of listing; exit 1 when broken.
    #[arg(long)]
    verify: bool,
    /// e.g. key.create, key.revoke, root_key.create.
    #[arg(long)]
    action: Option<String>,
    #[arg(long)]
    target_id: Option<String>,
    #[arg(long)]
    cursor: Option<String>,
    #[arg(long)]
    limit: Option<u32>,
}

pub fn audit(cmd: AuditCmd) -> anyhow::Result<()> {
    let conn = &cmd.conn;
    let paint = Paint::stdout();
    if cmd.verify {
        let check = call(conn, "GET", "/v1/audit/verify", None)?;
        if conn.json {
            print_json(&check)?;
        } else if check["ok"] == true {
            println!("{} the chain of {} entries is intact", paint.status("ok"), check["entries"]);
        } else {
            println!("{} the chain breaks at seq {}", paint.status("BROKEN"), check["first_bad_seq"]);
        }
        if check["ok"] != true {
            std::process::exit(1);
        }
        return Ok(());
    }
    let limit = cmd.limit.map(|l| l.to_string());
    let q =
        query(&[("action", &cmd.action), ("target_id", &cmd.target_id), ("cursor", &cmd.cursor), ("limit", &limit)]);
    let page = call(conn, "GET", &format!("/v1/audit{q}"), None)?;
    if conn.json {
        return print_json(&page);
    }
    let mut table = Table::new(&["SEQ", "WHEN", "ACTION", "TARGET", "ACTOR", "FROM"]);
    for e in page["data"].as_array().into_iter().flatten() {
        table.row(vec![
            text(e, "seq"),
            when(e, "at"),
            text(e, "action"),
            text(e, "target_id"),
            text(e, "actor"),
            text(e, "source_ip"),
        ]);
    }
    table.print(paint);
    if let Some(cursor) = page["next_cursor"].as_str() {
        eprintln!("more: --cursor {cursor}");
    }
    Ok(())
}

#[derive(Subcommand)]
pub enum IncidentCmd {
    /// Print an incident, with the usage review of its keys, as Markdown.
    #[command(after_help = "Example:\n  keyward incident report inc_01J... --review-days 14 > incident.md")]
    Report {
        #[command(flatten)]
        conn: Conn,
        id: String,
        /// Days of usage to review (default 7).
        #[arg(long)]
        review_days: Option<i64>,
    },
}

pub fn incident(cmd: IncidentCmd) -> anyhow::Result<()> {
    match cmd {
        IncidentCmd::Report { conn, id, review_days } => {
            let days = review_days.map(|d| d.to_string());
            let v = call(
                &conn,
                "GET",
                &format!("/v1/incidents/{}{}", encode(&id), query(&[("review_days", &days)])),
                None,
            )?;
            if conn.json {
                return print_json(&v);
            }
            let view: keyward_service::incidents::IncidentView =
                serde_json::from_value(v).context("reading the incident from the server")?;
            print!("{}", keyward_service::incidents::markdown(&view));
            Ok(())
        }
    }
}

/// `keyward master-key …`: the master key that encrypts the data dir at rest.
#[derive(Subcommand)]
pub enum MasterKeyCmd {
    /// Print a new random master key (64 hex characters) on stdout; nothing is stored.
    #[command(after_help = "Examples:
  keyward master-key generate > /etc/keyward/master.key && chmod 600 /etc/keyward/master.key
  KEYWARD_MASTER_KEY_FILE=/etc/keyward/master.key keyward serve")]
    Generate,
    /// Whether the running server's data dir is encrypted, and its master key id (admin).
    #[command(after_help = "Example:\n  keyward master-key status")]
    Status {
        #[command(flatten)]
        conn: Conn,
    },
    /// Re-wrap the data keys of a running server under a new master key, online (admin; audited).
    /// Configure the new key before the next start: the old one no longer opens the data dir.
    #[command(after_help = "Examples:
  keyward master-key generate > new.key
  keyward master-key rotate --new-key-file new.key
  keyward master-key rotate     # the server re-reads KEYWARD_MASTER_KEY_FILE / _COMMAND")]
    Rotate {
        #[command(flatten)]
        conn: Conn,
        /// File with the new key; `-` reads stdin. Omitted: the server reads its key file or command again.
        #[arg(long, value_name = "FILE")]
        new_key_file: Option<std::path::PathBuf>,
    },
}

pub fn master_key(cmd: MasterKeyCmd) -> anyhow::Result<()> {
    match cmd {
        MasterKeyCmd::Generate => {
            let key = keyward_core::seal::SecretKey::generate();
            println!("{}", key.to_hex().as_str());
            eprintln!(
                "Master key id {}. Keep the key outside the data dir (a vault, a KMS, a root-only file).",
                key.id()
            );
            Ok(())
        }
        MasterKeyCmd::Status { conn } => {
            let v = call(&conn, "GET", "/v1/master-key", None)?;
            if conn.json {
                return print_json(&v);
            }
            if v["encrypted"].as_bool() == Some(true) {
                println!("encrypted at rest, master key id {}", text(&v, "master_key_id"));
            } else {
                println!(
                    "NOT encrypted at rest: start keyward with KEYWARD_MASTER_KEY_FILE (see `keyward master-key generate`)"
                );
            }
            Ok(())
        }
        MasterKeyCmd::Rotate { conn, new_key_file } => {
            let body = match new_key_file {
                Some(path) => {
                    let text = if path.as_os_str() == "-" {
                        std::io::read_to_string(std::io::stdin()).context("reading the new key from stdin")?
                    } else {
                        std::fs::read_to_string(&path)
                            .with_context(|| format!("reading the new key from {}", path.display()))?
                    };
                    let text = zeroize::Zeroizing::new(text);
                    json!({ "new_master_key": text.trim() })
                }
                None => json!({}),
            };
            let v = call(&conn, "POST", "/v1/master-key/rotate", Some(body))?;
            if conn.json {
                return print_json(&v);
            }
            println!(
                "rotated: {} data keys re-wrapped, master key id {} -> {}",
                v["data_keys"],
                text(&v, "previous_master_key_id"),
                text(&v, "master_key_id")
            );
            eprintln!("Configure the new key before the next start: the old one no longer opens the data dir.");
            Ok(())
        }
    }
}
