#!/usr/bin/env bash
# WebRTC (WHEP) players vs SDES SRTP players on the same stream, side by side.
#
#   benches/webrtc.sh                          # N = 50 200 500, 3 alternating rounds, 10 s
#   NS="50 200 500 1000 2000" REPEAT=3 benches/webrtc.sh
#   MODE=connect EXISTING=500 NEW=500 REPEAT=3 benches/webrtc.sh   # age p99 while NEW connect
#
# Per N and round, once per kind in KINDS (the order rotates by round): a fresh
# `mediaserver run`, one SRTP publisher (`load publish --srtp`, PPS packets/s of SIZE bytes,
# VP8 on PT 96), then N players for DURATION s: `srtp` = `load play --srtp` (SDES, the server
# encrypts per player), `whep` = `load play --whep` (str0m peers: ICE + DTLS-SRTP, one
# thread) against the default server (media protected in place by the engine), `whep-str0m`
# = the same players against `[webrtc] protect_in_place = false` (every packet through
# str0m: the "before"). Prints the server's CPU per delivered packet (from /proc/PID/stat
# over the window), RSS per player, WHEP connect times and loss, and each WHEP kind's ratio
# to SRTP per round with its median.
#
# MODE=connect: EXISTING WHEP players play, then NEW more connect; the server's own
# packet-age-at-send histogram (/metrics) over the NEW players' connect phase gives the p99
# age (bucket bound) of what every player was sent meanwhile, per kind (whep, whep-str0m).
# Every step is time-bounded; every process started here is stopped on exit.
#
# Knobs (environment): NS KINDS REPEAT DURATION PPS SIZE SUITE HTTP PLAYER_BASE
# PUBLISHER_BASE OUT MODE EXISTING NEW SKIP_BUILD=1 SERVER_BIN LOAD_BIN.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
NS=${NS:-50 200 500}
KINDS=${KINDS:-srtp whep whep-str0m}
MODE=${MODE:-cost}
EXISTING=${EXISTING:-500}
NEW=${NEW:-500}
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
cat "$OUT/bench.toml" - >"$OUT/bench-str0m.toml" <<'TOML'
[webrtc]
protect_in_place = false
TOML
conf_of() { [[ $1 == whep-str0m ]] && echo "$OUT/bench-str0m.toml" || echo "$OUT/bench.toml"; }

# start_server KIND LIVE: a fresh server for KIND and an SRTP publisher of stream w for LIVE s
# (SPID, PPID set).
start_server() {
    local kind=$1 live=$2
    tcp_open "$HTTP" && die "something already listens on $HTTP"
    "$SERVER_BIN" run --config "$(conf_of "$kind")" >"$OUT/server.log" 2>&1 &
    SPID=$!; PIDS+=("$SPID")
    for _ in $(seq 100); do tcp_open "$HTTP" && break; sleep 0.1; done
    tcp_open "$HTTP" || die "server did not start (log: $OUT/server.log)"
    timeout $((live + 30)) "$LOAD_BIN" publish --server "http://$HTTP" --name w \
        --srtp "$SUITE" --pps "$PPS" --size "$SIZE" --duration "$live" --quiet \
        --publisher-base-port "$PUBLISHER_BASE" >"$OUT/publisher.log" 2>&1 &
    PPID_=$!; PIDS+=("$PPID_")
    sleep 1
}

# run KIND N ROUND: fresh server + publisher, N players of KIND, all stopped after.
run() {
    local kind=$1 n=$2 round=$3 json="$OUT/$1-$2-$3.json"
    # The publisher outlives the players' connect phase and window.
    local live=$((DURATION + 90 + n / 5))
    start_server "$kind" "$live"
    local spid=$SPID ppid=$PPID_
    local extra=(--srtp "$SUITE")
    [[ $kind == whep* ]] && extra=(--whep)
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
if sys.argv[1].startswith("whep"):
    v = r.get("server_cpu_us_per_packet")
else:
    c = r.get("target_cpu"); v = 1e6 / c["rx_pps_per_core"] if c and c["rx_pps_per_core"] > 0 else None
print("-" if v is None else "%.3f" % v)' "$1" "$2"
}
rss_per_player() {
    python3 -c '
import json, sys
r = json.load(open(sys.argv[2]))
v = r.get("server_rss_kib_per_player") if sys.argv[1].startswith("whep") else (r.get("rss") or {}).get("per_player_kib")
print("-" if v is None else "%.1f" % v)' "$1" "$2"
}
median() { python3 -c 'import statistics,sys; v=[float(x) for x in sys.argv[1:] if x != "-"]; print("%.3f" % statistics.median(v) if v else "-")' "$@"; }

# age_p99 BEFORE AFTER: the smallest bucket bound holding 99% of the packets sent between two
# /metrics scrapes of mediaserver_packet_age_at_send_seconds, and the packet count.
age_p99() {
    python3 - "$1" "$2" <<'PY'
import re, sys
def buckets(path):
    b = {}
    for line in open(path):
        m = re.match(r'mediaserver_packet_age_at_send_seconds_bucket\{le="([^"]+)"\} (\S+)', line)
        if m: b[m.group(1)] = float(m.group(2))
    return b
a, z = buckets(sys.argv[1]), buckets(sys.argv[2])
les = sorted(z, key=lambda k: float("inf") if k == "+Inf" else float(k))
total = z["+Inf"] - a.get("+Inf", 0)
if total <= 0: print("- 0"); sys.exit()
for le in les:
    if z[le] - a.get(le, 0) >= 0.99 * total:
        print("%s %d" % ("inf" if le == "+Inf" else "%g ms" % (float(le) * 1000), total)); break
PY
}

if [[ $MODE == connect ]]; then
    printf '%-11s %-5s %18s %10s %22s %8s\n' kind round "age p99 (bucket)" packets "new connect p50/p99/max" "loss %"
    for round in $(seq "$REPEAT"); do
        for kind in whep whep-str0m; do
            start_server "$kind" $((DURATION + 60))
            timeout $((DURATION + 50)) "$LOAD_BIN" play --server "http://$HTTP" --name w --whep \
                --players "$EXISTING" --duration $((DURATION + 20)) --quiet \
                --player-base-port "$PLAYER_BASE" --json "$OUT/exist-$kind-$round.json" \
                >"$OUT/exist-$kind-$round.log" 2>&1 &
            epid=$!; PIDS+=("$epid")
            # The existing players connect (1,000 take ~2 s) and settle.
            sleep $((3 + EXISTING / 250))
            curl -sf "http://$HTTP/metrics" >"$OUT/m0" || die "no /metrics"
            timeout 60 "$LOAD_BIN" play --server "http://$HTTP" --name w --whep \
                --players "$NEW" --duration 1 --quiet \
                --player-base-port $((PLAYER_BASE + EXISTING)) --json "$OUT/new-$kind-$round.json" \
                >"$OUT/new-$kind-$round.log" 2>&1 || { tail -3 "$OUT/new-$kind-$round.log" >&2; die "new players failed"; }
            curl -sf "http://$HTTP/metrics" >"$OUT/m1" || die "no /metrics"
            read -r p99 unit total <<<"$(age_p99 "$OUT/m0" "$OUT/m1")"
            wait "$epid" || true
            conn=$(python3 -c 'import json,sys; c=json.load(open(sys.argv[1]))["connect_ms"]; print("%.0f/%.0f/%.0f" % (c["p50"], c["p99"], c["max"]) if c else "-")' "$OUT/new-$kind-$round.json")
            loss=$(python3 -c 'import json,sys; print("%.2f" % json.load(open(sys.argv[1]))["loss_pct"])' "$OUT/exist-$kind-$round.json" 2>/dev/null || echo -)
            printf '%-11s %-5s %18s %10s %22s %8s\n' "$kind" "$round" "$p99 $unit" "$total" "$conn" "$loss"
            kill "$PPID_" "$SPID" 2>/dev/null || true
            wait "$PPID_" "$SPID" 2>/dev/null || true
        done
    done
    echo "loss % = the EXISTING players' loss over their whole run (their window spans the connects)"
    exit 0
fi

read -ra KIND_LIST <<<"$KINDS"
printf '%-6s %-5s %-11s %12s %12s %10s %8s %s\n' N round kind "us/packet" "KiB/player" "/SRTP" "loss %" "connect p50/p99/max ms"
declare -A SUM
for n in $NS; do
    declare -A US=() RSS=() RAT=()
    for round in $(seq "$REPEAT"); do
        # Rotate the order by round, so no kind always runs first on a fresh machine state.
        order=("${KIND_LIST[@]:$(( (round - 1) % ${#KIND_LIST[@]} ))}" "${KIND_LIST[@]:0:$(( (round - 1) % ${#KIND_LIST[@]} ))}")
        for kind in "${order[@]}"; do run "$kind" "$n" "$round"; done
        s="-"; [[ -f "$OUT/srtp-$n-$round.json" && " $KINDS " == *" srtp "* ]] && s=$(us_per_packet srtp "$OUT/srtp-$n-$round.json")
        for kind in "${KIND_LIST[@]}"; do
            j="$OUT/$kind-$n-$round.json"
            u=$(us_per_packet "$kind" "$j"); r=$(rss_per_player "$kind" "$j")
            ratio=$(python3 -c 'import sys; a,b=sys.argv[1:]; print("-" if "-" in (a,b) else "%.2f" % (float(a)/float(b)))' "$u" "$s")
            conn="" loss=""
            if [[ $kind == whep* ]]; then
                conn=$(python3 -c 'import json,sys; c=json.load(open(sys.argv[1]))["connect_ms"]; print("%.0f/%.0f/%.0f" % (c["p50"], c["p99"], c["max"]) if c else "-")' "$j")
                loss=$(python3 -c 'import json,sys; print("%.2f" % json.load(open(sys.argv[1]))["loss_pct"])' "$j")
            fi
            printf '%-6s %-5s %-11s %12s %12s %10s %8s %s\n' "$n" "$round" "$kind" "$u" "$r" "$ratio" "$loss" "$conn"
            US[$kind]+=" $u" RSS[$kind]+=" $r" RAT[$kind]+=" $ratio"
        done
    done
    line=""
    for kind in "${KIND_LIST[@]}"; do
        # shellcheck disable=SC2086
        line+="$kind $(median ${US[$kind]}) us, $(median ${RSS[$kind]}) KiB/player"
        [[ $kind != srtp ]] && line+=" (/SRTP $(median ${RAT[$kind]}))"
        line+="; "
    done
    SUM[$n]=$line
done
echo
echo "medians of $REPEAT rounds (server CPU per delivered packet, RSS per player):"
for n in $NS; do echo "  N=$n: ${SUM[$n]}"; done
echo "reports: $OUT/KIND-N-ROUND.json"
