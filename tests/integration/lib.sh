# shellcheck shell=bash
# tests/integration/lib.sh: sourced by every integration test (tests/integration/test_*.sh).
#
# ctest runs each test as `bash test_x.sh` with WALVAULT_BIN (absolute path of the built
# binary) and WALVAULT_SOURCE_DIR (the repository root) in the environment. A test:
#
#   #!/usr/bin/env bash
#   set -euo pipefail
#   source "$(dirname "$0")/lib.sh"
#   wv_drop_root "$@"          # as root: re-run this script as user walvault-test
#   wv_tmpdir                  # $WV_TMP; the EXIT trap stops servers, removes it all
#   wv_repo_setup              # $WV_REPO (from $WV_REPO_URL), $WV_KEY
#   wv_pg_init src; wv_pg_archive_to_repo src; wv_pg_start src
#   ...
#
# Call the state-changing helpers (wv_tmpdir, wv_pg_init, wv_pg_start,
# wv_pg_start_restored, wv_repo_setup, wv_bg) directly, never inside $(...): they record
# what the EXIT trap must clean up in shell variables, which a subshell would lose.
#
# Environment:
#   WV_REPO_URL   base repository URL; each test uses its own location under it
#                 (default: file://$WV_TMP/repo)
#   WV_REPO_KIND  file (default) or s3: with s3, wv_repo_setup starts s3rver behind
#                 tests/s3/proxy.js (SigV4 checks, fault injection) and the test's
#                 repository is s3://walvault-test/<test>-<pid> (see "S3" below)
#   WV_NODE       node name passed by wv_run (default: default)
#   WV_KEEP_TMP=1 keep $WV_TMP after the test (for debugging); servers are still stopped
#   WV_PGBIN      PostgreSQL binaries (default /usr/lib/postgresql/15/bin)

set -euo pipefail
shopt -s inherit_errexit

[[ -z ${WV__LIB_LOADED:-} ]] || return 0
WV__LIB_LOADED=1

WV_PGBIN=${WV_PGBIN:-/usr/lib/postgresql/15/bin}
export PGBIN=$WV_PGBIN
WV_TEST_USER=${WV_TEST_USER:-walvault-test}
WV_TEST_NAME=$(basename "$0" .sh)
WV_LIB_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
WV_S3_DIR=$WV_LIB_DIR/../s3 # tests/s3: proxy.js, s3rver in node_modules
[[ ! -d $WV_S3_DIR ]] || WV_S3_DIR=$(cd "$WV_S3_DIR" && pwd)
WV_PORT_DIR=/tmp/walvault-ports
WV_TMP=""
WV_REPO=""
WV_KEY=""
declare -gA WV_PORT=() WV_PGDATA=()
WV__STARTED=()  # names of servers this test started (stopped by the EXIT trap)
WV__BG_PIDS=()  # background processes started with wv_bg
WV__MAIN_PID=$BASHPID
WV__FAIL_REPORTED=""
WV__SKIPPED=""

# Connection settings from the caller's environment must not leak into the tests.
unset PGHOST PGHOSTADDR PGPORT PGUSER PGDATABASE PGSERVICE PGOPTIONS PGDATA PGPASSFILE

# ---------------------------------------------------------------------------------------
# Output and assertions

wv_step() {
  printf '[%s %4ds] %s\n' "$WV_TEST_NAME" "$SECONDS" "$*"
}

wv__log_tails() {
  local f
  [[ -n $WV_TMP && -d $WV_TMP ]] || return 0
  for f in "$WV_TMP"/*.log; do
    [[ -f $f ]] || continue
    echo "----- last 40 lines of $f" >&2
    tail -n 40 "$f" >&2 || true
  done
}

# wv_fail MESSAGE: report the failure with every server log's tail, exit 1.
wv_fail() {
  echo "FAIL $WV_TEST_NAME: $*" >&2
  wv__log_tails
  WV__FAIL_REPORTED=1
  exit 1
}

# wv_skip REASON: end the test as skipped (exit 77, which ctest reports as "Skipped").
wv_skip() {
  echo "SKIP $WV_TEST_NAME: $*"
  WV__SKIPPED=1
  exit 77
}

# wv_assert_eq EXPECTED ACTUAL MESSAGE
wv_assert_eq() {
  if [[ $1 != "$2" ]]; then
    wv_fail "${3:-values differ}: expected '$1', got '$2'"
  fi
}

# wv_assert_contains HAYSTACK NEEDLE MESSAGE
wv_assert_contains() {
  if [[ $1 != *"$2"* ]]; then
    wv_fail "${3:-missing text}: '$1' does not contain '$2'"
  fi
}

# wv_assert_fails CMD...: CMD must exit non-zero. Its stderr is kept in $WV_LAST_STDERR
# (and its status in $WV_LAST_STATUS); its stdout passes through.
wv_assert_fails() {
  local errfile
  errfile=$(mktemp "${WV_TMP:-/tmp}/stderr.XXXXXX")
  WV_LAST_STATUS=0
  ("$@") 2>"$errfile" || WV_LAST_STATUS=$?
  WV_LAST_STDERR=$(cat "$errfile")
  rm -f "$errfile"
  if ((WV_LAST_STATUS == 0)); then
    wv_fail "expected failure, but it succeeded: $*${WV_LAST_STDERR:+ (stderr: $WV_LAST_STDERR)}"
  fi
}

# ---------------------------------------------------------------------------------------
# Running as an unprivileged user (PostgreSQL refuses to run as root)

wv__ensure_test_user() {
  local i
  for i in 1 2 3 4 5 6 7 8 9 10; do
    id -u "$WV_TEST_USER" >/dev/null 2>&1 && return 0
    # Two tests may race here (ctest -j2); useradd fails while the other holds the lock.
    useradd --system --create-home --shell /bin/bash "$WV_TEST_USER" >/dev/null 2>&1 && return 0
    sleep "0.$i"
  done
  id -u "$WV_TEST_USER" >/dev/null 2>&1 ||
    wv_fail "cannot create system user $WV_TEST_USER (useradd failed)"
}

# A clone the test user cannot read (CI may clone under /root): copy the test scripts and
# the binary to a world-readable place under /tmp, the same for every test of one build.
# The S3 server and proxy (tests/s3, with its node_modules) go along when installed.
wv__stage_for_test_user() {
  local stage s3_files=()
  [[ -f $WV_S3_DIR/proxy.js ]] && s3_files=("$WV_S3_DIR/proxy.js" "$WV_S3_DIR/package-lock.json")
  [[ -f $WV_S3_DIR/node_modules/.walvault-lock-sha256 ]] && s3_files+=("$WV_S3_DIR/node_modules/.walvault-lock-sha256")
  stage=/tmp/walvault-stage-$(cat "$WV_LIB_DIR"/*.sh "$WV_LIB_DIR/../../README.md" "${s3_files[@]}" "${WALVAULT_BIN:-/dev/null}" 2>/dev/null | md5sum | cut -c1-12)
  if [[ ! -d $stage ]]; then
    mkdir -p "$stage.$$/integration"
    cp "$WV_LIB_DIR"/*.sh "$stage.$$/integration/"
    cp "$WV_LIB_DIR/../../README.md" "$stage.$$/integration/" 2>/dev/null || true # the tour test reads it
    [[ -z ${WALVAULT_BIN:-} ]] || cp "$WALVAULT_BIN" "$stage.$$/walvault"
    [[ ${#s3_files[@]} == 0 ]] || cp -a "$WV_S3_DIR" "$stage.$$/s3"
    chmod -R a+rX "$stage.$$"
    mv -T "$stage.$$" "$stage" 2>/dev/null || rm -rf "$stage.$$"
  fi
  script=$stage/integration/$(basename "$script")
  [[ -z ${WALVAULT_BIN:-} ]] || WALVAULT_BIN=$stage/walvault
  export WALVAULT_BIN
}

# wv_drop_root "$@": when running as root, re-run the calling script as $WV_TEST_USER.
wv_drop_root() {
  ((EUID == 0)) || return 0
  local script home var
  script=$(readlink -f "$0")
  command -v runuser >/dev/null || wv_fail "runuser not found (Debian package util-linux)"
  wv__ensure_test_user
  if [[ -n ${WALVAULT_BIN:-} ]]; then
    [[ -x $WALVAULT_BIN ]] || wv_fail "WALVAULT_BIN=$WALVAULT_BIN is not an executable file (build first: scripts/build.sh)"
  fi
  if ! runuser -u "$WV_TEST_USER" -- test -r "$script" -a -r "$WV_LIB_DIR/lib.sh" ||
    { [[ -n ${WALVAULT_BIN:-} ]] && ! runuser -u "$WV_TEST_USER" -- test -x "$WALVAULT_BIN"; } ||
    { [[ -f $WV_S3_DIR/proxy.js ]] && ! runuser -u "$WV_TEST_USER" -- test -r "$WV_S3_DIR/proxy.js"; }; then
    wv__stage_for_test_user
  fi
  home=$(getent passwd "$WV_TEST_USER" | cut -d: -f6)
  local -a envs=("HOME=$home" "USER=$WV_TEST_USER" "LOGNAME=$WV_TEST_USER")
  for var in PATH ASAN_OPTIONS UBSAN_OPTIONS LSAN_OPTIONS CI TZ LANG LC_ALL TMPDIR; do
    [[ -n ${!var+set} ]] && envs+=("$var=${!var}")
  done
  while IFS= read -r var; do
    [[ $var == WALVAULT_* || $var == WV_* || $var == AWS_* ]] && envs+=("$var=${!var}")
  done < <(compgen -e)
  cd / # the caller's directory may be closed to the test user
  exec runuser -u "$WV_TEST_USER" -- env "${envs[@]}" bash "$script" "$@"
}

# ---------------------------------------------------------------------------------------
# Temporary directory and cleanup

# wv_tmpdir: create $WV_TMP (under /tmp: socket paths must stay short) and install the
# EXIT trap that stops every server and background process and removes $WV_TMP.
wv_tmpdir() {
  [[ -z $WV_TMP ]] || return 0
  if ((BASH_SUBSHELL > 0)); then
    echo "wv_tmpdir must not run in a subshell; call it directly, then use \$WV_TMP" >&2
    exit 1
  fi
  WV_TMP=$(mktemp -d /tmp/wv.XXXXXXXX)
  export WV_TMP
  trap wv__on_exit EXIT
  trap 'exit 130' INT
  trap 'exit 143' TERM
}

wv__need_tmp() {
  [[ -n $WV_TMP ]] || wv_fail "call wv_tmpdir first"
}

wv__on_exit() {
  local status=$?
  set +e
  [[ $BASHPID == "$WV__MAIN_PID" ]] || return "$status"
  trap - EXIT INT TERM
  if ((status != 0)) && [[ -z $WV__FAIL_REPORTED && -z $WV__SKIPPED ]]; then
    echo "FAIL $WV_TEST_NAME (exit status $status)" >&2
    wv__log_tails
  fi
  wv__stop_everything
  wv__release_ports
  if [[ -n $WV_TMP && -d $WV_TMP ]]; then
    if [[ ${WV_KEEP_TMP:-0} == 1 ]]; then
      echo "kept $WV_TMP" >&2
    else
      rm -rf "$WV_TMP"
    fi
  fi
  if ((status == 0)); then
    echo "PASS $WV_TEST_NAME"
  fi
  exit "$status"
}

wv__gone() { # PID: exited (a zombie counts: our own children stay zombies until reaped)
  ! kill -0 "$1" 2>/dev/null || [[ $(awk '{print $3}' "/proc/$1/stat" 2>/dev/null) == Z ]]
}

wv__stop_everything() {
  local pid name dir i
  for pid in "${WV__BG_PIDS[@]}"; do
    kill -TERM "$pid" 2>/dev/null
  done
  for name in "${WV__STARTED[@]}"; do
    dir=${WV_PGDATA[$name]}
    [[ -f $dir/postmaster.pid ]] || continue
    if ! "$WV_PGBIN/pg_ctl" -D "$dir" -m immediate -w -t 30 stop >/dev/null 2>&1; then
      pid=$(head -n 1 "$dir/postmaster.pid" 2>/dev/null)
      [[ $pid =~ ^[0-9]+$ ]] && kill -KILL "$pid" 2>/dev/null
    fi
  done
  for pid in "${WV__BG_PIDS[@]}"; do
    for i in 1 2 3 4 5 6 7 8 9 10; do
      wv__gone "$pid" && break
      sleep 0.2
    done
    kill -KILL "$pid" 2>/dev/null
  done
  return 0
}

# wv_bg NAME CMD...: start CMD in the background, output in $WV_TMP/NAME.log (shown on
# failure); it is stopped (TERM, then KILL) when the test exits. Its pid is in $WV_LAST_PID.
# (So a test waits for its own background jobs by pid: a bare `wait` would also wait for
# every wv_bg process, such as the S3 server, and never return.)
wv_bg() {
  wv__need_tmp
  local name=$1
  shift
  "$@" </dev/null >"$WV_TMP/$name.log" 2>&1 &
  WV_LAST_PID=$!
  WV__BG_PIDS+=("$WV_LAST_PID")
}

# ---------------------------------------------------------------------------------------
# Ports

wv__port_listening() {
  timeout 2 bash -c "exec 3<>/dev/tcp/127.0.0.1/$1" 2>/dev/null
}

# wv_free_port: print a free TCP port on 127.0.0.1. Ports are taken below the kernel's
# ephemeral range and reserved under $WV_PORT_DIR until this test exits, so tests
# running in parallel never pick the same one.
wv_free_port() {
  local port owner i
  { mkdir -p "$WV_PORT_DIR" && chmod 1777 "$WV_PORT_DIR"; } 2>/dev/null || true
  [[ -d $WV_PORT_DIR && -w $WV_PORT_DIR ]] || {
    echo "wv_free_port: cannot write $WV_PORT_DIR" >&2
    return 1
  }
  for ((i = 0; i < 500; i++)); do
    port=$((20000 + RANDOM % 12000))
    if ! mkdir "$WV_PORT_DIR/$port" 2>/dev/null; then
      owner=$(cat "$WV_PORT_DIR/$port/pid" 2>/dev/null || true)
      # A reservation whose owner is gone (killed test) is stale: take it over.
      [[ -n $owner && ! -d /proc/$owner ]] || continue
      rm -rf "${WV_PORT_DIR:?}/$port" 2>/dev/null || continue
      mkdir "$WV_PORT_DIR/$port" 2>/dev/null || continue
    fi
    echo "$WV__MAIN_PID" >"$WV_PORT_DIR/$port/pid"
    if wv__port_listening "$port"; then
      continue # in use by something else; keep the reservation so no one retries it
    fi
    echo "$port"
    return 0
  done
  echo "wv_free_port: no free port found" >&2
  return 1
}

wv__release_ports() {
  local d
  for d in "$WV_PORT_DIR"/*/; do
    [[ -f $d/pid && $(cat "$d/pid" 2>/dev/null) == "$WV__MAIN_PID" ]] && rm -rf "$d"
  done
  return 0
}

# ---------------------------------------------------------------------------------------
# PostgreSQL servers. Each has a NAME; data in $WV_TMP/NAME (or the directory given to
# wv_pg_start_restored), log in $WV_TMP/NAME.log, socket in $WV_TMP, port ${WV_PORT[NAME]}.

wv__pg_known() {
  [[ -n ${WV_PGDATA[$1]:-} ]] || wv_fail "no server named '$1' (wv_pg_init or wv_pg_start_restored first)"
}

# pg_ctl for starting a server. When walvault can take every S3 setting from its command
# line and config file (WV_S3_CONF_HAS_CREDS=1), the server starts without the S3
# variables in its environment, as under systemd: archive_command and restore_command
# must then work from their own words, which is what the tests should prove.
wv__pg_ctl() {
  if [[ ${WV_S3_CONF_HAS_CREDS:-0} == 1 ]]; then
    env -u AWS_ACCESS_KEY_ID -u AWS_SECRET_ACCESS_KEY -u AWS_SESSION_TOKEN -u AWS_REGION \
      -u AWS_DEFAULT_REGION -u WALVAULT_S3_ENDPOINT -u WALVAULT_S3_URI_STYLE -u WALVAULT_S3_REGION \
      "$WV_PGBIN/pg_ctl" "$@"
  else
    "$WV_PGBIN/pg_ctl" "$@"
  fi
}

# wv_pg_init NAME [initdb args...]
wv_pg_init() {
  wv__need_tmp
  local name=$1 dir port
  shift
  [[ -z ${WV_PGDATA[$name]:-} ]] || wv_fail "wv_pg_init: server '$name' already exists"
  dir=$WV_TMP/$name
  port=$(wv_free_port) || wv_fail "wv_pg_init $name: no free port"
  wv_step "initdb $name (port $port)"
  if ! "$WV_PGBIN/initdb" -D "$dir" --data-checksums -A trust -U postgres -E UTF8 --locale=C \
    "$@" </dev/null >"$WV_TMP/$name.initdb.out" 2>&1; then
    cat "$WV_TMP/$name.initdb.out" >&2
    wv_fail "initdb failed for $name"
  fi
  WV_PGDATA[$name]=$dir
  WV_PORT[$name]=$port
  # fsync stays on: the tests check durability.
  cat >>"$dir/postgresql.conf" <<CONF

# --- tests/integration/lib.sh
listen_addresses = '127.0.0.1'
port = $port
unix_socket_directories = '$WV_TMP'
wal_level = replica
max_wal_senders = 5
archive_mode = on
shared_buffers = 32MB
max_wal_size = 1GB
CONF
}

# wv_pg_conf NAME 'key = value'...: append settings to NAME's postgresql.conf (later lines
# win). Takes effect at the next start, or after wv_pg_reload for reloadable settings.
wv_pg_conf() {
  wv__pg_known "$1"
  local name=$1 line
  shift
  for line in "$@"; do
    if [[ $line =~ ^[[:space:]]*fsync[[:space:]]*=?[[:space:]]*\'?(off|false|no|0) ]]; then
      wv_fail "wv_pg_conf: fsync=off is not allowed (the tests check durability)"
    fi
    printf '%s\n' "$line" >>"${WV_PGDATA[$name]}/postgresql.conf"
  done
}

wv_pg_reload() {
  wv__pg_known "$1"
  "$WV_PGBIN/pg_ctl" -D "${WV_PGDATA[$1]}" reload >/dev/null || wv_fail "reload of $1 failed"
}

# wv_pg_start NAME: start and wait until it accepts connections.
wv_pg_start() {
  wv__pg_known "$1"
  local name=$1
  wv_step "start $name"
  WV__STARTED+=("$name")
  if ! wv__pg_ctl -D "${WV_PGDATA[$name]}" -l "$WV_TMP/$name.log" -w -t 60 start \
    </dev/null >/dev/null 2>&1; then
    wv_fail "server $name did not start"
  fi
  wv_pg_wait_ready "$name"
}

# wv_pg_stop NAME [smart|fast|immediate]
wv_pg_stop() {
  wv__pg_known "$1"
  local name=$1 mode=${2:-fast}
  wv_step "stop $name ($mode)"
  if ! "$WV_PGBIN/pg_ctl" -D "${WV_PGDATA[$name]}" -m "$mode" -w -t 60 stop </dev/null >/dev/null 2>&1; then
    wv_fail "server $name did not stop ($mode)"
  fi
}

# wv_pg_running NAME: true while NAME's postmaster runs.
wv_pg_running() {
  wv__pg_known "$1"
  "$WV_PGBIN/pg_ctl" -D "${WV_PGDATA[$1]}" status >/dev/null 2>&1
}

# wv_pg_wait_ready NAME: wait (60 s at most) until NAME accepts connections.
wv_pg_wait_ready() {
  wv__pg_known "$1"
  local name=$1 deadline=$((SECONDS + 60))
  until "$WV_PGBIN/pg_isready" -q -h "$WV_TMP" -p "${WV_PORT[$name]}" -U postgres -d postgres -t 2; do
    ((SECONDS < deadline)) || wv_fail "server $name not ready after 60 s"
    sleep 0.2
  done
}

# wv_psql NAME SQL [psql args...]: run SQL, print unaligned tuples only; fails on error.
wv_psql() {
  wv__pg_known "$1"
  local name=$1 sql=$2
  shift 2
  "$WV_PGBIN/psql" -XAtq -h "$WV_TMP" -p "${WV_PORT[$name]}" -U postgres -d postgres \
    -v ON_ERROR_STOP=1 "$@" -c "$sql" </dev/null
}

# wv_pg_standby_wait NAME APP STATE PID [SECONDS]: until NAME streams to a walsender whose
# application_name is APP, in sync_state STATE (sync, async, ...; "any": any state); fails
# at once when PID (the process streaming) has exited, and after SECONDS (default 30).
wv_pg_standby_wait() {
  wv__pg_known "$1"
  local name=$1 app=$2 want=$3 pid=$4 deadline=$((SECONDS + ${5:-30})) got
  while :; do
    got=$(wv_psql "$name" "SELECT sync_state FROM pg_stat_replication
                           WHERE application_name = '$app' AND state = 'streaming'" 2>/dev/null || true)
    [[ $got == "$want" || ($want == any && -n $got) ]] && return 0
    wv__gone "$pid" && wv_fail "the process streaming as $app (pid $pid) exited before streaming from $name"
    ((SECONDS < deadline)) || wv_fail "$name does not stream to $app ($want) after ${5:-30} s"
    sleep 0.1
  done
}

# wv_pg_conninfo NAME: libpq connection string for NAME.
wv_pg_conninfo() {
  wv__pg_known "$1"
  echo "host=$WV_TMP port=${WV_PORT[$1]} user=postgres dbname=postgres"
}

# wv_pg_archive_wait NAME: switch to a new WAL segment and wait (60 s at most) until the
# finished one has been archived; fails early if archive_command fails for it.
wv_pg_archive_wait() {
  wv__pg_known "$1"
  local name=$1 seg state failing_since="" deadline=$((SECONDS + 60))
  seg=$(wv_psql "$name" "SELECT pg_walfile_name(pg_switch_wal())")
  wv_step "wait until $name has archived $seg"
  while :; do
    state=$(wv_psql "$name" "SELECT coalesce(last_archived_wal, '') >= '$seg',
                                    coalesce(last_failed_wal, '') = '$seg'
                             FROM pg_stat_archiver")
    case $state in
      t\|*) return 0 ;;
      f\|t) # archive_command failed for it; PostgreSQL retries, but not for long
        failing_since=${failing_since:-$SECONDS}
        ((SECONDS - failing_since < 15)) || wv_fail "archive_command of $name keeps failing for $seg"
        ;;
      *) failing_since="" ;;
    esac
    ((SECONDS < deadline)) || wv_fail "$name did not archive $seg within 60 s"
    sleep 0.2
  done
}

# wv_pg_start_restored DIR NAME ['key = value'...]: start the restored data directory DIR
# as server NAME on a fresh port (port and socket directory rewritten in
# postgresql.auto.conf, plus any extra settings given), then wait (120 s at most) until
# recovery has finished: pg_is_in_recovery() is false, or replay paused at the target.
# A server that shuts down at its recovery target (recovery_target_action = shutdown) also
# counts as finished; check with wv_pg_running.
wv_pg_start_restored() {
  wv__need_tmp
  local dir=$1 name=$2 port auto pid="" state line deadline=$((SECONDS + 120))
  shift 2
  [[ -f $dir/PG_VERSION ]] || wv_fail "$dir is not a PostgreSQL data directory"
  [[ -z ${WV_PGDATA[$name]:-} ]] || wv_fail "wv_pg_start_restored: server '$name' already exists"
  port=$(wv_free_port) || wv_fail "wv_pg_start_restored $name: no free port"
  dir=$(cd "$dir" && pwd)
  WV_PGDATA[$name]=$dir
  WV_PORT[$name]=$port
  chmod 0700 "$dir"
  auto=$dir/postgresql.auto.conf
  if [[ -f $auto ]]; then
    grep -Ev '^[[:space:]]*(port|unix_socket_directories|listen_addresses)[[:space:]]*=' \
      "$auto" >"$auto.wv-tmp" || true
    mv "$auto.wv-tmp" "$auto"
  fi
  {
    echo "listen_addresses = '127.0.0.1'"
    echo "port = $port"
    echo "unix_socket_directories = '$WV_TMP'"
    for line in "$@"; do echo "$line"; done
  } >>"$auto"
  wv_step "start restored $name from $dir (port $port), wait for recovery"
  WV__STARTED+=("$name")
  wv__pg_ctl -D "$dir" -l "$WV_TMP/$name.log" -W start </dev/null >/dev/null 2>&1 ||
    wv_fail "restored server $name did not start"
  while :; do
    if [[ -z $pid && -f $dir/postmaster.pid ]]; then
      pid=$(head -n 1 "$dir/postmaster.pid" 2>/dev/null || true)
    fi
    if [[ -n $pid ]] && ! kill -0 "$pid" 2>/dev/null; then
      if grep -q 'shutdown at recovery target' "$WV_TMP/$name.log" 2>/dev/null; then
        wv_step "restored $name shut down at its recovery target"
        return 0
      fi
      wv_fail "restored server $name exited during recovery"
    fi
    state=$(wv_psql "$name" "SELECT CASE WHEN NOT pg_is_in_recovery() THEN 'done'
                                         WHEN pg_get_wal_replay_pause_state() = 'paused' THEN 'paused'
                                         ELSE 'recovering' END" 2>/dev/null || true)
    case $state in
      done | paused)
        wv_step "restored $name: recovery $state"
        return 0
        ;;
    esac
    ((SECONDS < deadline)) || wv_fail "restored server $name did not finish recovery within 120 s"
    sleep 0.5
  done
}

# ---------------------------------------------------------------------------------------
# walvault

# wv_repo_setup: choose this test's repository and key file. WV_REPO_URL (default
# file://$WV_TMP/repo) is a base: a test given one gets its own location under it
# (WV_REPO_URL/<test>-<pid>), so tests can share one bucket and run in parallel.
# With WV_REPO_KIND=s3 it first starts this test's own S3 server (wv_s3_start), and skips
# the test when the walvault binary has no s3:// support yet.
wv_repo_setup() {
  wv__need_tmp
  if [[ ${WV_REPO_KIND:-file} == s3 ]]; then
    wv_s3_start
  elif [[ ${WV_REPO_KIND:-file} != file ]]; then
    wv_fail "WV_REPO_KIND must be file or s3, not '$WV_REPO_KIND'"
  fi
  if [[ -n ${WV_REPO_URL:-} ]]; then
    WV_REPO=${WV_REPO_URL%/}/$WV_TEST_NAME-$WV__MAIN_PID
  else
    WV_REPO=file://$WV_TMP/repo
  fi
  WV_KEY=$WV_TMP/repo.key
  export WV_REPO WV_KEY
  [[ $WV_REPO != s3://* ]] || wv__s3_skip_unless_supported
}

wv__need_bin() {
  [[ -n ${WALVAULT_BIN:-} && -x $WALVAULT_BIN ]] ||
    wv_fail "WALVAULT_BIN (${WALVAULT_BIN:-unset}) is not an executable walvault binary"
}

# wv__repo_args: print, one per line, the options every walvault command of this test
# gets: --repo, --key-file, --node, and for an s3:// repository started by wv_s3_start the
# S3 settings as flags and the credentials in a config file (mode 0600: secrets never go
# into a process's arguments, which every user can read).
wv__repo_args() {
  printf '%s\n' --repo "$WV_REPO" --key-file "$WV_KEY" --node "${WV_NODE:-default}"
  if [[ $WV_REPO == s3://* && -n $WV_S3_CONF ]]; then
    printf '%s\n' --config "$WV_S3_CONF" --s3-endpoint "$WV_S3_ENDPOINT" \
      --s3-region "$WV_S3_REGION" --s3-uri-style path
  fi
}

# wv_run ARGS...: run walvault with this test's --repo, --key-file and --node (and the
# S3 settings, see wv__repo_args).
wv_run() {
  wv__need_bin
  [[ -n $WV_REPO ]] || wv_fail "call wv_repo_setup before wv_run"
  local -a common
  mapfile -t common < <(wv__repo_args)
  "$WALVAULT_BIN" "${common[@]}" "$@"
}

# wv_repo_init: create this test's key file and repository.
wv_repo_init() {
  wv__need_bin
  [[ -n $WV_REPO ]] || wv_fail "call wv_repo_setup before wv_repo_init"
  wv_step "keygen and init $WV_REPO"
  "$WALVAULT_BIN" keygen --out "$WV_KEY" >/dev/null || wv_fail "walvault keygen failed"
  wv_run init >/dev/null || wv_fail "walvault init failed for $WV_REPO"
}

# wv_walvault_cmd ARGS...: print a walvault command line for a PostgreSQL setting
# (archive_command, restore_command); the words must need no quoting. PostgreSQL runs it
# with the server's environment, so everything walvault needs is in the words (for S3: the
# settings as flags, the credentials in the config file; see wv__repo_args).
wv_walvault_cmd() {
  wv__need_bin
  local word out="$WALVAULT_BIN" common
  mapfile -t common < <(wv__repo_args)
  for word in "${common[@]}" "$@"; do out+=" $word"; done
  [[ $out =~ ^[A-Za-z0-9_./:@%+=,\ -]+$ ]] ||
    wv_fail "cannot put this command into a PostgreSQL setting without quoting: $out"
  echo "$out"
}

# wv_pg_archive_to_repo NAME: archive NAME's WAL with walvault wal-push (takes effect at
# the next start or wv_pg_reload).
wv_pg_archive_to_repo() {
  local cmd
  cmd=$(wv_walvault_cmd wal-push %p)
  wv_pg_conf "$1" "archive_command = '$cmd'"
}

# ---------------------------------------------------------------------------------------
# Where a repository's objects live, for tests that damage or inspect them (file:// and
# the s3:// repositories of wv_s3_start alike). OBJECT names are relative to the
# repository's root, e.g. nodes/default/node.json.

# wv_repo_dir URL: print the directory holding URL's bytes on this machine (for grep): the
# directory of a file:// repository, s3rver's directory for the prefix of an s3:// one.
wv_repo_dir() {
  local url=$1 rest
  case $url in
    file://*) echo "${url#file://}" ;;
    s3://*)
      [[ -n $WV_S3_DATA ]] || wv_fail "wv_repo_dir $url: not a repository of this test's s3rver"
      rest=${url#s3://}
      echo "$WV_S3_DATA/${rest%/}"
      ;;
    *) wv_fail "wv_repo_dir: unknown repository URL $url" ;;
  esac
}

# wv_repo_objects [-s] URL [PREFIX]: print the names of URL's objects whose names start
# with PREFIX, sorted; with -s, each as "SIZE NAME".
wv_repo_objects() {
  local sizes=0 url prefix dir
  [[ $1 != -s ]] || {
    sizes=1
    shift
  }
  url=$1 prefix=${2:-}
  dir=$(wv_repo_dir "$url")
  [[ -d $dir ]] || return 0
  case $url in
    file://*) (cd "$dir" && find . -type f -printf '%s %P\n') ;;
    s3://*) (cd "$dir" && find . -type f -name "*$WV__S3_OBJECT_SUFFIX" -printf '%s %P\n' |
      sed "s/${WV__S3_OBJECT_SUFFIX//./\\.}\$//") ;;
  esac | awk -v p="$prefix" -v sizes="$sizes" '{
      name = substr($0, index($0, " ") + 1)
      if (index(name, p) == 1) print (sizes ? $1 " " : "") name
    }' | LC_ALL=C sort -k "$((sizes + 1))"
}

# wv_repo_object_file URL OBJECT: print the file that holds OBJECT's bytes.
wv_repo_object_file() {
  local url=$1 object=$2 file
  file=$(wv_repo_dir "$url")/$object
  [[ $url != s3://* ]] || file+=$WV__S3_OBJECT_SUFFIX
  [[ -f $file ]] || wv_fail "no object $object in $url ($file)"
  echo "$file"
}

# wv_repo_copy URL NAME: copy repository URL to a new one beside it named NAME; print the
# new URL (file://$WV_TMP/NAME, or s3://BUCKET/NAME in the same bucket).
wv_repo_copy() {
  local url=$1 name=$2 src dst
  src=$(wv_repo_dir "$url")
  case $url in
    file://*) dst=$WV_TMP/$name ;;
    s3://*)
      dst=$WV_S3_DATA/$WV_S3_BUCKET/$name
      [[ $url == "s3://$WV_S3_BUCKET/"* ]] || wv_fail "wv_repo_copy: $url is not in bucket $WV_S3_BUCKET"
      ;;
  esac
  [[ ! -e $dst ]] || wv_fail "wv_repo_copy: $dst exists already"
  cp -a "$src" "$dst" || wv_fail "wv_repo_copy: cannot copy $src to $dst"
  case $url in
    file://*) echo "file://$dst" ;;
    s3://*) echo "s3://$WV_S3_BUCKET/$name" ;;
  esac
}

# wv_repo_flip URL OBJECT: flip one byte in the middle of OBJECT, as an attacker or a bad
# disk would. In s3rver the object's stored MD5 goes too, so the store recomputes its
# ETag: the damage looks like an object rewritten through the API, not like bit rot the
# store itself could notice.
wv_repo_flip() {
  local file size off byte
  file=$(wv_repo_object_file "$1" "$2")
  size=$(stat -c %s "$file")
  ((size > 0)) || wv_fail "wv_repo_flip: $2 is empty"
  off=$((size / 2))
  byte=$(od -An -tu1 -j "$off" -N1 "$file" | tr -d ' ')
  # shellcheck disable=SC2059 # the format is the octal escape built here
  printf "$(printf '\\%03o' $(((byte + 1) % 256)))" | dd of="$file" bs=1 seek="$off" conv=notrunc status=none
  [[ $1 != s3://* ]] || rm -f "$file.md5"
}

# ---------------------------------------------------------------------------------------
# S3: s3rver (tests/s3/node_modules, pinned in tests/s3/package-lock.json) behind
# tests/s3/proxy.js, which checks every request's SigV4 signature and payload hash like S3,
# injects faults on command, and makes up for what s3rver lacks (If-None-Match: *,
# AbortMultipartUpload, InvalidPart, atomic PUT). See the comment at the top of proxy.js.
#
#   wv_s3_start             start this test's pair (once; wv_repo_setup does it when
#                           WV_REPO_KIND=s3) and export:
#                             AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY  (random, per test)
#                             AWS_REGION, AWS_DEFAULT_REGION            ($WV_S3_REGION)
#                             WALVAULT_S3_ENDPOINT=http://127.0.0.1:PORT  (the proxy)
#                             WALVAULT_S3_URI_STYLE=path
#                             WV_REPO_URL=s3://$WV_S3_BUCKET
#                           and set WV_S3_ENDPOINT, WV_S3_CONTROL (control API URL),
#                           WV_S3_DATA (s3rver's data directory), WV_S3_CONF (config file
#                           with the credentials, 0600), WV_S3_S3RVER (s3rver's own URL,
#                           which checks no signature: for looking behind the proxy)
#   wv_s3_fault JSON        add a fault rule (or a JSON array of rules); prints the ids
#   wv_s3_faults_clear      remove every rule
#   wv_s3_fault_log         print what was injected (JSON array)
#   wv_s3_injected          print how many faults were injected so far
#   wv_s3_requests          print the proxy's log of requests (JSON array)
#   wv_s3_setting NAME VAL  change a proxy setting: if_none_match true|false (false: the
#                           store ignores If-None-Match), min_part_size BYTES
#   wv_s3_pending_uploads   print the number of multipart uploads neither completed nor
#                           aborted
#   wv_aws ARGS...          Debian's awscli (/usr/bin/aws) against the proxy, configured
#                           by the environment only
#
# s3rver's layout on disk (WV_S3_DATA): BUCKET/<key's directories>/<last part of the
# key>._S3rver_object holds an object's bytes, with .._S3rver_object.md5 (its ETag, made
# again when missing) and .._S3rver_metadata.json beside it; unfinished multipart uploads
# are BUCKET/._S3rver_uploads/<uploadId>/ with one file per part number.

WV_S3_BUCKET=${WV_S3_BUCKET:-walvault-test}
WV_S3_REGION=${WV_S3_REGION:-eu-west-3} # not us-east-1: a default region must not pass by luck
WV_S3_STAGING_BUCKET=wvtest-staging     # where proxy.js lets a PUT arrive before renaming it
WV__S3_OBJECT_SUFFIX=._S3rver_object
WV_S3_ENDPOINT=""
WV_S3_CONTROL=""
WV_S3_DATA=""
WV_S3_CONF=""
WV_S3_S3RVER=""
WV_S3_CONF_HAS_CREDS=0
# The config file keys walvault is expected to take the credentials from.
WV_S3_CONF_KEY_ID=${WV_S3_CONF_KEY_ID:-s3-access-key-id}
WV_S3_CONF_SECRET=${WV_S3_CONF_SECRET:-s3-secret-access-key}

wv__s3_random() { # N: N random lowercase hex digits
  od -An -tx1 -N"$((($1 + 1) / 2))" /dev/urandom | tr -d ' \n' | cut -c1-"$1"
}

wv_s3_start() {
  wv__need_tmp
  [[ -z $WV_S3_ENDPOINT ]] || return 0
  if ((BASH_SUBSHELL > 0)); then
    wv_fail "wv_s3_start must not run in a subshell: it records what the EXIT trap stops"
  fi
  command -v node >/dev/null || wv_fail "node not found: run scripts/install-deps.sh (Debian packages nodejs, npm)"
  command -v curl >/dev/null || wv_fail "curl not found: run scripts/install-deps.sh"
  local s3rver=$WV_S3_DIR/node_modules/s3rver/bin/s3rver.js
  [[ -f $s3rver ]] || wv_fail "s3rver is not installed under $WV_S3_DIR/node_modules: run scripts/install-deps.sh"
  local s3port proxyport ctlport major s3pid proxypid deadline=$((SECONDS + 30))
  s3port=$(wv_free_port) || wv_fail "wv_s3_start: no free port"
  proxyport=$(wv_free_port) || wv_fail "wv_s3_start: no free port"
  ctlport=$(wv_free_port) || wv_fail "wv_s3_start: no free port"
  major=$(node -p 'process.versions.node.split(".")[0]')
  ((major >= 16)) || wv_fail "node $(node --version) is too old for tests/s3/proxy.js (16 or later)"
  WV_S3_DATA=$WV_TMP/s3rver
  mkdir -p "$WV_S3_DATA"

  # A fresh key pair per test; whatever AWS settings the caller had must not leak in.
  unset AWS_SESSION_TOKEN AWS_PROFILE AWS_DEFAULT_PROFILE AWS_ENDPOINT_URL AWS_CA_BUNDLE
  AWS_ACCESS_KEY_ID=AKIAWVTEST$(wv__s3_random 10 | tr 'a-f' 'A-F')
  AWS_SECRET_ACCESS_KEY=wvtest$(wv__s3_random 34)
  export AWS_ACCESS_KEY_ID AWS_SECRET_ACCESS_KEY
  export AWS_REGION=$WV_S3_REGION AWS_DEFAULT_REGION=$WV_S3_REGION
  export AWS_CONFIG_FILE=/dev/null AWS_SHARED_CREDENTIALS_FILE=/dev/null AWS_EC2_METADATA_DISABLED=true

  wv_step "start s3rver (port $s3port) behind proxy.js (port $proxyport, control $ctlport)"
  # s3rver's ListObjectsV2 continuation tokens use a cipher that OpenSSL 3 keeps in its
  # legacy provider: without it, paging fails. Node 16 (OpenSSL 1.1) has no such flag.
  local -a node_env=()
  ((major < 17)) || node_env=(NODE_OPTIONS=--openssl-legacy-provider)
  wv_bg s3rver env "${node_env[@]}" node "$s3rver" --silent -d "$WV_S3_DATA" -a 127.0.0.1 \
    -p "$s3port" --configure-bucket "$WV_S3_BUCKET" --configure-bucket "$WV_S3_STAGING_BUCKET"
  s3pid=$WV_LAST_PID
  wv_bg s3proxy node "$WV_S3_DIR/proxy.js" --port "$proxyport" --control-port "$ctlport" \
    --upstream-port "$s3port" --data-dir "$WV_S3_DATA" --staging-bucket "$WV_S3_STAGING_BUCKET" \
    --region "$WV_S3_REGION"
  proxypid=$WV_LAST_PID
  WV_S3_ENDPOINT=http://127.0.0.1:$proxyport
  WV_S3_CONTROL=http://127.0.0.1:$ctlport
  WV_S3_S3RVER=http://127.0.0.1:$s3port
  until curl -fsS -o /dev/null "$WV_S3_S3RVER/" 2>/dev/null &&
    curl -fsS -o /dev/null "$WV_S3_CONTROL/health" 2>/dev/null &&
    [[ -d $WV_S3_DATA/$WV_S3_BUCKET && -d $WV_S3_DATA/$WV_S3_STAGING_BUCKET ]]; do
    wv__gone "$s3pid" && wv_fail "s3rver exited at start (see s3rver.log)"
    wv__gone "$proxypid" && wv_fail "proxy.js exited at start (see s3proxy.log)"
    ((SECONDS < deadline)) || wv_fail "s3rver and proxy.js not ready within 30 s"
    sleep 0.1
  done
  export WALVAULT_S3_ENDPOINT=$WV_S3_ENDPOINT WALVAULT_S3_URI_STYLE=path
  export WV_REPO_URL=s3://$WV_S3_BUCKET
  export WV_S3_ENDPOINT WV_S3_CONTROL WV_S3_DATA WV_S3_S3RVER WV_S3_BUCKET WV_S3_REGION
  wv__s3_write_conf
}

# The credentials go into the config file only if this walvault accepts the keys there
# (it refuses unknown ones); otherwise walvault takes them from the environment, and
# PostgreSQL keeps its share of it (see wv__pg_ctl).
wv__s3_write_conf() {
  WV_S3_CONF=$WV_TMP/s3.conf
  (
    umask 077
    {
      echo "# written by tests/integration/lib.sh; mode 0600"
      echo "$WV_S3_CONF_KEY_ID = $AWS_ACCESS_KEY_ID"
      echo "$WV_S3_CONF_SECRET = $AWS_SECRET_ACCESS_KEY"
    } >"$WV_S3_CONF"
  )
  WV_S3_CONF_HAS_CREDS=1
  if [[ -z ${WALVAULT_BIN:-} || ! -x $WALVAULT_BIN ]] ||
    ! "$WALVAULT_BIN" --config "$WV_S3_CONF" --version >/dev/null 2>&1; then
    echo "# this walvault takes S3 credentials from the environment only" >"$WV_S3_CONF"
    WV_S3_CONF_HAS_CREDS=0
  fi
  export WV_S3_CONF WV_S3_CONF_HAS_CREDS
}

# Until walvault has its s3:// backend, the s3 run of a test is skipped, not failed.
wv__s3_skip_unless_supported() {
  local out
  [[ -n ${WALVAULT_BIN:-} && -x $WALVAULT_BIN ]] || return 0
  [[ -f $WV_TMP/probe.key ]] || "$WALVAULT_BIN" keygen --out "$WV_TMP/probe.key" >/dev/null 2>&1 || return 0
  out=$("$WALVAULT_BIN" --repo "s3://$WV_S3_BUCKET/wv-probe" --key-file "$WV_TMP/probe.key" list 2>&1 || true)
  rm -f "$WV_TMP/probe.key"
  [[ $out != *"not supported by this build"* ]] || wv_skip "this walvault has no s3:// support ($out)"
}

wv__s3_need() {
  [[ -n $WV_S3_CONTROL ]] || wv_fail "no S3 server in this test (wv_s3_start, or WV_REPO_KIND=s3)"
}

wv__s3_control() { # METHOD PATH [JSON]: call the control API, print its answer
  wv__s3_need
  local out status
  out=$(mktemp "$WV_TMP/control.XXXXXX")
  status=$(curl -sS -o "$out" -w '%{http_code}' -X "$1" -H 'content-type: application/json' \
    ${3:+--data-binary "$3"} "$WV_S3_CONTROL$2") || status=000
  if [[ $status != 200 ]]; then
    wv_fail "proxy control $1 $2 failed ($status): $(cat "$out")"
  fi
  cat "$out"
  rm -f "$out"
}

wv_s3_fault() {
  wv__s3_control POST /faults "$1" | python3 -c 'import json,sys; print(" ".join(map(str, json.load(sys.stdin)["ids"])))'
}

wv_s3_faults_clear() {
  wv__s3_control DELETE /faults >/dev/null
}

wv_s3_fault_log() {
  wv__s3_control GET /faults/log
}

wv_s3_injected() {
  wv_s3_fault_log | python3 -c 'import json,sys; print(len(json.load(sys.stdin)))'
}

wv_s3_requests() {
  wv__s3_control GET /requests
}

wv_s3_setting() {
  local value=$2
  [[ $value =~ ^(true|false|[0-9]+)$ ]] || wv_fail "wv_s3_setting $1: value must be true, false or a number"
  wv__s3_control POST /settings "{\"$1\": $value}" >/dev/null
}

wv_s3_pending_uploads() {
  wv__s3_need
  local dir=$WV_S3_DATA/$WV_S3_BUCKET/._S3rver_uploads
  if [[ -d $dir ]]; then
    find "$dir" -mindepth 2 -maxdepth 2 -name key | wc -l
  else
    echo 0
  fi
}

wv_aws() {
  wv__s3_need
  [[ -x /usr/bin/aws ]] || wv_fail "Debian's awscli (/usr/bin/aws) is missing: run scripts/install-deps.sh"
  AWS_PAGER="" /usr/bin/aws --endpoint-url "$WV_S3_ENDPOINT" "$@"
}
