use super::*;

/// The defaults are the table of PRODUCT.md, "Default alert rules".
#[test]
fn defaults_follow_the_product_table() {
    let rules = RuleSet::default();
    let check = |rule: RuleId, window: Option<i64>, expect: &[(Severity, f64)]| {
        let s = rules.get(rule);
        assert!(s.enabled, "{rule:?}");
        assert_eq!(s.window_ms, window, "{rule:?}");
        assert_eq!(s.levels, levels(expect), "{rule:?}");
    };
    use Severity::*;
    check(RuleId::RequestsPerMinute, Some(MINUTE), &[(Warning, 500.0), (Critical, 1000.0)]);
    check(RuleId::RequestsPer5Minutes, Some(5 * MINUTE), &[(High, 500.0)]);
    check(RuleId::DeniedRate, Some(5 * MINUTE), &[(Warning, 5.0), (Critical, 10.0)]);
    check(RuleId::ServerErrorRate, Some(5 * MINUTE), &[(Warning, 5.0), (Critical, 10.0)]);
    check(RuleId::DataTransfer, Some(HOUR), &[(Warning, 500e6), (Critical, 1e9)]);
    check(RuleId::FailedAuthPerKey, Some(HOUR), &[(Warning, 10.0), (Critical, 50.0)]);
    check(RuleId::FailedAuthPerIp, Some(HOUR), &[(Warning, 10.0), (Critical, 50.0)]);
    check(RuleId::NewIp, None, &[(Medium, 0.0)]);
    check(RuleId::RotationOverlapUse, None, &[(Notice, 0.0)]);
    check(RuleId::UsedAfterEnd, None, &[(High, 0.0)]);
    check(RuleId::Enumeration, Some(10 * MINUTE), &[(High, 20.0)]);
    check(RuleId::OffHours, None, &[(Medium, 0.0)]);
    check(RuleId::Leak, None, &[(Critical, 0.0)]);
    check(RuleId::Expiring, None, &[(Notice, 0.0)]);
    check(RuleId::RevocationCheckFailed, None, &[(Critical, 0.0)]);
    check(RuleId::Baseline, None, &[(Medium, 0.0)]);
    assert_eq!(rules.get(RuleId::DeniedRate).min_requests, Some(20));
    assert_eq!(rules.get(RuleId::NewIp).lookback_ms, Some(30 * DAY));
    assert_eq!(RuleId::ALL.len(), rules.iter().count());
    for (i, r) in RuleId::ALL.iter().enumerate() {
        assert_eq!(*r as usize, i);
        assert_eq!(RuleId::parse(r.as_str()), Some(*r));
        assert_eq!(serde_json::to_value(r).unwrap(), r.as_str());
    }
}

#[test]
fn overrides_change_only_what_they_name() {
    let base = RuleSet::default();
    let mut ws = Overrides::new();
    ws.insert(
        RuleId::RequestsPerMinute,
        RulePatch { levels: Some(levels(&[(Severity::Critical, 50.0)])), ..Default::default() },
    );
    ws.insert(RuleId::NewIp, RulePatch { enabled: Some(false), ..Default::default() });
    let mut key = Overrides::new();
    key.insert(RuleId::NewIp, RulePatch { enabled: Some(true), learning_ms: Some(0), ..Default::default() });
    let patched = base.patched(&ws).patched(&key);
    assert_eq!(patched.get(RuleId::RequestsPerMinute).levels, levels(&[(Severity::Critical, 50.0)]));
    assert_eq!(patched.get(RuleId::RequestsPerMinute).window_ms, Some(MINUTE), "untouched");
    assert!(patched.get(RuleId::NewIp).enabled);
    assert_eq!(patched.get(RuleId::NewIp).learning_ms, Some(0));
    assert_eq!(patched.get(RuleId::NewIp).lookback_ms, Some(30 * DAY));
    assert!(!base.patched(&ws).get(RuleId::NewIp).enabled);
}

#[test]
fn bad_overrides_are_named() {
    let parse = |json: &str| serde_json::from_str::<Overrides>(json).map_err(|e| e.to_string());
    assert!(parse(r#"{"nope": {}}"#).unwrap_err().contains("unknown variant"));
    assert!(parse(r#"{"leak": {"treshold": 1}}"#).unwrap_err().contains("unknown field"));
    let check = |json: &str, expect: &str| {
        let p = problems(&parse(json).unwrap());
        assert!(p.iter().any(|m| m.contains(expect)), "{json}: {p:?}");
    };
    check(r#"{"leak": {"window_ms": 60000}}"#, "rules.leak.window_ms: does not apply");
    check(r#"{"requests_per_minute": {"window_ms": 10}}"#, "window_ms: must be between");
    check(r#"{"requests_per_minute": {"levels": []}}"#, "give 1 to 4 levels");
    check(
        r#"{"requests_per_minute": {"levels": [{"severity": "critical", "above": 10}, {"severity": "warning", "above": 5}]}}"#,
        "levels must rise",
    );
    check(r#"{"denied_rate": {"levels": [{"severity": "high", "above": 150}]}}"#, "at most 100");
    check(
        r#"{"off_hours": {"business_hours": {"start": "9", "end": "17:00", "weekdays": ["mon"], "utc_offset": "+01:00"}}}"#,
        "HH:MM",
    );
    check(
        r#"{"off_hours": {"business_hours": {"start": "09:00", "end": "17:00", "weekdays": ["monday"], "utc_offset": "CET"}}}"#,
        "weekdays",
    );
    check(r#"{"baseline": {"factor": 0.5}}"#, "factor: must be above 1");
    assert!(problems(&parse(r#"{"new_ip": {"enabled": false}, "requests_per_minute": {"levels": [{"severity": "high", "above": 100}]}}"#).unwrap()).is_empty());
}

#[test]
fn business_hours_follow_the_offset_and_the_weekdays() {
    let hours = BusinessHours { utc_offset: "+02:00".into(), ..BusinessHours::default() };
    // 2026-12-01 was a Tuesday.
    let tuesday = keyward_core::time::parse_rfc3339("2026-12-01T00:00:00Z").unwrap();
    let at = |h: i64, m: i64| tuesday + h * HOUR + m * MINUTE;
    assert!(!hours.contains(at(5, 59)), "07:59 local");
    assert!(hours.contains(at(6, 0)), "08:00 local");
    assert!(hours.contains(at(15, 59)), "17:59 local");
    assert!(!hours.contains(at(16, 0)), "18:00 local");
    assert!(!hours.contains(at(4 * 24 + 10, 0)), "Saturday");
    assert!(!BusinessHours::default().contains(at(-2, 0)), "Monday 22:00 UTC is off hours");
    // An IANA zone follows daylight saving: 07:30 UTC is 08:30 in Berlin in December
    // (UTC+1) and 09:30 in July (UTC+2); 06:30 UTC is before business in winter only.
    let berlin = BusinessHours { time_zone: Some("Europe/Berlin".into()), ..BusinessHours::default() };
    assert!(berlin.contains(at(7, 30)));
    assert!(!berlin.contains(at(6, 30)), "07:30 in Berlin in winter");
    let july = keyward_core::time::parse_rfc3339("2026-07-07T06:30:00Z").unwrap();
    assert!(berlin.contains(july), "08:30 in Berlin in summer");
    let bad: Overrides = serde_json::from_str(
        r#"{"off_hours": {"business_hours": {"start": "08:00", "end": "18:00", "weekdays": ["mon"], "time_zone": "Mars/Olympus"}}}"#,
    )
    .unwrap();
    assert!(problems(&bad).iter().any(|m| m.contains("time_zone")), "{:?}", problems(&bad));
}

#[test]
fn levels_and_sensitive_scopes() {
    let l = levels(&[(Severity::Warning, 500.0), (Severity::Critical, 1000.0)]);
    assert_eq!(level_for(&l, 500.0), None);
    assert_eq!(level_for(&l, 501.0).unwrap().severity, Severity::Warning);
    assert_eq!(level_for(&l, 1001.0).unwrap().severity, Severity::Critical);
    let sensitive = vec!["admin".to_owned(), "billing:*".to_owned()];
    assert!(is_sensitive("admin", &sensitive) && is_sensitive("billing:refund", &sensitive));
    assert!(!is_sensitive("read", &sensitive) && !is_sensitive("billingx", &sensitive));
}
