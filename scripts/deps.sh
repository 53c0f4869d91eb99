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
# what only the tests need (scripts/test.sh passes --test): avahi-daemon, dbus and iproute2 for
# the discovery test across network namespaces; clang and its libFuzzer runtime for the fuzz
# targets' short runs
TEST_PACKAGES=(avahi-daemon dbus iproute2 clang libclang-rt-14-dev)
# the aarch64 (NEON) kernels' test on an x86-64 machine (tests/test_neon_qemu.sh): Debian's cross
# compilers, qemu's user-mode emulator and jansson for arm64 (multiarch: adds the arm64 architecture)
CROSS_PACKAGES=(gcc-aarch64-linux-gnu g++-aarch64-linux-gnu libc6-dev-arm64-cross qemu-user libjansson-dev:arm64)

if [ "$(uname -s)" = "Darwin" ]; then
  echo "macOS: install the libraries with Homebrew, then re-run:"
  echo "  brew install cmake pkg-config jansson zeromq protobuf-c libyaml libsodium pcre2 utf8proc libmicrohttpd node"
  exit 0
fi

# packages of a list that are not installed yet
not_installed() {
  local p
  for p in "$@"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || echo "$p"
  done
}
SUDO=""
[ "$(id -u)" -ne 0 ] && SUDO="sudo"
updated=0
install() {
  [ $updated = 1 ] || { $SUDO apt-get update -qq; updated=1; }
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "$@"
}

read -r -a missing <<<"$(not_installed "${DEBIAN_PACKAGES[@]}" | tr '\n' ' ')"
# nodejs/npm may come from elsewhere (nvm, a distribution of node): accept a working npm
if command -v npm >/dev/null 2>&1; then
  read -r -a missing <<<"$(printf '%s\n' "${missing[@]}" | grep -vxE 'nodejs|npm' | tr '\n' ' ')"
fi
if [ ${#missing[@]} -gt 0 ]; then
  echo "installing: ${missing[*]}"
  install "${missing[@]}"
fi

# the test-only packages: a test whose tools are missing says so and is skipped (exit 77), so a
# distribution without one of them still builds and runs every other test
if [ "${1:-}" = "--test" ]; then
  read -r -a missing <<<"$(not_installed "${TEST_PACKAGES[@]}" | tr '\n' ' ')"
  if [ ${#missing[@]} -gt 0 ]; then
    echo "installing (tests only): ${missing[*]}"
    install "${missing[@]}" || echo "deps.sh: could not install ${missing[*]}: the tests that need them will be skipped"
  fi
  if [ "$(uname -m)" = x86_64 ]; then
    read -r -a missing <<<"$(not_installed "${CROSS_PACKAGES[@]}" | tr '\n' ' ')"
    if [ ${#missing[@]} -gt 0 ]; then
      echo "installing (aarch64 test): ${missing[*]}"
      if ! dpkg --print-foreign-architectures | grep -qx arm64; then $SUDO dpkg --add-architecture arm64 && updated=0; fi
      install "${missing[@]}" || echo "deps.sh: could not install ${missing[*]}: the aarch64 test will be skipped"
    fi
  fi
fi
