#!/usr/bin/env bash
# The agent streaming asynchronously (no synchronous_standby_names, its backup schedules
# off, one full backup taken while it streams) under load: pgbench (-c 2) and a writer
# committing one row at a time, each row's commit bounded by the WAL insert LSN read right
# after it returned. While the load runs the agent is SIGTERMed: it
# exits 0 and logs the LSN it archived up to (X), which is no less than the flush LSN it
# had reported to PostgreSQL before and no less than its slot's restart_lsn after. With
# PostgreSQL then crashed (immediate stop) while the load goes on, verify passes and a
# restore to latest holds every row whose commit ended at or before X (many of them: the
# check is not vacuous), and pgbench's tables agree with each other (the sum of the account
# balances equals the sum of pgbench_history's deltas, and so do tellers and branches).
set -euo pipefail
source "$(dirname "$0")/lib.sh"
wv_drop_root "$@"
export WV_NODE=asyncdb # the agent's application_name and slot follow the node name
wv_tmpdir
wv_repo_setup
wv_repo_init

PY=/usr/bin/python3
SLOT=walvault_$WV_NODE
ROWS=$WV_TMP/rows # "id|lsn" per committed row: lsn >= the end of that row's commit record
STOP_WRITER=$WV_TMP/stop-writer
AGENT_PID=""

[[ -x $WV_PGBIN/pgbench ]] || wv_fail "pgbench not found in $WV_PGBIN (Debian package postgresql-15)"

pg_args() { printf '%s\n' -h "$WV_TMP" -p "${WV_PORT[db]}" -U postgres; }

# The writer's statements, in batches, until $STOP_WRITER exists. The pipe to psql holds
# them back: psql sets the pace.
writer_script() {
  local id=1 i
  while [[ ! -e $STOP_WRITER ]]; do
    for ((i = 0; i < 50; i++, id++)); do
      printf 'INSERT INTO t VALUES (%d);\nSELECT %d, pg_current_wal_insert_lsn();\n' "$id" "$id"
    done
  done
}

# writer: one psql session, one transaction per row (autocommit); after each commit returns
# the same session reads the insert LSN, which is at or past the commit record's end.
writer() {
  local -a args
  mapfile -t args < <(pg_args)
  writer_script | "$WV_PGBIN/psql" -XAtq "${args[@]}" -d postgres -v ON_ERROR_STOP=1 >"$ROWS"
}

# lsn_ge A B: true when LSN A >= LSN B (asked of the source server).
lsn_ge() { [[ $(wv_psql db "SELECT '$1'::pg_lsn >= '$2'::pg_lsn") == t ]]; }

# flush_lsn: the flush LSN the agent last reported (empty while it does not stream).
flush_lsn() {
  wv_psql db "SELECT flush_lsn FROM pg_stat_replication
              WHERE application_name = '$WV_NODE' AND state = 'streaming'"
}

# wait_flush LSN: until the agent has reported archiving WAL up to LSN.
wait_flush() {
  local want=$1 got deadline=$((SECONDS + 120))
  while :; do
    got=$(flush_lsn)
    [[ -n $got ]] && lsn_ge "$got" "$want" && return 0
    wv__gone "$AGENT_PID" && wv_fail "the agent exited while waiting for it to archive $want"
    wv__gone "$writer_pid" && wv_fail "the writer exited early (see writer.log)"
    wv__gone "$pgbench_pid" && wv_fail "pgbench exited early (see pgbench.log)"
    ((SECONDS < deadline)) || wv_fail "the agent did not report archiving $want within 120 s (flush LSN: ${got:-none})"
    sleep 0.2
  done
}

# wait_rows N: until table t holds at least N rows (the load goes on).
wait_rows() {
  local want=$1 deadline=$((SECONDS + 60))
  until (($(wv_psql db "SELECT count(*) FROM t") >= want)); do
    wv__gone "$writer_pid" && wv_fail "the writer exited early (see writer.log)"
    ((SECONDS < deadline)) || wv_fail "fewer than $want rows committed within 60 s"
    sleep 0.2
  done
}

wv_pg_init db
wv_pg_conf db "archive_command = '/bin/true'" # the agent's stream archives the WAL
wv_pg_start db
wv_psql db "CREATE TABLE t (id int PRIMARY KEY)"
mapfile -t pgargs < <(pg_args)
wv_step "pgbench -i -s 2"
"$WV_PGBIN/pgbench" -i -q -s 2 "${pgargs[@]}" postgres >"$WV_TMP/pgbench-init.out" 2>&1 ||
  { cat "$WV_TMP/pgbench-init.out" >&2; wv_fail "pgbench -i failed"; }

# No schedule: the agent only streams, and the one full backup is ours. It is taken while
# the agent streams, since archive_command archives nothing.
wv_step "agent: asynchronous stream"
mapfile -t common < <(wv__repo_args)
wv_bg agent "$WALVAULT_BIN" "${common[@]}" --pg "$(wv_pg_conninfo db)" --listen "127.0.0.1:$(wv_free_port)" \
  --full-every off --incremental-every off --sync-interval 1s --lease-seconds 5 agent
AGENT_PID=$WV_LAST_PID
wv_pg_standby_wait db "$WV_NODE" async "$AGENT_PID"

wv_step "full backup while the agent streams"
backup=$(wv_run backup --full --pg "$(wv_pg_conninfo db)" --pgdata "${WV_PGDATA[db]}") ||
  wv_fail "the full backup failed"
[[ -n $backup ]] || wv_fail "the backup printed no id"

wv_step "load: pgbench -c 2 and a one-row-per-commit writer"
wv_bg pgbench "$WV_PGBIN/pgbench" -n -c 2 -T 600 "${pgargs[@]}" postgres
pgbench_pid=$WV_LAST_PID
wv_bg writer writer
writer_pid=$WV_LAST_PID

# The agent stores under load, not only at its stop: it reports having archived 20 MiB of
# WAL written under load (a whole segment and more, in the fragments of its 1 s interval).
wait_flush "$(wv_psql db "SELECT pg_current_wal_insert_lsn() + 20 * 1024 * 1024")"
wait_rows 1000
wv__gone "$pgbench_pid" && wv_fail "pgbench exited early (see pgbench.log)"
before=$(flush_lsn)
[[ -n $before ]] || wv_fail "the agent stopped streaming under load"

wv_step "SIGTERM the agent under load (reported flush LSN $before)"
kill -TERM "$AGENT_PID"
status=0
wait "$AGENT_PID" || status=$?
wv_assert_eq 0 "$status" "exit status of the agent after SIGTERM"
line=$(grep 'wal-stream stopped; WAL archived up to ' "$WV_TMP/agent.log" | tail -n 1) ||
  wv_fail "the agent did not log where its stream stopped"
X=$(sed -n 's/.*WAL archived up to \([0-9A-Fa-f]*\/[0-9A-Fa-f]*\).*/\1/p' <<<"$line")
[[ -n $X ]] || wv_fail "no LSN in the agent's last stream line: $line"
wv_step "the agent archived up to $X"
lsn_ge "$X" "$before" || wv_fail "the agent archived up to $X, before the flush LSN $before it reported earlier"

# Once its walsender is gone, the slot shows the last flush LSN PostgreSQL took from the
# agent: at least what it reported before, never past what it archived.
deadline=$((SECONDS + 30))
until [[ $(wv_psql db "SELECT count(*) FROM pg_stat_replication WHERE application_name = '$WV_NODE'") == 0 ]]; do
  ((SECONDS < deadline)) || wv_fail "the agent's walsender is still there 30 s after the agent exited"
  sleep 0.2
done
restart=$(wv_psql db "SELECT restart_lsn FROM pg_replication_slots WHERE slot_name = '$SLOT'")
[[ -n $restart ]] || wv_fail "no slot $SLOT"
wv_step "slot $SLOT: restart_lsn $restart"
lsn_ge "$X" "$restart" || wv_fail "the slot's restart_lsn $restart is past what the agent archived ($X)"
lsn_ge "$restart" "$before" || wv_fail "the slot's restart_lsn $restart is before the flush LSN $before reported earlier"

# The load goes on past X: what was not archived is lost in the crash, and may be.
wait_rows "$(($(wv_psql db "SELECT count(*) FROM t") + 200))"
wv__gone "$pgbench_pid" && wv_fail "pgbench exited early (see pgbench.log)"
wv_step "stop the load, crash PostgreSQL"
touch "$STOP_WRITER"
status=0
wait "$writer_pid" || status=$?
wv_assert_eq 0 "$status" "exit status of the writer (see writer.log)"
kill -TERM "$pgbench_pid"
wait "$pgbench_pid" 2>/dev/null || true
wv_pg_stop db immediate

read -r written qualifying < <("$PY" - "$ROWS" "$X" <<'PY'
import sys
def lsn(s):
    hi, lo = s.split("/")
    return (int(hi, 16) << 32) | int(lo, 16)
x = lsn(sys.argv[2])
rows = [l.strip().split("|") for l in open(sys.argv[1]) if l.strip()]
print(len(rows), sum(lsn(r[1]) <= x for r in rows))
PY
)
wv_step "$written rows committed, $qualifying of them at or before $X"
((qualifying > 50)) || wv_fail "only $qualifying rows committed before $X: the check would prove nothing"
((written > qualifying)) || wv_fail "no row committed after $X: the load did not go on past the agent's stop"

wv_step "verify"
wv_run verify >"$WV_TMP/verify.out" 2>&1 || { cat "$WV_TMP/verify.out" >&2; wv_fail "verify found problems"; }

wv_step "restore to latest"
wv_run restore --to "$WV_TMP/r" >/dev/null || wv_fail "restore failed"
wv_pg_start_restored "$WV_TMP/r" r
wv_psql r "SELECT id FROM t" >"$WV_TMP/restored"
missing=$("$PY" - "$ROWS" "$X" "$WV_TMP/restored" <<'PY'
import sys
def lsn(s):
    hi, lo = s.split("/")
    return (int(hi, 16) << 32) | int(lo, 16)
x = lsn(sys.argv[2])
have = {int(l) for l in open(sys.argv[3]) if l.strip()}
want = [int(r[0]) for r in (l.strip().split("|") for l in open(sys.argv[1]) if l.strip()) if lsn(r[1]) <= x]
gone = [i for i in want if i not in have]
print(f"{len(gone)} (first: {gone[:5]})" if gone else "")
PY
)
[[ -z $missing ]] || wv_fail "rows committed before $X missing after restore: $missing"
wv_step "restored: $(wc -l <"$WV_TMP/restored") rows, every one of the $qualifying committed before $X"

history=$(wv_psql r "SELECT count(*) FROM pgbench_history")
((history > 0)) || wv_fail "no pgbench transaction restored"
wv_assert_eq "t|t|t" "$(wv_psql r "
  WITH h AS (SELECT coalesce(sum(delta), 0) AS d FROM pgbench_history)
  SELECT (SELECT sum(abalance) FROM pgbench_accounts) = h.d,
         (SELECT sum(tbalance) FROM pgbench_tellers) = h.d,
         (SELECT sum(bbalance) FROM pgbench_branches) = h.d FROM h")" \
  "restored pgbench balances (accounts, tellers, branches) against the sum of $history history deltas"
