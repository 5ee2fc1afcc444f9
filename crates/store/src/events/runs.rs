//! The event log's index by key and by address: one row per key (and per
//! address) per written batch, holding the ids of that batch's events for it
//! (issue 11). An index entry per event cost the writer about 4 µs of every
//! event's 8 (see BENCHMARKS.md, "CPU per request"); a batch of 4,600 events
//! over 1,000 keys writes 1,000 rows instead of 4,600 entries, built in memory.
//!
//! A run is `(kind, no, last_id, ids)`: `no` the same 64-bit stand-in the
//! columns `key_no` and `ip_no` hold, `last_id` its newest id, `ids` every id
//! of the run, ascending, as LEB128 varints (the distance of the first from
//! `last_id`, then each id's distance from the one before). Invariant: the
//! runs of one `(kind, no)` cover disjoint id ranges, ordered as their
//! `last_id`s are (batches are written in id order; a purge only removes ids).
//! So the runs that hold an id below `b` are those whose `last_id` is below
//! `b`, and at most one more: the first whose `last_id` is at or above it.
//! Two values whose numbers collide share runs; readers check each row.

use foldhash::HashMap;
use rusqlite::{Connection, params};

use crate::{Result, StoreError};

pub(super) const SCHEMA: &str = "
    CREATE TABLE event_runs (
        kind    INTEGER NOT NULL,
        no      INTEGER NOT NULL,
        last_id INTEGER NOT NULL,
        ids     BLOB NOT NULL,
        PRIMARY KEY (kind, no, last_id)
    ) WITHOUT ROWID;
";

/// What a run indexes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(super) enum RunKind {
    /// `key_no`, the number of a key id.
    Key = 0,
    /// `ip_no`, the number of a workspace's source address.
    Address = 1,
}

/// The ids of a batch by key and by address, in id order, until written.
#[derive(Default)]
pub(super) struct Runs {
    runs: HashMap<(RunKind, i64), Vec<i64>>,
}

impl Runs {
    /// Adds `id` to the run of `(kind, no)`; ids come in ascending order.
    pub(super) fn add(&mut self, kind: RunKind, no: i64, id: i64) {
        self.runs.entry((kind, no)).or_default().push(id);
    }

    /// Writes one row per run, inside the caller's transaction, and empties itself.
    pub(super) fn write(&mut self, tx: &Connection) -> Result<()> {
        let mut st = tx.prepare_cached("INSERT INTO event_runs (kind, no, last_id, ids) VALUES (?1, ?2, ?3, ?4)")?;
        let mut blob = Vec::new();
        for ((kind, no), ids) in self.runs.drain() {
            let Some(&last) = ids.last() else { continue };
            encode(&ids, &mut blob);
            st.execute(params![kind as i64, no, last, blob])?;
        }
        Ok(())
    }
}

/// `ids` (ascending, not empty) as the run blob, into `out` (cleared first).
pub(super) fn encode(ids: &[i64], out: &mut Vec<u8>) {
    out.clear();
    let Some(&last) = ids.last() else { return };
    let mut prev = ids[0];
    varint(out, (last - prev) as u64);
    for &id in &ids[1..] {
        varint(out, (id - prev) as u64);
        prev = id;
    }
}

fn varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// The ids of a run, ascending; an error if the blob does not end at `last_id`.
pub(super) fn decode(last_id: i64, blob: &[u8]) -> Result<Vec<i64>> {
    let corrupt = |detail: &str| StoreError::Corrupt {
        table: "event_runs",
        detail: format!("run ending at {last_id}: {detail}"),
    };
    let mut out: Vec<i64> = Vec::with_capacity(blob.len());
    let (mut v, mut shift) = (0u64, 0u32);
    for &b in blob {
        if shift > 63 {
            return Err(corrupt("varint too long"));
        }
        v |= u64::from(b & 0x7f) << shift;
        shift += 7;
        if b & 0x80 == 0 {
            let id = match out.last() {
                None => last_id.checked_sub(v as i64),
                Some(&prev) => (v > 0).then(|| prev.checked_add(v as i64)).flatten(),
            };
            out.push(id.ok_or_else(|| corrupt("ids out of order"))?);
            (v, shift) = (0, 0);
        }
    }
    if shift != 0 || out.last() != Some(&last_id) {
        return Err(corrupt("ids do not end at the run's last id"));
    }
    Ok(out)
}

/// A row `(last_id, ids)` of `event_runs`, decoded.
fn read_run(r: &rusqlite::Row<'_>) -> Result<(i64, Vec<i64>)> {
    let last_id: i64 = r.get(0)?;
    match r.get_ref(1)? {
        rusqlite::types::ValueRef::Blob(blob) => Ok((last_id, decode(last_id, blob)?)),
        _ => Err(StoreError::Corrupt { table: "event_runs", detail: format!("run ending at {last_id} is not a blob") }),
    }
}

/// Calls `visit` with the ids of `(kind, no)` strictly between `after` and
/// `before`, newest first (or oldest first when `ascending`), until it
/// returns `false`. Reads only the runs that hold such ids, one seek to start.
pub(super) fn walk(
    c: &Connection,
    kind: RunKind,
    no: i64,
    after: Option<i64>,
    before: Option<i64>,
    ascending: bool,
    mut visit: impl FnMut(i64) -> Result<bool>,
) -> Result<()> {
    let after = after.unwrap_or(i64::MIN);
    let before = before.unwrap_or(i64::MAX);
    let kind = kind as i64;
    if ascending {
        let mut st = c.prepare_cached(
            "SELECT last_id, ids FROM event_runs WHERE kind = ?1 AND no = ?2 AND last_id > ?3 ORDER BY last_id",
        )?;
        let mut rows = st.query(params![kind, no, after])?;
        while let Some(r) = rows.next()? {
            for id in read_run(r)?.1 {
                if id <= after {
                    continue;
                }
                if id >= before || !visit(id)? {
                    return Ok(());
                }
            }
        }
        return Ok(());
    }
    // Newest first: the one run that may straddle `before`, then the rest.
    let mut each = |ids: Vec<i64>| -> Result<bool> {
        for id in ids.into_iter().rev() {
            if id >= before {
                continue;
            }
            if id <= after || !visit(id)? {
                return Ok(false);
            }
        }
        Ok(true)
    };
    if before < i64::MAX {
        let mut st = c.prepare_cached(
            "SELECT last_id, ids FROM event_runs WHERE kind = ?1 AND no = ?2 AND last_id >= ?3 ORDER BY last_id LIMIT 1",
        )?;
        let mut rows = st.query(params![kind, no, before])?;
        if let Some(r) = rows.next()?
            && !each(read_run(r)?.1)?
        {
            return Ok(());
        }
    }
    let mut st = c.prepare_cached(WALK_DESC)?;
    let mut rows = st.query(params![kind, no, before, after])?;
    while let Some(r) = rows.next()? {
        if !each(read_run(r)?.1)? {
            break;
        }
    }
    Ok(())
}

/// The runs of `walk`, newest first (also what `plan` explains).
pub(super) const WALK_DESC: &str = "SELECT last_id, ids FROM event_runs WHERE kind = ?1 AND no = ?2 AND last_id < ?3 AND last_id > ?4 ORDER BY last_id DESC";

/// Takes purged events out of their runs, inside the purge's transaction:
/// `deleted` holds each deleted event's `(id, key_no, ip_no)`. A run left
/// empty is deleted; one that still holds ids (events kept by the purge's
/// time check) is rewritten with those, so runs only ever name live events.
pub(super) fn forget(tx: &Connection, deleted: &[(i64, Option<i64>, Option<i64>)]) -> Result<()> {
    let mut gone: HashMap<(RunKind, i64), Vec<i64>> = HashMap::default();
    for &(id, key_no, ip_no) in deleted {
        if let Some(no) = key_no {
            gone.entry((RunKind::Key, no)).or_default().push(id);
        }
        if let Some(no) = ip_no {
            gone.entry((RunKind::Address, no)).or_default().push(id);
        }
    }
    let mut find = tx.prepare_cached(
        "SELECT last_id, ids FROM event_runs WHERE kind = ?1 AND no = ?2 AND last_id >= ?3 ORDER BY last_id",
    )?;
    let mut drop = tx.prepare_cached("DELETE FROM event_runs WHERE kind = ?1 AND no = ?2 AND last_id = ?3")?;
    let mut put = tx.prepare_cached("INSERT INTO event_runs (kind, no, last_id, ids) VALUES (?1, ?2, ?3, ?4)")?;
    let mut blob = Vec::new();
    for ((kind, no), mut ids) in gone {
        ids.sort_unstable();
        let (first, last) = (ids[0], ids[ids.len() - 1]);
        // Which runs change, read before any is written.
        let mut changed: Vec<(i64, Vec<i64>)> = Vec::new();
        {
            let mut rows = find.query(params![kind as i64, no, first])?;
            while let Some(r) = rows.next()? {
                let (last_id, run) = read_run(r)?;
                if run[0] > last {
                    break;
                }
                let kept: Vec<i64> = run.iter().copied().filter(|id| ids.binary_search(id).is_err()).collect();
                if kept.len() < run.len() {
                    changed.push((last_id, kept));
                }
            }
        }
        for (last_id, kept) in changed {
            drop.execute(params![kind as i64, no, last_id])?;
            if let Some(&new_last) = kept.last() {
                encode(&kept, &mut blob);
                put.execute(params![kind as i64, no, new_last, blob])?;
            }
        }
    }
    Ok(())
}

/// Builds the runs of every event already in the log (the migration that
/// replaced the per-event key and address indexes), in chunks of ids, with
/// progress in the log for a large file.
pub(super) fn fill(tx: &Connection) -> Result<()> {
    const CHUNK: i64 = 100_000;
    let total: i64 = tx.query_row("SELECT COUNT(*) FROM events", [], |r| r.get(0))?;
    if total == 0 {
        return Ok(());
    }
    tracing::info!(events = total, "Indexing the event log by key and address (one run per key per 100,000 events).");
    let mut st = tx.prepare("SELECT id, key_no, ip_no FROM events WHERE id > ?1 ORDER BY id LIMIT ?2")?;
    let (mut after, mut done) = (0i64, 0i64);
    let mut runs = Runs::default();
    let mut next_report = std::time::Instant::now() + std::time::Duration::from_secs(2);
    loop {
        let mut n = 0;
        let mut rows = st.query(params![after, CHUNK])?;
        while let Some(r) = rows.next()? {
            let id: i64 = r.get(0)?;
            if let Some(no) = r.get::<_, Option<i64>>(1)? {
                runs.add(RunKind::Key, no, id);
            }
            if let Some(no) = r.get::<_, Option<i64>>(2)? {
                runs.add(RunKind::Address, no, id);
            }
            after = id;
            n += 1;
        }
        if n == 0 {
            break;
        }
        runs.write(tx)?;
        done += n;
        if std::time::Instant::now() >= next_report {
            tracing::info!(done, total, "Indexing the event log: {}%.", done * 100 / total);
            next_report = std::time::Instant::now() + std::time::Duration::from_secs(2);
        }
    }
    tracing::info!(events = done, "Indexed the event log by key and address.");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runs_round_trip_and_refuse_damage() {
        for ids in [vec![7], vec![1, 2, 3], vec![5, 900, 1_000_000, 1_000_001, i64::MAX / 2]] {
            let mut blob = Vec::new();
            encode(&ids, &mut blob);
            assert_eq!(decode(*ids.last().unwrap(), &blob).unwrap(), ids);
            // A cut blob, a repeated id, a runaway varint: each refused.
            assert!(decode(*ids.last().unwrap(), &blob[..blob.len() - 1]).is_err(), "{ids:?}");
        }
        assert!(decode(3, &[0, 0]).is_err(), "a zero step repeats an id");
        assert!(decode(3, &[0xff; 11]).is_err(), "an endless varint");
        assert!(decode(3, &[]).is_err());
    }
}
