#!/usr/bin/env python3
"""What the event log's per-event index entries cost, against per-batch summaries (issue 11).

Appends 60 batches of 4,600 events (the writer's 100 ms batch at ~46k verifies/s; 1,000
keys, 250 addresses, one workspace, the columns of `events.db`) with the `sqlite3` CLI, in
four layouts, and prints the CPU time (user + sys) per event of each:

  table      the rowid table alone, no index
  now        today's schema: key, workspace, address, refusal-code and non-2xx indexes
  summaries  workspace, code and status indexes, and instead of the key and address
             indexes one row per key and per address in each batch (its ids as a blob)
  sum_nows   summaries without the workspace index

The rows are generated inside SQLite (a recursive CTE), so the figures are SQLite's own
cost, without binding parameters. The summaries are computed by a GROUP BY over the batch
just written, more than a writer that builds them in memory would pay.

    python3 scripts/event-index-experiment.py          # needs the sqlite3 CLI (apt-get install sqlite3)
"""

import os
import resource
import shutil
import subprocess
import sys
import tempfile

BATCHES, PER = 60, 4600

COLS = """ts INTEGER NOT NULL, kind TEXT NOT NULL, request_id TEXT NOT NULL, workspace_id TEXT NOT NULL,
keyspace_id TEXT, key_id TEXT, key_hint TEXT, owner_id TEXT, fingerprint TEXT, ip TEXT, user_agent TEXT,
method TEXT, path TEXT, code TEXT NOT NULL, status INTEGER, error TEXT, bytes_in INTEGER, bytes_out INTEGER,
latency_us INTEGER, key_no INTEGER, ws_no INTEGER, ip_no INTEGER, code_no INTEGER, status_no INTEGER,
country TEXT, asn INTEGER, as_org TEXT"""
NAMES = ", ".join(c.split()[0] for c in COLS.replace("\n", " ").split(", "))
HEAD = "PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL; PRAGMA cache_size=-65536; PRAGMA wal_autocheckpoint=16384;\n"
KEY = "CREATE INDEX events_key ON events(key_no, id) WHERE key_no IS NOT NULL;\n"
IP = "CREATE INDEX events_ip ON events(ip_no, id) WHERE ip_no IS NOT NULL;\n"
WS = "CREATE INDEX events_ws ON events(ws_no, id);\n"
RARE = (
    "CREATE INDEX events_code ON events(code_no, id) WHERE code != 'VALID';\n"
    "CREATE INDEX events_status ON events(status_no, id) WHERE status_no IS NOT NULL AND (status < 200 OR status >= 300);\n"
)
RUNS = (
    "CREATE TABLE key_runs (key_no INTEGER NOT NULL, last_id INTEGER NOT NULL, ids BLOB NOT NULL,"
    " PRIMARY KEY (key_no, last_id)) WITHOUT ROWID;\n"
    "CREATE TABLE ip_runs (ip_no INTEGER NOT NULL, last_id INTEGER NOT NULL, ids BLOB NOT NULL,"
    " PRIMARY KEY (ip_no, last_id)) WITHOUT ROWID;\n"
)
LAYOUTS = {
    "table": "",
    "now": KEY + WS + IP + RARE,
    "summaries": WS + RARE + RUNS,
    "sum_nows": RARE + RUNS,
}


def batch(b: int) -> str:
    lo, hi = b * PER, (b + 1) * PER - 1
    return f"""WITH RECURSIVE g(n) AS (SELECT {lo} UNION ALL SELECT n + 1 FROM g WHERE n < {hi})
SELECT 1700000000000 + n, 'verify', 'req_01HZXR4Q2W' || n, 'ws_01HZXR4Q2WABCDEFGHJKMNPQRS',
 'ks_01HZXR4Q2WABCDEFGHJKMNPQRS', 'key_01HZXR4Q2WABCDEF' || (n % 1000), 'bk_live_' || (n % 1000),
 'c' || (n % 50), NULL, '203.0.113.' || (n % 250), NULL, 'GET', '/orders', 'VALID', NULL, NULL, NULL,
 NULL, NULL, (n % 1000) * 7919 * 104729 + 13, 42, (n % 250) * 15485863 + 7, 99, NULL, NULL, NULL, NULL FROM g"""


def script(layout: str) -> str:
    s = HEAD + f"CREATE TABLE events (id INTEGER PRIMARY KEY, {COLS});\n" + LAYOUTS[layout]
    for b in range(BATCHES):
        s += f"BEGIN; INSERT INTO events ({NAMES}) {batch(b)};\n"
        if "key_runs" in LAYOUTS[layout]:
            for table, col in (("key_runs", "key_no"), ("ip_runs", "ip_no")):
                s += (
                    f"INSERT INTO {table} SELECT {col}, max(id), zeroblob(count(*) * 3) FROM events"
                    f" WHERE id > {b * PER} GROUP BY {col};\n"
                )
        s += "COMMIT;\n"
    return s


def main() -> int:
    if shutil.which("sqlite3") is None:
        print("needs the sqlite3 CLI: apt-get install sqlite3", file=sys.stderr)
        return 2
    events = BATCHES * PER
    with tempfile.TemporaryDirectory() as tmp:
        for layout in LAYOUTS:
            db = os.path.join(tmp, f"{layout}.db")
            before = resource.getrusage(resource.RUSAGE_CHILDREN)
            subprocess.run(["sqlite3", db], input=script(layout), text=True, check=True, stdout=subprocess.DEVNULL)
            after = resource.getrusage(resource.RUSAGE_CHILDREN)
            cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
            size = sum(os.path.getsize(os.path.join(tmp, f)) for f in os.listdir(tmp) if f.startswith(layout + "."))
            print(f"{layout:10} {cpu * 1e6 / events:5.2f} us/event  ({events:,} events, {size / 1e6:.0f} MB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
