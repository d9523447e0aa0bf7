#!/usr/bin/env bash
# Watermarks, one at a time and two coordinators at once: numbers never collide or go back,
# and neither do the points they hold. A node that is down, a node whose archive does not
# keep up, a node whose connection string reaches another cluster: a clear error naming it,
# and no watermark written. plan by number and by time, restore --watermark's argument
# checks, list, expire --retain-watermarks, and config mistakes (exit status 2). The
# coordinator on a schedule: /healthz, /readyz after a watermark, /metrics as Prometheus
# text with the watermark metrics, and exit 0 on SIGTERM.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
wv_drop_root "$@"
wv_tmpdir
wv_repo_setup
wv_repo_init

NODES=(seq med p1)
for n in "${NODES[@]}"; do
  wv_pg_init "$n" --wal-segsize=1
  WV_NODE=$n wv_pg_archive_to_repo "$n"
  wv_pg_start "$n"
  wv_psql "$n" "CREATE TABLE t (i int)"
  wv_pg_archive_wait "$n"
done

conf() { # FILE [NODE=PGNAME...]: a cluster config; NODE=PGNAME points NODE at server PGNAME
  local file=$1 n role target
  shift
  {
    [[ -z ${WV_S3_CONF:-} ]] || cat "$WV_S3_CONF"
    for n in "${NODES[@]}"; do
      case $n in seq) role=sequencer ;; med) role=mediator ;; *) role=participant ;; esac
      target=$n
      for over in "$@"; do [[ ${over%%=*} == "$n" ]] && target=${over#*=}; done
      printf '[node %s]\nrole = %s\npg = %s\n' "$n" "$role" "$(wv_pg_conninfo "$target")"
    done
  } >"$file"
  chmod 600 "$file"
}
CONF=$WV_TMP/cluster.conf
conf "$CONF"
wv() { wv_run --config "$CONF" "$@"; }
count_watermarks() { wv_repo_objects "$WV_REPO" cluster/watermarks/ | wc -l; }

wv_step "a watermark before any backup, then a group backup and a watermark"
wv watermark >/dev/null
wv coordinator --once >/dev/null 2>&1 || wv_fail "coordinator --once failed"
wv_assert_eq 2 "$(count_watermarks)" "watermarks after coordinator --once"
wv_assert_fails wv plan --watermark 1
wv_assert_contains "$WV_LAST_STDERR" "no backup on timeline 1 stopped at or before LSN"

wv_step "two coordinators at once, 8 watermarks each, while the nodes take writes"
writer() {
  while [[ ! -e $WV_TMP/stop-writer ]]; do
    for n in "${NODES[@]}"; do wv_psql "$n" "INSERT INTO t SELECT generate_series(1, 100)"; done
  done
}
writer &
writer_pid=$!
coordinator_loop() { # NAME: 8 watermarks one after the other
  local _
  for _ in 1 2 3 4 5 6 7 8; do wv watermark --json; done >"$WV_TMP/coord-$1.json" 2>"$WV_TMP/coord-$1.log"
}
coordinator_loop a &
pid_a=$!
coordinator_loop b &
pid_b=$!
status_a=0 status_b=0
wait "$pid_a" || status_a=$?
wait "$pid_b" || status_b=$?
touch "$WV_TMP/stop-writer"
wait "$writer_pid"
wv_assert_eq "0 0" "$status_a $status_b" "exit status of the two coordinators ($(cat "$WV_TMP"/coord-*.log))"
python3 - "$WV_TMP/coord-a.json" "$WV_TMP/coord-b.json" <<'PY' || wv_fail "watermarks of two coordinators collide or go back"
import json, sys
def docs(path):
    text, out, dec, i = open(path).read(), [], json.JSONDecoder(), 0
    while i < len(text):
        if text[i].isspace():
            i += 1
            continue
        d, i = dec.raw_decode(text, i)
        out.append(d)
    return out
def lsn(s):
    hi, lo = s.split("/")
    return (int(hi, 16) << 32) | int(lo, 16)
a, b = docs(sys.argv[1]), docs(sys.argv[2])
for name, ws in (("a", a), ("b", b)):
    nums = [w["number"] for w in ws]
    assert nums == sorted(nums) and len(set(nums)) == len(nums), f"{name} went back: {nums}"
nums = sorted(w["number"] for w in a + b)
assert nums == list(range(3, 19)), f"numbers {nums}"
prev = None
for w in sorted(a + b, key=lambda w: w["number"]):
    cur = {n["name"]: (n["timeline"], lsn(n["lsn"])) for n in w["nodes"]}
    if prev:
        for k in cur:
            assert cur[k] >= prev[k], f"watermark {w['number']} holds {k} before its predecessor"
    prev = cur
print(f"16 watermarks, numbers 3..18, each node's point never going back")
PY
wv_assert_eq 18 "$(count_watermarks)" "watermark objects"
wv_step "the coordinators lost a number to each other $(cat "$WV_TMP"/coord-*.log | grep -c "taking a new cut") times"

wv_step "plan by number and by time"
wv plan --watermark latest >"$WV_TMP/plan.txt" || wv_fail "plan failed: $(cat "$WV_TMP/plan.txt")"
wv_assert_contains "$(cat "$WV_TMP/plan.txt")" "watermark 18"
t_between=$(date -u +'%Y-%m-%d %H:%M:%S.%N')
sleep 0.2
wv watermark >/dev/null
n=$(wv plan --target-time "$t_between" --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["watermark"])')
wv_assert_eq 18 "$n" "the watermark taken before $t_between"
wv_assert_fails wv plan --target-time "2000-01-01 00:00:00"
wv_assert_contains "$WV_LAST_STDERR" "no watermark was taken at or before"

wv_step "restore --watermark argument checks"
wv_assert_fails wv_run --node p1 restore --to "$WV_TMP/x" --watermark 1 --target-lsn 0/1
wv_assert_eq 2 "$WV_LAST_STATUS" "exit status of --watermark with --target-lsn"
wv_assert_fails wv_run --node p1 restore --to "$WV_TMP/x" --watermark 999
wv_assert_contains "$WV_LAST_STDERR" "no watermark 999"
wv_assert_fails wv_run --node nosuchnode restore --to "$WV_TMP/x" --watermark latest

wv_step "a node that is down: clear error, nothing written"
before=$(count_watermarks)
wv_pg_stop p1
wv_assert_fails wv watermark
wv_assert_contains "$WV_LAST_STDERR" "node p1 (participant)"
wv_assert_contains "$WV_LAST_STDERR" "cannot connect"
wv_assert_eq 1 "$WV_LAST_STATUS" "exit status with a node down"
wv_assert_eq "$before" "$(count_watermarks)" "watermarks after the failure"
wv_pg_start p1

wv_step "a node whose archive does not keep up: bounded wait, clear error, nothing written"
wv_pg_conf med "archive_command = 'false'"
wv_pg_reload med
wv_psql med "INSERT INTO t VALUES (1)"
wv_assert_fails wv watermark --watermark-timeout 3
wv_assert_contains "$WV_LAST_STDERR" "node med (mediator): its archive did not reach LSN"
wv_assert_eq "$before" "$(count_watermarks)" "watermarks after the timeout"
WV_NODE=med wv_pg_archive_to_repo med
wv_pg_reload med

wv_step "a connection string that reaches another cluster"
conf "$WV_TMP/wrong.conf" p1=med
wv_assert_fails wv_run --config "$WV_TMP/wrong.conf" watermark
wv_assert_contains "$WV_LAST_STDERR" "node p1: the server at its connection string is PostgreSQL system"
wv_assert_eq "$before" "$(count_watermarks)" "watermarks after the mismatch"

wv_step "config mistakes are usage errors"
printf '[node a]\nrole = participant\npg = %s\n' "$(wv_pg_conninfo p1)" >"$WV_TMP/noseq.conf"
wv_assert_fails wv_run --config "$WV_TMP/noseq.conf" watermark
wv_assert_eq 2 "$WV_LAST_STATUS" "exit status without a sequencer"
wv_assert_contains "$WV_LAST_STDERR" "exactly one sequencer"

wv_step "list, verify, expire --retain-watermarks"
wv watermark >/dev/null
last=$(count_watermarks)
WV_NODE=p1 wv list | grep -q "watermarks: $last" || wv_fail "list does not show the watermarks"
out=$(WV_NODE=seq wv verify 2>&1) || wv_fail "verify failed: $out"
wv_assert_contains "$out" "$last watermarks: 0 problems"
# Taken before the first backup: restorable never, older than all that are: a warning.
wv_assert_contains "$out" "warning: watermark 1: node seq cannot be restored to it"
out=$(WV_NODE=seq wv expire --retain-watermarks 3 --dry-run)
wv_assert_contains "$out" "would remove cluster/watermarks/0000000001"
wv_assert_eq "$last" "$(count_watermarks)" "watermarks after a dry run"
WV_NODE=seq wv expire --retain-watermarks 3 >/dev/null
wv_assert_eq 3 "$(count_watermarks)" "watermarks after expire --retain-watermarks 3"
n=$(wv watermark --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["number"])')
wv_assert_eq $((last + 1)) "$n" "the number after expire (never goes back)"

wv_step "coordinator on a schedule: /healthz, /readyz, /metrics, then SIGTERM"
PY=/usr/bin/python3 # Debian's, with python3-prometheus-client
"$PY" -c 'import prometheus_client' 2>/dev/null ||
  wv_fail "python3-prometheus-client is missing: run scripts/install-deps.sh"
PORT=$(wv_free_port)
first=$((n + 1))
mapfile -t common < <(wv__repo_args)
wv_bg coordinator "$WALVAULT_BIN" "${common[@]}" --config "$CONF" coordinator \
  --listen "127.0.0.1:$PORT" --watermark-every 2s --backup-every 0
COORD_PID=$WV_LAST_PID
http() { # PATH: print the HTTP status (000: no answer); the body goes to $WV_TMP/http.out
  curl -s -o "$WV_TMP/http.out" -w '%{http_code}' --max-time 5 "http://127.0.0.1:$PORT$1" || true
}
wait_http() { # PATH STATUS SECONDS
  local deadline=$((SECONDS + $3)) got
  while got=$(http "$1") && [[ $got != "$2" ]]; do
    wv__gone "$COORD_PID" && wv_fail "the coordinator exited while waiting for $1 to answer $2"
    ((SECONDS < deadline)) ||
      wv_fail "$1 answered $got, not $2, within $3 s: $(cat "$WV_TMP/http.out" 2>/dev/null)"
    sleep 0.2
  done
}
wait_http /healthz 200 15
wv_assert_eq ok "$(cat "$WV_TMP/http.out")" "/healthz body"
wait_http /readyz 200 30
wv_assert_contains "$(cat "$WV_TMP/http.out")" "ready: watermark"
wv_assert_eq 404 "$(http /nosuch)" "status of an unknown path"
sleep 2.5 # one more round, so the counters move
curl -sf "http://127.0.0.1:$PORT/metrics" >"$WV_TMP/metrics.txt" || wv_fail "/metrics failed"
"$PY" - "$WV_TMP/metrics.txt" "$first" <<'PY' || wv_fail "/metrics: see above"
import sys, time
from prometheus_client.parser import text_string_to_metric_families
text, first = open(sys.argv[1]).read(), int(sys.argv[2])
samples = {}
for f in text_string_to_metric_families(text):
    assert f.type in ("gauge", "counter"), f"{f.name}: no TYPE line ({f.type})"
    assert f.documentation, f"{f.name}: no HELP line"
    for s in f.samples:
        samples.setdefault(s.name, []).append(s)
want = """walvault_coordinator_last_watermark walvault_coordinator_last_watermark_timestamp_seconds
  walvault_coordinator_watermark_age_seconds walvault_coordinator_watermarks_total
  walvault_coordinator_group_backups_total walvault_coordinator_node_archive_lag_bytes
  walvault_coordinator_node_archive_wait_seconds walvault_coordinator_node_watermark_lsn""".split()
missing = [m for m in want if m not in samples]
assert not missing, f"missing metrics: {missing}"
value = lambda name: samples[name][0].value
by_result = lambda name: {s.labels["result"]: s.value for s in samples[name]}
assert value("walvault_coordinator_last_watermark") >= first + 1, value("walvault_coordinator_last_watermark")
assert abs(value("walvault_coordinator_last_watermark_timestamp_seconds") - time.time()) < 60
assert 0 <= value("walvault_coordinator_watermark_age_seconds") < 6, value("walvault_coordinator_watermark_age_seconds")
wm = by_result("walvault_coordinator_watermarks_total")
assert wm["success"] >= 2 and wm["failure"] == 0, wm
assert by_result("walvault_coordinator_group_backups_total") == {"success": 0, "failure": 0}
for name in ("walvault_coordinator_node_archive_lag_bytes", "walvault_coordinator_node_watermark_lsn"):
    nodes = {(s.labels["node"], s.labels["role"]): s.value for s in samples[name]}
    assert set(nodes) == {("seq", "sequencer"), ("med", "mediator"), ("p1", "participant")}, nodes
    assert all(v >= 0 for v in nodes.values()), nodes
assert all(s.value > 0 for s in samples["walvault_coordinator_node_watermark_lsn"])
print(f"{len(samples)} series; watermark {value('walvault_coordinator_last_watermark'):.0f}, "
      f"{wm['success']:.0f} taken by this coordinator")
PY
kill -TERM "$COORD_PID"
status=0
wait "$COORD_PID" || status=$?
wv_assert_eq 0 "$status" "exit status of the coordinator after SIGTERM"
wv_assert_contains "$(cat "$WV_TMP/coordinator.log")" "serving /healthz, /readyz and /metrics on http://127.0.0.1:$PORT"
