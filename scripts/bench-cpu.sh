#!/usr/bin/env bash
# CPU time per request, by thread (issue 11): runs one script of ../shared/bench/peers and,
# over 7 s in the middle of its wrk load, reads the CPU time of every thread of the server
# (keyward or nginx) and of wrk from /proc, divided by the requests answered in that time.
# Requests per second swing by ±15 % on a shared 2-core box; CPU per request is steadier,
# and says which thread a change made cheaper.
#
#   scripts/bench-cpu.sh                      # keyward_verify.sh with target/release/keyward
#   scripts/bench-cpu.sh keyward_proxy.sh
#   scripts/bench-cpu.sh nginx_static.sh      # the peer, for comparison
#   KEYWARD_BIN=/tmp/other-build scripts/bench-cpu.sh
#
# Prints the script's own last line, then one line per thread kind:
#   keyward-event-w      8.14 us/req (0.41 cores)
set -euo pipefail
cd "$(dirname "$0")/.."
PEERS=$PWD/../shared/bench/peers
[ -d "$PEERS" ] || { echo "needs the peer scripts at $PEERS (../shared beside the project)" >&2; exit 2; }
SCRIPT=${1:-keyward_verify.sh}
[ -x "$PEERS/$SCRIPT" ] || { echo "no such peer script: $PEERS/$SCRIPT" >&2; exit 2; }
export KEYWARD_BIN=${KEYWARD_BIN:-$PWD/target/release/keyward}
case "$SCRIPT" in
  keyward*) [ -x "$KEYWARD_BIN" ] || { echo "build it first: cargo build --release (or set KEYWARD_BIN)" >&2; exit 2; } ;;
esac
WINDOW=7
out=$(mktemp)
trap 'rm -f "$out"' EXIT
(cd "$PEERS" && "./$SCRIPT") > "$out" 2>&1 &
bg=$!
# The load starts once the script's set-up (1,000 keys for keyward) is done.
for _ in $(seq 600); do pgrep -x wrk >/dev/null && break; sleep 0.1; done
pgrep -x wrk >/dev/null || { cat "$out" >&2; echo "wrk never started" >&2; exit 1; }
sleep 1.5
pids="$(pgrep -f -- ' serve --data-dir' || true) $(pgrep -x nginx || true) $(pgrep -x wrk)"
# "<thread kind> <utime+stime ticks>", thread numbers dropped (keyward-http-1 → keyward-http).
snapshot() {
  for p in $pids; do
    for t in /proc/"$p"/task/*; do
      read -r -a f < "$t/stat" 2>/dev/null || continue
      echo "$(cat "$t/comm" 2>/dev/null) ${f[13]} ${f[14]}"
    done
  done | awk '{ sub(/-[0-9]+$/, "", $1); c[$1] += $2 + $3 } END { for (k in c) print k, c[k] }' | sort
}
before=$(snapshot); t0=$(date +%s.%N)
sleep "$WINDOW"
after=$(snapshot); t1=$(date +%s.%N)
wait "$bg" || { cat "$out" >&2; exit 1; }
line=$(grep " rps=" "$out" | tail -n1)
echo "$line"
rps=$(sed -n 's/.*rps=\([0-9]*\).*/\1/p' <<< "$line")
join <(echo "$before") <(echo "$after") | awk -v rps="$rps" -v t0="$t0" -v t1="$t1" -v hz="$(getconf CLK_TCK)" '
  { d = ($3 - $2) / hz; if (d == 0) next; printf "  %-18s %6.2f us/req (%.2f cores)\n", $1, d * 1e6 / (rps * (t1 - t0)), d / (t1 - t0) }'
