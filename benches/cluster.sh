#!/usr/bin/env bash
# Origin -> edges on one machine: a real nats-server and NODES mediaserver processes on
# 127.0.0.2, 127.0.0.3, ... (the first is the origin), each on one unpinned shard, then two
# `load fanout --cluster` runs against them:
#
#   A (fan-out): PUBLISHERS_A stream(s) published on the origin, PLAYERS_A RTP players spread
#     over the edges and ORIGIN_PLAYERS on the origin; delivery, origin egress (copies per
#     packet), latency and server CPU per delivered packet per node over a WINDOW-second window.
#   B (cold pulls): STREAMS_B streams, PLAYERS_PER_EDGE_B players per stream per edge, at
#     PPS_B: play request -> first packet, cold (first play of a stream on an edge: the pull
#     is in it) and warm; STREAMS_B x edges cold samples.
#
#   benches/cluster.sh                       # 4 edges x 1,000 players at 20 pps, then cold pulls
#   REPEAT=3 benches/cluster.sh              # rounds alternate A and B; medians printed
#
# Knobs (environment): NODES (default 5), PLAYERS_A (4000), ORIGIN_PLAYERS (1000), PPS_A (20),
# PUBLISHERS_A (1), WINDOW (20), STREAMS_B (25), PLAYERS_PER_EDGE_B (2), PPS_B (200), SIZE
# (1200), REPEAT (1), NATS_PORT (14222), OUT (target/cluster-bench), SKIP_BUILD=1.
# Every process started here is stopped on exit; every run is bounded in time.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

NODES=${NODES:-5}
PLAYERS_A=${PLAYERS_A:-4000}
ORIGIN_PLAYERS=${ORIGIN_PLAYERS:-1000}
PPS_A=${PPS_A:-20}
PUBLISHERS_A=${PUBLISHERS_A:-1}
WINDOW=${WINDOW:-20}
STREAMS_B=${STREAMS_B:-25}
PLAYERS_PER_EDGE_B=${PLAYERS_PER_EDGE_B:-2}
PPS_B=${PPS_B:-200}
SIZE=${SIZE:-1200}
REPEAT=${REPEAT:-1}
NATS_PORT=${NATS_PORT:-14222}
OUT=${OUT:-target/cluster-bench}
TARGET_DIR=${CARGO_TARGET_DIR:-target}
SERVER_BIN=${SERVER_BIN:-$TARGET_DIR/release/mediaserver}
LOAD_BIN=${LOAD_BIN:-$TARGET_DIR/release/load}

die() { echo "cluster.sh: $*" >&2; exit 1; }
(( NODES >= 2 && NODES <= 20 )) || die "NODES must be 2..20"
(( REPEAT >= 1 && REPEAT <= 10 )) || die "REPEAT must be 1..10"
(( WINDOW >= 1 && WINDOW <= 600 )) || die "WINDOW must be 1..600 s"
command -v nats-server >/dev/null || die "needs nats-server (apt-get install -y nats-server)"
command -v jq >/dev/null || die "needs jq (apt-get install -y jq)"
# Five servers and a few thousand player sockets: raise the fd limit (root may raise the hard
# limit too).
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"
if [[ "${SKIP_BUILD:-0}" != 1 ]]; then
    cargo build --release -p control --bin mediaserver -p benches --bin load
fi
rm -rf "$OUT"; mkdir -p "$OUT"

PIDS=()
cleanup() {
    for p in "${PIDS[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
    for p in "${PIDS[@]}"; do
        for _ in $(seq 1 50); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "$p" 2>/dev/null || true
    done
}
trap cleanup EXIT
trap 'exit 130' INT TERM

nats-server -js -a 127.0.0.1 -p "$NATS_PORT" -sd "$OUT/nats" >"$OUT/nats.log" 2>&1 &
PIDS+=($!)
for _ in $(seq 1 50); do (exec 3<>/dev/tcp/127.0.0.1/"$NATS_PORT") 2>/dev/null && break; sleep 0.1; done

URLS=(); SPIDS=()
for i in $(seq 1 "$NODES"); do
    ip="127.0.0.$((i + 1))"
    cat >"$OUT/node$i.toml" <<EOF
node_id = "node-$i"
data_dir = "$OUT/data$i"
[http]
listen = "$ip:8081"
[https]
enabled = false
[media]
bind = "$ip"
public_ip = "$ip"
shards = 1
pin_cores = false
[cluster]
enabled = true
nats_url = "nats://127.0.0.1:$NATS_PORT"
advertise = "$ip"
EOF
    RUST_LOG=warn "$SERVER_BIN" run --config "$OUT/node$i.toml" >"$OUT/node$i.log" 2>&1 &
    PIDS+=($!); SPIDS+=($!); URLS+=("http://$ip:8081")
done
for u in "${URLS[@]}"; do
    for _ in $(seq 1 100); do curl -sf -XPOST "$u/rest-api/stream/find_all" >/dev/null && break; sleep 0.1; done
    curl -sf -XPOST "$u/rest-api/stream/find_all" >/dev/null || die "$u did not start (see $OUT)"
done
csv() { local IFS=,; echo "$*"; }
EDGES=$((NODES - 1))

for r in $(seq 1 "$REPEAT"); do
    echo "== round $r: A, $PUBLISHERS_A stream(s) -> $EDGES edges x $((PLAYERS_A / EDGES)) + $ORIGIN_PLAYERS origin players, $PPS_A pps"
    "$LOAD_BIN" fanout --cluster "$(csv "${URLS[@]}")" --server-pids "$(csv "${SPIDS[@]}")" \
        --prefix "a$r" --publishers "$PUBLISHERS_A" --players "$PLAYERS_A" \
        --origin-players "$ORIGIN_PLAYERS" --pps "$PPS_A" --size "$SIZE" --duration "$WINDOW" \
        --recv-threads 2 --socket-buffer 262144 --json "$OUT/a$r.json"
    echo "== round $r: B, $STREAMS_B streams x $EDGES edges x $PLAYERS_PER_EDGE_B players, $PPS_B pps"
    "$LOAD_BIN" fanout --cluster "$(csv "${URLS[@]}")" --server-pids "$(csv "${SPIDS[@]}")" \
        --prefix "b$r" --publishers "$STREAMS_B" --players "$((STREAMS_B * EDGES * PLAYERS_PER_EDGE_B))" \
        --pps "$PPS_B" --size "$SIZE" --duration 3 --settle-ms 300 --json "$OUT/b$r.json"
done

median() { sort -g | awk '{a[NR]=$1} END {print (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2)}'; }
m() { for f in "$OUT"/$1*.json; do jq -r "$2" "$f"; done | median; }
echo "== medians over $REPEAT round(s)"
echo "A delivery %                 $(m a '.delivery_pct')"
echo "A origin copies per packet   $(m a '.origin_egress.copies_per_packet')"
echo "A origin us/pkt              $(m a '.nodes[0].cpu.us_per_packet')"
echo "A edge us/pkt (mean of edges) $(m a '[.nodes[1:][].cpu.us_per_packet] | add / length')"
echo "A edge/origin us/pkt ratio   $(m a '([.nodes[1:][].cpu.us_per_packet] | add / length) / .nodes[0].cpu.us_per_packet')"
echo "A latency p99 us (worst node) $(m a '[.nodes[].latency.p99_us] | max')"
echo "A first packet warm p50/p99 ms $(m a '.first_packet_warm.p50_ms') / $(m a '.first_packet_warm.p99_ms')"
echo "B cold pull first packet p50/p99 ms $(m b '.first_packet_cold.p50_ms') / $(m b '.first_packet_cold.p99_ms') (n=$(m b '.first_packet_cold.samples') per round)"
echo "B warm first packet p50/p99 ms $(m b '.first_packet_warm.p50_ms') / $(m b '.first_packet_warm.p99_ms')"
echo "reports: $OUT/{a,b}*.json, server logs: $OUT/node*.log"
