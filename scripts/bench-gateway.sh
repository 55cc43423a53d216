#!/usr/bin/env bash
# Gateway overhead against HAProxy (plain and with jwt_verify) and the bare upstream, with wrk:
# same machine, same run, same load. Prints a markdown table.
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v haproxy >/dev/null || ! command -v wrk >/dev/null; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq haproxy wrk
fi
cargo bench -p ezforge --bench gateway
