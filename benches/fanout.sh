#!/usr/bin/env bash
# Engine vs raw-relay fan-out, same load against both, side by side: plain RTP and SRTP.
#
#   benches/fanout.sh                      # 1 publisher x 1000 pps -> 100 players, 1200 B, 10 s
#   PLAYERS=1000 PPS=200 DURATION=20 benches/fanout.sh
#   PPS=3000 SIZE=1100 REPEAT=3 benches/fanout.sh              # saturation, medians of 3
#   SRTP=AES_CM_128_HMAC_SHA1_80,AEAD_AES_128_GCM benches/fanout.sh
#   SRTP=none benches/fanout.sh            # plain RTP only
#
# Steps, REPEAT times: start `mediaserver run` (default config: REST on 127.0.0.1:8081), run
# `load fanout` against it with plain RTP (sampling the server's VmRSS before/after the players
# are created, and its CPU time over the run), stop it; for each suite in SRTP the same with a
# fresh server and `--srtp SUITE` (publishers and players post SDP offers with a=crypto keys,
# the server decrypts once and encrypts per player); then start `load relay` (the raw batched
# UDP relay, plain UDP: the physical-limit yardstick for both) towards the same player ports
# and run the plain load against it. Then print each comparison and the ratios
# engine(plain)/relay and engine(SRTP)/relay per round and their medians. Every step is
# time-bounded and every process started here is stopped on exit.
#
# Knobs (environment): PUBLISHERS PLAYERS PPS (0 = unpaced) SIZE DURATION RECV_THREADS
# RELAY_THREADS OUT SERVER_BIN SERVER_ARGS HTTP RELAY_PORT PLAYER_BASE PUBLISHER_BASE
# SKIP_BUILD=1, SRTP (comma-separated suites, default AES_CM_128_HMAC_SHA1_80; `none`: plain
# only), SRTP_CHECK_EVERY (players decrypt 1 datagram in N, default 64), REPEAT (rounds,
# default 1). Binaries come from $CARGO_TARGET_DIR (default target/) unless SERVER_BIN /
# LOAD_BIN say otherwise.
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
TARGET_DIR=${CARGO_TARGET_DIR:-target}
SERVER_BIN=${SERVER_BIN:-$TARGET_DIR/release/mediaserver}
SERVER_ARGS=${SERVER_ARGS:-run --config $OUT/bench.toml}
HTTP=${HTTP:-127.0.0.1:8081}
# Local ports, outside the server's default media range (10000-32767); bound explicitly, so a
# port some other socket holds fails the run loudly.
RELAY_PORT=${RELAY_PORT:-44000}
PUBLISHER_BASE=${PUBLISHER_BASE:-44100}
PLAYER_BASE=${PLAYER_BASE:-45000}
SKIP_BUILD=${SKIP_BUILD:-0}
LOAD_BIN=${LOAD_BIN:-$TARGET_DIR/release/load}
SRTP=${SRTP:-AES_CM_128_HMAC_SHA1_80}
SRTP_CHECK_EVERY=${SRTP_CHECK_EVERY:-64}
REPEAT=${REPEAT:-1}
SUITES=()
if [[ "$SRTP" != none && -n "$SRTP" ]]; then
    IFS=, read -r -a SUITES <<<"$SRTP"
fi

die() { echo "fanout.sh: $*" >&2; exit 1; }

(( PLAYERS >= 1 && PLAYER_BASE + PLAYERS - 1 <= 65535 )) || die "PLAYER_BASE + PLAYERS exceeds 65535"
(( PUBLISHERS >= 1 && PUBLISHER_BASE + PUBLISHERS <= PLAYER_BASE )) || die "publisher ports overlap player ports"
(( DURATION >= 1 && DURATION <= 3600 )) || die "DURATION must be 1..3600 s"
(( REPEAT >= 1 && REPEAT <= 20 )) || die "REPEAT must be 1..20"
if (( PPS == 0 && ${#SUITES[@]} > 0 )); then
    # An unpaced publisher outruns the server, whose input socket then drops long runs of
    # packets; once 2^15 consecutive ones are lost the SRTP rollover counter desynchronises
    # (RFC 3711 3.3.1) and every later packet fails authentication: SRTP needs a paced load.
    echo "note: PPS=0 (unpaced): SRTP runs skipped (use a high paced rate, e.g. PPS=3000)" >&2
    SUITES=()
fi
for s in "${SUITES[@]}"; do
    [[ "$s" == AES_CM_128_HMAC_SHA1_80 || "$s" == AEAD_AES_128_GCM ]] || die "unknown SRTP suite $s"
done

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
# The load tool creates every player before its publishers send, which can take longer than
# the default 30 s pending deadline at 10,000 sessions: no pending deadline while benchmarking.
cat >"$OUT/bench.toml" <<'TOML'
[media]
pending_timeout_ms = 0
TOML

LOAD_ARGS=(--publishers "$PUBLISHERS" --players "$PLAYERS" --pps "$PPS" --size "$SIZE"
    --duration "$DURATION" --recv-threads "$RECV_THREADS"
    --player-base-port "$PLAYER_BASE" --publisher-base-port "$PUBLISHER_BASE")
RUN_LIMIT=$((DURATION + 120))

start_server() {
    tcp_open "$HTTP" && die "something already listens on $HTTP (another server?)"
    # shellcheck disable=SC2086 # SERVER_ARGS is a word list on purpose
    "$SERVER_BIN" $SERVER_ARGS >"$OUT/server.log" 2>&1 &
    SERVER_PID=$!
    for _ in $(seq 100); do
        tcp_open "$HTTP" && break
        kill -0 "$SERVER_PID" 2>/dev/null || { tail -20 "$OUT/server.log" >&2; die "server exited during start-up"; }
        sleep 0.1
    done
    tcp_open "$HTTP" || die "server did not listen on $HTTP within 10 s (log: $OUT/server.log)"
}

# engine_run NAME [load args...]: a fresh server, one load run against it, server stopped.
engine_run() {
    local name=$1; shift
    start_server
    echo "== $name: server pid $SERVER_PID, VmRSS $(awk '/VmRSS/ {print $2, $3}' "/proc/$SERVER_PID/status")"
    timeout "$RUN_LIMIT" "$LOAD_BIN" fanout --server "http://$HTTP" --server-pid "$SERVER_PID" \
        "${LOAD_ARGS[@]}" "$@" --json "$OUT/$name.json" --svg "$OUT/$name.svg"
    echo "== $name: server VmRSS after the run $(awk '/VmRSS/ {print $2, $3}' "/proc/$SERVER_PID/status")"
    stop_pid "$SERVER_PID"; SERVER_PID=""
}

relay_run() {
    local name=$1
    echo "== $name: raw relay ($RELAY_THREADS thread(s)) on 127.0.0.1:$RELAY_PORT -> 127.0.0.1:$PLAYER_BASE-$((PLAYER_BASE + PLAYERS - 1))"
    "$LOAD_BIN" relay --listen "127.0.0.1:$RELAY_PORT" \
        --to "127.0.0.1:$PLAYER_BASE-$((PLAYER_BASE + PLAYERS - 1))" \
        --threads "$RELAY_THREADS" --duration "$RUN_LIMIT" --quiet --json "$OUT/$name-relay.json" >"$OUT/relay.log" 2>&1 &
    RELAY_PID=$!
    sleep 0.3
    kill -0 "$RELAY_PID" 2>/dev/null || { cat "$OUT/relay.log" >&2; die "relay did not start"; }
    timeout "$RUN_LIMIT" "$LOAD_BIN" fanout --raw-relay "127.0.0.1:$RELAY_PORT" --server-pid "$RELAY_PID" \
        "${LOAD_ARGS[@]}" --json "$OUT/$name.json" --svg "$OUT/$name.svg"
    stop_pid "$RELAY_PID"; RELAY_PID=""
    cat "$OUT/relay.log"
}

# ratio_of ENGINE.json BASELINE.json: the throughput ratio line of `load compare`.
ratio_of() { "$LOAD_BIN" compare "$1" "$2" | awk '/throughput ratio:/ {print $NF}'; }
median() { sort -g | awk '{a[NR]=$1} END {if (NR == 0) print "-"; else if (NR % 2) print a[(NR+1)/2]; else printf "%.3f\n", (a[NR/2]+a[NR/2+1])/2}'; }

declare -A RATIOS=()
for round in $(seq "$REPEAT"); do
    echo "==== round $round/$REPEAT ($(uptime | sed 's/.*load/load/'))"
    engine_run "engine-$round"
    for suite in "${SUITES[@]}"; do
        engine_run "srtp-$suite-$round" --srtp "$suite" --srtp-check-every "$SRTP_CHECK_EVERY"
    done
    relay_run "raw-$round"
    echo "== round $round: engine (plain RTP) vs raw relay ($PUBLISHERS x $PPS pps -> $PLAYERS players, $SIZE B, $DURATION s)"
    "$LOAD_BIN" compare "$OUT/engine-$round.json" "$OUT/raw-$round.json"
    RATIOS[plain]+="$(ratio_of "$OUT/engine-$round.json" "$OUT/raw-$round.json") "
    for suite in "${SUITES[@]}"; do
        echo "== round $round: engine (SRTP $suite) vs raw relay (plain)"
        "$LOAD_BIN" compare "$OUT/srtp-$suite-$round.json" "$OUT/raw-$round.json"
        RATIOS[$suite]+="$(ratio_of "$OUT/srtp-$suite-$round.json" "$OUT/raw-$round.json") "
    done
done

echo "==== throughput ratios ($PUBLISHERS x $PPS pps -> $PLAYERS players, $SIZE B, $DURATION s, $REPEAT round(s)): per round; median"
for k in plain "${SUITES[@]}"; do
    label="engine(plain RTP)/relay"
    [[ "$k" == plain ]] || label="engine(SRTP $k)/relay"
    # shellcheck disable=SC2086 # word list on purpose
    printf '%-44s %s; median %s\n' "$label" "${RATIOS[$k]}" "$(printf '%s\n' ${RATIOS[$k]} | median)"
done
echo "reports: $OUT/{engine,srtp-*,raw}-N.json, plots: the same names .svg"
