use super::*;
use keyward_core::event::EventKind;

const T0: i64 = 1_796_162_400_000; // 2026-12-01T22:00:00Z, a Tuesday

fn event(ts: i64, key: Option<&str>, ip: &str, outcome: Outcome) -> UsageEvent {
    UsageEvent {
        id: 0,
        ts,
        kind: EventKind::Verify,
        request_id: format!("req_{ts}"),
        workspace_id: "ws".into(),
        keyspace_id: key.map(|_| "ks".into()),
        key_id: key.map(str::to_owned),
        key_hint: key.map(|k| format!("kw_live_…{}", &k[k.len() - 2..])),
        owner_id: None,
        fingerprint: None,
        source_ip: Some(ip.to_owned()),
        user_agent: Some("client/1.0".into()),
        method: None,
        path: None,
        outcome,
        http_status: None,
        error: None,
        bytes_in: None,
        bytes_out: None,
        latency_us: None,
        country: None,
        asn: None,
        as_org: None,
        deprecated: false,
        scopes: Vec::new(),
    }
}

fn valid(ts: i64, key: &str, ip: &str) -> UsageEvent {
    event(ts, Some(key), ip, Outcome::Valid)
}

/// Feeds events, numbering them from 1; returns every finding.
fn feed(engine: &mut Engine, events: impl IntoIterator<Item = UsageEvent>) -> Vec<Finding> {
    let mut out = Vec::new();
    for (n, mut e) in events.into_iter().enumerate() {
        e.id = n as i64 + 1;
        engine.observe(&e, &mut out);
    }
    out
}

/// Feeds events; returns every finding as (rule, severity, subject name).
fn run(engine: &mut Engine, events: impl IntoIterator<Item = UsageEvent>) -> Vec<(RuleId, Severity, String)> {
    feed(engine, events).into_iter().map(|f| (f.rule, f.severity, f.subject.name())).collect()
}

/// The number (from 1) of the first event for which `rule` fired.
fn first(findings: &[Finding], rule: RuleId) -> Option<i64> {
    findings.iter().find(|f| f.rule == rule).and_then(|f| f.event_id)
}

/// The distinct (rule, severity) pairs that fired, sorted.
fn fired(findings: &[(RuleId, Severity, String)]) -> Vec<(RuleId, Severity)> {
    let mut v: Vec<(RuleId, Severity)> = findings.iter().map(|(r, s, _)| (*r, *s)).collect();
    v.sort_by_key(|(r, s)| (*r, s.rank()));
    v.dedup();
    v
}

fn engine() -> Engine {
    Engine::new(EngineConfig::default())
}

/// A key that has been in use from its usual address for longer than any learning period.
fn seasoned(engine: &mut Engine, key: &str, ip: &str) {
    let quiet = (0..24 * 9).map(|h| valid(T0 - (24 * 9 - h) * HOUR, key, ip));
    assert_eq!(run(engine, quiet), vec![], "a quiet key raises nothing");
}

#[test]
fn normal_traffic_raises_nothing() {
    let mut e = engine();
    // Nine days and an hour of 60 requests an hour from two addresses, one in fifty refused.
    let events = (0..(9 * 24 + 1) * 60).map(|i| {
        let ip = if i % 2 == 0 { "203.0.113.7" } else { "203.0.113.8" };
        let outcome = if i % 50 == 0 { Outcome::RateLimited } else { Outcome::Valid };
        let mut ev = event(T0 - 9 * 24 * HOUR + i * 60_000, Some("key_a1"), ip, outcome);
        ev.http_status = Some(if i % 100 == 0 { 500 } else { 200 });
        ev.bytes_out = Some(20_000);
        ev
    });
    let findings = run(&mut e, events);
    assert_eq!(fired(&findings), []);
}

#[test]
fn request_floods_cross_each_level_once_per_event_past_it() {
    let mut e = engine();
    seasoned(&mut e, "key_b1", "198.51.100.1");
    // 1,100 requests in 44 seconds.
    let findings = feed(&mut e, (0..1100).map(|i| valid(T0 + i * 40, "key_b1", "198.51.100.1")));
    let f = fired(&findings.iter().map(|f| (f.rule, f.severity, f.subject.name())).collect::<Vec<_>>());
    assert!(f.contains(&(RuleId::RequestsPerMinute, Severity::Warning)), "{f:?}");
    assert!(f.contains(&(RuleId::RequestsPerMinute, Severity::Critical)), "{f:?}");
    assert!(f.contains(&(RuleId::RequestsPer5Minutes, Severity::High)), "{f:?}");
    // The 501st request of the minute is the first over 500, the 1,001st over 1,000.
    assert_eq!(first(&findings, RuleId::RequestsPerMinute), Some(501));
    let critical = findings.iter().find(|f| f.severity == Severity::Critical).unwrap();
    assert_eq!(critical.event_id, Some(1001));
    assert_eq!(critical.detail, "1,001 requests in 1 min (above 1,000)");
    assert!(findings.iter().all(|f| f.subject.name() == "key:key_b1"));
}

#[test]
fn invalid_keys_from_one_address_are_failed_auth_and_enumeration() {
    let mut e = engine();
    let events = (0..60).map(|i| {
        let mut ev = event(T0 + i * 1000, None, "192.0.2.66", Outcome::NotFound);
        ev.fingerprint = Some(format!("fp{i}"));
        ev
    });
    let findings = run(&mut e, events);
    let f = fired(&findings);
    assert!(f.contains(&(RuleId::FailedAuthPerIp, Severity::Warning)));
    assert!(f.contains(&(RuleId::FailedAuthPerIp, Severity::Critical)));
    assert!(f.contains(&(RuleId::Enumeration, Severity::High)));
    assert!(f.contains(&(RuleId::DeniedBurstIp, Severity::Medium)));
    assert!(findings.iter().all(|(_, _, s)| s == "ip:192.0.2.66"));
    // The same wrong string over and over is failed auth, not enumeration.
    let mut e = engine();
    let same = (0..30).map(|i| {
        let mut ev = event(T0 + i * 1000, None, "192.0.2.67", Outcome::NotFound);
        ev.fingerprint = Some("same".into());
        ev
    });
    assert!(!fired(&run(&mut e, same)).iter().any(|(r, _)| *r == RuleId::Enumeration));
}

#[test]
fn denied_and_server_error_rates_count_apart_after_the_minimum() {
    let mut e = engine();
    seasoned(&mut e, "key_c1", "198.51.100.2");
    // 19 requests with 5 refused: under the minimum volume of 20 in the window...
    let mut events: Vec<UsageEvent> = (0..40)
        .map(|i| {
            event(
                T0 + i * 1000,
                Some("key_c1"),
                "198.51.100.2",
                if i % 8 == 0 { Outcome::Forbidden } else { Outcome::Valid },
            )
        })
        .collect();
    for (i, ev) in events.iter_mut().enumerate() {
        ev.http_status = Some(if i % 5 == 0 { 503 } else { 200 });
    }
    let f = fired(&run(&mut e, events));
    // 5 of 40 refused (12.5 %), 8 of 40 statuses 5xx (20 %).
    assert!(f.contains(&(RuleId::DeniedRate, Severity::Critical)), "{f:?}");
    assert!(f.contains(&(RuleId::ServerErrorRate, Severity::Critical)), "{f:?}");
    // Under 20 requests nothing counts as a rate.
    let mut e = engine();
    seasoned(&mut e, "key_c2", "198.51.100.3");
    let few = (0..5).map(|i| event(T0 + i, Some("key_c2"), "198.51.100.3", Outcome::Forbidden));
    assert!(!fired(&run(&mut e, few)).iter().any(|(r, _)| *r == RuleId::DeniedRate));
}

#[test]
fn reported_bytes_and_statuses_count_too() {
    let mut e = engine();
    seasoned(&mut e, "key_d1", "198.51.100.4");
    let mut out = Vec::new();
    for i in 0..20 {
        e.report("ws", "key_d1", Some(200), 100_000_000, T0 + i * 1000, &mut out);
    }
    let f: Vec<(RuleId, Severity)> = out.iter().map(|f| (f.rule, f.severity)).collect();
    assert!(f.contains(&(RuleId::DataTransfer, Severity::Warning)), "{f:?}");
    assert!(f.contains(&(RuleId::DataTransfer, Severity::Critical)), "{f:?}");
    assert!(out.iter().any(|f| f.detail.contains("bytes transferred in 1 h")), "{out:?}");
}

#[test]
fn new_addresses_are_learned_silently_at_first_and_remembered_across_a_restart() {
    let mut e = engine();
    // A brand-new key: its first day's addresses are learned.
    let first_day = (0..5).map(|i| valid(T0 + i * HOUR, "key_e1", &format!("198.51.100.{}", 10 + i)));
    assert_eq!(run(&mut e, first_day), vec![]);
    // After the learning period, a known address is quiet and a new one is medium.
    let later = T0 + 2 * 24 * HOUR;
    assert_eq!(run(&mut e, [valid(later, "key_e1", "198.51.100.12")]), vec![]);
    let f = run(&mut e, [valid(later + 1, "key_e1", "203.0.113.99")]);
    assert_eq!(f, [(RuleId::NewIp, Severity::Medium, "key:key_e1".to_owned())]);
    // Persisted, then a new engine (a restart) reads it back: no storm.
    let learned = e.take_learned();
    let saved: HashMap<String, Learned> = learned.into_iter().map(|(id, _, l)| (id, l)).collect();
    let mut restarted = engine();
    restarted.set_loader(Box::new(move |id| saved.get(id).cloned()));
    let again = (0..5).map(|i| valid(later + 10 + i, "key_e1", &format!("198.51.100.{}", 10 + i)));
    assert_eq!(run(&mut restarted, again), vec![]);
    // An address last seen more than 30 days ago is new again.
    let f = run(&mut restarted, [valid(later + 31 * 24 * HOUR, "key_e1", "198.51.100.10")]);
    assert_eq!(fired(&f), [(RuleId::NewIp, Severity::Medium)]);
}

#[test]
fn rotation_and_revocation_uses() {
    let mut e = engine();
    let mut overlap = valid(T0, "key_f1", "198.51.100.5");
    overlap.deprecated = true;
    assert_eq!(fired(&run(&mut e, [overlap])), [(RuleId::RotationOverlapUse, Severity::Notice)]);
    let after = [
        event(T0 + 1, Some("key_f1"), "198.51.100.5", Outcome::Rotated),
        event(T0 + 2, Some("key_f2"), "198.51.100.5", Outcome::Revoked),
    ];
    let f = run(&mut e, after);
    assert!(f.contains(&(RuleId::UsedAfterEnd, Severity::High, "key:key_f1".into())), "{f:?}");
    assert!(f.contains(&(RuleId::UsedAfterEnd, Severity::High, "key:key_f2".into())), "{f:?}");
}

#[test]
fn sensitive_scopes_outside_business_hours() {
    let mut e = engine();
    let mut rules = Overrides::new();
    rules
        .insert(RuleId::OffHours, RulePatch { sensitive_scopes: Some(vec!["billing:*".into()]), ..Default::default() });
    let set = Arc::new(RuleSet::default().patched(&rules));
    e.set_rules(RuleBook { keyspaces: HashMap::from([("ks".to_owned(), set)]), ..RuleBook::default() });
    let at = |ts: i64, scope: &str| {
        let mut ev = valid(ts, "key_g1", "198.51.100.6");
        ev.scopes = vec![scope.to_owned()];
        ev
    };
    // T0 is 22:00 UTC on a Tuesday: off hours.
    assert_eq!(fired(&run(&mut e, [at(T0, "billing:refund")])), [(RuleId::OffHours, Severity::Medium)]);
    assert_eq!(run(&mut e, [at(T0 + 1, "read")]), vec![]);
    assert_eq!(run(&mut e, [at(T0 + 12 * HOUR, "billing:refund")]), vec![], "10:00 on Wednesday");
}

use crate::rules::{Overrides, RulePatch};

#[test]
fn volume_far_above_the_learned_hour() {
    let mut e = engine();
    // Eight days of 10 requests an hour.
    let history =
        (0..8 * 24).flat_map(|h| (0..10).map(move |i| valid(T0 + h * HOUR + i * 60_000, "key_h1", "198.51.100.7")));
    assert_eq!(run(&mut e, history), vec![]);
    // Then 150 in an hour: 3 × 10 is exceeded once 100 (the minimum) are in.
    let spike = (0..150).map(|i| valid(T0 + 8 * 24 * HOUR + i * 20_000, "key_h1", "198.51.100.7"));
    let findings = feed(&mut e, spike);
    assert!(findings.iter().all(|f| f.rule == RuleId::Baseline && f.severity == Severity::Medium));
    assert_eq!(first(&findings, RuleId::Baseline), Some(100), "fires at the 100th request of the hour");
    assert!(findings[0].detail.contains("10.0× the learned 10"), "{}", findings[0].detail);
}

#[test]
fn one_key_from_many_places() {
    let mut e = engine();
    seasoned(&mut e, "key_i1", "198.51.100.8");
    let shared = (0..60).map(|i| {
        let mut ev = valid(T0 + i * 1000, "key_i1", &format!("10.{}.{}.1", i % 7, i));
        ev.user_agent = Some(format!("agent/{}", i % 9));
        ev
    });
    let f = fired(&run(&mut e, shared));
    for expect in [
        (RuleId::SharedIps, Severity::Medium),
        (RuleId::SharedIps, Severity::High),
        (RuleId::SharedUserAgents, Severity::Medium),
        (RuleId::SharedNetworks, Severity::Medium),
        (RuleId::NewIp, Severity::Medium),
    ] {
        assert!(f.contains(&expect), "{expect:?} missing from {f:?}");
    }
}

#[test]
fn signals_and_switched_off_rules() {
    let mut e = engine();
    let key = Subject::Key { key_id: "key_j1".into(), key_hint: None, keyspace_id: Some("ks".into()), owner_id: None };
    let mut out = Vec::new();
    e.signal(
        Signal::Leak { workspace_id: "ws".into(), subject: key.clone(), source: "github".into(), ts: T0 },
        &mut out,
    );
    e.signal(
        Signal::RevocationCheckFailed { workspace_id: "ws".into(), subject: key.clone(), code: "VALID".into(), ts: T0 },
        &mut out,
    );
    for i in 0..25 {
        e.signal(Signal::RootAuthFailure { workspace_id: "ws".into(), ip: "192.0.2.9".into(), ts: T0 + i }, &mut out);
    }
    let f: Vec<(RuleId, Severity)> = out.iter().map(|f| (f.rule, f.severity)).collect();
    assert_eq!(&f[..2], [(RuleId::Leak, Severity::Critical), (RuleId::RevocationCheckFailed, Severity::Critical)]);
    assert_eq!(f[2..], [(RuleId::RootAuthFailures, Severity::High); 5], "the 21st to the 25th failure");
    // Switched off for the workspace: nothing.
    let mut off = Overrides::new();
    off.insert(RuleId::Leak, RulePatch { enabled: Some(false), ..Default::default() });
    e.set_rules(RuleBook {
        workspaces: HashMap::from([("ws".to_owned(), Arc::new(RuleSet::default().patched(&off)))]),
        ..RuleBook::default()
    });
    let mut out = Vec::new();
    e.signal(Signal::Leak { workspace_id: "ws".into(), subject: key, source: "x".into(), ts: T0 }, &mut out);
    assert!(out.is_empty());
}

#[test]
fn state_is_bounded_and_idle_state_is_swept() {
    let mut e = Engine::new(EngineConfig { max_keys: 100, max_ips: 50 });
    let events = (0..1000).map(|i| {
        let mut ev =
            event(T0 + i, Some(&format!("key_{i:04}")), &format!("10.0.{}.{}", i / 250, i % 250), Outcome::Disabled);
        ev.fingerprint = None;
        ev
    });
    run(&mut e, events);
    let (keys, ips) = e.sizes();
    assert!(keys <= 100 && ips <= 50, "{keys} keys, {ips} addresses");
    assert!(!e.take_learned().is_empty(), "dropped keys' learned state is handed over for persistence");
    e.sweep(T0 + 10 * HOUR, HOUR);
    assert_eq!(e.sizes(), (0, 0));
}
