#!/usr/bin/env bash
# A store outage while the agent streams WAL: the repository refuses every WAL store for a
# while (file://: the node's WAL directory made read-only; s3://: the proxy answers 503 to
# every PUT and POST under the node's wal/ keys), then comes back.
#   synchronous (synchronous_standby_names names the agent): commits go through; during the
#   outage a commit waits in SyncRep and does not return while the agent's
#   walvault_store_errors_total{kind="wal"} grows; once the store is back the commit returns
#   by itself and later commits go through;
#   asynchronous (synchronous_standby_names = '' by a reload, which the running agent
#   follows: walvault_synchronous turns 0 without a restart): during the
#   outage commits return at once, the agent receives their WAL but walvault_archived_lsn
#   stays at or below the flush LSN of the outage's start and walvault_archive_lag_bytes
#   covers at least every byte written since; once the store is back the agent catches up
#   by itself (archived LSN reaches the flush LSN after the writes, the lag returns to 0);
#   synchronous again by a reload (walvault_synchronous turns 1, commits go through);
#   the agent never exits during either outage and exits 0 on SIGTERM;
#   nothing lost: PostgreSQL stopped immediately, verify passes and a restore to latest holds
#   exactly the acknowledged rows of both phases.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
wv_drop_root "$@"
export WV_NODE=outagedb # the agent's application_name defaults to the node name
wv_tmpdir
wv_repo_setup
wv_repo_init

PY=/usr/bin/python3 # Debian's, with python3-prometheus-client
"$PY" -c 'import prometheus_client' 2>/dev/null ||
  wv_fail "python3-prometheus-client is missing: run scripts/install-deps.sh"

CONF=$WV_TMP/agent.conf
PORT=$(wv_free_port)
AGENT_PID=""
ACKED=$WV_TMP/acked # one id per line: every row whose commit returned
: >"$ACKED"

# ---- the outage

OUTAGE_DIR=""  # file://: the WAL directory made read-only, and its mode before
OUTAGE_MODE=""

# outage_begin: from now on every WAL store of the node fails; lease and backup objects are
# untouched (the agent must keep its lease).
outage_begin() {
  case $WV_REPO in
    s3://*)
      local re="/nodes/$WV_NODE/wal/"
      wv_s3_fault "[{\"method\": \"PUT\", \"key\": \"$re\", \"status\": 503, \"count\": -1},
                    {\"method\": \"POST\", \"key\": \"$re\", \"status\": 503, \"count\": -1}]" >/dev/null
      ;;
    file://*)
      OUTAGE_DIR=$(wv_repo_dir "$WV_REPO")/nodes/$WV_NODE/wal/00000001
      [[ -d $OUTAGE_DIR ]] || wv_fail "no WAL directory $OUTAGE_DIR to make unwritable"
      OUTAGE_MODE=$(stat -c %a "$OUTAGE_DIR")
      chmod a-w "$OUTAGE_DIR"
      if touch "$OUTAGE_DIR/.outage-probe" 2>/dev/null; then
        rm -f "$OUTAGE_DIR/.outage-probe"
        wv_fail "$OUTAGE_DIR is still writable after chmod a-w (running as root?)"
      fi
      ;;
    *) wv_fail "outage_begin: unknown repository kind $WV_REPO" ;;
  esac
}

outage_end() {
  case $WV_REPO in
    s3://*) wv_s3_faults_clear ;;
    file://*)
      [[ -n $OUTAGE_DIR ]] || return 0
      chmod "$OUTAGE_MODE" "$OUTAGE_DIR"
      OUTAGE_DIR=""
      ;;
  esac
}

# A failure during a file:// outage must not leave a directory the cleanup cannot empty:
# the write permission comes back before lib.sh's EXIT trap runs, with the exit status kept.
on_exit() {
  local status=$?
  set +e
  [[ -z $OUTAGE_DIR ]] || chmod u+w "$OUTAGE_DIR"
  (exit "$status") # wv__on_exit takes the status from $?
  wv__on_exit
}
trap on_exit EXIT

# ---- the agent

write_conf() { # the agent's config file (with the S3 credentials when kept in a file)
  {
    [[ -z ${WV_S3_CONF:-} || ! -f $WV_S3_CONF ]] || grep -v '^#' "$WV_S3_CONF"
    echo "full-every = 1h" # the node has a full backup: none during the test
    echo "incremental-every = off"
  } >"$CONF.tmp"
  chmod 600 "$CONF.tmp"
  mv "$CONF.tmp" "$CONF"
}

agent_start() { # NAME: an agent in the background, serving on $PORT
  local -a common extra=()
  mapfile -t common < <(wv__repo_args)
  # S3 requests are retried for 60 s by default before a store counts as failed.
  [[ $WV_REPO != s3://* ]] || extra=(--s3-retry-seconds 2)
  wv_bg "$1" "$WALVAULT_BIN" "${common[@]}" "${extra[@]}" --config "$CONF" \
    --pg "$(wv_pg_conninfo db)" --sync-interval 200ms --listen "127.0.0.1:$PORT" agent
  AGENT_PID=$WV_LAST_PID
}

agent_alive() { # WHEN: the agent must still run
  ! wv__gone "$AGENT_PID" || wv_fail "the agent exited $1 (see its log)"
}

agent_stop() { # WHAT: SIGTERM to $AGENT_PID, which must exit 0
  local status=0
  kill -TERM "$AGENT_PID"
  wait "$AGENT_PID" || status=$?
  wv_assert_eq 0 "$status" "exit status of $1 after SIGTERM"
}

# metrics: print "ARCHIVED_LSN RECEIVED_LSN LAG_BYTES WAL_STORE_ERRORS SYNCHRONOUS" from
# the agent's /metrics, parsed as Prometheus text.
metrics() {
  curl -sf --max-time 5 "http://127.0.0.1:$PORT/metrics" >"$WV_TMP/metrics.txt" ||
    wv_fail "/metrics did not answer"
  "$PY" - "$WV_TMP/metrics.txt" "$WV_NODE" <<'PY' || wv_fail "/metrics: see above"
import sys
from prometheus_client.parser import text_string_to_metric_families
node, values = sys.argv[2], {}
for family in text_string_to_metric_families(open(sys.argv[1]).read()):
    for s in family.samples:
        if s.labels.get("node") == node:
            values[(s.name, s.labels.get("kind"))] = s.value
want = [("walvault_archived_lsn", None), ("walvault_received_lsn", None),
        ("walvault_archive_lag_bytes", None), ("walvault_store_errors_total", "wal"),
        ("walvault_synchronous", None)]
missing = [w for w in want if w not in values]
if missing:
    sys.exit(f"/metrics lacks {missing}")
print(" ".join(str(int(values[w])) for w in want))
PY
}

read_metrics() { # into ARCHIVED RECEIVED LAG ERRORS SYNC
  local m
  m=$(metrics)
  read -r ARCHIVED RECEIVED LAG ERRORS SYNC <<<"$m"
}

wait_metrics() { # SECONDS WHAT BASH-CONDITION: until the condition on the metrics holds
  local deadline=$((SECONDS + $1))
  while :; do
    read_metrics
    eval "(($3))" && return 0
    agent_alive "while waiting until $2"
    ((SECONDS < deadline)) ||
      wv_fail "not within $1 s: $2 (archived $ARCHIVED, received $RECEIVED, lag $LAG, wal store errors $ERRORS)"
    sleep 0.2
  done
}

# ---- PostgreSQL

flush_lsn() { wv_psql db "SELECT pg_current_wal_flush_lsn() - '0/0'::pg_lsn"; }

psql_cmd() { # the psql command line of one statement on db
  printf '%s\n' "$WV_PGBIN/psql" -XAtq -h "$WV_TMP" -p "${WV_PORT[db]}" -U postgres -d postgres \
    -v ON_ERROR_STOP=1 -c "$1"
}

commit() { # FIRST LAST: one commit per row; each must return, and is then acknowledged
  local id cmd
  for ((id = $1; id <= $2; id++)); do
    mapfile -t cmd < <(psql_cmd "INSERT INTO t VALUES ($id)")
    timeout 30 "${cmd[@]}" </dev/null >/dev/null || wv_fail "commit of row $id did not return within 30 s"
    echo "$id" >>"$ACKED"
  done
}

wait_sync_state() { # STATE: until PostgreSQL streams to the agent in sync_state STATE
  wv_pg_standby_wait db "$WV_NODE" "$1" "$AGENT_PID"
}

wv_pg_init db
wv_pg_conf db "archive_command = '/bin/true'"
wv_pg_start db
wv_psql db "CREATE TABLE t (id int PRIMARY KEY)"
# Named before anything streams: the agent then stores as soon as WAL arrives.
wv_pg_conf db "synchronous_standby_names = '$WV_NODE'"
wv_pg_reload db

wv_step "a full backup, its WAL streamed by wal-stream (the agent's slot)"
mapfile -t common < <(wv__repo_args)
wv_bg wal-stream "$WALVAULT_BIN" "${common[@]}" --pg "$(wv_pg_conninfo db)" wal-stream
AGENT_PID=$WV_LAST_PID # for wait_sync_state
wait_sync_state sync
wv_run backup --full --pg "$(wv_pg_conninfo db)" --pgdata "${WV_PGDATA[db]}" >/dev/null ||
  wv_fail "the full backup failed"
agent_stop wal-stream

write_conf
wv_step "synchronous: the agent is the synchronous standby, commits go through"
agent_start agent-sync
wait_sync_state sync
commit 1 10
read_metrics
wv_assert_eq 1 "$SYNC" "walvault_synchronous"

wv_step "synchronous: store outage, a commit waits while the store errors grow"
outage_begin
read_metrics
errors0=$ERRORS
mapfile -t cmd < <(psql_cmd "INSERT INTO t VALUES (11)")
wv_bg commit11 timeout 600 "${cmd[@]}"
COMMIT_PID=$WV_LAST_PID
WAITING="SELECT count(*) FROM pg_stat_activity
         WHERE wait_event = 'SyncRep' AND query = 'INSERT INTO t VALUES (11)'"
deadline=$((SECONDS + 30))
until [[ $(wv_psql db "$WAITING") == 1 ]]; do
  ! wv__gone "$COMMIT_PID" || wv_fail "the commit returned during the outage: $(cat "$WV_TMP/commit11.log")"
  ((SECONDS < deadline)) || wv_fail "the commit does not wait for the synchronous standby"
  sleep 0.2
done
wait_metrics 90 "three more failed WAL stores" "ERRORS >= errors0 + 3"
[[ $WV_REPO != s3://* ]] || (($(wv_s3_injected) >= 2)) || wv_fail "the proxy injected no fault"
! wv__gone "$COMMIT_PID" || wv_fail "the commit returned during the outage: $(cat "$WV_TMP/commit11.log")"
wv_assert_eq 1 "$(wv_psql db "$WAITING")" \
  "commits waiting for the synchronous standby during the outage"
agent_alive "during the synchronous outage"

wv_step "synchronous: the store is back, the waiting commit returns by itself"
outage_end
deadline=$((SECONDS + 90))
until wv__gone "$COMMIT_PID"; do
  agent_alive "after the synchronous outage"
  ((SECONDS < deadline)) || wv_fail "the waiting commit did not return within 90 s of the store's return"
  sleep 0.2
done
status=0
wait "$COMMIT_PID" || status=$?
wv_assert_eq 0 "$status" "exit status of the commit that waited (log: $(cat "$WV_TMP/commit11.log"))"
echo 11 >>"$ACKED"
commit 12 20
agent_alive "after the synchronous outage"

wv_step "asynchronous: synchronous_standby_names = '' by a reload; the running agent follows"
wv_pg_conf db "synchronous_standby_names = ''"
wv_pg_reload db
wait_sync_state async
wait_metrics 30 "the agent notices it is no longer a synchronous standby" "SYNC == 0"
grep -q "no longer names $WV_NODE" "$WV_TMP/agent-sync.log" ||
  wv_fail "the agent did not log that synchronous_standby_names no longer names it"
commit 21 30
# A fresh segment: WAL written during the outage must fit in the one being received (the
# agent stops reading at a full segment until it is stored).
wv_psql db "SELECT pg_switch_wal()" >/dev/null
flush=$(flush_lsn)
wait_metrics 60 "the agent has archived up to the flush LSN $flush" "ARCHIVED >= flush"
wv_assert_eq 0 "$SYNC" "walvault_synchronous"

wv_step "asynchronous: store outage, commits return, the lag grows"
outage_begin
start=$(flush_lsn) # a store that succeeds from now on was handed over before
read_metrics
errors0=$ERRORS
commit 31 60
mapfile -t cmd < <(psql_cmd "INSERT INTO t SELECT g FROM generate_series(1001, 3000) g")
timeout 30 "${cmd[@]}" </dev/null >/dev/null || wv_fail "a bulk commit did not return during the outage"
seq 1001 3000 >>"$ACKED"
end=$(flush_lsn)
written=$((end - start))
((written > 50000)) || wv_fail "only $written bytes of WAL written during the outage"
wait_metrics 30 "the agent has received up to $end" "RECEIVED >= end"
wait_metrics 60 "two more failed WAL stores" "ERRORS >= errors0 + 2"
((ARCHIVED <= start)) || wv_fail "archived LSN $ARCHIVED went past $start during the outage"
((LAG >= written)) || wv_fail "archive lag $LAG bytes during the outage, less than the $written bytes written"
wv_step "asynchronous: lag $LAG bytes ($written written during the outage), $((ERRORS - errors0)) failed stores"
agent_alive "during the asynchronous outage"

wv_step "asynchronous: the store is back, the agent catches up by itself"
outage_end
wait_metrics 90 "the agent has archived up to $end after the outage" "ARCHIVED >= end"
wait_metrics 30 "the archive lag is back to 0" "LAG == 0"
commit 61 70
flush=$(flush_lsn)
wait_metrics 60 "the agent has archived up to the flush LSN $flush" "ARCHIVED >= flush"

wv_step "synchronous again by a reload: the running agent follows"
wv_pg_conf db "synchronous_standby_names = '$WV_NODE'"
wv_pg_reload db
wait_sync_state sync
wait_metrics 30 "the agent notices it is a synchronous standby again" "SYNC == 1"
commit 71 80

wv_step "nothing lost: agent stopped, PostgreSQL crashed, verify, restore to latest"
agent_stop "the agent"
wv_pg_stop db immediate
wv_run verify >"$WV_TMP/verify.out" 2>&1 || {
  cat "$WV_TMP/verify.out" >&2
  wv_fail "verify found problems"
}
wv_run restore --to "$WV_TMP/restored" >/dev/null || wv_fail "restore to latest failed"
wv_pg_start_restored "$WV_TMP/restored" restored
wv_psql restored "SELECT id FROM t" | sort -n >"$WV_TMP/restored.ids"
sort -n "$ACKED" >"$WV_TMP/acked.ids"
missing=$(comm -23 <(sort "$WV_TMP/acked.ids") <(sort "$WV_TMP/restored.ids") | head -5 | tr '\n' ' ')
[[ -z $missing ]] || wv_fail "acknowledged rows missing after restore: $missing"
unknown=$(comm -13 <(sort "$WV_TMP/acked.ids") <(sort "$WV_TMP/restored.ids") | head -5 | tr '\n' ' ')
[[ -z $unknown ]] || wv_fail "rows never committed after restore: $unknown"
wv_step "$(wc -l <"$WV_TMP/acked.ids") acknowledged rows, all restored"
