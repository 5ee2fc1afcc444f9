#!/usr/bin/env bash
# keyward side by side with nginx (issue 11): builds the release binary and runs the
# peer scripts of ../shared/bench/peers in one pass, RUNS times each (default 3), so
# the ratios come from one run. Needs Debian's nginx and wrk (apt-get install nginx wrk).
#
#   scripts/bench-peers.sh            # RUNS=3 by default; medians under ../shared/bench/peers/results/
set -euo pipefail
cd "$(dirname "$0")/.."
PEERS=../shared/bench/peers
[ -d "$PEERS" ] || { echo "needs the peer scripts at $PEERS (../shared beside the project)" >&2; exit 2; }
for tool in nginx wrk jq curl; do
  command -v "$tool" >/dev/null || { echo "needs $tool: apt-get install nginx wrk jq curl" >&2; exit 2; }
done
cargo build --release -q -p keyward
export KEYWARD_BIN=$PWD/target/release/keyward
cd "$PEERS"
RUNS=${RUNS:-3} ./run_all.sh nginx_static keyward_verify nginx_keyauth_proxy keyward_proxy upstream_direct
