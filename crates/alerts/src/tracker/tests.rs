use super::*;

const T0: i64 = 1_796_162_400_000;

fn finding(rule: RuleId, severity: Severity, key: &str, ts: i64, event: i64) -> Finding {
    Finding {
        workspace_id: "ws".into(),
        rule,
        severity,
        subject: Subject::Key { key_id: key.into(), key_hint: None, keyspace_id: None, owner_id: None },
        value: 1.0,
        threshold: 0.0,
        window_ms: None,
        detail: format!("{severity:?}"),
        event_id: Some(event),
        ts,
    }
}

fn kinds(changes: &[Change]) -> Vec<ChangeKind> {
    changes.iter().map(|c| c.kind).collect()
}

#[test]
fn an_ongoing_attack_updates_one_alert_and_escalates_it() {
    let mut t = Tracker::new(TrackerConfig::default());
    let opened = t.apply(finding(RuleId::RequestsPerMinute, Severity::Warning, "k", T0, 501), T0).unwrap();
    assert_eq!(opened.kind, ChangeKind::Opened);
    for i in 0..400 {
        assert_eq!(t.apply(finding(RuleId::RequestsPerMinute, Severity::Warning, "k", T0 + i, 502 + i), T0 + i), None);
    }
    let escalated =
        t.apply(finding(RuleId::RequestsPerMinute, Severity::Critical, "k", T0 + 500, 1001), T0 + 500).unwrap();
    assert_eq!((escalated.kind, escalated.previous), (ChangeKind::Escalated, Some(Severity::Warning)));
    assert_eq!(escalated.alert.id, opened.alert.id, "one alert, not a second");
    assert_eq!(escalated.alert.count, 402);
    assert_eq!(escalated.alert.event_ids.len(), 20);
    // Lower findings after the escalation keep the severity.
    assert_eq!(t.apply(finding(RuleId::RequestsPerMinute, Severity::Warning, "k", T0 + 600, 1100), T0 + 600), None);
    let updates = t.tick(T0 + 2000);
    assert_eq!(kinds(&updates), [ChangeKind::Updated]);
    assert_eq!(updates[0].alert.severity, Severity::Critical);
    assert_eq!(t.tick(T0 + 2100), vec![], "nothing new to write");
    // Another subject or rule is another alert.
    assert!(t.apply(finding(RuleId::RequestsPerMinute, Severity::Warning, "k2", T0, 1), T0).is_some());
    assert!(t.apply(finding(RuleId::NewIp, Severity::Medium, "k", T0, 2), T0).is_some());
    assert_eq!(t.len(), 3);
}

#[test]
fn quiet_alerts_resolve_themselves_and_come_back_within_the_cooldown() {
    let cfg = TrackerConfig::default();
    let mut t = Tracker::new(cfg.clone());
    let opened = t.apply(finding(RuleId::FailedAuthPerKey, Severity::Warning, "k", T0, 1), T0).unwrap();
    let leak = t.apply(finding(RuleId::Leak, Severity::Critical, "k", T0, 2), T0).unwrap();
    assert_eq!(t.tick(T0 + cfg.quiet_ms), vec![]);
    let resolved = t.tick(T0 + cfg.quiet_ms + 1);
    assert_eq!(kinds(&resolved), [ChangeKind::Resolved], "the leak waits for a person");
    assert_eq!(resolved[0].alert.resolved_by.as_deref(), Some("auto"));
    // Within the cooldown: the same alert, reopened.
    let at = T0 + cfg.quiet_ms + 60_000;
    let again = t.apply(finding(RuleId::FailedAuthPerKey, Severity::Warning, "k", at, 3), at).unwrap();
    assert_eq!((again.kind, again.alert.id.as_str()), (ChangeKind::Reopened, opened.alert.id.as_str()));
    assert_eq!(again.alert.status, AlertStatus::Open);
    // Resolved again, and past the cooldown: a new alert.
    let later = at + cfg.quiet_ms + 1;
    assert_eq!(kinds(&t.tick(later)), [ChangeKind::Resolved]);
    let past = later + cfg.cooldown_ms + 1;
    t.tick(past);
    let fresh = t.apply(finding(RuleId::FailedAuthPerKey, Severity::Warning, "k", past, 4), past).unwrap();
    assert_eq!(fresh.kind, ChangeKind::Opened);
    assert_ne!(fresh.alert.id, opened.alert.id);
    assert_eq!(t.alerts.values().filter(|x| x.alert.id == leak.alert.id).count(), 1);
}

#[test]
fn an_acknowledged_alert_opens_again_when_it_escalates() {
    let mut t = Tracker::new(TrackerConfig::default());
    let opened = t.apply(finding(RuleId::SharedIps, Severity::Medium, "k", T0, 1), T0).unwrap();
    let mut acked = opened.alert.clone();
    acked.status = AlertStatus::Acknowledged;
    acked.acknowledged_by = Some("rk_1".into());
    t.follow(acked);
    assert_eq!(t.apply(finding(RuleId::SharedIps, Severity::Medium, "k", T0 + 1, 2), T0 + 1), None);
    let up = t.apply(finding(RuleId::SharedIps, Severity::High, "k", T0 + 2, 3), T0 + 2).unwrap();
    assert_eq!((up.kind, up.alert.status), (ChangeKind::Escalated, AlertStatus::Open));
    assert_eq!(up.alert.acknowledged_by.as_deref(), Some("rk_1"), "who acknowledged stays on record");
}

#[test]
fn a_restart_takes_up_stored_alerts() {
    let mut t = Tracker::new(TrackerConfig::default());
    let opened = t.apply(finding(RuleId::UsedAfterEnd, Severity::High, "k", T0, 1), T0).unwrap();
    let mut restarted = Tracker::new(TrackerConfig::default());
    restarted.load([opened.alert.clone()]);
    assert_eq!(restarted.apply(finding(RuleId::UsedAfterEnd, Severity::High, "k", T0 + 5, 2), T0 + 5), None);
    let flushed = restarted.flush(T0 + 6);
    assert_eq!(flushed.len(), 1);
    assert_eq!((flushed[0].alert.id.as_str(), flushed[0].alert.count), (opened.alert.id.as_str(), 2));
}
