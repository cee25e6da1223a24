#!/usr/bin/env bash
# The test command: installs what the tests need that cargo does not (a real
# S3-compatible server, moto_server from PyPI), then runs the whole suite.
# Tests start their own moto_server, customer endpoint and daemon on loopback.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v moto_server >/dev/null 2>&1; then
    echo "installing moto[server] (S3-compatible test server) from PyPI"
    python3 -m pip install --quiet 'moto[server]>=5,<6'
fi

cargo test --locked --all-targets "$@"
