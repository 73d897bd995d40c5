#!/usr/bin/env bash
# The README's test command: installs what the end-to-end tests drive (a real ffmpeg, headless
# Chromium with playwright-core) when it is missing, then runs every test of the workspace.
# Extra arguments go to `cargo test`.
set -euo pipefail
cd "$(dirname "$0")/.."
need=()
command -v ffmpeg >/dev/null || need+=(ffmpeg)
# The cluster tests run a real NATS server (JetStream).
command -v nats-server >/dev/null || need+=(nats-server)
# /metrics is checked with Prometheus's own linter (promtool); the access test puts a client
# in a network namespace (iproute2) and calls the server from there with curl.
command -v promtool >/dev/null || need+=(prometheus)
command -v ip >/dev/null || need+=(iproute2)
command -v curl >/dev/null || need+=(curl)
# The TLS reload test makes certificates and reads the served one with the openssl CLI.
command -v openssl >/dev/null || need+=(openssl)
# GStreamer webrtcbin as a WHIP/WHEP peer (tests/tests/webrtcbin.rs), driven from python3-gi.
for pkg in python3-gi gir1.2-gst-plugins-bad-1.0 gir1.2-gst-plugins-base-1.0 \
  gstreamer1.0-plugins-bad gstreamer1.0-plugins-good gstreamer1.0-nice; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "ok installed" || need+=("$pkg")
done
if [ ${#need[@]} -gt 0 ]; then
  echo "tests/run.sh: installing ${need[*]} (Debian packages) for the end-to-end tests"
  sudo=""; [ "$(id -u)" -eq 0 ] || sudo=sudo
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${need[@]}" >/dev/null
fi
# The WebRTC end-to-end test drives Debian's headless Chromium through playwright-core.
bash tests/browser/setup.sh
exec cargo test --workspace "$@"
