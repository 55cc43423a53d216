#!/usr/bin/env bash
# The whole test suite: unit tests, the store suite and the HTTP and CLI integration tests, each
# database test on SQLite and on PostgreSQL.
#
# PostgreSQL is taken from EZFORGE_TEST_POSTGRES_URL (default postgres://postgres@127.0.0.1:5432/postgres);
# every test creates its own database with a random name and drops it. Without PostgreSQL the
# PostgreSQL half is skipped with a message, unless CI=true, where it fails.
set -euo pipefail
cd "$(dirname "$0")/.."

if cargo nextest --version >/dev/null 2>&1; then
    cargo nextest run --workspace --no-fail-fast "$@"
else
    echo "cargo-nextest not found; using cargo test" >&2
    cargo test --workspace --no-fail-fast "$@"
fi
