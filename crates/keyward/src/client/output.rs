//! How the CLI prints for people: aligned tables, relative times, and colour
//! only on a terminal (never into a pipe or a file; `NO_COLOR` turns it off).

use std::io::IsTerminal;

use keyward_core::time::{now_ms, parse_rfc3339};
use serde_json::Value;

/// A field of a JSON answer as text: `-` for null or empty, lists space-joined.
pub fn text(v: &Value, field: &str) -> String {
    match &v[field] {
        Value::Null => "-".to_owned(),
        Value::String(s) if s.is_empty() => "-".to_owned(),
        Value::String(s) => s.clone(),
        Value::Array(a) if a.is_empty() => "-".to_owned(),
        Value::Array(a) => {
            a.iter().map(|x| x.as_str().map_or_else(|| x.to_string(), str::to_owned)).collect::<Vec<_>>().join(" ")
        }
        other => other.to_string(),
    }
}

/// An instant field as `3 min ago` or `in 6 days`, or `-`.
pub fn when(v: &Value, field: &str) -> String {
    match v[field].as_str().and_then(parse_rfc3339) {
        Some(at) => relative(at, now_ms()),
        None => "-".to_owned(),
    }
}

/// `at` relative to `now`, in the largest whole unit.
pub fn relative(at: i64, now: i64) -> String {
    let delta = (now - at).abs() / 1000;
    // Rounded to the nearest whole unit: a key made to last 30 days expires "in 30 days".
    let round = |unit: i64| (delta + unit / 2) / unit;
    let amount = match delta {
        0..=9 => return "just now".to_owned(),
        10..=59 => format!("{delta} s"),
        60..=3569 => format!("{} min", round(60)),
        3570..=84_599 => format!("{} h", round(3600)),
        84_600..=5_183_999 => format!("{} days", round(86_400)),
        _ => format!("{} months", round(2_592_000)),
    };
    if at <= now { format!("{amount} ago") } else { format!("in {amount}") }
}

/// Colour for stdout, decided once: a terminal, and `NO_COLOR` unset.
#[derive(Clone, Copy)]
pub struct Paint(bool);

impl Paint {
    pub fn stdout() -> Paint {
        Paint(std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none())
    }

    /// A status or outcome word, coloured by what it means.
    pub fn status(self, word: &str) -> String {
        let code = match word {
            "active" | "VALID" | "ok" | "admin" => "32",
            "revoked" | "REFUSED" | "REVOKED" | "MALFORMED" | "NOT_FOUND" | "BROKEN" | "critical" | "high" | "dead" => {
                "31"
            }
            "disabled" | "expired" | "deprecated" | "ROTATED" | "DISABLED" | "EXPIRED" | "warning" | "medium"
            | "pending" => "33",
            "delivered" => "32",
            _ if word.ends_with("LIMITED") || word.ends_with("EXCEEDED") || word.ends_with("ALLOWED") => "33",
            "FORBIDDEN" => "33",
            _ => return word.to_owned(),
        };
        self.wrap(code, word)
    }

    pub fn dim(self, s: &str) -> String {
        self.wrap("2", s)
    }

    pub fn bold(self, s: &str) -> String {
        self.wrap("1", s)
    }

    fn wrap(self, code: &str, s: &str) -> String {
        if self.0 { format!("\u{1b}[{code}m{s}\u{1b}[0m") } else { s.to_owned() }
    }
}

/// Rows under a header, each column as wide as its widest cell.
pub struct Table {
    header: Vec<&'static str>,
    rows: Vec<Vec<String>>,
    /// Columns that hold a status word, coloured on a terminal.
    status_col: Option<usize>,
}

impl Table {
    pub fn new(header: &[&'static str]) -> Table {
        Table { header: header.to_vec(), rows: Vec::new(), status_col: None }
    }

    pub fn status_column(mut self, col: usize) -> Table {
        self.status_col = Some(col);
        self
    }

    pub fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }

    pub fn print(&self, paint: Paint) {
        let widths: Vec<usize> = (0..self.header.len())
            .map(|c| {
                let cells = self.rows.iter().map(|r| r.get(c).map_or(0, |s| s.chars().count()));
                cells.chain([self.header[c].len()]).max().unwrap_or(0)
            })
            .collect();
        let last = self.header.len() - 1;
        let line = |cells: Vec<String>| {
            let mut out = String::new();
            for (c, cell) in cells.iter().enumerate() {
                let pad = widths[c].saturating_sub(cell.chars().count());
                let shown = if Some(c) == self.status_col { paint.status(cell) } else { cell.clone() };
                out.push_str(&shown);
                if c != last {
                    out.push_str(&" ".repeat(pad + 2));
                }
            }
            out
        };
        println!("{}", paint.bold(&line(self.header.iter().map(|h| h.to_string()).collect())));
        for r in &self.rows {
            println!("{}", line(r.clone()));
        }
        if self.rows.is_empty() {
            println!("{}", paint.dim("(none)"));
        }
    }
}

/// `label  value` lines, labels aligned.
pub fn fields(paint: Paint, pairs: &[(&str, String)]) {
    let width = pairs.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
    for (k, v) in pairs {
        println!("{}  {v}", paint.dim(&format!("{k:<width$}")));
    }
}

/// Draws `label [#####.....]  50% 500/1000` on stderr, in place; a new line once done.
pub fn progress(label: &str, done: u64, total: u64) {
    use std::io::Write;
    let width = 30;
    let filled = (done * width).checked_div(total).unwrap_or(width) as usize;
    let pct = (done * 100).checked_div(total).unwrap_or(100);
    let label = if label.is_empty() { String::new() } else { format!("{label:<20} ") };
    eprint!("\r{label}[{}{}] {pct:3}% {done}/{total}", "#".repeat(filled), ".".repeat(width as usize - filled));
    let _ = std::io::stderr().flush();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relative_times_read_naturally() {
        let now = 1_800_000_000_000;
        assert_eq!(relative(now - 3_000, now), "just now");
        assert_eq!(relative(now - 42_000, now), "42 s ago");
        assert_eq!(relative(now - 5 * 60_000, now), "5 min ago");
        assert_eq!(relative(now + 3 * 3_600_000, now), "in 3 h");
        assert_eq!(relative(now + 7 * 86_400_000, now), "in 7 days");
        assert_eq!(relative(now - 90 * 86_400_000, now), "3 months ago");
        assert_eq!(relative(now + 30 * 86_400_000 - 2_000, now), "in 30 days");
        assert_eq!(relative(now - 59 * 60_000 - 50_000, now), "1 h ago");
    }
}
