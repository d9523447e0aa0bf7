#!/usr/bin/env bash
# bench/bench.sh: the measuring half of bench/run.sh (start that one, not this). It builds a
# pgbench database, runs walvault and pgBackRest on it in turns, and leaves one JSON record
# per timed run in $WV_BENCH_OUT/runs/ plus $WV_BENCH_OUT/meta.json; bench/report.py turns
# them into bench/RESULTS.md.
#
# Environment (set by run.sh; the WV_/WALVAULT_ prefixes survive lib.sh's wv_drop_root):
#   WALVAULT_BIN      the walvault binary to measure (a private copy: the tree may be rebuilt)
#   WV_BENCH_OUT      writable directory for the results
#   WV_BENCH_SCALE    pgbench scale factor
#   WV_BENCH_LIB      tests/integration/lib.sh (default: found from this script's place)
#   WV_BENCH_RUNS     timed runs per tool for backups (default 3); restores use 2,
#                     raw limits 3, WAL pushes 5
#   WV_BENCH_INCR_RUNS  repetitions of full + load + incremental, per tool (default 4)
#   WV_BENCH_CHAIN_RESTORE_RUNS  restores each of the 10th incremental and of the full
#                     taken at the same point (default 4)
#   WV_BENCH_S3XFER   bench/s3xfer built against this walvault's libraries (by run.sh); the
#                     S3 part is skipped, with the reason in the report, when it is unset
#   WV_BENCH_S3_SKIP  a reason to skip the S3 part (set by run.sh when s3xfer did not build)
#   WV_BENCH_S3_RUNS  rounds of 1 GiB put and get per tool, and S3/file backups and
#                     restores each (default 3)
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=SCRIPTDIR/../tests/integration/lib.sh
source "${WV_BENCH_LIB:-$here/../tests/integration/lib.sh}"
wv_drop_root "$@"

: "${WV_BENCH_OUT:?set by bench/run.sh}" "${WV_BENCH_SCALE:?set by bench/run.sh}"
: "${WALVAULT_BIN:?set by bench/run.sh}"
backup_runs=${WV_BENCH_RUNS:-3}
restore_runs=2
raw_runs=3
push_runs=5
incr_runs=${WV_BENCH_INCR_RUNS:-4}
chain_len=10
chain_restore_runs=${WV_BENCH_CHAIN_RESTORE_RUNS:-4}
measure=$here/measure.py
pages=$here/pages.py
runs_dir=$WV_BENCH_OUT/runs
mkdir -p "$runs_dir"

# Always a file:// repository of our own under $WV_TMP, whatever the caller's test settings.
unset WV_REPO_URL WV_NODE
wv_tmpdir
wv_repo_setup
wv_repo_init

pgdata=""
pgbr_conf=$WV_TMP/pgbackrest.conf
pgbr_repo=$WV_TMP/pgbr-repo
# Encrypted like walvault's repository; the passphrase is a throwaway.
pgbr_pass=$(od -An -N24 -tx1 /dev/urandom | tr -d ' \n')
db_bytes=0
seq=0
last_rec=""

pgbr() {
  pgbackrest --config="$pgbr_conf" "$@"
}

wv() { # walvault against the benchmark repository; the node is the first argument
  local node=$1
  shift
  "$WALVAULT_BIN" --repo "$WV_REPO" --key-file "$WV_KEY" --node "$node" "$@"
}

# timed OP TOOL RUN CMD...: run CMD under measure.py; its record becomes $last_rec. Returns
# CMD's status, so a failure is recorded and the caller decides whether to go on. CMD's
# stdout goes to $last_rec.out, or to $timed_stdout when set (timed_stdout=/dev/null timed ...).
timed() {
  local op=$1 tool=$2 run=$3
  shift 3
  seq=$((seq + 1))
  last_rec=$(printf '%s/%03d-%s-%s-%s' "$runs_dir" "$seq" "$op" "$tool" "$run")
  # Dirty pages left by the previous run must not be flushed on this run's time.
  sync
  wv_step "$op: $tool, run $run"
  if python3 "$measure" run --out "$last_rec.json" --stdout "${timed_stdout:-$last_rec.out}" \
    --stderr "$last_rec.err" --op "$op" --tool "$tool" --run "$run" --timeout 3600 -- "$@"; then
    return 0
  else
    local status=$?
    wv_step "FAILED ($status): $op $tool run $run: $*"
    sed 's/^/    /' "$last_rec.err" | tail -n 5 >&2 || true
    return "$status"
  fi
}

record() { # KEY=VALUE...: add fields to the last run's record
  python3 "$measure" set "$last_rec.json" "$@"
}

bytes_of() { # PATH...: bytes under the paths that exist (0 when none does)
  local p total=0 n
  for p in "$@"; do
    [[ -e $p ]] || continue
    n=$(du -sb "$p" | cut -f1)
    total=$((total + n))
  done
  echo "$total"
}

# ---------------------------------------------------------------------------------------
# The database and both tools' repositories

# archive_command runs both tools, so both have every segment. The order is switched
# before each timed backup so that the tool being timed pushes first: each tool's backup
# waits for its own copy of the last segment, not for the other tool's push as well.
wv_push_cmd=""
pgbr_push_cmd=""
archive_first() { # walvault|pgbackrest
  local cmd
  if [[ $1 == walvault ]]; then
    cmd="$wv_push_cmd && $pgbr_push_cmd"
  else
    cmd="$pgbr_push_cmd && $wv_push_cmd"
  fi
  wv_psql src "ALTER SYSTEM SET archive_command = '$cmd'" >/dev/null
  wv_psql src "SELECT pg_reload_conf()" >/dev/null
  sleep 0.3 # the archiver rereads its settings between segments
}

# archive_wait SEGMENT: wait until SEGMENT is archived. pgbench -i at a large scale leaves
# dozens of segments behind, so lib.sh's 60-second wait is too short here.
archive_wait() {
  local seg=$1 state failing_since="" deadline=$((SECONDS + 3600))
  while :; do
    state=$(wv_psql src "SELECT coalesce(last_archived_wal, '') >= '$seg',
                                coalesce(last_failed_wal, '') = '$seg'
                         FROM pg_stat_archiver")
    case $state in
      t\|*) return 0 ;;
      f\|t)
        failing_since=${failing_since:-$SECONDS}
        ((SECONDS - failing_since < 120)) || wv_fail "archive_command keeps failing for $seg"
        ;;
      *) failing_since="" ;;
    esac
    ((SECONDS < deadline)) || wv_fail "$seg not archived within an hour"
    sleep 0.5
  done
}

switch_and_wait() {
  local seg
  seg=$(wv_psql src "SELECT pg_walfile_name(pg_switch_wal())")
  wv_step "wait until $seg is archived"
  archive_wait "$seg"
}

setup_database() {
  wv_pg_init src
  pgdata=${WV_PGDATA[src]}
  mkdir -p "$pgbr_repo" "$WV_TMP/pgbr-log" "$WV_TMP/pgbr-lock" "$WV_TMP/pgbr-spool"
  # Two stanzas on the same cluster and repository: "bench" gets every segment from
  # archive_command and the backups; "walpush" only the segments pushed by hand in the
  # wal-push runs, so each of those is new to it (see push_runs below).
  cat >"$pgbr_conf" <<CONF
[global]
repo1-path=$pgbr_repo
repo1-type=posix
repo1-cipher-type=aes-256-cbc
repo1-cipher-pass=$pgbr_pass
repo1-retention-full=99
compress-type=lz4
compress-level=1
process-max=2
start-fast=y
archive-check=y
log-path=$WV_TMP/pgbr-log
lock-path=$WV_TMP/pgbr-lock
spool-path=$WV_TMP/pgbr-spool

[bench]
pg1-path=$pgdata
pg1-socket-path=$WV_TMP
pg1-port=${WV_PORT[src]}
pg1-user=postgres

[walpush]
pg1-path=$pgdata
pg1-socket-path=$WV_TMP
pg1-port=${WV_PORT[src]}
pg1-user=postgres
CONF
  chmod 0600 "$pgbr_conf"
  wv_push_cmd=$(wv_walvault_cmd wal-push %p)
  pgbr_push_cmd="pgbackrest --config=$pgbr_conf --stanza=bench archive-push %p"
  wv_pg_conf src "archive_command = '$wv_push_cmd && $pgbr_push_cmd'"
  wv_pg_start src
  wv_step "pgBackRest stanza-create (bench, walpush)"
  pgbr --stanza=bench stanza-create >/dev/null || wv_fail "pgbackrest stanza-create bench failed"
  pgbr --stanza=walpush stanza-create >/dev/null || wv_fail "pgbackrest stanza-create walpush failed"

  wv_step "pgbench -i -s $WV_BENCH_SCALE"
  "$WV_PGBIN/pgbench" -i -s "$WV_BENCH_SCALE" -q -h "$WV_TMP" -p "${WV_PORT[src]}" \
    -U postgres postgres >"$WV_TMP/pgbench-init.log" 2>&1 ||
    wv_fail "pgbench -i failed: $(tail -n 5 "$WV_TMP/pgbench-init.log")"
  wv_psql src "CHECKPOINT"
  switch_and_wait
  # What a base backup reads: the data directory without WAL (pg_wal is ~1 GiB of
  # recycled segments here, and neither tool copies it).
  db_bytes=$(du -sb --exclude=pg_wal "$pgdata" | cut -f1)
  wv_step "database: $db_bytes bytes without pg_wal"
}

# ---------------------------------------------------------------------------------------
# Full backups, interleaved with the raw BASE_BACKUP stream so that drift hits all alike

wv_stored_backup_bytes() {
  bytes_of "$WV_TMP/repo/nodes/default/packs" "$WV_TMP/repo/nodes/default/backups"
}

backup_walvault() { # SOURCE RUN
  local source=$1 run=$2 before after
  local -a source_args=(--source "$source")
  [[ $source == local ]] && source_args+=(--pgdata "$pgdata")
  archive_first walvault
  before=$(wv_stored_backup_bytes)
  # Packs are shared between backups, so the bytes this backup stored are what the packs
  # and manifests grew by.
  timed "backup-$source" walvault "$run" \
    "$WALVAULT_BIN" --repo "$WV_REPO" --key-file "$WV_KEY" --node default \
    --pg "$(wv_pg_conninfo src)" --jobs 2 backup --full "${source_args[@]}" || return 0
  after=$(wv_stored_backup_bytes)
  record "bytes_processed=$db_bytes" "bytes_stored=$((after - before))" \
    "backup_id=$(tail -n 1 "$last_rec.out")" "db_bytes=$db_bytes" \
    "manifest_bytes=$(wv_manifest_bytes "$(tail -n 1 "$last_rec.out")")"
}

backup_pgbackrest() { # RUN
  local run=$1 label
  archive_first pgbackrest
  timed backup-local pgbackrest "$run" \
    pgbackrest --config="$pgbr_conf" --stanza=bench --type=full backup || return 0
  # Labels are timestamps, so the newest sorts last.
  label=$(find "$pgbr_repo/backup/bench" -mindepth 1 -maxdepth 1 -type d -name '*F' \
    -printf '%f\n' | sort | tail -n 1)
  record "bytes_processed=$db_bytes" \
    "bytes_stored=$(bytes_of "$pgbr_repo/backup/bench/$label")" "backup_id=$label"
}

backup_raw_stream() { # none|fetch RUN
  local wal=$1 run=$2 tool=pg_basebackup
  [[ $wal == fetch ]] && tool=pg_basebackup_fetch
  # With -X none (the plain stream) the server ends the backup only once its last segment
  # is archived, checking once a second: up to a second of waiting that is not streaming.
  # -X fetch (WAL appended to the tar from pg_wal, a segment or two more) does not wait, so
  # it is the stricter yardstick; both are recorded. walvault's order for the archive,
  # since these are the yardsticks for its stream backup.
  archive_first walvault
  timed_stdout=/dev/null timed backup-stream "$tool" "$run" \
    "$WV_PGBIN/pg_basebackup" -h "$WV_TMP" -p "${WV_PORT[src]}" -U postgres \
    -Ft -X "$wal" -c fast -D - || return 0
  record "bytes_processed=$db_bytes"
}

run_backups() {
  local r
  for ((r = 1; r <= backup_runs; r++)); do
    # Who goes first alternates between rounds.
    if ((r % 2)); then
      backup_walvault local "$r"
      backup_pgbackrest "$r"
      backup_walvault stream "$r"
      backup_raw_stream none "$r"
      backup_raw_stream fetch "$r"
    else
      backup_pgbackrest "$r"
      backup_walvault local "$r"
      backup_raw_stream fetch "$r"
      backup_raw_stream none "$r"
      backup_walvault stream "$r"
    fi
  done
}

# ---------------------------------------------------------------------------------------
# Raw limits of this disk: reading the data directory (page cache warm) and writing its size

run_raw_io() {
  local r mib
  # A pipe, because GNU tar does not read the files at all when its archive is /dev/null.
  # Exit status 1 is tar's "file changed as we read it", harmless on an idle cluster.
  # shellcheck disable=SC2016 # $1 and PIPESTATUS belong to the inner bash
  local read_cmd='tar cf - --exclude=./pg_wal -C "$1" . | cat >/dev/null; ((PIPESTATUS[0] <= 1))'
  bash -c "$read_cmd" _ "$pgdata" # warm the page cache; not timed
  for ((r = 1; r <= raw_runs; r++)); do
    timed read-datadir tar "$r" bash -c "$read_cmd" _ "$pgdata" &&
      record "bytes_processed=$db_bytes"
  done
  mib=$(((db_bytes + 1048575) / 1048576))
  for ((r = 1; r <= raw_runs; r++)); do
    timed write-datadir-size dd "$r" \
      dd if=/dev/zero of="$WV_TMP/dd.out" bs=1M count="$mib" conv=fsync status=none &&
      record "bytes_processed=$((mib * 1048576))"
    rm -f "$WV_TMP/dd.out"
  done
}

# ---------------------------------------------------------------------------------------
# Restores: only the restore command is timed, not PostgreSQL's recovery afterwards

restore_walvault() { # RUN
  local run=$1 dir=$WV_TMP/restore-walvault-$1
  timed restore walvault "$run" \
    "$WALVAULT_BIN" --repo "$WV_REPO" --key-file "$WV_KEY" --node default \
    --jobs 2 restore --to "$dir" &&
    record "bytes_processed=$db_bytes"
  rm -rf "$dir"
}

restore_pgbackrest() { # RUN
  local run=$1 dir=$WV_TMP/restore-pgbackrest-$1
  mkdir -m 0700 "$dir"
  # Default type: recover to the end of the archive, like walvault without a target.
  timed restore pgbackrest "$run" \
    pgbackrest --config="$pgbr_conf" --stanza=bench --pg1-path="$dir" restore &&
    record "bytes_processed=$db_bytes"
  rm -rf "$dir"
}

run_restores() {
  local r
  for ((r = 1; r <= restore_runs; r++)); do
    if ((r % 2)); then
      restore_walvault "$r"
      restore_pgbackrest "$r"
    else
      restore_pgbackrest "$r"
      restore_walvault "$r"
    fi
  done
}

# ---------------------------------------------------------------------------------------
# WAL push of one fresh 16 MiB segment
#
# Timing archive_command as PostgreSQL calls it would mix in the other tool's push and the
# archiver's own pace. Instead: write rows until several segments are full of real WAL,
# switch, copy those full segments out of pg_wal into a directory of their own (no
# archive_status beside them, so neither tool looks for more work), and push each copy by
# hand into a destination that has never seen it: node "walpush" of the walvault repository
# and stanza "walpush" of the pgBackRest repository (same cluster, so both accept it).
# Segment 0 is pushed untimed by both, so that binding the node / reading the stanza's
# archive.info the first time does not count.

run_wal_pushes() {
  local seg_bytes lsn0 r seg src=$WV_TMP/push-source before
  local -a segs=()
  seg_bytes=$(wv_psql src "SELECT setting::bigint * 1 FROM pg_settings WHERE name = 'wal_segment_size'")
  mkdir -p "$src"
  wv_psql src "CREATE TABLE push_fill (id bigint, note text)"
  wv_psql src "SELECT pg_switch_wal()" >/dev/null
  lsn0=$(wv_psql src "SELECT pg_current_wal_lsn()")
  wv_step "write rows until $((push_runs + 1)) segments are full"
  while (($(wv_psql src "SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), '$lsn0')::bigint") < (push_runs + 2) * seg_bytes)); do
    wv_psql src "INSERT INTO push_fill SELECT g, md5(g::text) || md5((g + 1)::text)
                 FROM generate_series(1, 100000) g"
  done
  # Every segment after lsn0's own and before the current one is complete and on disk.
  mapfile -t segs < <(wv_psql src "SELECT pg_walfile_name(pg_lsn '$lsn0' + (n * $seg_bytes)::numeric)
                                   FROM generate_series(1, $((push_runs + 1))) n")
  for seg in "${segs[@]}"; do
    cp "$pgdata/pg_wal/$seg" "$src/$seg"
  done
  switch_and_wait # let the archiver finish before anything is timed

  wv "walpush" wal-push "$src/${segs[0]}" || wv_fail "untimed first walvault wal-push failed"
  pgbr --stanza=walpush archive-push "$src/${segs[0]}" ||
    wv_fail "untimed first pgbackrest archive-push failed"
  for ((r = 1; r <= push_runs; r++)); do
    seg=${segs[r]}
    if ((r % 2)); then
      push_walvault "$r" "$src/$seg"
      push_pgbackrest "$r" "$src/$seg"
    else
      push_pgbackrest "$r" "$src/$seg"
      push_walvault "$r" "$src/$seg"
    fi
  done
  # The rows were only there to make WAL: the incremental benchmarks below run on the
  # pgbench tables alone.
  wv_psql src "DROP TABLE push_fill"
}

push_walvault() { # RUN FILE
  local before
  before=$(bytes_of "$WV_TMP/repo/nodes/walpush/wal")
  timed wal-push walvault "$1" \
    "$WALVAULT_BIN" --repo "$WV_REPO" --key-file "$WV_KEY" --node walpush wal-push "$2" &&
    record "bytes_processed=$(stat -c %s "$2")" \
      "bytes_stored=$(($(bytes_of "$WV_TMP/repo/nodes/walpush/wal") - before))"
}

push_pgbackrest() { # RUN FILE
  local before
  before=$(bytes_of "$pgbr_repo/archive/walpush")
  timed wal-push pgbackrest "$1" \
    pgbackrest --config="$pgbr_conf" --stanza=walpush archive-push "$2" &&
    record "bytes_processed=$(stat -c %s "$2")" \
      "bytes_stored=$(($(bytes_of "$pgbr_repo/archive/walpush") - before))"
}

# ---------------------------------------------------------------------------------------
# Untimed check that what walvault restored is the database: start a restored copy (it
# fetches its WAL with wal-fetch) and count pgbench's rows.

check_walvault_restore() {
  local dir=$WV_TMP/restore-check rows expected=$((WV_BENCH_SCALE * 100000))
  wv_step "check: restore walvault's newest backup, recover, count rows"
  echo "not completed" >"$WV_BENCH_OUT/restore-check.txt"
  wv default --jobs 2 restore --to "$dir" >/dev/null 2>"$WV_TMP/restore-check.err" || {
    echo "walvault restore failed: $(tail -n 3 "$WV_TMP/restore-check.err")" >"$WV_BENCH_OUT/restore-check.txt"
    return 1
  }
  wv_pg_start_restored "$dir" check "archive_mode = off"
  rows=$(wv_psql check "SELECT count(*) FROM pgbench_accounts")
  if [[ $rows == "$expected" ]]; then
    echo "ok: the restored copy recovered and holds all $rows rows of pgbench_accounts" >"$WV_BENCH_OUT/restore-check.txt"
  else
    echo "restored copy holds $rows rows of pgbench_accounts, expected $expected" >"$WV_BENCH_OUT/restore-check.txt"
  fi
  wv_pg_stop check
}

# ---------------------------------------------------------------------------------------
# Incremental backups after a pgbench load, against pgBackRest's and against the ideal
#
# Each repetition starts from a fresh full backup of each tool, so that both incrementals
# see the same changes: full (walvault), full (pgBackRest), CHECKPOINT, page fingerprints
# of the data directory (pages.py snapshot), `pgbench -c 2 -t 1500`, CHECKPOINT, the
# archive caught up, fingerprints again (pages.py diff: the ideal), then the two timed
# incrementals, the first tool alternating. Autovacuum is off for this part: a vacuum of
# pgbench_tellers or _branches landing between the ideal's snapshot and an incremental, or
# between the two tools' incrementals, would give each a different set of changes.

pgbench_load() { # LABEL: the load of the incremental benchmarks
  local log=$WV_TMP/pgbench-$1.log
  wv_step "pgbench -c 2 -t 1500 ($1)"
  "$WV_PGBIN/pgbench" -c 2 -t 1500 -h "$WV_TMP" -p "${WV_PORT[src]}" -U postgres postgres \
    >"$log" 2>&1 || wv_fail "pgbench ($1) failed: $(tail -n 5 "$log")"
}

db_bytes_now() { # the data directory without pg_wal, as db_bytes above
  du -sb --exclude=pg_wal "$pgdata" | cut -f1
}

wv_manifest_bytes() { # ID: size of the backup's sealed manifest object
  stat -c %s "$WV_TMP/repo/nodes/default/backups/$1" 2>/dev/null || echo 0
}

wv_list_fields() { # ID: KEY=VALUE lines from `walvault list --json` for that backup
  wv default list --json 2>/dev/null | python3 -c '
import json, sys
want = sys.argv[1]
for b in json.load(sys.stdin).get("backups", []):
    if b.get("id") == want:
        for k in ("type", "parent", "db_bytes", "stored_bytes", "new_bytes", "new_share"):
            v = b.get(k)
            print("list_%s=%s" % (k, "" if v is None else v))
' "$1" || true
}

# record_wv_backup EXPECTED_PARENT BYTES_BEFORE: after a timed walvault backup, note its id,
# what the repository grew by, its manifest, and what `list --json` says about it.
record_wv_backup() {
  local expected_parent=$1 before=$2 id after
  local -a fields=()
  id=$(tail -n 1 "$last_rec.out")
  after=$(wv_stored_backup_bytes)
  mapfile -t fields < <(wv_list_fields "$id")
  record "backup_id=$id" "bytes_stored=$((after - before))" \
    "manifest_bytes=$(wv_manifest_bytes "$id")" "db_bytes=$(db_bytes_now)" \
    "expected_parent=$expected_parent" "${fields[@]}"
}

timed_wv_backup() { # OP RUN full|incremental EXPECTED_PARENT: a timed walvault local backup
  local op=$1 run=$2 kind=$3 parent=$4 before
  archive_first walvault
  before=$(wv_stored_backup_bytes)
  timed "$op" walvault "$run" \
    "$WALVAULT_BIN" --repo "$WV_REPO" --key-file "$WV_KEY" --node default \
    --pg "$(wv_pg_conninfo src)" --jobs 2 backup "--$kind" --source local --pgdata "$pgdata" ||
    return 1
  record_wv_backup "$parent" "$before"
}

pgbr_newest() { # F|I: label of pgBackRest's newest full or incremental backup
  find "$pgbr_repo/backup/bench" -mindepth 1 -maxdepth 1 -type d -name "*$1" -printf '%f\n' |
    sort | tail -n 1
}

timed_pgbr_backup() { # OP RUN full|incr EXPECTED_PARENT
  local op=$1 run=$2 type=$3 parent=$4 label
  archive_first pgbackrest
  timed "$op" pgbackrest "$run" \
    pgbackrest --config="$pgbr_conf" --stanza=bench --type="$type" backup || return 1
  if [[ $type == full ]]; then label=$(pgbr_newest F); else label=$(pgbr_newest I); fi
  # An incremental's label is its full's label followed by its own.
  record "backup_id=$label" "bytes_stored=$(bytes_of "$pgbr_repo/backup/bench/$label")" \
    "db_bytes=$(db_bytes_now)" "expected_parent=$parent"
}

run_incrementals() {
  local r wv_full pgbr_full ideal_dir=$WV_BENCH_OUT/ideal load_start first
  mkdir -p "$ideal_dir"
  wv_psql src "ALTER SYSTEM SET autovacuum = off" >/dev/null
  wv_psql src "SELECT pg_reload_conf()" >/dev/null
  for ((r = 1; r <= incr_runs; r++)); do
    wv_full="" pgbr_full=""
    timed_wv_backup incr-parent "$r" full "" && wv_full=$(tail -n 1 "$last_rec.out")
    timed_pgbr_backup incr-parent "$r" full "" && pgbr_full=$(pgbr_newest F)
    wv_psql src "CHECKPOINT"
    wv_step "page fingerprints before the load"
    python3 "$pages" snapshot --pgdata "$pgdata" --out "$WV_TMP/pages-before.json" ||
      wv_fail "pages.py snapshot failed"
    first=walvault
    ((r % 2)) || first=pgbackrest
    load_start=$SECONDS
    pgbench_load "incremental $r"
    wv_psql src "CHECKPOINT"
    switch_and_wait # the timed backups must not wait for the load's WAL to be archived
    wv_step "changed pages (pages.py diff, lz4)"
    if python3 "$pages" diff --pgdata "$pgdata" --before "$WV_TMP/pages-before.json" \
      --work "$WV_TMP/pages-work" --out "$ideal_dir/run-$r.json"; then
      python3 "$measure" set "$ideal_dir/run-$r.json" "run=$r" \
        "load_s=$((SECONDS - load_start))" "first=$first" \
        "db_bytes=$(db_bytes_now)"
    else
      wv_step "pages.py diff failed for repetition $r"
    fi
    rm -f "$WV_TMP/pages-before.json"
    if ((r % 2)); then
      [[ -z $wv_full ]] || timed_wv_backup backup-incr "$r" incremental "$wv_full" || true
      [[ -z $pgbr_full ]] || timed_pgbr_backup backup-incr "$r" incr "$pgbr_full" || true
    else
      [[ -z $pgbr_full ]] || timed_pgbr_backup backup-incr "$r" incr "$pgbr_full" || true
      [[ -z $wv_full ]] || timed_wv_backup backup-incr "$r" incremental "$wv_full" || true
    fi
  done
}

# ---------------------------------------------------------------------------------------
# Ten incrementals in a row, then restore the 10th and a full of the same data
#
# After a full: ten times (load, CHECKPOINT, archive caught up, walvault incremental, timed).
# Then a full at the same point, nothing written in between, and restores of the 10th
# incremental and of that full, alternating. Finally the 10th incremental is restored once
# more, started, and its pgbench tables compared with the source's (nothing has been
# written since, so recovery to the end of the archive must give the same rows).

table_checksums() { # SERVER: md5 of every pgbench table's ordered rows
  wv_psql "$1" "SELECT (SELECT md5(string_agg(aid || ':' || abalance, ',' ORDER BY aid)) FROM pgbench_accounts)
                || ' ' || (SELECT md5(string_agg(tid || ':' || tbalance, ',' ORDER BY tid)) FROM pgbench_tellers)
                || ' ' || (SELECT md5(string_agg(bid || ':' || bbalance, ',' ORDER BY bid)) FROM pgbench_branches)
                || ' ' || (SELECT md5(coalesce(string_agg(tid || ':' || bid || ':' || aid || ':' || delta,
                                                          ',' ORDER BY tid, bid, aid, delta, mtime), ''))
                           FROM pgbench_history)"
}

restore_chain() { # OP RUN ID
  local op=$1 run=$2 id=$3 dir=$WV_TMP/restore-chain
  timed "$op" walvault "$run" \
    "$WALVAULT_BIN" --repo "$WV_REPO" --key-file "$WV_KEY" --node default \
    --jobs 2 restore --backup "$id" --to "$dir" &&
    record "backup_id=$id" \
      "bytes_processed=$(wv_list_fields "$id" | sed -n 's/^list_db_bytes=//p')"
  rm -rf "$dir"
}

run_chain() {
  local i r parent="" full="" last="" dir=$WV_TMP/restore-check-chain want got
  echo "not completed" >"$WV_BENCH_OUT/chain-check.txt"
  timed_wv_backup chain-base 1 full "" && parent=$(tail -n 1 "$last_rec.out")
  [[ -n $parent ]] || {
    echo "the chain's first full backup failed" >"$WV_BENCH_OUT/chain-check.txt"
    return 0
  }
  for ((i = 1; i <= chain_len; i++)); do
    pgbench_load "chain $i"
    wv_psql src "CHECKPOINT"
    switch_and_wait
    if timed_wv_backup chain-incr "$i" incremental "$parent"; then
      parent=$(tail -n 1 "$last_rec.out")
    else
      echo "incremental $i of the chain failed" >"$WV_BENCH_OUT/chain-check.txt"
      return 0
    fi
  done
  last=$parent
  timed_wv_backup chain-full 1 full "" && full=$(tail -n 1 "$last_rec.out")
  for ((r = 1; r <= chain_restore_runs; r++)); do
    if ((r % 2)); then
      restore_chain restore-incr10 "$r" "$last"
      [[ -z $full ]] || restore_chain restore-full10 "$r" "$full"
    else
      [[ -z $full ]] || restore_chain restore-full10 "$r" "$full"
      restore_chain restore-incr10 "$r" "$last"
    fi
  done

  wv_step "check: restore the 10th incremental, recover, compare the pgbench tables"
  want=$(table_checksums src)
  wv default --jobs 2 restore --backup "$last" --to "$dir" >/dev/null 2>"$WV_TMP/chain-check.err" || {
    echo "walvault restore --backup $last failed: $(tail -n 3 "$WV_TMP/chain-check.err")" \
      >"$WV_BENCH_OUT/chain-check.txt"
    return 0
  }
  wv_pg_start_restored "$dir" check10 "archive_mode = off"
  got=$(table_checksums check10)
  if [[ $got == "$want" ]]; then
    echo "ok: the 10th incremental, restored and recovered, has the source's pgbench tables (md5 of ordered rows of all four equal)" >"$WV_BENCH_OUT/chain-check.txt"
  else
    echo "MISMATCH: md5 of the pgbench tables restored from the 10th incremental: $got; source: $want" >"$WV_BENCH_OUT/chain-check.txt"
  fi
  wv_pg_stop check10
  rm -rf "$dir"
}

write_meta() {
  local pg_version db_total
  pg_version=$("$WV_PGBIN/postgres" --version)
  db_total=$(wv_psql src "SELECT sum(pg_database_size(oid)) FROM pg_database")
  python3 - "$WV_BENCH_OUT/meta.json" <<PY
import json, os, platform, sys
mem_kib = 0
with open("/proc/meminfo") as f:
    for line in f:
        if line.startswith("MemTotal:"):
            mem_kib = int(line.split()[1])
cpu = ""
with open("/proc/cpuinfo") as f:
    for line in f:
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
meta = {
    "scale": int("$WV_BENCH_SCALE"),
    "db_bytes_without_wal": int("$db_bytes"),
    "db_bytes_pg_database_size": int("$db_total"),
    "nproc": os.cpu_count(),
    "mem_total_kib": mem_kib,
    "cpu_model": cpu,
    "kernel": platform.release(),
    "postgres_version": "$pg_version",
    "pgbackrest_version": "$(pgbackrest version)",
    "walvault_version": "$("$WALVAULT_BIN" --version 2>&1 | head -n 1)",
    "filesystem": "$(df -T "$WV_TMP" | awk 'NR == 2 {print $2}')",
    "runs": {"backup": $backup_runs, "restore": $restore_runs, "raw": $raw_runs, "wal_push": $push_runs,
             "incremental": $incr_runs, "chain_length": $chain_len,
             "chain_restore": $chain_restore_runs},
    "load": "pgbench -c 2 -t 1500",
}
with open(sys.argv[1], "w") as f:
    json.dump(meta, f, indent=1)
PY
}

# What timing itself costs per run (starting /usr/bin/time, the first /proc sample): it is
# in every figure, and only matters next to the WAL pushes' tens of milliseconds.
measure_overhead() {
  local r
  for ((r = 1; r <= 5; r++)); do
    timed overhead true "$r" /bin/true
  done
}

# ---------------------------------------------------------------------------------------
# S3: walvault's s3:// backend against Debian's awscli, and a backup and restore to s3://
# against the same to file://
#
# One s3rver (tests/s3, started by lib.sh's wv_s3_start, which also starts the SigV4-checking
# proxy tests/s3/proxy.js). Every S3 request here goes DIRECTLY to s3rver, not through the
# proxy: the proxy checks each request's signature and payload hash, stages every PUT in a
# bucket of its own and renames it into place, which costs throughput that is the proxy's,
# not the client's. Talking to s3rver itself takes its built-in account (key and secret
# "S3RVER"); s3rver checks that key but, unlike S3, neither If-None-Match nor much else, and
# walvault finds that out by itself (its If-None-Match probe) and uses its claim protocol.
#
# (1) 1 GiB of random bytes (incompressible; a file in the page cache) put and got back,
#     s3_runs rounds, the first tool alternating: walvault's backend through bench/s3xfer
#     (storage_put_begin/_write/_commit, a multipart upload with parts in parallel; and
#     storage_get_stream to standard output, /dev/null) against `aws s3 cp FILE s3://...`
#     and `aws s3 cp s3://... -` (/dev/null), both with their default settings. Each put goes
#     to a key of its own, compared byte for byte with the source in s3rver's directory
#     afterwards (untimed) and deleted; both tools get the same object, put once (untimed) by
#     awscli, and the bytes walvault gets are compared with the source once (untimed).
# (2) Two fresh repositories with the same key: s3://BUCKET/bench-repo on s3rver and a file://
#     directory beside the benchmark's own. archive_command pushes every segment to both
#     (walvault both times; before each timed backup the order is switched so that the
#     repository being backed up to gets the segment first). s3_runs full backups
#     (`--source local --jobs 2`) to each, alternating, then s3_runs restores of each one's
#     newest backup, alternating. Untimed afterwards: the newest backup on s3:// is restored
#     again, started (its restore_command fetches WAL from s3rver) and its rows counted.
#
# The S3 part runs last: wv_s3_start exports S3 settings, and archive_command is changed.

s3_runs=${WV_BENCH_S3_RUNS:-3}
s3_check=$WV_BENCH_OUT/s3-check.txt
xfer_bytes=$((1024 * 1024 * 1024))

s3_skip() { # REASON
  wv_step "S3 part skipped: $1"
  echo "skipped: $1" >"$s3_check"
}

s3_objects_bytes() { # DIR...: bytes of the objects s3rver keeps under DIR (metadata left out)
  local d total=0 n
  for d in "$@"; do
    [[ -d $d ]] || continue
    n=$(find "$d" -type f -name '*._S3rver_object' -printf '%s\n' | awk '{s += $1} END {print s + 0}')
    total=$((total + n))
  done
  echo "$total"
}

files_bytes() { # DIR...: bytes of the regular files under DIR
  local d total=0 n
  for d in "$@"; do
    [[ -d $d ]] || continue
    n=$(find "$d" -type f -printf '%s\n' | awk '{s += $1} END {print s + 0}')
    total=$((total + n))
  done
  echo "$total"
}

s3_unavailable() { # print why the S3 part cannot run, or nothing
  local why=""
  if [[ -n ${WV_BENCH_S3_SKIP:-} ]]; then
    why=$WV_BENCH_S3_SKIP
  elif [[ -z ${WV_BENCH_S3XFER:-} || ! -x ${WV_BENCH_S3XFER:-} ]]; then
    why="bench/s3xfer was not built (WV_BENCH_S3XFER unset)"
  elif ! command -v node >/dev/null; then
    why="node not found (scripts/install-deps.sh)"
  elif [[ ! -f $WV_S3_DIR/node_modules/s3rver/bin/s3rver.js ]]; then
    why="s3rver is not installed under $WV_S3_DIR/node_modules (scripts/install-deps.sh)"
  elif [[ ! -x /usr/bin/aws ]]; then
    why="Debian's awscli (/usr/bin/aws) is missing (scripts/install-deps.sh)"
  fi
  echo "$why"
}

s3_setup() {
  echo "not completed" >"$s3_check"
  wv_s3_start
  # s3rver's own account, for talking to it without the proxy (see above); awscli is
  # configured by the environment alone (wv_s3_start points its config files at /dev/null).
  export AWS_ACCESS_KEY_ID=S3RVER AWS_SECRET_ACCESS_KEY=S3RVER AWS_PAGER=""
  s3_url=$WV_S3_S3RVER
  # The same for walvault's own commands, which PostgreSQL also runs (archive_command,
  # restore_command) without these variables: a config file, and flags.
  s3_conf=$WV_TMP/s3rver-direct.conf
  (
    umask 077
    printf '%s\n' "s3-access-key-id = S3RVER" "s3-secret-access-key = S3RVER" >"$s3_conf"
  )
  s3_args=(--config "$s3_conf" --s3-endpoint "$s3_url" --s3-region "$WV_S3_REGION" --s3-uri-style path)
  python3 - "$WV_BENCH_OUT/s3-meta.json" <<PY
import json, sys
meta = {
    "awscli_version": """$(/usr/bin/aws --version 2>&1 | head -n 1)""",
    "s3rver_version": json.load(open("$WV_S3_DIR/node_modules/s3rver/package.json"))["version"],
    "node_version": "$(node --version)",
    "endpoint": "s3rver directly (not through tests/s3/proxy.js)",
    "object_bytes": $xfer_bytes,
    "runs": $s3_runs,
    "loadavg_start": open("/proc/loadavg").read().split()[:3],
}
json.dump(meta, open(sys.argv[1], "w"), indent=1)
PY
}

s3xfer() { # ARGS...: bench/s3xfer against s3rver directly
  "$WV_BENCH_S3XFER" --endpoint "$s3_url" --region "$WV_S3_REGION" --uri-style path "$@"
}

aws_s3() { # ARGS...: Debian's awscli against s3rver directly
  /usr/bin/aws --endpoint-url "$s3_url" "$@"
}

s3_object_file() { # KEY (under the bucket): s3rver's file with the object's bytes
  echo "$WV_S3_DATA/$WV_S3_BUCKET/$1._S3rver_object"
}

# put_check TOOL KEY: after a timed put, compare what s3rver stored with the source, then
# delete the object (the next put gets a key of its own).
put_check() {
  local tool=$1 key=$2 ok=no
  cmp -s "$(s3_object_file "$key")" "$xfer_src" && ok=yes
  record "bytes_processed=$xfer_bytes" "content_ok=$ok"
  [[ $ok == yes ]] || s3_problems+=("$tool's put of $key: s3rver's copy differs from the source")
  aws_s3 s3 rm --only-show-errors "s3://$WV_S3_BUCKET/$key" || true
}

s3_put_walvault() { # RUN
  local key=bench-xfer/put-s3xfer-$1
  timed s3-put s3xfer "$1" "$WV_BENCH_S3XFER" --endpoint "$s3_url" --region "$WV_S3_REGION" \
    --uri-style path put "s3://$WV_S3_BUCKET/bench-xfer" "put-s3xfer-$1" "$xfer_src" &&
    put_check walvault "$key"
}

s3_put_awscli() { # RUN
  local key=bench-xfer/put-awscli-$1
  timed s3-put awscli "$1" /usr/bin/aws --endpoint-url "$s3_url" s3 cp --only-show-errors \
    "$xfer_src" "s3://$WV_S3_BUCKET/$key" && put_check awscli "$key"
}

s3_get_walvault() { # RUN
  timed_stdout=/dev/null timed s3-get s3xfer "$1" "$WV_BENCH_S3XFER" --endpoint "$s3_url" \
    --region "$WV_S3_REGION" --uri-style path get "s3://$WV_S3_BUCKET/bench-xfer" get-source &&
    record "bytes_processed=$xfer_bytes"
}

s3_get_awscli() { # RUN
  timed_stdout=/dev/null timed s3-get awscli "$1" /usr/bin/aws --endpoint-url "$s3_url" s3 cp \
    --only-show-errors "s3://$WV_S3_BUCKET/bench-xfer/get-source" - &&
    record "bytes_processed=$xfer_bytes"
}

run_s3_transfers() {
  local r
  xfer_src=$WV_TMP/s3-1gib.bin
  wv_step "S3: 1 GiB of random bytes; untimed put of the object both tools get"
  head -c "$xfer_bytes" /dev/urandom >"$xfer_src"
  aws_s3 s3 cp --only-show-errors "$xfer_src" "s3://$WV_S3_BUCKET/bench-xfer/get-source" ||
    wv_fail "untimed awscli put of the get source failed"
  cmp -s "$(s3_object_file bench-xfer/get-source)" "$xfer_src" ||
    s3_problems+=("awscli's untimed put of the get source: s3rver's copy differs")
  for ((r = 1; r <= s3_runs; r++)); do
    if ((r % 2)); then
      s3_put_walvault "$r"
      s3_put_awscli "$r"
      s3_get_walvault "$r"
      s3_get_awscli "$r"
    else
      s3_put_awscli "$r"
      s3_put_walvault "$r"
      s3_get_awscli "$r"
      s3_get_walvault "$r"
    fi
  done
  wv_step "S3: untimed check of what walvault's backend gets"
  if s3xfer get "s3://$WV_S3_BUCKET/bench-xfer" get-source 2>"$WV_TMP/s3xfer-check.err" |
    cmp -s - "$xfer_src"; then
    s3_good+=("walvault's backend got the 1 GiB object back byte for byte")
  else
    s3_problems+=("walvault's backend did not get the 1 GiB object back intact: $(tail -n 2 "$WV_TMP/s3xfer-check.err")")
  fi
  rm -f "$xfer_src"
  aws_s3 s3 rm --only-show-errors --recursive "s3://$WV_S3_BUCKET/bench-xfer/" || true
}

s3cmp_argv() { # s3|file: walvault's words for one of the two repositories, in wv_argv
  if [[ $1 == s3 ]]; then
    wv_argv=("$WALVAULT_BIN" --repo "$s3_repo" --key-file "$WV_KEY" --node default "${s3_args[@]}")
  else
    wv_argv=("$WALVAULT_BIN" --repo "$cmp_repo" --key-file "$WV_KEY" --node default)
  fi
}

s3cmp_stored() { # s3|file: bytes of the repository's packs and manifests
  if [[ $1 == s3 ]]; then
    s3_objects_bytes "$WV_S3_DATA/$WV_S3_BUCKET/bench-repo/nodes/default/packs" \
      "$WV_S3_DATA/$WV_S3_BUCKET/bench-repo/nodes/default/backups"
  else
    files_bytes "$cmp_dir/nodes/default/packs" "$cmp_dir/nodes/default/backups"
  fi
}

s3cmp_archive_first() { # s3|file
  local cmd
  if [[ $1 == s3 ]]; then cmd="$s3_push_cmd && $file_push_cmd"; else cmd="$file_push_cmd && $s3_push_cmd"; fi
  wv_psql src "ALTER SYSTEM SET archive_command = '$cmd'" >/dev/null
  wv_psql src "SELECT pg_reload_conf()" >/dev/null
  sleep 0.3
}

s3cmp_backup() { # s3|file RUN
  local kind=$1 run=$2 before after db
  s3cmp_archive_first "$kind"
  before=$(s3cmp_stored "$kind")
  db=$(db_bytes_now)
  s3cmp_argv "$kind"
  timed s3cmp-backup "walvault-$kind" "$run" "${wv_argv[@]}" --pg "$(wv_pg_conninfo src)" \
    --jobs 2 backup --full --source local --pgdata "$pgdata" || return 0
  after=$(s3cmp_stored "$kind")
  record "bytes_processed=$db" "db_bytes=$db" "bytes_stored=$((after - before))" \
    "backup_id=$(tail -n 1 "$last_rec.out")"
}

s3cmp_restore() { # s3|file RUN
  local kind=$1 run=$2 dir=$WV_TMP/restore-s3cmp
  s3cmp_argv "$kind"
  timed s3cmp-restore "walvault-$kind" "$run" "${wv_argv[@]}" --jobs 2 restore --to "$dir" &&
    record "bytes_processed=$(db_bytes_now)"
  rm -rf "$dir"
}

run_s3_backups() {
  local r rows dir=$WV_TMP/restore-check-s3 expected=$((WV_BENCH_SCALE * 100000))
  s3_repo=s3://$WV_S3_BUCKET/bench-repo
  cmp_dir=$WV_TMP/repo-s3cmp
  cmp_repo=file://$cmp_dir
  wv_step "S3: init $s3_repo and $cmp_repo"
  s3cmp_argv s3
  "${wv_argv[@]}" init >/dev/null || wv_fail "walvault init $s3_repo failed"
  s3cmp_argv file
  "${wv_argv[@]}" init >/dev/null || wv_fail "walvault init $cmp_repo failed"
  s3_push_cmd="$WALVAULT_BIN --repo $s3_repo --key-file $WV_KEY --node default ${s3_args[*]} wal-push %p"
  file_push_cmd="$WALVAULT_BIN --repo $cmp_repo --key-file $WV_KEY --node default wal-push %p"
  s3cmp_archive_first s3
  switch_and_wait
  for ((r = 1; r <= s3_runs; r++)); do
    if ((r % 2)); then
      s3cmp_backup s3 "$r"
      s3cmp_backup file "$r"
    else
      s3cmp_backup file "$r"
      s3cmp_backup s3 "$r"
    fi
  done
  for ((r = 1; r <= s3_runs; r++)); do
    if ((r % 2)); then
      s3cmp_restore s3 "$r"
      s3cmp_restore file "$r"
    else
      s3cmp_restore file "$r"
      s3cmp_restore s3 "$r"
    fi
  done

  wv_step "S3: check: restore the newest backup on s3://, recover (WAL from s3rver), count rows"
  s3cmp_argv s3
  if ! "${wv_argv[@]}" --jobs 2 restore --to "$dir" >/dev/null 2>"$WV_TMP/s3-restore-check.err"; then
    s3_problems+=("untimed restore from $s3_repo failed: $(tail -n 3 "$WV_TMP/s3-restore-check.err")")
    return 0
  fi
  wv_pg_start_restored "$dir" checks3 "archive_mode = off"
  rows=$(wv_psql checks3 "SELECT count(*) FROM pgbench_accounts")
  if [[ $rows == "$expected" ]]; then
    s3_good+=("the newest backup on s3:// restored, recovered with WAL fetched from s3rver, and holds all $rows rows of pgbench_accounts")
  else
    s3_problems+=("the copy restored from s3:// holds $rows rows of pgbench_accounts, expected $expected")
  fi
  wv_pg_stop checks3
  rm -rf "$dir"
}

run_s3() {
  local why
  s3_problems=()
  s3_good=()
  why=$(s3_unavailable)
  if [[ -n $why ]]; then
    s3_skip "$why"
    return 0
  fi
  s3_setup
  run_s3_transfers
  run_s3_backups
  local text pending claims
  # Leftovers a client should not leave in a store: multipart uploads neither completed nor
  # aborted (their parts cost storage on S3), and walvault's put-if-absent claims.
  pending=$(wv_s3_pending_uploads)
  claims=$(find "$WV_S3_DATA/$WV_S3_BUCKET/bench-repo/.walvault" -name 'claim.*._S3rver_object' 2>/dev/null | wc -l || true)
  if ((pending > 0)); then
    s3_problems+=("$pending multipart upload(s) left in s3rver, neither completed nor aborted")
  fi
  if ((claims > 0)); then
    s3_problems+=("$claims put-if-absent claim object(s) left under bench-repo/.walvault/")
  fi
  if ((pending == 0 && claims == 0)); then
    s3_good+=("no multipart upload and no claim object left behind in s3rver")
  fi
  if ((${#s3_problems[@]})); then
    text="PROBLEM: $(printf '%s; ' "${s3_problems[@]}")"
  else
    text="ok: every put stored the source byte for byte; $(printf '%s; ' "${s3_good[@]}")"
  fi
  echo "${text%; }" >"$s3_check"
  python3 "$measure" set "$WV_BENCH_OUT/s3-meta.json" \
    "loadavg_end=$(cut -d' ' -f1-3 /proc/loadavg)"
}

setup_database
write_meta
measure_overhead
run_backups
run_raw_io
run_restores
run_wal_pushes
check_walvault_restore
run_incrementals
run_chain
run_s3
wv_step "done"
