#!/usr/bin/env bash
# The whole test suite: unit tests, the store suite and the HTTP and CLI integration tests, each
# database test on SQLite and on PostgreSQL; then the Node end-to-end interop suite (e2e/: the
# MCP TypeScript SDK, oidc-provider, the MCP conformance suite) against the built binary.
#
# PostgreSQL is taken from EZFORGE_TEST_POSTGRES_URL (default postgres://postgres@127.0.0.1:5432/postgres);
# every test creates its own database with a random name and drops it. Without PostgreSQL the
# PostgreSQL half is skipped with a message, unless CI=true, where it fails.
# EZFORGE_SKIP_E2E=1 skips the Node suite (it needs Node >= 20, npm and openssl).
# Arguments go to the Rust test runner (e.g. a test name filter).
set -uo pipefail
cd "$(dirname "$0")/.."

status=0
if cargo nextest --version >/dev/null 2>&1; then
    cargo nextest run --workspace --no-fail-fast "$@" || status=1
else
    echo "cargo-nextest not found; using cargo test" >&2
    cargo test --workspace --no-fail-fast "$@" || status=1
fi

if [ "${EZFORGE_SKIP_E2E:-0}" != "1" ]; then
    if cargo build --locked -p ezforge --bin ezforge; then
        EZFORGE_BIN="$PWD/target/debug/ezforge" bash scripts/e2e.sh || status=1
    else
        status=1
    fi
fi
exit "$status"
