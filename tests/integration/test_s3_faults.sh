#!/usr/bin/env bash
# walvault against a failing S3 store (faults injected by tests/s3/proxy.js): 503s and
# connection resets during a base backup's multipart upload and during wal-push are retried
# and both succeed; a stalled request is cut and retried; a store that stays down ends
# wal-push with one clear line and no object, PostgreSQL keeps the segment and archives it
# once the store is back; a wrong secret is one clear "access denied" line.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
wv_drop_root "$@"
export WV_REPO_KIND=s3 # an S3 test by nature: it runs once, against s3rver behind the proxy
wv_tmpdir
wv_repo_setup
wv_repo_init

wv_pg_init src
wv_pg_archive_to_repo src
wv_pg_start src
conn=$(wv_pg_conninfo src)
rows() { wv_psql "$1" "SELECT count(*) FROM t"; }
failed_count() { wv_psql src "SELECT failed_count FROM pg_stat_archiver"; }

wv_psql src "CREATE TABLE t AS SELECT g, md5(g::text) || md5((g * 7)::text) AS v
             FROM generate_series(1, 400000) g"

wv_step "503s and resets during a base backup's multipart upload are retried"
wv_s3_fault '[{"op": "UploadPart", "status": 503, "count": 2},
              {"op": "UploadPart", "reset": "before", "after_bytes": 1000000, "skip": 2, "count": 1},
              {"op": "PutObject", "key": "/packs/", "status": 503, "count": 2},
              {"op": "CompleteMultipartUpload", "status": 503, "count": 1}]' >/dev/null
id=$(wv_run backup --full --pg "$conn" --pack-size 24)
injected=$(wv_s3_injected)
((injected >= 4)) || wv_fail "only $injected faults were injected during the backup"
wv_s3_faults_clear >/dev/null
wv_assert_eq 0 "$(wv_s3_pending_uploads)" "multipart uploads left pending"

wv_step "503s and resets during wal-push are retried"
wv_s3_fault '[{"op": "PutObject", "key": "/wal/", "status": 503, "count": 2},
              {"op": "PutObject", "key": "/wal/", "reset": "after", "skip": 2, "count": 1}]' >/dev/null
before=$(failed_count)
wv_psql src "INSERT INTO t SELECT g, 'after the backup' FROM generate_series(1, 1000) g"
wv_pg_archive_wait src
wv_assert_eq "$before" "$(failed_count)" "archive_command failures while the store was flaky"
wv_s3_faults_clear >/dev/null

wv_step "a stalled request is cut and retried"
seg=$(wv_psql src "SELECT last_archived_wal FROM pg_stat_archiver")
cp "${WV_PGDATA[src]}/pg_wal/$seg" "$WV_TMP/$seg"
wv_s3_fault '{"op": "HeadObject", "key": "/wal/", "delay_ms": 20000, "count": 1}' >/dev/null
start=$SECONDS
wv_run --s3-stall-seconds 2 wal-push "$WV_TMP/$seg" 2>/dev/null || wv_fail "wal-push did not survive a stall"
((SECONDS - start < 15)) || wv_fail "the stalled request was not cut: $((SECONDS - start)) s"
wv_s3_faults_clear >/dev/null

wv_step "a store that stays down: one clear line, no object, PostgreSQL retries"
wv_pg_conf src "archive_command = '$(wv_walvault_cmd --s3-retry-seconds 2 wal-push %p)'"
wv_pg_reload src
wv_s3_fault '{"op": "PutObject", "key": "/wal/", "status": 503, "count": -1}' >/dev/null
wv_psql src "INSERT INTO t SELECT g, 'while the store is down' FROM generate_series(1, 1000) g"
down=$(wv_psql src "SELECT pg_walfile_name(pg_current_wal_insert_lsn())")
wv_psql src "SELECT pg_switch_wal()" >/dev/null
for _ in $(seq 100); do (($(failed_count) > before)) && break; sleep 0.2; done
(($(failed_count) > before)) || wv_fail "archive_command did not fail while the store was down"
[[ -f ${WV_PGDATA[src]}/pg_wal/archive_status/$down.ready ]] || wv_fail "PostgreSQL gave up $down"
cp "${WV_PGDATA[src]}/pg_wal/$down" "$WV_TMP/$down"
wv_assert_fails wv_run --s3-retry-seconds 2 wal-push "$WV_TMP/$down"
wv_assert_eq 1 "$(grep -c 'error:' <<<"$WV_LAST_STDERR")" "one error line"
wv_assert_contains "$WV_LAST_STDERR" "HTTP 503"
wv_assert_contains "$WV_LAST_STDERR" "$down"
if wv_repo_objects "$WV_REPO" "nodes/default/wal/" | grep -q "$down"; then
  wv_fail "$down is visible in the store although no push succeeded"
fi
wv_s3_faults_clear >/dev/null
wv_step "the store is back: PostgreSQL archives what it kept"
wv_pg_archive_wait src

wv_step "a wrong secret is one clear access-denied line"
sed "s/^$WV_S3_CONF_SECRET *=.*/$WV_S3_CONF_SECRET = wrong-secret/" "$WV_S3_CONF" >"$WV_TMP/wrong.conf"
chmod 600 "$WV_TMP/wrong.conf"
wv_assert_fails "$WALVAULT_BIN" --config "$WV_TMP/wrong.conf" --repo "$WV_REPO" --key-file "$WV_KEY" \
  --s3-endpoint "$WV_S3_ENDPOINT" --s3-region "$WV_S3_REGION" --s3-uri-style path list
wv_assert_eq 1 "$(grep -c . <<<"$WV_LAST_STDERR")" "lines for a wrong secret"
wv_assert_contains "$WV_LAST_STDERR" "403"
wv_assert_contains "$WV_LAST_STDERR" "access denied"

wv_step "what was backed up and archived under faults restores"
wv_run verify >/dev/null || wv_fail "verify failed"
want=$(rows src)
wv_run restore --to "$WV_TMP/r" --backup "$id" >/dev/null
wv_pg_start_restored "$WV_TMP/r" r "archive_mode = off"
wv_assert_eq "$want" "$(rows r)" "rows restored to the latest archived WAL"
