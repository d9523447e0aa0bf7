/* The s3:// backend's reading of S3's XML (listings, errors), its part sizes, and the
 * choices it makes when opening a store (addressing style, region, credentials). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "storage/s3_internal.h"

static char *decode(const char *raw, int *rc)
{
    buf_t b;
    buf_init(&b, 4096);
    wv_err_t err;
    *rc = s3_xml_decode(raw, strlen(raw), &b, &err);
    return (char *)b.data;
}

static void test_entities(void **state)
{
    (void)state;
    int rc;
    char *s = decode("a&amp;b&lt;c&gt;d&quot;e&apos;f&#65;&#x42;&#xe9;&#x20AC;&#128512;", &rc);
    assert_int_equal(rc, 0);
    assert_string_equal(s, "a&b<c>d\"e'fAB\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80");
    free(s);
    const char *bad[] = {"&amp", "&nope;", "&#;", "&#x;", "&#0;", "&#x110000;", "&#xD800;"};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        s = decode(bad[i], &rc);
        assert_int_equal(rc, WV_ECORRUPT);
        free(s);
    }
}

static void test_escape_round_trip(void **state)
{
    (void)state;
    const char *key = "nodes/a&b/<c>/\"d\"/'e'/&amp;";
    buf_t esc;
    buf_init(&esc, 4096);
    wv_err_t err;
    assert_int_equal(s3_xml_escape(&esc, key, &err), 0);
    int rc;
    char *raw = strndup((const char *)esc.data, esc.len);
    char *back = decode(raw, &rc);
    assert_int_equal(rc, 0);
    assert_string_equal(back, key);
    assert_null(strchr(raw, '<'));
    free(raw);
    free(back);
    buf_free(&esc);
}

static const char list_page[] =
    "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n"
    "<ListBucketResult xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\">"
    "<Name>bucket</Name><Prefix>p/</Prefix><KeyCount>3</KeyCount><MaxKeys>3</MaxKeys>"
    "<IsTruncated>true</IsTruncated>"
    "<Contents><Key>p/a&amp;b c</Key><LastModified>2013-09-17T18:07:53.000Z</LastModified>"
    "<ETag>&quot;599bab3ed2c697f1d26842727561fd94&quot;</ETag><Size>857</Size>"
    "<StorageClass>STANDARD</StorageClass></Contents>"
    "<Contents>\n  <Key>p/&lt;x&gt;/\xc3\xbc</Key>\n  <Size>0</Size>\n</Contents>"
    "<Contents><Key>p/big</Key><Size>5497558138880</Size></Contents>"
    "<NextContinuationToken>1ueGcxLPRx1Tr/XYExHnhbYLgveDs2J/wm36Hy4vbOwM=</NextContinuationToken>"
    "</ListBucketResult>";

static void test_list_page(void **state)
{
    (void)state;
    struct s3_list_page page;
    wv_err_t err;
    assert_int_equal(s3_xml_list_page(list_page, strlen(list_page), &page, &err), 0);
    assert_int_equal(page.count, 3);
    assert_string_equal(page.entries[0].key, "p/a&b c");
    assert_int_equal(page.entries[0].size, 857);
    assert_int_equal(page.entries[0].mtime, 1379441273);
    assert_string_equal(page.entries[1].key, "p/<x>/\xc3\xbc");
    assert_int_equal(page.entries[1].size, 0);
    assert_int_equal(page.entries[1].mtime, 0);
    assert_int_equal(page.entries[2].size, 5497558138880ull);
    assert_true(page.truncated);
    assert_string_equal(page.next_token, "1ueGcxLPRx1Tr/XYExHnhbYLgveDs2J/wm36Hy4vbOwM=");
    s3_list_page_free(&page);
}

static void test_list_page_last_and_empty(void **state)
{
    (void)state;
    const char *empty = "<ListBucketResult><Name>b</Name><KeyCount>0</KeyCount>"
                        "<IsTruncated>false</IsTruncated></ListBucketResult>";
    struct s3_list_page page;
    wv_err_t err;
    assert_int_equal(s3_xml_list_page(empty, strlen(empty), &page, &err), 0);
    assert_int_equal(page.count, 0);
    assert_false(page.truncated);
    assert_null(page.next_token);
    s3_list_page_free(&page);
}

static void test_list_page_malformed(void **state)
{
    (void)state;
    const char *bad[] = {
        "<Error><Code>AccessDenied</Code></Error>",
        "<ListBucketResult><IsTruncated>true</IsTruncated></ListBucketResult>",
        "<ListBucketResult><Contents><Size>1</Size></Contents></ListBucketResult>",
        "<ListBucketResult><Contents><Key>k</Key><Size>-1</Size></Contents></ListBucketResult>",
        "<ListBucketResult><Contents><Key>k</Key></Contents></ListBucketResult>",
        "<ListBucketResult><Contents><Key>a&bad;</Key><Size>1</Size></Contents>"
        "</ListBucketResult>",
    };
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        struct s3_list_page page;
        wv_err_t err;
        assert_int_equal(s3_xml_list_page(bad[i], strlen(bad[i]), &page, &err), WV_ECORRUPT);
        assert_int_equal(page.count, 0);
    }
}

static void test_error_body(void **state)
{
    (void)state;
    const char *body =
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>AuthorizationHeader"
        "Malformed</Code><Message>The authorization header is malformed; the "
        "region 'us-east-1' is wrong;\nexpecting 'eu-west-1'</Message><Region>"
        "eu-west-1</Region><RequestId>X</RequestId></Error>";
    struct s3_error_info info;
    s3_xml_error(body, strlen(body), &info);
    assert_string_equal(info.code, "AuthorizationHeaderMalformed");
    assert_string_equal(info.region, "eu-west-1");
    assert_non_null(strstr(info.message, "wrong; expecting")); /* one line */
    s3_xml_error("", 0, &info);
    assert_string_equal(info.code, "");
    s3_xml_error("<html>502 Bad Gateway</html>", 28, &info);
    assert_string_equal(info.code, "");
}

static void test_find_is_exact(void **state)
{
    (void)state;
    const char *xml = "<KeyCount>2</KeyCount><Key/><Key a=\"1\">k</Key>";
    const char *c, *next;
    size_t len;
    assert_true(s3_xml_find(xml, xml + strlen(xml), "Key", &c, &len, &next));
    assert_int_equal(len, 0); /* <Key/>, not <KeyCount> */
    assert_true(s3_xml_find(next, xml + strlen(xml), "Key", &c, &len, &next));
    assert_int_equal(len, 1);
    assert_memory_equal(c, "k", 1);
    assert_false(s3_xml_find(next, xml + strlen(xml), "Key", &c, &len, &next));
}

static void test_iso8601(void **state)
{
    (void)state;
    assert_int_equal(s3_parse_iso8601("1970-01-01T00:00:00.000Z"), 0);
    assert_int_equal(s3_parse_iso8601("2024-02-29T23:59:59Z"), 1709251199);
    assert_int_equal(s3_parse_iso8601("yesterday"), -1);
}

/* 5 TiB in at most 10,000 parts, none above 5 GiB, and the first ones small. */
static void test_part_sizes(void **state)
{
    (void)state;
    assert_int_equal(s3_part_size(1), 8u << 20);
    assert_int_equal(s3_part_size(1000), 8u << 20);
    assert_int_equal(s3_part_size(1001), 16u << 20);
    uint64_t total = 0;
    for (unsigned n = 1; n <= S3_MAX_PARTS; n++) {
        size_t size = s3_part_size(n);
        assert_true(size >= 5u << 20);
        assert_true(size <= S3_PART_MAX);
        assert_true(n == 1 || size >= s3_part_size(n - 1));
        total += size;
    }
    assert_true(total >= 5ull << 40);
}

/* ---- opening a store ---- */

static struct s3_store *open_store(const char *url, const struct storage_opts *o, int *rc,
                                   char **printable)
{
    struct s3_store *s = NULL;
    wv_err_t err;
    *rc = s3_store_new(url, o, &s, printable, &err);
    return s;
}

static void test_addressing(void **state)
{
    (void)state;
    setenv("AWS_ACCESS_KEY_ID", "AKID", 1);
    setenv("AWS_SECRET_ACCESS_KEY", "SECRET", 1);
    unsetenv("AWS_REGION");
    unsetenv("AWS_DEFAULT_REGION");
    int rc;
    char *url;
    struct storage_opts local = {.s3_endpoint = "http://127.0.0.1:4568"};
    struct s3_store *s = open_store("s3://bucket//some/prefix/", &local, &rc, &url);
    assert_int_equal(rc, 0);
    assert_string_equal(url, "s3://bucket/some/prefix");
    assert_string_equal(s->prefix, "some/prefix/");
    assert_string_equal(s->base_url, "http://127.0.0.1:4568");
    assert_string_equal(s->bucket_path, "/bucket");
    assert_string_equal(s->region, "us-east-1");
    assert_string_equal(s->sigv4, "aws:amz:us-east-1:s3");
    s3_store_free(s);
    free(url);

    struct storage_opts aws = {.s3_region = "eu-west-1"};
    s = open_store("s3://bucket", &aws, &rc, &url);
    assert_int_equal(rc, 0);
    assert_string_equal(url, "s3://bucket");
    assert_string_equal(s->prefix, "");
    assert_string_equal(s->base_url, "https://bucket.s3.eu-west-1.amazonaws.com");
    assert_string_equal(s->bucket_path, "");
    s3_store_free(s);
    free(url);

    /* the region of an AWS endpoint; a dotted bucket cannot be a TLS host name */
    struct storage_opts ep = {.s3_endpoint = "https://s3.ap-south-1.amazonaws.com/"};
    s = open_store("s3://my.bucket/x", &ep, &rc, &url);
    assert_int_equal(rc, 0);
    assert_string_equal(s->region, "ap-south-1");
    assert_string_equal(s->base_url, "https://s3.ap-south-1.amazonaws.com");
    assert_string_equal(s->bucket_path, "/my.bucket");
    s3_store_free(s);
    free(url);

    setenv("AWS_REGION", "ca-central-1", 1);
    struct storage_opts none = {0};
    s = open_store("s3://b1", &none, &rc, &url);
    assert_int_equal(rc, 0);
    assert_string_equal(s->region, "ca-central-1");
    assert_string_equal(s->base_url, "https://b1.s3.ca-central-1.amazonaws.com");
    s3_store_free(s);
    free(url);
    unsetenv("AWS_REGION");
}

static void test_bad_settings(void **state)
{
    (void)state;
    setenv("AWS_ACCESS_KEY_ID", "AKID", 1);
    setenv("AWS_SECRET_ACCESS_KEY", "SECRET", 1);
    struct {
        const char *url;
        struct storage_opts o;
    } cases[] = {
        {"s3://", {0}},
        {"s3://b@d", {0}},
        {"s3://b/a/../c", {0}},
        {"s3://b", {.s3_endpoint = "ftp://x"}},
        {"s3://b", {.s3_endpoint = "http://host/path"}},
        {"s3://b", {.s3_uri_style = "virtual"}},
        {"s3://b", {.s3_endpoint = "http://10.0.0.1:9000", .s3_uri_style = "host"}},
        {"s3://b", {.s3_sse = "DES"}},
        {"s3://b", {.s3_sse_kms_key_id = "k"}},
        {"s3://b", {.s3_ca_file = "/nonexistent/ca.pem"}},
        {"s3://b", {.s3_retry_seconds = "0"}},
        {"s3://b", {.s3_access_key_id = "only-the-id"}},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        int rc;
        char *url = NULL;
        struct s3_store *s = open_store(cases[i].url, &cases[i].o, &rc, &url);
        assert_int_equal(rc, WV_EUSAGE);
        assert_null(s);
        assert_null(url);
    }
}

static void test_credentials(void **state)
{
    (void)state;
    char path[] = "/tmp/test_s3_credentials.XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    const char *text = "[default]\naws_access_key_id = DEFAULTID\naws_secret_access_key = DS\n"
                       "[prod]\naws_access_key_id=PRODID\naws_secret_access_key=PS\n"
                       "aws_session_token=PT\n";
    assert_int_equal(write(fd, text, strlen(text)), (ssize_t)strlen(text));
    close(fd);
    setenv("AWS_SHARED_CREDENTIALS_FILE", path, 1);
    unsetenv("AWS_PROFILE");
    setenv("AWS_ACCESS_KEY_ID", "ENVID", 1);
    setenv("AWS_SECRET_ACCESS_KEY", "ES", 1);
    int rc;
    char *url;
    /* the configuration beats everything */
    struct storage_opts conf = {.s3_access_key_id = "CONFID", .s3_secret_access_key = "CS"};
    struct s3_store *s = open_store("s3://b", &conf, &rc, &url);
    assert_string_equal(s->key_id, "CONFID");
    assert_null(s->token);
    s3_store_free(s);
    free(url);
    /* an explicit profile beats the environment */
    struct storage_opts prof = {.s3_profile = "prod"};
    s = open_store("s3://b", &prof, &rc, &url);
    assert_string_equal(s->key_id, "PRODID");
    assert_string_equal(s->token, "PT");
    s3_store_free(s);
    free(url);
    /* the environment beats the file's default profile */
    struct storage_opts none = {0};
    s = open_store("s3://b", &none, &rc, &url);
    assert_string_equal(s->key_id, "ENVID");
    s3_store_free(s);
    free(url);
    unsetenv("AWS_ACCESS_KEY_ID");
    unsetenv("AWS_SECRET_ACCESS_KEY");
    s = open_store("s3://b", &none, &rc, &url);
    assert_string_equal(s->key_id, "DEFAULTID");
    s3_store_free(s);
    free(url);
    struct storage_opts missing = {.s3_profile = "staging"};
    s = open_store("s3://b", &missing, &rc, &url);
    assert_int_equal(rc, WV_EUSAGE);
    assert_null(s);
    unlink(path);
    s = open_store("s3://b", &none, &rc, &url);
    assert_int_equal(rc, WV_EUSAGE);
    assert_null(s);
    unsetenv("AWS_SHARED_CREDENTIALS_FILE");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_entities),
        cmocka_unit_test(test_escape_round_trip),
        cmocka_unit_test(test_list_page),
        cmocka_unit_test(test_list_page_last_and_empty),
        cmocka_unit_test(test_list_page_malformed),
        cmocka_unit_test(test_error_body),
        cmocka_unit_test(test_find_is_exact),
        cmocka_unit_test(test_iso8601),
        cmocka_unit_test(test_part_sizes),
        cmocka_unit_test(test_addressing),
        cmocka_unit_test(test_bad_settings),
        cmocka_unit_test(test_credentials),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
