#!/usr/bin/env bash
# Installs what the browser end-to-end test (e2e.js, tests/tests/browser.rs) needs, when it is
# missing: Debian's chromium (and node/npm) and playwright-core from package-lock.json into
# tests/browser/node_modules. Idempotent: does nothing when all is there.
set -euo pipefail
cd "$(dirname "$0")"
die() { echo "tests/browser/setup.sh: $*" >&2; exit 1; }
sudo=""
[ "$(id -u)" -eq 0 ] || sudo=sudo

need=()
[ -x /usr/bin/chromium ] || need+=(chromium)
command -v node >/dev/null || need+=(nodejs)
command -v npm >/dev/null || need+=(npm)
if [ ${#need[@]} -gt 0 ]; then
  echo "tests/browser/setup.sh: installing ${need[*]} (Debian packages)"
  $sudo apt-get update -qq || die "apt-get update failed"
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${need[@]}" >/dev/null \
    || die "apt-get install ${need[*]} failed"
fi
[ -x /usr/bin/chromium ] || die "/usr/bin/chromium is missing after installing chromium"
/usr/bin/chromium --version >/dev/null 2>&1 || die "/usr/bin/chromium does not run"

node_major=$(node -p 'process.versions.node.split(".")[0]')
[ "$node_major" -ge 20 ] || die "node $(node --version) is too old: playwright-core needs node >= 20"

# npm ci when node_modules lacks the playwright-core version that package-lock.json pins.
want=$(node -p 'require("./package-lock.json").packages["node_modules/playwright-core"].version')
have=$(node -p 'require("./node_modules/playwright-core/package.json").version' 2>/dev/null || true)
if [ "$want" != "$have" ]; then
  echo "tests/browser/setup.sh: npm ci (playwright-core $want)"
  npm ci --no-audit --no-fund --loglevel=error || die "npm ci failed in tests/browser"
fi
node -e 'require("playwright-core")' || die "playwright-core does not load"
echo "tests/browser/setup.sh: ready ($(/usr/bin/chromium --version 2>/dev/null | head -1), playwright-core $(node -p 'require("playwright-core/package.json").version'))"
