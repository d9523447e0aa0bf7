#!/usr/bin/env bash
# The fork test. A sequencer and two participants, each its own PostgreSQL cluster and node
# in one repository; a load in which every event is committed on the sequencer first and
# then recorded by each participant; the coordinator takes watermarks while it runs (and an
# ordered group backup at its start). Restoring all three nodes to a watermark taken during
# the load never leaves a participant with an event the sequencer lacks; at the watermark
# taken after the load nothing is missing anywhere. The control restores each node to its
# own newest archive with the sequencer held back and shows the check does see the fork.
#
# p1 archives with archive_command, p2 streams its WAL with wal-stream (asynchronous, 200 ms
# sync interval). A build without wal-stream runs p2 with archive_command as well.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
wv_drop_root "$@"
wv_tmpdir
wv_repo_setup
wv_repo_init

NODES=(seq p1 p2)
CONF=$WV_TMP/cluster.conf

P2_ARCHIVE="command"
"$WALVAULT_BIN" wal-stream --help >/dev/null 2>&1 && P2_ARCHIVE=stream

for n in "${NODES[@]}"; do
  wv_pg_init "$n" --wal-segsize=1
  if [[ $n == p2 && $P2_ARCHIVE == stream ]]; then
    wv_pg_conf p2 "archive_mode = off"
  else
    WV_NODE=$n wv_pg_archive_to_repo "$n"
  fi
  wv_pg_start "$n"
  wv_psql "$n" "CREATE TABLE events (id int PRIMARY KEY)"
  [[ $n == p2 && $P2_ARCHIVE == stream ]] || wv_pg_archive_wait "$n" # binds the node in the repository
done

if [[ $P2_ARCHIVE == stream ]]; then
  wv_step "wal-stream for p2"
  mapfile -t common < <(WV_NODE=p2 wv__repo_args)
  wv_bg stream-p2 "$WALVAULT_BIN" "${common[@]}" --pg "$(wv_pg_conninfo p2)" --sync-interval 200ms \
    wal-stream
  for _ in $(seq 150); do
    [[ -n $(wv_repo_objects "$WV_REPO" nodes/p2/node.json) ]] && break
    sleep 0.2
  done
  [[ -n $(wv_repo_objects "$WV_REPO" nodes/p2/node.json) ]] || wv_fail "wal-stream of p2 archived nothing in 30 s"
fi

{
  [[ -z ${WV_S3_CONF:-} ]] || cat "$WV_S3_CONF" # S3 credentials, when the repository is s3://
  echo "[node seq]"
  echo "role = sequencer"
  echo "pg = $(wv_pg_conninfo seq)"
  echo "[node p1]"
  echo "role = participant"
  echo "pg = $(wv_pg_conninfo p1)"
  echo "archive = command"
  echo "[node p2]"
  echo "role = participant"
  echo "pg = $(wv_pg_conninfo p2)"
  echo "archive = $P2_ARCHIVE"
} >"$CONF"
chmod 600 "$CONF"

wv() { wv_run --config "$CONF" "$@"; }

# The load: batch i of ten events goes to the sequencer, and only once committed there to
# p1, then to p2 (a participant records only what the sequencer ordered).
load() {
  local i=1 q
  while [[ ! -e $WV_TMP/stop-load ]]; do
    q="INSERT INTO events SELECT generate_series($((i * 10 + 1)), $((i * 10 + 10)))"
    wv_psql seq "$q" && wv_psql p1 "$q" && wv_psql p2 "$q"
    i=$((i + 1))
  done
  echo "$i" >"$WV_TMP/load-batches"
}

wv_step "first group backup and watermark (coordinator --once)"
wv coordinator --once >/dev/null 2>"$WV_TMP/once.log" || wv_fail "coordinator --once failed: $(cat "$WV_TMP/once.log")"
grep -q "group backup finished" "$WV_TMP/once.log" || wv_fail "no group backup in: $(cat "$WV_TMP/once.log")"

wv_step "load with the coordinator taking a watermark every second"
load &
load_pid=$!
mapfile -t common < <(wv__repo_args)
wv_bg coordinator "$WALVAULT_BIN" "${common[@]}" --config "$CONF" coordinator \
  --watermark-every 1s --backup-every 1h --listen "127.0.0.1:$(wv_free_port)"
coord_pid=$WV_LAST_PID
sleep 7
touch "$WV_TMP/stop-load"
wait "$load_pid" || wv_fail "the load failed"
wv_step "load done: $(cat "$WV_TMP/load-batches") batches"

kill -TERM "$coord_pid"
status=0
wait "$coord_pid" || status=$?
wv_assert_eq 0 "$status" "coordinator's exit status after SIGTERM"
grep -q "coordinator: stopped" "$WV_TMP/coordinator.log" || wv_fail "the coordinator did not stop cleanly"
grep -q "watermark failed" "$WV_TMP/coordinator.log" && wv_fail "a watermark failed under load"

wv_step "the last watermark, taken after the load"
last=$(wv watermark --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["number"])')

# Watermarks taken during the load whose every node has a backup before them.
mapfile -t during < <(for ((n = 2; n < last; n++)); do
  wv plan --watermark "$n" --json 2>/dev/null | python3 -c 'import json,sys
d=json.load(sys.stdin); print(d["watermark"]) if d["restorable"] else None' || true
done)
((${#during[@]} >= 4)) || wv_fail "only ${#during[@]} restorable watermarks during the load"
picks=("${during[1]}" "${during[$((${#during[@]} / 2))]}" "${during[-1]}" "$last")

restore_node() { # NODE NAME ARGS...: restore NODE into $WV_TMP/NAME, start it, list its events
  local node=$1 name=$2
  shift 2
  WV_NODE=$node wv_run restore --to "$WV_TMP/$name" "$@" >/dev/null
  wv_pg_start_restored "$WV_TMP/$name" "$name" "archive_mode = off"
  wv_psql "$name" "SELECT id FROM events ORDER BY id" >"$WV_TMP/$name.ids"
  wv_pg_stop "$name" immediate
  rm -rf "${WV_TMP:?}/$name"
}

# Prints how many events of participant file P are missing from sequencer file S.
ahead() { comm -13 <(sort "$1") <(sort "$2") | wc -l; }

for n in "${picks[@]}"; do
  wv_step "restore all three nodes to watermark $n"
  for node in "${NODES[@]}"; do
    restore_node "$node" "w$n-$node" --watermark "$n"
  done
  s=$WV_TMP/w$n-seq.ids
  for p in p1 p2; do
    extra=$(ahead "$s" "$WV_TMP/w$n-$p.ids")
    wv_assert_eq 0 "$extra" "events $p holds at watermark $n that the sequencer lacks"
  done
  wv_step "watermark $n: sequencer $(wc -l <"$s"), p1 $(wc -l <"$WV_TMP/w$n-p1.ids"), p2 $(wc -l <"$WV_TMP/w$n-p2.ids") events"
done

wv_step "at the last watermark nothing is missing"
all=$(wv_psql seq "SELECT count(*) FROM events")
for node in "${NODES[@]}"; do
  wv_assert_eq "$all" "$(wc -l <"$WV_TMP/w$last-$node.ids")" "events of $node at watermark $last"
done
mid=${during[1]}
if cmp -s "$WV_TMP/w$mid-seq.ids" "$WV_TMP/w$last-seq.ids"; then
  wv_fail "watermark $mid, taken during the load, holds as much as the last one"
fi

wv_step "control: each node to its newest archive, the sequencer held back to watermark $mid"
seq_lsn=$(wv plan --watermark "$mid" --json |
  python3 -c 'import json,sys; print([x["target_lsn"] for x in json.load(sys.stdin)["nodes"] if x["name"]=="seq"][0])')
restore_node seq ctl-seq --target-lsn "$seq_lsn"
restore_node p1 ctl-p1
extra=$(ahead "$WV_TMP/ctl-seq.ids" "$WV_TMP/ctl-p1.ids")
((extra > 0)) || wv_fail "the control shows no fork: the check cannot tell"
wv_step "control: p1 holds $extra events the held-back sequencer lacks (a fork, as it should)"

wv_step "verify checks every watermark for every node"
WV_NODE=p1 wv expire --retain-watermarks $((last - during[0] + 1)) --retain-full 1 >/dev/null
out=$(WV_NODE=p1 wv verify 2>&1) || wv_fail "verify failed: $out"
wv_assert_contains "$out" " 0 problems"
