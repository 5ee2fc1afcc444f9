#!/usr/bin/env bash
# Load test of POST /v1/keys/verify over HTTP with wrk (Debian package `wrk`).
# Starts a release server on a temp data dir, creates a key with a full policy,
# and runs wrk against it from this machine (loopback only).
#
#   scripts/load-verify.sh [duration_seconds] [connections] [threads]
set -euo pipefail
cd "$(dirname "$0")/.."
DURATION=${1:-10}
CONNECTIONS=${2:-32}
THREADS=${3:-1}
command -v wrk >/dev/null || { echo "needs wrk: apt-get install wrk" >&2; exit 2; }
command -v jq >/dev/null || { echo "needs jq: apt-get install jq" >&2; exit 2; }
cargo build --release -q -p keyward
DATA=$(mktemp -d)
PORT=${PORT:-18089}
trap 'kill $PID 2>/dev/null || true; rm -rf "$DATA"' EXIT
ROOT=$(./target/release/keyward init --data-dir "$DATA" 2>/dev/null)
KEYWARD_LOG=warn ./target/release/keyward serve --data-dir "$DATA" --listen "127.0.0.1:$PORT" >/dev/null 2>&1 &
PID=$!
for _ in $(seq 50); do curl -sf "localhost:$PORT/healthz" >/dev/null && break; sleep 0.1; done
H=(-H "Authorization: Bearer $ROOT" -H 'Content-Type: application/json')
KS=$(curl -s "${H[@]}" -d '{"name":"load"}' "localhost:$PORT/v1/keyspaces" | jq -r .id)
KEY=$(curl -s "${H[@]}" -d "{\"keyspace_id\":\"$KS\",\"scopes\":[\"read\",\"invoices:*\"],\"ip_allowlist\":[\"10.0.0.0/8\",\"192.168.0.0/16\",\"2001:db8::/32\",\"203.0.113.0/24\"],\"ratelimits\":[{\"name\":\"s\",\"limit\":1000000000,\"window_ms\":1000},{\"name\":\"m\",\"limit\":1000000000,\"window_ms\":60000}],\"remaining\":1000000000000}" "localhost:$PORT/v1/keys" | jq -r .key)
LUA=$(mktemp --suffix=.lua)
cat > "$LUA" <<LUA
wrk.method = "POST"
wrk.body = '{"key":"$KEY","ip":"203.0.113.9","method":"GET","path":"/invoices/42","scopes":["invoices:read"]}'
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer $ROOT"
LUA
wrk -t"$THREADS" -c"$CONNECTIONS" -d"${DURATION}s" --latency -s "$LUA" "http://127.0.0.1:$PORT/v1/keys/verify"
echo "events written: $(curl -s "localhost:$PORT/readyz" | jq .events.written), dropped: $(curl -s "localhost:$PORT/readyz" | jq .events.dropped)"
rm -f "$LUA"
