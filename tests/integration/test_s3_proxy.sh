#!/usr/bin/env bash
# The S3 test server itself (s3rver behind tests/s3/proxy.js), checked with clients that are
# not walvault: Debian's awscli, whose requests must pass the proxy's SigV4 checks (so the
# proxy does not merely agree with walvault's own signer), and curl's SigV4 signer for
# requests awscli will not send. Then every fault the proxy injects, and the gaps of
# s3rver it fills: If-None-Match: *, AbortMultipartUpload, InvalidPart, atomic PUT.
set -euo pipefail
# shellcheck source=SCRIPTDIR/lib.sh
source "$(dirname "$0")/lib.sh"
wv_drop_root "$@"
wv_tmpdir
wv_s3_start

B=$WV_S3_BUCKET
export AWS_MAX_ATTEMPTS=1 AWS_RETRY_MODE=standard # no retries unless a step asks for them
(
  umask 077
  printf 'user = "%s:%s"\n' "$AWS_ACCESS_KEY_ID" "$AWS_SECRET_ACCESS_KEY" >"$WV_TMP/curl.conf"
)

# s3curl [curl args...] URL-PATH: a SigV4-signed curl request to the proxy (credentials from
# a 0600 config file, not the command line); prints the HTTP status, the body goes to
# $WV_TMP/body; curl's exit status is in $S3CURL_EXIT. PUT bodies: -T FILE with the hash
# in an x-amz-content-sha256 header (curl signs it but never computes it).
s3curl() {
  local path=${*: -1}
  S3CURL_EXIT=0
  curl -sS -o "$WV_TMP/body" -w '%{http_code}' --aws-sigv4 "aws:amz:$WV_S3_REGION:s3" \
    -K "$WV_TMP/curl.conf" "${@:1:$#-1}" "$WV_S3_ENDPOINT$path" 2>"$WV_TMP/curl.err" || S3CURL_EXIT=$?
}

sha() { sha256sum <"$1" | cut -d' ' -f1; }

put() { # KEY FILE [curl args...]: signed PUT, prints the status
  local key=$1 file=$2
  shift 2
  s3curl -T "$file" -H "x-amz-content-sha256: $(sha "$file")" "$@" "/$B/$key"
}

get() { # KEY [curl args...]: signed GET, prints the status
  local key=$1
  shift
  s3curl -H "x-amz-content-sha256: $(sha /dev/null)" "$@" "/$B/$key"
}

error_code() { # the <Code> of the last error body
  sed -n 's:.*<Code>\([^<]*\)</Code>.*:\1:p' "$WV_TMP/body"
}

exists() { # KEY: HEAD through the proxy says the object exists
  [[ $(get "$1" -I) == 200 ]]
}

head -c 12345 /dev/urandom >"$WV_TMP/small"
head -c 11000000 /dev/urandom >"$WV_TMP/big" # more than awscli's 8 MiB threshold: multipart

# ---------------------------------------------------------------------------------------
wv_step "awscli: cp (single and multipart), ls, cp back, s3api calls"
wv_aws s3 cp --only-show-errors "$WV_TMP/small" "s3://$B/aws/small" || wv_fail "awscli cp of a small file failed"
wv_aws s3 cp --only-show-errors "$WV_TMP/big" "s3://$B/aws/big" || wv_fail "awscli multipart cp failed"
wv_aws s3 cp --only-show-errors "s3://$B/aws/big" "$WV_TMP/big.back"
cmp "$WV_TMP/big" "$WV_TMP/big.back" || wv_fail "multipart object read back differs"
listing=$(wv_aws s3 ls --recursive "s3://$B/aws/")
wv_assert_contains "$listing" "11000000 aws/big" "awscli ls"
wv_assert_contains "$listing" "12345 aws/small" "awscli ls"
# shellcheck disable=SC2016 # a literal $ in the key
awkward='odd keys/a b+c=d:e&f,g;h@i$j!k(l)m~n'\''o/ünïcødé.bin'
wv_aws s3api put-object --bucket "$B" --key "$awkward" --body "$WV_TMP/small" >/dev/null ||
  wv_fail "s3api put-object with an awkward key failed"
wv_aws s3api head-object --bucket "$B" --key "$awkward" | python3 -c \
  'import json,sys; d=json.load(sys.stdin); assert d["ContentLength"] == 12345, d' ||
  wv_fail "s3api head-object of the awkward key"
for i in 1 2 3 4 5; do
  wv_aws s3api put-object --bucket "$B" --key "page/$i" --body "$WV_TMP/small" >/dev/null
done
# --page-size 2: three ListObjectsV2 calls chained by continuation tokens.
keys=$(wv_aws s3api list-objects-v2 --bucket "$B" --prefix page/ --page-size 2 --query 'Contents[].Key' --output text | xargs)
wv_assert_eq "page/1 page/2 page/3 page/4 page/5" "$keys" "paged listing"
wv_aws s3api delete-objects --bucket "$B" --delete '{"Objects":[{"Key":"page/1"},{"Key":"page/2"}],"Quiet":true}' >/dev/null ||
  wv_fail "s3api delete-objects failed"
keys=$(wv_aws s3api list-objects-v2 --bucket "$B" --prefix page/ --query 'Contents[].Key' --output text | xargs)
wv_assert_eq "page/3 page/4 page/5" "$keys" "listing after delete-objects"
wv_aws s3 rm --only-show-errors --recursive "s3://$B/page/"
wv_aws s3 cp --only-show-errors "s3://$B/$awkward" "$WV_TMP/awkward.back"
cmp "$WV_TMP/small" "$WV_TMP/awkward.back" || wv_fail "awkward key read back differs"

# ---------------------------------------------------------------------------------------
wv_step "signatures: a wrong secret, an unknown key, a wrong region are refused"
wv_assert_fails env AWS_SECRET_ACCESS_KEY=not-the-secret /usr/bin/aws --endpoint-url "$WV_S3_ENDPOINT" s3 ls "s3://$B/"
wv_assert_contains "$WV_LAST_STDERR" "SignatureDoesNotMatch" "wrong secret"
wv_assert_fails env AWS_SECRET_ACCESS_KEY=not-the-secret /usr/bin/aws --endpoint-url "$WV_S3_ENDPOINT" \
  s3 cp --only-show-errors "$WV_TMP/small" "s3://$B/aws/forged"
wv_assert_contains "$WV_LAST_STDERR" "SignatureDoesNotMatch" "wrong secret on upload"
wv_assert_fails env AWS_ACCESS_KEY_ID=AKIANOSUCHKEY0000000 /usr/bin/aws --endpoint-url "$WV_S3_ENDPOINT" s3 ls "s3://$B/"
wv_assert_contains "$WV_LAST_STDERR" "InvalidAccessKeyId" "unknown access key"
# (awscli itself would follow the <Region> of the answer and try again, as with AWS.)
code=$(curl -sS -o "$WV_TMP/body" -w '%{http_code}' --aws-sigv4 "aws:amz:us-east-1:s3" -K "$WV_TMP/curl.conf" \
  -H "x-amz-content-sha256: $(sha /dev/null)" "$WV_S3_ENDPOINT/$B/aws/small")
wv_assert_eq 400 "$code" "a request signed for another region"
wv_assert_eq AuthorizationHeaderMalformed "$(error_code)" "a request signed for another region"
wv_assert_contains "$(cat "$WV_TMP/body")" "<Region>$WV_S3_REGION</Region>" "the right region in the answer"
exists aws/forged && wv_fail "a forged upload was stored"

wv_assert_eq 400 "$(s3curl "/$B/aws/small")" "a request without x-amz-content-sha256"
wv_assert_eq InvalidRequest "$(error_code)" "a request without x-amz-content-sha256"
code=$(get aws/small -H 'x-amz-date: 20200101T000000Z')
wv_assert_eq 403 "$code" "a request dated 2020"
wv_assert_eq RequestTimeTooSkewed "$(error_code)" "a request dated 2020"
wv_assert_eq 403 "$(curl -sS -o "$WV_TMP/body" -w '%{http_code}' "$WV_S3_ENDPOINT/$B/aws/small")" "an unsigned request"
wv_assert_eq AccessDenied "$(error_code)" "an unsigned request"
# S3 takes "." as part of a key, s3rver's files cannot: the proxy says so rather than
# letting s3rver store aws/./small as aws/small.
code=$(curl -sS -o "$WV_TMP/body" -w '%{http_code}' --aws-sigv4 "aws:amz:$WV_S3_REGION:s3" -K "$WV_TMP/curl.conf" \
  -H "x-amz-content-sha256: $(sha /dev/null)" --path-as-is "$WV_S3_ENDPOINT/$B/aws/./small")
wv_assert_eq 400 "$code" "a key with a dot segment"
wv_assert_contains "$(cat "$WV_TMP/body")" "cannot store key" "a key with a dot segment"

# ---------------------------------------------------------------------------------------
wv_step "payload: a body that does not match its x-amz-content-sha256 or Content-MD5 is refused, not stored"
wv_assert_eq 200 "$(put p/ok "$WV_TMP/small")" "a PUT with the right hash"
code=$(s3curl -T "$WV_TMP/small" -H "x-amz-content-sha256: $(sha "$WV_TMP/big")" "/$B/p/bad")
wv_assert_eq 400 "$code" "a PUT with the hash of another body"
wv_assert_eq XAmzContentSHA256Mismatch "$(error_code)" "a PUT with the hash of another body"
exists p/bad && wv_fail "a PUT with a wrong payload hash left an object"
code=$(s3curl -T "$WV_TMP/big" -H "x-amz-content-sha256: $(sha "$WV_TMP/small")" "/$B/p/ok")
wv_assert_eq XAmzContentSHA256Mismatch "$(error_code)" "overwrite with a wrong hash"
get p/ok >/dev/null
cmp "$WV_TMP/small" "$WV_TMP/body" || wv_fail "a refused overwrite changed the object"
code=$(put p/md5 "$WV_TMP/small" -H "Content-MD5: $(openssl dgst -md5 -binary "$WV_TMP/big" | base64)")
wv_assert_eq 400 "$code" "a PUT with a wrong Content-MD5"
wv_assert_eq BadDigest "$(error_code)" "a PUT with a wrong Content-MD5"
code=$(s3curl -T "$WV_TMP/small" -H 'x-amz-content-sha256: UNSIGNED-PAYLOAD' "/$B/p/unsigned")
wv_assert_eq 200 "$code" "an UNSIGNED-PAYLOAD PUT"
code=$(s3curl -X POST -H "x-amz-content-sha256: $(sha /dev/null)" --data-binary @/dev/null "/$B?delete=")
wv_assert_eq 400 "$code" "DeleteObjects without Content-MD5"
wv_assert_contains "$(cat "$WV_TMP/body")" "Content-Md5" "DeleteObjects without Content-MD5"

# ---------------------------------------------------------------------------------------
wv_step "If-None-Match: * (PUT): 412 when the key exists, one winner among racing writers"
wv_assert_eq 200 "$(put inm/a "$WV_TMP/small" -H 'If-None-Match: *')" "first conditional PUT"
wv_assert_eq 412 "$(put inm/a "$WV_TMP/big" -H 'If-None-Match: *')" "second conditional PUT"
wv_assert_eq PreconditionFailed "$(error_code)" "second conditional PUT"
get inm/a >/dev/null
cmp "$WV_TMP/small" "$WV_TMP/body" || wv_fail "a refused conditional PUT changed the object"
for i in $(seq 1 12); do
  head -c 300000 /dev/urandom >"$WV_TMP/race.$i"
done
racers=()
for i in $(seq 1 12); do
  curl -sS -o /dev/null -w '%{http_code}\n' --aws-sigv4 "aws:amz:$WV_S3_REGION:s3" -K "$WV_TMP/curl.conf" \
    -T "$WV_TMP/race.$i" -H "x-amz-content-sha256: $(sha "$WV_TMP/race.$i")" -H 'If-None-Match: *' \
    "$WV_S3_ENDPOINT/$B/inm/race" >"$WV_TMP/race.$i.status" &
  racers+=($!)
done
wait "${racers[@]}" # not a bare wait: it would wait for the servers too
wv_assert_eq "1 200, 11 412" "$(cat "$WV_TMP"/race.*.status | sort | uniq -c | awk '{printf "%s%s %s", (NR>1?", ":""), $1, $2}')" \
  "racing conditional PUTs"
winner=$(grep -l 200 "$WV_TMP"/race.*.status)
get inm/race >/dev/null
cmp "${winner%.status}" "$WV_TMP/body" || wv_fail "the stored object is not the winner's"

wv_step "If-None-Match ignored (proxy setting), as by s3rver and some S3 clones"
wv_s3_setting if_none_match false
wv_assert_eq 200 "$(put inm/a "$WV_TMP/big" -H 'If-None-Match: *')" "conditional PUT on an ignoring store"
get inm/a >/dev/null
cmp "$WV_TMP/big" "$WV_TMP/body" || wv_fail "the ignoring store did not overwrite"
wv_s3_setting if_none_match true

# ---------------------------------------------------------------------------------------
wv_step "multipart: abort, unknown uploads, InvalidPart, EntityTooSmall, conditional complete"
mpu() { wv_aws s3api create-multipart-upload --bucket "$B" --key "$1" --query UploadId --output text; }
part() { # KEY UPLOAD N FILE: prints the ETag
  wv_aws s3api upload-part --bucket "$B" --key "$1" --upload-id "$2" --part-number "$3" --body "$4" \
    --query ETag --output text
}
head -c 5242880 /dev/urandom >"$WV_TMP/p5m"
up=$(mpu mp/aborted)
part mp/aborted "$up" 1 "$WV_TMP/p5m" >/dev/null
wv_assert_eq 1 "$(wv_s3_pending_uploads)" "pending uploads before abort"
listed=$(wv_aws s3api list-multipart-uploads --bucket "$B" --query 'Uploads[].UploadId' --output text)
wv_assert_eq "$up" "$listed" "list-multipart-uploads"
wv_aws s3api abort-multipart-upload --bucket "$B" --key mp/aborted --upload-id "$up" || wv_fail "abort-multipart-upload failed"
wv_assert_eq 0 "$(wv_s3_pending_uploads)" "pending uploads after abort"
wv_assert_fails part mp/aborted "$up" 2 "$WV_TMP/small"
wv_assert_contains "$WV_LAST_STDERR" "NoSuchUpload" "upload-part after abort"
wv_assert_fails wv_aws s3api abort-multipart-upload --bucket "$B" --key mp/aborted --upload-id "$up"
wv_assert_contains "$WV_LAST_STDERR" "NoSuchUpload" "second abort"

up=$(mpu mp/invalid)
e1=$(part mp/invalid "$up" 1 "$WV_TMP/p5m")
wv_assert_fails wv_aws s3api complete-multipart-upload --bucket "$B" --key mp/invalid --upload-id "$up" \
  --multipart-upload "{\"Parts\":[{\"PartNumber\":1,\"ETag\":$e1},{\"PartNumber\":2,\"ETag\":\"\\\"0123456789abcdef0123456789abcdef\\\"\"}]}"
wv_assert_contains "$WV_LAST_STDERR" "InvalidPart" "complete naming a part never sent"
wv_assert_fails wv_aws s3api complete-multipart-upload --bucket "$B" --key mp/invalid --upload-id "$up" \
  --multipart-upload '{"Parts":[{"PartNumber":1,"ETag":"\"0123456789abcdef0123456789abcdef\""}]}'
wv_assert_contains "$WV_LAST_STDERR" "InvalidPart" "complete with a wrong ETag"
e2=$(part mp/invalid "$up" 2 "$WV_TMP/small")
e3=$(part mp/invalid "$up" 3 "$WV_TMP/small")
wv_assert_fails wv_aws s3api complete-multipart-upload --bucket "$B" --key mp/invalid --upload-id "$up" \
  --multipart-upload "{\"Parts\":[{\"PartNumber\":1,\"ETag\":$e1},{\"PartNumber\":2,\"ETag\":$e2},{\"PartNumber\":3,\"ETag\":$e3}]}"
wv_assert_contains "$WV_LAST_STDERR" "EntityTooSmall" "a small part that is not the last"
wv_aws s3api complete-multipart-upload --bucket "$B" --key mp/invalid --upload-id "$up" \
  --multipart-upload "{\"Parts\":[{\"PartNumber\":1,\"ETag\":$e1},{\"PartNumber\":3,\"ETag\":$e3}]}" >/dev/null ||
  wv_fail "complete with parts 1 and 3"
wv_aws s3 cp --only-show-errors "s3://$B/mp/invalid" "$WV_TMP/mp.back"
cat "$WV_TMP/p5m" "$WV_TMP/small" | cmp - "$WV_TMP/mp.back" || wv_fail "completed object differs from parts 1 and 3"
curl -fsS -o /dev/null "$WV_S3_S3RVER/" || wv_fail "s3rver no longer answers"

# CompleteMultipartUpload with If-None-Match: * (S3 honours it there too), signed by curl.
up=$(mpu mp/invalid)
e1=$(part mp/invalid "$up" 1 "$WV_TMP/small")
printf '<CompleteMultipartUpload><Part><PartNumber>1</PartNumber><ETag>%s</ETag></Part></CompleteMultipartUpload>' \
  "$e1" >"$WV_TMP/complete.xml"
code=$(s3curl -X POST --data-binary "@$WV_TMP/complete.xml" -H "x-amz-content-sha256: $(sha "$WV_TMP/complete.xml")" \
  -H 'If-None-Match: *' "/$B/mp/invalid?uploadId=$up")
wv_assert_eq 412 "$code" "conditional complete over an existing key"

# ---------------------------------------------------------------------------------------
wv_step "faults: status codes, with and without retries"
wv_s3_fault '{"op": "PutObject", "key": "^f/", "status": 503, "count": 2}' >/dev/null
AWS_MAX_ATTEMPTS=3 wv_aws s3 cp --only-show-errors "$WV_TMP/small" "s3://$B/f/retried" ||
  wv_fail "awscli did not get through two 503s with 3 attempts"
wv_assert_eq 2 "$(wv_s3_injected)" "faults injected"
wv_s3_fault '{"op": "PutObject", "key": "^f/", "status": 503, "count": -1}' >/dev/null
wv_assert_fails wv_aws s3 cp --only-show-errors "$WV_TMP/small" "s3://$B/f/down"
wv_assert_contains "$WV_LAST_STDERR" "SlowDown" "a store that stays down"
exists f/down && wv_fail "an upload refused with 503 was stored"
wv_s3_faults_clear
for status in 500 429; do
  wv_s3_fault "{\"op\": \"GetObject\", \"status\": $status}" >/dev/null
  wv_assert_eq "$status" "$(get f/retried)" "injected $status"
  wv_assert_eq "$([[ $status == 500 ]] && echo InternalError || echo SlowDown)" "$(error_code)" "code of $status"
  wv_assert_eq 200 "$(get f/retried)" "after the injected $status"
done
wv_s3_fault '{"op": "GetObject", "status": 503, "code": "ServiceUnavailable", "message": "down for a test"}' >/dev/null
wv_assert_eq 503 "$(get f/retried)" "injected 503 with its own code"
wv_assert_eq ServiceUnavailable "$(error_code)" "injected code"
wv_s3_fault '{"method": "HEAD", "key": "^f/retried$", "skip": 1, "count": 1, "status": 500}' >/dev/null
wv_assert_eq "200 500 200" "$(get f/retried -I) $(get f/retried -I) $(get f/retried -I)" "skip 1, then count 1"
wv_s3_fault '{"op": "CompleteMultipartUpload", "status": 200, "code": "InternalError"}' >/dev/null
wv_assert_fails wv_aws s3 cp --only-show-errors "$WV_TMP/big" "s3://$B/f/complete200"
# (awscli turns it into a failure without reading the code out of it.)
wv_assert_contains "$WV_LAST_STDERR" "CompleteMultipartUpload" "200 OK with an error body on complete"
exists f/complete200 && wv_fail "an upload whose completion failed is visible"

wv_step "faults: delays"
wv_s3_fault '{"op": "GetObject", "delay_ms": 3000}' >/dev/null
get f/retried -m 1 >/dev/null
wv_assert_eq 28 "$S3CURL_EXIT" "curl times out on a 3 s delay before the answer"
wv_s3_fault '{"op": "GetObject", "delay_ms": 3000, "at": "body"}' >/dev/null
get aws/big -m 1 >/dev/null
wv_assert_eq 28 "$S3CURL_EXIT" "curl times out on a stall in the middle of the body"
body_bytes=$(stat -c %s "$WV_TMP/body")
((body_bytes > 0 && body_bytes < 11000000)) || wv_fail "a mid-body stall sent $body_bytes bytes before it"
wv_s3_fault '{"op": "GetObject", "delay_ms": 300, "at": "body"}' >/dev/null
wv_assert_eq 200 "$(get aws/big)" "a short stall mid-body"
cmp "$WV_TMP/big" "$WV_TMP/body" || wv_fail "a body stalled mid-way arrived damaged"
wv_s3_fault '{"op": "PutObject", "delay_ms": 3000, "at": "response"}' >/dev/null
put f/late "$WV_TMP/small" -m 1 >/dev/null
wv_assert_eq 28 "$S3CURL_EXIT" "curl times out on a late answer"
for _ in $(seq 50); do exists f/late && break; sleep 0.1; done
exists f/late || wv_fail "a PUT answered late was not stored"

wv_step "faults: resets and truncated bodies"
wv_s3_fault '{"op": "PutObject", "reset": "before"}' >/dev/null
put f/reset-before "$WV_TMP/small" >/dev/null
((S3CURL_EXIT != 0)) || wv_fail "curl did not notice a reset before the answer"
exists f/reset-before && wv_fail "a PUT reset before the store saw it was stored"
wv_s3_fault '{"op": "PutObject", "reset": "before", "after_bytes": 2000000}' >/dev/null
put f/reset-mid "$WV_TMP/big" >/dev/null
((S3CURL_EXIT != 0)) || wv_fail "curl did not notice a reset in the middle of its upload"
exists f/reset-mid && wv_fail "a PUT cut in the middle was stored"
wv_s3_fault '{"op": "PutObject", "reset": "after"}' >/dev/null
put f/reset-after "$WV_TMP/small" >/dev/null
((S3CURL_EXIT != 0)) || wv_fail "curl did not notice a reset after the store took the PUT"
exists f/reset-after || wv_fail "a PUT reset after the store took it is not stored"
wv_s3_fault '{"op": "GetObject", "reset": "body"}' >/dev/null
get aws/big >/dev/null
((S3CURL_EXIT != 0)) || wv_fail "curl did not notice a reset in the middle of the body"
wv_s3_fault '{"op": "GetObject", "truncate": 1000}' >/dev/null
get aws/big >/dev/null
wv_assert_eq 18 "$S3CURL_EXIT" "curl sees a body cut short (exit 18)"
wv_assert_eq 1000 "$(stat -c %s "$WV_TMP/body")" "bytes of the truncated body"
wv_s3_fault '{"op": "UploadPart", "query": "partNumber=2(&|$)", "reset": "before", "after_bytes": 100000}' >/dev/null
AWS_MAX_ATTEMPTS=3 wv_aws s3 cp --only-show-errors "$WV_TMP/big" "s3://$B/f/part-reset" ||
  wv_fail "awscli did not get through a reset of part 2"
wv_aws s3 cp --only-show-errors "s3://$B/f/part-reset" "$WV_TMP/part-reset.back"
cmp "$WV_TMP/big" "$WV_TMP/part-reset.back" || wv_fail "object uploaded through a part reset differs"
log=$(wv_s3_fault_log)
for action in status delay_ms reset truncate; do
  wv_assert_contains "$log" "\"action\": \"$action\"" "fault log"
done

wv_step "a client that dies mid-upload leaves nothing visible"
curl -sS -o /dev/null --aws-sigv4 "aws:amz:$WV_S3_REGION:s3" -K "$WV_TMP/curl.conf" --limit-rate 2M -m 1 \
  -T "$WV_TMP/big" -H "x-amz-content-sha256: $(sha "$WV_TMP/big")" "$WV_S3_ENDPOINT/$B/f/killed" 2>/dev/null || true
sleep 0.5
exists f/killed && wv_fail "an upload cut off by its client is visible"
staged=$(find "$WV_S3_DATA/$WV_S3_STAGING_BUCKET" -type f | wc -l)
wv_assert_eq 0 "$staged" "files left in the staging bucket"

wv_step "host-style addressing (BUCKET.localhost)"
code=$(curl -sS -o "$WV_TMP/body" -w '%{http_code}' --aws-sigv4 "aws:amz:$WV_S3_REGION:s3" -K "$WV_TMP/curl.conf" \
  -H "x-amz-content-sha256: $(sha /dev/null)" "http://$B.localhost:${WV_S3_ENDPOINT##*:}/aws/small")
wv_assert_eq 200 "$code" "host-style GET"
cmp "$WV_TMP/small" "$WV_TMP/body" || wv_fail "host-style GET returned other bytes"
