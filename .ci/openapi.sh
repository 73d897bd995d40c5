#!/usr/bin/env bash
# Validates control/openapi.json (served at /openapi.json) with openapi-spec-validator, then
# checks what the validator does not: every operation has a unique camelCase operationId and
# components.securitySchemes defines operatorToken and publicToken.
# The validator lives in a venv (Debian's pip refuses system installs), created once under
# ${OPENAPI_VENV:-/tmp/openapi-venv} and reused afterwards.
set -euo pipefail
cd "$(dirname "$0")/.."

OASV_VERSION=0.9.0
venv=${OPENAPI_VENV:-/tmp/openapi-venv}
spec=control/openapi.json

apt_install() {
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@"
}

command -v python3 >/dev/null || apt_install python3 python3-venv

if ! "$venv/bin/openapi-spec-validator" --version 2>/dev/null | grep -qxF "openapi-spec-validator $OASV_VERSION"; then
  if [ ! -x "$venv/bin/pip" ]; then
    rm -rf "$venv"
    if ! python3 -m venv "$venv" >/dev/null 2>&1; then
      # Debian ships the venv module (and ensurepip) separately.
      rm -rf "$venv"
      apt_install python3-venv
      python3 -m venv "$venv"
    fi
  fi
  "$venv/bin/pip" install -q --disable-pip-version-check "openapi-spec-validator==$OASV_VERSION"
fi

"$venv/bin/openapi-spec-validator" --validation-errors all "$spec"

"$venv/bin/python" - "$spec" <<'EOF'
import json, re, sys

path = sys.argv[1]
with open(path) as f:
    doc = json.load(f)

errors = []
methods = {"get", "put", "post", "delete", "options", "head", "patch", "trace"}
ids = {}
for route, item in doc.get("paths", {}).items():
    for method, op in item.items():
        if method not in methods:
            continue
        where = f"{method.upper()} {route}"
        opid = op.get("operationId")
        if not opid:
            errors.append(f"{where}: no operationId")
            continue
        if not re.fullmatch(r"[a-z][A-Za-z0-9]*", opid):
            errors.append(f"{where}: operationId {opid!r} is not camelCase")
        if opid in ids:
            errors.append(f"{where}: operationId {opid!r} also used by {ids[opid]}")
        ids.setdefault(opid, where)

schemes = doc.get("components", {}).get("securitySchemes", {})
for name in ("operatorToken", "publicToken"):
    s = schemes.get(name)
    if not s:
        errors.append(f"components.securitySchemes.{name}: missing")
    elif (s.get("type"), str(s.get("scheme", "")).lower()) != ("http", "bearer"):
        errors.append(f"components.securitySchemes.{name}: not an HTTP bearer scheme")

# Every security requirement names a defined scheme.
reqs = [("security", doc.get("security", []))]
for route, item in doc.get("paths", {}).items():
    for method, op in item.items():
        if method in methods:
            reqs.append((f"{method.upper()} {route}", op.get("security", [])))
for where, req in reqs:
    for alt in req:
        for name in alt:
            if name not in schemes:
                errors.append(f"{where}: security names undefined scheme {name!r}")

if errors:
    print(f"{path}: FAILED", *errors, sep="\n  ", file=sys.stderr)
    sys.exit(1)
print(f"{path}: {len(ids)} operations, unique operationIds, security schemes {', '.join(sorted(schemes))}")
EOF
