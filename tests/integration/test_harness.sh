#!/usr/bin/env bash
# Tests the integration-test library itself (no walvault needed): dropping root, a
# cluster's settings, archiving, starting restored copies (promote and pause), assertions,
# and that the EXIT trap stops every server and removes every file, whether the test
# passes, fails or is killed.
set -euo pipefail
# shellcheck source=SCRIPTDIR/lib.sh
source "$(dirname "$0")/lib.sh"
wv_drop_root "$@"
wv_tmpdir

wv_step "runs as $(id -un)"
[[ $EUID != 0 ]] || wv_fail "still root after wv_drop_root"

wv_pg_init a
wv_pg_start a
for setting in "data_checksums on" "fsync on" "wal_level replica" "archive_mode on" \
  "max_wal_senders 5" "shared_buffers 32MB" "max_wal_size 1GB" "listen_addresses 127.0.0.1" \
  "port ${WV_PORT[a]}" "unix_socket_directories $WV_TMP"; do
  wv_assert_eq "${setting#* }" "$(wv_psql a "SHOW ${setting%% *}")" "setting ${setting%% *}"
done
wv_assert_fails wv_pg_conf a "fsync = off"
wv_assert_contains "$WV_LAST_STDERR" "fsync=off is not allowed" "wv_pg_conf refuses fsync=off"

wv_step "create a table"
wv_psql a "CREATE TABLE t (i int PRIMARY KEY); INSERT INTO t SELECT generate_series(1, 1000)"
wv_assert_eq 1000 "$(wv_psql a 'SELECT count(*) FROM t')" "rows in t"
wv_assert_eq 1 "$("$WV_PGBIN/psql" -XAtq -d "$(wv_pg_conninfo a)" -c 'SELECT 1')" "psql via wv_pg_conninfo"
wv_assert_fails wv_psql a "SELECT * FROM no_such_table"
wv_assert_contains "$WV_LAST_STDERR" 'relation "no_such_table" does not exist' "psql error"
wv_assert_fails false
wv_assert_eq 1 "$WV_LAST_STATUS" "status of false"

wv_step "archive WAL with cp"
mkdir "$WV_TMP/archive"
wv_pg_conf a "archive_command = 'test ! -f $WV_TMP/archive/%f && cp %p $WV_TMP/archive/%f'"
wv_pg_reload a
wv_psql a "INSERT INTO t SELECT generate_series(1001, 2000)"
wv_pg_archive_wait a
seg=$(wv_psql a "SELECT last_archived_wal FROM pg_stat_archiver")
[[ -f $WV_TMP/archive/$seg ]] || wv_fail "$seg is not in $WV_TMP/archive"

wv_step "copy a with pg_basebackup, twice"
for copy in copy1 copy2; do
  "$WV_PGBIN/pg_basebackup" -d "$(wv_pg_conninfo a)" -D "$WV_TMP/$copy" -X stream -c fast \
    >/dev/null 2>&1 || wv_fail "pg_basebackup into $copy failed"
  touch "$WV_TMP/$copy/recovery.signal"
done
wv_psql a "INSERT INTO t SELECT generate_series(2001, 3000)"

wv_pg_start_restored "$WV_TMP/copy1" r1 "restore_command = 'cp $WV_TMP/archive/%f %p'" \
  "recovery_target = 'immediate'" "recovery_target_action = 'promote'" "archive_mode = off"
wv_assert_eq f "$(wv_psql r1 'SELECT pg_is_in_recovery()')" "r1 promoted"
wv_assert_eq 2000 "$(wv_psql r1 'SELECT count(*) FROM t')" "rows in r1"
wv_assert_eq "${WV_PORT[r1]}" "$(wv_psql r1 'SHOW port')" "r1 port"

wv_pg_start_restored "$WV_TMP/copy2" r2 "restore_command = 'cp $WV_TMP/archive/%f %p'" \
  "recovery_target = 'immediate'" "recovery_target_action = 'pause'" "archive_mode = off"
wv_assert_eq t "$(wv_psql r2 'SELECT pg_is_in_recovery()')" "r2 paused in recovery"
wv_assert_eq 2000 "$(wv_psql r2 'SELECT count(*) FROM t')" "rows in r2"
wv_assert_eq 3000 "$(wv_psql a 'SELECT count(*) FROM t')" "rows in a"

wv_pg_stop a
wv_pg_running a && wv_fail "a still runs after wv_pg_stop"
wv_pg_start a
wv_assert_eq 3000 "$(wv_psql a 'SELECT count(*) FROM t')" "rows in a after restart"
wv_pg_stop a immediate

wv_step "free ports are distinct and reserved"
p1=$(wv_free_port)
p2=$(wv_free_port)
[[ $p1 != "$p2" ]] || wv_fail "wv_free_port returned $p1 twice"
[[ -f $WV_PORT_DIR/$p1/pid ]] || wv_fail "port $p1 is not reserved"

# The EXIT trap, seen from outside: a child test starts a server and a background process,
# then fails, passes or is killed; afterwards nothing of it may remain.
cat >"$WV_TMP/child.sh" <<'CHILD'
set -euo pipefail
source "$WV_LIB"
wv_tmpdir
echo "$WV_TMP" >"$REPORT.tmp"
wv_pg_init c
wv_pg_start c
head -n 1 "${WV_PGDATA[c]}/postmaster.pid" >"$REPORT.pid"
echo "${WV_PORT[c]}" >"$REPORT.port"
wv_bg sleeper sleep 300
echo "$WV_LAST_PID" >"$REPORT.bgpid"
case $MODE in
  fail) wv_psql c "SELECT 1/0" ;;
  wvfail) wv_fail "deliberate failure" ;;
  pass) ;;
  term) touch "$REPORT.ready"; wait ;;
esac
CHILD

process_gone() { # PID: gone (or a zombie) within 10 s
  local i
  for i in $(seq 100); do
    kill -0 "$1" 2>/dev/null || return 0
    [[ $(awk '{print $3}' "/proc/$1/stat" 2>/dev/null) == Z ]] && return 0
    sleep 0.1
  done
  return 1
}

check_child_cleaned() { # MODE REPORT OUTPUT
  local mode=$1 report=$2 out=$3 dir pid bgpid port
  dir=$(cat "$report.tmp")
  pid=$(cat "$report.pid")
  bgpid=$(cat "$report.bgpid")
  port=$(cat "$report.port")
  [[ ! -e $dir ]] || wv_fail "child ($mode) left $dir behind"
  process_gone "$pid" || wv_fail "child ($mode) left postgres $pid running"
  process_gone "$bgpid" || wv_fail "child ($mode) left background process $bgpid running"
  [[ ! -e $WV_PORT_DIR/$port ]] || wv_fail "child ($mode) left port $port reserved"
  ! "$WV_PGBIN/pg_isready" -q -h 127.0.0.1 -p "$port" || wv_fail "port $port still answers"
  [[ -n $out ]]
}

for mode in pass fail wvfail term; do
  wv_step "child test, $mode"
  report=$WV_TMP/report-$mode
  status=0
  if [[ $mode == term ]]; then
    WV_LIB=$WV_LIB_DIR/lib.sh REPORT=$report MODE=$mode bash "$WV_TMP/child.sh" >"$report.out" 2>&1 &
    child=$!
    for _ in $(seq 300); do [[ -f $report.ready ]] && break; sleep 0.1; done
    [[ -f $report.ready ]] || wv_fail "child ($mode) did not get ready: $(cat "$report.out")"
    kill -TERM "$child"
    wait "$child" || status=$?
  else
    WV_LIB=$WV_LIB_DIR/lib.sh REPORT=$report MODE=$mode bash "$WV_TMP/child.sh" >"$report.out" 2>&1 ||
      status=$?
  fi
  out=$(cat "$report.out")
  check_child_cleaned "$mode" "$report" "$out"
  case $mode in
    pass)
      wv_assert_eq 0 "$status" "exit status of passing child"
      wv_assert_contains "$out" "PASS child" "passing child's output"
      ;;
    fail)
      wv_assert_eq 1 "$status" "exit status of child failing in psql"
      wv_assert_contains "$out" "FAIL child (exit status 1)" "failing child's output"
      wv_assert_contains "$out" "division by zero" "failing child's output"
      wv_assert_contains "$out" "last 40 lines of" "failing child shows server logs"
      ;;
    wvfail)
      wv_assert_eq 1 "$status" "exit status of child calling wv_fail"
      wv_assert_contains "$out" "FAIL child: deliberate failure" "wv_fail's output"
      ;;
    term)
      wv_assert_eq 143 "$status" "exit status of child killed by SIGTERM"
      ;;
  esac
done
