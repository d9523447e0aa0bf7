#!/usr/bin/env bash
# Base backup at its edges: a page with a bad checksum is reported with its file and block
# and the backup goes on; a backup whose WAL never reaches the archive fails after its
# timeout with a clear line, and leaves no backup behind.
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
count_backups() { wv_run list --json | python3 -c 'import json,sys; print(len(json.load(sys.stdin)["backups"]))'; }

wv_psql src "CREATE TABLE t AS SELECT g, md5(g::text) AS v FROM generate_series(1, 10000) g"
wv_psql src "CHECKPOINT"
rel=$(wv_psql src "SELECT pg_relation_filepath('t')")
wv_pg_stop src

wv_step "damage one page of $rel on disk"
# Block 3, a byte in the middle of its tuples: the stored checksum no longer matches.
printf 'Z' | dd of="${WV_PGDATA[src]}/$rel" bs=1 seek=$((3 * 8192 + 4000)) conv=notrunc status=none
wv_pg_start src

wv_step "the backup reports the page and goes on"
id=$(wv_run backup --full --pg "$conn" 2>"$WV_TMP/backup.err") || wv_fail "backup failed: $(cat "$WV_TMP/backup.err")"
wv_assert_contains "$(cat "$WV_TMP/backup.err")" "checksum failure in $rel block 3"
wv_assert_eq 1 "$(count_backups)" "backups after the damaged page"
[[ -n $id ]] || wv_fail "the backup printed no id"

wv_step "WAL that never reaches the archive: the backup fails after its timeout"
wv_pg_conf src "archive_command = '/bin/false'"
wv_pg_reload src
wv_assert_fails wv_run backup --full --pg "$conn" --archive-timeout 3
wv_assert_contains "$WV_LAST_STDERR" "was not archived within 3 s"
wv_assert_eq 1 "$(grep -c 'error:' <<<"$WV_LAST_STDERR")" "one error line"
wv_assert_eq 1 "$(count_backups)" "backups after the timeout"
