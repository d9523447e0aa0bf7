#!/usr/bin/env bash
# The main job, on a fresh Debian 12 machine as root: install what is missing, build
# (release), then back up a throwaway PostgreSQL 15 with WAL archiving into a file://
# repository, restore it to a point in time in a new directory, and check the result.
# Set WV_REPO_URL to use another repository.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"

bash scripts/install-deps.sh
bin=$(bash scripts/build.sh --release | tail -n 1)
[[ -x $bin ]] || {
  echo "demo.sh: build did not produce $bin" >&2
  exit 1
}
WALVAULT_BIN=$bin WALVAULT_SOURCE_DIR=$root exec bash tests/integration/demo_pitr.sh
