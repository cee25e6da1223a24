#!/usr/bin/env bash
# The test command: installs what the tests need that cargo does not (a real
# S3-compatible server, moto_server from PyPI; chromium and chromium-driver from Debian
# for the dashboard's browser tests), makes sure PostgreSQL answers, then runs the
# whole suite twice: on SQLite, then with every daemon on PostgreSQL
# (VOICEKIT_TEST_STORE=postgres, a fresh database per daemon). Tests start their own
# moto_server, customer endpoint and daemon on loopback.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v moto_server >/dev/null 2>&1; then
    echo "installing moto[server] (S3-compatible test server) from PyPI"
    python3 -m pip install --quiet 'moto[server]>=5,<6'
fi

if ! command -v chromedriver >/dev/null 2>&1 || [ ! -x /usr/bin/chromium ]; then
    echo "installing chromium and chromium-driver (the dashboard's browser tests) from Debian"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null
fi

PG_URL="${VOICEKIT_TEST_POSTGRES:-postgres://postgres@127.0.0.1:5432}"
pg() { psql "$PG_URL/postgres" -v ON_ERROR_STOP=1 -qtA "$@"; }
if ! pg -c 'SELECT 1' >/dev/null 2>&1; then
    echo "starting PostgreSQL"
    pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql)" main start
    for _ in $(seq 1 30); do pg -c 'SELECT 1' >/dev/null 2>&1 && break; sleep 1; done
fi
# Each daemon of the PostgreSQL pass creates its own database, named after this run
# (vkb_t_<pid>_*) so that the run drops its own and leaves another run's alone.
export VOICEKIT_TEST_DB_PREFIX="vkb_t_$$_"
drop_test_databases() {
    pg -c "SELECT datname FROM pg_database WHERE datname LIKE 'vkb\_t\_$$\_%'" |
        while read -r db; do pg -c "DROP DATABASE IF EXISTS \"$db\" WITH (FORCE)"; done
}
drop_test_databases
trap drop_test_databases EXIT

# `failpoints` compiles in the fail points the supervision tests arm.
echo "== test suite on SQLite"
cargo test --locked --all-targets --features failpoints "$@"
# --all-targets leaves the doc tests out; they touch no store, so one pass runs them.
cargo test --locked --doc
echo "== test suite on PostgreSQL"
VOICEKIT_TEST_STORE=postgres cargo test --locked --all-targets --features failpoints "$@"
