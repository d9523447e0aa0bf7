#!/usr/bin/env bash
# One flipped byte in any stored object makes verify and restore fail with a line naming the
# object. Each kind of object is damaged in its own copy of one repository.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
wv_drop_root "$@"
wv_tmpdir
wv_repo_setup
wv_repo_init
[[ $WV_REPO == file://* ]] || { echo "SKIP $WV_TEST_NAME: needs a file:// repository"; exit 0; }
repo_dir=${WV_REPO#file://}

wv_pg_init src
wv_pg_archive_to_repo src
wv_pg_start src
wv_psql src "CREATE TABLE t AS SELECT g, md5(g::text) FROM generate_series(1, 20000) g"
wv_run backup --full --pg "$(wv_pg_conninfo src)" >/dev/null
wv_pg_archive_wait src
wv_pg_stop src
wv_run verify >/dev/null || wv_fail "verify failed before any damage"

flip() { # FILE: flip one byte in the middle
  local size off byte
  size=$(stat -c %s "$1")
  off=$((size / 2))
  byte=$(od -An -tu1 -j "$off" -N1 "$1" | tr -d ' ')
  printf "$(printf '\\%03o' $(((byte + 1) % 256)))" | dd of="$1" bs=1 seek="$off" conv=notrunc status=none
}

check_damage() { # KIND RELATIVE_OBJECT
  local kind=$1 object=$2 copy=$WV_TMP/copy-$1
  rm -rf "$copy"
  cp -a "$repo_dir" "$copy"
  flip "$copy/$object"
  wv_step "flipped a byte in the $kind $object"
  wv_assert_fails "$WALVAULT_BIN" --repo "file://$copy" --key-file "$WV_KEY" verify
  wv_assert_contains "$WV_LAST_STDERR" "$object" "verify names the damaged $kind"
  wv_assert_fails "$WALVAULT_BIN" --repo "file://$copy" --key-file "$WV_KEY" restore --to "$WV_TMP/r-$kind"
  wv_assert_contains "$WV_LAST_STDERR" "$object" "restore names the damaged $kind"
  wv_assert_eq 1 "$(grep -c "error:" <<<"$WV_LAST_STDERR")" "restore fails with one error line"
}

pack=$(cd "$repo_dir" && ls nodes/default/packs/* | head -n 1)
manifest=$(cd "$repo_dir" && ls nodes/default/backups/* | head -n 1)
check_damage pack "$pack"
check_damage manifest "$manifest"
check_damage node-record nodes/default/node.json

wv_step "a damaged WAL segment fails verify"
seg=$(cd "$repo_dir" && ls nodes/default/wal/00000001/0* | tail -n 1)
copy=$WV_TMP/copy-wal
cp -a "$repo_dir" "$copy"
flip "$copy/$seg"
wv_assert_fails "$WALVAULT_BIN" --repo "file://$copy" --key-file "$WV_KEY" verify
wv_assert_contains "$WV_LAST_STDERR" "$seg" "verify names the damaged segment"
