#!/usr/bin/env bash
# walvault agent against a real PostgreSQL, as its synchronous standby:
#   /healthz answers, /readyz turns ready once streaming, synchronous commits go through;
#   the schedule takes a full backup at once (the node has none) and an incremental 5 s later;
#   /metrics parses as Prometheus text (prometheus_client's parser) with every metric, the
#   node label and a non-zero archived LSN;
#   a second agent for the node refuses, naming the holder of the lease;
#   retention runs after each backup (--retain-full in the config file);
#   SIGHUP applies a changed config file (JSON log lines, the incremental schedule off);
#   after kill -9 the lease holds until it expires, then a new agent takes over and commits
#   go through again; RPO 0: PostgreSQL crashed (stop -m immediate) right after the last
#   commit returned, a restore to latest holds every acknowledged row (SIGKILLed agent and
#   all); the agent reconnects once PostgreSQL is back; SIGTERM exits 0 and gives the lease up;
#   --archive-mode command (started at once: the lease was given up): no stream; /readyz fails
#   once a scheduled backup failed.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
wv_drop_root "$@"
export WV_NODE=agentdb # the agent's application_name defaults to the node name
wv_tmpdir
wv_repo_setup
wv_repo_init

PY=/usr/bin/python3 # Debian's, with python3-prometheus-client
"$PY" -c 'import prometheus_client' 2>/dev/null ||
  wv_fail "python3-prometheus-client is missing: run scripts/install-deps.sh"

CONF=$WV_TMP/agent.conf
PORT=$(wv_free_port)
AGENT_PID=""

# write_conf LOG_FORMAT INCREMENTAL_EVERY: the agent's config file (with the S3 credentials
# when the test's S3 settings keep them in a file).
write_conf() {
  {
    [[ -z ${WV_S3_CONF:-} || ! -f $WV_S3_CONF ]] || grep -v '^#' "$WV_S3_CONF"
    echo "log-format = $1"
    echo "full-every = 1h"
    echo "incremental-every = $2"
    echo "retain-full = 1"
  } >"$CONF.tmp"
  chmod 600 "$CONF.tmp"
  mv "$CONF.tmp" "$CONF"
}

agent_args() { # the command line of an agent, with the options given
  local -a common
  mapfile -t common < <(wv__repo_args)
  printf '%s\n' "$WALVAULT_BIN" "${common[@]}" --config "$CONF" --pg "$(wv_pg_conninfo db)" \
    --lease-seconds 3 --sync-interval 200ms "$@" agent
}

agent_start() { # NAME [options]: an agent in the background, serving on $PORT
  local name=$1 cmd
  shift
  mapfile -t cmd < <(agent_args --listen "127.0.0.1:$PORT" "$@")
  wv_bg "$name" "${cmd[@]}"
  AGENT_PID=$WV_LAST_PID
}

http() { # PATH: print the HTTP status (000: no answer); the body goes to $WV_TMP/http.out
  curl -s -o "$WV_TMP/http.out" -w '%{http_code}' --max-time 5 "http://127.0.0.1:$PORT$1" || true
}

wait_http() { # PATH STATUS SECONDS
  local deadline=$((SECONDS + $3)) got
  while got=$(http "$1") && [[ $got != "$2" ]]; do
    wv__gone "$AGENT_PID" && wv_fail "the agent exited while waiting for $1 to answer $2"
    ((SECONDS < deadline)) ||
      wv_fail "$1 answered $got, not $2, within $3 s: $(cat "$WV_TMP/http.out" 2>/dev/null)"
    sleep 0.2
  done
}

wait_sync() { # until PostgreSQL streams to the agent as its synchronous standby
  wv_pg_standby_wait db "$WV_NODE" sync "$AGENT_PID"
}

commit() { # FIRST LAST: one commit per row; each must return (the archive has its WAL)
  local id
  for ((id = $1; id <= $2; id++)); do
    timeout 30 "$WV_PGBIN/psql" -XAtq -h "$WV_TMP" -p "${WV_PORT[db]}" -U postgres -d postgres \
      -c "INSERT INTO t VALUES ($id)" </dev/null >/dev/null ||
      wv_fail "commit of row $id did not return within 30 s"
  done
}

backups_of() { # TYPE: how many backups of that type list shows
  wv_run list --json | "$PY" -c 'import json, sys
print(sum(b["type"] == sys.argv[1] for b in json.load(sys.stdin)["backups"]))' "$1"
}

wv_pg_init db
wv_pg_conf db "archive_command = '/bin/true'"
wv_pg_start db
wv_psql db "CREATE TABLE t (id int PRIMARY KEY)"

# Named before the agent connects: it then stores as soon as WAL arrives, not at intervals.
wv_pg_conf db "synchronous_standby_names = '$WV_NODE'"
wv_pg_reload db

write_conf text 5s
wv_step "agent: /healthz, synchronous standby, /readyz, commits"
agent_start agent1
wait_http /healthz 200 20
wait_sync
wait_http /readyz 200 30
commit 1 20

wv_step "the schedule: a full backup at once, an incremental 5 s after it"
deadline=$((SECONDS + 90))
until (($(backups_of full) >= 1 && $(backups_of incr) >= 1)); do
  wv__gone "$AGENT_PID" && wv_fail "the agent exited"
  ((SECONDS < deadline)) || wv_fail "no full and incremental backup from the schedule within 90 s"
  sleep 1
done
commit 21 30

wv_step "/metrics parses as Prometheus text"
curl -sf "http://127.0.0.1:$PORT/metrics" >"$WV_TMP/metrics.txt" || wv_fail "/metrics failed"
"$PY" - "$WV_TMP/metrics.txt" "$WV_NODE" <<'PY' || wv_fail "/metrics: see above"
import sys
from prometheus_client.parser import text_string_to_metric_families
text, node = open(sys.argv[1]).read(), sys.argv[2]
families = list(text_string_to_metric_families(text))
samples = {}
for f in families:
    assert f.type in ("gauge", "counter"), f"{f.name}: no TYPE line ({f.type})"
    assert f.documentation, f"{f.name}: no HELP line"
    for s in f.samples:
        assert s.labels.get("node") == node, f"{s.name}: node label {s.labels}"
        samples.setdefault(s.name, []).append(s)
want = """walvault_archived_lsn walvault_received_lsn walvault_archive_lag_bytes
  walvault_archive_lag_seconds walvault_last_fragment_timestamp_seconds
  walvault_last_segment_timestamp_seconds walvault_store_errors_total walvault_store_retries_total
  walvault_reconnects_total walvault_last_backup_timestamp_seconds
  walvault_last_backup_duration_seconds walvault_last_backup_bytes walvault_last_backup_success
  walvault_streaming walvault_synchronous walvault_backups_total""".split()
missing = [m for m in want if m not in samples]
assert not missing, f"missing metrics: {missing}"
value = lambda name: samples[name][0].value
assert value("walvault_archived_lsn") > 0, "archived LSN is 0"
assert value("walvault_received_lsn") >= value("walvault_archived_lsn"), (value("walvault_received_lsn"), value("walvault_archived_lsn"))
assert value("walvault_last_backup_success") == 1, "the last backup failed"
assert value("walvault_last_backup_bytes") > 0
assert value("walvault_synchronous") == 1 and value("walvault_streaming") == 1
kinds = {s.labels["kind"] for s in samples["walvault_store_errors_total"]}
assert kinds == {"wal", "lease"}, kinds
print(f"{len(families)} metric families, archived LSN {int(value('walvault_archived_lsn'))}")
PY

wv_step "a second agent for the node refuses"
mapfile -t second < <(agent_args --listen "127.0.0.1:$(wv_free_port)")
wv_assert_fails timeout 30 "${second[@]}"
wv_assert_eq 1 "$WV_LAST_STATUS" "exit status of the second agent"
wv_assert_contains "$WV_LAST_STDERR" "already has an agent" "the second agent's error"
wv_assert_contains "$WV_LAST_STDERR" ":$AGENT_PID:" "the second agent's error names the holder"

wv_step "SIGHUP: JSON log lines, incremental backups off"
write_conf json off
kill -HUP "$AGENT_PID"
deadline=$((SECONDS + 20))
until grep -q '^{.*"msg":"configuration reloaded' "$WV_TMP/agent1.log"; do
  ((SECONDS < deadline)) || wv_fail "no JSON line saying the configuration was reloaded"
  sleep 0.2
done
grep '^{' "$WV_TMP/agent1.log" | "$PY" -c 'import json, sys
for line in sys.stdin:
    json.loads(line)["msg"]' || wv_fail "a log line after the reload is not JSON"
curl -sf "http://127.0.0.1:$PORT/metrics" >"$WV_TMP/metrics.txt"
grep -q 'walvault_next_backup_timestamp_seconds{.*type="full"' "$WV_TMP/metrics.txt" ||
  wv_fail "the full schedule is gone after the reload"
if grep -q 'type="incremental"' "$WV_TMP/metrics.txt"; then
  wv_fail "the incremental schedule is still on after the reload"
fi

deadline=$((SECONDS + 30))
until grep -q 'retention: removed' "$WV_TMP/agent1.log"; do
  ((SECONDS < deadline)) || wv_fail "no retention run after a backup (--retain-full 1)"
  sleep 0.2
done

wv_step "kill -9: the lease holds until it expires, then a new agent takes over"
children=$(pgrep -P "$AGENT_PID" || true) # a backup it ran dies with it, as in a crash
# shellcheck disable=SC2086
kill -KILL "$AGENT_PID" $children
wait "$AGENT_PID" 2>/dev/null || true
wv_assert_fails timeout 30 "${second[@]}"
wv_assert_contains "$WV_LAST_STDERR" "already has an agent" "an agent started right after kill -9"
wait_s=$(sed -n 's/.*taken over in \([0-9]*\) s.*/\1/p' <<<"$WV_LAST_STDERR")
[[ $wait_s =~ ^[0-9]+$ ]] || wv_fail "the refusal does not say when the lease expires: $WV_LAST_STDERR"
sleep "$((wait_s + 1))"
agent_start agent2
wait_http /readyz 200 40
wait_sync
commit 31 40

wv_step "RPO 0: PostgreSQL crashes right after a commit returned; a restore to latest holds every row"
wv_pg_stop db immediate
wv_run restore --to "$WV_TMP/rpo0" >/dev/null || wv_fail "restore to latest failed"
wv_pg_start_restored "$WV_TMP/rpo0" rpo0 "archive_mode = off"
wv_assert_eq "$(seq 1 40 | paste -sd,)" "$(wv_psql rpo0 "SELECT string_agg(id::text, ',' ORDER BY id) FROM t")" \
  "rows restored after the crash (1-40 were acknowledged)"
wv_pg_stop rpo0 fast
wv_pg_start db
wait_sync

wv_step "SIGTERM: exit 0, the lease given up"
kill -TERM "$AGENT_PID"
status=0
wait "$AGENT_PID" || status=$?
wv_assert_eq 0 "$status" "exit status of the agent after SIGTERM"
grep -q 'agent stopped' "$WV_TMP/agent2.log" || wv_fail "the agent did not log its stop"
wv_assert_eq 40 "$(wv_psql db "SELECT count(*) FROM t")" "rows committed"

wv_step "--archive-mode command: no stream, /readyz fails after a failed backup"
wv_pg_conf db "synchronous_standby_names = ''"
wv_pg_reload db
# The full backup is due at once (--full-every 1s) and fails: nothing listens on port 1.
agent_start agent3 --archive-mode command --full-every 1s --pg "host=127.0.0.1 port=1 user=postgres"
wait_http /healthz 200 20
grep -q 'lease of node agentdb taken' "$WV_TMP/agent3.log" ||
  wv_fail "the next agent did not take the lease given up at once"
wait_http /readyz 503 30
wv_assert_contains "$(cat "$WV_TMP/http.out")" "the last backup failed" "/readyz after a failed backup"
wv_assert_eq 0 "$(wv_psql db "SELECT count(*) FROM pg_stat_replication")" "replication connections"
curl -sf "http://127.0.0.1:$PORT/metrics" >"$WV_TMP/metrics.txt"
"$PY" - "$WV_TMP/metrics.txt" <<'PY' || wv_fail "/metrics in archive-command mode: see above"
import sys
from prometheus_client.parser import text_string_to_metric_families
names = {s.name for f in text_string_to_metric_families(open(sys.argv[1]).read()) for s in f.samples}
assert "walvault_archived_lsn" not in names, "stream metrics without a stream"
assert "walvault_last_backup_success" in names
PY
grep -q 'walvault_last_backup_success{node="agentdb"} 0' "$WV_TMP/metrics.txt" ||
  wv_fail "walvault_last_backup_success is not 0 after a failed backup"
kill -TERM "$AGENT_PID"
status=0
wait "$AGENT_PID" || status=$?
wv_assert_eq 0 "$status" "exit status of the archive-command agent after SIGTERM"
