//! Throttling of failed root-key authentications, per source address: after
//! `root_auth_failures_per_minute` failures from one address within a minute,
//! that address is refused (429 with `Retry-After`) for a minute, then two,
//! four … up to an hour while it keeps failing; a quiet hour forgets it. A
//! blocked address is refused even with a right key, so a guess can never be
//! confirmed. Failures are counted in `/metrics`, logged when an address is
//! blocked, and signalled to the rules engine (`root_auth_failures`).
//!
//! An IPv6 address counts as its /64 (one subscriber's usual allocation), an
//! IPv4-mapped one as the IPv4 address.
//!
//! The check on every authenticated request costs one atomic load while no
//! address is blocked; the map is touched only by failures and by requests
//! while some address is blocked. It is bounded: at `MAX_TRACKED` addresses
//! every address not blocked is forgotten (amortized O(1) per failure).

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicUsize, Ordering};

use parking_lot::Mutex;

const WINDOW_MS: i64 = 60_000;
const FIRST_BLOCK_MS: i64 = 60_000;
const MAX_BLOCK_MS: i64 = 3_600_000;
const FORGET_AFTER_MS: i64 = 3_600_000;
const MAX_TRACKED: usize = 100_000;

#[derive(Debug, Clone, Copy)]
struct Entry {
    window_start: i64,
    failures: u32,
    blocked_until: i64,
    /// How many times the address was blocked since it was last quiet: the backoff exponent.
    strikes: u32,
    last_seen: i64,
}

/// What a failure did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    Counted,
    /// This failure blocked the address for this many ms.
    Blocked(i64),
}

pub struct AuthThrottle {
    limit: u32,
    entries: Mutex<HashMap<IpAddr, Entry>>,
    /// Addresses blocked now or recently (cleared lazily): zero means no check is needed.
    blocked: AtomicUsize,
}

impl AuthThrottle {
    pub fn new(failures_per_minute: u32) -> Self {
        AuthThrottle { limit: failures_per_minute.max(1), entries: Mutex::default(), blocked: AtomicUsize::new(0) }
    }

    /// Milliseconds the address must still wait, if it is blocked.
    pub fn blocked_for(&self, ip: IpAddr, now: i64) -> Option<i64> {
        if self.blocked.load(Ordering::Relaxed) == 0 {
            return None;
        }
        let ip = group(ip);
        let mut entries = self.entries.lock();
        let e = entries.get(&ip)?;
        if e.blocked_until > now {
            return Some(e.blocked_until - now);
        }
        if e.blocked_until != 0 {
            // The block ran out: stop paying for the check once none is left.
            let mut e = *e;
            e.blocked_until = 0;
            entries.insert(ip, e);
            self.blocked.fetch_sub(1, Ordering::Relaxed);
        }
        None
    }

    /// Counts a failed authentication from `ip`.
    pub fn fail(&self, ip: IpAddr, now: i64) -> Failure {
        let ip = group(ip);
        let mut entries = self.entries.lock();
        if entries.len() >= MAX_TRACKED && !entries.contains_key(&ip) {
            entries.retain(|_, e| e.blocked_until > now);
            if entries.len() >= MAX_TRACKED {
                return Failure::Counted;
            }
        }
        let e = entries.entry(ip).or_insert(Entry {
            window_start: now,
            failures: 0,
            blocked_until: 0,
            strikes: 0,
            last_seen: now,
        });
        if now - e.last_seen > FORGET_AFTER_MS {
            e.strikes = 0;
        }
        e.last_seen = now;
        if now - e.window_start >= WINDOW_MS {
            e.window_start = now;
            e.failures = 0;
        }
        e.failures += 1;
        if e.failures < self.limit {
            return Failure::Counted;
        }
        let ms = (FIRST_BLOCK_MS << e.strikes.min(6)).min(MAX_BLOCK_MS);
        if e.blocked_until == 0 {
            self.blocked.fetch_add(1, Ordering::Relaxed);
        }
        e.blocked_until = now + ms;
        e.strikes += 1;
        e.failures = 0;
        e.window_start = now;
        Failure::Blocked(ms)
    }
}

/// The unit an address is counted as: IPv4 as is, IPv6 by its /64.
fn group(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6(std::net::Ipv6Addr::from(u128::from(v6) & !((1u128 << 64) - 1))),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn an_address_is_blocked_at_the_limit_with_growing_backoff() {
        let t = AuthThrottle::new(20);
        let a = ip("203.0.113.5");
        for i in 0..19 {
            assert_eq!(t.fail(a, 1_000 + i), Failure::Counted);
            assert_eq!(t.blocked_for(a, 1_000 + i), None);
        }
        assert_eq!(t.fail(a, 1_100), Failure::Blocked(60_000));
        assert_eq!(t.blocked_for(a, 1_200), Some(59_900));
        assert_eq!(t.blocked_for(ip("203.0.113.6"), 1_200), None, "others are not blocked");
        // After the block, 20 more failures block for twice as long.
        let later = 61_200;
        assert_eq!(t.blocked_for(a, later), None);
        for i in 0..19 {
            assert_eq!(t.fail(a, later + i), Failure::Counted);
        }
        assert_eq!(t.fail(a, later + 20), Failure::Blocked(120_000));
        // A quiet hour forgets the strikes.
        let quiet = later + 20 + 120_000 + FORGET_AFTER_MS + 1;
        assert_eq!(t.blocked_for(a, quiet), None);
        for i in 0..19 {
            t.fail(a, quiet + i);
        }
        assert_eq!(t.fail(a, quiet + 19), Failure::Blocked(60_000));
    }

    #[test]
    fn an_ipv6_subnet_counts_as_one_address() {
        let t = AuthThrottle::new(3);
        t.fail(ip("2001:db8:1:2::1"), 0);
        t.fail(ip("2001:db8:1:2::2"), 1);
        assert_eq!(t.fail(ip("2001:db8:1:2:ffff::9"), 2), Failure::Blocked(60_000));
        assert!(t.blocked_for(ip("2001:db8:1:2::77"), 3).is_some());
        assert!(t.blocked_for(ip("2001:db8:1:3::1"), 3).is_none());
        t.fail(ip("::ffff:198.51.100.1"), 0);
        t.fail(ip("198.51.100.1"), 0);
        assert_eq!(t.fail(ip("198.51.100.1"), 0), Failure::Blocked(60_000));
    }

    #[test]
    fn failures_spread_over_more_than_a_minute_do_not_block() {
        let t = AuthThrottle::new(20);
        let a = ip("2001:db8::1");
        for i in 0..100 {
            assert_eq!(t.fail(a, i * 4_000), Failure::Counted, "failure {i}");
        }
    }

    #[test]
    fn the_check_is_free_while_nothing_is_blocked_and_the_map_is_bounded() {
        let t = AuthThrottle::new(3);
        assert_eq!(t.blocked.load(Ordering::Relaxed), 0);
        for i in 0..(MAX_TRACKED as u32 + 10) {
            let a = IpAddr::from(std::net::Ipv4Addr::from(i));
            t.fail(a, 0);
        }
        assert!(t.entries.lock().len() <= MAX_TRACKED);
        assert_eq!(t.blocked.load(Ordering::Relaxed), 0);
    }
}
