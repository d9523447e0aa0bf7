#!/usr/bin/env bash
# wal-push and wal-fetch at their edges: the same segment twice is fine, other content under
# an archived name is refused, WAL of another cluster is refused, a wrong key is refused by
# every command, and a missing segment makes wal-fetch exit 1 without a word.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
wv_drop_root "$@"
wv_tmpdir
wv_repo_setup
wv_repo_init

wv_pg_init a
wv_pg_archive_to_repo a
wv_pg_start a
wv_psql a "CREATE TABLE t AS SELECT g FROM generate_series(1, 1000) g"
wv_pg_archive_wait a
seg=$(wv_psql a "SELECT last_archived_wal FROM pg_stat_archiver")
segpath=${WV_PGDATA[a]}/pg_wal/$seg
[[ -f $segpath ]] || wv_fail "archived segment $seg is no longer in pg_wal"

wv_step "pushing the same segment again succeeds"
wv_run wal-push "$segpath" 2>/dev/null || wv_fail "second push of identical $seg failed"

wv_step "other content under an archived name is refused"
cp "$segpath" "$WV_TMP/$seg"
printf 'X' | dd of="$WV_TMP/$seg" bs=1 seek=100000 conv=notrunc status=none
wv_assert_fails wv_run wal-push "$WV_TMP/$seg"
wv_assert_contains "$WV_LAST_STDERR" "different content"
wv_assert_eq 1 "$(wc -l <<<"$WV_LAST_STDERR")" "one line of error"

wv_step "WAL of another cluster under the same node is refused"
wv_pg_init b
wv_pg_archive_to_repo b
wv_pg_start b
wv_psql b "CREATE TABLE t AS SELECT g FROM generate_series(1, 10) g"
bseg=$(wv_psql b "SELECT pg_walfile_name(pg_current_wal_lsn())")
wv_assert_fails wv_run wal-push "${WV_PGDATA[b]}/pg_wal/$bseg"
wv_assert_contains "$WV_LAST_STDERR" "system"

wv_step "a wrong key is refused"
"$WALVAULT_BIN" keygen --out "$WV_TMP/other.key" >/dev/null
wv_assert_fails "$WALVAULT_BIN" --repo "$WV_REPO" --key-file "$WV_TMP/other.key" wal-push "$segpath"
wv_assert_contains "$WV_LAST_STDERR" "not a key of the repository"
wv_assert_fails "$WALVAULT_BIN" --repo "$WV_REPO" --key-file "$WV_TMP/other.key" list
wv_assert_fails "$WALVAULT_BIN" --repo "$WV_REPO" --key-file "$WV_TMP/other.key" init
wv_assert_eq 1 "$WV_LAST_STATUS" "exit status of init with a wrong key"

wv_step "init is idempotent"
wv_run init >/dev/null || wv_fail "second init failed"

wv_step "wal-fetch of an archived segment returns its exact bytes"
wv_run wal-fetch "$seg" "$WV_TMP/fetched" --prefetch 0
cmp "$segpath" "$WV_TMP/fetched" || wv_fail "fetched $seg differs from the original"

wv_step "wal-fetch of a missing segment: exit 1, quiet"
wv_assert_fails wv_run wal-fetch 00000001000000FF000000FF "$WV_TMP/missing"
wv_assert_eq 1 "$WV_LAST_STATUS" "exit status for a missing segment"
wv_assert_eq "" "$WV_LAST_STDERR" "stderr for a missing segment"
[[ ! -e $WV_TMP/missing ]] || wv_fail "wal-fetch left a file for a missing segment"

wv_step "one wal-push pushes the other ready segments ahead, in parallel"
wv_pg_conf a "archive_command = '/bin/false'"
wv_pg_reload a
for i in 1 2 3; do
  wv_psql a "INSERT INTO t SELECT g FROM generate_series(1, 1000) g; SELECT pg_switch_wal()" >/dev/null
done
mapfile -t ready < <(cd "${WV_PGDATA[a]}/pg_wal/archive_status" && ls -- *.ready | sed 's/\.ready$//' | sort)
((${#ready[@]} >= 3)) || wv_fail "expected 3 segments waiting to be archived, found ${#ready[@]}"
wv_run --jobs 4 wal-push "${WV_PGDATA[a]}/pg_wal/${ready[0]}"
archived=$(wv_run list --json)
for name in "${ready[@]}"; do
  python3 -c 'import json,sys; d=json.load(sys.stdin); n=sys.argv[1]
ok=any(r["first"]<=n<=r["last"] for t in d["wal"] for r in t["ranges"]); sys.exit(0 if ok else 1)' "$name" <<<"$archived" ||
    wv_fail "$name was not pushed ahead"
done

wv_step "wal-fetch fetches the following segments ahead into its spool"
mkdir -p "$WV_TMP/fetch"
wv_run wal-fetch --prefetch 2 "${ready[0]}" "$WV_TMP/fetch/RECOVERYXLOG"
for _ in $(seq 50); do
  [[ -f $WV_TMP/fetch/walvault_spool/${ready[1]} && -f $WV_TMP/fetch/walvault_spool/${ready[2]} ]] && break
  sleep 0.1
done
[[ -f $WV_TMP/fetch/walvault_spool/${ready[2]} ]] || wv_fail "the spool did not receive ${ready[2]}"
wv_run wal-fetch --prefetch 2 "${ready[1]}" "$WV_TMP/fetch/next"
cmp "$WV_TMP/fetch/next" "${WV_PGDATA[a]}/pg_wal/${ready[1]}" || wv_fail "the spooled ${ready[1]} differs"
[[ ! -e $WV_TMP/fetch/walvault_spool/${ready[0]} ]] || wv_fail "the spool kept a segment already served"

wv_step "errors as JSON lines with --log-format json"
wv_assert_fails wv_run --log-format json wal-push "$WV_TMP/no-such-file"
python3 -c 'import json,sys; d=json.loads(sys.argv[1]); assert d["level"]=="error" and "no-such-file" in d["msg"], d' "$WV_LAST_STDERR" ||
  wv_fail "not one JSON line: $WV_LAST_STDERR"

wv_step "usage errors exit 2"
wv_assert_fails wv_run wal-push
wv_assert_eq 2 "$WV_LAST_STATUS" "exit status of wal-push without PATH"
wv_assert_fails wv_run frobnicate
wv_assert_eq 2 "$WV_LAST_STATUS" "exit status of an unknown command"
