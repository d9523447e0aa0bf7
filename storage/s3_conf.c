/* Opening an s3:// store: the URL, endpoint, region, addressing style, TLS and credentials.
 * Nothing here touches the network, so opening is cheap (wal-push opens a store per call). */
#include "storage/s3_internal.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <arpa/inet.h>
#include <ini.h>

#define S3_SCHEME "s3://"
#define DEFAULT_REGION "us-east-1"
#define DEFAULT_RETRY_S 60
#define DEFAULT_STALL_S 30
#define SECONDS_MAX 86400

struct endpoint {
    char scheme[8];
    char hostport[256]; /* host[:port], IPv6 in brackets */
    char host[256];     /* without port or brackets */
};

static char *dup_or_null(const char *s)
{
    return s && s[0] ? strdup(s) : NULL;
}

static const char *env(const char *name)
{
    const char *v = getenv(name);
    return v && v[0] ? v : NULL;
}

/* ---- URL ---- */

static bool bucket_char(char c)
{
    return isalnum((unsigned char)c) || c == '.' || c == '-' || c == '_';
}

static int split_url(const char *url, struct s3_store *s, wv_err_t *err)
{
    const char *b = url + strlen(S3_SCHEME);
    size_t blen = strcspn(b, "/");
    if (blen == 0 || blen > 255)
        return wv_err_set(err, WV_EUSAGE, "invalid repository URL %s: use s3://bucket/prefix", url);
    for (size_t i = 0; i < blen; i++)
        if (!bucket_char(b[i]))
            return wv_err_set(err, WV_EUSAGE,
                              "invalid repository URL %s: bad character in the bucket name", url);
    s->bucket = strndup(b, blen);
    const char *p = b + blen;
    while (*p == '/')
        p++;
    size_t plen = strlen(p);
    while (plen > 0 && p[plen - 1] == '/')
        plen--;
    s->prefix = malloc(plen + 2);
    if (!s->bucket || !s->prefix)
        return wv_err_set(err, WV_EFAIL, "out of memory opening %s", url);
    memcpy(s->prefix, p, plen);
    s->prefix[plen] = '\0';
    if (plen == 0)
        return 0;
    int rc = storage_check_key(s->prefix, err);
    if (rc)
        return wv_err_prefix(err, "invalid prefix in repository URL %s", url);
    strcat(s->prefix, "/");
    return 0;
}

static char *printable_url(const struct s3_store *s)
{
    size_t n = strlen(S3_SCHEME) + strlen(s->bucket) + strlen(s->prefix) + 2;
    char *u = malloc(n);
    if (!u)
        return NULL;
    snprintf(u, n, "%s%s%s%.*s", S3_SCHEME, s->bucket, s->prefix[0] ? "/" : "",
             s->prefix[0] ? (int)strlen(s->prefix) - 1 : 0, s->prefix);
    return u;
}

/* ---- endpoint, region, addressing ---- */

static int parse_endpoint(const char *text, struct endpoint *ep, wv_err_t *err)
{
    const char *rest = text;
    snprintf(ep->scheme, sizeof ep->scheme, "https");
    if (strncmp(text, "http://", 7) == 0) {
        snprintf(ep->scheme, sizeof ep->scheme, "http");
        rest = text + 7;
    } else if (strncmp(text, "https://", 8) == 0) {
        rest = text + 8;
    } else if (strstr(text, "://")) {
        return wv_err_set(err, WV_EUSAGE, "--s3-endpoint %s: use http:// or https://", text);
    }
    size_t len = strcspn(rest, "/");
    if (len == 0 || len >= sizeof ep->hostport || (rest[len] && strcmp(rest + len, "/") != 0))
        return wv_err_set(err, WV_EUSAGE,
                          "--s3-endpoint %s: give scheme://host[:port] without a path", text);
    memcpy(ep->hostport, rest, len);
    ep->hostport[len] = '\0';
    const char *h = ep->hostport;
    size_t hlen = h[0] == '[' ? strcspn(h, "]") + 1 : strcspn(h, ":");
    if (h[0] == '[' && h[hlen - 1] != ']')
        return wv_err_set(err, WV_EUSAGE, "--s3-endpoint %s: unclosed IPv6 address", text);
    size_t off = h[0] == '[' ? 1 : 0;
    snprintf(ep->host, sizeof ep->host, "%.*s", (int)(hlen - 2 * off), h + off);
    return 0;
}

static bool host_is_local_or_ip(const char *host)
{
    unsigned char addr[16];
    return strcmp(host, "localhost") == 0 || inet_pton(AF_INET, host, addr) == 1 ||
           inet_pton(AF_INET6, host, addr) == 1;
}

/* "s3.eu-west-1.amazonaws.com" or "s3-eu-west-1.amazonaws.com" name their region. */
static bool region_of_aws_host(const char *host, char *out, size_t cap)
{
    const char *suffix = ".amazonaws.com";
    size_t hl = strlen(host), sl = strlen(suffix);
    if (hl <= sl + 3 || strcmp(host + hl - sl, suffix) != 0 || strncmp(host, "s3", 2) != 0)
        return false;
    if (host[2] != '.' && host[2] != '-')
        return false;
    const char *r = host + 3;
    size_t rl = hl - sl - 3;
    if (rl >= cap || memchr(r, '.', rl))
        return false;
    snprintf(out, cap, "%.*s", (int)rl, r);
    return true;
}

static int choose_region(const struct storage_opts *o, const struct endpoint *ep, bool explicit_ep,
                         struct s3_store *s)
{
    char from_host[64];
    const char *r = o->s3_region && o->s3_region[0] ? o->s3_region : NULL;
    if (!r && explicit_ep && region_of_aws_host(ep->host, from_host, sizeof from_host))
        r = from_host;
    if (!r)
        r = env("AWS_REGION");
    if (!r)
        r = env("AWS_DEFAULT_REGION");
    s->region = strdup(r ? r : DEFAULT_REGION);
    return s->region ? 0 : WV_EFAIL;
}

/* Virtual-host addressing needs a bucket name that is a valid DNS label sequence; a dotted
 * name also breaks the wildcard TLS certificate. */
static bool bucket_fits_host_style(const char *bucket, const char *scheme)
{
    for (const char *p = bucket; *p; p++)
        if (isupper((unsigned char)*p) || *p == '_' || (*p == '.' && strcmp(scheme, "https") == 0))
            return false;
    return true;
}

static int choose_style(const struct storage_opts *o, const struct endpoint *ep, bool explicit_ep,
                        const struct s3_store *s, bool *path_style, wv_err_t *err)
{
    const char *style = o->s3_uri_style && o->s3_uri_style[0] ? o->s3_uri_style : NULL;
    if (style && strcmp(style, "path") != 0 && strcmp(style, "host") != 0)
        return wv_err_set(err, WV_EUSAGE, "--s3-uri-style wants path or host, got \"%s\"", style);
    if (style)
        *path_style = strcmp(style, "path") == 0;
    else
        *path_style = (explicit_ep && host_is_local_or_ip(ep->host)) ||
                      !bucket_fits_host_style(s->bucket, ep->scheme);
    if (!*path_style && host_is_local_or_ip(ep->host))
        return wv_err_set(err, WV_EUSAGE,
                          "--s3-uri-style host needs a DNS name in --s3-endpoint, not %s",
                          ep->host);
    return 0;
}

static int set_addressing(const struct storage_opts *o, struct s3_store *s, wv_err_t *err)
{
    struct endpoint ep = {0};
    bool explicit_ep = o->s3_endpoint && o->s3_endpoint[0];
    int rc = 0;
    if (explicit_ep) {
        rc = parse_endpoint(o->s3_endpoint, &ep, err);
    } else {
        char def[128];
        const char *r = o->s3_region && o->s3_region[0] ? o->s3_region : env("AWS_REGION");
        r = r ? r : env("AWS_DEFAULT_REGION");
        snprintf(def, sizeof def, "https://s3.%s.amazonaws.com", r ? r : DEFAULT_REGION);
        rc = parse_endpoint(def, &ep, err);
    }
    if (!rc && choose_region(o, &ep, explicit_ep, s) != 0)
        rc = wv_err_set(err, WV_EFAIL, "out of memory opening an S3 store");
    bool path_style = false;
    if (!rc)
        rc = choose_style(o, &ep, explicit_ep, s, &path_style, err);
    if (rc)
        return rc;
    size_t n = strlen(ep.scheme) + strlen(s->bucket) + strlen(ep.hostport) + 8;
    s->base_url = malloc(n);
    s->bucket_path = malloc(strlen(s->bucket) + 2);
    if (!s->base_url || !s->bucket_path)
        return wv_err_set(err, WV_EFAIL, "out of memory opening an S3 store");
    if (path_style) {
        snprintf(s->base_url, n, "%s://%s", ep.scheme, ep.hostport);
        sprintf(s->bucket_path, "/%s", s->bucket);
    } else {
        snprintf(s->base_url, n, "%s://%s.%s", ep.scheme, s->bucket, ep.hostport);
        s->bucket_path[0] = '\0';
    }
    return 0;
}

/* ---- credentials ---- */

struct profile_ctx {
    const char *profile;
    char *key_id, *secret, *token;
};

static int on_credentials_line(void *user, const char *section, const char *name, const char *value)
{
    struct profile_ctx *p = user;
    if (strcmp(section, p->profile) != 0)
        return 1;
    char **slot = strcmp(name, "aws_access_key_id") == 0       ? &p->key_id
                  : strcmp(name, "aws_secret_access_key") == 0 ? &p->secret
                  : strcmp(name, "aws_session_token") == 0     ? &p->token
                                                               : NULL;
    if (slot) {
        free(*slot);
        *slot = strdup(value);
    }
    return 1;
}

static int credentials_from_file(struct s3_store *s, const char *profile, bool required,
                                 wv_err_t *err)
{
    char path[4096];
    const char *file = env("AWS_SHARED_CREDENTIALS_FILE");
    if (!file && env("HOME"))
        snprintf(path, sizeof path, "%s/.aws/credentials", env("HOME"));
    else
        snprintf(path, sizeof path, "%s", file ? file : "");
    struct profile_ctx p = {.profile = profile};
    int rc = path[0] ? ini_parse(path, on_credentials_line, &p) : -1;
    if (rc == 0 && p.key_id && p.secret) {
        s->key_id = p.key_id;
        s->secret = p.secret;
        s->token = p.token;
        return 0;
    }
    free(p.key_id);
    free(p.secret);
    free(p.token);
    if (rc > 0)
        return wv_err_set(err, WV_EUSAGE, "S3 credentials file %s: syntax error on line %d", path,
                          rc);
    if (!required)
        return 1;
    if (rc != 0)
        return wv_err_set(err, WV_EUSAGE, "cannot read S3 credentials file %s for profile %s", path,
                          profile);
    return wv_err_set(err, WV_EUSAGE,
                      "S3 credentials file %s has no aws_access_key_id and "
                      "aws_secret_access_key in profile [%s]",
                      path, profile);
}

static int credentials_from(struct s3_store *s, const char *id, const char *secret,
                            const char *token, const char *where, wv_err_t *err)
{
    if (!id || !secret)
        return wv_err_set(err, WV_EUSAGE,
                          "incomplete S3 credentials in %s: give both the "
                          "access key id and the secret access key",
                          where);
    s->key_id = strdup(id);
    s->secret = strdup(secret);
    s->token = dup_or_null(token);
    if (!s->key_id || !s->secret)
        return wv_err_set(err, WV_EFAIL, "out of memory reading S3 credentials");
    return 0;
}

/* The config file's keys, then an explicit profile, then AWS_* variables, then the shared
 * credentials file (AWS_PROFILE or "default"). */
static int set_credentials(const struct storage_opts *o, struct s3_store *s, wv_err_t *err)
{
    const char *id = o->s3_access_key_id, *secret = o->s3_secret_access_key;
    if ((id && id[0]) || (secret && secret[0]))
        return credentials_from(s, id && id[0] ? id : NULL, secret && secret[0] ? secret : NULL,
                                o->s3_session_token, "the configuration", err);
    if (o->s3_profile && o->s3_profile[0])
        return credentials_from_file(s, o->s3_profile, true, err);
    if (env("AWS_ACCESS_KEY_ID") || env("AWS_SECRET_ACCESS_KEY"))
        return credentials_from(s, env("AWS_ACCESS_KEY_ID"), env("AWS_SECRET_ACCESS_KEY"),
                                env("AWS_SESSION_TOKEN"), "the environment", err);
    const char *profile = env("AWS_PROFILE") ? env("AWS_PROFILE") : "default";
    int rc = credentials_from_file(s, profile, env("AWS_PROFILE") != NULL, err);
    if (rc <= 0)
        return rc;
    return wv_err_set(err, WV_EUSAGE,
                      "no S3 credentials: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, "
                      "s3-access-key-id and s3-secret-access-key in the config file, or a "
                      "profile in ~/.aws/credentials");
}

/* ---- the rest ---- */

static int seconds_option(const char *given, const char *env_name, long def, const char *flag,
                          long *out, wv_err_t *err)
{
    const char *v = given && given[0] ? given : env(env_name);
    if (!v) {
        *out = def;
        return 0;
    }
    char *end;
    long n = strtol(v, &end, 10);
    if (*end || end == v || n < 1 || n > SECONDS_MAX)
        return wv_err_set(err, WV_EUSAGE, "--%s wants seconds from 1 to %d, got \"%s\"", flag,
                          SECONDS_MAX, v);
    *out = n;
    return 0;
}

static char *header_line(const char *name, const char *value)
{
    size_t n = strlen(name) + strlen(value) + 3;
    char *h = malloc(n);
    if (h)
        snprintf(h, n, "%s: %s", name, value);
    return h;
}

static int sse_header_lines(struct s3_store *s, wv_err_t *err)
{
    if (s->sse && !(s->sse_headers[0] = header_line("x-amz-server-side-encryption", s->sse)))
        return wv_err_set(err, WV_EFAIL, "out of memory opening an S3 store");
    if (s->sse_kms_id && !(s->sse_headers[1] = header_line(
                               "x-amz-server-side-encryption-aws-kms-key-id", s->sse_kms_id)))
        return wv_err_set(err, WV_EFAIL, "out of memory opening an S3 store");
    return 0;
}

void s3_add_sse_headers(const struct s3_store *s, struct s3_call *c)
{
    for (int i = 0; i < 2; i++)
        if (s->sse_headers[i] && c->header_count < S3_MAX_HEADERS)
            c->headers[c->header_count++] = s->sse_headers[i];
}

static int set_tls_and_sse(const struct storage_opts *o, struct s3_store *s, wv_err_t *err)
{
    if (o->s3_ca_file && o->s3_ca_file[0]) {
        if (access(o->s3_ca_file, R_OK) != 0)
            return wv_err_errno(err, WV_EUSAGE, "cannot read --s3-ca-file %s", o->s3_ca_file);
        s->ca_file = strdup(o->s3_ca_file);
    }
    const char *sse = o->s3_sse && o->s3_sse[0] ? o->s3_sse : NULL;
    if (sse && strcmp(sse, "AES256") != 0 && strcmp(sse, "aws:kms") != 0)
        return wv_err_set(err, WV_EUSAGE, "--s3-sse wants AES256 or aws:kms, got \"%s\"", sse);
    if (o->s3_sse_kms_key_id && o->s3_sse_kms_key_id[0] && (!sse || strcmp(sse, "aws:kms") != 0))
        return wv_err_set(err, WV_EUSAGE, "--s3-sse-kms-key-id needs --s3-sse aws:kms");
    s->sse = dup_or_null(sse);
    s->sse_kms_id = dup_or_null(o->s3_sse_kms_key_id);
    return sse_header_lines(s, err);
}

static int configure(const char *url, const struct storage_opts *o, struct s3_store *s,
                     wv_err_t *err)
{
    int rc = split_url(url, s, err);
    if (!rc)
        rc = set_addressing(o, s, err);
    if (!rc)
        rc = set_credentials(o, s, err);
    if (!rc)
        rc = set_tls_and_sse(o, s, err);
    long retry_s = 0;
    if (!rc)
        rc = seconds_option(o->s3_retry_seconds, "WALVAULT_S3_RETRY_SECONDS", DEFAULT_RETRY_S,
                            "s3-retry-seconds", &retry_s, err);
    if (!rc)
        rc = seconds_option(o->s3_stall_seconds, "WALVAULT_S3_STALL_SECONDS", DEFAULT_STALL_S,
                            "s3-stall-seconds", &s->stall_s, err);
    s->retry_ms = retry_s * 1000;
    if (rc)
        return rc;
    size_t n = strlen(s->region) + 16;
    s->sigv4 = malloc(n);
    if (!s->sigv4)
        return wv_err_set(err, WV_EFAIL, "out of memory opening %s", url);
    snprintf(s->sigv4, n, "aws:amz:%s:s3", s->region);
    return s3_http_init(s, err);
}

int s3_store_new(const char *url, const struct storage_opts *opts, struct s3_store **out,
                 char **printable, wv_err_t *err)
{
    static const struct storage_opts none = {0};
    *out = NULL;
    *printable = NULL;
    struct s3_store *s = calloc(1, sizeof *s);
    if (!s)
        return wv_err_set(err, WV_EFAIL, "out of memory opening %s", url);
    atomic_init(&s->inm, S3_INM_UNKNOWN);
    int rc = configure(url, opts ? opts : &none, s, err);
    if (!rc && !(*printable = printable_url(s)))
        rc = wv_err_set(err, WV_EFAIL, "out of memory opening %s", url);
    if (rc) {
        s3_store_free(s);
        return rc;
    }
    *out = s;
    return 0;
}

static void free_secret(char *p)
{
    if (p) {
        memset(p, 0, strlen(p));
        free(p);
    }
}

void s3_store_free(struct s3_store *s)
{
    if (!s)
        return;
    if (s->share)
        s3_http_cleanup(s);
    free(s->bucket);
    free(s->prefix);
    free(s->base_url);
    free(s->bucket_path);
    free(s->region);
    free(s->sigv4);
    free(s->key_id);
    free_secret(s->secret);
    free_secret(s->token);
    free(s->ca_file);
    free(s->sse);
    free(s->sse_kms_id);
    free(s->sse_headers[0]);
    free(s->sse_headers[1]);
    free(s);
}
