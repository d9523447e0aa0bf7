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
WV_PORT_DIR=/tmp/walvault-ports
WV_TMP=""
WV_REPO=""
WV_KEY=""
declare -gA WV_PORT=() WV_PGDATA=()
WV__STARTED=()  # names of servers this test started (stopped by the EXIT trap)
WV__BG_PIDS=()  # background processes started with wv_bg
WV__MAIN_PID=$BASHPID
WV__FAIL_REPORTED=""

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
wv__stage_for_test_user() {
  local stage
  stage=/tmp/walvault-stage-$(cat "$WV_LIB_DIR"/*.sh "${WALVAULT_BIN:-/dev/null}" | md5sum | cut -c1-12)
  if [[ ! -d $stage ]]; then
    mkdir -p "$stage.$$/integration"
    cp "$WV_LIB_DIR"/*.sh "$stage.$$/integration/"
    [[ -z ${WALVAULT_BIN:-} ]] || cp "$WALVAULT_BIN" "$stage.$$/walvault"
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
    { [[ -n ${WALVAULT_BIN:-} ]] && ! runuser -u "$WV_TEST_USER" -- test -x "$WALVAULT_BIN"; }; then
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
  if ((status != 0)) && [[ -z $WV__FAIL_REPORTED ]]; then
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
  if ! "$WV_PGBIN/pg_ctl" -D "${WV_PGDATA[$name]}" -l "$WV_TMP/$name.log" -w -t 60 start \
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
  "$WV_PGBIN/pg_ctl" -D "$dir" -l "$WV_TMP/$name.log" -W start </dev/null >/dev/null 2>&1 ||
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
wv_repo_setup() {
  wv__need_tmp
  if [[ -n ${WV_REPO_URL:-} ]]; then
    WV_REPO=${WV_REPO_URL%/}/$WV_TEST_NAME-$WV__MAIN_PID
  else
    WV_REPO=file://$WV_TMP/repo
  fi
  WV_KEY=$WV_TMP/repo.key
  export WV_REPO WV_KEY
}

wv__need_bin() {
  [[ -n ${WALVAULT_BIN:-} && -x $WALVAULT_BIN ]] ||
    wv_fail "WALVAULT_BIN (${WALVAULT_BIN:-unset}) is not an executable walvault binary"
}

# wv_run ARGS...: run walvault with this test's --repo, --key-file and --node.
wv_run() {
  wv__need_bin
  [[ -n $WV_REPO ]] || wv_fail "call wv_repo_setup before wv_run"
  "$WALVAULT_BIN" --repo "$WV_REPO" --key-file "$WV_KEY" --node "${WV_NODE:-default}" "$@"
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
# (archive_command, restore_command); the words must need no quoting.
wv_walvault_cmd() {
  wv__need_bin
  local word out="$WALVAULT_BIN --repo $WV_REPO --key-file $WV_KEY --node ${WV_NODE:-default}"
  for word in "$@"; do out+=" $word"; done
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
