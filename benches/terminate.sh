#!/usr/bin/env bash
# Terminate -> last packet latency with 10,000 sessions (see benches/src/terminate.rs).
#
#   benches/terminate.sh                  # 2 probe streams x 50 players at 1000 pps + 98 x 100
#                                         # background players at 2 pps = 10,000 sessions
#   REPEAT=3 PASSES=5 benches/terminate.sh
#
# Each round starts a fresh `mediaserver run` (default config), runs `load terminate` against
# it (PASSES passes over the 100 probe players: terminate each one by REST, read when its last
# packet arrived, re-create it), stops the server. Prints each round's report and the medians
# over rounds of the p50/p99 figures. Every step is time-bounded; every process started here
# is stopped on exit.
#
# Knobs (environment): REPEAT (rounds, default 3) PASSES (default 5) HTTP SERVER_BIN LOAD_BIN
# OUT SKIP_BUILD=1 TERMINATE_ARGS (extra `load terminate` arguments, e.g. "--streams 48").
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

REPEAT=${REPEAT:-3}
PASSES=${PASSES:-5}
HTTP=${HTTP:-127.0.0.1:8081}
TARGET_DIR=${CARGO_TARGET_DIR:-target}
SERVER_BIN=${SERVER_BIN:-$TARGET_DIR/release/mediaserver}
LOAD_BIN=${LOAD_BIN:-$TARGET_DIR/release/load}
OUT=${OUT:-target/terminate-bench}
SKIP_BUILD=${SKIP_BUILD:-0}
TERMINATE_ARGS=${TERMINATE_ARGS:-}

die() { echo "terminate.sh: $*" >&2; exit 1; }
(( REPEAT >= 1 && REPEAT <= 20 )) || die "REPEAT must be 1..20"
(( PASSES >= 1 && PASSES <= 100 )) || die "PASSES must be 1..100"

SERVER_PID=""
stop_server() {
    [[ -n "$SERVER_PID" ]] || return 0
    kill -TERM "$SERVER_PID" 2>/dev/null || true
    for _ in $(seq 50); do
        kill -0 "$SERVER_PID" 2>/dev/null || break
        sleep 0.1
    done
    kill -KILL "$SERVER_PID" 2>/dev/null || true
    wait "$SERVER_PID" 2>/dev/null || true
    SERVER_PID=""
}
trap stop_server EXIT
trap 'exit 130' INT TERM
tcp_open() { (exec 3<>"/dev/tcp/${1%:*}/${1##*:}") 2>/dev/null; }

if [[ "$SKIP_BUILD" != 1 ]]; then
    cargo build --release -p benches --bin load
    cargo build --release -p control --bin mediaserver
fi
[[ -x "$LOAD_BIN" && -x "$SERVER_BIN" ]] || die "binaries missing ($LOAD_BIN, $SERVER_BIN)"
mkdir -p "$OUT"
# The load tool creates every player before its publishers send, which can take longer than
# the default 30 s pending deadline at 10,000 sessions: no pending deadline while benchmarking.
cat >"$OUT/bench.toml" <<'TOML'
[media]
pending_timeout_ms = 0
TOML

for round in $(seq "$REPEAT"); do
    tcp_open "$HTTP" && die "something already listens on $HTTP (another server?)"
    "$SERVER_BIN" run --config "$OUT/bench.toml" >"$OUT/server.log" 2>&1 &
    SERVER_PID=$!
    for _ in $(seq 100); do
        tcp_open "$HTTP" && break
        kill -0 "$SERVER_PID" 2>/dev/null || die "server exited during start-up (log: $OUT/server.log)"
        sleep 0.1
    done
    tcp_open "$HTTP" || die "server did not listen on $HTTP within 10 s"
    echo "==== round $round/$REPEAT ($(uptime | sed 's/.*load/load/'))"
    # shellcheck disable=SC2086 # TERMINATE_ARGS is a word list on purpose
    timeout 600 "$LOAD_BIN" terminate --server "http://$HTTP" --passes "$PASSES" --quiet \
        $TERMINATE_ARGS --json "$OUT/terminate-$round.json"
    stop_server
done

echo "==== medians over $REPEAT round(s)"
for f in "after_reply p50_us" "after_reply p99_us" "after_request p50_us" "after_request p99_us" \
    "rest_round_trip p50_us" "rest_round_trip p99_us"; do
    set -- $f
    vals=$(for r in $(seq "$REPEAT"); do
        sed -n "/\"$1\"/,/}/p" "$OUT/terminate-$r.json" | awk -v k="\"$2\":" '$1 == k {gsub(",", "", $2); print $2}'
    done | sort -g)
    med=$(echo "$vals" | awk '{a[NR]=$1} END {if (NR % 2) print a[(NR+1)/2]; else print (a[NR/2]+a[NR/2+1])/2}')
    printf '%-28s %10.0f us   (rounds: %s)\n' "$1 $2" "$med" "$(echo $vals | tr '\n' ' ')"
done
