//! Wire formats of events: Elastic Common Schema JSON (for files,
//! Elasticsearch, Splunk, webhooks), RFC 5424 syslog lines and CEF.

use keyward_core::Outcome;
use keyward_core::event::UsageEvent;
use keyward_core::time::to_rfc3339;
use keyward_store::alerts::AlertChangeRow;
use serde_json::{Map, Value, json};

/// What a sink ships: a usage event, or a change of an alert (`event.kind: alert`).
/// Usage events are most of the traffic, so they are not boxed.
#[derive(Debug, Clone)]
#[allow(clippy::large_enum_variant)]
pub enum Record {
    Usage(UsageEvent),
    Alert(AlertChangeRow),
}

impl Record {
    pub fn ecs(&self, host: &str) -> Value {
        match self {
            Record::Usage(e) => ecs(e, host),
            Record::Alert(c) => alert_ecs(c, host),
        }
    }

    pub fn cef(&self) -> String {
        match self {
            Record::Usage(e) => cef(e),
            Record::Alert(c) => alert_cef(c),
        }
    }

    pub fn rfc5424(&self, facility: u8, host: &str, body: Body) -> String {
        match self {
            Record::Usage(e) => rfc5424(e, facility, host, body),
            Record::Alert(c) => alert_rfc5424(c, facility, host, body),
        }
    }

    /// A stable document id (Elasticsearch `_id`): a re-send is the same document.
    pub fn doc_id(&self) -> String {
        match self {
            Record::Usage(e) => format!("{}-{}", e.workspace_id, e.id),
            Record::Alert(c) => format!("{}-alert-{}", c.workspace_id, c.seq),
        }
    }

    pub fn ts(&self) -> i64 {
        match self {
            Record::Usage(e) => e.ts,
            Record::Alert(c) => c.at,
        }
    }
}

/// ECS `event.severity` of an alert (a source-specific number: higher is worse).
fn alert_severity(severity: &str) -> u8 {
    match severity {
        "critical" => 9,
        "high" => 7,
        "medium" | "warning" => 5,
        _ => 3,
    }
}

/// An alert change as an ECS document (`event.kind: alert`, `rule.name`).
pub fn alert_ecs(c: &AlertChangeRow, host: &str) -> Value {
    let a = &c.body;
    let severity = a["severity"].as_str().unwrap_or("notice");
    let mut kw = Map::new();
    kw.insert("alert_id".into(), c.alert_id.clone().into());
    kw.insert("workspace_id".into(), c.workspace_id.clone().into());
    kw.insert("severity".into(), severity.into());
    kw.insert("status".into(), a["status"].clone());
    kw.insert("count".into(), a["count"].clone());
    for field in ["key_id", "key_hint", "keyspace_id", "owner_id"] {
        put(&mut kw, field, a["subject"].get(field).cloned());
    }
    let mut doc = json!({
        "@timestamp": to_rfc3339(c.at),
        "ecs": {"version": ECS_VERSION},
        "event": {
            "kind": "alert",
            "category": ["threat"],
            "type": ["indicator"],
            "action": format!("alert-{}", c.change),
            "severity": alert_severity(severity),
            "id": c.alert_id,
            "dataset": "keyward.alert",
            "reason": a["detail"],
        },
        "rule": {"name": a["rule"], "id": a["rule"]},
        "message": a["detail"],
        "host": {"name": host},
        "service": {"name": "keyward"},
        "keyward": kw,
    });
    if let (Value::Object(m), Some(ip)) = (&mut doc, a["subject"]["ip"].as_str()) {
        m.insert("source".into(), json!({"ip": ip}));
    }
    doc
}

/// An alert change as a CEF line.
pub fn alert_cef(c: &AlertChangeRow) -> String {
    let a = &c.body;
    let rule = a["rule"].as_str().unwrap_or("alert");
    let severity = a["severity"].as_str().unwrap_or("notice");
    let mut ext = vec![format!("rt={}", c.at), format!("externalId={}", c.alert_id), format!("act={}", c.change)];
    let text = |v: &Value| v.as_str().map(cef_ext);
    if let Some(ip) = text(&a["subject"]["ip"]) {
        ext.push(format!("src={ip}"));
    }
    if let Some(k) = text(&a["subject"]["key_id"]) {
        ext.push(format!("cs1={k} cs1Label=key_id"));
    }
    if let Some(d) = text(&a["detail"]) {
        ext.push(format!("reason={d}"));
    }
    format!(
        "CEF:0|keyward|keyward|{}|alert.{}|{}|{}|{}",
        cef_header(env!("CARGO_PKG_VERSION")),
        cef_header(rule),
        cef_header(&format!("keyward alert {}: {rule}", c.change)),
        alert_severity(severity) + 1,
        ext.join(" ")
    )
}

/// An alert change as an RFC 5424 message (MSGID `ALERT`).
pub fn alert_rfc5424(c: &AlertChangeRow, facility: u8, host: &str, body: Body) -> String {
    let a = &c.body;
    let severity = a["severity"].as_str().unwrap_or("notice");
    let level: u8 = match severity {
        "critical" => 2,
        "high" => 3,
        "medium" | "warning" => 4,
        _ => 5,
    };
    let pri = u16::from(facility) * 8 + u16::from(level);
    let mut sd = format!(
        "[{SD_ID} alert_id=\"{}\" change=\"{}\" rule=\"{}\" severity=\"{}\"",
        sd_escape(&c.alert_id),
        sd_escape(&c.change),
        sd_escape(a["rule"].as_str().unwrap_or("")),
        sd_escape(severity)
    );
    for (k, v) in [("key_id", &a["subject"]["key_id"]), ("src", &a["subject"]["ip"])] {
        if let Some(v) = v.as_str() {
            sd.push_str(&format!(" {k}=\"{}\"", sd_escape(v)));
        }
    }
    sd.push(']');
    let msg = match body {
        Body::Ecs => alert_ecs(c, host).to_string(),
        Body::Cef => alert_cef(c),
    };
    format!(
        "<{pri}>1 {} {} keyward {} ALERT {sd} {msg}",
        to_rfc3339(c.at),
        if host.is_empty() { "-" } else { host },
        std::process::id()
    )
}

/// The ECS version the documents follow.
pub const ECS_VERSION: &str = "8.11.0";

fn put(m: &mut Map<String, Value>, k: &str, v: Option<Value>) {
    if let Some(v) = v {
        m.insert(k.to_owned(), v);
    }
}

/// One event as an ECS document. keyward's own fields are under `keyward.*`.
pub fn ecs(e: &UsageEvent, host: &str) -> Value {
    let mut http_req = Map::new();
    put(&mut http_req, "method", e.method.clone().map(Value::from));
    put(&mut http_req, "bytes", e.bytes_in.map(Value::from));
    put(&mut http_req, "id", Some(Value::from(e.request_id.clone())));
    let mut http_res = Map::new();
    put(&mut http_res, "status_code", e.http_status.map(Value::from));
    put(&mut http_res, "bytes", e.bytes_out.map(Value::from));
    let mut kw = Map::new();
    kw.insert("code".into(), e.outcome.as_str().into());
    kw.insert("workspace_id".into(), e.workspace_id.clone().into());
    put(&mut kw, "keyspace_id", e.keyspace_id.clone().map(Value::from));
    put(&mut kw, "key_id", e.key_id.clone().map(Value::from));
    put(&mut kw, "key_hint", e.key_hint.clone().map(Value::from));
    put(&mut kw, "owner_id", e.owner_id.clone().map(Value::from));
    put(&mut kw, "fingerprint", e.fingerprint.clone().map(Value::from));
    put(&mut kw, "latency_us", e.latency_us.map(Value::from));
    kw.insert("event_id".into(), e.id.into());
    let mut doc = json!({
        "@timestamp": to_rfc3339(e.ts),
        "ecs": {"version": ECS_VERSION},
        "event": {
            "kind": "event",
            "category": ["authentication"],
            "type": [if e.outcome.is_valid() { "allowed" } else { "denied" }],
            "action": format!("key-{}", e.kind.as_str()),
            "outcome": if e.outcome.is_valid() { "success" } else { "failure" },
            "reason": e.outcome.as_str(),
            "id": e.id.to_string(),
            "dataset": "keyward.usage",
        },
        "host": {"name": host},
        "service": {"name": "keyward"},
        "http": {"request": http_req, "response": http_res},
        "keyward": kw,
    });
    if let Value::Object(m) = &mut doc {
        put(m, "source", e.source_ip.clone().map(|ip| json!({"ip": ip})));
        if let Some(Value::Object(source)) = m.get_mut("source") {
            put(source, "geo", e.country.clone().map(|c| json!({"country_iso_code": c})));
            if e.asn.is_some() || e.as_org.is_some() {
                let mut asn = Map::new();
                put(&mut asn, "number", e.asn.map(Value::from));
                put(&mut asn, "organization", e.as_org.clone().map(|o| json!({"name": o})));
                source.insert("as".into(), Value::Object(asn));
            }
        }
        put(m, "user_agent", e.user_agent.clone().map(|ua| json!({"original": ua})));
        put(m, "url", e.path.clone().map(|p| json!({"path": p})));
        put(m, "user", e.owner_id.clone().map(|o| json!({"id": o})));
        put(m, "error", e.error.clone().map(|msg| json!({"message": msg})));
    }
    if let Some(l) = e.latency_us {
        doc["event"]["duration"] = Value::from(l.saturating_mul(1000));
    }
    doc
}

/// Syslog severity: informational for admitted requests, warning for refusals,
/// error for a revoked or rotated key still in use.
pub fn severity(o: Outcome) -> u8 {
    match o {
        Outcome::Valid => 6,
        Outcome::Revoked | Outcome::Rotated => 3,
        _ => 4,
    }
}

/// Escapes an RFC 5424 SD-PARAM value: `"`, `\` and `]` get a backslash.
fn sd_escape(v: &str) -> String {
    let mut out = String::with_capacity(v.len());
    for c in v.chars() {
        if matches!(c, '"' | '\\' | ']') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// The structured-data ID under which keyward's fields travel. 32473 is the
/// private enterprise number set aside for documentation (RFC 5612).
pub const SD_ID: &str = "keyward@32473";

/// The body of a syslog message or a file line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Body {
    /// ECS JSON.
    Ecs,
    /// ArcSight Common Event Format.
    Cef,
}

/// One RFC 5424 message: `<PRI>1 TIMESTAMP HOST APP PROCID MSGID [SD] MSG`.
pub fn rfc5424(e: &UsageEvent, facility: u8, host: &str, body: Body) -> String {
    let pri = u16::from(facility) * 8 + u16::from(severity(e.outcome));
    let mut sd = format!("[{SD_ID} code=\"{}\" request_id=\"{}\"", e.outcome.as_str(), sd_escape(&e.request_id));
    let mut param = |k: &str, v: &Option<String>| {
        if let Some(v) = v {
            sd.push_str(&format!(" {k}=\"{}\"", sd_escape(v)));
        }
    };
    param("workspace_id", &Some(e.workspace_id.clone()));
    param("key_id", &e.key_id);
    param("key_hint", &e.key_hint);
    param("owner_id", &e.owner_id);
    param("src", &e.source_ip);
    param("method", &e.method);
    param("path", &e.path);
    param("fingerprint", &e.fingerprint);
    param("status", &e.http_status.map(|s| s.to_string()));
    sd.push(']');
    let msg = match body {
        Body::Ecs => ecs(e, host).to_string(),
        Body::Cef => cef(e),
    };
    format!(
        "<{pri}>1 {} {} keyward {} {} {sd} {msg}",
        to_rfc3339(e.ts),
        if host.is_empty() { "-" } else { host },
        std::process::id(),
        e.outcome.as_str()
    )
}

fn cef_header(v: &str) -> String {
    v.replace('\\', "\\\\").replace('|', "\\|")
}

fn cef_ext(v: &str) -> String {
    v.replace('\\', "\\\\").replace('=', "\\=").replace('\n', "\\n").replace('\r', "\\r")
}

/// One CEF line: `CEF:0|keyward|keyward|VERSION|CODE|NAME|SEVERITY|EXTENSIONS`.
pub fn cef(e: &UsageEvent) -> String {
    let sev = match e.outcome {
        Outcome::Valid => 1,
        Outcome::Revoked | Outcome::Rotated => 8,
        Outcome::Malformed | Outcome::NotFound => 5,
        _ => 3,
    };
    let name = if e.outcome.is_valid() { "API key accepted" } else { "API key refused" };
    let mut ext =
        vec![format!("rt={}", e.ts), format!("outcome={}", e.outcome.as_str()), format!("externalId={}", e.id)];
    let mut add = |k: &str, v: &Option<String>| {
        if let Some(v) = v {
            ext.push(format!("{k}={}", cef_ext(v)));
        }
    };
    add("src", &e.source_ip);
    add("requestMethod", &e.method);
    add("request", &e.path);
    add("requestClientApplication", &e.user_agent);
    add("suser", &e.owner_id);
    add("cs1", &e.key_id);
    add("cs2", &e.keyspace_id);
    add("cs3", &Some(e.request_id.clone()));
    add("cs4", &e.fingerprint);
    add("reason", &e.error);
    ext.push("cs1Label=key_id cs2Label=keyspace_id cs3Label=request_id cs4Label=fingerprint".into());
    if let Some(s) = e.http_status {
        ext.push(format!("cn1={s} cn1Label=http_status"));
    }
    if let Some(b) = e.bytes_in {
        ext.push(format!("in={b}"));
    }
    if let Some(b) = e.bytes_out {
        ext.push(format!("out={b}"));
    }
    format!(
        "CEF:0|keyward|keyward|{}|{}|{}|{}|{}",
        cef_header(env!("CARGO_PKG_VERSION")),
        cef_header(e.outcome.as_str()),
        cef_header(name),
        sev,
        ext.join(" ")
    )
}

#[cfg(test)]
mod tests {
    use keyward_core::event::EventKind;

    use super::*;

    fn ev() -> UsageEvent {
        UsageEvent {
            id: 42,
            ts: 1_700_000_000_123,
            kind: EventKind::Verify,
            request_id: "req_1".into(),
            workspace_id: "ws_1".into(),
            keyspace_id: Some("ks_1".into()),
            key_id: Some("key_1".into()),
            key_hint: Some("kw_live_…abcd".into()),
            owner_id: Some("ac\"me]".into()),
            fingerprint: None,
            source_ip: Some("192.0.2.1".into()),
            user_agent: Some("curl/8".into()),
            method: Some("GET".into()),
            path: Some("/a=b|c".into()),
            outcome: Outcome::RateLimited,
            http_status: Some(429),
            error: Some("rate limit".into()),
            bytes_in: Some(10),
            bytes_out: Some(20),
            latency_us: Some(1500),
            country: None,
            asn: None,
            as_org: None,
            deprecated: false,
            scopes: Vec::new(),
        }
    }

    #[test]
    fn ecs_fields() {
        let d = ecs(&ev(), "h");
        assert_eq!(d["@timestamp"], "2023-11-14T22:13:20.123Z");
        assert_eq!(d["event"]["outcome"], "failure");
        assert_eq!(d["event"]["reason"], "RATE_LIMITED");
        assert_eq!(d["event"]["duration"], 1_500_000);
        assert_eq!(d["source"]["ip"], "192.0.2.1");
        assert_eq!(d["http"]["response"]["status_code"], 429);
        assert_eq!(d["keyward"]["key_id"], "key_1");
    }

    #[test]
    fn rfc5424_line_escapes_structured_data() {
        let line = rfc5424(&ev(), 16, "host1", Body::Cef);
        assert!(line.starts_with("<132>1 2023-11-14T22:13:20.123Z host1 keyward "), "{line}");
        assert!(line.contains(" RATE_LIMITED [keyward@32473 code=\"RATE_LIMITED\""), "{line}");
        assert!(line.contains(r#"owner_id="ac\"me\]""#), "{line}");
        assert!(line.contains("CEF:0|keyward|keyward|"));
    }

    #[test]
    fn cef_escapes() {
        let c = cef(&ev());
        assert!(c.contains("|RATE_LIMITED|API key refused|3|"), "{c}");
        assert!(c.contains(r"request=/a\=b|c"), "{c}");
        assert!(c.contains("cn1=429"));
    }

    #[test]
    fn alert_changes_in_each_format() {
        let c = AlertChangeRow {
            seq: 7,
            workspace_id: "ws_1".into(),
            alert_id: "alr_1".into(),
            change: "escalated".into(),
            at: 1_700_000_000_123,
            body: json!({"rule": "enumeration", "severity": "high", "status": "open", "count": 21,
                "detail": "21 distinct invalid keys in 10 min (above 20)", "subject": {"kind": "ip", "ip": "192.0.2.50"}}),
        };
        let doc = alert_ecs(&c, "h");
        assert_eq!((doc["event"]["kind"].as_str(), doc["rule"]["name"].as_str()), (Some("alert"), Some("enumeration")));
        assert_eq!((doc["source"]["ip"].as_str(), doc["event"]["severity"].as_u64()), (Some("192.0.2.50"), Some(7)));
        let line = alert_rfc5424(&c, 16, "h", Body::Ecs);
        assert!(line.starts_with("<131>1 "), "local0.err: {line}");
        assert!(
            line.contains(" ALERT [keyward@32473 alert_id=\"alr_1\" change=\"escalated\" rule=\"enumeration\""),
            "{line}"
        );
        let cef = alert_cef(&c);
        assert!(
            cef.starts_with("CEF:0|keyward|keyward|")
                && cef.contains("|alert.enumeration|")
                && cef.contains("src=192.0.2.50"),
            "{cef}"
        );
        assert_eq!(Record::Alert(c).doc_id(), "ws_1-alert-7");
    }
}
