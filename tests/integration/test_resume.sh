#!/usr/bin/env bash
# Interrupted backup: SIGKILL half-way, then the next backup reuses the packs already stored.
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
packs() { # "SIZE BASENAME" of every stored pack object (file:// or s3://, see lib.sh)
  wv_repo_objects -s "$WV_REPO" nodes/default/packs/ | awk '{n = $2; sub(/.*\//, "", n); print $1, n}'
}
stored() { # bytes of pack objects (indexes excluded) whose name starts with $1
  packs | awk -v p="$1" 'index($2, p) == 1 && $2 !~ /\.idx$/ {s += $1} END {print s + 0}'
}
other_indexes() { # names of the pack indexes not of backup $1
  packs | awk -v p="$1" '$2 ~ /\.idx$/ && index($2, p) != 1 {print $2}'
}

wv_psql src "CREATE TABLE t AS SELECT g, md5(g::text) || md5((g + 1)::text) AS v
             FROM generate_series(1, 1500000) g"
rows=$(wv_psql src "SELECT count(*) FROM t")

wv_step "a clean full backup, for comparison"
clean=$(wv_run --jobs 1 backup --full --pg "$conn" --pack-size 4)
clean_bytes=$(stored "$clean")

wv_step "a backup killed half-way leaves no backup"
wv_bg killed "$WALVAULT_BIN" --repo "$WV_REPO" --key-file "$WV_KEY" backup --full --pg "$conn" \
  --pack-size 4 --jobs 1
killed_id=""
for _ in $(seq 300); do
  idx=$(other_indexes "$clean" | head -n 1 || true)
  if [[ -n $idx ]] && (($(other_indexes "$clean" | wc -l) >= 6)); then
    killed_id=$(basename "$idx" | cut -c1-23)
    break
  fi
  sleep 0.05
done
[[ -n $killed_id ]] || wv_fail "the backup stored no pack in time"
pkill -KILL -f -- "--pack-size 4 --jobs 1" || true
sleep 0.5
wv_assert_eq 1 "$(wv_run list --json | python3 -c 'import json,sys; print(len(json.load(sys.stdin)["backups"]))')" \
  "backups after the kill (only the clean one)"
killed_bytes=$(stored "$killed_id")
((killed_bytes > 0)) || wv_fail "the killed backup stored nothing"

wv_step "the next backup reuses what was stored"
full=$(wv_run backup --full --pg "$conn" --pack-size 4 --jobs 1)
full_bytes=$(stored "$full")
echo "a clean full stored $clean_bytes bytes; the killed one $killed_bytes; the retry $full_bytes"
((full_bytes + killed_bytes / 2 < clean_bytes)) ||
  wv_fail "the retry stored $full_bytes bytes, a clean full $clean_bytes: the $killed_bytes bytes of the killed backup were not reused"
wv_pg_archive_wait src
wv_run verify >/dev/null || wv_fail "verify failed"
wv_run restore --to "$WV_TMP/r" --backup "$full" >/dev/null
wv_pg_start_restored "$WV_TMP/r" r "archive_mode = off"
wv_assert_eq "$rows" "$(wv_psql r "SELECT count(*) FROM t")" "rows restored from the resumed backup"
