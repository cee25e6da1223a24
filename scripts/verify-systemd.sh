#!/usr/bin/env bash
# Checks systemd/voicekit-bridge.service with systemd's own tools:
#  - `systemd-analyze verify` must report nothing about the unit. It exits 0 on unknown
#    keys and unparsable values (it only warns), so any message naming the unit fails.
#  - `systemd-analyze security --offline` must rate its exposure at most 2.0 ("OK").
# The unit runs /usr/bin/voicekit-bridge, which a build machine does not have, and
# verify insists that ExecStart exists: the check runs on a copy of the unit whose
# ExecStart points at the built binary (argument 1, default target/debug/voicekit-bridge,
# built if missing). Installs systemd's tools with apt-get when systemd-analyze is missing.
set -euo pipefail
cd "$(dirname "$0")/.."

unit=systemd/voicekit-bridge.service
bin=${1:-target/debug/voicekit-bridge}

if ! command -v systemd-analyze >/dev/null 2>&1; then
    echo "installing systemd (for systemd-analyze) with apt-get"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends systemd >/dev/null
fi
if [ ! -x "$bin" ]; then
    cargo build --locked --bin voicekit-bridge
fi
bin=$(realpath "$bin")

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
copy="$tmp/voicekit-bridge.service"
sed "s#/usr/bin/voicekit-bridge#$bin#g" "$unit" >"$copy"

status=0
out=$(systemd-analyze verify "$copy" 2>&1) || status=$?
if [ "$status" -ne 0 ] || grep -q 'voicekit-bridge' <<<"$out"; then
    echo "$out"
    echo "FAIL: systemd-analyze verify $unit (exit $status)" >&2
    exit 1
fi
if [ -n "$out" ]; then
    echo "systemd-analyze verify said, about other units:"
    echo "$out"
fi
echo "ok: systemd-analyze verify $unit"

if ! systemd-analyze security --offline=yes --threshold=20 "$copy" >"$tmp/security" 2>&1; then
    cat "$tmp/security"
    echo "FAIL: systemd-analyze security rates $unit above 2.0" >&2
    exit 1
fi
echo "ok: $(grep 'Overall exposure level' "$tmp/security" | sed 's/^→ //')"
