//! Usage rollups (issue 14): what a key, keyspace or workspace did in one
//! minute, hour or day, kept as the events are written so that a time
//! series never scans raw events. An [`Agg`] counts requests by outcome and
//! by status class, bytes each way, distinct source addresses and a latency
//! sketch; two of them merge exactly (counts add, address sets unite,
//! sketches add), so a day is the merge of its hours.
//!
//! Distinct addresses are exact up to [`EXACT_IPS`] (hashes kept sorted),
//! then a HyperLogLog of 256 registers (about 6.5 % standard error), so a
//! bucket's size is bounded whatever its traffic. Latency is counted in
//! log-spaced buckets 25 % wide: a percentile is off by at most that.

use serde::{Deserialize, Serialize};

use crate::Outcome;
use crate::event::{UsageEvent, UsageReport};

/// How many distinct addresses a bucket counts exactly.
pub const EXACT_IPS: usize = 64;
const HLL_REGISTERS: usize = 256;
/// Latency bucket `i` holds values up to `GROWTH^i` µs.
const GROWTH: f64 = 1.25;

/// A rollup's width.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Granularity {
    Minute,
    Hour,
    Day,
}

impl Granularity {
    pub const ALL: [Granularity; 3] = [Granularity::Minute, Granularity::Hour, Granularity::Day];

    pub fn width_ms(self) -> i64 {
        match self {
            Granularity::Minute => 60_000,
            Granularity::Hour => 3_600_000,
            Granularity::Day => 86_400_000,
        }
    }

    /// The start of the bucket holding `ts`.
    pub fn bucket(self, ts: i64) -> i64 {
        ts.div_euclid(self.width_ms()) * self.width_ms()
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Granularity::Minute => "minute",
            Granularity::Hour => "hour",
            Granularity::Day => "day",
        }
    }

    pub fn parse(s: &str) -> Option<Granularity> {
        Granularity::ALL.into_iter().find(|g| g.as_str() == s)
    }
}

/// What a rollup is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Scope {
    Key,
    Keyspace,
    Workspace,
    /// A key owner (`owner_id`), across all their keys.
    Owner,
    /// A source address; kept by hour and day only (one row per address
    /// per minute would let a spread attack write without bound).
    Ip,
}

impl Scope {
    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Key => "key",
            Scope::Keyspace => "keyspace",
            Scope::Workspace => "workspace",
            Scope::Owner => "owner",
            Scope::Ip => "ip",
        }
    }
}

/// Distinct source addresses: exact, then estimated.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Distinct {
    /// Sorted 32-bit hashes of the addresses.
    Exact(Vec<u32>),
    /// HyperLogLog registers (p = 8), stored as hex.
    Sketch(#[serde(with = "hex_bytes")] Vec<u8>),
}

impl Default for Distinct {
    fn default() -> Self {
        Distinct::Exact(Vec::new())
    }
}

impl Distinct {
    fn hash(ip: &str) -> u32 {
        (crate::hash::fnv1a(&[ip.as_bytes()]) >> 16) as u32
    }

    pub fn add(&mut self, ip: &str) {
        self.add_hash(Self::hash(ip));
    }

    fn add_hash(&mut self, h: u32) {
        match self {
            Distinct::Exact(v) => {
                if let Err(i) = v.binary_search(&h) {
                    v.insert(i, h);
                    if v.len() > EXACT_IPS {
                        let mut regs = vec![0u8; HLL_REGISTERS];
                        for x in v.iter() {
                            hll_add(&mut regs, *x);
                        }
                        *self = Distinct::Sketch(regs);
                    }
                }
            }
            Distinct::Sketch(regs) => hll_add(regs, h),
        }
    }

    pub fn merge(&mut self, other: &Distinct) {
        match other {
            Distinct::Exact(v) => {
                for h in v {
                    self.add_hash(*h);
                }
            }
            Distinct::Sketch(theirs) => {
                if let Distinct::Exact(v) = self {
                    let mut regs = vec![0u8; HLL_REGISTERS];
                    for x in v.iter() {
                        hll_add(&mut regs, *x);
                    }
                    *self = Distinct::Sketch(regs);
                }
                if let Distinct::Sketch(mine) = self {
                    for (m, t) in mine.iter_mut().zip(theirs) {
                        *m = (*m).max(*t);
                    }
                }
            }
        }
    }

    /// How many distinct addresses (exact, or the HyperLogLog estimate).
    pub fn count(&self) -> u64 {
        match self {
            Distinct::Exact(v) => v.len() as u64,
            Distinct::Sketch(regs) => {
                let m = regs.len() as f64;
                let sum: f64 = regs.iter().map(|r| 2f64.powi(-(*r as i32))).sum();
                let alpha = 0.7213 / (1.0 + 1.079 / m);
                let raw = alpha * m * m / sum;
                let zeros = regs.iter().filter(|r| **r == 0).count();
                // Small ranges: linear counting is better.
                let est = if raw <= 2.5 * m && zeros > 0 { m * (m / zeros as f64).ln() } else { raw };
                est.round() as u64
            }
        }
    }
}

/// Registers as one hex string: a quarter of their size as a JSON array.
mod hex_bytes {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&hex::encode(v))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        let text = String::deserialize(d)?;
        hex::decode(text).map_err(serde::de::Error::custom)
    }
}

fn hll_add(regs: &mut [u8], h: u32) {
    // Spread the 32-bit hash, then: 8 bits pick the register, the rest's leading zeros + 1.
    let h = (h as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    let idx = (h >> 56) as usize;
    let rest = (h << 8) | 0x80;
    let rank = rest.leading_zeros() as u8 + 1;
    regs[idx] = regs[idx].max(rank);
}

/// Counts of latencies by log-spaced bucket (sparse: bucket → count).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Latency(pub Vec<(u8, u64)>);

impl Latency {
    fn bucket(us: u64) -> u8 {
        if us <= 1 {
            return 0;
        }
        ((us as f64).ln() / GROWTH.ln()).ceil().min(255.0) as u8
    }

    fn upper(i: u8) -> u64 {
        GROWTH.powi(i as i32).round() as u64
    }

    pub fn add(&mut self, us: u64, n: u64) {
        let b = Self::bucket(us);
        match self.0.binary_search_by_key(&b, |(k, _)| *k) {
            Ok(i) => self.0[i].1 += n,
            Err(i) => self.0.insert(i, (b, n)),
        }
    }

    pub fn merge(&mut self, other: &Latency) {
        for (b, n) in &other.0 {
            match self.0.binary_search_by_key(b, |(k, _)| *k) {
                Ok(i) => self.0[i].1 += n,
                Err(i) => self.0.insert(i, (*b, *n)),
            }
        }
    }

    pub fn count(&self) -> u64 {
        self.0.iter().map(|(_, n)| n).sum()
    }

    /// The `q` quantile (0..=1) in µs, as its bucket's upper bound.
    pub fn quantile(&self, q: f64) -> Option<u64> {
        let total = self.count();
        if total == 0 {
            return None;
        }
        let rank = ((q * total as f64).ceil() as u64).clamp(1, total);
        let mut seen = 0;
        for (b, n) in &self.0 {
            seen += n;
            if seen >= rank {
                return Some(Self::upper(*b));
            }
        }
        self.0.last().map(|(b, _)| Self::upper(*b))
    }
}

/// One bucket's usage.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Agg {
    pub requests: u64,
    /// By outcome, in [`Outcome::ALL`] order.
    pub outcomes: [u64; 11],
    /// By status class: 1xx … 5xx (reported or proxied statuses).
    pub status: [u64; 5],
    pub bytes_in: u64,
    pub bytes_out: u64,
    pub ips: Distinct,
    pub latency: Latency,
}

impl Agg {
    /// Adds one usage event (with whatever status, bytes and latency it carries).
    pub fn add_event(&mut self, e: &UsageEvent) {
        self.requests += 1;
        if let Some(i) = Outcome::ALL.iter().position(|o| *o == e.outcome) {
            self.outcomes[i] += 1;
        }
        if let Some(ip) = &e.source_ip {
            self.ips.add(ip);
        }
        self.add_usage(e.http_status, e.bytes_in, e.bytes_out, e.latency_us);
    }

    /// Adds what a late usage report says of an event already counted.
    pub fn add_report(&mut self, r: &UsageReport) {
        self.add_usage(r.http_status, r.bytes_in, r.bytes_out, r.latency_us);
    }

    fn add_usage(&mut self, status: Option<u16>, bytes_in: Option<u64>, bytes_out: Option<u64>, latency: Option<u64>) {
        if let Some(s) = status
            && (100..600).contains(&s)
        {
            self.status[(s / 100 - 1) as usize] += 1;
        }
        // Saturating: reported sizes are the client's word.
        self.bytes_in = self.bytes_in.saturating_add(bytes_in.unwrap_or(0));
        self.bytes_out = self.bytes_out.saturating_add(bytes_out.unwrap_or(0));
        if let Some(us) = latency {
            self.latency.add(us, 1);
        }
    }

    pub fn merge(&mut self, o: &Agg) {
        self.requests += o.requests;
        for (a, b) in self.outcomes.iter_mut().zip(o.outcomes) {
            *a += b;
        }
        for (a, b) in self.status.iter_mut().zip(o.status) {
            *a += b;
        }
        self.bytes_in = self.bytes_in.saturating_add(o.bytes_in);
        self.bytes_out = self.bytes_out.saturating_add(o.bytes_out);
        self.ips.merge(&o.ips);
        self.latency.merge(&o.latency);
    }

    /// Bytes in and out as one column value, at most 2^53 per bucket: a top
    /// list sums at most a few thousand buckets of a target, which then
    /// cannot overflow the database's 64-bit integer (SQLite's SUM would
    /// fail, PostgreSQL's cast would).
    pub fn bytes_column(&self) -> i64 {
        self.bytes_in.saturating_add(self.bytes_out).min(1 << 53) as i64
    }

    /// Requests of `outcome`.
    pub fn of(&self, outcome: Outcome) -> u64 {
        Outcome::ALL.iter().position(|o| *o == outcome).map_or(0, |i| self.outcomes[i])
    }

    /// Refused requests (every outcome but `VALID`).
    pub fn denied(&self) -> u64 {
        self.requests - self.of(Outcome::Valid)
    }
}

#[cfg(test)]
mod tests;
