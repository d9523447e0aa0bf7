#!/usr/bin/env bash
# bench/run.sh [SCALE]: benchmark walvault against pgBackRest on one pgbench database of
# scale SCALE (default 60) and rewrite bench/RESULTS.md and bench/results.json.
#
#   bash bench/run.sh          # as root (PostgreSQL then runs as user walvault-test) or not
#   bash bench/run.sh 20       # a smaller database: a few minutes
#   WALVAULT_BIN=/path/walvault bash bench/run.sh   # measure that binary instead of building
#   WV_BENCH_GIT_REV=...          # what RESULTS.md calls that binary (default: this tree's)
#
# What is measured and how is written into RESULTS.md itself (see bench/report.py);
# bench/bench.sh runs the servers and the timed commands, bench/measure.py times one run.
# Everything runs under a temporary directory in /tmp (socket paths must stay short),
# removed at the end with the servers it started.
set -euo pipefail

usage() {
  echo "usage: bench/run.sh [SCALE]   (pgbench scale factor, default 60)" >&2
  exit 2
}

scale=${1:-60}
[[ $# -le 1 && $scale =~ ^[1-9][0-9]*$ ]] || usage

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
bench=$root/bench
test_user=${WV_TEST_USER:-walvault-test}

fail() {
  echo "bench/run.sh: $*" >&2
  exit 1
}

# The timing tool and the lz4 command (the ideal incremental's compressed size); the other
# prerequisites come with the test setup (scripts/install-deps.sh).
for pkg in time:/usr/bin/time lz4:/usr/bin/lz4; do
  [[ ! -x ${pkg#*:} ]] || continue
  ((EUID == 0)) || fail "${pkg#*:} is missing; as root: apt-get install -y ${pkg%%:*}"
  echo "installing ${pkg#*:} (Debian package ${pkg%%:*})"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${pkg%%:*}" >/dev/null ||
    fail "apt-get install ${pkg%%:*} failed"
done
for tool in pgbackrest python3 /usr/lib/postgresql/15/bin/pgbench /usr/lib/postgresql/15/bin/pg_basebackup; do
  command -v "$tool" >/dev/null || fail "$tool not found (Debian packages pgbackrest, python3, postgresql-15)"
done

if [[ -z ${WALVAULT_BIN:-} ]]; then
  echo "building walvault (release)"
  WALVAULT_BIN=$(bash "$root/scripts/build.sh" --release | tail -n 1) ||
    fail "the release build failed (scripts/build.sh --release)"
fi
[[ -x $WALVAULT_BIN ]] || fail "WALVAULT_BIN=$WALVAULT_BIN is not executable"
# WV_BENCH_GIT_REV labels a WALVAULT_BIN built elsewhere (e.g. from `git archive HEAD`),
# which this tree's state says nothing about.
if [[ -n ${WV_BENCH_GIT_REV:-} ]]; then
  git_rev=$WV_BENCH_GIT_REV
else
  git_rev=$(git -C "$root" rev-parse --short HEAD 2>/dev/null || echo unknown)
  if [[ -n $(git -C "$root" status --porcelain --untracked-files=no 2>/dev/null) ]]; then
    git_rev+=" (with uncommitted changes)"
  fi
fi

work=$(mktemp -d /tmp/walvault-bench.XXXXXXXX)
trap 'rm -rf "$work"' EXIT
# A private copy of the binary and scripts: others may rebuild the tree while this runs,
# and the unprivileged user may not be able to read a clone under /root.
mkdir -p "$work/stage" "$work/out"
cp "$WALVAULT_BIN" "$work/stage/walvault"
cp "$bench/bench.sh" "$bench/measure.py" "$bench/pages.py" "$root/tests/integration/lib.sh" "$work/stage/"
chmod -R a+rX "$work"
if ((EUID == 0)); then
  id -u "$test_user" >/dev/null 2>&1 ||
    useradd --system --create-home --shell /bin/bash "$test_user" ||
    fail "cannot create user $test_user"
  chown "$test_user" "$work/out"
fi

echo "benchmark at scale $scale; temporary files in $work and /tmp/wv.*"
started=$SECONDS
status=0
WALVAULT_BIN=$work/stage/walvault WV_BENCH_OUT=$work/out WV_BENCH_SCALE=$scale \
  WV_BENCH_LIB=$work/stage/lib.sh bash "$work/stage/bench.sh" || status=$?
elapsed=$((SECONDS - started))

[[ -f $work/out/meta.json ]] || fail "the benchmark stopped before measuring anything (status $status)"
report_status=0
python3 "$bench/report.py" --in "$work/out" --markdown "$bench/RESULTS.md" \
  --json "$bench/results.json" --elapsed "$elapsed" --git-rev "$git_rev" \
  --bench-status "$status" || report_status=$?
# report.py exits 3 when it wrote the report but some runs failed.
((report_status == 0 || report_status == 3)) || fail "writing the report failed"
echo "wrote $bench/RESULTS.md and $bench/results.json (${elapsed} s)"
((status == 0)) || fail "bench.sh exited with status $status; RESULTS.md lists what was measured"
((report_status == 0)) || fail "some runs failed; see 'Failed runs' in bench/RESULTS.md"
