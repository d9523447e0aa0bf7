#!/usr/bin/env bash
# Installs the Debian packages walvault needs to build, test and benchmark, and with npm the
# S3 test server (s3rver, pinned in tests/s3/package-lock.json) and the Kubernetes manifest
# validator (kubernetes-models, pinned in tests/deploy/package-lock.json).
# Idempotent and silent when everything is present; runs unattended (no terminal).
# Debian's postgresql package creates (and may start) a default cluster 'main':
# nothing here depends on it, and nothing here stops or disables it.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)

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
  curl                                # tests drive the S3 proxy's control API
  awscli                              # tests and bench/ cross-check the S3 server with it
  python3-prometheus-client           # test_agent.sh parses /metrics with it
  yamllint                            # tests/integration/test_deploy.sh: deploy/ YAML
  python3-yaml                        # test_deploy_postgres.sh reads the manifests
  systemd                             # systemd-analyze verify of deploy/systemd units
)
# Node.js runs the S3 test server and proxy (tests/s3). A node already installed (say a
# newer one from elsewhere) is used as it is; Debian's nodejs and npm come only when absent.
if ! command -v node >/dev/null; then
  packages+=(nodejs npm)
elif ! command -v npm >/dev/null; then
  packages+=(npm)
fi

log=$(mktemp /tmp/walvault-install-deps.XXXXXX)
trap 'rm -f "$log"' EXIT

missing=()
for pkg in "${packages[@]}"; do
  status=$(dpkg-query -W -f='${db:Status-Status}' "$pkg" 2>/dev/null || true)
  [[ $status == installed ]] || missing+=("$pkg")
done

if ((${#missing[@]} > 0)); then
  if ((EUID != 0)); then
    echo "install-deps.sh: missing Debian packages: ${missing[*]}; run this script as root to install them" >&2
    exit 1
  fi
  echo "install-deps.sh: installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  if ! { apt-get update -qq &&
    apt-get install -y -qq --no-install-recommends "${missing[@]}"; } </dev/null >"$log" 2>&1; then
    cat "$log" >&2
    echo "install-deps.sh: apt-get failed while installing: ${missing[*]}" >&2
    exit 1
  fi
fi

# --- npm packages of the tests: npm ci in tests/s3 (s3rver) and tests/deploy (the Kubernetes
# schema validator) when node_modules is missing or was installed from another
# package-lock.json (its hash is kept in node_modules as a stamp).
node_major=$(node -p 'process.versions.node.split(".")[0]')
if ((node_major < 16)); then
  echo "install-deps.sh: node $(node --version) is too old for tests/s3 and tests/deploy (16 or later needed)" >&2
  exit 1
fi
npm_ci() { # DIR PACKAGE: npm ci in DIR unless node_modules matches its lock file
  local dir=$1 pkg=$2 stamp want
  stamp=$dir/node_modules/.walvault-lock-sha256
  want=$(sha256sum <"$dir/package-lock.json" | cut -d' ' -f1)
  if [[ ! -f $stamp || $(cat "$stamp") != "$want" || ! -f $dir/node_modules/$pkg/package.json ]]; then
    echo "install-deps.sh: npm ci in ${dir#"$root"/} ($pkg)"
    if ! (cd "$dir" && npm ci --no-audit --no-fund --loglevel=error) </dev/null >"$log" 2>&1; then
      cat "$log" >&2
      echo "install-deps.sh: npm ci failed in $dir" >&2
      exit 1
    fi
    echo "$want" >"$stamp"
  fi
}
npm_ci "$root/tests/s3" s3rver
npm_ci "$root/tests/deploy" kubernetes-models
