//! The Redis limiter against a real, throwaway `redis-server`
//! (`keyward_testkit::Redis`, on a Unix socket in a temp dir): the same decisions as the single node's
//! in-memory `Limiter` over random traffic, exact limits when several
//! "nodes" (connections) hit one key at once, and a clear error when Redis
//! is gone. `KEYWARD_SKIP_REDIS=1` skips these tests.

use std::time::{Duration, Instant};

use keyward_core::Outcome;
use keyward_core::policy::{Limiter, Quota, RateLimit, Refill};
use keyward_limits::{LimitsError, RedisLimiter};
use keyward_testkit::Redis;

fn redis() -> Option<Redis> {
    Redis::start()
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap()
}

fn window(name: &str, limit: u64, window_ms: i64) -> RateLimit {
    RateLimit { name: name.into(), limit, window_ms }
}

#[test]
fn redis_decides_exactly_as_the_single_node_over_random_traffic() {
    let Some(r) = redis() else { return };
    rt().block_on(async {
        let limiter = RedisLimiter::connect(&r.url(), "kw", Duration::from_secs(2)).await.unwrap();
        for seed in [1u64, 2, 3] {
            let mut rng = fastrand::Rng::with_seed(seed);
            let windows = vec![window("second", 5, 1_000), window("ten_s", 30, 10_000), window("odd", 7, 333)];
            let quota =
                Quota { remaining: 40, refill: Some(Refill { interval_ms: 20_000, amount: 40 }), refilled_at: 0 };
            let mut local = Limiter::new(&windows, Some(quota));
            let mut now: i64 = 1_700_000_000_000 + seed as i64 * 7;
            let quota = Quota { refilled_at: now, ..quota };
            local.quota = Some(quota);
            let mut counts = [0u32; 3];
            for step in 0..3_000 {
                now += rng.i64(0..400);
                let cost = rng.u64(0..4);
                let want = local.admit(now, cost);
                let got = limiter.admit(&format!("key{seed}"), &windows, Some(&quota), Some(now), cost).await.unwrap();
                assert_eq!(got, want, "seed {seed}, step {step}, now {now}, cost {cost}");
                counts[match want.outcome {
                    Outcome::Valid => 0,
                    Outcome::RateLimited => 1,
                    _ => 2,
                }] += 1;
            }
            // The traffic exercised every branch.
            assert!(counts.iter().all(|c| *c > 50), "seed {seed}: {counts:?}");
        }
        // No quota, no windows: always valid, and the server's clock works.
        let free = limiter.admit("free", &[], None, None, 1).await.unwrap();
        assert_eq!((free.outcome, free.window, free.remaining), (Outcome::Valid, None, None));
    });
}

#[test]
fn several_nodes_at_once_admit_exactly_the_limit_and_never_spend_the_quota_below_zero() {
    let Some(r) = redis() else { return };
    let rt = rt();
    let admitted = |windows: Vec<RateLimit>, quota: Option<Quota>, id: &'static str| {
        rt.block_on(async {
            let mut tasks = Vec::new();
            for _node in 0..3 {
                // Each node has its own connection.
                let limiter = RedisLimiter::connect(&r.url(), "kw", Duration::from_secs(2)).await.unwrap();
                for _ in 0..4 {
                    let (limiter, windows) = (limiter.clone(), windows.clone());
                    tasks.push(tokio::spawn(async move {
                        let mut ok = 0u32;
                        for _ in 0..60 {
                            let a = limiter.admit(id, &windows, quota.as_ref(), None, 1).await.unwrap();
                            if a.outcome == Outcome::Valid {
                                ok += 1;
                            }
                            if let Some(left) = a.remaining {
                                assert!(left >= 0, "quota below zero: {left}");
                            }
                        }
                        ok
                    }));
                }
            }
            let mut total = 0;
            for t in tasks {
                total += t.await.unwrap();
            }
            total
        })
    };
    // 720 requests against 100 per minute.
    assert_eq!(admitted(vec![window("minute", 100, 60_000)], None, "window"), 100);
    // 720 requests against a quota of 70 (no window).
    let quota = Quota { remaining: 70, refill: None, refilled_at: 0 };
    assert_eq!(admitted(vec![], Some(quota), "quota"), 70);
}

#[test]
fn a_lost_redis_is_an_error_within_the_timeout_not_a_hang() {
    let Some(mut r) = redis() else { return };
    rt().block_on(async {
        let limiter = RedisLimiter::connect(&r.url(), "kw", Duration::from_millis(300)).await.unwrap();
        limiter.ping().await.unwrap();
        r.kill();
        let started = Instant::now();
        let err = limiter.admit("k", &[window("m", 10, 60_000)], None, None, 1).await.unwrap_err();
        assert!(matches!(err, LimitsError::Redis(_)), "{err}");
        assert!(started.elapsed() < Duration::from_secs(3), "took {:?}", started.elapsed());
        assert!(limiter.ping().await.is_err());
    });
    let bad = rt().block_on(RedisLimiter::connect("http://nope", "kw", Duration::from_millis(100)));
    assert!(matches!(bad, Err(LimitsError::Url(_))));
}
