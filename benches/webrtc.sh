#!/usr/bin/env bash
# WebRTC (WHEP) players vs SDES SRTP players on the same stream, side by side.
#
#   benches/webrtc.sh                          # N = 50 200 500, 3 alternating rounds, 10 s
#   NS="50 200 500 1000 2000" REPEAT=3 benches/webrtc.sh
#
# Per N and round, twice (SRTP first, then WHEP; the order alternates by round): a fresh
# `mediaserver run`, one SRTP publisher (`load publish --srtp`, PPS packets/s of SIZE bytes,
# VP8 on PT 96), then N players for DURATION s: `load play --srtp` (SDES, the server encrypts
# per player) or `load play --whep` (str0m peers: ICE + DTLS-SRTP, one thread). Prints the
# server's CPU per delivered packet (from /proc/PID/stat over the window), RSS per player,
# WHEP connect times, and the ratio WHEP/SRTP per round with its median. Every step is
# time-bounded; every process started here is stopped on exit.
#
# Knobs (environment): NS REPEAT DURATION PPS SIZE SUITE HTTP PLAYER_BASE PUBLISHER_BASE OUT
# SKIP_BUILD=1 SERVER_BIN LOAD_BIN.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
NS=${NS:-50 200 500}
REPEAT=${REPEAT:-3}
DURATION=${DURATION:-10}
# ~135 packets/s: one H264 stream at ~1.2 Mbit/s, what the issue measured.
PPS=${PPS:-135}
SIZE=${SIZE:-1100}
SUITE=${SUITE:-AES_CM_128_HMAC_SHA1_80}
HTTP=${HTTP:-127.0.0.1:8081}
# Above Linux's ephemeral range (32768-60999) and the server's media range.
PLAYER_BASE=${PLAYER_BASE:-61100}
PUBLISHER_BASE=${PUBLISHER_BASE:-61010}
OUT=${OUT:-target/webrtc-bench}
TARGET_DIR=${CARGO_TARGET_DIR:-target}
SERVER_BIN=${SERVER_BIN:-$TARGET_DIR/release/mediaserver}
LOAD_BIN=${LOAD_BIN:-$TARGET_DIR/release/load}

die() { echo "webrtc.sh: $*" >&2; exit 1; }
tcp_open() { (exec 3<>"/dev/tcp/${1%:*}/${1##*:}") 2>/dev/null; }
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; }
trap cleanup EXIT

if [[ "${SKIP_BUILD:-0}" != 1 ]]; then
    cargo build --release -p control --bin mediaserver -p benches --bin load >&2 ||
        die "build failed"
fi
[[ -x "$SERVER_BIN" && -x "$LOAD_BIN" ]] || die "binaries missing: $SERVER_BIN $LOAD_BIN"
mkdir -p "$OUT"
cat >"$OUT/bench.toml" <<'TOML'
[media]
pending_timeout_ms = 0
TOML

# run KIND N ROUND: fresh server + publisher, N players of KIND (srtp|whep), all stopped after.
run() {
    local kind=$1 n=$2 round=$3 json="$OUT/$1-$2-$3.json"
    tcp_open "$HTTP" && die "something already listens on $HTTP"
    "$SERVER_BIN" run --config "$OUT/bench.toml" >"$OUT/server.log" 2>&1 &
    local spid=$!; PIDS+=("$spid")
    for _ in $(seq 100); do tcp_open "$HTTP" && break; sleep 0.1; done
    tcp_open "$HTTP" || die "server did not start (log: $OUT/server.log)"
    # The publisher outlives the players' connect phase (the tool POSTs one offer at a time:
    # ~60 ms each at 1,000 players) and window.
    local live=$((DURATION + 90 + n / 5))
    timeout $((live + 30)) "$LOAD_BIN" publish --server "http://$HTTP" --name w \
        --srtp "$SUITE" --pps "$PPS" --size "$SIZE" --duration "$live" --quiet \
        --publisher-base-port "$PUBLISHER_BASE" >"$OUT/publisher.log" 2>&1 &
    local ppid=$!; PIDS+=("$ppid")
    sleep 1
    local extra=(--srtp "$SUITE")
    [[ $kind == whep ]] && extra=(--whep)
    timeout $((live + 20)) "$LOAD_BIN" play --server "http://$HTTP" --name w \
        --players "$n" --duration "$DURATION" --server-pid "$spid" --quiet \
        --player-base-port "$PLAYER_BASE" "${extra[@]}" --json "$json" >"$OUT/$kind-$n-$round.log" 2>&1 ||
        { tail -5 "$OUT/$kind-$n-$round.log" >&2; die "$kind N=$n round $round failed"; }
    kill "$ppid" "$spid" 2>/dev/null || true
    wait "$ppid" "$spid" 2>/dev/null || true
}

# us_per_packet KIND JSON, rss_per_player KIND JSON
us_per_packet() {
    python3 -c '
import json, sys
r = json.load(open(sys.argv[2]))
if sys.argv[1] == "whep":
    v = r.get("server_cpu_us_per_packet")
else:
    c = r.get("target_cpu"); v = 1e6 / c["rx_pps_per_core"] if c and c["rx_pps_per_core"] > 0 else None
print("-" if v is None else "%.3f" % v)' "$1" "$2"
}
rss_per_player() {
    python3 -c '
import json, sys
r = json.load(open(sys.argv[2]))
v = r.get("server_rss_kib_per_player") if sys.argv[1] == "whep" else (r.get("rss") or {}).get("per_player_kib")
print("-" if v is None else "%.1f" % v)' "$1" "$2"
}
median() { python3 -c 'import statistics,sys; v=[float(x) for x in sys.argv[1:] if x != "-"]; print("%.3f" % statistics.median(v) if v else "-")' "$@"; }

printf '%-6s %-5s %-6s %12s %12s %14s %s\n' N round kind "us/packet" "KiB/player" "WHEP/SRTP" "connect p50/p99/max ms"
declare -A SUM
for n in $NS; do
    ratios=() whep_us=() srtp_us=() whep_rss=() srtp_rss=()
    for round in $(seq "$REPEAT"); do
        order=(srtp whep); (( round % 2 == 0 )) && order=(whep srtp)
        for kind in "${order[@]}"; do run "$kind" "$n" "$round"; done
        s=$(us_per_packet srtp "$OUT/srtp-$n-$round.json"); w=$(us_per_packet whep "$OUT/whep-$n-$round.json")
        sr=$(rss_per_player srtp "$OUT/srtp-$n-$round.json"); wr=$(rss_per_player whep "$OUT/whep-$n-$round.json")
        ratio=$(python3 -c 'import sys; a,b=sys.argv[1:]; print("-" if "-" in (a,b) else "%.2f" % (float(a)/float(b)))' "$w" "$s")
        conn=$(python3 -c 'import json,sys; c=json.load(open(sys.argv[1]))["connect_ms"]; print("%.0f/%.0f/%.0f" % (c["p50"], c["p99"], c["max"]) if c else "-")' "$OUT/whep-$n-$round.json")
        printf '%-6s %-5s %-6s %12s %12s %14s\n' "$n" "$round" srtp "$s" "$sr" ""
        printf '%-6s %-5s %-6s %12s %12s %14s %s\n' "$n" "$round" whep "$w" "$wr" "$ratio" "$conn"
        ratios+=("$ratio") whep_us+=("$w") srtp_us+=("$s") whep_rss+=("$wr") srtp_rss+=("$sr")
    done
    SUM[$n]="srtp $(median "${srtp_us[@]}") us, $(median "${srtp_rss[@]}") KiB/player; whep $(median "${whep_us[@]}") us, $(median "${whep_rss[@]}") KiB/player; WHEP/SRTP cpu $(median "${ratios[@]}")"
done
echo
echo "medians of $REPEAT rounds (server CPU per delivered packet, RSS per player):"
for n in $NS; do echo "  N=$n: ${SUM[$n]}"; done
echo "reports: $OUT/{srtp,whep}-N-ROUND.json"
