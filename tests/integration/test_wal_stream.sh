#!/usr/bin/env bash
# wal-stream: WAL archived over a replication slot as it arrives.
#   SIGTERM stores what was received and exits 0 (asynchronous, long sync interval);
#   synchronous archiving: a backup taken while streaming, commits one at a time, wal-stream
#   SIGKILLed and restarted, PostgreSQL restarted, then PostgreSQL crashed right after a
#   commit returned: verify finds no gap and a restore to latest holds every acknowledged
#   row (RPO 0);
#   timeline switches: the restored server promotes to timeline 2, wal-stream against it
#   archives 00000002.history and goes on streaming timeline 2; a paused standby promoted
#   while wal-stream streams from it: the stream follows it onto its new timeline.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
wv_drop_root "$@"
wv_tmpdir
wv_repo_setup
wv_repo_init

APP=walvault_test
STREAM_PID=""

# stream_start SERVER [walvault options...]: wal-stream against SERVER in the background.
stream_start() {
  local name=$1
  shift
  local -a common
  mapfile -t common < <(wv__repo_args)
  wv_bg "stream-$name" "$WALVAULT_BIN" "${common[@]}" --pg "$(wv_pg_conninfo "$name")" \
    --application-name "$APP" "$@" wal-stream
  STREAM_PID=$WV_LAST_PID
}

stream_wait() { # SERVER STATE: until SERVER streams to us in sync_state STATE (or "any")
  wv_pg_standby_wait "$1" "$APP" "$2" "$STREAM_PID"
}

# archived_end TLI: the end of the WAL archived on timeline TLI, in bytes (0: none).
archived_end() {
  wv_run list --json | python3 -c '
import json, sys
tli, seg = int(sys.argv[1]), 16 << 20
def lsn(s):
    hi, lo = s.split("/")
    return (int(hi, 16) << 32) | int(lo, 16)
end = 0
for t in json.load(sys.stdin)["wal"]:
    if t["timeline"] != tli:
        continue
    for r in t["ranges"]:
        end = max(end, (int(r["last"][8:16], 16) * 256 + int(r["last"][16:], 16) + 1) * seg)
    if "partial" in t:
        end = max(end, lsn(t["partial"]["end_lsn"]))
print(end)' "$1"
}

lsn_bytes() { # SERVER SQL: an LSN the query returns, in bytes
  wv_psql "$1" "SELECT ($2) - '0/0'::pg_lsn"
}

# writer SERVER FIRST_ID FILE: commits one row at a time until $WV_TMP/stop-writer exists;
# every id whose commit returned goes to FILE.
writer() {
  local name=$1 id=$2 file=$3
  while [[ ! -e $WV_TMP/stop-writer ]]; do
    if wv_psql "$name" "INSERT INTO t VALUES ($id)" >/dev/null 2>&1; then
      echo "$id" >>"$file"
    fi
    id=$((id + 1))
  done
}

acked_count() { [[ -f $1 ]] && wc -l <"$1" || echo 0; }

# wait_acked FILE N: until FILE holds at least N more ids than it did.
wait_acked() {
  local file=$1 want deadline=$((SECONDS + 30))
  want=$(($(acked_count "$file") + $2))
  until (($(acked_count "$file") >= want)); do
    ((SECONDS < deadline)) || wv_fail "commits stopped returning (wanted $want in $file)"
    sleep 0.1
  done
}

wv_pg_init a
wv_pg_conf a "archive_command = '/bin/true'"
wv_pg_start a
wv_psql a "CREATE TABLE t (id int PRIMARY KEY)"

# ---- SIGTERM: asynchronous, nothing stored before the 60 s interval
stream_start a --sync-interval 60s
stream_wait a async
wv_psql a "INSERT INTO t SELECT g FROM generate_series(1000001, 1000500) g"
flush=$(lsn_bytes a "pg_current_wal_flush_lsn()")
until (($(lsn_bytes a "(SELECT sent_lsn FROM pg_stat_replication WHERE application_name = '$APP')") >= flush)); do
  sleep 0.05
done
sleep 0.3 # the bytes sent reach wal-stream's socket
(($(archived_end 1) < flush)) || wv_fail "wal-stream stored before its sync interval"
wv_step "SIGTERM: wal-stream stores what it received and exits 0"
kill -TERM "$STREAM_PID"
status=0
wait "$STREAM_PID" || status=$?
wv_assert_eq 0 "$status" "exit status of wal-stream after SIGTERM"
end=$(archived_end 1)
((end >= flush)) || wv_fail "after SIGTERM the archive ends at $end, before the flush LSN $flush"

# ---- synchronous archiving
wv_pg_conf a "synchronous_standby_names = '$APP'"
wv_pg_reload a
stream_start a --sync-interval 1s
stream_wait a sync
wv_step "a base backup while streaming waits for its WAL in the stream"
backup=$(wv_run backup --full --pg "$(wv_pg_conninfo a)" --pgdata "${WV_PGDATA[a]}")
[[ -n $backup ]] || wv_fail "backup printed no id"

acked=$WV_TMP/acked
wv_bg writer writer a 1 "$acked"
writer_pid=$WV_LAST_PID
wait_acked "$acked" 20

wv_step "SIGKILL wal-stream mid-stream, restart it"
kill -KILL "$STREAM_PID"
sleep 0.5
stream_start a --sync-interval 1s
wait_acked "$acked" 20

wv_step "restart PostgreSQL while streaming"
wv_pg_stop a fast
wv_pg_start a
stream_wait a sync
wait_acked "$acked" 20
touch "$WV_TMP/stop-writer"
wait "$writer_pid" || true

wv_step "crash PostgreSQL right after a commit returns"
before_last=$(wv_psql a "SELECT pg_current_wal_insert_lsn()")
wv_psql a "INSERT INTO t VALUES (999999)" >/dev/null
echo 999999 >>"$acked"
wv_pg_stop a immediate
kill -KILL "$STREAM_PID"
wv_step "$(acked_count "$acked") commits acknowledged"
wv_run list

wv_step "verify: no gap"
wv_run verify >"$WV_TMP/verify.out" 2>&1 || { cat "$WV_TMP/verify.out"; wv_fail "verify found problems"; }

wv_step "restore to latest: every acknowledged row is there"
wv_run restore --to "$WV_TMP/r1" >/dev/null
wv_pg_start_restored "$WV_TMP/r1" r1
wv_psql r1 "SELECT id FROM t WHERE id < 1000000 ORDER BY id" >"$WV_TMP/restored"
missing=$(comm -23 <(sort "$acked") <(sort "$WV_TMP/restored") | head -5)
[[ -z $missing ]] || wv_fail "acknowledged rows missing after restore: $missing"
wv_assert_eq 500 "$(wv_psql r1 "SELECT count(*) FROM t WHERE id > 1000000")" "rows archived by SIGTERM"

# ---- timeline switch: r1 promoted to timeline 2 at the end of its recovery
wv_assert_eq 00000002 "$(wv_psql r1 "SELECT substr(pg_walfile_name(pg_current_wal_lsn()), 1, 8)")" "timeline of r1"
wv_step "wal-stream against the promoted server follows timeline 2"
stream_start r1 --sync-interval 1s
stream_wait r1 sync
wv_psql r1 "INSERT INTO t SELECT g FROM generate_series(2000001, 2000100) g"
flush=$(lsn_bytes r1 "pg_current_wal_flush_lsn()")
history=nodes/${WV_NODE:-default}/wal/00000002/00000002.history
[[ -n $(wv_repo_objects "$WV_REPO" "$history") ]] || wv_fail "$history was not archived"
end=$(archived_end 2)
((end >= flush)) || wv_fail "timeline 2 archived up to $end, before the flush LSN $flush"
kill -TERM "$STREAM_PID"
status=0
wait "$STREAM_PID" || status=$?
wv_assert_eq 0 "$status" "exit status of wal-stream on timeline 2"
wv_run list

# ---- a timeline switch while streaming: a standby paused in recovery, then promoted.
# 00000002.history is archived already, so it takes timeline 3.
wv_step "wal-stream from a standby that is promoted follows it onto timeline 3"
wv_run restore --to "$WV_TMP/r2" --target-lsn "$before_last" --target-action pause >/dev/null
# on timeline 1: r2 replays and serves its segments from files of that timeline
wv_pg_start_restored "$WV_TMP/r2" r2 "recovery_target_timeline = '1'"
stream_start r2 --sync-interval 1s
stream_wait r2 any
wv_psql r2 "SELECT pg_promote()" >/dev/null
wv_assert_eq 00000003 "$(wv_psql r2 "SELECT substr(pg_walfile_name(pg_current_wal_lsn()), 1, 8)")" "timeline of r2"
stream_wait r2 sync
wv_psql r2 "INSERT INTO t SELECT g FROM generate_series(3000001, 3000100) g"
flush=$(lsn_bytes r2 "pg_current_wal_flush_lsn()")
end=$(archived_end 3)
((end >= flush)) || wv_fail "timeline 3 archived up to $end, before the flush LSN $flush"
[[ -n $(wv_repo_objects "$WV_REPO" "nodes/${WV_NODE:-default}/wal/00000003/00000003.history") ]] ||
  wv_fail "00000003.history was not archived"
grep -q "timeline 1 ended" "$WV_TMP/stream-r2.log" || wv_fail "wal-stream did not follow the switch"
kill -TERM "$STREAM_PID"
status=0
wait "$STREAM_PID" || status=$?
wv_assert_eq 0 "$status" "exit status of wal-stream on timeline 3"
wv_run list
