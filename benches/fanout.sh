#!/usr/bin/env bash
# Engine vs raw-relay fan-out, same load against both, side by side: plain RTP and SRTP.
#
#   benches/fanout.sh                      # 1 publisher x 1000 pps -> 100 players, 1200 B, 10 s
#   PLAYERS=1000 PPS=200 DURATION=20 benches/fanout.sh
#   PPS=3000 SIZE=1100 REPEAT=3 benches/fanout.sh              # saturation, medians of 3
#   SRTP=AES_CM_128_HMAC_SHA1_80,AEAD_AES_128_GCM benches/fanout.sh
#   SRTP=none benches/fanout.sh            # plain RTP only
#   PROFILE=video PLAYERS=1000 REPEAT=3 benches/fanout.sh      # frames; GSO on/off; GStreamer
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
# Also per round: the server again with `media.gso = false` (GSO=both, the default; on/off
# for one of them), and GStreamer's `udpsrc ! multiudpsink` towards the same players (GST=1,
# the default; installed from Debian when missing), a naive C forwarder as a second peer.
# Every run's server CPU per delivered packet (from /proc/PID/stat) is printed, and the
# ratios engine(GSO)/engine(no GSO), engine/GStreamer and engine/relay with their medians.
#
# Knobs (environment): PUBLISHERS PLAYERS PPS (0 = unpaced) SIZE DURATION RECV_THREADS
# RELAY_THREADS OUT SERVER_BIN SERVER_ARGS HTTP RELAY_PORT PLAYER_BASE PUBLISHER_BASE
# SKIP_BUILD=1, SRTP (comma-separated suites, default AES_CM_128_HMAC_SHA1_80; `none`: plain
# only), SRTP_CHECK_EVERY (players decrypt 1 datagram in N, default 64), REPEAT (rounds,
# default 1), PROFILE (flat, video, audio, av: `load --profile`), GSO (both, on, off), GST
# (1/0), CONNECT (on; both: also the server with `media.connect_players = false`, and the ratio
# engine(connected)/engine(unconnected)), GRO (off; on: every engine run with `media.gro =
# true`; both: also a `nogro-N` run without it, and the ratio engine(GRO)/engine(no GRO)),
# PUB_GSO (0; 1: the publisher sends each frame as UDP GSO datagrams, `load --publisher-gso`,
# which GRO needs to see bursts on loopback), PIN (0; 1: every forwarder - the server with
# one shard, GStreamer, the relay with one thread - runs on CPU 0 and the load tool on CPU 1,
# so each run has the same placement instead of whatever the scheduler picks), BEFORE_BIN (a
# mediaserver binary built from an earlier commit: each round also runs it, `before-N`, with
# the same config as `engine`, and prints engine/before: before/after side by side), NET (lo,
# the default: everything on loopback; veth: the load tool's players and publishers live in a
# network namespace behind a veth pair, 10.77.0.2 -> the server's 10.77.0.1, and the players'
# receive processing is steered to CPU 1 with RPS, so the server's CPU no longer includes its
# players' kernel receive path - on loopback it does, because softirq time is charged to the
# sending task without CONFIG_IRQ_TIME_ACCOUNTING - nor loopback's receive-side segmentation
# of GSO datagrams: the model of players on other hosts behind a NIC with UDP segmentation
# offload; needs root, best with PIN=1). Binaries come from $CARGO_TARGET_DIR (default
# target/) unless SERVER_BIN / LOAD_BIN say otherwise.
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
# Local ports, outside the server's default media range (10000-32767) and above Linux's
# ephemeral range (32768-60999, where the tool's own HTTP connections get their ports); bound
# explicitly, so a port some other socket holds fails the run loudly.
RELAY_PORT=${RELAY_PORT:-61000}
PUBLISHER_BASE=${PUBLISHER_BASE:-61010}
PLAYER_BASE=${PLAYER_BASE:-61100}
SKIP_BUILD=${SKIP_BUILD:-0}
LOAD_BIN=${LOAD_BIN:-$TARGET_DIR/release/load}
SRTP=${SRTP:-AES_CM_128_HMAC_SHA1_80}
SRTP_CHECK_EVERY=${SRTP_CHECK_EVERY:-64}
REPEAT=${REPEAT:-1}
PROFILE=${PROFILE:-flat}
GSO=${GSO:-both}
GST=${GST:-1}
CONNECT=${CONNECT:-on}
GRO=${GRO:-off}
PUB_GSO=${PUB_GSO:-0}
PIN=${PIN:-0}
NET=${NET:-lo}
[[ "$PIN" =~ ^(0|1)$ ]] || { echo "fanout.sh: PIN must be 0 or 1" >&2; exit 1; }
[[ "$NET" =~ ^(lo|veth)$ ]] || { echo "fanout.sh: NET must be lo or veth" >&2; exit 1; }
# Where forwarders listen and the load tool's sockets live (NET=veth: see veth_up).
SERVER_IP=127.0.0.1; LOAD_IP=127.0.0.1; NETNS=mbench-$$
FWD=(); TOOL=()
if [[ "$PIN" == 1 ]]; then
    (( $(nproc) >= 2 )) || { echo "fanout.sh: PIN=1 needs 2 CPUs" >&2; exit 1; }
    FWD=(taskset -c 0); TOOL=(taskset -c 1); RELAY_THREADS=1
fi
if [[ "$NET" == veth ]]; then
    [[ "$(id -u)" -eq 0 ]] || { echo "fanout.sh: NET=veth needs root (ip netns)" >&2; exit 1; }
    SERVER_IP=10.77.0.1; LOAD_IP=10.77.0.2
    TOOL=(ip netns exec "$NETNS" "${TOOL[@]}")
fi
[[ "$GRO" =~ ^(both|on|off)$ ]] || { echo "fanout.sh: GRO must be both, on or off" >&2; exit 1; }
[[ "$PUB_GSO" =~ ^(0|1)$ ]] || { echo "fanout.sh: PUB_GSO must be 0 or 1" >&2; exit 1; }
[[ "$CONNECT" =~ ^(both|on)$ ]] || { echo "fanout.sh: CONNECT must be on or both" >&2; exit 1; }
[[ "$PROFILE" =~ ^(flat|video|audio|av)$ ]] || { echo "fanout.sh: PROFILE must be flat, video, audio or av" >&2; exit 1; }
[[ "$GSO" =~ ^(both|on|off)$ ]] || { echo "fanout.sh: GSO must be both, on or off" >&2; exit 1; }
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

if [[ "$GST" == 1 ]] && ! command -v gst-launch-1.0 >/dev/null; then
    echo "== installing GStreamer (gstreamer1.0-tools, -plugins-base, -plugins-good) for the multiudpsink peer"
    sudo=""; [[ "$(id -u)" -eq 0 ]] || sudo=sudo
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq gstreamer1.0-tools \
        gstreamer1.0-plugins-base gstreamer1.0-plugins-good >/dev/null
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
    [[ "$NET" != veth ]] || ip netns del "$NETNS" 2>/dev/null || true
}
trap cleanup EXIT
trap 'exit 130' INT TERM

tcp_open() { (exec 3<>"/dev/tcp/${1%:*}/${1##*:}") 2>/dev/null; }

# NET=veth: a namespace for the load tool, a veth pair to it, RPS on its receiving side so
# the players' softirq work runs on CPU 1 (the load tool's), not on the sending CPU.
veth_up() {
    ip netns add "$NETNS"
    ip link add mbh-$$ type veth peer name mbn-$$ netns "$NETNS"
    ip addr add "$SERVER_IP/24" dev mbh-$$
    ip link set mbh-$$ up
    ip netns exec "$NETNS" sh -e -c "ip addr add $LOAD_IP/24 dev mbn-$$; ip link set mbn-$$ up
        ip link set lo up; echo 2 > /sys/class/net/mbn-$$/queues/rx-0/rps_cpus"
    echo "== NET=veth: load tool in netns $NETNS at $LOAD_IP, server side $SERVER_IP, players' receive path on CPU 1 (RPS)"
}
[[ "$NET" != veth ]] || veth_up

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
# A previous run's reports would be read as this run's (e.g. nogso-N.json when GSO=on).
rm -f "$OUT"/*.json
# The load tool creates every player before its publishers send, which can take longer than
# the default 30 s pending deadline at 10,000 sessions: no pending deadline while benchmarking.
# NET=veth: the control API answers a non-loopback client only with a bearer token.
TOKEN=bench-$$
http_toml() { [[ "$NET" != veth ]] || { echo "[http]"; echo "token = \"$TOKEN\""; }; }
# bench_toml FILE [KEY = VALUE ...]: the server's config for one kind of run (RUN_GRO=off:
# without GRO whatever GRO says; a repeated TOML key would be an error, so not as KEY = VALUE).
bench_toml() {
    local f=$1; shift
    { http_toml; echo "[media]"; echo "pending_timeout_ms = 0"; [[ "${RUN_GRO:-$GRO}" == off ]] || echo "gro = true"
      [[ "$PIN" != 1 ]] || echo "shards = 1"; [[ "$NET" != veth ]] || echo "public_ip = \"$SERVER_IP\""
      for kv in "$@"; do echo "$kv"; done; } >"$f"
}
bench_toml "$OUT/bench.toml"
bench_toml "$OUT/bench-nogso.toml" "gso = false"
bench_toml "$OUT/bench-unconn.toml" "connect_players = false"
RUN_GRO=off bench_toml "$OUT/bench-nogro.toml"

LOAD_ARGS=(--publishers "$PUBLISHERS" --players "$PLAYERS" --pps "$PPS" --size "$SIZE" --profile "$PROFILE"
    --duration "$DURATION" --recv-threads "$RECV_THREADS"
    --player-base-port "$PLAYER_BASE" --publisher-base-port "$PUBLISHER_BASE" --local-ip "$LOAD_IP")
[[ "$PUB_GSO" != 1 ]] || LOAD_ARGS+=(--publisher-gso)
[[ "$NET" != veth ]] || LOAD_ARGS+=(--token "$TOKEN")
RUN_LIMIT=$((DURATION + 120))
# The REST address as the load tool reaches it (the server listens on every address).
LOAD_HTTP=$HTTP
[[ "$NET" != veth ]] || LOAD_HTTP="$SERVER_IP:${HTTP##*:}"

start_server() {
    tcp_open "$HTTP" && die "something already listens on $HTTP (another server?)"
    local args=$SERVER_ARGS
    [[ -z "${CONFIG:-}" ]] || args="run --config $CONFIG"
    # shellcheck disable=SC2086 # SERVER_ARGS is a word list on purpose
    "${FWD[@]}" "$SERVER_BIN" $args >"$OUT/server.log" 2>&1 &
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
    timeout "$RUN_LIMIT" "${TOOL[@]}" "$LOAD_BIN" fanout --server "http://$LOAD_HTTP" --server-pid "$SERVER_PID" \
        "${LOAD_ARGS[@]}" "$@" --json "$OUT/$name.json" --svg "$OUT/$name.svg"
    echo "== $name: server VmRSS after the run $(awk '/VmRSS/ {print $2, $3}' "/proc/$SERVER_PID/status")"
    stop_pid "$SERVER_PID"; SERVER_PID=""
}

# peer_run NAME LOG WHAT: the load against a forwarder already started in the background
# (RELAY_PID, output in LOG) that listens on RELAY_PORT and sends to the players; then stops it.
peer_run() {
    local name=$1 log=$2 what=$3
    sleep 0.5
    kill -0 "$RELAY_PID" 2>/dev/null || { cat "$log" >&2; die "$what did not start"; }
    timeout "$RUN_LIMIT" "${TOOL[@]}" "$LOAD_BIN" fanout --raw-relay "$SERVER_IP:$RELAY_PORT" --server-pid "$RELAY_PID" \
        "${LOAD_ARGS[@]}" --json "$OUT/$name.json" --svg "$OUT/$name.svg"
    stop_pid "$RELAY_PID"; RELAY_PID=""
}

relay_run() {
    local name=$1
    echo "== $name: raw relay ($RELAY_THREADS thread(s)) on $SERVER_IP:$RELAY_PORT -> $LOAD_IP:$PLAYER_BASE-$((PLAYER_BASE + PLAYERS - 1))"
    "${FWD[@]}" "$LOAD_BIN" relay --listen "$SERVER_IP:$RELAY_PORT" \
        --to "$LOAD_IP:$PLAYER_BASE-$((PLAYER_BASE + PLAYERS - 1))" \
        --threads "$RELAY_THREADS" --duration "$RUN_LIMIT" --quiet --json "$OUT/$name-relay.json" >"$OUT/relay.log" 2>&1 &
    RELAY_PID=$!
    peer_run "$name" "$OUT/relay.log" relay
    cat "$OUT/relay.log"
}

# gst_run NAME: GStreamer's udpsrc ! multiudpsink to the same players, the same load.
gst_run() {
    local name=$1 clients
    clients=$(seq -s, -f "$LOAD_IP:%g" "$PLAYER_BASE" "$((PLAYER_BASE + PLAYERS - 1))")
    echo "== $name: GStreamer udpsrc ! multiudpsink on $SERVER_IP:$RELAY_PORT -> $PLAYERS players"
    "${FWD[@]}" gst-launch-1.0 -q udpsrc address=$SERVER_IP port="$RELAY_PORT" buffer-size=4194304 \
        ! multiudpsink clients="$clients" sync=false async=false buffer-size=4194304 \
        >"$OUT/gst.log" 2>&1 &
    RELAY_PID=$!
    peer_run "$name" "$OUT/gst.log" gst-launch
}

# cpu_us REPORT.json: the target's CPU microseconds per packet the players received.
cpu_us() {
    python3 -c 'import json,sys; c=json.load(open(sys.argv[1]))["target_cpu"]; print("%.3f" % (1e6/c["rx_pps_per_core"]) if c and c["rx_pps_per_core"] > 0 else "-")' "$1"
}
delivery() {
    python3 -c 'import json,sys; l=json.load(open(sys.argv[1]))["received"].get("delivery_loss_pct"); print("-" if l is None else "loss %.2f%%" % l)' "$1" 2>/dev/null || echo "-"
}
div() { python3 -c 'import sys; a,b=sys.argv[1:]; print("-" if "-" in (a,b) else "%.3f" % (float(a)/float(b)))' "$1" "$2"; }

# ratio_of ENGINE.json BASELINE.json: the throughput ratio line of `load compare`.
ratio_of() { "$LOAD_BIN" compare "$1" "$2" | awk '/throughput ratio:/ {print $NF}'; }
median() { sort -g | awk '{a[NR]=$1} END {if (NR == 0) print "-"; else if (NR % 2) print a[(NR+1)/2]; else printf "%.3f\n", (a[NR/2]+a[NR/2+1])/2}'; }

declare -A RATIOS=()
declare -A CPU=()
for round in $(seq "$REPEAT"); do
    echo "==== round $round/$REPEAT ($(uptime | sed 's/.*load/load/'))"
    if [[ "$GSO" != off ]]; then
        CONFIG="$OUT/bench.toml" engine_run "engine-$round"
    else
        CONFIG="$OUT/bench-nogso.toml" engine_run "engine-$round"
    fi
    if [[ "$GSO" == both ]]; then
        CONFIG="$OUT/bench-nogso.toml" engine_run "nogso-$round"
    fi
    [[ "$CONNECT" != both ]] || CONFIG="$OUT/bench-unconn.toml" engine_run "unconn-$round"
    [[ "$GRO" != both ]] || CONFIG="$OUT/bench-nogro.toml" engine_run "nogro-$round"
    if [[ -n "${BEFORE_BIN:-}" ]]; then
        [[ -x "$BEFORE_BIN" ]] || die "BEFORE_BIN $BEFORE_BIN is not an executable"
        CONFIG="$OUT/bench.toml" SERVER_BIN="$BEFORE_BIN" engine_run "before-$round"
    fi
    [[ "$GST" != 1 ]] || gst_run "gst-$round"
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
    echo "== round $round: server CPU per delivered packet (us) and delivery"
    for run in engine before nogso unconn nogro gst raw "${SUITES[@]/#/srtp-}"; do
        f="$OUT/$run-$round.json"
        [[ -f "$f" ]] || continue
        CPU[$run]+="$(cpu_us "$f") "
        printf '  %-32s %8s us  %s\n' "$run" "$(cpu_us "$f")" "$(delivery "$f")"
    done
    e=$(cpu_us "$OUT/engine-$round.json")
    [[ ! -f "$OUT/nogso-$round.json" ]] || RATIOS[gso]+="$(div "$e" "$(cpu_us "$OUT/nogso-$round.json")") "
    [[ ! -f "$OUT/unconn-$round.json" ]] || RATIOS[conn]+="$(div "$e" "$(cpu_us "$OUT/unconn-$round.json")") "
    [[ ! -f "$OUT/before-$round.json" ]] || RATIOS[before]+="$(div "$e" "$(cpu_us "$OUT/before-$round.json")") "
    [[ ! -f "$OUT/nogro-$round.json" ]] || RATIOS[gro]+="$(div "$e" "$(cpu_us "$OUT/nogro-$round.json")") "
    [[ ! -f "$OUT/gst-$round.json" ]] || RATIOS[gst]+="$(div "$e" "$(cpu_us "$OUT/gst-$round.json")") "
    RATIOS[cpu_raw]+="$(div "$e" "$(cpu_us "$OUT/raw-$round.json")") "
done

echo "==== server CPU per delivered packet ($PROFILE profile, $PUBLISHERS publisher(s) -> $PLAYERS players, $REPEAT round(s)): per round; median"
for run in engine before nogso unconn nogro gst raw "${SUITES[@]/#/srtp-}"; do
    [[ -n "${CPU[$run]:-}" ]] || continue
    # shellcheck disable=SC2086 # word list on purpose
    printf '%-44s %s; median %s\n' "$run (us)" "${CPU[$run]}" "$(printf '%s\n' ${CPU[$run]} | grep -v '^-$' | median)"
done
for k in before gso conn gro gst cpu_raw; do
    [[ -n "${RATIOS[$k]:-}" ]] || continue
    case $k in
        before) label="CPU/pkt engine/before (BEFORE_BIN)";;
        gso) label="CPU/pkt engine(GSO)/engine(no GSO)";;
        conn) label="CPU/pkt engine(connected)/engine(unconnected)";;
        gro) label="CPU/pkt engine(GRO)/engine(no GRO)";;
        gst) label="CPU/pkt engine/GStreamer multiudpsink";;
        cpu_raw) label="CPU/pkt engine/raw relay";;
    esac
    # shellcheck disable=SC2086 # word list on purpose
    printf '%-44s %s; median %s\n' "$label" "${RATIOS[$k]}" "$(printf '%s\n' ${RATIOS[$k]} | grep -v '^-$' | median)"
done

echo "==== throughput ratios ($PUBLISHERS x $PPS pps -> $PLAYERS players, $SIZE B, $DURATION s, $REPEAT round(s)): per round; median"
for k in plain "${SUITES[@]}"; do
    label="engine(plain RTP)/relay"
    [[ "$k" == plain ]] || label="engine(SRTP $k)/relay"
    # shellcheck disable=SC2086 # word list on purpose
    printf '%-44s %s; median %s\n' "$label" "${RATIOS[$k]}" "$(printf '%s\n' ${RATIOS[$k]} | median)"
done
echo "reports: $OUT/{engine,srtp-*,raw}-N.json, plots: the same names .svg"
