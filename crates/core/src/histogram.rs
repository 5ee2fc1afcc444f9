//! A latency histogram of fixed buckets, atomics only, rendered in the
//! Prometheus text format. The exporter's own histogram keeps every sample
//! until drained (a sixth of the cost of a `/healthz` under load, issue 11);
//! recording here is three relaxed adds, and the memory is fixed.

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

/// Counts of durations by upper bound (seconds, ascending).
pub struct Histogram {
    bounds: &'static [f64],
    buckets: Box<[AtomicU64]>,
    sum_ns: AtomicU64,
    count: AtomicU64,
}

impl Histogram {
    pub fn new(bounds: &'static [f64]) -> Histogram {
        Histogram {
            bounds,
            buckets: bounds.iter().map(|_| AtomicU64::new(0)).collect(),
            sum_ns: AtomicU64::new(0),
            count: AtomicU64::new(0),
        }
    }

    pub fn record(&self, d: Duration) {
        let secs = d.as_secs_f64();
        if let Some(i) = self.bounds.iter().position(|b| secs <= *b) {
            self.buckets[i].fetch_add(1, Relaxed);
        }
        self.sum_ns.fetch_add(d.as_nanos() as u64, Relaxed);
        self.count.fetch_add(1, Relaxed);
    }

    /// How many durations were recorded.
    pub fn count(&self) -> u64 {
        self.count.load(Relaxed)
    }

    /// Appends `name`'s `_bucket`, `_sum` and `_count` lines; `labels` is
    /// `key="value",…` (or empty).
    pub fn render(&self, out: &mut String, name: &str, labels: &str) {
        let sep = if labels.is_empty() { "" } else { "," };
        let mut cumulative = 0;
        for (b, n) in self.bounds.iter().zip(self.buckets.iter()) {
            cumulative += n.load(Relaxed);
            let _ = writeln!(out, "{name}_bucket{{{labels}{sep}le=\"{b}\"}} {cumulative}");
        }
        let count = self.count.load(Relaxed);
        let _ = writeln!(out, "{name}_bucket{{{labels}{sep}le=\"+Inf\"}} {count}");
        let braces = if labels.is_empty() { String::new() } else { format!("{{{labels}}}") };
        let _ = writeln!(out, "{name}_sum{braces} {}", self.sum_ns.load(Relaxed) as f64 / 1e9);
        let _ = writeln!(out, "{name}_count{braces} {count}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_cumulative_and_the_overflow_only_counts() {
        static B: [f64; 3] = [0.001, 0.01, 0.1];
        let h = Histogram::new(&B);
        for ms in [0.5, 2.0, 3.0, 50.0, 900.0] {
            h.record(Duration::from_secs_f64(ms / 1000.0));
        }
        let mut out = String::new();
        h.render(&mut out, "x_seconds", "route=\"/a\"");
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines[0], "x_seconds_bucket{route=\"/a\",le=\"0.001\"} 1");
        assert_eq!(lines[1], "x_seconds_bucket{route=\"/a\",le=\"0.01\"} 3");
        assert_eq!(lines[2], "x_seconds_bucket{route=\"/a\",le=\"0.1\"} 4");
        assert_eq!(lines[3], "x_seconds_bucket{route=\"/a\",le=\"+Inf\"} 5");
        assert!(lines[4].starts_with("x_seconds_sum{route=\"/a\"} 0.955"), "{}", lines[4]);
        assert_eq!(lines[5], "x_seconds_count{route=\"/a\"} 5");
        let mut bare = String::new();
        h.render(&mut bare, "y", "");
        assert!(bare.contains("y_bucket{le=\"0.001\"} 1") && bare.contains("y_count 5"), "{bare}");
    }
}
