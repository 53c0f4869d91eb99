#!/usr/bin/env bash
# Installs what strata needs to build and test, when it is missing.
# Debian/Ubuntu: apt-get (as root, or through sudo). macOS: prints the Homebrew line.
set -euo pipefail

DEBIAN_PACKAGES=(
  build-essential cmake pkg-config
  libjansson-dev libzmq3-dev libprotobuf-c-dev protobuf-c-compiler libyaml-dev libsodium-dev
  libpcre2-dev libutf8proc-dev libavahi-client-dev libavahi-compat-libdnssd-dev libmicrohttpd-dev
  nodejs npm
)

if [ "$(uname -s)" = "Darwin" ]; then
  echo "macOS: install the libraries with Homebrew, then re-run:"
  echo "  brew install cmake pkg-config jansson zeromq protobuf-c libyaml libsodium pcre2 utf8proc libmicrohttpd node"
  exit 0
fi

missing=()
for p in "${DEBIAN_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
# nodejs/npm may come from elsewhere (nvm, a distribution of node): accept a working npm
if command -v npm >/dev/null 2>&1; then
  missing=("${missing[@]/nodejs}"); missing=("${missing[@]/npm}")
fi
read -r -a missing <<<"${missing[*]:-}"
[ ${#missing[@]} -eq 0 ] && exit 0

echo "installing: ${missing[*]}"
SUDO=""
[ "$(id -u)" -ne 0 ] && SUDO="sudo"
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
