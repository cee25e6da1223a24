#!/usr/bin/env bash
# Builds the Debian package (Cargo.toml's [package.metadata.deb]) and checks that it
# holds the binary, the systemd unit, the config as a conffile, and the documentation.
#
#   scripts/build-deb.sh          CI: packages the debug binary the tests already built
#                                 (cargo deb --profile dev --no-build): checks packaging
#                                 without a 10+ minute release build.
#   scripts/build-deb.sh release  the real package: cargo deb (release build).
#
# Installs cargo-deb from crates.io when it is missing (about 3.5 minutes on 2 cores).
set -euo pipefail
cd "$(dirname "$0")/.."

# Pinned: newer cargo-deb may refuse --profile dev, which CI relies on.
CARGO_DEB_VERSION=3.8.0
if ! cargo deb --version >/dev/null 2>&1; then
    echo "installing cargo-deb $CARGO_DEB_VERSION from crates.io"
    cargo install cargo-deb --locked --version "$CARGO_DEB_VERSION"
fi

out=target/debian
rm -f "$out"/voicekit-bridge_*.deb
if [ "${1:-dev}" = release ]; then
    cargo deb --locked --output "$out"
else
    [ -x target/debug/voicekit-bridge ] || cargo build --locked --bin voicekit-bridge
    # --strip: the unstripped debug binary is ~350 MB.
    cargo deb --no-build --profile dev --strip --fast --quiet --output "$out"
fi
deb=$(ls "$out"/voicekit-bridge_*.deb)

contents=$(dpkg-deb --contents "$deb")
docs=()
for page in docs/*.md docs/dashboard/*.png; do docs+=("./usr/share/doc/voicekit-bridge/$page"); done
for path in ./usr/bin/voicekit-bridge ./usr/lib/systemd/system/voicekit-bridge.service \
    ./etc/voicekit-bridge/config.toml ./usr/share/doc/voicekit-bridge/README.md "${docs[@]}"; do
    if ! grep -q " $path\$" <<<"$contents"; then
        echo "$contents"
        echo "FAIL: $deb lacks $path" >&2
        exit 1
    fi
done
control=$(mktemp -d)
trap 'rm -rf "$control"' EXIT
dpkg-deb --control "$deb" "$control"
if ! grep -qx /etc/voicekit-bridge/config.toml "$control/conffiles"; then
    echo "FAIL: $deb does not mark /etc/voicekit-bridge/config.toml as a conffile" >&2
    exit 1
fi
for script in postinst prerm postrm; do
    [ -f "$control/$script" ] || { echo "FAIL: $deb has no $script" >&2; exit 1; }
done
echo "ok: $deb"
