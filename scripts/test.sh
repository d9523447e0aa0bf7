#!/usr/bin/env bash
# Installs what is missing, builds the sanitizer build, runs every test (ctest: unit and
# integration) and a short run of every fuzz target. Ends with one line
# "N passed, N failed"; exits non-zero on any failure. Runs unattended, as root or not.
#   WV_FUZZ_SECONDS   seconds per fuzz target (default 15)
#   ASAN_OPTIONS, UBSAN_OPTIONS are respected (defaults below only when unset).
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"

export ASAN_OPTIONS=${ASAN_OPTIONS-detect_leaks=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS-print_stacktrace=1:halt_on_error=1}
fuzz_seconds=${WV_FUZZ_SECONDS:-15}

passed=0
failed=0
failures=()
skipped=()

note_failure() {
  failed=$((failed + 1))
  failures+=("$1")
}

finish() {
  if ((${#skipped[@]} > 0)); then
    echo "skipped: ${skipped[*]}"
  fi
  if ((${#failures[@]} > 0)); then
    echo "failed: ${failures[*]}"
  fi
  echo "$passed passed, $failed failed"
  if ((failed > 0)); then exit 1; fi
  exit 0
}

echo "== dependencies"
if ! bash scripts/install-deps.sh; then
  note_failure install-deps
  finish
fi

# --- unit and integration tests (ctest) under ASan/UBSan -----------------------------
echo "== build (ASan/UBSan, build-asan/)"
if bin=$(bash scripts/build.sh --sanitize | tail -n 1) && [[ -x $bin ]]; then
  echo "   $bin"
  echo "== ctest"
  ctest_log=build-asan/wv-ctest.log
  set +e
  (cd build-asan && ctest --output-on-failure -j2 </dev/null) 2>&1 | tee "$ctest_log"
  ctest_status=${PIPESTATUS[0]}
  set -e
  summary=$(grep -Eo '[0-9]+% tests passed, [0-9]+ tests failed out of [0-9]+' "$ctest_log" | tail -n 1 || true)
  if [[ $summary =~ ([0-9]+)\ tests\ failed\ out\ of\ ([0-9]+) ]]; then
    ctest_failed=${BASH_REMATCH[1]}
    ctest_total=${BASH_REMATCH[2]}
    # ctest counts a skipped test (exit 77) as passed; it is not.
    mapfile -t skipped < <(sed -n 's/^[[:space:]]*[0-9]* - \(.*\) (Skipped)$/\1/p' "$ctest_log")
    passed=$((passed + ctest_total - ctest_failed - ${#skipped[@]}))
    failed=$((failed + ctest_failed))
    if ((ctest_failed > 0)); then failures+=("ctest($ctest_failed)"); fi
    if ((ctest_status != 0 && ctest_failed == 0)); then note_failure "ctest(exit $ctest_status)"; fi
  elif grep -q 'No tests were found' "$ctest_log"; then
    echo "ctest: no tests found"
    if ((ctest_status != 0)); then note_failure "ctest(exit $ctest_status)"; fi
  else
    note_failure "ctest(no summary, exit $ctest_status)"
  fi
else
  echo "build.sh --sanitize failed" >&2
  note_failure build-asan
fi

# --- fuzz targets: libFuzzer + ASan, a short run each --------------------------------
shopt -s nullglob
fuzz_targets=(tests/fuzz/fuzz_*.c)
fuzz_sources=(common/*.c crypto/*.c)
for f in wal/walname.c backup/tar.c backup/manifest.c; do
  [[ -f $f ]] && fuzz_sources+=("$f")
done
shopt -u nullglob

if ((${#fuzz_targets[@]} == 0)); then
  echo "== fuzz: no targets in tests/fuzz/"
else
  echo "== fuzz (${fuzz_seconds} s per target)"
  mkdir -p build-fuzz/artifacts
  read -r -a fuzz_libs <<<"$(pkg-config --cflags --libs libsodium liblz4 jansson)"
  for src in "${fuzz_targets[@]}"; do
    name=$(basename "$src" .c)
    exe=build-fuzz/$name
    log=build-fuzz/$name.log
    if ! clang -std=c11 -g -O1 -fno-omit-frame-pointer -fsanitize=fuzzer,address \
      -I. -D_GNU_SOURCE -o "$exe" "$src" "${fuzz_sources[@]}" "${fuzz_libs[@]}" -lpthread \
      </dev/null >"$log" 2>&1; then
      cat "$log" >&2
      echo "fuzz $name: FAILED to build" >&2
      note_failure "$name(build)"
      continue
    fi
    corpus=build-fuzz/corpus/$name
    mkdir -p "$corpus"
    seeds=()
    [[ -d tests/fuzz/corpus/$name ]] && seeds+=("tests/fuzz/corpus/$name")
    if "$exe" -max_total_time="$fuzz_seconds" -timeout=10 -rss_limit_mb=2048 \
      -artifact_prefix="build-fuzz/artifacts/$name-" "$corpus" "${seeds[@]}" </dev/null >"$log" 2>&1; then
      runs=$(grep -Eo 'Done [0-9]+ runs' "$log" | grep -Eo '[0-9]+' || true)
      echo "fuzz $name: ok (${runs:-?} runs)"
      passed=$((passed + 1))
    else
      if grep -q 'ERROR: ' "$log"; then
        sed -n '/ERROR: /,$p' "$log" | head -n 80 >&2
      else
        tail -n 60 "$log" >&2
      fi
      echo "fuzz $name: FAILED (log: $root/$log; crashing input under build-fuzz/artifacts/)" >&2
      note_failure "$name"
    fi
  done
fi

finish
