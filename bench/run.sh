#!/usr/bin/env bash
# bench/run.sh [SCALE]: benchmark walvault against pgBackRest on one pgbench database of
# scale SCALE (default 60) and rewrite bench/RESULTS.md and bench/results.json.
#
#   bash bench/run.sh          # as root (PostgreSQL then runs as user walvault-test) or not
#   bash bench/run.sh 20       # a smaller database: a few minutes
#   WALVAULT_BIN=/path/walvault bash bench/run.sh   # measure that binary instead of building
#   WV_BENCH_GIT_REV=...          # what RESULTS.md calls that binary (default: this tree's)
#   WV_BENCH_BUILD_DIR=DIR        # the CMake build directory of that binary, for the static
#                                 # libraries bench/s3xfer links (default: the binary's directory)
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

load_start=$(cut -d' ' -f1-3 /proc/loadavg)
echo "load average at the start: $load_start"

work=$(mktemp -d /tmp/walvault-bench.XXXXXXXX)
trap 'rm -rf "$work"' EXIT
# A private copy of the binary and scripts: others may rebuild the tree while this runs,
# and the unprivileged user may not be able to read a clone under /root.
mkdir -p "$work/stage" "$work/out"
cp "$WALVAULT_BIN" "$work/stage/walvault"
cp "$bench/bench.sh" "$bench/stream.sh" "$bench/streamstat.py" "$bench/measure.py" "$bench/pages.py" \
  "$root/tests/integration/lib.sh" "$work/stage/"
# The S3 part: s3rver and proxy.js where lib.sh looks for them (../s3 from lib.sh), and
# bench/s3xfer built against the static libraries of the walvault being measured, with the
# headers of the source tree that build came from. Without either, bench.sh skips the S3
# part and the report says why.
s3_skip=""
[[ ! -d $root/tests/s3 ]] || cp -a "$root/tests/s3" "$work/s3"
build_dir=${WV_BENCH_BUILD_DIR:-$(dirname "$WALVAULT_BIN")}
src_dir=$(sed -n 's/^CMAKE_HOME_DIRECTORY:INTERNAL=//p' "$build_dir/CMakeCache.txt" 2>/dev/null || true)
if [[ ! -f $build_dir/libwv_storage.a || ! -f $build_dir/libwv_common.a || -z $src_dir ]]; then
  s3_skip="no libwv_storage.a, libwv_common.a and CMakeCache.txt in $build_dir (set WV_BENCH_BUILD_DIR)"
elif ! libs=$(pkg-config --libs libcurl libcrypto inih jansson); then
  s3_skip="pkg-config found no libcurl, libcrypto, inih or jansson"
else
  read -ra lib_flags <<<"$libs"
  cc -std=c11 -O2 -Wall -Wextra -Werror -D_GNU_SOURCE -I"$src_dir" -o "$work/stage/s3xfer" \
    "$bench/s3xfer.c" "$build_dir/libwv_storage.a" "$build_dir/libwv_common.a" \
    "${lib_flags[@]}" -lpthread || s3_skip="bench/s3xfer.c did not build against $build_dir"
fi
s3xfer_bin=""
if [[ -n $s3_skip ]]; then
  echo "bench/run.sh: WARNING: the S3 part will be skipped: $s3_skip" >&2
else
  s3xfer_bin=$work/stage/s3xfer
fi
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
  WV_BENCH_LIB=$work/stage/lib.sh \
  WV_BENCH_S3XFER=$s3xfer_bin WV_BENCH_S3_SKIP=$s3_skip \
  bash "$work/stage/bench.sh" || status=$?
# The streaming benchmarks (bench/stream.sh: about 20 minutes with the 10-minute soak).
stream_status=0
WALVAULT_BIN=$work/stage/walvault WV_BENCH_OUT=$work/out WV_BENCH_LIB=$work/stage/lib.sh \
  bash "$work/stage/stream.sh" || stream_status=$?
((stream_status == 0)) || echo "bench/run.sh: WARNING: stream.sh exited with status $stream_status" >&2
((status != 0)) || status=$stream_status
elapsed=$((SECONDS - started))
load_end=$(cut -d' ' -f1-3 /proc/loadavg)
echo "load average at the end: $load_end"

[[ -f $work/out/meta.json ]] || fail "the benchmark stopped before measuring anything (status $status)"
report_status=0
python3 "$bench/report.py" --in "$work/out" --markdown "$bench/RESULTS.md" \
  --json "$bench/results.json" --elapsed "$elapsed" --git-rev "$git_rev" \
  --bench-status "$status" --load-start "$load_start" --load-end "$load_end" || report_status=$?
# report.py exits 3 when it wrote the report but some runs failed.
((report_status == 0 || report_status == 3)) || fail "writing the report failed"
echo "wrote $bench/RESULTS.md and $bench/results.json (${elapsed} s)"
((status == 0)) || fail "bench.sh exited with status $status; RESULTS.md lists what was measured"
((report_status == 0)) || fail "some runs failed; see 'Failed runs' in bench/RESULTS.md"
