use super::*;
use crate::event::EventKind;

fn event(outcome: Outcome, ip: &str, status: Option<u16>, latency_us: Option<u64>) -> UsageEvent {
    UsageEvent {
        id: 0,
        ts: 0,
        kind: EventKind::Verify,
        request_id: "r".into(),
        workspace_id: "ws".into(),
        keyspace_id: None,
        key_id: None,
        key_hint: None,
        owner_id: None,
        fingerprint: None,
        source_ip: Some(ip.into()),
        user_agent: None,
        method: None,
        path: None,
        outcome,
        http_status: status,
        error: None,
        bytes_in: Some(10),
        bytes_out: Some(100),
        latency_us,
        country: None,
        asn: None,
        as_org: None,
        deprecated: false,
        scopes: Vec::new(),
    }
}

#[test]
fn events_count_by_outcome_status_bytes_and_address() {
    let mut a = Agg::default();
    a.add_event(&event(Outcome::Valid, "10.0.0.1", Some(200), Some(900)));
    a.add_event(&event(Outcome::Valid, "10.0.0.1", Some(503), None));
    a.add_event(&event(Outcome::RateLimited, "10.0.0.2", None, None));
    a.add_report(&UsageReport {
        request_id: "r".into(),
        workspace_id: "ws".into(),
        http_status: Some(404),
        bytes_in: Some(5),
        bytes_out: None,
        latency_us: Some(2_000),
    });
    assert_eq!((a.requests, a.of(Outcome::Valid), a.denied()), (3, 2, 1));
    assert_eq!(a.status, [0, 1, 0, 1, 1]);
    assert_eq!((a.bytes_in, a.bytes_out), (35, 300));
    assert_eq!(a.ips.count(), 2);
    assert_eq!(a.latency.count(), 2);
}

#[test]
fn merging_is_the_same_as_counting_together() {
    let evs: Vec<UsageEvent> = (0..500)
        .map(|i| {
            event(
                if i % 7 == 0 { Outcome::NotFound } else { Outcome::Valid },
                &format!("192.0.2.{}", i % 40),
                Some(if i % 10 == 0 { 500 } else { 200 }),
                Some(100 + i * 13),
            )
        })
        .collect();
    let mut whole = Agg::default();
    let (mut left, mut right) = (Agg::default(), Agg::default());
    for (i, e) in evs.iter().enumerate() {
        whole.add_event(e);
        if i % 3 == 0 { &mut left } else { &mut right }.add_event(e);
    }
    left.merge(&right);
    assert_eq!(left, whole);
    assert_eq!(whole.ips.count(), 40, "exact below the threshold");
}

#[test]
fn many_addresses_are_estimated_within_a_few_percent_and_stay_small() {
    for n in [65u64, 1_000, 20_000] {
        let mut a = Agg::default();
        for i in 0..n {
            a.add_event(&event(
                Outcome::Valid,
                &format!("10.{}.{}.{}", i / 65536, (i / 256) % 256, i % 256),
                None,
                None,
            ));
        }
        let est = a.ips.count() as f64;
        let err = (est - n as f64).abs() / n as f64;
        assert!(err < 0.2, "{n} addresses estimated as {est}");
        let size = serde_json::to_string(&a.ips).unwrap().len();
        assert!(size < 1_200, "{n} addresses take {size} bytes");
        // Merging two halves of the same set keeps the estimate.
        let mut b = a.clone();
        b.merge(&a);
        assert_eq!(b.ips.count(), a.ips.count());
    }
}

#[test]
fn latency_quantiles_are_within_a_bucket() {
    let mut l = Latency::default();
    for us in 1..=10_000u64 {
        l.add(us, 1);
    }
    for (q, want) in [(0.5, 5_000.0), (0.95, 9_500.0), (0.99, 9_900.0)] {
        let got = l.quantile(q).unwrap() as f64;
        assert!(got >= want && got <= want * 1.25 + 1.0, "q{q}: {got} for {want}");
    }
    assert_eq!(Latency::default().quantile(0.5), None);
    let mut one = Latency::default();
    one.add(0, 3);
    assert_eq!(one.quantile(0.99), Some(1));
}

#[test]
fn buckets_start_at_the_granularity() {
    let t = 1_780_000_123_456;
    assert_eq!(Granularity::Minute.bucket(t), 1_780_000_080_000);
    assert_eq!(Granularity::Hour.bucket(t), 1_779_998_400_000);
    assert_eq!(Granularity::Day.bucket(t) % 86_400_000, 0);
    assert_eq!(Granularity::parse("hour"), Some(Granularity::Hour));
    assert_eq!(Granularity::parse("week"), None);
}
