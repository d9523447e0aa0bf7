#!/usr/bin/env bash
# One flipped byte in any stored object makes verify and restore fail with a line naming the
# object. Each kind of object is damaged in its own copy of one repository.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
wv_drop_root "$@"
wv_tmpdir
wv_repo_setup
wv_repo_init

wv_pg_init src
wv_pg_archive_to_repo src
wv_pg_start src
wv_psql src "CREATE TABLE t AS SELECT g, md5(g::text) FROM generate_series(1, 20000) g"
wv_run backup --full --pg "$(wv_pg_conninfo src)" >/dev/null
wv_pg_archive_wait src
wv_pg_stop src
wv_run verify >/dev/null || wv_fail "verify failed before any damage"

# The copies and the damage go where the repository's objects live: a directory for
# file://, s3rver's files for s3:// (see wv_repo_copy and wv_repo_flip in lib.sh).
check_damage() { # KIND RELATIVE_OBJECT
  local kind=$1 object=$2 copy
  copy=$(wv_repo_copy "$WV_REPO" "copy-$kind")
  wv_repo_flip "$copy" "$object"
  wv_step "flipped a byte in the $kind $object"
  wv_assert_fails "$WALVAULT_BIN" --repo "$copy" --key-file "$WV_KEY" verify
  wv_assert_contains "$WV_LAST_STDERR" "$object" "verify names the damaged $kind"
  wv_assert_fails "$WALVAULT_BIN" --repo "$copy" --key-file "$WV_KEY" restore --to "$WV_TMP/r-$kind"
  wv_assert_contains "$WV_LAST_STDERR" "$object" "restore names the damaged $kind"
  wv_assert_eq 1 "$(grep -c "error:" <<<"$WV_LAST_STDERR")" "restore fails with one error line"
}

pack=$(wv_repo_objects "$WV_REPO" nodes/default/packs/ | head -n 1)
manifest=$(wv_repo_objects "$WV_REPO" nodes/default/backups/ | head -n 1)
[[ -n $pack && -n $manifest ]] || wv_fail "no pack or no manifest in $WV_REPO"
check_damage pack "$pack"
check_damage manifest "$manifest"
check_damage node-record nodes/default/node.json

wv_step "a damaged WAL segment fails verify"
seg=$(wv_repo_objects "$WV_REPO" nodes/default/wal/00000001/0 | tail -n 1)
[[ -n $seg ]] || wv_fail "no WAL segment in $WV_REPO"
copy=$(wv_repo_copy "$WV_REPO" copy-wal)
wv_repo_flip "$copy" "$seg"
wv_assert_fails "$WALVAULT_BIN" --repo "$copy" --key-file "$WV_KEY" verify
wv_assert_contains "$WV_LAST_STDERR" "$seg" "verify names the damaged segment"
