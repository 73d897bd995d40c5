#!/usr/bin/env bash
# Engine vs raw-relay fan-out, same load against both, side by side.
#
#   benches/fanout.sh                      # 1 publisher x 1000 pps -> 100 players, 1200 B, 10 s
#   PLAYERS=1000 PPS=200 DURATION=20 benches/fanout.sh
#
# Steps: build release (load + mediaserver), start `mediaserver run` (default config: REST on
# 127.0.0.1:8081), run `load fanout` against it (sampling the server's VmRSS before/after the
# players are created), stop it; start `load relay` (the raw batched UDP relay) towards the
# same player ports, run the same load against it, stop it; print the comparison (throughput
# ratio engine/baseline, latency percentiles, RSS per player). Every step is time-bounded and
# every process started here is stopped on exit.
#
# Knobs (environment): PUBLISHERS PLAYERS PPS (0 = unpaced) SIZE DURATION RECV_THREADS
# RELAY_THREADS OUT SERVER_BIN SERVER_ARGS HTTP RELAY_PORT PLAYER_BASE PUBLISHER_BASE SKIP_BUILD=1.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

PUBLISHERS=${PUBLISHERS:-1}
PLAYERS=${PLAYERS:-100}
PPS=${PPS:-1000}
SIZE=${SIZE:-1200}
DURATION=${DURATION:-10}
RECV_THREADS=${RECV_THREADS:-1}
# Sending threads of the raw relay; default: one per core, like the server's shards.
RELAY_THREADS=${RELAY_THREADS:-$(nproc)}
OUT=${OUT:-target/fanout-bench}
SERVER_BIN=${SERVER_BIN:-target/release/mediaserver}
SERVER_ARGS=${SERVER_ARGS:-run}
HTTP=${HTTP:-127.0.0.1:8081}
# Local ports, outside the server's default media range (20000-40000).
RELAY_PORT=${RELAY_PORT:-44000}
PUBLISHER_BASE=${PUBLISHER_BASE:-44100}
PLAYER_BASE=${PLAYER_BASE:-45000}
SKIP_BUILD=${SKIP_BUILD:-0}
LOAD_BIN=target/release/load

die() { echo "fanout.sh: $*" >&2; exit 1; }

(( PLAYERS >= 1 && PLAYER_BASE + PLAYERS - 1 <= 65535 )) || die "PLAYER_BASE + PLAYERS exceeds 65535"
(( PUBLISHERS >= 1 && PUBLISHER_BASE + PUBLISHERS <= PLAYER_BASE )) || die "publisher ports overlap player ports"
(( DURATION >= 1 && DURATION <= 3600 )) || die "DURATION must be 1..3600 s"

if (( PUBLISHERS > 1 )); then
    echo "note: the raw relay copies every publisher to every player, the server gives player j" \
        "stream j % PUBLISHERS: with $PUBLISHERS publishers the relay's load is $PUBLISHERS times larger" >&2
fi

SERVER_PID=""
RELAY_PID=""
stop_pid() {
    local pid=$1
    [[ -n "$pid" ]] || return 0
    kill -0 "$pid" 2>/dev/null || { wait "$pid" 2>/dev/null || true; return 0; }
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 50); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
}
cleanup() {
    stop_pid "$RELAY_PID"; RELAY_PID=""
    stop_pid "$SERVER_PID"; SERVER_PID=""
}
trap cleanup EXIT
trap 'exit 130' INT TERM

tcp_open() { (exec 3<>"/dev/tcp/${1%:*}/${1##*:}") 2>/dev/null; }

if [[ "$SKIP_BUILD" != 1 ]]; then
    echo "== building release binaries"
    cargo build --release -p benches --bin load
    if ! cargo build --release -p control --bin mediaserver; then
        die "could not build the server binary (package control, bin mediaserver)"
    fi
fi
[[ -x "$LOAD_BIN" ]] || die "$LOAD_BIN missing (build failed or SKIP_BUILD=1 without a build)"
[[ -x "$SERVER_BIN" ]] || die "server binary $SERVER_BIN not found: build \`mediaserver\` first or set SERVER_BIN"
mkdir -p "$OUT"

LOAD_ARGS=(--publishers "$PUBLISHERS" --players "$PLAYERS" --pps "$PPS" --size "$SIZE"
    --duration "$DURATION" --recv-threads "$RECV_THREADS"
    --player-base-port "$PLAYER_BASE" --publisher-base-port "$PUBLISHER_BASE")
RUN_LIMIT=$((DURATION + 120))

# ---- engine ---------------------------------------------------------------------------
tcp_open "$HTTP" && die "something already listens on $HTTP (another server?)"
echo "== starting $SERVER_BIN $SERVER_ARGS"
# shellcheck disable=SC2086 # SERVER_ARGS is a word list on purpose
"$SERVER_BIN" $SERVER_ARGS >"$OUT/server.log" 2>&1 &
SERVER_PID=$!
for _ in $(seq 100); do
    tcp_open "$HTTP" && break
    kill -0 "$SERVER_PID" 2>/dev/null || { tail -20 "$OUT/server.log" >&2; die "server exited during start-up"; }
    sleep 0.1
done
tcp_open "$HTTP" || die "server did not listen on $HTTP within 10 s (log: $OUT/server.log)"
echo "== engine: server pid $SERVER_PID, VmRSS $(awk '/VmRSS/ {print $2, $3}' "/proc/$SERVER_PID/status")"
timeout "$RUN_LIMIT" "$LOAD_BIN" fanout --server "http://$HTTP" --server-pid "$SERVER_PID" \
    "${LOAD_ARGS[@]}" --json "$OUT/engine.json" --svg "$OUT/engine.svg"
echo "== engine: server VmRSS after the run $(awk '/VmRSS/ {print $2, $3}' "/proc/$SERVER_PID/status")"
stop_pid "$SERVER_PID"; SERVER_PID=""

# ---- raw relay baseline ----------------------------------------------------------------
echo "== starting the raw relay ($RELAY_THREADS thread(s)) on 127.0.0.1:$RELAY_PORT -> 127.0.0.1:$PLAYER_BASE-$((PLAYER_BASE + PLAYERS - 1))"
"$LOAD_BIN" relay --listen "127.0.0.1:$RELAY_PORT" \
    --to "127.0.0.1:$PLAYER_BASE-$((PLAYER_BASE + PLAYERS - 1))" \
    --threads "$RELAY_THREADS" --duration "$RUN_LIMIT" --quiet --json "$OUT/relay.json" >"$OUT/relay.log" 2>&1 &
RELAY_PID=$!
sleep 0.3
kill -0 "$RELAY_PID" 2>/dev/null || { cat "$OUT/relay.log" >&2; die "relay did not start"; }
timeout "$RUN_LIMIT" "$LOAD_BIN" fanout --raw-relay "127.0.0.1:$RELAY_PORT" \
    "${LOAD_ARGS[@]}" --json "$OUT/raw.json" --svg "$OUT/raw.svg"
stop_pid "$RELAY_PID"; RELAY_PID=""
cat "$OUT/relay.log"

# ---- comparison ------------------------------------------------------------------------
echo "== engine vs raw relay ($PUBLISHERS x $PPS pps -> $PLAYERS players, $SIZE B, $DURATION s)"
"$LOAD_BIN" compare "$OUT/engine.json" "$OUT/raw.json"
echo "reports: $OUT/{engine,raw}.json, plots: $OUT/{engine,raw}.svg"
