#!/usr/bin/env bash
# Token endpoint throughput: ezForge (SQLite, PostgreSQL) against oidc-provider configured the
# same way, same machine, same run, same load generator. Prints a markdown table.
set -euo pipefail
cd "$(dirname "$0")/.."
(cd bench/token && npm ci --no-audit --no-fund --silent)
cargo bench -p ezforge --bench token_endpoint
