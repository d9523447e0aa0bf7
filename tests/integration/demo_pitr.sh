#!/usr/bin/env bash
# The main job: a throwaway PostgreSQL 15 archives its WAL with walvault into a repository
# (file:// by default, WV_REPO_URL otherwise), gets a base backup, takes writes before and
# after a noted time T, and is restored to T in a new directory; the restored copy must
# hold exactly the rows it held at T.
#   WALVAULT_BIN=/abs/path/walvault bash tests/integration/demo_pitr.sh
set -euo pipefail
# shellcheck source=SCRIPTDIR/lib.sh
source "$(dirname "$0")/lib.sh"
wv_drop_root "$@"
wv_tmpdir
wv_repo_setup
wv_repo_init

wv_pg_init src
wv_pg_archive_to_repo src
wv_pg_start src

insert_rows() { # N: insert N rows, one transaction
  wv_psql src "INSERT INTO orders (note) SELECT 'order ' || g FROM generate_series(1, $1) g"
}

wv_step "create a table with 1000 rows"
wv_psql src "CREATE TABLE orders (id bigserial PRIMARY KEY, note text NOT NULL,
                                  created timestamptz NOT NULL DEFAULT clock_timestamp())"
insert_rows 1000

wv_step "base backup"
backup_out=$(wv_run --pg "$(wv_pg_conninfo src)" --pgdata "${WV_PGDATA[src]}" backup) ||
  wv_fail "walvault backup failed"
backup_id=$(tail -n 1 <<<"$backup_out")
rows_at_backup=$(wv_psql src "SELECT count(*) FROM orders")

wv_step "more writes, then note the time T"
insert_rows 500
wv_psql src "SELECT pg_switch_wal()" >/dev/null
sleep 1
target_time=$(wv_psql src "SELECT now()")
rows_at_target=$(wv_psql src "SELECT count(*) FROM orders")
sleep 1

wv_step "writes after T"
insert_rows 700
wv_psql src "DELETE FROM orders WHERE id % 10 = 0"
rows_at_end=$(wv_psql src "SELECT count(*) FROM orders")
wv_pg_archive_wait src
# The source is gone from here on: only the repository is left to restore from.
wv_pg_stop src

wv_step "restore to $target_time"
restored=$WV_TMP/restored
wv_run restore --to "$restored" --target-time "$target_time" --target-action promote ||
  wv_fail "walvault restore failed"
# The restored copy is a check, not a new primary: it must not archive into the node's WAL.
wv_pg_start_restored "$restored" restored "archive_mode = off"

rows_restored=$(wv_psql restored "SELECT count(*) FROM orders")
wv_assert_eq "$rows_at_target" "$rows_restored" "rows in the copy restored to $target_time"
late_rows=$(wv_psql restored "SELECT count(*) FROM orders WHERE created > '$target_time'")
wv_assert_eq 0 "$late_rows" "rows written after $target_time in the restored copy"
wv_assert_eq "$rows_at_target" "$(wv_psql restored "SELECT max(id) FROM orders")" \
  "highest id in the restored copy"
wv_pg_stop restored

cat <<SUMMARY

walvault point-in-time restore demo
  repository      $WV_REPO
  base backup     $backup_id, taken with $rows_at_backup rows
  target time T   $target_time, when the table held $rows_at_target rows
  after T         700 more rows and a delete: $rows_at_end rows when the source stopped
  restored copy   $rows_restored rows, none written after T: exactly the state at T

SUMMARY
