#!/usr/bin/env bash
# expire: retention by number of full backups removes the older backups, the WAL before the
# oldest kept backup and the packs nothing kept references; everything kept still verifies
# and restores; a backup running meanwhile survives (its packs are young: grace period).
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
rows() { wv_psql "$1" "SELECT count(*) FROM t"; }
add_rows() { wv_psql src "INSERT INTO t SELECT g, md5(g::text) FROM generate_series(1, $1) g"; }
list_json() { wv_run list --json; }
count_backups() { list_json | python3 -c 'import json,sys; print(len(json.load(sys.stdin)["backups"]))'; }
first_segment() {
  list_json | python3 -c 'import json,sys; d=json.load(sys.stdin); print(min(r["first"] for t in d["wal"] for r in t["ranges"]))'
}

wv_psql src "CREATE TABLE t (id int, v text)"
add_rows 20000
f1=$(wv_run backup --full --pg "$conn")
add_rows 20000
i1=$(wv_run backup --incremental --pg "$conn")
add_rows 20000
f2=$(wv_run backup --full --pg "$conn")
f2_rows=$(rows src)
add_rows 20000
i2=$(wv_run backup --incremental --pg "$conn")
i2_rows=$(rows src)
wv_pg_archive_wait src
wv_assert_eq 4 "$(count_backups)" "backups before expire"
f2_start=$(list_json | python3 -c 'import json,sys; d=json.load(sys.stdin); print([b for b in d["backups"] if b["id"]==sys.argv[1]][0]["start_lsn"])' "$f2")
f2_seg=$(wv_psql src "SELECT pg_walfile_name('$f2_start')")
packs_before=$(wv_repo_objects "$WV_REPO" nodes/default/packs/ | wc -l)

wv_step "dry run lists and removes nothing"
out=$(wv_run expire --retain-full 1 --gc-grace 0 --dry-run)
wv_assert_contains "$out" "would remove nodes/default/backups/$f1"
wv_assert_contains "$out" "would remove nodes/default/backups/$i1"
wv_assert_eq 4 "$(count_backups)" "backups after a dry run"

wv_step "expire --retain-full 1 keeps the newest full and what follows it"
wv_run expire --retain-full 1 --gc-grace 0 >/dev/null
wv_assert_eq 2 "$(count_backups)" "backups after expire"
list_json | grep -q "$f2" || wv_fail "the newest full $f2 is gone"
[[ $(first_segment) > "$f2_seg" || $(first_segment) == "$f2_seg" ]] ||
  wv_fail "WAL before $f2_seg (start of the oldest kept backup) is still there: $(first_segment)"
packs_after=$(wv_repo_objects "$WV_REPO" nodes/default/packs/ | wc -l)
((packs_after < packs_before)) || wv_fail "no pack was collected ($packs_before before, $packs_after after)"
wv_run verify >/dev/null || wv_fail "verify failed after expire"

wv_step "expire never removes the last full backup"
wv_run expire --retain-full 1 --gc-grace 0 >/dev/null
wv_assert_eq 2 "$(count_backups)" "backups after a second expire"

wv_step "a backup running during expire survives"
wv_pg_conf src "archive_command = '/bin/false'"
wv_pg_reload src
add_rows 20000
running_rows=$(rows src)
wv_bg running "$WALVAULT_BIN" --repo "$WV_REPO" --key-file "$WV_KEY" backup --full --pg "$conn" \
  --archive-timeout 120
# The backup writes its packs, then waits for WAL that cannot be archived yet.
for _ in $(seq 100); do grep -q started "$WV_TMP/running.log" 2>/dev/null && break; sleep 0.1; done
sleep 2
wv_run expire --retain-full 1 >/dev/null # default grace period
wv_pg_archive_to_repo src
wv_pg_reload src
wv_pg_archive_wait src
running=""
for _ in $(seq 200); do
  running=$(grep -Eo '^[0-9]{8}T[0-9]{6}Z-[0-9a-f]{6}$' "$WV_TMP/running.log" || true)
  [[ -n $running ]] && break
  sleep 0.2
done
[[ -n $running ]] || wv_fail "the backup did not finish: $(cat "$WV_TMP/running.log")"
wv_run verify >/dev/null || wv_fail "verify failed after a backup ran during expire"

wv_step "kept backups restore"
wv_run restore --to "$WV_TMP/r_f2" --backup "$f2" --target-lsn \
  "$(list_json | python3 -c 'import json,sys; d=json.load(sys.stdin); print([b for b in d["backups"] if b["id"]==sys.argv[1]][0]["stop_lsn"])' "$f2")" >/dev/null
wv_pg_start_restored "$WV_TMP/r_f2" r_f2 "archive_mode = off"
wv_assert_eq "$f2_rows" "$(rows r_f2)" "rows restoring $f2"
wv_pg_stop r_f2
wv_run restore --to "$WV_TMP/r_run" --backup "$running" >/dev/null
wv_pg_start_restored "$WV_TMP/r_run" r_run "archive_mode = off"
wv_assert_eq "$running_rows" "$(rows r_run)" "rows restoring the backup that ran during expire"
