#!/usr/bin/env bash
# The README's five-minute tour, run as it is written, command by command: it must end with
# the dropped table back in the restored copy.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
wv_drop_root "$@"
wv_tmpdir
readme=${WALVAULT_SOURCE_DIR:-$(dirname "$0")/../..}/README.md
[[ -r $readme ]] || readme=$WV_LIB_DIR/README.md # staged for the test user: see below
[[ -r $readme ]] || wv_skip "README.md is not readable by the test user"

# The first sh block after the "Five-minute tour" heading.
awk '/^## Five-minute tour/ {f = 1} f && /^```sh/ {c = 1; next} c && /^```/ {exit} c {print}' \
  "$readme" >"$WV_TMP/tour.sh"
(($(wc -l <"$WV_TMP/tour.sh") > 5)) || wv_fail "no tour found in $readme"

wv_pg_init src
wv_pg_start src
port=$(wv_free_port)
mkdir -p "$WV_TMP/home" "$WV_TMP/bin"
ln -s "$WALVAULT_BIN" "$WV_TMP/bin/walvault"
sed -i "s/5433/$port/g" "$WV_TMP/tour.sh"
wv_step "run the tour ($(wc -l <"$WV_TMP/tour.sh") lines)"
status=0
(
  export HOME=$WV_TMP/home PATH=$WV_TMP/bin:$WV_PGBIN:$PATH
  export PGHOST=$WV_TMP PGPORT=${WV_PORT[src]} PGUSER=postgres PGDATABASE=postgres
  cd "$HOME"
  trap 'kill $(jobs -p) 2>/dev/null; pg_ctl -D "$HOME/restored" -m immediate stop >/dev/null 2>&1 || true' EXIT
  set -x
  # shellcheck disable=SC1091
  source "$WV_TMP/tour.sh"
) >"$WV_TMP/tour.out" 2>&1 || status=$?
if ((status != 0)); then
  cat "$WV_TMP/tour.out" >&2
  wv_fail "the tour failed (exit $status)"
fi
# What the tour's last command printed: the first untraced line after it.
answer=$(awk '/SELECT answer FROM tour/ {f = 1; next} f && !/^\+/ {print; exit}' "$WV_TMP/tour.out")
wv_assert_eq 42 "$answer" "what the tour's last command printed"
