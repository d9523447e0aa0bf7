/* SigV4 and the canonical encodings of the s3:// backend.
 *
 * 1. Our signer against AWS's published vectors: the SigV4 test suite (2011 edition, as
 *    shipped in aws-cli's tests/unit/auth/aws4_testsuite, and the 2015 get/post-vanilla),
 *    and the worked examples of the S3 documentation ("Signature Calculations for the
 *    Authorization Header"). Canonical request, string to sign and signature are each
 *    compared with the published text.
 * 2. Encodings of awkward keys and queries.
 * That curl, which signs the real requests, signs exactly this way is checked against
 * captured requests in test_s3_http.c. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "storage/s3_sign.h"

#define SUITE_SECRET "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY"
#define S3_DOC_SECRET "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"
#define S3_DOC_HOST "examplebucket.s3.amazonaws.com"
#define SUITE_DATE_HEADER "Mon, 09 Sep 2011 23:36:00 GMT"

static const struct s3_sig_scope suite_scope = {"20110909T233600Z", "us-east-1", "host"};
static const struct s3_sig_scope vanilla_scope = {"20150830T123600Z", "us-east-1", "service"};
static const struct s3_sig_scope s3_doc_scope = {"20130524T000000Z", "us-east-1", "s3"};

struct vector {
    struct s3_sig_request req;
    const struct s3_sig_scope *scope;
    const char *secret;
    const char *creq;      /* expected canonical request, or NULL */
    const char *sts;       /* expected string to sign, or NULL */
    const char *signature; /* expected */
};

static char *cstr(buf_t *b)
{
    wv_err_t err;
    assert_int_equal(s3_buf_terminate(b, &err), 0);
    return (char *)b->data;
}

static void check_vector(const struct vector *v)
{
    buf_t creq, names, sts;
    buf_init(&creq, 1 << 20);
    buf_init(&names, 1 << 20);
    buf_init(&sts, 1 << 20);
    wv_err_t err;
    assert_int_equal(s3_sig_canonical_request(&v->req, &creq, &names, &err), 0);
    if (v->creq)
        assert_string_equal(cstr(&creq), v->creq);
    assert_int_equal(s3_sig_string_to_sign(v->scope, cstr(&creq), &sts, &err), 0);
    if (v->sts)
        assert_string_equal(cstr(&sts), v->sts);
    uint8_t key[32];
    char sig[S3_SHA256_HEX_LEN + 1];
    s3_sig_signing_key(v->secret, v->scope, key);
    s3_sig_signature(key, cstr(&sts), sig);
    assert_string_equal(sig, v->signature);
    buf_free(&creq);
    buf_free(&names);
    buf_free(&sts);
}

static char *encoded(const char *s, bool keep_slash)
{
    buf_t b;
    buf_init(&b, 1 << 16);
    wv_err_t err;
    assert_int_equal(s3_uri_encode(&b, s, keep_slash, &err), 0);
    return cstr(&b);
}

static char *query_of(const struct s3_param *p, size_t n)
{
    buf_t b;
    buf_init(&b, 1 << 16);
    wv_err_t err;
    assert_int_equal(s3_query_build(&b, p, n, &err), 0);
    return cstr(&b);
}

/* ---- the SigV4 test suite, 2011 edition ---- */

static const struct s3_header suite_get_headers[] = {{"Date", SUITE_DATE_HEADER},
                                                     {"Host", "host.foo.com"}};

static void test_suite_get_vanilla_query_order_key_case(void **state)
{
    (void)state;
    struct s3_param params[] = {{"foo", "Zoo"}, {"foo", "aha"}};
    char *query = query_of(params, 2);
    assert_string_equal(query, "foo=Zoo&foo=aha");
    struct vector v = {
        .req = {"GET", "/", query, suite_get_headers, 2, S3_EMPTY_SHA256},
        .scope = &suite_scope,
        .secret = SUITE_SECRET,
        .creq = "GET\n/\nfoo=Zoo&foo=aha\ndate:Mon, 09 Sep 2011 23:36:00 GMT\nhost:host.foo.com\n\n"
                "date;host\n" S3_EMPTY_SHA256,
        .sts = "AWS4-HMAC-SHA256\n20110909T233600Z\n20110909/us-east-1/host/aws4_request\n"
               "e25f777ba161a0f1baf778a87faf057187cf5987f17953320e3ca399feb5f00d",
        .signature = "be7148d34ebccdc6423b19085378aa0bee970bdc61d144bd1a8c48c33079ab09",
    };
    check_vector(&v);
    free(query);
}

static void test_suite_get_vanilla_query_unreserved(void **state)
{
    (void)state;
    const char *unreserved = "-._~0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
    struct s3_param param = {unreserved, unreserved};
    char *query = query_of(&param, 1);
    struct vector v = {
        .req = {"GET", "/", query, suite_get_headers, 2, S3_EMPTY_SHA256},
        .scope = &suite_scope,
        .secret = SUITE_SECRET,
        .signature = "f1498ddb4d6dae767d97c466fb92f1b59a2c71ca29ac954692663f9db03426fb",
    };
    check_vector(&v);
    free(query);
}

static void test_suite_get_utf8_and_space(void **state)
{
    (void)state;
    char *path = encoded("/\xe1\x88\xb4", true);
    assert_string_equal(path, "/%E1%88%B4");
    struct vector v = {
        .req = {"GET", path, "", suite_get_headers, 2, S3_EMPTY_SHA256},
        .scope = &suite_scope,
        .secret = SUITE_SECRET,
        .creq = "GET\n/%E1%88%B4\n\ndate:Mon, 09 Sep 2011 23:36:00 GMT\nhost:host.foo.com\n\n"
                "date;host\n" S3_EMPTY_SHA256,
        .signature = "8d6634c189aa8c75c2e51e106b6b5121bed103fdb351f7d7d4381c738823af74",
    };
    check_vector(&v);
    free(path);
    path = encoded("/ /foo", true);
    assert_string_equal(path, "/%20/foo");
    v.req.path = path;
    v.creq = NULL;
    v.signature = "f309cfbd10197a230c42dd17dbf5cca8a0722564cb40a872d25623cfa758e374";
    check_vector(&v);
    free(path);
}

static void test_suite_post_x_www_form_urlencoded(void **state)
{
    (void)state;
    const struct s3_header headers[] = {{"Content-Type", "application/x-www-form-urlencoded"},
                                        {"Date", SUITE_DATE_HEADER},
                                        {"Host", "host.foo.com"}};
    char hash[S3_SHA256_HEX_LEN + 1];
    s3_sha256_hex("foo=bar", 7, hash);
    assert_string_equal(hash, "3ba8907e7a252327488df390ed517c45b96dead033600219bdca7107d1d3f88a");
    struct vector v = {
        .req = {"POST", "/", "", headers, 3, hash},
        .scope = &suite_scope,
        .secret = SUITE_SECRET,
        .creq = "POST\n/\n\ncontent-type:application/x-www-form-urlencoded\n"
                "date:Mon, 09 Sep 2011 23:36:00 GMT\nhost:host.foo.com\n\n"
                "content-type;date;host\n"
                "3ba8907e7a252327488df390ed517c45b96dead033600219bdca7107d1d3f88a",
        .sts = "AWS4-HMAC-SHA256\n20110909T233600Z\n20110909/us-east-1/host/aws4_request\n"
               "4c5c6e4b52fb5fb947a8733982a8a5a61b14f04345cbfe6e739236c76dd48f74",
        .signature = "5a15b22cf462f047318703b92e6f4f38884e4a7ab7b1d6426ca46a8bd1c26cbc",
    };
    check_vector(&v);
}

/* ---- the 2015 edition: get-vanilla and post-vanilla ---- */

static void test_suite_vanilla_2015(void **state)
{
    (void)state;
    const struct s3_header headers[] = {{"Host", "example.amazonaws.com"},
                                        {"X-Amz-Date", "20150830T123600Z"}};
    struct vector v = {
        .req = {"GET", "/", "", headers, 2, S3_EMPTY_SHA256},
        .scope = &vanilla_scope,
        .secret = SUITE_SECRET,
        .creq = "GET\n/\n\nhost:example.amazonaws.com\nx-amz-date:20150830T123600Z\n\n"
                "host;x-amz-date\n" S3_EMPTY_SHA256,
        .sts = "AWS4-HMAC-SHA256\n20150830T123600Z\n20150830/us-east-1/service/aws4_request\n"
               "bb579772317eb040ac9ed261061d46c1f17a8133879d6129b6e1c25292927e63",
        .signature = "5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31",
    };
    check_vector(&v);
    v.req.method = "POST";
    v.creq = v.sts = NULL;
    v.signature = "5da7c1a2acd57cee7505fc6676e4e544621c30862966e37dddb68e92efbe5d6b";
    check_vector(&v);
}

/* ---- the S3 documentation's examples ---- */

static void test_s3_doc_get_object_range(void **state)
{
    (void)state;
    const struct s3_header headers[] = {{"Host", S3_DOC_HOST},
                                        {"Range", "bytes=0-9"},
                                        {"x-amz-content-sha256", S3_EMPTY_SHA256},
                                        {"x-amz-date", "20130524T000000Z"}};
    struct vector v = {
        .req = {"GET", "/test.txt", "", headers, 4, S3_EMPTY_SHA256},
        .scope = &s3_doc_scope,
        .secret = S3_DOC_SECRET,
        .creq = "GET\n/test.txt\n\nhost:examplebucket.s3.amazonaws.com\nrange:bytes=0-9\n"
                "x-amz-content-sha256:" S3_EMPTY_SHA256 "\nx-amz-date:20130524T000000Z\n\n"
                "host;range;x-amz-content-sha256;x-amz-date\n" S3_EMPTY_SHA256,
        .sts = "AWS4-HMAC-SHA256\n20130524T000000Z\n20130524/us-east-1/s3/aws4_request\n"
               "7344ae5b7ee6c3e7e6b0fe0640412a37625d1fbfff95c48bbb2dc43964946972",
        .signature = "f0e8bdb87c964420e857bd35b5d6ed310bd44f0170aba48dd91039c6036bdb41",
    };
    check_vector(&v);

    buf_t auth;
    buf_init(&auth, 4096);
    wv_err_t err;
    assert_int_equal(
        s3_sig_authorization(&v.req, v.scope, "AKIAIOSFODNN7EXAMPLE", S3_DOC_SECRET, &auth, &err),
        0);
    assert_string_equal(
        cstr(&auth), "AWS4-HMAC-SHA256 Credential=AKIAIOSFODNN7EXAMPLE/20130524/us-east-1/s3/"
                     "aws4_request, SignedHeaders=host;range;x-amz-content-sha256;x-amz-date, "
                     "Signature=f0e8bdb87c964420e857bd35b5d6ed310bd44f0170aba48dd91039c6036bdb41");
    buf_free(&auth);
}

static void test_s3_doc_put_object(void **state)
{
    (void)state;
    char hash[S3_SHA256_HEX_LEN + 1];
    s3_sha256_hex("Welcome to Amazon S3.", 21, hash);
    assert_string_equal(hash, "44ce7dd67c959e0d3524ffac1771dfbba87d2b6b4b4e99e42034a8b803f8b072");
    char *path = encoded("/test$file.text", true);
    assert_string_equal(path, "/test%24file.text");
    const struct s3_header headers[] = {{"Date", "Fri, 24 May 2013 00:00:00 GMT"},
                                        {"Host", S3_DOC_HOST},
                                        {"x-amz-content-sha256", hash},
                                        {"x-amz-date", "20130524T000000Z"},
                                        {"x-amz-storage-class", "REDUCED_REDUNDANCY"}};
    struct vector v = {
        .req = {"PUT", path, "", headers, 5, hash},
        .scope = &s3_doc_scope,
        .secret = S3_DOC_SECRET,
        .sts = "AWS4-HMAC-SHA256\n20130524T000000Z\n20130524/us-east-1/s3/aws4_request\n"
               "9e0e90d9c76de8fa5b200d8c849cd5b8dc7a3be3951ddb7f6a76b4158342019d",
        .signature = "98ad721746da40c64f1a55b78f14c238d841ea1380cd77a1b5971af0ece108bd",
    };
    check_vector(&v);
    free(path);
}

static void test_s3_doc_bucket_queries(void **state)
{
    (void)state;
    const struct s3_header headers[] = {{"Host", S3_DOC_HOST},
                                        {"x-amz-content-sha256", S3_EMPTY_SHA256},
                                        {"x-amz-date", "20130524T000000Z"}};
    struct s3_param lifecycle = {"lifecycle", NULL};
    char *query = query_of(&lifecycle, 1);
    assert_string_equal(query, "lifecycle=");
    struct vector v = {
        .req = {"GET", "/", query, headers, 3, S3_EMPTY_SHA256},
        .scope = &s3_doc_scope,
        .secret = S3_DOC_SECRET,
        .sts = "AWS4-HMAC-SHA256\n20130524T000000Z\n20130524/us-east-1/s3/aws4_request\n"
               "9766c798316ff2757b517bc739a67f6213b4ab36dd5da2f94eaebf79c77395ca",
        .signature = "fea454ca298b7da1c68078a5d1bdbfbbe0d65c699e0f91ac7a200a0136783543",
    };
    check_vector(&v);
    free(query);

    struct s3_param list[] = {{"prefix", "J"}, {"max-keys", "2"}}; /* the builder sorts */
    query = query_of(list, 2);
    assert_string_equal(query, "max-keys=2&prefix=J");
    v.req.query = query;
    v.sts = NULL;
    v.signature = "34b48302e7b5fa45bde8084f4b7868a86f0a534bc59db6670ed5711ef69dc6f7";
    check_vector(&v);
    free(query);
}

/* ---- encodings ---- */

static void test_key_encoding(void **state)
{
    (void)state;
    struct {
        const char *key, *path, *query;
    } cases[] = {
        {"a b", "a%20b", "a%20b"},
        {"a+b=c:d&e", "a%2Bb%3Dc%3Ad%26e", "a%2Bb%3Dc%3Ad%26e"},
        {"x~y_z-w.v", "x~y_z-w.v", "x~y_z-w.v"},
        {"nodes/db1/wal/0000", "nodes/db1/wal/0000", "nodes%2Fdb1%2Fwal%2F0000"},
        {"\xc3\xbc\xe2\x82\xac", "%C3%BC%E2%82%AC", "%C3%BC%E2%82%AC"}, /* ü€ */
        {"100%/$?#[]@!'()*,;", "100%25/%24%3F%23%5B%5D%40%21%27%28%29%2A%2C%3B",
         "100%25%2F%24%3F%23%5B%5D%40%21%27%28%29%2A%2C%3B"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        char *p = encoded(cases[i].key, true), *q = encoded(cases[i].key, false);
        assert_string_equal(p, cases[i].path);
        assert_string_equal(q, cases[i].query);
        free(p);
        free(q);
    }
}

static void test_query_building(void **state)
{
    (void)state;
    struct s3_param upload[] = {{"uploadId", "a/b+c=d"}, {"partNumber", "12"}};
    char *q = query_of(upload, 2);
    assert_string_equal(q, "partNumber=12&uploadId=a%2Fb%2Bc%3Dd");
    free(q);
    struct s3_param empty[] = {{"uploads", NULL}};
    q = query_of(empty, 1);
    assert_string_equal(q, "uploads=");
    free(q);
    /* sorted by encoded name, byte order: upper case first; then by value */
    struct s3_param mixed[] = {
        {"prefix", "a b/c&d"}, {"list-type", "2"}, {"continuation-token", "1==+/"},
        {"Zed", ""},           {"a b", "2"},       {"a b", "1"}};
    q = query_of(mixed, 6);
    assert_string_equal(q, "Zed=&a%20b=1&a%20b=2&continuation-token=1%3D%3D%2B%2F&list-type=2&"
                           "prefix=a%20b%2Fc%26d");
    free(q);
}

static void test_header_canonicalisation(void **state)
{
    (void)state;
    const struct s3_header headers[] = {{"X-Amz-Meta-B", "  two   words  "},
                                        {"host", "h"},
                                        {"X-AMZ-META-A", "1"},
                                        {"x-amz-meta-a", "2"}};
    struct s3_sig_request req = {"GET", "/", "", headers, 4, S3_EMPTY_SHA256};
    buf_t creq, names;
    buf_init(&creq, 4096);
    buf_init(&names, 4096);
    wv_err_t err;
    assert_int_equal(s3_sig_canonical_request(&req, &creq, &names, &err), 0);
    assert_string_equal(cstr(&creq),
                        "GET\n/\n\nhost:h\nx-amz-meta-a:1,2\nx-amz-meta-b:two words\n\n"
                        "host;x-amz-meta-a;x-amz-meta-b\n" S3_EMPTY_SHA256);
    buf_free(&creq);
    buf_free(&names);
}

static void test_md5_base64(void **state)
{
    (void)state;
    char md5[25];
    s3_md5_base64("", 0, md5);
    assert_string_equal(md5, "1B2M2Y8AsgTpgAmY7PhCfg==");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_suite_get_vanilla_query_order_key_case),
        cmocka_unit_test(test_suite_get_vanilla_query_unreserved),
        cmocka_unit_test(test_suite_get_utf8_and_space),
        cmocka_unit_test(test_suite_post_x_www_form_urlencoded),
        cmocka_unit_test(test_suite_vanilla_2015),
        cmocka_unit_test(test_s3_doc_get_object_range),
        cmocka_unit_test(test_s3_doc_put_object),
        cmocka_unit_test(test_s3_doc_bucket_queries),
        cmocka_unit_test(test_key_encoding),
        cmocka_unit_test(test_query_building),
        cmocka_unit_test(test_header_canonicalisation),
        cmocka_unit_test(test_md5_base64),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
