#!/usr/bin/env bash
# bench/stream.sh: the streaming half of bench/run.sh (issue 5's targets). It measures, on
# a PostgreSQL of its own with a pgbench database, and appends one JSON line per
# measurement to $WV_BENCH_OUT/stream.jsonl (bench/report_stream.py writes the section):
#
#   tps      `pgbench -c 8 -j 2 -T $WV_BENCH_STREAM_SECONDS` with walvault wal-stream as the
#            synchronous standby, and with `pg_receivewal --synchronous --slot` writing to
#            local disk as the synchronous standby, in alternating runs;
#   lag      the same load with wal-stream asynchronous (--sync-interval 1s): how long each
#            flushed byte waits until wal-stream reports it archived (pg_stat_replication's
#            flush_lsn, which wal-stream sets to what is durable in the repository), from
#            samples of both LSNs taken every 50 ms;
#   latency  1,000 single-row commits one after the other (pgbench -c 1 with a log of every
#            transaction): no standby (the commit's own WAL fsync), pg_receivewal
#            --synchronous, walvault synchronous to file://, and walvault synchronous to
#            s3:// through tests/s3/proxy.js to s3rver;
#   soak     `walvault agent` (synchronous, file://) for $WV_BENCH_SOAK_SECONDS under
#            pgbench load, with a base backup schedule; its RSS sampled every 5 s.
#
# Environment (set by run.sh; it can also be run alone with these):
#   WALVAULT_BIN, WV_BENCH_OUT      as for bench.sh
#   WV_BENCH_STREAM_PARTS           which parts (default "tps lag latency soak")
#   WV_BENCH_STREAM_SECONDS         pgbench duration of the tps and lag runs (default 60)
#   WV_BENCH_STREAM_RUNS            tps runs per tool (default 3)
#   WV_BENCH_SOAK_SECONDS           length of the soak (default 600)
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=SCRIPTDIR/../tests/integration/lib.sh
source "${WV_BENCH_LIB:-$here/../tests/integration/lib.sh}"
wv_drop_root "$@"

: "${WV_BENCH_OUT:?set by bench/run.sh}" "${WALVAULT_BIN:?set by bench/run.sh}"
parts=${WV_BENCH_STREAM_PARTS:-tps lag latency soak}
seconds=${WV_BENCH_STREAM_SECONDS:-60}
runs=${WV_BENCH_STREAM_RUNS:-3}
soak_seconds=${WV_BENCH_SOAK_SECONDS:-600}
stat=$here/streamstat.py
out=$WV_BENCH_OUT/stream.jsonl
scale=10 # enough rows of pgbench_branches that 8 clients do not queue on one row lock
app=bench_standby

unset WV_REPO_URL WV_NODE WV_REPO_KIND
wv_tmpdir
wv_repo_setup
wv_repo_init

pgbench() { "$WV_PGBIN/pgbench" -h "$WV_TMP" -p "${WV_PORT[db]}" -U postgres "$@" postgres; }

emit() { # KIND KEY=VALUE...: one JSON line of results (numbers stay numbers)
  python3 "$stat" emit "$@" >>"$out"
}

standby_names() { # NAME: the synchronous standby PostgreSQL waits for ('' for none)
  wv_pg_conf db "synchronous_standby_names = '$1'"
  wv_pg_reload db
}

wait_standby() { # STATE: until the standby ($STANDBY_PID) streams as $app in sync_state STATE
  wv_pg_standby_wait db "$app" "$1" "$STANDBY_PID" 60
}

STANDBY_PID=""
# standby_start walvault|walvault-s3|pg_receivewal SYNC_INTERVAL: the standby in the
# background, streaming as $app.
standby_start() {
  local tool=$1 interval=$2
  case $tool in
  walvault)
    wv_bg "standby-$tool" "$WALVAULT_BIN" --repo "$WV_REPO" --key-file "$WV_KEY" --node default \
      --pg "$(wv_pg_conninfo db)" --application-name "$app" --sync-interval "$interval" wal-stream
    ;;
  walvault-s3)
    wv_bg "standby-$tool" "$WALVAULT_BIN" --repo "$s3_repo" --key-file "$WV_KEY" --node default \
      --config "$WV_S3_CONF" --s3-endpoint "$WV_S3_ENDPOINT" --s3-region "$WV_S3_REGION" \
      --s3-uri-style path --pg "$(wv_pg_conninfo db)" --application-name "$app" \
      --sync-interval "$interval" wal-stream
    ;;
  pg_receivewal)
    mkdir -p "$WV_TMP/receivewal"
    wv_bg "standby-$tool" "$WV_PGBIN/pg_receivewal" -d "$(wv_pg_conninfo db) application_name=$app" \
      -D "$WV_TMP/receivewal" --slot bench_receivewal --synchronous --no-loop
    ;;
  esac
  STANDBY_PID=$WV_LAST_PID
}

standby_cpu_s() { # CPU seconds (user + system) the standby used so far
  awk -v hz="$(getconf CLK_TCK)" '{printf "%.2f", ($14 + $15) / hz}' "/proc/$STANDBY_PID/stat"
}

standby_stop() {
  # pg_receivewal ends cleanly on SIGINT; walvault on SIGTERM (or SIGINT).
  kill -INT "$STANDBY_PID" 2>/dev/null || true
  local deadline=$((SECONDS + 60))
  until wv__gone "$STANDBY_PID"; do
    ((SECONDS < deadline)) || wv_fail "the standby (pid $STANDBY_PID) did not stop within 60 s"
    sleep 0.1
  done
  wait "$STANDBY_PID" 2>/dev/null || true
}

setup_database() {
  wv_pg_init db
  # Checkpoints as PostgreSQL's defaults would space them for this load; the WAL stays.
  wv_pg_conf db "archive_command = '/bin/true'" "max_wal_size = 4GB" "shared_buffers = 256MB" \
    "max_connections = 50"
  wv_pg_start db
  wv_step "pgbench -i -s $scale"
  pgbench -i -q -s "$scale" >"$WV_TMP/pgbench-init.log" 2>&1 || wv_fail "pgbench -i failed"
  wv_psql db "SELECT pg_create_physical_replication_slot('bench_receivewal')" >/dev/null
  wv_psql db "CREATE TABLE commits (id bigserial PRIMARY KEY, at timestamptz DEFAULT now())"
  echo "INSERT INTO commits DEFAULT VALUES;" >"$WV_TMP/one-commit.sql"
}

# ---- tps: pgbench -c 8 -j 2 with each synchronous standby

tps_run() { # TOOL RUN
  local tool=$1 run=$2 log=$WV_TMP/tps-$1-$2.log
  standby_names "$app"
  standby_start "$tool" 1s
  wait_standby sync
  wv_step "tps: $tool as the synchronous standby, run $run (${seconds} s)"
  local cpu0 cpu1 stores=()
  cpu0=$(standby_cpu_s)
  pgbench -n -c 8 -j 2 -T "$seconds" >"$log" 2>&1 || wv_fail "pgbench failed (see $log)"
  cpu1=$(standby_cpu_s)
  standby_stop
  if [[ $tool == walvault ]]; then
    stores=("fragments=$(sed -n 's/.*(\([0-9]*\) fragments and [0-9]* segments stored.*/\1/p' \
      "$WV_TMP/standby-$tool.log" | tail -n 1)")
  fi
  emit tps tool="$tool" run="$run" clients=8 seconds="$seconds" \
    tps="$(python3 "$stat" pgbench-tps "$log")" loadavg="$(cut -d' ' -f1 /proc/loadavg)" \
    standby_cpu_s="$(python3 -c "print(round($cpu1 - $cpu0, 2))")" "${stores[@]}"
}

part_tps() {
  local r
  for ((r = 1; r <= runs; r++)); do
    if ((r % 2)); then
      tps_run walvault "$r"
      tps_run pg_receivewal "$r"
    else
      tps_run pg_receivewal "$r"
      tps_run walvault "$r"
    fi
  done
}

# ---- lag: asynchronous, the same load, both LSNs sampled

part_lag() {
  local samples=$WV_TMP/lag-samples.txt log=$WV_TMP/lag-pgbench.log sampler
  standby_names ""
  standby_start walvault 1s
  wait_standby async
  wv_step "lag: asynchronous wal-stream (--sync-interval 1s) under pgbench -c 8 -j 2 -T $seconds"
  # One session samples both LSNs with the server's clock every 50 ms.
  printf '%s\n' "SELECT extract(epoch FROM clock_timestamp()), pg_current_wal_flush_lsn() - '0/0'::pg_lsn,
      (SELECT flush_lsn - '0/0'::pg_lsn FROM pg_stat_replication WHERE application_name = '$app')" \
    '\watch 0.05' |
    "$WV_PGBIN/psql" -XAtq -h "$WV_TMP" -p "${WV_PORT[db]}" -U postgres -d postgres >"$samples" 2>/dev/null &
  sampler=$!
  pgbench -n -c 8 -j 2 -T "$seconds" >"$log" 2>&1 || wv_fail "pgbench failed (see $log)"
  sleep 3 # the last bytes written reach the archive: their lag counts too
  kill -TERM "$sampler" 2>/dev/null || true
  wait "$sampler" 2>/dev/null || true
  standby_stop
  local figures
  figures=$(python3 "$stat" lag "$samples") || wv_fail "no archive lag from $samples"
  # shellcheck disable=SC2086 # KEY=VALUE words
  emit lag tool=walvault sync_interval_s=1 clients=8 seconds="$seconds" \
    tps="$(python3 "$stat" pgbench-tps "$log")" $figures
}

# ---- latency: 1,000 serial commits

latency_run() { # CONFIG
  local config=$1 dir=$WV_TMP/latency-$1
  mkdir -p "$dir"
  case $config in
  local) standby_names "" ;;
  pg_receivewal | walvault | walvault-s3)
    standby_names "$app"
    standby_start "$config" 1s
    wait_standby sync
    ;;
  esac
  wv_step "latency: 1,000 single-row commits, $config"
  # pgbench's per-transaction log: one line per commit with its latency in microseconds.
  (cd "$dir" && pgbench -n -c 1 -t 1000 -f "$WV_TMP/one-commit.sql" -l --log-prefix=tx \
    >"$dir/pgbench.out" 2>&1) || wv_fail "pgbench failed (see $dir/pgbench.out)"
  [[ $config == local ]] || standby_stop
  local figures
  figures=$(python3 "$stat" latency "$dir"/tx.*) || wv_fail "no latencies in $dir"
  # shellcheck disable=SC2086 # KEY=VALUE words
  emit latency config="$config" commits=1000 $figures
}

part_latency() {
  local config
  for config in local pg_receivewal walvault; do
    latency_run "$config"
  done
  if [[ -f $WV_S3_DIR/node_modules/s3rver/bin/s3rver.js ]] && command -v node >/dev/null; then
    wv_s3_start
    s3_repo=s3://$WV_S3_BUCKET/stream-bench
    "$WALVAULT_BIN" --repo "$s3_repo" --key-file "$WV_KEY" --node default --config "$WV_S3_CONF" \
      --s3-endpoint "$WV_S3_ENDPOINT" --s3-region "$WV_S3_REGION" --s3-uri-style path init >/dev/null
    latency_run walvault-s3
  else
    emit latency config=walvault-s3 skipped="s3rver is not installed (scripts/install-deps.sh)"
  fi
}

# ---- soak: the agent's memory over a long run

part_soak() {
  local conf=$WV_TMP/agent.conf rss_log=$WV_TMP/soak-rss.txt log=$WV_TMP/soak-pgbench.log
  local pid t end pgbench_pid
  printf '%s\n' "full-every = 5m" "incremental-every = 1m" "retain-full = 2" >"$conf"
  standby_names "$app"
  wv_bg soak-agent "$WALVAULT_BIN" --repo "$WV_REPO" --key-file "$WV_KEY" --node default \
    --config "$conf" --pg "$(wv_pg_conninfo db)" --pgdata "${WV_PGDATA[db]}" \
    --application-name "$app" --listen "127.0.0.1:$(wv_free_port)" agent
  pid=$WV_LAST_PID
  STANDBY_PID=$pid
  wait_standby sync
  wv_step "soak: walvault agent for $soak_seconds s under pgbench -c 2 (RSS every 5 s)"
  pgbench -n -c 2 -j 1 -T "$soak_seconds" >"$log" 2>&1 &
  pgbench_pid=$!
  : >"$rss_log"
  end=$((SECONDS + soak_seconds))
  while ((SECONDS < end)); do
    wv__gone "$pid" && wv_fail "the agent exited during the soak (see soak-agent.log)"
    t=$SECONDS
    echo "$t $(awk '/^VmRSS:/ {print $2}' "/proc/$pid/status")" >>"$rss_log"
    sleep 5
  done
  wait "$pgbench_pid" || wv_fail "pgbench failed during the soak (see $log)"
  standby_stop
  local figures
  figures=$(python3 "$stat" rss "$rss_log") || wv_fail "no RSS samples in $rss_log"
  # shellcheck disable=SC2086 # KEY=VALUE words
  emit soak seconds="$soak_seconds" tps="$(python3 "$stat" pgbench-tps "$log")" \
    backups="$(grep -c "backup .* done in" "$WV_TMP/soak-agent.log" || true)" $figures
}

setup_database
emit meta scale="$scale" cores="$(nproc)" loadavg_start="$(cut -d' ' -f1 /proc/loadavg)" \
  fdatasync_note="see latency config=local for the commit with its own WAL fsync"
for part in $parts; do
  "part_$part"
done
wv_step "stream benchmarks done"
