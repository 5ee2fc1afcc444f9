//! `keyward migrate --to postgres://…`: copies an embedded data dir (keys,
//! keyspaces, root keys, the audit chain, incidents, alerts, webhooks, the
//! usage events and the sinks' positions) into an empty PostgreSQL
//! database, with progress, then checks the copy: row counts table by
//! table, each workspace's audit chain, and every key found by its hash.

use std::path::Path;

use anyhow::{Context, bail};
use keyward_store::Store;
use keyward_store::cipher::{self, Purpose};
use keyward_store::datadir;
use keyward_store::postgres::{self, PgEventLog, PgStore, import};
use keyward_store::sqlite::SqliteStore;

use crate::client::output::progress;
use crate::config::{Config, Overrides};
use crate::serve;

pub fn migrate(flags: &Overrides, to: &str, write_pepper: Option<&Path>) -> anyhow::Result<()> {
    let cfg = Config::load(flags)?;
    serve::init_tracing(&cfg);
    if !(to.starts_with("postgres://") || to.starts_with("postgresql://")) {
        bail!("--to must be a PostgreSQL URL such as postgres://keyward@db.internal:5432/keyward");
    }
    let dir = &cfg.data_dir;
    let store_path = dir.join("keyward.db");
    if !store_path.exists() {
        bail!("{} holds no keyward data (no keyward.db); pass the data dir with --data-dir", dir.display());
    }
    let lock = datadir::create_private(&dir.join("lock")).with_context(|| format!("opening {}/lock", dir.display()))?;
    if lock.try_lock().is_err() {
        bail!(
            "a keyward process is using data dir {}; stop it first, so nothing changes during the copy",
            dir.display()
        );
    }
    if let Some(f) = write_pepper
        && f.exists()
    {
        bail!("--write-pepper: {} exists; give a new file", f.display());
    }
    let keyring = serve::open_keyring(&cfg)?;
    let pepper = serve::load_pepper(&cfg, keyring.as_deref())?;
    let key = |p: Purpose| keyring.as_ref().map(|k| k.dek(p));
    let src = cipher::open_db(&store_path, key(Purpose::Store).as_ref()).context("opening the embedded store")?;
    let events_path = dir.join("events.db");

    eprintln!("Copying {} into {}", dir.display(), redact_url(to));
    let started = std::time::Instant::now();
    let target = PgStore::open(to, 2).context("opening the PostgreSQL database (its schema is made if needed)")?;
    let mut client = postgres::connect(to)?;
    let mut bar = |table: &str, done: u64, total: u64| {
        progress(table, done, total);
        if done == total {
            eprintln!();
        }
    };
    let copied = import::copy_store(&src, &mut client, &mut bar).context("copying the store")?;
    let log = PgEventLog::open(to, 2).context("opening the event log in PostgreSQL")?;
    let events_src = match events_path.exists() {
        true => Some(cipher::open_db(&events_path, key(Purpose::Events).as_ref()).context("opening events.db")?),
        false => None,
    };
    let events = match &events_src {
        Some(e) => log.import_from(e, &mut bar).context("copying the usage events")?,
        None => 0,
    };

    // The check: the same rows, the same chains, every key found.
    let mut bad = Vec::new();
    for (table, a, b) in import::counts(&src, &mut client, import::STORE_TABLES)? {
        if a != b {
            bad.push(format!("{table}: {a} rows in the data dir, {b} in PostgreSQL"));
        }
    }
    if let Some(e) = &events_src {
        for (table, a, b) in import::counts(e, &mut client, &["events", "sink_cursors"])? {
            if a != b {
                bad.push(format!("{table}: {a} rows in the data dir, {b} in PostgreSQL"));
            }
        }
    }
    let embedded = SqliteStore::open_with(&store_path, key(Purpose::Store).as_ref())?;
    let mut workspaces: Vec<String> = embedded.all_root_keys()?.into_iter().map(|r| r.workspace_id).collect();
    workspaces.sort();
    workspaces.dedup();
    for ws in &workspaces {
        let (a, b) = (embedded.verify_audit(ws)?, target.verify_audit(ws)?);
        if a != b || b.first_bad_seq.is_some() {
            bad.push(format!("audit chain of {ws}: {a:?} in the data dir, {b:?} in PostgreSQL"));
        }
    }
    let mut keys = 0u64;
    let mut missing = 0u64;
    let mut all = Vec::new();
    embedded.for_each_key(&mut |k| all.push(k))?;
    for k in &all {
        keys += 1;
        if target.find_key_by_hash(&k.hash)?.as_ref() != Some(k) {
            missing += 1;
        }
        if keys.is_multiple_of(10_000) || keys == all.len() as u64 {
            progress("checking keys", keys, all.len() as u64);
        }
    }
    if !all.is_empty() {
        eprintln!();
    }
    if missing > 0 {
        bad.push(format!("{missing} of {keys} keys are not found by their hash in PostgreSQL"));
    }
    if !bad.is_empty() {
        bail!("the copy does not match the data dir:\n  - {}", bad.join("\n  - "));
    }
    if let Some(f) = write_pepper {
        serve::write_secret(f, &pepper.to_hex()).with_context(|| format!("writing the pepper to {}", f.display()))?;
    }
    let rows: u64 = copied.iter().map(|(_, n)| n).sum();
    eprintln!(
        "Done in {:.1} s: {rows} rows ({keys} keys) and {events} usage events copied and checked: same rows, {} audit chain(s) intact, every key found by its hash.",
        started.elapsed().as_secs_f64(),
        workspaces.len()
    );
    let pepper_hint = match (write_pepper, &cfg.pepper.hex, &cfg.pepper.file) {
        (Some(f), _, _) => format!("KEYWARD_PEPPER_FILE={}", f.display()),
        (None, Some(_), _) => "KEYWARD_PEPPER (the value this command was given)".into(),
        (None, None, Some(f)) => format!("KEYWARD_PEPPER_FILE={}", f.display()),
        (None, None, None) => "the data dir's pepper (run again with --write-pepper FILE to get it as a file)".into(),
    };
    eprintln!(
        "Next: start every node with KEYWARD_DATABASE_URL set to this database and {pepper_hint}; keep the data dir as a backup."
    );
    if !cfg.pepper.previous.is_empty() {
        eprintln!("This data dir also has previous peppers: give every node the same [pepper.previous] entries.");
    }
    Ok(())
}

/// The URL without its password, for messages.
fn redact_url(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => {
            let userinfo = &url[s + 3..at];
            let user = userinfo.split(':').next().unwrap_or("");
            format!("{}{user}{}", &url[..s + 3], &url[at..])
        }
        _ => url.to_owned(),
    }
}
