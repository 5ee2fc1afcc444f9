#!/usr/bin/env bash
# Verify throughput of keyward on one machine (issue 13), in one pass with the same wrk
# client, knobs and key rotation as ../shared/bench/peers/keyward_verify.sh:
#   embedded   one node, its own SQLite data dir (the default)
#   pg1        one node on PostgreSQL (keys, events) and Redis (limits)
#   pg3        three nodes on the same PostgreSQL and Redis, one wrk per node at once
# PostgreSQL (fsync on, the Debian defaults) and Redis are throwaway servers in the temp
# dir. Needs: postgresql, redis-server, wrk, jq, curl (apt-get install postgresql
# redis-server wrk jq curl). Each line printed: `<mode> rps=… p50_ms=… p99_ms=…`.
#
#   KEYWARD_BIN=target/release/keyward scripts/bench-cluster.sh
set -euo pipefail
PEERS="$(cd "$(dirname "$0")/../../shared/bench/peers" 2>/dev/null && pwd)" \
  || { echo "needs ../shared/bench/peers beside the project" >&2; exit 2; }
# shellcheck source=/dev/null
source "$PEERS/lib.sh"
need wrk wrk; need jq jq; need redis-server redis-server
[ -x "${KEYWARD_BIN:-}" ] || die "set KEYWARD_BIN to a release keyward binary"
PGBIN="$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n1)"
[ -x "$PGBIN/initdb" ] || die "no initdb: apt-get install postgresql"

make_workdir
chmod 755 "$WORK"
RUNAS=()
if [ "$(id -u)" = 0 ]; then RUNAS=(runuser -u postgres --); fi
mkdir -p "$WORK/pg"; [ "$(id -u)" = 0 ] && chown postgres "$WORK/pg"
"${RUNAS[@]}" "$PGBIN/initdb" -D "$WORK/pg/data" -U keyward --auth=trust -E UTF8 >/dev/null
PGPORT="$(free_port)"
"${RUNAS[@]}" "$PGBIN/pg_ctl" -D "$WORK/pg/data" -l "$WORK/pg/log" -w \
  -o "-p $PGPORT -k $WORK/pg -c listen_addresses=127.0.0.1 -c max_connections=200" start >/dev/null
trap 'rc=$?; "${RUNAS[@]}" "$PGBIN/pg_ctl" -D "$WORK/pg/data" -m immediate stop >/dev/null 2>&1; (exit $rc); cleanup' EXIT
"$PGBIN/psql" -h 127.0.0.1 -p "$PGPORT" -U keyward -d postgres -qc "CREATE DATABASE kw" >/dev/null
DB="postgres://keyward@127.0.0.1:$PGPORT/kw"
redis-server --port 0 --unixsocket "$WORK/redis.sock" --save '' --appendonly no --daemonize no \
  > "$WORK/redis.log" 2>&1 &
STARTED_PIDS+=("$!")
for _ in $(seq 50); do [ -S "$WORK/redis.sock" ] && break; sleep 0.1; done
REDIS="unix://$WORK/redis.sock"
PEPPER="$(python3 -c 'import secrets; print(secrets.token_hex(32))')"

# start_node NAME [env...]: a node on a free port; sets PORT_<NAME>.
start_node() {
  local name="$1"; shift
  local port; port="$(free_port)"
  env KEYWARD_LOG=warn KEYWARD_PEPPER="$PEPPER" "$@" "$KEYWARD_BIN" serve --data-dir "$WORK/$name" \
    --listen "127.0.0.1:$port" > "$WORK/$name.log" 2>&1 &
  STARTED_PIDS+=("$!")
  eval "PID_$name=$!"
  eval "PORT_$name=$port"
  wait_http "http://127.0.0.1:$port/healthz" 30
}

# make_keys PORT ROOT: a keyspace without default limits and ROTATE_KEYS keys in $WORK/keys.txt.
make_keys() {
  local base="http://127.0.0.1:$1" root="$2"
  local H=(-H "Authorization: Bearer $root" -H 'Content-Type: application/json')
  local ks; ks="$(curl -s "${H[@]}" -d '{"name":"bench","prefix":"bk_live","default_ratelimits":[]}' "$base/v1/keyspaces" | jq -r .id)"
  [ -n "$ks" ] && [ "$ks" != null ] || die "keyspace not created"
  : > "$WORK/keys.txt"
  for i in $(seq "$ROTATE_KEYS"); do
    curl -s "${H[@]}" -d "{\"keyspace_id\":\"$ks\",\"scopes\":[\"read\"],\"owner_id\":\"c$((i % 50))\"}" "$base/v1/keys" \
      | jq -r .key >> "$WORK/keys.txt"
  done
}

# load MODE ROOT PORT...: one wrk per port at once (threads split), one summed line.
load() {
  local mode="$1" root="$2"; shift 2
  local n=$# threads conns pids=() i=0
  threads=$(( THREADS / n )); [ "$threads" -ge 1 ] || threads=1
  conns=$(( CONNS / n ))
  for port in "$@"; do
    ROOT_KEY="$root" KEYS_FILE="$WORK/keys.txt" timeout $((DURATION + 15)) \
      wrk -t"$threads" -c"$conns" -d"${DURATION}s" --timeout 5s --latency -s "$PEERS/wrk/rotate_verify.lua" \
      "http://127.0.0.1:$port/v1/keys/verify" > "$WORK/wrk.$mode.$i.txt" 2>&1 &
    pids+=("$!"); i=$((i + 1))
  done
  for p in "${pids[@]}"; do wait "$p" || die "wrk failed"; done
  local total=0 line
  for f in "$WORK"/wrk."$mode".*.txt; do
    cat "$f" >&2
    line="$(parse_wrk "$mode" "$f" | tail -n1)"
    total=$(( total + $(echo "$line" | sed -E 's/.*rps=([0-9]+).*/\1/') ))
  done
  # Latencies of the first node's client; throughput summed over all.
  echo "$line" | sed -E "s/^[^ ]+ rps=[0-9]+/$mode rps=$total/"
}

# 1. embedded
ROOT="$(KEYWARD_PEPPER="$PEPPER" "$KEYWARD_BIN" init --data-dir "$WORK/embedded" 2>/dev/null)"
start_node embedded
make_keys "$PORT_embedded" "$ROOT"
load embedded "$ROOT" "$PORT_embedded"
stop_pid "$PID_embedded"

# 2. one node on PostgreSQL + Redis
CL=(KEYWARD_DATABASE_URL="$DB" KEYWARD_REDIS_URL="$REDIS")
ROOT="$(env KEYWARD_PEPPER="$PEPPER" "${CL[@]}" "$KEYWARD_BIN" init --data-dir "$WORK/a" 2>/dev/null)"
start_node a "${CL[@]}"
make_keys "$PORT_a" "$ROOT"
load pg1 "$ROOT" "$PORT_a"

# 3. three nodes on the same database, the same keys
start_node b "${CL[@]}"
start_node c "${CL[@]}"
load pg3 "$ROOT" "$PORT_a" "$PORT_b" "$PORT_c"
log "events in PostgreSQL: $("$PGBIN/psql" -h 127.0.0.1 -p "$PGPORT" -U keyward -d kw -tAc 'SELECT count(*) FROM events')"
