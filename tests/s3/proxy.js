#!/usr/bin/env node
'use strict';
/*
 * tests/s3/proxy.js: a test-only HTTP proxy between walvault and s3rver.
 *
 * s3rver stores objects well but is lax where a real S3 is strict, so walvault would pass
 * tests against it that it fails against AWS. This proxy restores the strictness:
 *
 *  - It checks every request's AWS Signature Version 4 (header form) and its payload hash
 *    the way S3 does, and answers 403/400 with S3's error codes and XML bodies.
 *  - It injects faults on command (status codes, delays, resets, truncated bodies), driven
 *    by a control API on its own port, so retries and give-up paths can be tested.
 *  - It fills s3rver's gaps: If-None-Match: * on PUT and CompleteMultipartUpload (412),
 *    AbortMultipartUpload (s3rver answers 405), CompleteMultipartUpload naming a part never
 *    sent (s3rver crashes; S3 answers 400 InvalidPart), UploadPart to an unknown upload
 *    (404 NoSuchUpload), ListMultipartUploads, DeleteObject(s) (s3rver's removal of
 *    emptied directories races with itself and fails deletes with 500), DeleteObjects
 *    without Content-MD5 (400, as S3), and atomic PUT: s3rver writes an upload straight
 *    to the object's file, so an interrupted PUT left a partial object readable under its
 *    final name. Here a PUT goes to a hidden staging bucket and is renamed into place only
 *    once complete and verified.
 *
 * Only path-style requests (http://127.0.0.1:PORT/bucket/key) and host-style requests to
 * BUCKET.localhost:PORT are understood. Bodies stream in both directions; nothing buffers
 * a whole object (CompleteMultipartUpload and DeleteObjects bodies, a few MiB at most,
 * are the exception). aws-chunked bodies (STREAMING-*) and presigned URLs are refused
 * with 501: neither walvault nor Debian's awscli over http sends them.
 *
 * Node's standard library only. Needs s3rver's data directory (--data-dir) because the
 * gap fixes work on its files: DATA/BUCKET/<key dirs>/<name>._S3rver_object (+ .md5 and
 * ._S3rver_metadata.json beside it), uploads in DATA/BUCKET/._S3rver_uploads/<uploadId>/.
 *
 * Usage: node proxy.js --port N --control-port N --upstream-port N --data-dir DIR
 *                      --staging-bucket NAME [--region R]
 * The one accepted key pair comes from AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY in the
 * environment (a secret never belongs in a process's arguments); the region from --region,
 * else AWS_REGION, else us-east-1.
 *
 * Control API (http://127.0.0.1:CONTROL_PORT), JSON in and out:
 *   GET    /health            "ok"
 *   POST   /faults            add a rule (object) or rules (array); answers {"ids":[...]}
 *   GET    /faults            the rules still active
 *   DELETE /faults            remove every rule
 *   GET    /faults/log        what was injected, oldest first; DELETE clears it
 *   GET    /requests          the last 10000 requests (op, key, status, bytes, fault)
 *   DELETE /requests          clears that log
 *   GET    /settings          {"if_none_match": true, "min_part_size": 5242880}
 *   POST   /settings          change them (if_none_match false: behave like a store that
 *                             ignores If-None-Match, as s3rver and some S3 clones do)
 *
 * A fault rule matches requests and says what to do with the matching ones:
 *   op       S3 operation name (PutObject, UploadPart, GetObject, ...; see classify())
 *   method   HTTP method            key    regular expression on the decoded key
 *   query    regular expression on the raw query string (e.g. "partNumber=2\\b")
 *   skip     let this many matching requests through first (default 0)
 *   count    then act on this many (default 1; -1: every one, until DELETE /faults)
 * and exactly one action:
 *   status N [code C] [message M]    answer N with an S3 XML error (503 SlowDown, 500
 *                                    InternalError, 429 SlowDown by default); status 200 with
 *                                    a code answers "200 OK" with an <Error> body, as S3 can
 *                                    for CompleteMultipartUpload
 *   delay_ms N [at before|response|body]   wait N ms before handling the request (default),
 *                                    after the store answered but before the response
 *                                    headers, or in the middle of the response body (after
 *                                    after_bytes bytes, default half of it)
 *   reset before|after|body          destroy the connection (TCP reset): before the request
 *                                    reaches the store (after after_bytes bytes of its body,
 *                                    default 0), after the store carried it out but before
 *                                    any response byte, or after the response headers and
 *                                    after_bytes bytes of the body (default half)
 *   truncate N                       send the response headers (full Content-Length) and
 *                                    only the first N bytes of the body, then close
 */

const crypto = require('crypto');
const fsp = require('fs/promises');
const http = require('http');
const path = require('path');
const { Transform } = require('stream');
const { pipeline } = require('stream/promises');

// ---------------------------------------------------------------------------------------
// Configuration

function parseArgs(argv) {
  const opts = {};
  for (let i = 2; i < argv.length; i += 2) {
    const name = argv[i];
    const value = argv[i + 1];
    if (!name.startsWith('--') || value === undefined) {
      throw new Error(`bad argument ${name}`);
    }
    opts[name.slice(2)] = value;
  }
  for (const required of ['port', 'control-port', 'upstream-port', 'data-dir', 'staging-bucket']) {
    if (!opts[required]) throw new Error(`--${required} is required`);
  }
  return opts;
}

const args = parseArgs(process.argv);
const config = {
  port: Number(args.port),
  controlPort: Number(args['control-port']),
  upstreamHost: args['upstream-host'] || '127.0.0.1',
  upstreamPort: Number(args['upstream-port']),
  dataDir: path.resolve(args['data-dir']),
  stagingBucket: args['staging-bucket'],
  region: args.region || process.env.AWS_REGION || 'us-east-1',
  accessKeyId: process.env.AWS_ACCESS_KEY_ID || '',
  secretAccessKey: process.env.AWS_SECRET_ACCESS_KEY || '',
};
if (!config.accessKeyId || !config.secretAccessKey) {
  console.error('proxy.js: AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY must be set');
  process.exit(2);
}

const settings = {
  if_none_match: true,
  // S3 refuses to complete an upload whose parts, except the last, are under 5 MiB.
  min_part_size: 5 * 1024 * 1024,
};

const MAX_SKEW_MS = 15 * 60 * 1000;
const MAX_COMPLETE_BODY = 2 * 1024 * 1024;
const S3_SUFFIX = '._S3rver_';
const UPLOADS_DIR = `${S3_SUFFIX}uploads`;
// s3rver answers a PUT when its hashing stage has seen the last byte, which can be a little
// before its file stream has written it; wait this long at most for the file to catch up.
const FILE_SETTLE_MS = 10000;

// ---------------------------------------------------------------------------------------
// S3 errors

class S3Error extends Error {
  constructor(status, code, message, extra = {}) {
    super(message);
    this.status = status;
    this.code = code;
    this.extra = extra;
  }
}

function xmlEscape(s) {
  return String(s).replace(/[<>&"']/g, c => `&#${c.charCodeAt(0)};`);
}

function errorXml(code, message, resource, requestId, extra) {
  let xml = `<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>${xmlEscape(code)}</Code>`;
  xml += `<Message>${xmlEscape(message)}</Message>`;
  for (const [name, value] of Object.entries(extra)) {
    xml += `<${name}>${xmlEscape(value)}</${name}>`;
  }
  xml += `<Resource>${xmlEscape(resource)}</Resource><RequestId>${requestId}</RequestId></Error>`;
  return xml;
}

const DEFAULT_FAULT_CODES = {
  200: ['InternalError', 'We encountered an internal error. Please try again.'],
  429: ['SlowDown', 'Please reduce your request rate.'],
  500: ['InternalError', 'We encountered an internal error. Please try again.'],
  502: ['BadGateway', 'Bad gateway.'],
  503: ['SlowDown', 'Please reduce your request rate.'],
  504: ['GatewayTimeout', 'Gateway timeout.'],
};

// ---------------------------------------------------------------------------------------
// SigV4 canonical forms. S3 does not normalise paths (no dot-segment removal, no merging of
// slashes) and does not encode twice: it decodes what was received and encodes it again
// canonically, so a client that signs a non-canonical spelling of its path (a raw ':' or
// '+', lowercase hex) is refused, as S3 and MinIO refuse it.

function percentDecode(s) {
  // req.url holds the bytes of the request line as latin1 characters.
  const bytes = [];
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    if (c === 0x25 && /^[0-9A-Fa-f]{2}$/.test(s.substr(i + 1, 2))) {
      bytes.push(parseInt(s.substr(i + 1, 2), 16));
      i += 2;
    } else {
      bytes.push(c & 0xff);
    }
  }
  return Buffer.from(bytes);
}

function uriEncode(buf, keepSlash) {
  let out = '';
  for (const b of buf) {
    const ch = String.fromCharCode(b);
    if (/[A-Za-z0-9\-_.~]/.test(ch) || (keepSlash && ch === '/')) {
      out += ch;
    } else {
      out += '%' + b.toString(16).toUpperCase().padStart(2, '0');
    }
  }
  return out;
}

function canonicalQuery(rawQuery) {
  if (!rawQuery) return '';
  const pairs = rawQuery
    .split('&')
    .filter(item => item !== '')
    .map(item => {
      const eq = item.indexOf('=');
      const name = eq < 0 ? item : item.slice(0, eq);
      const value = eq < 0 ? '' : item.slice(eq + 1);
      return [uriEncode(percentDecode(name), false), uriEncode(percentDecode(value), false)];
    });
  pairs.sort((a, b) => (a[0] < b[0] ? -1 : a[0] > b[0] ? 1 : a[1] < b[1] ? -1 : a[1] > b[1] ? 1 : 0));
  return pairs.map(([n, v]) => `${n}=${v}`).join('&');
}

// All values of a header in the order received, each trimmed with inner runs of spaces
// collapsed, joined by commas: SigV4's rule, which Node's joined req.headers cannot give.
function headerValues(rawHeaders, name) {
  const values = [];
  for (let i = 0; i < rawHeaders.length; i += 2) {
    if (rawHeaders[i].toLowerCase() === name) {
      values.push(rawHeaders[i + 1].trim().replace(/\s+/g, ' '));
    }
  }
  return values;
}

function hmac(key, data) {
  return crypto.createHmac('sha256', key).update(data).digest();
}

function sha256hex(data) {
  return crypto.createHash('sha256').update(data).digest('hex');
}

function parseAmzDate(s) {
  const m = /^(\d{4})(\d{2})(\d{2})T(\d{2})(\d{2})(\d{2})Z$/.exec(s || '');
  if (!m) return NaN;
  return Date.UTC(+m[1], +m[2] - 1, +m[3], +m[4], +m[5], +m[6]);
}

function verifySignature(ctx) {
  const { req } = ctx;
  const auth = req.headers.authorization;
  if (!auth) {
    if ('X-Amz-Algorithm' in ctx.query || 'x-amz-algorithm' in ctx.query) {
      throw new S3Error(501, 'NotImplemented', 'The test proxy does not accept presigned URLs.');
    }
    throw new S3Error(403, 'AccessDenied', 'Access Denied (the request is not signed)');
  }
  const m = /^AWS4-HMAC-SHA256\s+(.*)$/s.exec(auth);
  if (!m) {
    throw new S3Error(400, 'InvalidArgument', 'Unsupported Authorization Type (only AWS4-HMAC-SHA256)', {
      ArgumentName: 'Authorization',
      ArgumentValue: auth,
    });
  }
  const fields = {};
  for (const part of m[1].split(',')) {
    const eq = part.indexOf('=');
    if (eq > 0) fields[part.slice(0, eq).trim()] = part.slice(eq + 1).trim();
  }
  for (const name of ['Credential', 'SignedHeaders', 'Signature']) {
    if (!fields[name]) {
      throw new S3Error(400, 'AuthorizationHeaderMalformed', `The authorization header is malformed; missing ${name}.`);
    }
  }
  const scopeParts = fields.Credential.split('/');
  if (scopeParts.length !== 5) {
    throw new S3Error(400, 'AuthorizationHeaderMalformed',
      `The authorization header is malformed; the Credential is mal-formed; expecting "<YOUR-AKID>/YYYYMMDD/REGION/SERVICE/aws4_request". (${fields.Credential})`);
  }
  const [accessKeyId, scopeDate, region, service, terminator] = scopeParts;
  if (accessKeyId !== config.accessKeyId) {
    throw new S3Error(403, 'InvalidAccessKeyId', 'The AWS Access Key Id you provided does not exist in our records.', {
      AWSAccessKeyId: accessKeyId,
    });
  }
  if (region !== config.region) {
    throw new S3Error(400, 'AuthorizationHeaderMalformed',
      `The authorization header is malformed; the region '${region}' is wrong; expecting '${config.region}'`,
      { Region: config.region });
  }
  if (service !== 's3' || terminator !== 'aws4_request') {
    throw new S3Error(400, 'AuthorizationHeaderMalformed',
      `The authorization header is malformed; incorrect service "${service}" or terminator "${terminator}". This endpoint belongs to "s3".`);
  }

  // Node joins repeated headers with ", "; the date is read from the first one (curl
  // sends a date given with -H twice), the signature check then sees them all.
  const amzDate = headerValues(req.rawHeaders, 'x-amz-date')[0];
  let requestTime;
  if (amzDate !== undefined) {
    requestTime = parseAmzDate(amzDate);
  } else if (req.headers.date) {
    requestTime = Date.parse(req.headers.date);
  }
  if (requestTime === undefined || isNaN(requestTime)) {
    throw new S3Error(403, 'AccessDenied', 'AWS authentication requires a valid Date or x-amz-date header');
  }
  const timestamp = amzDate !== undefined ? amzDate : new Date(requestTime).toISOString().replace(/[-:]|\.\d+/g, '');
  if (Math.abs(Date.now() - requestTime) > MAX_SKEW_MS) {
    throw new S3Error(403, 'RequestTimeTooSkewed', 'The difference between the request time and the current time is too large.', {
      RequestTime: amzDate || req.headers.date,
      ServerTime: new Date().toISOString(),
      MaxAllowedSkewMilliseconds: MAX_SKEW_MS,
    });
  }
  if (scopeDate !== timestamp.slice(0, 8)) {
    throw new S3Error(403, 'SignatureDoesNotMatch',
      `The credential scope date ${scopeDate} does not match the request date ${timestamp.slice(0, 8)}.`);
  }

  const signedHeaders = fields.SignedHeaders.split(';');
  const sorted = [...signedHeaders].sort();
  if (signedHeaders.some((h, i) => h !== h.toLowerCase() || h !== sorted[i] || h === signedHeaders[i - 1])) {
    throw new S3Error(403, 'SignatureDoesNotMatch', `SignedHeaders must be lowercase, sorted and unique: ${fields.SignedHeaders}`);
  }
  if (!signedHeaders.includes('host')) {
    throw new S3Error(403, 'AccessDenied', 'The host header must be signed.');
  }
  const notSigned = Object.keys(req.headers).filter(h => h.startsWith('x-amz-') && !signedHeaders.includes(h));
  if (notSigned.length) {
    throw new S3Error(403, 'AccessDenied', 'There were headers present in the request which were not signed', {
      HeadersNotSigned: notSigned.join(', '),
    });
  }
  const canonicalHeaders = signedHeaders.map(name => {
    const values = headerValues(req.rawHeaders, name);
    // A signed header the request does not carry means the signer and the wire disagree
    // (e.g. curl signing an "Expect:" it then leaves out): S3 cannot match such a signature.
    if (!values.length) {
      throw new S3Error(403, 'SignatureDoesNotMatch', `The signed header "${name}" is not in the request.`);
    }
    return `${name}:${values.join(',')}\n`;
  }).join('');

  const payloadHash = req.headers['x-amz-content-sha256'];
  const canonicalRequest = [
    req.method,
    uriEncode(percentDecode(ctx.rawPath), true),
    canonicalQuery(ctx.rawQuery),
    canonicalHeaders,
    fields.SignedHeaders,
    payloadHash,
  ].join('\n');
  const scope = `${scopeDate}/${region}/${service}/${terminator}`;
  const stringToSign = ['AWS4-HMAC-SHA256', timestamp, scope, sha256hex(canonicalRequest)].join('\n');
  let key = hmac('AWS4' + config.secretAccessKey, scopeDate);
  key = hmac(key, region);
  key = hmac(key, service);
  key = hmac(key, terminator);
  const expected = hmac(key, stringToSign).toString('hex');
  const given = fields.Signature;
  if (given.length !== expected.length ||
      !crypto.timingSafeEqual(Buffer.from(given), Buffer.from(expected))) {
    throw new S3Error(403, 'SignatureDoesNotMatch',
      'The request signature we calculated does not match the signature you provided. Check your key and signing method.', {
        AWSAccessKeyId: accessKeyId,
        StringToSign: stringToSign,
        SignatureProvided: given,
        CanonicalRequest: canonicalRequest,
      });
  }
}

// The payload hash rules of S3: a hex digest is checked against the body, UNSIGNED-PAYLOAD
// is taken on trust, the aws-chunked streaming forms are not used by walvault or by
// Debian's awscli over plain HTTP, so they are refused rather than half-supported.
function checkPayloadHeader(ctx) {
  const value = ctx.req.headers['x-amz-content-sha256'];
  if (value === undefined) {
    throw new S3Error(400, 'InvalidRequest', 'Missing required header for this request: x-amz-content-sha256');
  }
  if (/^[0-9a-f]{64}$/.test(value)) return value;
  if (value === 'UNSIGNED-PAYLOAD') return null;
  if (value.startsWith('STREAMING-')) {
    throw new S3Error(501, 'NotImplemented', `The test proxy does not decode aws-chunked bodies (${value}).`);
  }
  throw new S3Error(400, 'InvalidArgument',
    'x-amz-content-sha256 must be UNSIGNED-PAYLOAD, STREAMING-AWS4-HMAC-SHA256-PAYLOAD, or a valid sha256 value.', {
      ArgumentName: 'x-amz-content-sha256',
      ArgumentValue: value,
    });
}

function checkContentMd5(ctx) {
  const value = ctx.req.headers['content-md5'];
  if (value === undefined) return null;
  const digest = Buffer.from(value, 'base64');
  if (digest.length !== 16 || digest.toString('base64') !== value) {
    throw new S3Error(400, 'InvalidDigest', 'The Content-MD5 you specified was invalid.', { 'Content-MD5': value });
  }
  return value;
}

// Hashes the body on its way through and holds back the last chunk until the end, so a
// body whose hash does not match never reaches s3rver complete: the upstream request is
// destroyed instead, and s3rver sees an aborted upload.
class BodyVerifier extends Transform {
  constructor(sha256, md5, limit) {
    super();
    this.wantSha256 = sha256;
    this.wantMd5 = md5;
    this.limit = limit;
    this.sha256 = crypto.createHash('sha256');
    this.md5 = md5 ? crypto.createHash('md5') : null;
    this.held = null;
    this.bytes = 0;
  }

  _transform(chunk, encoding, callback) {
    this.bytes += chunk.length;
    if (this.limit !== undefined && this.bytes > this.limit) {
      callback(new S3Error(400, 'MaxMessageLengthExceeded', 'Your request was too big.'));
      return;
    }
    this.sha256.update(chunk);
    if (this.md5) this.md5.update(chunk);
    const previous = this.held;
    this.held = chunk;
    callback(null, previous || undefined);
  }

  _flush(callback) {
    const sha = this.sha256.digest('hex');
    if (this.wantSha256 && sha !== this.wantSha256) {
      callback(new S3Error(400, 'XAmzContentSHA256Mismatch',
        "The provided 'x-amz-content-sha256' header does not match what was computed.", {
          ClientComputedContentSHA256: this.wantSha256,
          S3ComputedContentSHA256: sha,
        }));
      return;
    }
    if (this.md5) {
      const md5 = this.md5.digest('base64');
      if (md5 !== this.wantMd5) {
        callback(new S3Error(400, 'BadDigest', 'The Content-MD5 you specified did not match what we received.', {
          ExpectedDigest: this.wantMd5,
          CalculatedDigest: md5,
        }));
        return;
      }
    }
    callback(null, this.held || undefined);
  }
}

// ---------------------------------------------------------------------------------------
// Faults

let faultRules = [];
let faultLog = [];
let nextRuleId = 1;
let requestLog = [];
let requestSeq = 0;

function validateRule(input) {
  if (!input || typeof input !== 'object' || Array.isArray(input)) throw new Error('a rule must be a JSON object');
  const known = ['op', 'method', 'key', 'query', 'skip', 'count', 'status', 'code', 'message',
    'delay_ms', 'at', 'reset', 'truncate', 'after_bytes', 'retry_after'];
  for (const name of Object.keys(input)) {
    if (!known.includes(name)) throw new Error(`unknown field "${name}"`);
  }
  const actions = ['status', 'delay_ms', 'reset', 'truncate'].filter(a => input[a] !== undefined);
  if (actions.length !== 1) throw new Error('a rule needs exactly one of status, delay_ms, reset, truncate');
  const rule = {
    id: nextRuleId++,
    op: input.op,
    method: input.method ? String(input.method).toUpperCase() : undefined,
    key: input.key,
    query: input.query,
    skip: input.skip === undefined ? 0 : Number(input.skip),
    count: input.count === undefined ? 1 : Number(input.count),
    action: actions[0],
  };
  rule.keyRe = input.key !== undefined ? new RegExp(input.key) : null;
  rule.queryRe = input.query !== undefined ? new RegExp(input.query) : null;
  if (!Number.isInteger(rule.skip) || rule.skip < 0) throw new Error('skip must be a whole number');
  if (!Number.isInteger(rule.count) || (rule.count < 1 && rule.count !== -1)) throw new Error('count must be >= 1 or -1');
  if (input.status !== undefined) {
    rule.status = Number(input.status);
    if (!Number.isInteger(rule.status) || rule.status < 200 || rule.status > 599) throw new Error('bad status');
    const defaults = DEFAULT_FAULT_CODES[rule.status] || ['InternalError', 'Injected fault.'];
    rule.code = input.code || defaults[0];
    rule.message = input.message || defaults[1];
    if (input.retry_after !== undefined) rule.retry_after = String(input.retry_after);
  }
  if (input.delay_ms !== undefined) {
    rule.delay_ms = Number(input.delay_ms);
    rule.at = input.at || 'before';
    if (!['before', 'response', 'body'].includes(rule.at)) throw new Error('at must be before, response or body');
  }
  if (input.reset !== undefined) {
    rule.reset = String(input.reset);
    if (!['before', 'after', 'body'].includes(rule.reset)) throw new Error('reset must be before, after or body');
  }
  if (input.truncate !== undefined) {
    rule.truncate = Number(input.truncate);
    if (!Number.isInteger(rule.truncate) || rule.truncate < 0) throw new Error('truncate must be a byte count');
  }
  if (input.after_bytes !== undefined) rule.after_bytes = Number(input.after_bytes);
  return rule;
}

function publicRule(rule) {
  const out = {};
  for (const [k, v] of Object.entries(rule)) {
    if (v !== undefined && k !== 'keyRe' && k !== 'queryRe') out[k] = v;
  }
  return out;
}

// The first active rule that matches decides; a rule past its count is dropped.
function takeFault(ctx) {
  for (const rule of faultRules) {
    if (rule.op && rule.op !== ctx.op) continue;
    if (rule.method && rule.method !== ctx.req.method) continue;
    if (rule.keyRe && !rule.keyRe.test(ctx.key)) continue;
    if (rule.queryRe && !rule.queryRe.test(ctx.rawQuery)) continue;
    if (rule.skip > 0) {
      rule.skip--;
      continue;
    }
    if (rule.count > 0) rule.count--;
    if (rule.count === 0) faultRules = faultRules.filter(r => r !== rule);
    const entry = {
      time: new Date().toISOString(),
      rule: rule.id,
      action: rule.action,
      op: ctx.op,
      method: ctx.req.method,
      bucket: ctx.bucket,
      key: ctx.key,
      query: ctx.rawQuery,
    };
    for (const field of ['status', 'code', 'delay_ms', 'at', 'reset', 'truncate', 'after_bytes']) {
      if (rule[field] !== undefined) entry[field] = rule[field];
    }
    faultLog.push(entry);
    return rule;
  }
  return null;
}

// ---------------------------------------------------------------------------------------
// Requests

function classify(method, bucket, key, query, headers) {
  if (!bucket) return method === 'GET' ? 'ListBuckets' : 'Service';
  const has = name => Object.prototype.hasOwnProperty.call(query, name);
  if (key === '') {
    switch (method) {
      case 'GET':
        if (has('uploads')) return 'ListMultipartUploads';
        if (has('location')) return 'GetBucketLocation';
        return query['list-type'] === '2' ? 'ListObjectsV2' : 'ListObjects';
      case 'HEAD': return 'HeadBucket';
      case 'POST': return has('delete') ? 'DeleteObjects' : 'PostBucket';
      case 'PUT': return 'CreateBucket';
      case 'DELETE': return 'DeleteBucket';
      default: return 'Bucket' + method;
    }
  }
  switch (method) {
    case 'PUT':
      if (has('uploadId')) return headers['x-amz-copy-source'] ? 'UploadPartCopy' : 'UploadPart';
      if (has('tagging')) return 'PutObjectTagging';
      return headers['x-amz-copy-source'] ? 'CopyObject' : 'PutObject';
    case 'POST':
      if (has('uploads')) return 'CreateMultipartUpload';
      if (has('uploadId')) return 'CompleteMultipartUpload';
      return 'PostObject';
    case 'DELETE': return has('uploadId') ? 'AbortMultipartUpload' : 'DeleteObject';
    case 'GET': return has('uploadId') ? 'ListParts' : 'GetObject';
    case 'HEAD': return 'HeadObject';
    default: return 'Object' + method;
  }
}

function parseTarget(ctx) {
  const { req } = ctx;
  const q = req.url.indexOf('?');
  ctx.rawPath = q < 0 ? req.url : req.url.slice(0, q);
  ctx.rawQuery = q < 0 ? '' : req.url.slice(q + 1);
  ctx.query = {};
  for (const item of ctx.rawQuery.split('&')) {
    if (!item) continue;
    const eq = item.indexOf('=');
    const name = percentDecode(eq < 0 ? item : item.slice(0, eq)).toString('utf8');
    ctx.query[name] = eq < 0 ? '' : percentDecode(item.slice(eq + 1)).toString('utf8');
  }
  if (!ctx.rawPath.startsWith('/')) throw new S3Error(400, 'InvalidURI', 'Couldn\'t parse the specified URI.');
  const host = String(req.headers.host || '').replace(/:\d+$/, '').toLowerCase();
  const vhost = /^([a-z0-9][a-z0-9.-]*)\.localhost$/.exec(host);
  let rest;
  if (vhost) {
    ctx.bucket = vhost[1];
    rest = ctx.rawPath.slice(1);
  } else {
    const slash = ctx.rawPath.indexOf('/', 1);
    ctx.bucket = percentDecode(slash < 0 ? ctx.rawPath.slice(1) : ctx.rawPath.slice(1, slash)).toString('utf8');
    rest = slash < 0 ? '' : ctx.rawPath.slice(slash + 1);
  }
  ctx.key = percentDecode(rest).toString('utf8');
  // s3rver is always addressed path-style, whatever the client used.
  ctx.upstreamPath = (vhost ? `/${uriEncode(Buffer.from(ctx.bucket), false)}${ctx.rawPath}` : ctx.rawPath) +
    (q < 0 ? '' : req.url.slice(q));
  ctx.op = classify(req.method, ctx.bucket, ctx.key, ctx.query, req.headers);
}

function bucketDir(bucket) {
  return path.join(config.dataDir, bucket);
}

// s3rver turns a key into a path: every '/' a directory, the last part a file name with a
// suffix. Keys it would mangle (empty, '.' or '..' directory parts, path.join normalises
// them) are refused here, loudly, instead of being stored under another name.
function objectFiles(bucket, key) {
  const parts = key.split('/');
  const last = parts.pop();
  if (parts.some(p => p === '' || p === '.' || p === '..') || key.includes('\0')) {
    throw new S3Error(400, 'InvalidArgument',
      `The test proxy cannot store key "${key}" in s3rver (empty, "." or ".." path segment).`);
  }
  if (Buffer.byteLength(key) > 1024) {
    throw new S3Error(400, 'KeyTooLongError', 'Your key is too long');
  }
  const dir = path.join(bucketDir(bucket), ...parts);
  const base = path.join(dir, last + S3_SUFFIX);
  return { dir, object: base + 'object', md5: base + 'object.md5', metadata: base + 'metadata.json' };
}

function uploadDir(bucket, uploadId) {
  if (!/^[0-9a-f]{32}$/.test(uploadId || '')) return null;
  return path.join(bucketDir(bucket), UPLOADS_DIR, uploadId);
}

async function fileSize(file) {
  try {
    return (await fsp.stat(file)).size;
  } catch (err) {
    if (err.code === 'ENOENT') return -1;
    throw err;
  }
}

async function waitForSize(file, size) {
  const deadline = Date.now() + FILE_SETTLE_MS;
  for (;;) {
    const actual = await fileSize(file);
    if (actual === size) return;
    if (Date.now() > deadline) {
      throw new S3Error(500, 'InternalError', `s3rver's file ${file} holds ${actual} bytes, expected ${size}`);
    }
    await sleep(5);
  }
}

async function bucketExists(bucket) {
  if (bucket === config.stagingBucket) return false;
  try {
    return (await fsp.stat(bucketDir(bucket))).isDirectory();
  } catch (err) {
    if (err.code === 'ENOENT') return false;
    throw err;
  }
}

function sleep(ms) {
  return new Promise(resolve => setTimeout(resolve, ms));
}

// Conditional writes to one key are decided one at a time, so two racing
// If-None-Match: * writers cannot both win.
const keyLocks = new Map();
async function withKeyLock(lockKey, fn) {
  const previous = keyLocks.get(lockKey) || Promise.resolve();
  let release;
  const mine = new Promise(resolve => { release = resolve; });
  const tail = previous.then(() => mine);
  keyLocks.set(lockKey, tail);
  await previous;
  try {
    return await fn();
  } finally {
    release();
    if (keyLocks.get(lockKey) === tail) keyLocks.delete(lockKey);
  }
}

// No keep-alive towards s3rver: a request sent on a connection s3rver is just closing
// fails, and a streamed body cannot be sent again; on 127.0.0.1 a connection costs little.
const upstreamAgent = new http.Agent({ keepAlive: false, maxSockets: Infinity });
const HOP_BY_HOP = new Set(['connection', 'keep-alive', 'proxy-authenticate', 'proxy-authorization',
  'te', 'trailer', 'transfer-encoding', 'upgrade', 'expect', 'host']);

function upstreamHeaders(req, overrides = {}) {
  const headers = {};
  for (const [name, value] of Object.entries(req.headers)) {
    // Without Authorization s3rver takes the request as anonymous and skips its own,
    // incomplete, signature handling; the proxy has checked the signature already.
    if (HOP_BY_HOP.has(name) || name === 'authorization' || (name === 'if-none-match' && req.method === 'PUT')) continue;
    headers[name] = value;
  }
  headers.host = `${config.upstreamHost}:${config.upstreamPort}`;
  return Object.assign(headers, overrides);
}

function startUpstream(ctx, method, upstreamPath, headers) {
  const upReq = http.request({
    host: config.upstreamHost,
    port: config.upstreamPort,
    method,
    path: upstreamPath,
    headers,
    agent: upstreamAgent,
  });
  const response = new Promise((resolve, reject) => {
    upReq.on('response', resolve);
    upReq.on('error', reject);
  });
  response.catch(() => {}); // awaited later, or deliberately abandoned
  return { upReq, response };
}

function openBody(ctx) {
  if (ctx.expect100 && !ctx.continued) {
    ctx.continued = true;
    ctx.res.writeContinue();
  }
  ctx.bodyState = 'reading';
}

// Streams the request body through the verifier to s3rver; resolves with s3rver's response,
// or rejects with the verifier's S3Error, or with the client's abort.
async function forwardStreaming(ctx, method, upstreamPath, headers) {
  openBody(ctx);
  const verifier = new BodyVerifier(ctx.payloadSha256, ctx.contentMd5);
  const { upReq, response } = startUpstream(ctx, method, upstreamPath, headers);
  try {
    await pipeline(ctx.req, verifier, upReq);
  } catch (err) {
    ctx.bodyState = ctx.req.complete ? 'done' : 'broken';
    if (err instanceof S3Error) {
      upReq.destroy();
      throw err;
    }
    if (clientGone(ctx)) {
      upReq.destroy();
      throw Object.assign(new Error('client went away'), { clientGone: true });
    }
    // s3rver failed or answered before taking the whole body (the proxy checks what
    // s3rver would refuse early, so this means s3rver is in trouble).
    upReq.destroy();
    throw new S3Error(503, 'ServiceUnavailable', `test proxy: sending to s3rver failed: ${err.message}`);
  }
  ctx.bytesIn = verifier.bytes;
  ctx.bodyState = 'done';
  try {
    return await response;
  } catch (err) {
    throw new S3Error(503, 'ServiceUnavailable', `test proxy: s3rver failed: ${err.message}`);
  }
}

async function readBody(ctx, limit) {
  openBody(ctx);
  const verifier = new BodyVerifier(ctx.payloadSha256, ctx.contentMd5, limit);
  const chunks = [];
  try {
    await pipeline(ctx.req, verifier, async function* (source) {
      for await (const chunk of source) chunks.push(chunk);
    });
  } catch (err) {
    ctx.bodyState = ctx.req.complete ? 'done' : 'broken';
    throw err instanceof S3Error ? err : Object.assign(new Error('client went away'), { clientGone: true });
  }
  ctx.bodyState = 'done';
  ctx.bytesIn = verifier.bytes;
  return Buffer.concat(chunks);
}

async function sendBuffered(ctx, method, upstreamPath, headers, body) {
  const { upReq, response } = startUpstream(ctx, method, upstreamPath,
    Object.assign(headers, { 'content-length': String(body.length) }));
  upReq.end(body);
  try {
    return await response;
  } catch (err) {
    throw new S3Error(503, 'ServiceUnavailable', `test proxy: s3rver failed: ${err.message}`);
  }
}

async function readAll(stream) {
  const chunks = [];
  for await (const chunk of stream) chunks.push(chunk);
  return Buffer.concat(chunks);
}

function responseHeaders(upRes) {
  const headers = {};
  for (const [name, value] of Object.entries(upRes.headers)) {
    if (!HOP_BY_HOP.has(name)) headers[name] = value;
  }
  return headers;
}

function clientGone(ctx) {
  return ctx.res.destroyed || !ctx.res.socket || ctx.res.socket.destroyed;
}

function resetConnection(ctx) {
  const socket = ctx.req.socket;
  if (typeof socket.resetAndDestroy === 'function') socket.resetAndDestroy();
  else socket.destroy();
}

// Resolves at the first of the events; unlike racing events.once() promises, it leaves no
// listener behind (a long response waits for 'drain' thousands of times).
function firstOf(emitter, events) {
  return new Promise(resolve => {
    const done = () => {
      for (const e of events) emitter.off(e, done);
      resolve();
    };
    for (const e of events) emitter.on(e, done);
  });
}

async function writeChunk(res, chunk) {
  if (res.write(chunk)) return;
  await firstOf(res, ['drain', 'close']);
}

// Sends an answer (status, headers, body as a stream or a Buffer) to the client, applying
// the response-side faults: reset after, delay at response, and the mid-body ones.
async function respond(ctx, status, headers, body) {
  const fault = ctx.fault;
  if (fault && fault.action === 'reset' && fault.reset === 'after') {
    if (body && !Buffer.isBuffer(body)) body.resume();
    ctx.outcome = 'reset after';
    resetConnection(ctx);
    return;
  }
  if (fault && fault.action === 'delay_ms' && fault.at === 'response') {
    ctx.outcome = `answer delayed ${fault.delay_ms} ms`;
    await sleep(fault.delay_ms);
    if (clientGone(ctx)) {
      if (body && !Buffer.isBuffer(body)) body.destroy();
      return;
    }
  }
  const { res } = ctx;
  ctx.status = status;
  // A request body not read to its end leaves the connection unusable for the next request.
  if (!ctx.req.complete) headers = Object.assign({}, headers, { connection: 'close' });
  res.writeHead(status, headers);
  if (ctx.req.method === 'HEAD' || !body) {
    if (body && !Buffer.isBuffer(body)) body.resume();
    res.end();
    return;
  }
  const total = Buffer.isBuffer(body) ? body.length : Number(headers['content-length']);
  let limit = Infinity;
  if (fault && (fault.action === 'truncate')) limit = fault.truncate;
  if (fault && ((fault.action === 'reset' && fault.reset === 'body') ||
                (fault.action === 'delay_ms' && fault.at === 'body'))) {
    limit = fault.after_bytes !== undefined ? fault.after_bytes : Math.floor((total || 0) / 2);
  }
  const source = Buffer.isBuffer(body) ? [body] : body;
  let sent = 0;
  try {
    for await (const chunk of source) {
      if (clientGone(ctx)) break;
      if (sent + chunk.length < limit || limit === Infinity) {
        await writeChunk(res, chunk);
        sent += chunk.length;
        continue;
      }
      const head = chunk.subarray(0, Math.max(0, limit - sent));
      const tail = chunk.subarray(head.length);
      if (head.length) await writeChunk(res, head);
      sent += head.length;
      if (fault.action === 'delay_ms') {
        ctx.outcome = `stalled ${fault.delay_ms} ms after ${sent} body bytes`;
        await sleep(fault.delay_ms);
        limit = Infinity;
        if (clientGone(ctx)) break;
        if (tail.length) await writeChunk(res, tail);
        sent += tail.length;
        continue;
      }
      if (!Buffer.isBuffer(body)) body.destroy();
      if (fault.action === 'truncate') {
        ctx.outcome = `truncated at ${sent} bytes`;
        res.socket.end(); // a clean close, Content-Length unmet: a body cut short
      } else {
        ctx.outcome = `reset after ${sent} body bytes`;
        // Let what was written reach the client before the reset discards it.
        await new Promise(resolve => res.socket.write('', resolve));
        await sleep(50);
        resetConnection(ctx);
      }
      return;
    }
  } catch (err) {
    if (!Buffer.isBuffer(body)) body.destroy();
    resetConnection(ctx);
    return;
  }
  ctx.bytesOut = sent;
  res.end();
}

async function relay(ctx, upRes) {
  await respond(ctx, upRes.statusCode, responseHeaders(upRes), upRes);
}

// Answers an error the proxy decided on. A body not read yet is drained first, unless the
// client asked for 100-continue and has not sent it: then it is refused outright (as S3
// does), and the connection closed since the client may send the body anyway.
async function sendError(ctx, err) {
  const { req, res } = ctx;
  if (clientGone(ctx)) return;
  ctx.status = err.status;
  ctx.code = err.code;
  const headers = {
    'content-type': 'application/xml',
    'x-amz-request-id': ctx.requestId,
  };
  if (err.retryAfter) headers['retry-after'] = err.retryAfter;
  if (ctx.bodyState === 'unread') {
    if (ctx.expect100) {
      headers.connection = 'close';
    } else {
      ctx.bodyState = 'reading';
      req.resume();
      if (!req.complete) await firstOf(req, ['end', 'close']);
      if (clientGone(ctx)) return;
    }
  } else if (ctx.bodyState !== 'done') {
    headers.connection = 'close';
  }
  const body = req.method === 'HEAD' ? null :
    Buffer.from(errorXml(err.code, err.message, ctx.rawPath || req.url, ctx.requestId, err.extra || {}));
  if (body) headers['content-length'] = String(body.length);
  else headers['content-length'] = '0';
  ctx.fault = null; // the error is the answer; response-side faults do not apply to it
  await respond(ctx, err.status, headers, body);
}

// ---------------------------------------------------------------------------------------
// Operations the proxy completes or answers itself

async function putObjectStaged(ctx) {
  const { req } = ctx;
  const files = objectFiles(ctx.bucket, ctx.key);
  if (!(await bucketExists(ctx.bucket))) {
    throw new S3Error(404, 'NoSuchBucket', 'The specified bucket does not exist', { BucketName: ctx.bucket });
  }
  const length = req.headers['content-length'];
  if (length === undefined || !/^\d+$/.test(length)) {
    throw new S3Error(411, 'MissingContentLength', 'You must provide the Content-Length HTTP header.');
  }
  const inm = req.headers['if-none-match'];
  if (inm !== undefined && inm !== '*' && settings.if_none_match) {
    throw new S3Error(501, 'NotImplemented', 'A header you provided implies functionality that is not implemented',
      { Header: 'If-None-Match' });
  }
  const conditional = inm === '*' && settings.if_none_match;
  const preconditionFailed = () => new S3Error(412, 'PreconditionFailed',
    'At least one of the pre-conditions you specified did not hold', { Condition: 'If-None-Match' });
  if (conditional && (await fileSize(files.object)) >= 0) throw preconditionFailed();

  const stagingKey = `${Date.now()}-${crypto.randomBytes(8).toString('hex')}`;
  const staged = objectFiles(config.stagingBucket, stagingKey);
  const removeStaged = () => Promise.all([staged.object, staged.md5, staged.metadata]
    .map(f => fsp.rm(f, { force: true })));
  let upRes;
  try {
    upRes = await forwardStreaming(ctx, 'PUT', `/${config.stagingBucket}/${stagingKey}`, upstreamHeaders(req));
  } catch (err) {
    await removeStaged();
    throw err;
  }
  const answer = await readAll(upRes);
  if (upRes.statusCode !== 200) {
    await removeStaged();
    await respond(ctx, upRes.statusCode, responseHeaders(upRes), answer);
    return;
  }
  await withKeyLock(`${ctx.bucket}/${ctx.key}`, async () => {
    if (conditional && (await fileSize(files.object)) >= 0) {
      await removeStaged();
      throw preconditionFailed();
    }
    await waitForSize(staged.object, Number(length));
    await fsp.mkdir(files.dir, { recursive: true });
    // The object file last: it is what makes the key exist for s3rver.
    await fsp.rename(staged.md5, files.md5);
    await fsp.rename(staged.metadata, files.metadata);
    await fsp.rename(staged.object, files.object);
  });
  await respond(ctx, 200, responseHeaders(upRes), answer);
}

async function uploadExists(bucket, key, uploadId) {
  const dir = uploadDir(bucket, uploadId);
  if (!dir) return null;
  try {
    const owner = await fsp.readFile(path.join(dir, 'key'), 'utf8');
    return owner === key ? dir : null;
  } catch (err) {
    if (err.code === 'ENOENT' || err.code === 'ENOTDIR') return null;
    throw err;
  }
}

function noSuchUpload(uploadId) {
  return new S3Error(404, 'NoSuchUpload',
    'The specified upload does not exist. The upload ID may be invalid, or the upload may have been aborted or completed.',
    { UploadId: uploadId || '' });
}

async function uploadPart(ctx) {
  const { uploadId, partNumber } = ctx.query;
  objectFiles(ctx.bucket, ctx.key);
  const n = Number(partNumber);
  if (!/^\d+$/.test(partNumber || '') || n < 1 || n > 10000) {
    throw new S3Error(400, 'InvalidArgument', 'Part number must be an integer between 1 and 10000, inclusive', {
      ArgumentName: 'partNumber', ArgumentValue: partNumber || '',
    });
  }
  const dir = await uploadExists(ctx.bucket, ctx.key, uploadId);
  if (!dir) throw noSuchUpload(uploadId);
  if (ctx.req.headers['content-length'] === undefined) {
    throw new S3Error(411, 'MissingContentLength', 'You must provide the Content-Length HTTP header.');
  }
  try {
    const upRes = await forwardStreaming(ctx, 'PUT', ctx.upstreamPath, upstreamHeaders(ctx.req));
    await relay(ctx, upRes);
  } catch (err) {
    // s3rver wrote what it received over any earlier copy of this part; S3 would have kept
    // the earlier one, so the least surprising state is no part at all (InvalidPart later).
    const part = path.join(dir, String(n));
    await Promise.all([fsp.rm(part, { force: true }), fsp.rm(`${part}.md5`, { force: true })]);
    throw err;
  }
}

async function abortUpload(ctx) {
  const { uploadId } = ctx.query;
  objectFiles(ctx.bucket, ctx.key);
  await readBody(ctx, 1024 * 1024);
  const dir = await uploadExists(ctx.bucket, ctx.key, uploadId);
  if (!dir) throw noSuchUpload(uploadId);
  await fsp.rm(dir, { recursive: true, force: true });
  await respond(ctx, 204, { 'x-amz-request-id': ctx.requestId }, null);
}

function parseCompleteBody(xml) {
  if (!/<CompleteMultipartUpload[\s>]/.test(xml)) return null;
  const parts = [];
  const partRe = /<Part>([\s\S]*?)<\/Part>/g;
  let m;
  while ((m = partRe.exec(xml)) !== null) {
    const number = /<PartNumber>\s*(\d+)\s*<\/PartNumber>/.exec(m[1]);
    const etag = /<ETag>([\s\S]*?)<\/ETag>/.exec(m[1]);
    if (!number || !etag) return null;
    parts.push({
      number: Number(number[1]),
      etag: etag[1].replace(/&quot;|&#34;|"/g, '').trim(),
    });
  }
  return parts.length ? parts : null;
}

async function completeUpload(ctx) {
  const { req } = ctx;
  const { uploadId } = ctx.query;
  const files = objectFiles(ctx.bucket, ctx.key);
  const body = await readBody(ctx, MAX_COMPLETE_BODY);
  const dir = await uploadExists(ctx.bucket, ctx.key, uploadId);
  if (!dir) throw noSuchUpload(uploadId);
  const parts = parseCompleteBody(body.toString('utf8'));
  if (!parts) {
    throw new S3Error(400, 'MalformedXML',
      'The XML you provided was not well-formed or did not validate against our published schema');
  }
  let total = 0;
  for (let i = 0; i < parts.length; i++) {
    const part = parts[i];
    if (i > 0 && part.number <= parts[i - 1].number) {
      throw new S3Error(400, 'InvalidPartOrder', 'The list of parts was not in ascending order. Parts must be ordered by part number.');
    }
    const file = path.join(dir, String(part.number));
    const [size, md5] = await Promise.all([
      fileSize(file),
      fsp.readFile(`${file}.md5`, 'utf8').catch(() => null),
    ]);
    if (size < 0 || md5 === null || md5.trim() !== part.etag) {
      throw new S3Error(400, 'InvalidPart',
        'One or more of the specified parts could not be found. The part may not have been uploaded, or the specified entity tag may not match the part\'s entity tag.',
        { UploadId: uploadId, PartNumber: part.number, ETag: part.etag });
    }
    if (i < parts.length - 1 && size < settings.min_part_size) {
      throw new S3Error(400, 'EntityTooSmall', 'Your proposed upload is smaller than the minimum allowed object size.', {
        ProposedSize: size, MinSizeAllowed: settings.min_part_size, PartNumber: part.number,
      });
    }
    total += size;
  }
  const inm = req.headers['if-none-match'];
  const conditional = inm === '*' && settings.if_none_match;
  const complete = async () => {
    if (conditional && (await fileSize(files.object)) >= 0) {
      throw new S3Error(412, 'PreconditionFailed', 'At least one of the pre-conditions you specified did not hold',
        { Condition: 'If-None-Match' });
    }
    const upRes = await sendBuffered(ctx, 'POST', ctx.upstreamPath, upstreamHeaders(req), body);
    const answer = await readAll(upRes);
    if (upRes.statusCode === 200) await waitForSize(files.object, total);
    return { upRes, answer };
  };
  const { upRes, answer } = await withKeyLock(`${ctx.bucket}/${ctx.key}`, complete);
  await respond(ctx, upRes.statusCode, responseHeaders(upRes), answer);
}

// Deletes one object's files. s3rver also removes directories left empty, and two deletes
// in one directory then race (ENOENT, a 500 for the whole DeleteObjects); empty
// directories are harmless to s3rver's listings, so they simply stay.
async function deleteObjectFiles(bucket, key) {
  const files = objectFiles(bucket, key);
  await withKeyLock(`${bucket}/${key}`, async () => {
    await fsp.rm(files.object, { force: true }); // first: it is what makes the key exist
    await fsp.rm(files.md5, { force: true });
    await fsp.rm(files.metadata, { force: true });
  });
}

async function deleteObject(ctx) {
  objectFiles(ctx.bucket, ctx.key);
  await readBody(ctx, 1024 * 1024);
  if (!(await bucketExists(ctx.bucket))) {
    throw new S3Error(404, 'NoSuchBucket', 'The specified bucket does not exist', { BucketName: ctx.bucket });
  }
  await deleteObjectFiles(ctx.bucket, ctx.key);
  await respond(ctx, 204, { 'x-amz-request-id': ctx.requestId }, null);
}

function xmlUnescape(s) {
  return s.replace(/&(lt|gt|amp|quot|apos|#x[0-9a-fA-F]+|#\d+);/g, (m, e) => {
    switch (e) {
      case 'lt': return '<';
      case 'gt': return '>';
      case 'amp': return '&';
      case 'quot': return '"';
      case 'apos': return "'";
      default: return String.fromCodePoint(e[1] === 'x' ? parseInt(e.slice(2), 16) : parseInt(e.slice(1), 10));
    }
  });
}

async function deleteObjects(ctx) {
  const { req } = ctx;
  if (!req.headers['content-md5'] && !Object.keys(req.headers).some(h => h.startsWith('x-amz-checksum-'))) {
    throw new S3Error(400, 'InvalidRequest', 'Missing required header for this request: Content-Md5');
  }
  const xml = (await readBody(ctx, 4 * 1024 * 1024)).toString('utf8');
  if (!(await bucketExists(ctx.bucket))) {
    throw new S3Error(404, 'NoSuchBucket', 'The specified bucket does not exist', { BucketName: ctx.bucket });
  }
  const malformed = () => new S3Error(400, 'MalformedXML',
    'The XML you provided was not well-formed or did not validate against our published schema');
  if (!/<Delete[\s>]/.test(xml)) throw malformed();
  const keys = [];
  const objectRe = /<Object>([\s\S]*?)<\/Object>/g;
  let m;
  while ((m = objectRe.exec(xml)) !== null) {
    const key = /<Key>([\s\S]*?)<\/Key>/.exec(m[1]);
    if (!key) throw malformed();
    keys.push(xmlUnescape(key[1]));
  }
  if (keys.length === 0 || keys.length > 1000) throw malformed();
  const quiet = /<Quiet>\s*true\s*<\/Quiet>/i.test(xml);
  let out = '<?xml version="1.0" encoding="UTF-8"?>\n<DeleteResult xmlns="http://s3.amazonaws.com/doc/2006-03-01/">';
  for (const key of keys) {
    try {
      await deleteObjectFiles(ctx.bucket, key);
      if (!quiet) out += `<Deleted><Key>${xmlEscape(key)}</Key></Deleted>`;
    } catch (err) {
      const code = err instanceof S3Error ? err.code : 'InternalError';
      out += `<Error><Key>${xmlEscape(key)}</Key><Code>${code}</Code><Message>${xmlEscape(err.message)}</Message></Error>`;
    }
  }
  out += '</DeleteResult>';
  const body = Buffer.from(out);
  await respond(ctx, 200, {
    'content-type': 'application/xml',
    'content-length': String(body.length),
    'x-amz-request-id': ctx.requestId,
  }, body);
}

async function listUploads(ctx) {
  await readBody(ctx, 1024 * 1024);
  if (!(await bucketExists(ctx.bucket))) {
    throw new S3Error(404, 'NoSuchBucket', 'The specified bucket does not exist', { BucketName: ctx.bucket });
  }
  const prefix = ctx.query.prefix || '';
  const base = path.join(bucketDir(ctx.bucket), UPLOADS_DIR);
  let ids = [];
  try {
    ids = await fsp.readdir(base);
  } catch (err) {
    if (err.code !== 'ENOENT') throw err;
  }
  const uploads = [];
  for (const id of ids) {
    try {
      const key = await fsp.readFile(path.join(base, id, 'key'), 'utf8');
      const stat = await fsp.stat(path.join(base, id, 'key'));
      if (key.startsWith(prefix)) uploads.push({ key, id, initiated: stat.mtime.toISOString() });
    } catch (err) {
      // an upload being aborted or completed right now
    }
  }
  uploads.sort((a, b) => (a.key < b.key ? -1 : a.key > b.key ? 1 : a.id < b.id ? -1 : 1));
  let xml = '<?xml version="1.0" encoding="UTF-8"?>\n';
  xml += '<ListMultipartUploadsResult xmlns="http://s3.amazonaws.com/doc/2006-03-01/">';
  xml += `<Bucket>${xmlEscape(ctx.bucket)}</Bucket><Prefix>${xmlEscape(prefix)}</Prefix>`;
  xml += `<MaxUploads>${uploads.length}</MaxUploads><IsTruncated>false</IsTruncated>`;
  for (const u of uploads) {
    xml += `<Upload><Key>${xmlEscape(u.key)}</Key><UploadId>${u.id}</UploadId>`;
    xml += `<Initiated>${u.initiated}</Initiated><StorageClass>STANDARD</StorageClass></Upload>`;
  }
  xml += '</ListMultipartUploadsResult>';
  const body = Buffer.from(xml);
  await respond(ctx, 200, {
    'content-type': 'application/xml',
    'content-length': String(body.length),
    'x-amz-request-id': ctx.requestId,
  }, body);
}

async function forwardPlain(ctx) {
  if (ctx.key !== '' && ctx.bucket !== '') objectFiles(ctx.bucket, ctx.key);
  if (ctx.bucket === config.stagingBucket) {
    throw new S3Error(404, 'NoSuchBucket', 'The specified bucket does not exist', { BucketName: ctx.bucket });
  }
  const upRes = await forwardStreaming(ctx, ctx.req.method, ctx.upstreamPath, upstreamHeaders(ctx.req));
  await relay(ctx, upRes);
}

// ---------------------------------------------------------------------------------------
// The S3 side

async function handle(req, res, expect100) {
  const ctx = {
    req,
    res,
    expect100,
    continued: false,
    bodyState: 'unread',
    requestId: crypto.randomBytes(8).toString('hex').toUpperCase(),
    started: Date.now(),
    bytesIn: 0,
    bytesOut: 0,
    op: '?',
    bucket: '',
    key: '',
    rawQuery: '',
    fault: null,
  };
  res.on('close', () => logRequest(ctx));
  try {
    parseTarget(ctx);
    ctx.fault = takeFault(ctx);
    const fault = ctx.fault;
    if (fault && fault.action === 'status') {
      const err = new S3Error(fault.status, fault.code, fault.message);
      err.retryAfter = fault.retry_after;
      ctx.outcome = `injected ${fault.status} ${fault.code}`;
      await sendError(ctx, err);
      return;
    }
    if (fault && fault.action === 'delay_ms' && fault.at === 'before') {
      ctx.outcome = `delayed ${fault.delay_ms} ms`;
      await sleep(fault.delay_ms);
      if (clientGone(ctx)) return;
    }
    if (fault && fault.action === 'reset' && fault.reset === 'before') {
      await resetBefore(ctx, fault.after_bytes || 0);
      return;
    }
    // S3's order: an anonymous request is refused before its headers are looked at.
    if (!req.headers.authorization) verifySignature(ctx);
    ctx.payloadSha256 = checkPayloadHeader(ctx);
    verifySignature(ctx);
    ctx.contentMd5 = checkContentMd5(ctx);
    switch (ctx.op) {
      case 'PutObject': return await putObjectStaged(ctx);
      case 'UploadPart': return await uploadPart(ctx);
      case 'AbortMultipartUpload': return await abortUpload(ctx);
      case 'CompleteMultipartUpload': return await completeUpload(ctx);
      case 'ListMultipartUploads': return await listUploads(ctx);
      case 'DeleteObject': return await deleteObject(ctx);
      case 'DeleteObjects': return await deleteObjects(ctx);
      default: return await forwardPlain(ctx);
    }
  } catch (err) {
    if (err.clientGone) {
      ctx.outcome = 'client went away';
      return;
    }
    if (!(err instanceof S3Error)) {
      console.error(`${new Date().toISOString()} ${ctx.requestId} internal error:`, err);
      err = new S3Error(500, 'InternalError', `test proxy: ${err.message}`);
    }
    if (res.headersSent) {
      resetConnection(ctx);
      return;
    }
    try {
      await sendError(ctx, err);
    } catch (sendErr) {
      resetConnection(ctx);
    }
  }
}

async function resetBefore(ctx, afterBytes) {
  ctx.outcome = `reset before (after ${afterBytes} request bytes)`;
  if (afterBytes > 0) {
    openBody(ctx);
    let seen = 0;
    await new Promise(resolve => {
      const onData = chunk => {
        seen += chunk.length;
        if (seen >= afterBytes) done();
      };
      const done = () => {
        ctx.req.off('data', onData);
        resolve();
      };
      ctx.req.on('data', onData);
      ctx.req.once('end', done);
      ctx.req.once('close', done);
    });
  }
  resetConnection(ctx);
}

function logRequest(ctx) {
  const entry = {
    seq: ++requestSeq,
    time: new Date(ctx.started).toISOString(),
    op: ctx.op,
    method: ctx.req.method,
    bucket: ctx.bucket,
    key: ctx.key,
    query: ctx.rawQuery,
    status: ctx.status || 0,
    code: ctx.code,
    ms: Date.now() - ctx.started,
    outcome: ctx.outcome,
  };
  requestLog.push(entry);
  if (requestLog.length > 10000) requestLog = requestLog.slice(-5000);
  console.log(`${entry.time} ${ctx.requestId} ${entry.op} ${entry.method} ${ctx.rawPath || ctx.req.url}` +
    `${ctx.rawQuery ? '?' + ctx.rawQuery : ''} -> ${entry.status || '-'}${entry.code ? ' ' + entry.code : ''}` +
    ` ${entry.ms} ms${entry.outcome ? ' [' + entry.outcome + ']' : ''}`);
}

// ---------------------------------------------------------------------------------------
// The control side

async function control(req, res) {
  const reply = (status, value) => {
    const body = typeof value === 'string' ? value + '\n' : JSON.stringify(value, null, 1) + '\n';
    res.writeHead(status, { 'content-type': typeof value === 'string' ? 'text/plain' : 'application/json' });
    res.end(body);
  };
  try {
    const body = (await readAll(req)).toString('utf8');
    const route = `${req.method} ${req.url.replace(/\?.*$/, '')}`;
    switch (route) {
      case 'GET /health': return reply(200, 'ok');
      case 'GET /faults': return reply(200, faultRules.map(publicRule));
      case 'POST /faults': {
        const input = JSON.parse(body);
        const rules = (Array.isArray(input) ? input : [input]).map(validateRule);
        faultRules.push(...rules);
        return reply(200, { ids: rules.map(r => r.id) });
      }
      case 'DELETE /faults':
        faultRules = [];
        return reply(200, { cleared: true });
      case 'GET /faults/log': return reply(200, faultLog);
      case 'DELETE /faults/log':
        faultLog = [];
        return reply(200, { cleared: true });
      case 'GET /requests': return reply(200, requestLog);
      case 'DELETE /requests':
        requestLog = [];
        return reply(200, { cleared: true });
      case 'GET /settings': return reply(200, settings);
      case 'POST /settings': {
        const input = JSON.parse(body);
        for (const [name, value] of Object.entries(input)) {
          if (name === 'if_none_match' && typeof value === 'boolean') settings.if_none_match = value;
          else if (name === 'min_part_size' && Number.isInteger(value) && value >= 0) settings.min_part_size = value;
          else throw new Error(`bad setting ${name}=${JSON.stringify(value)}`);
        }
        return reply(200, settings);
      }
      default: return reply(404, { error: `no such control endpoint: ${route}` });
    }
  } catch (err) {
    return reply(400, { error: err.message });
  }
}

// ---------------------------------------------------------------------------------------

const server = http.createServer((req, res) => { handle(req, res, false); });
// Answering "Expect: 100-continue" ourselves lets a refused upload be refused before its
// body is sent, as S3 does, instead of Node agreeing to every body.
server.on('checkContinue', (req, res) => { handle(req, res, true); });
server.requestTimeout = 0; // a GiB upload may take longer than Node's default 5 minutes
server.keepAliveTimeout = 20000;
server.on('clientError', (err, socket) => {
  if (socket.writable && !socket.destroyed) socket.end('HTTP/1.1 400 Bad Request\r\nConnection: close\r\n\r\n');
});

const controlServer = http.createServer((req, res) => { control(req, res); });

server.listen(config.port, '127.0.0.1', () => {
  controlServer.listen(config.controlPort, '127.0.0.1', () => {
    console.log(`proxy.js: S3 on 127.0.0.1:${config.port} -> s3rver 127.0.0.1:${config.upstreamPort},` +
      ` control on 127.0.0.1:${config.controlPort}, region ${config.region}, data ${config.dataDir}`);
  });
});

for (const signal of ['SIGTERM', 'SIGINT']) {
  process.on(signal, () => process.exit(0));
}
