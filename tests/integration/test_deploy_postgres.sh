#!/usr/bin/env bash
# deploy/kubernetes on a real PostgreSQL 15, without Kubernetes: the postgresql.conf and
# pg_hba.conf of the ConfigMap postgres-config load; its initdb script (run as the postgres
# image runs it) creates a coordinator role that is enough for the coordinator's work; the
# coordinator's init container writes a password file libpq accepts, whatever characters
# the password has; with them, a backup, a watermark over a password connection and a
# restore plan succeed.
# Runs once (not again against s3://): what it checks is PostgreSQL's side.
set -euo pipefail
source "$(dirname "$0")/lib.sh"

# The files under test, taken out of the manifests (as root before dropping to the test
# user, who may not be able to read the clone).
wv_deploy_extract() { # DIR: write postgresql.conf, pg_hba.conf, initdb.sh, pgpass.sh into DIR
  local root=${WALVAULT_SOURCE_DIR:-$(cd "$(dirname "$0")/../.." && pwd)}
  python3 - "$root/deploy/kubernetes" "$1" <<'PY'
import os, sys, yaml
src, dst = sys.argv[1], sys.argv[2]
def docs(name):
    with open(os.path.join(src, name)) as f:
        return [d for d in yaml.safe_load_all(f) if d]
def write(name, text):
    with open(os.path.join(dst, name), "w") as f:
        f.write(text)
pg = next(d for d in docs("postgres-config.yaml") if d["kind"] == "ConfigMap")
write("postgresql.conf", pg["data"]["postgresql.conf"])
write("pg_hba.conf", pg["data"]["pg_hba.conf"])
write("initdb.sh", pg["data"]["10-walvault.sh"])
dep = next(d for d in docs("coordinator.yaml") if d["kind"] == "Deployment")
init = next(c for c in dep["spec"]["template"]["spec"]["initContainers"] if c["name"] == "pgpass")
write("pgpass.sh", init["command"][2])
# The password the initdb script reads must be where the StatefulSet mounts it.
sts = next(d for d in docs("canton-db.yaml") if d["kind"] == "StatefulSet")
pgc = next(c for c in sts["spec"]["template"]["spec"]["containers"] if c["name"] == "postgres")
mounts = [m["mountPath"] for m in pgc["volumeMounts"]]
assert "/etc/walvault/coordinator" in mounts, "postgres does not mount /etc/walvault/coordinator"
assert "/docker-entrypoint-initdb.d" in mounts, "postgres does not mount /docker-entrypoint-initdb.d"
PY
}

if ((EUID == 0)) && [[ -z ${WV_DEPLOY_STAGE:-} ]]; then
  wv__ensure_test_user
  WV_DEPLOY_STAGE=$(mktemp -d /tmp/wv-deploy.XXXXXX)
  wv_deploy_extract "$WV_DEPLOY_STAGE" || {
    rm -rf "$WV_DEPLOY_STAGE"
    wv_fail "cannot take the files out of deploy/kubernetes"
  }
  chown -R "$WV_TEST_USER" "$WV_DEPLOY_STAGE"
  export WV_DEPLOY_STAGE
fi
wv_drop_root "$@"
wv_tmpdir
stage=$WV_TMP/deploy
if [[ -n ${WV_DEPLOY_STAGE:-} ]]; then
  mv "$WV_DEPLOY_STAGE" "$stage"
else
  mkdir "$stage"
  wv_deploy_extract "$stage" || wv_fail "cannot take the files out of deploy/kubernetes"
fi

wv_repo_setup
wv_repo_init

# ---------------------------------------------------------------------------------------
wv_step "PostgreSQL with the ConfigMap's postgresql.conf and pg_hba.conf"
WV_NODE=seq
export WV_NODE
wv_pg_init seq
pgdata=${WV_PGDATA[seq]}
# The ConfigMap's file as it is, then the test's own settings (port, socket directory,
# smaller buffers), and archive_command into this test's repository.
lib_lines=$(sed -n '/^# --- tests\/integration\/lib.sh/,$p' "$pgdata/postgresql.conf")
{
  cat "$stage/postgresql.conf"
  echo
  echo "$lib_lines"
  echo "hba_file = '$WV_TMP/pg_hba.conf'"
} >"$pgdata/postgresql.conf"
# The pod's sidecar is the OS user postgres (peer); this test runs as another user, so
# postgres is let in over the socket first. Every other line is the ConfigMap's.
{
  echo "local all postgres trust"
  echo "local replication postgres trust"
  cat "$stage/pg_hba.conf"
} >"$WV_TMP/pg_hba.conf"
wv_pg_archive_to_repo seq
wv_pg_start seq
rules=$(wv_psql seq "SELECT count(*) FROM pg_hba_file_rules WHERE error IS NOT NULL")
wv_assert_eq 0 "$rules" "pg_hba.conf lines PostgreSQL cannot use"
settings=$(wv_psql seq "SELECT count(*) FROM pg_file_settings WHERE error IS NOT NULL")
wv_assert_eq 0 "$settings" "postgresql.conf lines PostgreSQL cannot use"

wv_step "the initdb script, as the postgres image runs it"
# A password with what a password file must escape, and a quote for the SQL.
printf '%s' "pa:ss\\wo'rd-$RANDOM" >"$WV_TMP/coordinator-password"
sed "s#/etc/walvault/coordinator/password#$WV_TMP/coordinator-password#g" "$stage/initdb.sh" >"$WV_TMP/initdb.sh"
(
  export POSTGRES_USER=postgres PGHOST=$WV_TMP PGPORT=${WV_PORT[seq]}
  # shellcheck disable=SC2317 # called by the sourced script
  psql() { "$WV_PGBIN/psql" "$@"; }
  # shellcheck disable=SC1091 # docker-entrypoint.sh sources it
  source "$WV_TMP/initdb.sh"
) >"$WV_TMP/initdb.out" 2>&1 || {
  cat "$WV_TMP/initdb.out"
  wv_fail "the initdb script of postgres-config failed"
}
sync_names=$(grep -c "^synchronous_standby_names = 'walvault'" "$pgdata/postgresql.auto.conf" || true)
wv_assert_eq 1 "$sync_names" "synchronous_standby_names set by the initdb script"

wv_step "the coordinator's init container writes its password file"
sed -e "s#/etc/walvault/coordinator/password#$WV_TMP/coordinator-password#g" \
  -e "s#/run/walvault/pgpass#$WV_TMP/pgpass#g" "$stage/pgpass.sh" >"$WV_TMP/pgpass.sh"
sh -e "$WV_TMP/pgpass.sh" || wv_fail "the pgpass init container's script failed"
wv_assert_eq 600 "$(stat -c %a "$WV_TMP/pgpass")" "mode of the password file"
conninfo="host=127.0.0.1 port=${WV_PORT[seq]} dbname=postgres user=walvault_coordinator passfile=$WV_TMP/pgpass connect_timeout=10"
who=$("$WV_PGBIN/psql" -XAtq "$conninfo" -c "SELECT current_user" 2>&1) ||
  wv_fail "walvault_coordinator cannot log in with the password file: $who"
wv_assert_eq walvault_coordinator "$who" "user of the coordinator's connection"

wv_step "backup, a watermark as walvault_coordinator, and the plan"
wv_run --pg "$(wv_pg_conninfo seq)" backup --full >/dev/null || wv_fail "backup of seq failed"
printf '[node seq]\nrole = sequencer\npg = %s\narchive = command\n' "$conninfo" >"$WV_TMP/cluster.conf"
out=$(wv_run --config "$WV_TMP/cluster.conf" watermark 2>&1) ||
  wv_fail "walvault watermark as walvault_coordinator failed: $out"
echo "   $out"
out=$(wv_run --config "$WV_TMP/cluster.conf" plan --watermark latest 2>&1) ||
  wv_fail "walvault plan --watermark latest failed: $out"
wv_assert_contains "$out" "seq" "the plan names node seq"
