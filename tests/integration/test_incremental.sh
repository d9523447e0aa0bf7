#!/usr/bin/env bash
# Block-level incremental backups: a full, then incrementals across pgbench load, created,
# dropped, truncated and extended files, VACUUM FULL, a database created with FILE_COPY and
# a new tablespace. Each backup restores to exactly the data it saw (md5 of ordered rows of
# every table in every database), and so does a point in time after the last incremental.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
wv_drop_root "$@"
wv_tmpdir
wv_repo_setup
wv_repo_init

wv_pg_init src
wv_pg_archive_to_repo src
wv_pg_start src
conn=$(wv_pg_conninfo src)
PGBENCH=$WV_PGBIN/pgbench

# md5 of every table's ordered rows, per database: what a restore must reproduce.
fingerprint() { # SERVER
  local db out=""
  for db in $(wv_psql "$1" "SELECT datname FROM pg_database WHERE datallowconn ORDER BY 1"); do
    out+="$db:$(wv_psql "$1" "SELECT coalesce(string_agg(t, ' ' ORDER BY t), '') FROM (
      SELECT c.relname || '=' || (xpath('/row/m/text()', query_to_xml(
        format('SELECT md5(coalesce(string_agg(x::text, '','' ORDER BY x::text), '''')) AS m FROM %I.%I x',
               n.nspname, c.relname), false, false, '')))[1]::text AS t
      FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
      WHERE c.relkind = 'r' AND n.nspname = 'public') s" -d "$db") "
  done
  echo "$out"
}
backup_field() { # ID FIELD
  wv_run list --json | python3 -c 'import json,sys; d=json.load(sys.stdin)
print([b for b in d["backups"] if b["id"]==sys.argv[1]][0][sys.argv[2]])' "$1" "$2"
}

"$PGBENCH" -i -s 3 -q -h "$WV_TMP" -p "${WV_PORT[src]}" -U postgres postgres >/dev/null 2>&1
wv_psql src "CREATE TABLE dropme AS SELECT g FROM generate_series(1, 50000) g;
             CREATE TABLE shrink AS SELECT g, repeat('x', 200) AS pad FROM generate_series(1, 50000) g;
             CREATE TABLE grow (g int, pad text)"
# Settle hint bits and visibility now, so that later backups see only the load's changes.
wv_psql src "VACUUM (FREEZE, ANALYZE)"

wv_step "full backup"
full=$(wv_run backup --pg "$conn")
wv_assert_eq full "$(backup_field "$full" type)" "type of the first backup"
fp_full=$(fingerprint src)

wv_step "load and schema changes, incremental 1"
"$PGBENCH" -c 2 -t 300 -h "$WV_TMP" -p "${WV_PORT[src]}" -U postgres postgres >/dev/null 2>&1
mkdir -p "$WV_TMP/ts2"
for sql in "DROP TABLE dropme" \
  "DELETE FROM shrink WHERE g > 1000" "VACUUM shrink" \
  "INSERT INTO grow SELECT g, repeat('y', 300) FROM generate_series(1, 30000) g" \
  "CREATE TABLE fresh AS SELECT g FROM generate_series(1, 20000) g" \
  "VACUUM FULL pgbench_branches" \
  "CREATE DATABASE copied TEMPLATE postgres STRATEGY FILE_COPY" \
  "CREATE TABLESPACE ts2 LOCATION '$WV_TMP/ts2'" \
  "CREATE TABLE in_ts2 TABLESPACE ts2 AS SELECT g FROM generate_series(1, 10000) g" \
  "CHECKPOINT"; do
  wv_psql src "$sql"
done
inc1=$(wv_run backup --incremental --pg "$conn")
fp_inc1=$(fingerprint src)
wv_assert_eq incr "$(backup_field "$inc1" type)" "type of the second backup"
wv_assert_eq "$full" "$(backup_field "$inc1" parent)" "parent of incremental 1"

wv_step "more load, incremental 2 (plain backup picks incremental)"
"$PGBENCH" -c 2 -t 300 -h "$WV_TMP" -p "${WV_PORT[src]}" -U postgres postgres >/dev/null 2>&1
wv_psql src "TRUNCATE shrink; INSERT INTO grow SELECT g, 'z' FROM generate_series(1, 5000) g"
inc2=$(wv_run backup --pg "$conn")
fp_inc2=$(fingerprint src)
wv_assert_eq "$inc1" "$(backup_field "$inc2" parent)" "parent of incremental 2"
# Reading rows sets hint bits, which are logged with checksums on: many pages really change
# between these backups. Still, most of the database must be referenced, not stored again.
inc2_new=$(backup_field "$inc2" new_bytes)
inc2_db=$(backup_field "$inc2" db_bytes)
((inc2_new * 2 < inc2_db)) ||
  wv_fail "incremental 2 stored $inc2_new of $inc2_db bytes anew: it referenced too little"

wv_step "writes after incremental 2, then a time T"
"$PGBENCH" -c 2 -t 200 -h "$WV_TMP" -p "${WV_PORT[src]}" -U postgres postgres >/dev/null 2>&1
fp_t=$(fingerprint src)
t=$(wv_psql src "SELECT clock_timestamp()")
sleep 1.1
wv_psql src "DELETE FROM pgbench_history; INSERT INTO fresh SELECT 1"
wv_pg_archive_wait src

restore_check() { # NAME EXPECTED_FINGERPRINT RESTORE_ARGS...
  local name=$1 want=$2
  shift 2
  wv_step "restore $name"
  wv_run restore --to "$WV_TMP/r_$name" --tablespace-map "$WV_TMP/ts2=$WV_TMP/ts2_$name" "$@" >/dev/null
  wv_pg_start_restored "$WV_TMP/r_$name" "r_$name" "archive_mode = off"
  wv_assert_eq "$want" "$(fingerprint "r_$name")" "tables after restoring $name"
  wv_pg_stop "r_$name"
  rm -rf "$WV_TMP/r_$name" "$WV_TMP/ts2_$name"
}
restore_check full "$fp_full" --backup "$full" --target-lsn "$(backup_field "$full" stop_lsn)"
restore_check inc1 "$fp_inc1" --backup "$inc1" --target-lsn "$(backup_field "$inc1" stop_lsn)"
restore_check inc2 "$fp_inc2" --backup "$inc2" --target-lsn "$(backup_field "$inc2" stop_lsn)"
restore_check time "$fp_t" --target-time "$t"

wv_step "verify checks incrementals like fulls"
wv_run verify >/dev/null || wv_fail "verify failed"
