#!/usr/bin/env bash
# Overload: more demand than the machine delivers, and what the server does about it.
#
#   benches/overload.sh                   # 1 SRTP video publisher -> 3,000 players, 15 s
#   PLAYERS=4000 SRTP=none benches/overload.sh
#
# Starts `mediaserver run` (default config: media.max_queue_ms = 50), runs `load fanout
# --profile video` against it with more players than this machine can serve (the load tool
# shares the cores, so it is starved too: its own latency is not the measure), then reads the
# server's /metrics: in-server packet age at send (p50/p99/max bucket bound), drops by reason,
# and SRTP authentication failures (a rollover-counter desync would show as every later
# packet failing). Demand vs delivered comes from the load report. Bounded in time; every
# process started here is stopped on exit.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
PLAYERS=${PLAYERS:-3000}
DURATION=${DURATION:-15}
SRTP=${SRTP:-AES_CM_128_HMAC_SHA1_80}
OUT=${OUT:-target/overload-bench}
TARGET_DIR=${CARGO_TARGET_DIR:-target}
SERVER_BIN=${SERVER_BIN:-$TARGET_DIR/release/mediaserver}
LOAD_BIN=${LOAD_BIN:-$TARGET_DIR/release/load}
HTTP=127.0.0.1:8081
PLAYER_BASE=${PLAYER_BASE:-61100}
(( PLAYERS >= 1 && PLAYER_BASE + PLAYERS - 1 <= 65535 )) || { echo "overload.sh: too many players for PLAYER_BASE" >&2; exit 1; }
if [[ "${SKIP_BUILD:-0}" != 1 ]]; then
    cargo build --release -p benches --bin load -p control --bin mediaserver
fi
mkdir -p "$OUT"
printf '[media]\npending_timeout_ms = 0\n' >"$OUT/overload.toml"
SERVER_PID=""
cleanup() { [[ -z "$SERVER_PID" ]] || { kill "$SERVER_PID" 2>/dev/null || true; wait "$SERVER_PID" 2>/dev/null || true; }; }
trap cleanup EXIT
"$SERVER_BIN" run --config "$OUT/overload.toml" >"$OUT/server.log" 2>&1 &
SERVER_PID=$!
for _ in $(seq 100); do curl -sf "http://$HTTP/health" >/dev/null && break; sleep 0.1; done
srtp_args=()
[[ "$SRTP" == none ]] || srtp_args=(--srtp "$SRTP")
timeout $((DURATION + 120)) "$LOAD_BIN" fanout --server "http://$HTTP" --server-pid "$SERVER_PID" \
    --profile video --publishers 1 --players "$PLAYERS" --duration "$DURATION" \
    --player-base-port "$PLAYER_BASE" --publisher-base-port 61010 --quiet \
    "${srtp_args[@]}" --json "$OUT/load.json" | grep -E "sent|received|loss|cpu|latency"
curl -sf "http://$HTTP/metrics" >"$OUT/metrics.txt"
python3 - "$OUT/metrics.txt" "$OUT/load.json" <<'PY'
import json, sys
m = open(sys.argv[1]).read().splitlines()
r = json.load(open(sys.argv[2]))
buckets = []
for l in m:
    if l.startswith("mediaserver_packet_age_at_send_seconds_bucket"):
        le = l.split('le="')[1].split('"')[0]
        buckets.append((float("inf") if le == "+Inf" else float(le), float(l.rsplit(" ", 1)[1])))
total = buckets[-1][1] if buckets else 0
def q(p):
    for le, c in buckets:
        if c >= p * total:
            return le
print(f"in-server packet age at send: {int(total)} copies; p50 <= {q(0.5)} s, p99 <= {q(0.99)} s, p99.9 <= {q(0.999)} s, max <= {q(1.0)} s")
drops = {}
for l in m:
    if l.startswith("mediaserver_dropped_packets_total{"):
        reason = l.split('reason="')[1].split('"')[0]
        drops[reason] = drops.get(reason, 0) + float(l.rsplit(" ", 1)[1])
print("drops by reason: " + ", ".join(f"{k} {int(v)}" for k, v in sorted(drops.items())))
rx = r["received"]; exp = rx.get("expected") or 0
print(f"demand {exp} copies, delivered {rx['unique']} ({100.0 * rx['unique'] / max(exp, 1):.1f}%): demand / delivered = {exp / max(rx['unique'], 1):.2f}")
series = r.get("series", [])
tail = [p["rx_pps"] for p in series[-3:]]
print(f"players' receive rate over the last 3 intervals (pps): {', '.join(f'{x:.0f}' for x in tail)}"
      + ("  <- still flowing (no SRTP rollover desync)" if tail and min(tail) > 0 else "  <- STOPPED"))
PY
