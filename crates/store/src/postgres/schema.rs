//! The PostgreSQL schema, as numbered steps. The same tables as the embedded
//! store (`sqlite.rs`) at its newest version, in PostgreSQL's types: `BIGINT`
//! instants, `BOOLEAN` flags, `BYTEA` hashes, JSON kept as the exact text
//! written (the audit chain hashes that text). Plus what only a cluster
//! needs: `changes`, the ordered feed of what affects verification, which
//! every node follows (see `changes.rs`).

pub const MIGRATIONS: &[&str] = &[
    // 1: everything the embedded store has at its version 9, and the change feed.
    r#"
    CREATE TABLE workspaces (
        id          TEXT PRIMARY KEY,
        name        TEXT NOT NULL,
        created_at  BIGINT NOT NULL
    );
    CREATE TABLE keyspaces (
        id                       TEXT PRIMARY KEY,
        workspace_id             TEXT NOT NULL REFERENCES workspaces(id),
        name                     TEXT NOT NULL,
        prefix                   TEXT NOT NULL,
        default_ttl_ms           BIGINT,
        created_at               BIGINT NOT NULL,
        updated_at               BIGINT NOT NULL,
        default_scopes           TEXT NOT NULL DEFAULT '[]',
        default_ip_allowlist     TEXT NOT NULL DEFAULT '[]',
        default_ratelimits       TEXT NOT NULL,
        path_rules               TEXT NOT NULL DEFAULT '[]',
        pseudonymize_ips         BOOLEAN NOT NULL DEFAULT FALSE,
        max_age_ms               BIGINT,
        auto_disable_on_critical BOOLEAN NOT NULL DEFAULT FALSE,
        recoverable              BOOLEAN NOT NULL DEFAULT FALSE
    );
    CREATE INDEX keyspaces_ws ON keyspaces(workspace_id, id);
    CREATE TABLE keys (
        id                    TEXT PRIMARY KEY,
        workspace_id          TEXT NOT NULL REFERENCES workspaces(id),
        keyspace_id           TEXT NOT NULL REFERENCES keyspaces(id),
        name                  TEXT,
        owner_id              TEXT,
        meta                  TEXT NOT NULL,
        hash                  BYTEA NOT NULL UNIQUE,
        hash_kind             TEXT NOT NULL,
        hint                  TEXT NOT NULL,
        enabled               BOOLEAN NOT NULL,
        expires_at            BIGINT,
        revoked_at            BIGINT,
        revoke_reason         TEXT,
        revoke_note           TEXT,
        incident_id           TEXT,
        created_at            BIGINT NOT NULL,
        updated_at            BIGINT NOT NULL,
        last_used_at          BIGINT,
        last_used_ip          TEXT,
        scopes                TEXT NOT NULL DEFAULT '[]',
        ip_allowlist          TEXT,
        ratelimits            TEXT,
        remaining             BIGINT,
        refill                TEXT,
        refilled_at           BIGINT,
        rotated_at            BIGINT,
        rotated_to            TEXT,
        overlap_until         BIGINT,
        revocation_check_at   BIGINT,
        revocation_check_code TEXT
    );
    CREATE INDEX keys_ws ON keys(workspace_id, id);
    CREATE INDEX keys_ws_owner ON keys(workspace_id, owner_id, id);
    CREATE INDEX keys_ws_ks ON keys(workspace_id, keyspace_id, id);
    CREATE INDEX keys_rotated_to ON keys(rotated_to) WHERE rotated_to IS NOT NULL;
    CREATE INDEX keys_revoked ON keys(revoked_at) WHERE revoked_at IS NOT NULL;
    CREATE TABLE root_keys (
        id            TEXT PRIMARY KEY,
        workspace_id  TEXT NOT NULL REFERENCES workspaces(id),
        name          TEXT NOT NULL,
        role          TEXT NOT NULL,
        hash          BYTEA NOT NULL UNIQUE,
        hash_kind     TEXT NOT NULL,
        hint          TEXT NOT NULL,
        created_at    BIGINT NOT NULL,
        revoked_at    BIGINT,
        expires_at    BIGINT,
        last_used_at  BIGINT
    );
    CREATE TABLE audit (
        seq           BIGSERIAL PRIMARY KEY,
        id            TEXT NOT NULL UNIQUE,
        workspace_id  TEXT NOT NULL,
        at            BIGINT NOT NULL,
        actor         TEXT NOT NULL,
        action        TEXT NOT NULL,
        target_type   TEXT NOT NULL,
        target_id     TEXT NOT NULL,
        source_ip     TEXT,
        request_id    TEXT,
        before        TEXT,
        after         TEXT,
        hash          TEXT NOT NULL
    );
    CREATE INDEX audit_ws ON audit(workspace_id, seq);
    CREATE TABLE settings (
        name   TEXT PRIMARY KEY,
        value  TEXT NOT NULL
    );
    CREATE TABLE reminders (
        id            TEXT PRIMARY KEY,
        workspace_id  TEXT NOT NULL,
        key_id        TEXT NOT NULL,
        days          BIGINT NOT NULL,
        expires_at    BIGINT NOT NULL,
        created_at    BIGINT NOT NULL,
        UNIQUE (key_id, days, expires_at)
    );
    CREATE INDEX reminders_ws ON reminders(workspace_id, id);
    CREATE TABLE incidents (
        id            TEXT PRIMARY KEY,
        workspace_id  TEXT NOT NULL,
        body          TEXT NOT NULL,
        created_at    BIGINT NOT NULL,
        updated_at    BIGINT NOT NULL
    );
    CREATE INDEX incidents_ws ON incidents(workspace_id, id);
    CREATE TABLE alerts (
        id            TEXT PRIMARY KEY,
        workspace_id  TEXT NOT NULL,
        rule          TEXT NOT NULL,
        severity      TEXT NOT NULL,
        status        TEXT NOT NULL,
        subject       TEXT NOT NULL,
        key_id        TEXT,
        first_seen    BIGINT NOT NULL,
        last_seen     BIGINT NOT NULL,
        updated_at    BIGINT NOT NULL,
        body          TEXT NOT NULL
    );
    CREATE INDEX alerts_ws ON alerts(workspace_id, id);
    CREATE INDEX alerts_live ON alerts(status, updated_at);
    CREATE INDEX alerts_key ON alerts(key_id) WHERE key_id IS NOT NULL;
    CREATE TABLE alert_rules (
        workspace_id  TEXT NOT NULL,
        level         TEXT NOT NULL,
        target_id     TEXT NOT NULL,
        keyspace_id   TEXT,
        rules         TEXT NOT NULL,
        updated_at    BIGINT NOT NULL,
        PRIMARY KEY (workspace_id, level, target_id)
    );
    CREATE TABLE alert_learned (
        key_id        TEXT PRIMARY KEY,
        workspace_id  TEXT NOT NULL,
        body          TEXT NOT NULL,
        updated_at    BIGINT NOT NULL
    );
    CREATE TABLE webhooks (
        id            TEXT PRIMARY KEY,
        workspace_id  TEXT NOT NULL,
        url           TEXT NOT NULL,
        events        TEXT NOT NULL,
        description   TEXT,
        secret        TEXT NOT NULL,
        format        TEXT NOT NULL,
        created_at    BIGINT NOT NULL,
        deleted_at    BIGINT
    );
    CREATE INDEX webhooks_ws ON webhooks(workspace_id, id);
    CREATE TABLE webhook_messages (
        id            TEXT PRIMARY KEY,
        workspace_id  TEXT NOT NULL,
        event_type    TEXT NOT NULL,
        body          TEXT NOT NULL,
        created_at    BIGINT NOT NULL
    );
    CREATE TABLE webhook_deliveries (
        id              TEXT PRIMARY KEY,
        workspace_id    TEXT NOT NULL,
        webhook_id      TEXT NOT NULL,
        message_id      TEXT NOT NULL,
        event_type      TEXT NOT NULL,
        status          TEXT NOT NULL,
        attempts        BIGINT NOT NULL,
        next_attempt_at BIGINT,
        last_attempt_at BIGINT,
        last_status     BIGINT,
        last_error      TEXT,
        created_at      BIGINT NOT NULL,
        delivered_at    BIGINT
    );
    CREATE INDEX deliveries_due ON webhook_deliveries(next_attempt_at) WHERE status = 'pending';
    CREATE INDEX deliveries_hook ON webhook_deliveries(webhook_id, id);
    CREATE TABLE webhook_attempts (
        delivery_id   TEXT NOT NULL,
        n             BIGINT NOT NULL,
        at            BIGINT NOT NULL,
        status        BIGINT,
        error         TEXT,
        duration_ms   BIGINT NOT NULL,
        PRIMARY KEY (delivery_id, n)
    );
    CREATE TABLE alert_changes (
        seq           BIGSERIAL PRIMARY KEY,
        workspace_id  TEXT NOT NULL,
        alert_id      TEXT NOT NULL,
        change        TEXT NOT NULL,
        at            BIGINT NOT NULL,
        body          TEXT NOT NULL
    );
    CREATE TABLE sealed_keys (
        key_id        TEXT PRIMARY KEY REFERENCES keys(id),
        workspace_id  TEXT NOT NULL,
        sealed        BYTEA NOT NULL
    );
    CREATE TABLE changes (
        seq           BIGSERIAL PRIMARY KEY,
        kind          TEXT NOT NULL,
        workspace_id  TEXT NOT NULL,
        target_id     TEXT NOT NULL,
        at            BIGINT NOT NULL,
        -- The node that made it (its own changes are in its memory already).
        node          TEXT
    );
    CREATE INDEX changes_at ON changes(at);
    "#,
    // 2: the usage-event log, partitioned by day (`ts`): retention drops whole
    // partitions. Ids come from one sequence, handed out under a lock in
    // commit order (see `events.rs`), so a sink reading `id > cursor` misses
    // nothing. Indexes as in the embedded log, one per filter, each ending in id.
    r#"
    CREATE SEQUENCE events_id_seq;
    CREATE TABLE events (
        id           BIGINT NOT NULL,
        ts           BIGINT NOT NULL,
        kind         TEXT NOT NULL,
        request_id   TEXT NOT NULL,
        workspace_id TEXT NOT NULL,
        keyspace_id  TEXT,
        key_id       TEXT,
        key_hint     TEXT,
        owner_id     TEXT,
        fingerprint  TEXT,
        ip           TEXT,
        user_agent   TEXT,
        method       TEXT,
        path         TEXT,
        code         TEXT NOT NULL,
        status       BIGINT,
        error        TEXT,
        bytes_in     BIGINT,
        bytes_out    BIGINT,
        latency_us   BIGINT,
        country      TEXT,
        asn          BIGINT,
        as_org       TEXT
    ) PARTITION BY RANGE (ts);
    CREATE TABLE events_default PARTITION OF events DEFAULT;
    CREATE INDEX events_id ON events (id);
    CREATE INDEX events_ws ON events (workspace_id, id);
    CREATE INDEX events_key ON events (key_id, id) WHERE key_id IS NOT NULL;
    CREATE INDEX events_ip ON events (workspace_id, ip, id) WHERE ip IS NOT NULL;
    CREATE INDEX events_code ON events (workspace_id, code, id) WHERE code <> 'VALID';
    CREATE INDEX events_status ON events (workspace_id, (status / 100), id)
        WHERE status IS NOT NULL AND (status < 200 OR status >= 300);
    CREATE TABLE sink_cursors (
        name        TEXT PRIMARY KEY,
        last_id     BIGINT NOT NULL,
        updated_at  BIGINT NOT NULL
    );
    "#,
    // 3: rollups (issue 14), as in the embedded log.
    r#"
    CREATE TABLE rollups (
        workspace_id TEXT NOT NULL,
        scope        TEXT NOT NULL,
        target       TEXT NOT NULL,
        gran         TEXT NOT NULL,
        bucket       BIGINT NOT NULL,
        requests     BIGINT NOT NULL,
        body         TEXT NOT NULL,
        PRIMARY KEY (workspace_id, scope, target, gran, bucket)
    );
    CREATE INDEX rollups_age ON rollups(gran, bucket);
    CREATE TABLE rollup_state (
        name   TEXT PRIMARY KEY,
        value  BIGINT NOT NULL
    );
    "#,
    // 4: top lists summed in SQL, as in the embedded log.
    r#"
    ALTER TABLE rollups ADD COLUMN denied BIGINT NOT NULL DEFAULT 0;
    ALTER TABLE rollups ADD COLUMN bytes BIGINT NOT NULL DEFAULT 0;
    CREATE INDEX rollups_top ON rollups(workspace_id, scope, gran, bucket) INCLUDE (target, requests, denied, bytes);
    "#,
    // 5: key search (`q`), as in the embedded store.
    r#"
    CREATE INDEX keys_ws_name ON keys(workspace_id, lower(name) text_pattern_ops);
    CREATE INDEX keys_ws_hint ON keys(workspace_id, right(hint, 4));
    "#,
];
