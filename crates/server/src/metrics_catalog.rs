//! Every metric keyward exports, with its help text. Labels stay bounded:
//! outcome codes, route templates, status codes, configured sink names, rule
//! ids and severities (never a key, an address or an alert id).

use metrics::{describe_counter, describe_gauge};

/// Registers the help text of every metric; call once after installing a recorder.
pub fn describe() {
    describe_counter!("keyward_verifications_total", "Verifications decided, by outcome code.");
    describe_counter!("keyward_http_requests_total", "HTTP requests answered, by route template and status.");
    // keyward_http_request_duration_seconds: fixed buckets of our own, rendered by
    // `request_id::HttpMetrics::render_latency`.
    describe_gauge!("keyward_http_connections", "Open HTTP connections.");
    describe_counter!(
        "keyward_root_auth_failures_total",
        "Failed root-key authentications (malformed, unknown or revoked root keys)."
    );
    describe_counter!(
        "keyward_root_auth_throttled_total",
        "Requests refused (429) because their address made too many failed root-key authentications."
    );
    describe_counter!(
        "keyward_http_connections_refused_total",
        "Connections closed on accept because a cap was reached, by cap (total, per_ip, proxy)."
    );
    describe_counter!(
        "keyward_proxy_refused_total",
        "Requests the gateway refused itself, by outcome code (MISSING: no key sent)."
    );
    describe_counter!(
        "keyward_proxy_upstream_errors_total",
        "Admitted requests the gateway could not forward, by the status it answered (502, 504)."
    );
    describe_counter!(
        "keyward_events_enqueued_total",
        "Usage events accepted into the queue (counted by the writer, once per tick)."
    );
    describe_counter!(
        "keyward_events_dropped_total",
        "Usage events dropped because the queue stayed full or the writer stopped."
    );
    describe_counter!("keyward_events_written_total", "Usage events written to the event log.");
    describe_counter!("keyward_events_write_errors_total", "Failed attempts to write a batch of usage events.");
    describe_counter!("keyward_events_purged_total", "Usage events deleted past retention.");
    describe_gauge!("keyward_events_last_id", "Id of the newest written usage event.");
    describe_gauge!("keyward_keys_cached", "Keys in the in-memory verify index.");
    describe_gauge!("keyward_negative_cache_entries", "Unknown key hashes remembered by the negative cache.");
    describe_counter!("keyward_revocation_check_failures_total", "Revoked keys that the verify path did not reject.");
    describe_counter!("keyward_sink_events_total", "Usage events shipped, by sink.");
    describe_counter!("keyward_sink_failures_total", "Failed shipments, by sink.");
    describe_gauge!("keyward_sink_up", "1 when the sink's last shipment succeeded, else 0.");
    describe_gauge!("keyward_sink_backlog", "Usage events written but not yet shipped, by sink.");
    describe_counter!(
        "keyward_alerts_total",
        "Alert changes, by rule, severity and change (opened, reopened, escalated, resolved)."
    );
    describe_counter!(
        "keyward_alert_events_dropped_total",
        "Usage events the rules engine could not take in time (its queue was full)."
    );
    describe_gauge!("keyward_alert_keys_tracked", "Keys with state in the rules engine.");
    describe_gauge!("keyward_alert_ips_tracked", "Source addresses with state in the rules engine.");
    describe_counter!(
        "keyward_webhook_attempts_total",
        "Webhook delivery attempts, by outcome (delivered, retry, dead)."
    );
    describe_gauge!("keyward_webhook_deliveries_pending", "Webhook deliveries waiting to be sent or retried.");
    describe_counter!("keyward_rollup_events_total", "Usage events folded into the analytics rollups.");
    describe_counter!(
        "keyward_cluster_changes_applied_total",
        "Changes made on other nodes that this node applied to its index."
    );
    describe_gauge!("keyward_redis_up", "1 when the last limit check reached Redis, else 0 (only with redis.url).");
    describe_counter!("keyward_redis_errors_total", "Limit checks that could not reach Redis.");
}
