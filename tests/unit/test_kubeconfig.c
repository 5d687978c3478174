/* test_kubeconfig.c: kubeconfig parsing for each auth form, in-cluster settings, base64. */
#define _GNU_SOURCE
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "err.h"
#include "kubeconfig.h"
#include "log.h"

#define FIX "tests/fixtures/kubeconfig/"
#define CA_PEM "-----BEGIN CERTIFICATE-----\nFAKE-CA-FOR-TESTS\n-----END CERTIFICATE-----\n"

static struct kube_auth *load(const char *file, const char *context)
{
    struct kube_auth *a = NULL;
    char err[256] = "";
    int rc = kubeconfig_load(file, context, &a, err, sizeof err);
    if (rc) fail_msg("%s: %s (%s)", file, jp_strerror(rc), err);
    return a;
}

static void test_token_inline(void **state)
{
    (void)state;
    struct kube_auth *a = load(FIX "token-inline.yaml", NULL);
    assert_string_equal(a->server, "https://10.1.2.3:6443"); /* trailing slash dropped */
    assert_string_equal(a->context, "dev");
    assert_string_equal(a->namespace_, "jobs");
    assert_string_equal(a->ca_pem, CA_PEM);
    assert_string_equal(a->token, "inline-token-abc");
    assert_null(a->token_file);
    assert_null(a->cert_pem);
    assert_false(a->insecure);
    kube_auth_free(a);
}

static void test_token_file(void **state)
{
    (void)state;
    struct kube_auth *a = load(FIX "token-file.yaml", NULL);
    assert_string_equal(a->server, "https://127.0.0.1:6443");
    assert_null(a->namespace_);
    assert_null(a->token);
    assert_string_equal(a->token_file, FIX "token.txt"); /* relative to the kubeconfig */
    assert_string_equal(a->ca_pem, CA_PEM);
    kube_auth_free(a);
}

static void test_client_cert_data(void **state)
{
    (void)state;
    struct kube_auth *a = load(FIX "client-cert-data.yaml", NULL);
    assert_string_equal(a->namespace_, "batch");
    assert_non_null(strstr(a->cert_pem, "FAKE-CLIENT-CERT"));
    assert_non_null(strstr(a->key_pem, "FAKE-CLIENT-KEY"));
    assert_null(a->token);
    kube_auth_free(a);
}

static void test_client_cert_files(void **state)
{
    (void)state;
    struct kube_auth *a = load(FIX "client-cert-files.yaml", NULL);
    assert_string_equal(a->server, "https://api.example:443");
    assert_non_null(strstr(a->cert_pem, "FAKE-CLIENT-CERT"));
    assert_non_null(strstr(a->key_pem, "FAKE-CLIENT-KEY"));
    assert_string_equal(a->ca_pem, CA_PEM);
    kube_auth_free(a);
}

static void test_contexts(void **state)
{
    (void)state;
    struct kube_auth *a = load(FIX "multi-context.yaml", NULL);
    assert_string_equal(a->context, "safe");
    assert_string_equal(a->server, "https://safe.example:6443");
    assert_string_equal(a->token, "safe-token");
    assert_false(a->insecure);
    assert_null(a->ca_pem);
    kube_auth_free(a);
    a = load(FIX "multi-context.yaml", "lab");
    assert_string_equal(a->context, "lab");
    assert_string_equal(a->server, "https://lab.example:6443");
    assert_string_equal(a->namespace_, "lab-ns");
    assert_true(a->insecure);
    assert_string_equal(a->username, "admin");
    assert_string_equal(a->password, "lab-password");
    assert_null(a->token);
    kube_auth_free(a);
}

static void expect_error(const char *file, const char *context, int want, const char *needle)
{
    struct kube_auth *a = (struct kube_auth *)1;
    char err[256] = "";
    assert_int_equal(kubeconfig_load(file, context, &a, err, sizeof err), want);
    assert_null(a);
    if (needle && !strstr(err, needle)) fail_msg("%s: error \"%s\" lacks \"%s\"", file, err, needle);
}

static void test_errors(void **state)
{
    (void)state;
    expect_error(FIX "no-such-file.yaml", NULL, JP_EIO, "no-such-file.yaml");
    expect_error(FIX "multi-context.yaml", "nope", JP_ECONFIG, "context \"nope\" not found");
    expect_error(FIX "missing-cluster.yaml", NULL, JP_ECONFIG, "cluster \"nowhere\" not found");
    expect_error(FIX "bad-base64.yaml", NULL, JP_ECONFIG, "certificate-authority-data");
    expect_error(FIX "cert-without-key.yaml", NULL, JP_ECONFIG, "given together");
    expect_error(FIX "exec-only.yaml", NULL, JP_ECONFIG, "exec");
    struct kube_auth *a = NULL;
    char err[256] = "";
    assert_int_equal(kubeconfig_parse("a: [", 4, NULL, NULL, &a, err, sizeof err), JP_ECONFIG);
    print_message("syntax error: %s\n", err);
    assert_true(strncmp(err, "kubeconfig:", 11) == 0 && err[11] >= '1' && err[11] <= '9');
    assert_int_equal(kubeconfig_parse("- 1\n", 4, NULL, NULL, &a, err, sizeof err), JP_ECONFIG);
    assert_int_equal(kubeconfig_parse("current-context: x\n", 19, NULL, NULL, &a, err,
                                      sizeof err), JP_ECONFIG);
    const char *http_url = "current-context: x\nclusters: [{name: x, cluster: {server: ftp://x}}]\n"
                           "contexts: [{name: x, context: {cluster: x}}]\n";
    assert_int_equal(kubeconfig_parse(http_url, strlen(http_url), NULL, NULL, &a, err, sizeof err),
                     JP_ECONFIG);
    assert_non_null(strstr(err, "http(s) URL"));
    /* A name from the file that holds a newline (a block scalar) still gives a one-line error. */
    const char *nl_name = "current-context: |\n  two\n  lines\n";
    assert_int_equal(kubeconfig_parse(nl_name, strlen(nl_name), NULL, NULL, &a, err, sizeof err),
                     JP_ECONFIG);
    assert_non_null(strstr(err, "context \"two?lines?\" not found"));
    assert_null(strchr(err, '\n'));
}

static void write_file(const char *path, const char *text)
{
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs(text, f);
    fclose(f);
}

static void test_in_cluster(void **state)
{
    (void)state;
    char dir[] = "/tmp/jobpool-test-sa.XXXXXX", p[256];
    assert_non_null(mkdtemp(dir));
    struct kube_auth *a = (struct kube_auth *)1;
    char err[256] = "";
    unsetenv("KUBERNETES_SERVICE_HOST");
    assert_int_equal(kube_auth_in_cluster(dir, &a, err, sizeof err), JP_ECONFIG);
    assert_null(a);
    assert_non_null(strstr(err, "KUBERNETES_SERVICE_HOST"));
    setenv("KUBERNETES_SERVICE_HOST", "10.0.0.1", 1);
    setenv("KUBERNETES_SERVICE_PORT", "443", 1);
    assert_int_equal(kube_auth_in_cluster(dir, &a, err, sizeof err), JP_ECONFIG);
    assert_non_null(strstr(err, "token"));
    snprintf(p, sizeof p, "%s/token", dir);
    write_file(p, "sa-token\n");
    snprintf(p, sizeof p, "%s/ca.crt", dir);
    write_file(p, CA_PEM);
    snprintf(p, sizeof p, "%s/namespace", dir);
    write_file(p, "workers\n");
    assert_int_equal(kube_auth_in_cluster(dir, &a, err, sizeof err), 0);
    assert_string_equal(a->server, "https://10.0.0.1:443");
    assert_string_equal(a->namespace_, "workers");
    assert_string_equal(a->ca_pem, CA_PEM);
    snprintf(p, sizeof p, "%s/token", dir);
    assert_string_equal(a->token_file, p);
    assert_null(a->token); /* read (and re-read on change) by the client */
    kube_auth_free(a);
    setenv("KUBERNETES_SERVICE_HOST", "fd00::1", 1);
    assert_int_equal(kube_auth_in_cluster(dir, &a, err, sizeof err), 0);
    assert_string_equal(a->server, "https://[fd00::1]:443");
    kube_auth_free(a);
    const char *files[] = {"token", "ca.crt", "namespace"};
    for (int i = 0; i < 3; i++) {
        snprintf(p, sizeof p, "%s/%s", dir, files[i]);
        unlink(p);
    }
    rmdir(dir);
    unsetenv("KUBERNETES_SERVICE_HOST");
    unsetenv("KUBERNETES_SERVICE_PORT");
}

static void test_base64(void **state)
{
    (void)state;
    struct { const char *in, *out; } ok[] = {
        {"", ""}, {"Zg==", "f"}, {"Zm8=", "fo"}, {"Zm9v", "foo"}, {"Zm9vYg", "foob"},
        {"Zm9v\nYmFy", "foobar"}, {"aGVsbG8gd29ybGQ=", "hello world"},
    };
    for (size_t i = 0; i < sizeof ok / sizeof ok[0]; i++) {
        char *o = NULL;
        size_t n = 0;
        assert_int_equal(kube_base64_decode(ok[i].in, &o, &n), 0);
        assert_string_equal(o, ok[i].out);
        assert_int_equal(n, strlen(ok[i].out));
        free(o);
    }
    const char *bad[] = {"Z", "Zm9v!", "Zg==Zg", "Zg==="};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        char *o = (char *)1;
        assert_int_equal(kube_base64_decode(bad[i], &o, NULL), JP_EPARSE);
        assert_null(o);
    }
}

int main(void)
{
    log_setup(LOG_TEXT, LOG_ERROR, NULL);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_token_inline),     cmocka_unit_test(test_token_file),
        cmocka_unit_test(test_client_cert_data), cmocka_unit_test(test_client_cert_files),
        cmocka_unit_test(test_contexts),         cmocka_unit_test(test_errors),
        cmocka_unit_test(test_in_cluster),       cmocka_unit_test(test_base64),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
