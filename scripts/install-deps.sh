#!/usr/bin/env bash
# Installs the Debian packages walvault needs to build, test and benchmark.
# Idempotent and silent when everything is present; runs unattended (no terminal).
# Debian's postgresql package creates (and may start) a default cluster 'main':
# nothing here depends on it, and nothing here stops or disables it.
set -euo pipefail

packages=(
  build-essential cmake pkg-config
  clang libclang-rt-14-dev            # libFuzzer targets
  libpq-dev libcurl4-openssl-dev libssl-dev liblz4-dev libsodium-dev
  libjansson-dev libinih-dev libmicrohttpd-dev libcmocka-dev
  postgresql-15 postgresql-client-15  # integration tests start their own servers
  pgbackrest                          # bench/ compares against it
  util-linux                          # runuser: tests run PostgreSQL as an unprivileged user
  procps
  python3                             # tests parse walvault's --json output
)

missing=()
for pkg in "${packages[@]}"; do
  status=$(dpkg-query -W -f='${db:Status-Status}' "$pkg" 2>/dev/null || true)
  [[ $status == installed ]] || missing+=("$pkg")
done
((${#missing[@]} == 0)) && exit 0

if ((EUID != 0)); then
  echo "install-deps.sh: missing Debian packages: ${missing[*]}; run this script as root to install them" >&2
  exit 1
fi

echo "install-deps.sh: installing ${missing[*]}"
log=$(mktemp /tmp/walvault-install-deps.XXXXXX)
trap 'rm -f "$log"' EXIT
export DEBIAN_FRONTEND=noninteractive
if ! { apt-get update -qq &&
  apt-get install -y -qq --no-install-recommends "${missing[@]}"; } </dev/null >"$log" 2>&1; then
  cat "$log" >&2
  echo "install-deps.sh: apt-get failed while installing: ${missing[*]}" >&2
  exit 1
fi
