#!/usr/bin/env bash
# Timeline switch under a running agent: a primary and a streaming standby (one node, one
# system identifier); a full backup of the primary (its WAL archived by wal-push), then the
# agent streams WAL from the standby (cascading replication, over a slot of its own on the
# standby); rows committed on the primary reach the standby and the archive.
# The primary crashes (stop -m immediate), the standby is promoted: the same agent process
# goes on onto timeline 2 (00000002.history archived, /metrics shows timeline 2 and the
# archived LSN reaching the promoted server's flush LSN).
# PITR after the promotion: a restore of the timeline-1 backup to a time between two batches
# committed on timeline 2 holds the rows from before the promotion and the first batch, not
# the second, and promotes onto a timeline after 2; a restore to latest holds both batches.
# SIGTERM: the agent exits 0; verify passes.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
wv_drop_root "$@"
export WV_NODE=promotedb
wv_tmpdir
wv_repo_setup
wv_repo_init

CONF=$WV_TMP/agent.conf
PORT=$(wv_free_port)
AGENT_PID=""

# The agent's config file: no scheduled backup during the test (the node has one, the next
# full is an hour after it), S3 credentials when the test keeps them in a file.
write_conf() {
  {
    [[ -z ${WV_S3_CONF:-} || ! -f $WV_S3_CONF ]] || grep -v '^#' "$WV_S3_CONF"
    echo "full-every = 1h"
    echo "incremental-every = off"
  } >"$CONF.tmp"
  chmod 600 "$CONF.tmp"
  mv "$CONF.tmp" "$CONF"
}

agent_start() { # SERVER: the agent against SERVER in the background, serving on $PORT
  local -a common
  mapfile -t common < <(wv__repo_args)
  wv_bg agent "$WALVAULT_BIN" "${common[@]}" --config "$CONF" --pg "$(wv_pg_conninfo "$1")" \
    --sync-interval 200ms --listen "127.0.0.1:$PORT" agent
  AGENT_PID=$WV_LAST_PID
}

# metric NAME: the value of the agent's metric NAME (empty when absent or no answer).
metric() {
  curl -s --max-time 5 "http://127.0.0.1:$PORT/metrics" 2>/dev/null |
    awk -v n="$1" '$1 == n || index($1, n "{") == 1 { print $2; exit }' || true
}

# wait_metric NAME OP VALUE WHAT: until the agent's metric NAME compares to VALUE (OP: ge
# or eq); the agent must stay up meanwhile.
wait_metric() {
  local name=$1 op=$2 want=$3 what=$4 got deadline=$((SECONDS + 60))
  while :; do
    got=$(metric "$name")
    if [[ $got =~ ^[0-9]+$ ]]; then
      case $op in
        ge) ((got >= want)) && return 0 ;;
        eq) ((got == want)) && return 0 ;;
        *) wv_fail "wait_metric: unknown comparison $op" ;;
      esac
    fi
    wv__gone "$AGENT_PID" && wv_fail "the agent exited while waiting for $what"
    ((SECONDS < deadline)) || wv_fail "$what: $name is '$got', wanted $op $want, after 60 s"
    sleep 0.2
  done
}

lsn_bytes() { # SERVER SQL: an LSN the query returns, in bytes
  wv_psql "$1" "SELECT ($2) - '0/0'::pg_lsn"
}

# wait_archived SERVER WHAT: until the agent reports SERVER's flushed WAL durable in the
# repository.
wait_archived() {
  local flush
  flush=$(lsn_bytes "$1" "pg_current_wal_flush_lsn()")
  wait_metric walvault_archived_lsn ge "$flush" "$2 (flush LSN $flush of $1)"
}

insert() { # SERVER FIRST LAST
  wv_psql "$1" "INSERT INTO t SELECT g FROM generate_series($2, $3) g"
}

count() { # SERVER [WHERE]
  wv_psql "$1" "SELECT count(*) FROM t ${2:+WHERE $2}"
}

timeline_of() { # SERVER: the timeline the server writes (or replays) on, as a number
  wv_psql "$1" "SELECT ('x' || substr(pg_walfile_name(CASE WHEN pg_is_in_recovery()
                  THEN pg_last_wal_replay_lsn() ELSE pg_current_wal_lsn() END), 1, 8))::bit(32)::int"
}

# standby_create NAME FROM: a streaming standby of FROM made by pg_basebackup -R, started
# and registered with lib.sh like the servers of wv_pg_init (stopped by the EXIT trap).
standby_create() {
  local name=$1 from=$2 dir=$WV_TMP/$1 port
  port=$(wv_free_port) || wv_fail "standby_create $name: no free port"
  wv_step "pg_basebackup -R: $name streams from $from (port $port)"
  "$WV_PGBIN/pg_basebackup" -h "$WV_TMP" -p "${WV_PORT[$from]}" -U postgres -D "$dir" -R \
    -X stream -c fast </dev/null >"$WV_TMP/$name.basebackup.out" 2>&1 ||
    wv_fail "pg_basebackup for $name failed: $(cat "$WV_TMP/$name.basebackup.out")"
  WV_PGDATA[$name]=$dir
  WV_PORT[$name]=$port
  # Its copy of postgresql.conf names the primary's port and archive_command; once
  # promoted it must not archive: the agent alone archives this node's WAL.
  wv_pg_conf "$name" "port = $port" "archive_command = '/bin/true'" "hot_standby = on"
  wv_pg_start "$name"
}

# wait_replayed STANDBY PRIMARY: until STANDBY has replayed what PRIMARY has flushed.
wait_replayed() {
  local flush deadline=$((SECONDS + 60))
  flush=$(lsn_bytes "$2" "pg_current_wal_flush_lsn()")
  until (($(lsn_bytes "$1" "pg_last_wal_replay_lsn()") >= flush)); do
    ((SECONDS < deadline)) || wv_fail "$1 did not replay $2's WAL up to $flush within 60 s"
    sleep 0.1
  done
}

# ---- one node: a primary and its standby
wv_pg_init primary
wv_pg_archive_to_repo primary # until the agent runs: for the full backup's WAL
wv_pg_start primary
# Made before the backup: pg_basebackup ends with a WAL switch, which would complete a
# segment nobody archives once the primary's archive_command is off.
standby_create standby primary
wv_psql primary "CREATE TABLE t (id int PRIMARY KEY)"
insert primary 1 100
wv_assert_eq "$(wv_psql primary "SELECT system_identifier FROM pg_control_system()")" \
  "$(wv_psql standby "SELECT system_identifier FROM pg_control_system()")" "system identifier of the standby"

wv_step "full backup of the primary"
backup=$(wv_run backup --full --pg "$(wv_pg_conninfo primary)")
[[ -n $backup ]] || wv_fail "backup printed no id"
# From here on the agent archives the node's WAL, streaming it from the standby.
wv_pg_conf primary "archive_command = '/bin/true'"
wv_pg_reload primary

wv_step "the agent streams from the standby"
write_conf
agent_start standby
wait_metric walvault_streaming eq 1 "the agent streaming from the standby"
wv_assert_eq 1 "$(metric walvault_timeline)" "timeline the agent streams before the promotion"
wv_assert_eq "walvault_$WV_NODE|t" \
  "$(wv_psql standby "SELECT slot_name, active FROM pg_replication_slots")" "the agent's slot on the standby"
# cascading replication: the standby's walsender serves the agent
wv_pg_standby_wait standby "$WV_NODE" any "$AGENT_PID"

wv_step "rows committed on the primary reach the standby and the archive"
insert primary 101 200
# Whole segments of timeline 1 come from the agent alone: the restores below need them.
wv_psql primary "SELECT pg_switch_wal()" >/dev/null
wait_replayed standby primary
wv_assert_eq 200 "$(count standby)" "rows on the standby"
wait_archived primary "timeline 1 archived through the standby"

# ---- the failure and the promotion
wv_step "the primary fails; promote the standby"
insert primary 201 300
wv_psql primary "SELECT pg_switch_wal()" >/dev/null
insert primary 301 400
wait_replayed standby primary
wv_pg_stop primary immediate
wv_assert_eq t "$(wv_psql standby "SELECT pg_promote(wait => true, wait_seconds => 60)")" "pg_promote()"
wv_assert_eq f "$(wv_psql standby "SELECT pg_is_in_recovery()")" "the standby in recovery after promotion"
wv_assert_eq 2 "$(timeline_of standby)" "timeline of the promoted standby"
wv_assert_eq 400 "$(count standby)" "rows on the promoted standby"

wv_step "the agent follows onto timeline 2"
insert standby 1001 1100
wv_psql standby "SELECT pg_switch_wal()" >/dev/null # a whole segment of timeline 2 too
wait_metric walvault_timeline eq 2 "the agent on timeline 2"
wait_archived standby "timeline 2 archived"
wv__gone "$AGENT_PID" && wv_fail "the agent exited at the promotion"
history=nodes/$WV_NODE/wal/00000002/00000002.history
[[ -n $(wv_repo_objects "$WV_REPO" "$history") ]] || wv_fail "$history was not archived"
wv_run list --json | python3 -c '
import json, sys
tls = {t["timeline"] for t in json.load(sys.stdin)["wal"]}
assert {1, 2} <= tls, f"timelines in list --json: {sorted(tls)}"' ||
  wv_fail "list --json does not show WAL on timelines 1 and 2"

# ---- PITR to a time after the promotion
wv_step "batch A, a target time, batch B on the promoted server"
insert standby 2001 2100
target=$(wv_psql standby "SELECT clock_timestamp()")
sleep 1.1 # batch B commits at least a second after the target, whatever the time's precision
insert standby 3001 3100
wait_archived standby "batch B archived"

wv_step "restore to $target"
wv_run restore --to "$WV_TMP/r_time" --target-time "$target" >/dev/null
wv_pg_start_restored "$WV_TMP/r_time" r_time "archive_mode = off"
wv_assert_eq 400 "$(count r_time "id <= 400")" "rows from timeline 1 after restore to $target"
wv_assert_eq 100 "$(count r_time "id BETWEEN 1001 AND 1100")" "rows from the promotion after restore to $target"
wv_assert_eq 100 "$(count r_time "id BETWEEN 2001 AND 2100")" "batch A after restore to $target"
wv_assert_eq 0 "$(count r_time "id BETWEEN 3001 AND 3100")" "batch B after restore to $target"
tli=$(timeline_of r_time)
((tli > 2)) || wv_fail "the server restored to $target is on timeline $tli, not after timeline 2"
grep -q "recovery stopping before commit" "$WV_TMP/r_time.log" ||
  wv_fail "the restored server did not stop at the target time (see r_time.log)"
wv_pg_stop r_time

wv_step "restore to latest"
wv_run restore --to "$WV_TMP/r_latest" >/dev/null
wv_pg_start_restored "$WV_TMP/r_latest" r_latest "archive_mode = off"
wv_assert_eq 700 "$(count r_latest)" "rows after restore to latest"
wv_assert_eq 100 "$(count r_latest "id BETWEEN 3001 AND 3100")" "batch B after restore to latest"
tli=$(timeline_of r_latest)
((tli > 2)) || wv_fail "the server restored to latest is on timeline $tli, not after timeline 2"
wv_pg_stop r_latest

wv_step "SIGTERM: the agent exits 0"
wv__gone "$AGENT_PID" && wv_fail "the agent exited before SIGTERM"
kill -TERM "$AGENT_PID"
status=0
wait "$AGENT_PID" || status=$?
wv_assert_eq 0 "$status" "exit status of the agent after SIGTERM"
grep -q "timeline 1 ended" "$WV_TMP/agent.log" || wv_fail "the agent's log does not show the end of timeline 1"

wv_step "verify"
wv_run verify >"$WV_TMP/verify.out" 2>&1 || {
  cat "$WV_TMP/verify.out" >&2
  wv_fail "verify found problems"
}
wv_run list
