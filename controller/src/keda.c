/* keda.c: KEDA ScaledJob manifests (rabbitmq trigger) to JobPool manifests, with a comment for
 * every field that maps differently or is dropped. YAML comes in and goes out through yamljson. */
#define _GNU_SOURCE
#include "keda.h"

#include <cjson/cJSON.h>
#include <math.h>
#include <regex.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "err.h"
#include "util.h"
#include "yamljson.h"

#define INPUT_MAX ((size_t)8 << 20)
#define POOL_NAME_MAX 52          /* config.c's NAME_MAX_LEN: the Job generateName prefix */
#define COUNT_MAX 100000          /* config.c's LIMIT_MAX */
#define KEDA_MAX_REPLICAS 100     /* ScaledJob defaults, kept so behaviour does not change */
#define KEDA_HISTORY 100

/* One ScaledJob being converted. */
struct sj {
    const char *file;
    const cJSON *root;
    const struct yamljson_src *src;
    const char *name;
    struct dbuf *errs;
    int nerr;
    struct dbuf spec;    /* the JobPool's spec lines */
    struct dbuf dropped; /* comment lines for fields that have no JobPool counterpart */
    bool need_secret;    /* the trigger names its own broker: write connectionSecretRef */
    const char *secret_why;
    const struct run *run;
    char secret[254];    /* the Secret connectionSecretRef names: a TriggerAuthentication's own
                          * when its keys are the JobPool's, else "" (<name>-rabbitmq) */
};

/* A TriggerAuthentication of the input, as far as connectionSecretRef needs it. */
struct ta {
    bool cluster;        /* ClusterTriggerAuthentication */
    char ns[254], name[254];
    char secret[254];    /* the one Secret all its secretTargetRefs read, or "" */
    bool as_is;          /* every parameter's key is the JobPool Secret's key of that name */
    char how[768];       /* otherwise: which key of which Secret goes where */
};

struct run {
    const char *file;
    struct ta *tas;      /* the input's TriggerAuthentications (first pass) */
    size_t ntas, tacap;
    struct dbuf *out;
    struct dbuf *notes;
    struct dbuf *errs;
    int nerr;
    int converted;
};

static const cJSON *get(const cJSON *o, const char *k)
{
    return cJSON_IsObject(o) ? cJSON_GetObjectItemCaseSensitive(o, k) : NULL;
}

static const char *get_s(const cJSON *o, const char *k)
{
    const cJSON *v = get(o, k);
    return cJSON_IsString(v) ? v->valuestring : NULL;
}

static void sj_fail(struct sj *s, const char *path, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* One error line, "FILE:LINE:COL: ScaledJob NAME: PATH: message", at path's (or its nearest
 * ancestor's) position. */
static void sj_fail(struct sj *s, const char *path, const char *fmt, ...)
{
    int line = 1, col = 1;
    yamljson_src_find(s->src, path, &line, &col);
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    dbuf_printf(s->errs, "%s:%d:%d: ScaledJob %s: %s: %s\n", s->file, line, col,
                s->name ? s->name : "(unnamed)", path, msg);
    s->nerr++;
}

static void drop(struct sj *s, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* A comment line in the spec for a field that is not carried over. */
static void drop(struct sj *s, const char *fmt, ...)
{
    char msg[640];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    dbuf_printf(&s->dropped, "  # %s\n", msg);
}

/* "  key: value  # comment" in the spec; value is emitted as a YAML scalar. */
static void field(struct sj *s, const char *key, const cJSON *value, const char *comment)
{
    dbuf_printf(&s->spec, "  %s: ", key);
    yamljson_emit_scalar(&s->spec, value);
    if (comment) dbuf_printf(&s->spec, "  # %s", comment);
    dbuf_append(&s->spec, "\n", 1);
}

static void field_int(struct sj *s, const char *key, long long v, const char *comment)
{
    cJSON *n = cJSON_CreateNumber((double)v);
    if (n) field(s, key, n, comment);
    cJSON_Delete(n);
}

static void field_str(struct sj *s, const char *key, const char *v, const char *comment)
{
    cJSON *n = cJSON_CreateString(v);
    if (n) field(s, key, n, comment);
    cJSON_Delete(n);
}

/* An integer field of the ScaledJob in [min, max]; false (with an error) when present and bad. */
static bool get_int(struct sj *s, const cJSON *o, const char *key, const char *path, long long min,
                    long long max, bool *present, long long *out)
{
    const cJSON *v = get(o, key);
    *present = v != NULL;
    if (!v) return true;
    if (!cJSON_IsNumber(v) || v->valuedouble != util_floor(v->valuedouble)) {
        sj_fail(s, path, "expected an integer");
        return false;
    }
    if (v->valuedouble < (double)min || v->valuedouble > (double)max) {
        sj_fail(s, path, "%.0f is outside the JobPool's range %lld..%lld", v->valuedouble, min,
                max);
        return false;
    }
    *out = (long long)v->valuedouble;
    return true;
}

/* A trigger metadata value as text: KEDA's metadata is a map of strings, but an unquoted YAML
 * number or boolean is taken too. NULL when absent; "" (with an error) for a mapping or list. */
static const char *md_text(struct sj *s, const cJSON *md, const char *key, const char *path,
                           char *buf, size_t len)
{
    const cJSON *v = get(md, key);
    if (!v || cJSON_IsNull(v)) return NULL;
    if (cJSON_IsString(v)) return v->valuestring;
    if (cJSON_IsBool(v)) return cJSON_IsTrue(v) ? "true" : "false";
    if (cJSON_IsNumber(v)) {
        snprintf(buf, len, "%.17g", v->valuedouble);
        return buf;
    }
    sj_fail(s, path, "expected a string");
    return "";
}

static bool dns_label(const char *n, size_t max)
{
    size_t len = strlen(n);
    if (!len || len > max || n[0] == '-' || n[len - 1] == '-') return false;
    for (const char *p = n; *p; p++)
        if (!((*p >= 'a' && *p <= 'z') || (*p >= '0' && *p <= '9') || *p == '-')) return false;
    return true;
}

/* KEDA's boolean metadata ("true", "false"; empty is false). False when v is neither. */
static bool truthy(const char *v, bool *out)
{
    static const char *const t[] = {"true", "True", "TRUE"}, *const f[] = {"false", "False",
                                                                         "FALSE", ""};
    for (size_t i = 0; i < 4; i++) {
        if (i < 3 && !strcmp(v, t[i])) {
            *out = true;
            return true;
        }
        if (!strcmp(v, f[i])) {
            *out = false;
            return true;
        }
    }
    return false;
}

/* The queue pattern: KEDA hands it to the management API's PCRE filter; jobpool compiles POSIX
 * extended regexes, which lack PCRE's shorthand classes and (?...) groups. */
static void map_regex(struct sj *s, const char *re, const char *path)
{
    static const char *const pcre_only[] = {"\\d", "\\D", "\\w", "\\W", "\\s", "\\S", "(?",
                                            "*?", "+?", "??", NULL};
    for (size_t i = 0; pcre_only[i]; i++)
        if (strstr(re, pcre_only[i])) {
            sj_fail(s, path, "'%s' is PCRE syntax, which a POSIX extended regex (queueRegex) "
                    "lacks; rewrite it (for example [0-9] for \\d, [[:alnum:]_] for \\w)",
                    pcre_only[i]);
            return;
        }
    regex_t r;
    int e = regcomp(&r, re, REG_EXTENDED | REG_NOSUB);
    if (e) {
        char msg[128];
        regerror(e, &r, msg, sizeof msg);
        regfree(&r);
        sj_fail(s, path, "not a valid POSIX extended regex: %s", msg);
        return;
    }
    regfree(&r);
    if (strlen(re) > 1024) sj_fail(s, path, "longer than 1024 characters");
    field_str(s, "queueRegex", re, "queueName with useRegex: POSIX extended regex, unanchored "
              "like KEDA's");
}

/* queueName, useRegex, operation. */
static void map_queue(struct sj *s, const cJSON *md, const char *tp)
{
    char p[256], b1[64], b2[64], b3[64];
    snprintf(p, sizeof p, "%s.metadata.queueName", tp);
    const char *q = md_text(s, md, "queueName", p, b1, sizeof b1);
    if (!q || !*q) {
        if (!q || cJSON_IsString(get(md, "queueName")))
            sj_fail(s, p, "required: the queue whose messages start Jobs");
        return;
    }
    char rp[256], op[256];
    snprintf(rp, sizeof rp, "%s.metadata.useRegex", tp);
    snprintf(op, sizeof op, "%s.metadata.operation", tp);
    const char *ur = md_text(s, md, "useRegex", rp, b2, sizeof b2);
    const char *oper = md_text(s, md, "operation", op, b3, sizeof b3);
    bool regex = false;
    if (ur && !truthy(ur, &regex)) sj_fail(s, rp, "expected true or false, got '%s'", ur);
    if (regex) {
        map_regex(s, q, p);
        if (oper && strcmp(oper, "sum") && strcmp(oper, "max") && strcmp(oper, "avg"))
            sj_fail(s, op, "expected sum, max or avg, got '%s'", oper);
        else if (oper && strcmp(oper, "sum"))
            drop(s, "operation %s: maps differently: jobpool always sums the ready messages of "
                 "the matching queues (sum), one worker per message", oper);
        return;
    }
    if (oper) drop(s, "operation %s: dropped: it applies only with useRegex", oper);
    if (strlen(q) > 255) {
        sj_fail(s, p, "queue names are at most 255 bytes");
        return;
    }
    field_str(s, "queue", q, NULL);
}

/* mode with value (or the older queueLength). */
static void map_mode(struct sj *s, const cJSON *md, const char *tp)
{
    char mp[256], vp[256], b1[64], b2[64];
    snprintf(mp, sizeof mp, "%s.metadata.mode", tp);
    const char *mode = md_text(s, md, "mode", mp, b1, sizeof b1);
    const char *vkey = "value";
    snprintf(vp, sizeof vp, "%s.metadata.value", tp);
    const char *val = md_text(s, md, "value", vp, b2, sizeof b2);
    if (!val && get(md, "queueLength")) {
        vkey = "queueLength";
        snprintf(vp, sizeof vp, "%s.metadata.queueLength", tp);
        val = md_text(s, md, "queueLength", vp, b2, sizeof b2);
    }
    if (mode && !strcmp(mode, "MessageRate")) {
        sj_fail(s, mp, "MessageRate cannot be mapped: jobpool starts one worker per ready "
                "message, and a publish rate does not say how many messages wait; use "
                "QueueLength");
        return;
    }
    if (mode && *mode && strcmp(mode, "QueueLength")) {
        sj_fail(s, mp, "expected QueueLength, got '%s'", mode);
        return;
    }
    if (!val) {
        drop(s, "%s: unset: one worker per ready message (messagesPerWorker 1)", vkey);
        return;
    }
    char *end = NULL;
    double d = strtod(val, &end);
    if (!*val || *end || !isfinite(d) || d <= 0) {
        sj_fail(s, vp, "expected a number > 0, got '%s'", val);
        return;
    }
    double c = util_ceil(d);
    if (c > COUNT_MAX) {
        sj_fail(s, vp, "%s is above the JobPool's limit for messagesPerWorker (%d)", val,
                COUNT_MAX);
        return;
    }
    char why[160];
    if (c != d)
        snprintf(why, sizeof why, "%s %s: maps differently: rounded up to whole messages", vkey,
                 val);
    else
        snprintf(why, sizeof why, "%s (mode QueueLength)", vkey);
    field_int(s, "messagesPerWorker", (long long)c, why);
}

/* The URL in host, with any user:password@ left out; the path (the vhost) is kept. */
static void strip_credentials(const char *url, char *out, size_t len)
{
    const char *scheme = strstr(url, "://");
    const char *auth = scheme ? scheme + 3 : url;
    const char *slash = strchr(auth, '/');
    const char *at = strchr(auth, '@');
    if (at && (!slash || at < slash))
        snprintf(out, len, "%.*s%s", (int)(auth - url), url, at + 1);
    else
        snprintf(out, len, "%s", url);
}

/* The vhost in the path of a host URL ("amqp://h:5672/orders", "/%2F" for "/"), into out; false
 * when the URL has no path or an empty one. */
static bool host_vhost(const char *url, char *out, size_t len)
{
    const char *scheme = strstr(url, "://");
    const char *path = strchr(scheme ? scheme + 3 : url, '/');
    if (!path || !path[1] || len < 2) return false;
    size_t o = 0;
    for (const char *p = path + 1; *p && *p != '?' && *p != '#' && o + 1 < len; p++) {
        unsigned hex;
        if (*p == '%' && sscanf(p + 1, "%2x", &hex) == 1 && p[1] && p[2]) {
            out[o++] = (char)hex;
            p += 2;
        } else {
            out[o++] = *p;
        }
    }
    out[o] = '\0';
    return o > 0;
}

/* The env variable hostFromEnv names, in the container KEDA would read it from. */
static void describe_env(struct sj *s, const char *var, char *out, size_t len)
{
    const cJSON *spec = get(s->root, "spec");
    const cJSON *pod = get(get(get(spec, "jobTargetRef"), "template"), "spec");
    const cJSON *cs = get(pod, "containers");
    const char *want = get_s(spec, "envSourceContainerName");
    const cJSON *c = NULL, *e;
    cJSON_ArrayForEach(e, cs) {
        if (!want || (get_s(e, "name") && !strcmp(get_s(e, "name"), want))) {
            c = e;
            break;
        }
    }
    snprintf(out, len, "it is not set in the Job's container; give the Secret its keys");
    cJSON_ArrayForEach(e, get(c, "env")) {
        const char *n = get_s(e, "name");
        if (!n || strcmp(n, var)) continue;
        const cJSON *ref = get(get(e, "valueFrom"), "secretKeyRef");
        if (ref && get_s(ref, "name") && get_s(ref, "key"))
            snprintf(out, len, "it comes from Secret %s key %s", get_s(ref, "name"),
                     get_s(ref, "key"));
        else
            snprintf(out, len, "the container sets it");
        return;
    }
}

/* The key of a JobPool's Secret that takes KEDA's RabbitMQ auth parameter, or NULL. */
static const char *ta_key(const char *param)
{
    static const char *const map[][2] = {
        {"host", "host"}, {"username", "username"}, {"password", "password"}, {"ca", "ca.crt"}};
    for (size_t i = 0; i < sizeof map / sizeof map[0]; i++)
        if (!strcmp(param, map[i][0])) return map[i][1];
    return NULL;
}

/* Read one TriggerAuthentication (or ClusterTriggerAuthentication) into t. */
static void ta_read(const cJSON *root, bool cluster, struct ta *t)
{
    memset(t, 0, sizeof *t);
    t->cluster = cluster;
    const char *ns = get_s(get(root, "metadata"), "namespace");
    snprintf(t->ns, sizeof t->ns, "%s", ns ? ns : "");
    snprintf(t->name, sizeof t->name, "%s", get_s(get(root, "metadata"), "name"));
    const cJSON *spec = get(root, "spec"), *e;
    bool other = false, one = true;
    size_t o = 0;
    cJSON_ArrayForEach(e, spec) {
        if (strcmp(e->string, "secretTargetRef")) other = true; /* env, a vault, a pod identity */
    }
    t->as_is = !other && !cluster;
    cJSON_ArrayForEach(e, get(spec, "secretTargetRef")) {
        const char *param = get_s(e, "parameter"), *name = get_s(e, "name"), *key = get_s(e, "key");
        if (!param || !name || !key) continue;
        const char *want = ta_key(param);
        if (!t->secret[0]) snprintf(t->secret, sizeof t->secret, "%s", name);
        else if (strcmp(t->secret, name)) one = false;
        if (!want || strcmp(want, key)) t->as_is = false;
        if (o < sizeof t->how)
            o += (size_t)snprintf(t->how + o, sizeof t->how - o, "%s%s from Secret %s key %s",
                                  o ? "; " : "", want ? want : param, name, key);
        if (!want && o < sizeof t->how)
            o += (size_t)snprintf(t->how + o, sizeof t->how - o, " (parameter %s: not "
                                  "supported)", param);
    }
    if (other && o < sizeof t->how)
        snprintf(t->how + o, sizeof t->how - o, "%sits other sources (env, a vault, a pod "
                 "identity): copy their values", o ? "; " : "");
    if (!one || !t->secret[0]) {
        t->as_is = false;
        if (!one) t->secret[0] = '\0';
    }
}

static int on_doc_ta(void *ud, const cJSON *root, const struct yamljson_src *src, int line)
{
    (void)src;
    (void)line;
    struct run *r = ud;
    const char *kind = get_s(root, "kind"), *api = get_s(root, "apiVersion");
    if (!cJSON_IsObject(root) || !kind || !api || strncmp(api, "keda.sh/", 8) ||
        !get_s(get(root, "metadata"), "name"))
        return 0;
    bool cluster = !strcmp(kind, "ClusterTriggerAuthentication");
    if (!cluster && strcmp(kind, "TriggerAuthentication")) return 0;
    if (r->ntas == r->tacap) {
        size_t cap = r->tacap ? r->tacap * 2 : 4;
        struct ta *t = realloc(r->tas, cap * sizeof *t);
        if (!t) return JP_ENOMEM;
        r->tas = t;
        r->tacap = cap;
    }
    ta_read(root, cluster, &r->tas[r->ntas++]);
    return 0;
}

static const struct ta *ta_find(const struct sj *s, const char *kind, const char *name)
{
    bool cluster = kind && !strcmp(kind, "ClusterTriggerAuthentication");
    const char *ns = get_s(get(s->root, "metadata"), "namespace");
    for (size_t i = 0; i < s->run->ntas; i++) {
        const struct ta *t = &s->run->tas[i];
        if (t->cluster != cluster || strcmp(t->name, name)) continue;
        if (cluster || !strcmp(t->ns, ns ? ns : "")) return t;
    }
    return NULL;
}

/* authenticationRef: name its TriggerAuthentication's Secret when its keys are the JobPool's,
 * else say which key goes where. */
static void map_auth(struct sj *s, const cJSON *auth)
{
    const char *an = get_s(auth, "name");
    const char *kind = get_s(auth, "kind");
    const char *k = kind ? kind : "TriggerAuthentication";
    const struct ta *t = an ? ta_find(s, kind, an) : NULL;
    if (t && t->as_is) {
        snprintf(s->secret, sizeof s->secret, "%s", t->secret);
        drop(s, "authenticationRef %s %s: connectionSecretRef names its Secret %s, whose keys "
             "(%s) jobpool reads as they are; add key managementUrl (the management API's "
             "http[s]:// URL) unless host is that URL", k, an, t->secret, t->how);
    } else if (t) {
        drop(s, "authenticationRef %s %s: maps differently: put into the Secret named by "
             "connectionSecretRef: %s; and key managementUrl (the management API's URL)%s", k,
             an, t->how[0] ? t->how : "its values",
             t->cluster ? " (a ClusterTriggerAuthentication's Secret may live elsewhere: "
             "jobpool reads the JobPool's namespace only)" : "");
    } else {
        drop(s, "authenticationRef %s %s: maps differently (not in this input): if its Secret "
             "holds keys host, username, password (and managementUrl), name it in "
             "connectionSecretRef; else put them into the Secret named there", k,
             an ? an : "(unnamed)");
    }
    s->need_secret = true;
}

/* host, hostFromEnv, authenticationRef, vhostName, protocol: which broker and vhost. */
static void map_connection(struct sj *s, const cJSON *t, const cJSON *md, const char *tp)
{
    char p[256], b[64], clean[512], why[256];
    snprintf(p, sizeof p, "%s.metadata.vhostName", tp);
    const char *vhost = md_text(s, md, "vhostName", p, b, sizeof b);
    snprintf(p, sizeof p, "%s.metadata.host", tp);
    char hb[64], hv[256];
    const char *host = md_text(s, md, "host", p, hb, sizeof hb);
    if (vhost && *vhost) {
        if (strlen(vhost) > 255) sj_fail(s, p, "vhost names are at most 255 bytes");
        else field_str(s, "vhost", vhost, "vhostName");
    } else if (host && host_vhost(host, hv, sizeof hv)) {
        field_str(s, "vhost", hv, "the vhost in host's path");
    }
    snprintf(p, sizeof p, "%s.metadata.hostFromEnv", tp);
    const char *env = md_text(s, md, "hostFromEnv", p, b, sizeof b);
    /* hostFromEnv's URL is only known at run time: its vhost is the Secret's business. */
    const cJSON *auth = get(t, "authenticationRef");
    if (host && *host) {
        strip_credentials(host, clean, sizeof clean);
        drop(s, "host %s%s: maps differently: this pool's broker goes in the Secret named by "
             "connectionSecretRef (key host, credentials and all, plus managementUrl)", clean,
             strcmp(clean, host) ? " (credentials left out here)" : "");
        s->need_secret = true;
    }
    if (env && *env) {
        describe_env(s, env, why, sizeof why);
        drop(s, "hostFromEnv %s: maps differently: %s; put that URL in the Secret named by "
             "connectionSecretRef (key host, credentials and all, plus managementUrl)", env, why);
        s->need_secret = true;
    }
    if (auth) map_auth(s, auth);
    if (!s->need_secret)
        drop(s, "no host, hostFromEnv or authenticationRef: the pool uses the controller's broker");
    snprintf(p, sizeof p, "%s.metadata.protocol", tp);
    const char *proto = md_text(s, md, "protocol", p, b, sizeof b);
    if (proto && strcmp(proto, "auto"))
        drop(s, "protocol %s: maps differently: the controller's rabbitmq.depthSource (amqp or "
             "management) applies to every pool", proto);
}

/* Trigger metadata that has no per-pool counterpart. */
static void map_trigger_rest(struct sj *s, const cJSON *t, const cJSON *md)
{
    static const char *const used[] = {"queueName", "useRegex", "operation", "mode", "value",
                                       "queueLength", "vhostName", "host", "hostFromEnv",
                                       "protocol", NULL};
    static const char *const why[][2] = {
        {"activationValue", "the first ready message starts a worker; minActive keeps workers "
                            "waiting ahead"},
        {"excludeUnacknowledged", "jobpool always counts only ready messages, never unacked ones"},
        {"pageSize", "management API paging is internal"},
        {"timeout", "the controller's rabbitmq.timeout applies"},
        {"unsafeSsl", "TLS is always verified; give the Secret a ca.crt for a private CA"},
    };
    const cJSON *e;
    cJSON_ArrayForEach(e, md) {
        size_t i;
        for (i = 0; used[i] && strcmp(used[i], e->string); i++) {
        }
        if (used[i]) continue;
        const char *reason = "not known to jobpool";
        for (size_t j = 0; j < sizeof why / sizeof why[0]; j++)
            if (!strcmp(why[j][0], e->string)) reason = why[j][1];
        drop(s, "%s: dropped: %s", e->string, reason);
    }
    cJSON_ArrayForEach(e, t) {
        if (!strcmp(e->string, "type") || !strcmp(e->string, "metadata") ||
            !strcmp(e->string, "authenticationRef"))
            continue;
        drop(s, "trigger %s: dropped: a JobPool has one queue source", e->string);
    }
}

/* The JobSpec, minus what one-worker-per-Job makes meaningless; ttlSecondsAfterFinished moves. */
static cJSON *map_template(struct sj *s, const cJSON *spec)
{
    const cJSON *jt = get(spec, "jobTargetRef");
    if (!cJSON_IsObject(jt)) {
        sj_fail(s, jt ? "spec.jobTargetRef" : "spec", jt ? "expected a mapping (a JobSpec)"
                : "jobTargetRef is required (the Job's spec)");
        return NULL;
    }
    if (!cJSON_IsObject(get(jt, "template"))) {
        sj_fail(s, "spec.jobTargetRef.template", "required: the pod template");
        return NULL;
    }
    cJSON *t = cJSON_Duplicate(jt, 1);
    if (!t) return NULL;
    static const char *const one[] = {"parallelism", "completions"};
    for (size_t i = 0; i < 2; i++) {
        const cJSON *v = get(jt, one[i]);
        if (!v) continue;
        if (!cJSON_IsNumber(v) || v->valuedouble != 1)
            drop(s, "jobTargetRef.%s: dropped: every Job is one worker for one message", one[i]);
        cJSON_DeleteItemFromObjectCaseSensitive(t, one[i]);
    }
    bool present = false;
    long long ttl = 0;
    if (get_int(s, jt, "ttlSecondsAfterFinished", "spec.jobTargetRef.ttlSecondsAfterFinished", 0,
                2147483647LL, &present, &ttl) && present) {
        field_int(s, "ttlSecondsAfterFinished", ttl, "jobTargetRef.ttlSecondsAfterFinished: "
                  "jobpool sets it on each Job");
        cJSON_DeleteItemFromObjectCaseSensitive(t, "ttlSecondsAfterFinished");
    } else if (!present) {
        field(s, "ttlSecondsAfterFinished", &(cJSON){.type = cJSON_NULL},
              "unset in jobTargetRef, as with KEDA (jobpool's default would be 600)");
    }
    return t;
}

/* maxReplicaCount, minReplicaCount and the two history limits. */
static void map_counts(struct sj *s, const cJSON *spec)
{
    bool pmax, pmin, ps, pf;
    long long max = KEDA_MAX_REPLICAS, min = 0, succ = KEDA_HISTORY, fail = KEDA_HISTORY;
    if (get_int(s, spec, "maxReplicaCount", "spec.maxReplicaCount", 1, COUNT_MAX, &pmax, &max))
        field_int(s, "maxActive", max, pmax ? "maxReplicaCount" : "maxReplicaCount unset: "
                  "KEDA's default 100");
    if (get_int(s, spec, "minReplicaCount", "spec.minReplicaCount", 0, COUNT_MAX, &pmin, &min) &&
        pmin) {
        if (min > max)
            sj_fail(s, "spec.minReplicaCount", "%lld is more than maxReplicaCount (%lld)", min,
                    max);
        else
            field_int(s, "minActive", min, "minReplicaCount");
    }
    if (get_int(s, spec, "successfulJobsHistoryLimit", "spec.successfulJobsHistoryLimit", 0,
                COUNT_MAX, &ps, &succ))
        field_int(s, "successfulHistory", succ, ps ? "successfulJobsHistoryLimit"
                  : "successfulJobsHistoryLimit unset: KEDA's default 100 (jobpool's is 10)");
    if (get_int(s, spec, "failedJobsHistoryLimit", "spec.failedJobsHistoryLimit", 0, COUNT_MAX,
                &pf, &fail))
        field_int(s, "failedHistory", fail, pf ? "failedJobsHistoryLimit"
                  : "failedJobsHistoryLimit unset: KEDA's default 100 (jobpool's is 10)");
}

/* ScaledJob spec fields with no per-pool counterpart. */
static void map_spec_rest(struct sj *s, const cJSON *spec)
{
    const cJSON *v;
    if ((v = get(spec, "pollingInterval")) && cJSON_IsNumber(v))
        drop(s, "pollingInterval %.0f: dropped: the controller's pollInterval (default 2s) "
             "applies to every pool", v->valuedouble);
    if ((v = get(spec, "envSourceContainerName")))
        drop(s, "envSourceContainerName: dropped: only read here to trace hostFromEnv");
    if ((v = get(spec, "rollout")))
        drop(s, "rollout: dropped: a change never deletes a running Job; new Jobs use the new "
             "template (KEDA's gradual)");
    const cJSON *ss = get(spec, "scalingStrategy");
    const char *st = get_s(ss, "strategy");
    if (st)
        drop(s, "scalingStrategy.strategy %s: maps differently: jobpool starts ready + "
             "spareWorkers - pending - waiting workers, never counting a message twice (like "
             "accurate)%s", st, !strcmp(st, "eager") ? "; spareWorkers gives eager's headroom"
             : "");
    cJSON_ArrayForEach(v, ss) {
        if (strcmp(v->string, "strategy"))
            drop(s, "scalingStrategy.%s: dropped: pending and waiting workers are counted "
                 "exactly (pendingTimeout removes stuck ones)", v->string);
    }
    static const char *const known[] = {"jobTargetRef", "pollingInterval", "triggers",
        "maxReplicaCount", "minReplicaCount", "successfulJobsHistoryLimit",
        "failedJobsHistoryLimit", "envSourceContainerName", "rollout", "scalingStrategy", NULL};
    cJSON_ArrayForEach(v, spec) {
        size_t i;
        for (i = 0; known[i] && strcmp(known[i], v->string); i++) {
        }
        if (!known[i]) drop(s, "%s: dropped: not known to jobpool", v->string);
    }
}

/* metadata: name, namespace, labels and annotations (the pause annotation translated). */
static void write_metadata(struct sj *s, struct dbuf *o)
{
    const cJSON *md = get(s->root, "metadata");
    dbuf_printf(o, "metadata:\n  name: ");
    cJSON *n = cJSON_CreateString(s->name);
    yamljson_emit_scalar(o, n);
    cJSON_Delete(n);
    dbuf_append(o, "\n", 1);
    const cJSON *ns = get(md, "namespace");
    if (cJSON_IsString(ns)) {
        dbuf_printf(o, "  namespace: ");
        yamljson_emit_scalar(o, ns);
        dbuf_append(o, "\n", 1);
    }
    const cJSON *labels = get(md, "labels");
    if (cJSON_IsObject(labels) && labels->child) {
        dbuf_printf(o, "  # labels: kept on the JobPool; KEDA also put them on each Job, jobpool "
                    "does not (use jobTemplate.template.metadata.labels)\n  labels:\n");
        yamljson_emit(o, labels, 4);
    }
    cJSON *ann = cJSON_Duplicate(get(md, "annotations"), 1);
    if (!cJSON_IsObject(ann)) {
        cJSON_Delete(ann);
        return;
    }
    cJSON_DeleteItemFromObjectCaseSensitive(ann, "kubectl.kubernetes.io/last-applied-configuration");
    const char *paused = get_s(ann, "autoscaling.keda.sh/paused");
    bool is_paused = false;
    if (paused) {
        truthy(paused, &is_paused);
        cJSON_DeleteItemFromObjectCaseSensitive(ann, "autoscaling.keda.sh/paused");
        if (is_paused)
            cJSON_AddStringToObject(ann, "jobpool.dev/paused", "true");
        else
            dbuf_printf(o, "  # autoscaling.keda.sh/paused %s: dropped (not paused)\n", paused);
    }
    if (ann->child) {
        if (ann->child->next || !is_paused)
            dbuf_printf(o, "  # annotations: kept on the JobPool; KEDA also put them on each "
                        "Job, jobpool does not%s\n", is_paused ? "; autoscaling.keda.sh/paused "
                        "is jobpool.dev/paused" : "");
        else
            dbuf_printf(o, "  # autoscaling.keda.sh/paused: jobpool.dev/paused\n");
        dbuf_printf(o, "  annotations:\n");
        yamljson_emit(o, ann, 4);
    }
    cJSON_Delete(ann);
}

/* The rabbitmq trigger: exactly one; a second is an error (a JobPool has one queue source), and
 * the first is still mapped so that its own problems are reported too. Returns its index, or -1
 * when there is none (the ScaledJob is skipped). */
static int find_trigger(struct sj *s, const cJSON *spec)
{
    const cJSON *ts = get(spec, "triggers");
    if (!cJSON_IsArray(ts)) return -1;
    int found = -1, i = 0;
    const cJSON *t;
    cJSON_ArrayForEach(t, ts) {
        const char *type = get_s(t, "type");
        if (type && !strcmp(type, "rabbitmq")) {
            if (found >= 0) {
                char p[64];
                snprintf(p, sizeof p, "spec.triggers[%d]", i);
                sj_fail(s, p, "a second rabbitmq trigger cannot be mapped: a JobPool has one "
                        "queue source (use queueRegex, or one JobPool per queue)");
            } else {
                found = i;
            }
        } else {
            drop(s, "triggers[%d] (type %s): dropped: a JobPool reads only its RabbitMQ queue", i,
                 type ? type : "unset");
        }
        i++;
    }
    return found;
}

static int convert_one(struct run *r, struct sj *s, const cJSON *spec, int line)
{
    int ti = find_trigger(s, spec);
    if (ti == -1) {
        dbuf_printf(r->notes, "%s:%d: skipped ScaledJob %s: it has no rabbitmq trigger\n",
                    r->file, line, s->name);
        return 0;
    }
    char tp[64];
    snprintf(tp, sizeof tp, "spec.triggers[%d]", ti);
    const cJSON *t = cJSON_GetArrayItem(get(spec, "triggers"), ti);
    const cJSON *md = get(t, "metadata");
    if (!cJSON_IsObject(md)) {
        sj_fail(s, tp, "the rabbitmq trigger needs metadata (queueName at least)");
        return 0;
    }
    map_queue(s, md, tp);
    map_connection(s, t, md, tp);
    if (s->need_secret && s->secret[0]) {
        dbuf_printf(&s->spec, "  connectionSecretRef:\n    name: %s  # the TriggerAuthentication's "
                    "Secret (docs/migrating-from-keda.md)\n", s->secret);
    } else if (s->need_secret) {
        dbuf_printf(&s->spec, "  connectionSecretRef:\n    name: %s-rabbitmq  # create this "
                    "Secret (docs/migrating-from-keda.md), or remove this to use the "
                    "controller's broker\n", s->name);
    }
    map_counts(s, spec);
    map_mode(s, md, tp);
    map_trigger_rest(s, t, md);
    map_spec_rest(s, spec);
    cJSON *tmpl = map_template(s, spec);
    if (s->nerr || !tmpl) {
        cJSON_Delete(tmpl);
        return 0;
    }
    struct dbuf *o = r->out;
    if (r->converted) dbuf_printf(o, "---\n");
    dbuf_printf(o, "# From ScaledJob %s (%s:%d) by jobpool-controller convert.\n"
                "apiVersion: jobpool.dev/v1alpha1\nkind: JobPool\n", s->name, r->file, line);
    write_metadata(s, o);
    dbuf_printf(o, "spec:\n");
    dbuf_append(o, s->spec.data ? s->spec.data : "", s->spec.len);
    dbuf_append(o, s->dropped.data ? s->dropped.data : "", s->dropped.len);
    dbuf_printf(o, "  jobTemplate:  # jobTargetRef\n");
    int rc = yamljson_emit(o, tmpl, 4);
    cJSON_Delete(tmpl);
    r->converted++;
    return rc == JP_ENOMEM ? rc : 0;
}

static int on_doc(void *ud, const cJSON *root, const struct yamljson_src *src, int line)
{
    struct run *r = ud;
    if (!cJSON_IsObject(root)) return 0;   /* a lone scalar or "---" with nothing after it */
    const char *kind = get_s(root, "kind"), *api = get_s(root, "apiVersion");
    const char *name = get_s(get(root, "metadata"), "name");
    if (!kind || strcmp(kind, "ScaledJob") || !api || strncmp(api, "keda.sh/", 8)) {
        dbuf_printf(r->notes, "%s:%d: skipped %s %s: not a KEDA ScaledJob\n", r->file, line,
                    kind ? kind : "(no kind)", name ? name : "(unnamed)");
        return 0;
    }
    struct sj s = {.file = r->file, .root = root, .src = src, .name = name, .errs = r->errs,
                   .run = r};
    dbuf_init(&s.spec, 0);
    dbuf_init(&s.dropped, 0);
    int rc = 0;
    const cJSON *spec = get(root, "spec");
    if (!name || !*name)
        sj_fail(&s, "metadata.name", "required");
    else if (!dns_label(name, POOL_NAME_MAX))
        sj_fail(&s, "metadata.name", "a JobPool's name is the pool name: a DNS-1123 label of at "
                "most %d characters (it prefixes the Job names); rename it", POOL_NAME_MAX);
    else if (!cJSON_IsObject(spec))
        sj_fail(&s, "spec", "required: a mapping");
    else
        rc = convert_one(r, &s, spec, line);
    r->nerr += s.nerr;
    dbuf_free(&s.spec);
    dbuf_free(&s.dropped);
    return rc;
}

int keda_convert(const char *yaml, size_t len, const char *name, struct dbuf *out,
                 struct dbuf *notes, struct dbuf *errs)
{
    struct run r = {.file = name, .out = out, .notes = notes, .errs = errs};
    struct yamljson_error e;
    memset(&e, 0, sizeof e);
    size_t start = out->len;
    /* First the TriggerAuthentications, wherever they stand, then the ScaledJobs. */
    int rc = yamljson_parse_each(yaml, len, NULL, on_doc_ta, &r, &e);
    if (!rc) rc = yamljson_parse_each(yaml, len, NULL, on_doc, &r, &e);
    free(r.tas);
    if (rc == JP_EPARSE)
        dbuf_printf(errs, "%s:%d:%d: %s%s%s\n", name, e.line, e.col, e.path,
                    e.path[0] ? ": " : "yaml: ", e.msg);
    if (!rc && (r.nerr || out->toobig || notes->toobig || errs->toobig))
        rc = out->toobig ? JP_ETOOBIG : JP_ECONFIG;
    if (rc) {
        /* Nothing half-converted: a pipe into kubectl apply gets all or nothing. */
        out->len = start;
        if (out->data) out->data[start] = '\0';
    }
    return rc;
}

static int read_input(const char *path, char **text, size_t *len)
{
    if (strcmp(path, "-")) {
        int rc = util_read_file(path, INPUT_MAX, false, text);
        if (!rc) *len = strlen(*text);
        return rc;
    }
    struct dbuf b;
    dbuf_init(&b, INPUT_MAX);
    char chunk[8192];
    size_t n;
    int rc = 0;
    while (!rc && (n = fread(chunk, 1, sizeof chunk, stdin)) > 0) rc = dbuf_append(&b, chunk, n);
    if (!rc && ferror(stdin)) rc = JP_EIO;
    if (!rc && !b.data) rc = dbuf_append(&b, "", 0);
    *len = b.len;
    *text = rc ? NULL : dbuf_take(&b);
    dbuf_free(&b);
    return rc;
}

int keda_convert_main(int argc, char **argv)
{
    if (argc != 2 || !strcmp(argv[1], "-h") || !strcmp(argv[1], "--help")) {
        fprintf(argc == 2 ? stdout : stderr,
                "usage: jobpool-controller convert FILE\n\n"
                "Prints one JobPool for each KEDA ScaledJob in FILE (\"-\": stdin) that has a\n"
                "rabbitmq trigger. Comments mark the fields that map differently or are\n"
                "dropped; what cannot be mapped is reported as FILE:LINE:COL and nothing is\n"
                "printed. See docs/migrating-from-keda.md.\n");
        return argc == 2 ? 0 : 2;
    }
    const char *path = argv[1];
    char *text = NULL;
    size_t len = 0;
    int rc = read_input(path, &text, &len);
    if (rc) {
        fprintf(stderr, "%s: cannot read: %s\n", path, jp_strerror(rc));
        return 1;
    }
    struct dbuf out, notes, errs;
    dbuf_init(&out, 0);
    dbuf_init(&notes, 0);
    dbuf_init(&errs, 0);
    rc = keda_convert(text, len, strcmp(path, "-") ? path : "(stdin)", &out, &notes, &errs);
    if (notes.len) fputs(notes.data, stderr);
    if (errs.len) fputs(errs.data, stderr);
    int code = 0;
    if (rc == JP_ENOMEM || rc == JP_ETOOBIG) {
        fprintf(stderr, "%s: %s\n", path, jp_strerror(rc));
        code = 1;
    } else if (rc) {
        code = 1;
    } else if (!out.len) {
        fprintf(stderr, "%s: no ScaledJob with a rabbitmq trigger\n", path);
        code = 1;
    } else {
        fputs(out.data, stdout);
    }
    dbuf_free(&out);
    dbuf_free(&notes);
    dbuf_free(&errs);
    free(text);
    return code;
}
