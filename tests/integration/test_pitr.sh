#!/usr/bin/env bash
# Point-in-time restore end to end: a live cluster with a second tablespace, WAL archived by
# wal-push, full backups from both sources, then restores to a time, to an LSN and to the
# latest archived WAL, each checked by counting rows. Also: restored plaintext never reaches
# the repository, and a non-empty target is refused.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
wv_drop_root "$@"
wv_tmpdir
wv_repo_setup
wv_repo_init

MARKER=walvault_plaintext_marker_5f1d2c
mkdir -p "$WV_TMP/ts1"
wv_pg_init src
wv_pg_archive_to_repo src
wv_pg_start src

count() { wv_psql "$1" "SELECT count(*) FROM t"; }
count_ts() { wv_psql "$1" "SELECT count(*) FROM t_ts"; }
insert() { # NAME FIRST LAST
  wv_psql "$1" "INSERT INTO t SELECT g, '$MARKER' || g FROM generate_series($2, $3) g;
                INSERT INTO t_ts SELECT g FROM generate_series($2, $3) g"
}

wv_psql src "CREATE TABLESPACE ts1 LOCATION '$WV_TMP/ts1'"
wv_psql src "CREATE TABLE t (id int, payload text); CREATE TABLE t_ts (id int) TABLESPACE ts1"
insert src 1 1000

wv_step "full backup, local source"
local_id=$(wv_run backup --full --source local --pg "$(wv_pg_conninfo src)" --pgdata "${WV_PGDATA[src]}")
wv_step "full backup, stream source"
stream_id=$(wv_run backup --full --source stream --pg "$(wv_pg_conninfo src)")
[[ $local_id != "$stream_id" ]] || wv_fail "two backups got the same id $local_id"

insert src 1001 2000
t1=$(wv_psql src "SELECT clock_timestamp()")
sleep 1.1
insert src 2001 3000
lsn2=$(wv_psql src "SELECT pg_current_wal_insert_lsn()")
insert src 3001 4000
wv_pg_archive_wait src

wv_step "restore to a time ($t1)"
# The source still uses its tablespace directory: every restore relocates it.
wv_run restore --to "$WV_TMP/r_time" --target-time "$t1" --tablespace-map "$WV_TMP/ts1=$WV_TMP/ts_time" >/dev/null
wv_pg_start_restored "$WV_TMP/r_time" r_time "archive_mode = off"
wv_assert_eq 2000 "$(count r_time)" "rows after restore to $t1"
wv_assert_eq 2000 "$(count_ts r_time)" "tablespace rows after restore to $t1"
wv_pg_stop r_time

wv_step "restore to an LSN ($lsn2)"
wv_run restore --to "$WV_TMP/r_lsn" --target-lsn "$lsn2" --tablespace-map "$WV_TMP/ts1=$WV_TMP/ts_lsn" >/dev/null
wv_pg_start_restored "$WV_TMP/r_lsn" r_lsn "archive_mode = off"
wv_assert_eq 3000 "$(count r_lsn)" "rows after restore to LSN $lsn2"
wv_pg_stop r_lsn

wv_step "restore the stream backup to latest, tablespace relocated"
wv_run restore --to "$WV_TMP/r_latest" --backup "$stream_id" \
  --tablespace-map "$WV_TMP/ts1=$WV_TMP/ts1_moved" >/dev/null
link=$(readlink "$WV_TMP/r_latest/pg_tblspc/"*)
wv_assert_eq "$WV_TMP/ts1_moved" "$link" "relocated tablespace link"
wv_pg_start_restored "$WV_TMP/r_latest" r_latest "archive_mode = off"
wv_assert_eq 4000 "$(count r_latest)" "rows after restore to latest"
wv_assert_eq 4000 "$(count_ts r_latest)" "tablespace rows after restore to latest"
wv_pg_stop r_latest

wv_step "the repository holds no plaintext"
repo_dir=$(wv_repo_dir "$WV_REPO")
[[ -d $repo_dir ]] || wv_fail "the repository's objects are not in $repo_dir"
if grep -rqa "$MARKER" "$repo_dir"; then
  wv_fail "found the plaintext marker in the repository"
fi

wv_step "restore into a non-empty directory is refused"
wv_assert_fails wv_run restore --to "$WV_TMP/r_time" --tablespace-map "$WV_TMP/ts1=$WV_TMP/ts_other"
wv_assert_contains "$WV_LAST_STDERR" "not empty"

wv_step "list and verify"
wv_run list | grep -q "$local_id" || wv_fail "list does not show backup $local_id"
wv_run list --json | python3 -c 'import json,sys; d=json.load(sys.stdin); assert len(d["backups"]) == 2, d'
wv_run verify >/dev/null || wv_fail "verify failed on an intact repository"
