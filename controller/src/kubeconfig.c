/* kubeconfig.c: resolve the API server's address and credentials from a kubeconfig or in-cluster. */
#define _GNU_SOURCE
#include "kubeconfig.h"
#include "err.h"
#include "log.h"
#include "util.h"
#include "yamljson.h"

#include <cjson/cJSON.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#define SA_DIR "/var/run/secrets/kubernetes.io/serviceaccount"
#define FILE_CAP (1u << 20)

void kube_auth_free(struct kube_auth *a)
{
    if (!a) return;
    free(a->server);
    free(a->namespace_);
    free(a->context);
    free(a->ca_pem);
    free(a->cert_pem);
    if (a->key_pem) explicit_bzero(a->key_pem, strlen(a->key_pem));
    free(a->key_pem);
    if (a->token) explicit_bzero(a->token, strlen(a->token));
    free(a->token);
    free(a->token_file);
    free(a->username);
    if (a->password) explicit_bzero(a->password, strlen(a->password));
    free(a->password);
    free(a);
}

static void set_err(char *err, size_t errlen, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void set_err(char *err, size_t errlen, const char *fmt, ...)
{
    if (!err || !errlen) return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
    /* Names come from the file: a block scalar can hold a newline, and the message is one line. */
    for (char *p = err; *p; p++)
        if ((unsigned char)*p < 0x20 || *p == 0x7f) *p = '?';
}

static int b64val(int ch)
{
    if (ch >= 'A' && ch <= 'Z') return ch - 'A';
    if (ch >= 'a' && ch <= 'z') return ch - 'a' + 26;
    if (ch >= '0' && ch <= '9') return ch - '0' + 52;
    if (ch == '+' || ch == '-') return 62;
    if (ch == '/' || ch == '_') return 63;
    return -1;
}

int kube_base64_decode(const char *in, char **out, size_t *outlen)
{
    *out = NULL;
    size_t n = strlen(in);
    char *buf = malloc(n / 4 * 3 + 4);
    if (!buf) return JP_ENOMEM;
    size_t o = 0;
    unsigned acc = 0;
    int bits = 0, pad = 0;
    for (const char *p = in; *p; p++) {
        int ch = (unsigned char)*p;
        if (ch == ' ' || ch == '\n' || ch == '\r' || ch == '\t') continue;
        if (ch == '=') { pad++; continue; }
        int v = b64val(ch);
        if (v < 0 || pad) goto bad;
        acc = (acc << 6) | (unsigned)v;
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            buf[o++] = (char)((acc >> bits) & 0xff);
        }
    }
    /* 6 leftover bits can never be a whole encoding; padding must not exceed two. */
    if (bits >= 6 || pad > 2) goto bad;
    buf[o] = '\0';
    if (outlen) *outlen = o;
    *out = buf;
    return 0;
bad:
    free(buf);
    return JP_EPARSE;
}

/* The value of name in a list of {name: ..., <field>: {...}} entries. */
static const cJSON *named(const cJSON *root, const char *list, const char *field,
                          const char *name)
{
    const cJSON *arr = cJSON_GetObjectItemCaseSensitive(root, list), *it;
    cJSON_ArrayForEach(it, arr) {
        const cJSON *n = cJSON_GetObjectItemCaseSensitive(it, "name");
        if (cJSON_IsString(n) && strcmp(n->valuestring, name) == 0)
            return cJSON_GetObjectItemCaseSensitive(it, field);
    }
    return NULL;
}

static const char *str(const cJSON *obj, const char *key)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(obj, key);
    return cJSON_IsString(v) && v->valuestring[0] ? v->valuestring : NULL;
}

/* dir/path unless path is absolute. */
static char *resolve(const char *dir, const char *path)
{
    if (path[0] == '/' || !dir || !dir[0]) return strdup(path);
    return util_strprintf("%s/%s", dir, path);
}

/* Load one PEM item: the -data form (base64) wins over the file form. */
static int load_pem(const cJSON *obj, const char *file_key, const char *data_key, const char *dir,
                    char **out, char *err, size_t errlen)
{
    const char *data = str(obj, data_key), *file = str(obj, file_key);
    int rc = 0;
    if (data) {
        rc = kube_base64_decode(data, out, NULL);
        if (rc == JP_EPARSE) {
            set_err(err, errlen, "kubeconfig: %s is not valid base64", data_key);
            rc = JP_ECONFIG;
        }
    } else if (file) {
        char *path = resolve(dir, file);
        if (!path) return JP_ENOMEM;
        rc = util_read_file(path, FILE_CAP, false, out);
        if (rc) set_err(err, errlen, "kubeconfig: %s: cannot read %s", file_key, path);
        free(path);
    }
    return rc;
}

int kubeconfig_parse(const char *yaml, size_t len, const char *dir, const char *context,
                     struct kube_auth **out, char *err, size_t errlen)
{
    *out = NULL;
    cJSON *root = NULL;
    struct yamljson_error yerr;
    struct kube_auth *a = NULL;
    /* Certificates make a kubeconfig mostly text: allow all of the largest file, and more. */
    struct yamljson_opts yo = {.max_bytes = 4 * (size_t)FILE_CAP};
    int rc = yamljson_parse(yaml, len, &yo, &root, NULL, &yerr);
    if (rc == JP_EPARSE) {
        set_err(err, errlen, "kubeconfig:%d:%d: %s", yerr.line, yerr.col, yerr.msg);
        rc = JP_ECONFIG;
    }
    if (rc) goto out;
    rc = JP_ECONFIG;
    if (!cJSON_IsObject(root)) {
        set_err(err, errlen, "kubeconfig: not a mapping");
        goto out;
    }
    const char *ctx_name = context ? context : str(root, "current-context");
    if (!ctx_name) {
        set_err(err, errlen, "kubeconfig: no current-context and no context given");
        goto out;
    }
    const cJSON *ctx = named(root, "contexts", "context", ctx_name);
    if (!cJSON_IsObject(ctx)) {
        set_err(err, errlen, "kubeconfig: context \"%s\" not found", ctx_name);
        goto out;
    }
    const char *cluster_name = str(ctx, "cluster"), *user_name = str(ctx, "user");
    const cJSON *cluster = cluster_name ? named(root, "clusters", "cluster", cluster_name) : NULL;
    if (!cJSON_IsObject(cluster)) {
        set_err(err, errlen, "kubeconfig: context \"%s\": cluster \"%s\" not found", ctx_name,
                cluster_name ? cluster_name : "");
        goto out;
    }
    const cJSON *user = user_name ? named(root, "users", "user", user_name) : NULL;
    if (user_name && !user) {
        set_err(err, errlen, "kubeconfig: context \"%s\": user \"%s\" not found", ctx_name,
                user_name);
        goto out;
    }
    const char *server = str(cluster, "server");
    if (!server || (strncmp(server, "https://", 8) != 0 && strncmp(server, "http://", 7) != 0)) {
        set_err(err, errlen, "kubeconfig: cluster \"%s\": server must be an http(s) URL",
                cluster_name);
        goto out;
    }
    rc = JP_ENOMEM;
    if (!(a = calloc(1, sizeof *a))) goto out;
    if (!(a->server = strdup(server)) || !(a->context = strdup(ctx_name))) goto out;
    size_t sl = strlen(a->server);
    while (sl > 0 && a->server[sl - 1] == '/') a->server[--sl] = '\0';
    const char *ns = str(ctx, "namespace");
    if (ns && !(a->namespace_ = strdup(ns))) goto out;
    const cJSON *insecure = cJSON_GetObjectItemCaseSensitive(cluster, "insecure-skip-tls-verify");
    a->insecure = cJSON_IsTrue(insecure);
    if ((rc = load_pem(cluster, "certificate-authority", "certificate-authority-data", dir,
                       &a->ca_pem, err, errlen)) != 0) goto out;
    if (user) {
        if ((rc = load_pem(user, "client-certificate", "client-certificate-data", dir,
                           &a->cert_pem, err, errlen)) != 0) goto out;
        if ((rc = load_pem(user, "client-key", "client-key-data", dir, &a->key_pem, err,
                           errlen)) != 0) goto out;
        rc = JP_ECONFIG;
        if (!a->cert_pem != !a->key_pem) {
            set_err(err, errlen, "kubeconfig: user \"%s\": client certificate and key must be "
                    "given together", user_name);
            goto out;
        }
        rc = JP_ENOMEM;
        const char *tok = str(user, "token"), *tokf = str(user, "tokenFile");
        if (tok) {
            if (!(a->token = strdup(tok))) goto out;
            log_add_secret(tok);
        } else if (tokf) {
            if (!(a->token_file = resolve(dir, tokf))) goto out;
        }
        const char *un = str(user, "username"), *pw = str(user, "password");
        if (un && (!(a->username = strdup(un)) || (pw && !(a->password = strdup(pw))))) goto out;
        if (pw) log_add_secret(pw);
        rc = JP_ECONFIG;
        if (cJSON_GetObjectItemCaseSensitive(user, "exec") ||
            cJSON_GetObjectItemCaseSensitive(user, "auth-provider")) {
            if (!a->token && !a->token_file && !a->cert_pem) {
                set_err(err, errlen, "kubeconfig: user \"%s\": exec and auth-provider "
                        "credentials are not supported; use a token or a client certificate",
                        user_name);
                goto out;
            }
        }
    }
    rc = 0;
out:
    cJSON_Delete(root);
    if (rc) kube_auth_free(a);
    else *out = a;
    return rc;
}

int kubeconfig_load(const char *path, const char *context, struct kube_auth **out, char *err,
                    size_t errlen)
{
    *out = NULL;
    char *text = NULL, *dir = NULL;
    int rc = util_read_file(path, FILE_CAP, false, &text);
    if (rc) {
        set_err(err, errlen, "kubeconfig %s: %s", path, jp_strerror(rc));
        return rc;
    }
    rc = JP_ENOMEM;
    if (!(dir = strdup(path))) goto out;
    char *slash = strrchr(dir, '/');
    if (slash) *slash = '\0';
    else dir[0] = '\0';
    rc = kubeconfig_parse(text, strlen(text), dir, context, out, err, errlen);
out:
    free(text);
    free(dir);
    return rc;
}

int kube_auth_in_cluster(const char *sa_dir, struct kube_auth **out, char *err, size_t errlen)
{
    *out = NULL;
    const char *host = getenv("KUBERNETES_SERVICE_HOST"), *port = getenv("KUBERNETES_SERVICE_PORT");
    struct dbuf b;
    dbuf_init(&b, 4096);
    struct kube_auth *a = NULL;
    int rc = JP_ECONFIG;
    if (!sa_dir) sa_dir = SA_DIR;
    if (!host || !host[0] || !port || !port[0]) {
        set_err(err, errlen, "not in a cluster: KUBERNETES_SERVICE_HOST/PORT are not set");
        goto out;
    }
    rc = JP_ENOMEM;
    if (!(a = calloc(1, sizeof *a))) goto out;
    if (strchr(host, ':')) rc = dbuf_printf(&b, "https://[%s]:%s", host, port);
    else rc = dbuf_printf(&b, "https://%s:%s", host, port);
    if (rc || !(a->server = dbuf_take(&b))) { rc = JP_ENOMEM; goto out; }
    rc = dbuf_printf(&b, "%s/token", sa_dir);
    if (rc || !(a->token_file = dbuf_take(&b))) { rc = JP_ENOMEM; goto out; }
    struct stat st;
    if (stat(a->token_file, &st) != 0) {
        set_err(err, errlen, "in-cluster: no service-account token at %s", a->token_file);
        rc = JP_ECONFIG;
        goto out;
    }
    rc = dbuf_printf(&b, "%s/ca.crt", sa_dir);
    if (rc) goto out;
    rc = util_read_file(b.data, FILE_CAP, false, &a->ca_pem);
    if (rc) {
        set_err(err, errlen, "in-cluster: cannot read %s", b.data);
        rc = JP_ECONFIG;
        goto out;
    }
    dbuf_reset(&b);
    if ((rc = dbuf_printf(&b, "%s/namespace", sa_dir)) != 0) goto out;
    if (util_read_file(b.data, 4096, true, &a->namespace_) != 0) a->namespace_ = NULL;
    rc = 0;
out:
    dbuf_free(&b);
    if (rc) kube_auth_free(a);
    else *out = a;
    return rc;
}
