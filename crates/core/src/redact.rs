//! Finding key-shaped text in what callers send, so that none of it is kept.
//!
//! Paths, user agents, request ids and error details come from clients and
//! may carry a key, pasted whole, embedded in other text, percent-encoded,
//! or without its prefix. [`secret_ranges`] finds, in the text after
//! percent-decoding (twice, for double encoding):
//!
//! 1. **keyward keys anywhere in a token**: every `_` followed by a 38-character
//!    base62 body is tried with every prefix that could end there, and kept
//!    when the CRC-32 checksum holds (`token_<key>`, `<key>abc`, `k_<key>`);
//! 2. **prefix-less bodies and other high-entropy runs**: a run of 32 or more
//!    ASCII letters and digits mixing upper and lower case (a key's random
//!    body lacks one of the two cases with probability ~2·10⁻⁹; hex digests,
//!    decimal ids and UUIDs are left alone);
//! 3. **known prefixes** (imported keys, whose format is not ours): the prefix
//!    followed by 16 or more token characters (`[A-Za-z0-9_.-]`).
//!
//! Ranges refer to the original text, so a percent-encoded key is cut out
//! whole. The cost is linear in the text length (times the number of known
//! prefixes), and callers bound their inputs.

use std::ops::Range;

use crate::key::{CHECKSUM_LEN, MAX_PREFIX_LEN, RANDOM_LEN, check_format};

/// What replaces a secret-shaped range.
pub const MARK: &str = "[key]";

const BODY_LEN: usize = RANDOM_LEN + CHECKSUM_LEN;
/// Shortest run of mixed-case letters and digits treated as a secret.
const ENTROPY_RUN: usize = 32;
/// Token characters that must follow a known prefix for it to count.
const AFTER_PREFIX: usize = 16;

/// Text after percent-decoding, with each byte's range in the original
/// (`spans` is `None` when nothing was decoded: the identity, no allocation).
struct Decoded<'a> {
    bytes: std::borrow::Cow<'a, [u8]>,
    spans: Option<Vec<Range<usize>>>,
}

impl Decoded<'_> {
    fn span(&self, i: usize) -> Range<usize> {
        match &self.spans {
            Some(s) => s[i].clone(),
            None => i..i + 1,
        }
    }
}

fn decode_once(input: &Decoded<'_>) -> Option<Decoded<'static>> {
    let b = &input.bytes;
    if !b.contains(&b'%') {
        return None;
    }
    let mut bytes = Vec::with_capacity(b.len());
    let mut spans = Vec::with_capacity(b.len());
    let mut i = 0;
    let mut changed = false;
    while i < b.len() {
        if b[i] == b'%'
            && i + 2 < b.len()
            && let (Some(h), Some(l)) = (hex(b[i + 1]), hex(b[i + 2]))
        {
            bytes.push(h << 4 | l);
            spans.push(input.span(i).start..input.span(i + 2).end);
            i += 3;
            changed = true;
            continue;
        }
        bytes.push(b[i]);
        spans.push(input.span(i));
        i += 1;
    }
    changed.then_some(Decoded { bytes: bytes.into(), spans: Some(spans) })
}

fn hex(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

fn decode(text: &str) -> Decoded<'_> {
    let mut d = Decoded { bytes: text.as_bytes().into(), spans: None };
    for _ in 0..2 {
        match decode_once(&d) {
            Some(next) => d = next,
            None => break,
        }
    }
    d
}

fn is_token(c: u8) -> bool {
    c.is_ascii_alphanumeric() || c == b'_'
}

/// Byte ranges of `text` that may hold a key (merged, in order). `prefixes`
/// are extra prefixes known to start keys, such as those of imported keys.
pub fn secret_ranges(text: &str, prefixes: &[String]) -> Vec<Range<usize>> {
    let d = decode(text);
    let b = &d.bytes;
    let mut found: Vec<Range<usize>> = Vec::new();

    // 1. keyward keys inside tokens, by checksum.
    let mut i = 0;
    while i < b.len() {
        if !is_token(b[i]) {
            i += 1;
            continue;
        }
        let start = i;
        while i < b.len() && is_token(b[i]) {
            i += 1;
        }
        checksummed_keys(b, start..i, &mut found);
    }

    // 2. long mixed-case alphanumeric runs.
    let mut i = 0;
    while i < b.len() {
        if !b[i].is_ascii_alphanumeric() {
            i += 1;
            continue;
        }
        let start = i;
        let (mut upper, mut lower) = (false, false);
        while i < b.len() && b[i].is_ascii_alphanumeric() {
            upper |= b[i].is_ascii_uppercase();
            lower |= b[i].is_ascii_lowercase();
            i += 1;
        }
        if i - start >= ENTROPY_RUN && upper && lower {
            found.push(start..i);
        }
    }

    // 3. known prefixes followed by enough token characters.
    for p in prefixes.iter().filter(|p| !p.is_empty()) {
        let p = p.as_bytes();
        let mut from = 0;
        while let Some(pos) = find(&b[from..], p) {
            let at = from + pos;
            let mut end = at + p.len();
            while end < b.len() && (is_token(b[end]) || matches!(b[end], b'-' | b'.')) {
                end += 1;
            }
            if end - (at + p.len()) >= AFTER_PREFIX {
                found.push(at..end);
                // Matches inside this range add nothing: go on after it, so
                // the scan stays linear.
                from = end;
            } else {
                from = at + 1;
            }
        }
    }

    // Back to the original text, merged.
    let mut out: Vec<Range<usize>> = found.into_iter().map(|r| d.span(r.start).start..d.span(r.end - 1).end).collect();
    out.sort_by_key(|r| r.start);
    let mut merged: Vec<Range<usize>> = Vec::with_capacity(out.len());
    for r in out {
        match merged.last_mut() {
            Some(last) if r.start <= last.end => last.end = last.end.max(r.end),
            _ => merged.push(r),
        }
    }
    merged
}

/// Keys whose checksum holds anywhere inside one token `b[run]`.
fn checksummed_keys(b: &[u8], run: Range<usize>, found: &mut Vec<Range<usize>>) {
    if run.len() < 2 + 1 + BODY_LEN {
        return;
    }
    // `sep` is the `_` between prefix and body.
    for sep in run.start + 2..run.end.saturating_sub(BODY_LEN) {
        if b[sep] != b'_' || !b[sep + 1..sep + 1 + BODY_LEN].iter().all(u8::is_ascii_alphanumeric) {
            continue;
        }
        let end = sep + 1 + BODY_LEN;
        let earliest = sep.saturating_sub(MAX_PREFIX_LEN).max(run.start);
        for start in earliest..=sep - 2 {
            // Only ASCII token bytes in this range, so it is valid UTF-8.
            if let Ok(candidate) = std::str::from_utf8(&b[start..end])
                && check_format(candidate).is_ok()
            {
                found.push(start..end);
                break;
            }
        }
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    if needle.len() > hay.len() {
        return None;
    }
    hay.windows(needle.len()).position(|w| w == needle)
}

/// Whether `text` holds anything key-shaped.
pub fn holds_secret(text: &str, prefixes: &[String]) -> bool {
    !secret_ranges(text, prefixes).is_empty()
}

/// `text` with every key-shaped range replaced by [`MARK`].
pub fn redact(text: &str, prefixes: &[String]) -> String {
    let ranges = secret_ranges(text, prefixes);
    if ranges.is_empty() {
        return text.to_owned();
    }
    let mut out = String::with_capacity(text.len());
    let mut last = 0;
    for r in ranges {
        // Ranges start and end at ASCII bytes or at a '%'; widen to char
        // boundaries anyway, in case a known prefix is not ASCII.
        let (mut start, mut end) = (r.start.max(last), r.end);
        while !text.is_char_boundary(start) {
            start -= 1;
        }
        while !text.is_char_boundary(end) {
            end += 1;
        }
        let r = start.max(last)..end;
        out.push_str(&text[last..r.start]);
        out.push_str(MARK);
        last = r.end;
    }
    out.push_str(&text[last..]);
    out
}

#[cfg(test)]
mod tests;
