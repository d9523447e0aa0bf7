#!/usr/bin/env bash
# Configures and builds walvault with CMake, quietly unless something fails.
#   scripts/build.sh [--release]   Release build in build/ (the default)
#   scripts/build.sh --sanitize    Debug + ASan/UBSan build in build-asan/
# The last line printed is the absolute path of the walvault binary.
set -euo pipefail

usage() {
  echo "usage: scripts/build.sh [--release|--sanitize]" >&2
  exit 2
}

mode=release
for arg in "$@"; do
  case $arg in
    --release) mode=release ;;
    --sanitize) mode=sanitize ;;
    -h | --help) usage ;;
    *)
      echo "build.sh: unknown option '$arg'" >&2
      usage
      ;;
  esac
done

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"

if [[ $mode == sanitize ]]; then
  dir=build-asan
  cmake_args=(-DCMAKE_BUILD_TYPE=Debug -DWALVAULT_SANITIZE=ON)
else
  dir=build
  cmake_args=(-DCMAKE_BUILD_TYPE=Release -DWALVAULT_SANITIZE=OFF)
fi
mkdir -p "$dir"

run_logged() { # LOGFILE WHAT CMD...: run quietly; on failure show the log and stop
  local log=$1 what=$2
  shift 2
  if ! "$@" </dev/null >"$log" 2>&1; then
    cat "$log" >&2
    echo "build.sh: $what failed in $root/$dir (log: $root/$log)" >&2
    exit 1
  fi
}

run_logged "$dir/wv-configure.log" "cmake configure" cmake -S . -B "$dir" "${cmake_args[@]}"
run_logged "$dir/wv-build.log" "build" cmake --build "$dir" --parallel "$(nproc)"

bin="$root/$dir/walvault"
if [[ ! -x $bin ]]; then
  echo "build.sh: build succeeded but $bin is missing" >&2
  exit 1
fi
echo "$bin"
