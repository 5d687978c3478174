/* fuzz_worker.c: libFuzzer target: what the worker reads from others.
 * - Byte 0 even: the rest is the broker URL (JOBPOOL_AMQP_URL) through aconn_parse_url, with
 *   the log captured: its password (as written, and percent-decoded when it parses) never
 *   appears in a log line, and a URL that parses names a host.
 * - Byte 0 odd: the rest describes a delivered message's properties (flags, then headers: key
 *   length and key, a kind, a value), through msg_attempt, msg_redelivered and msg_task_env: the
 *   attempt is within [1, INT32_MAX], and every variable the task gets is NAME=VALUE with a
 *   name of [A-Z0-9_] (headers as JOBPOOL_HEADER_<NAME>). */
#define _GNU_SOURCE
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "amqp_conn.h"
#include "log.h"
#include "message.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* The password as written: between the first ':' and the last '@' of the authority, as
 * log_redact_url and the worker read it. */
static char *raw_password(const char *url)
{
    const char *auth = strstr(url, "://");
    auth = auth ? auth + 3 : url;
    size_t alen = strcspn(auth, "/?#");
    const char *at = NULL;
    for (const char *p = auth; p < auth + alen; p++)
        if (*p == '@') at = p;
    const char *colon = at ? memchr(auth, ':', (size_t)(at - auth)) : NULL;
    return colon ? strndup(colon + 1, (size_t)(at - colon - 1)) : NULL;
}

/* A text record's message read back: log.c writes a backslash as "\\", a newline and carriage
 * return as "\n" and "\r", another control byte as "\xNN". */
static void unescape(const char *in, char *out)
{
    while (*in) {
        if (in[0] != '\\' || !in[1]) {
            *out++ = *in++;
        } else if (in[1] == 'x' && in[2] && in[3]) {
            char hex[3] = {in[2], in[3], '\0'};
            *out++ = (char)strtol(hex, NULL, 16);
            in += 4;
        } else {
            *out++ = in[1] == 'n' ? '\n' : in[1] == 'r' ? '\r' : in[1];
            in += 2;
        }
    }
    *out = '\0';
}

/* Whether s occurs in a record's message, read back from its escapes, after the record's
 * timestamp and level (the digits and colons of a time, or "info", could spell a short password
 * by chance; they are not masked). Searching the escaped text instead finds secrets that the
 * escapes spell with their neighbours: a user "1u<0x0e>st" is written "1u\x0est", which holds a
 * password "est" that was masked. */
static int logged(char *log, const char *s)
{
    for (char *line = log; line && *line;) {
        char *nl = strchr(line, '\n');
        if (nl) *nl = '\0';
        char *text = strchr(line, ' '); /* "TS LEVEL msg": the level is padded to 5 */
        int hit = 0;
        if (text && strlen(text) > 7) {
            char *msg = malloc(strlen(text) + 1);
            if (!msg) abort();
            unescape(text + 7, msg);
            hit = strstr(msg, s) != NULL;
            free(msg);
        }
        if (nl) *nl = '\n';
        if (hit) return 1;
        line = nl ? nl + 1 : NULL;
    }
    return 0;
}

static void url_case(const uint8_t *data, size_t size)
{
    if (size > 1024 || memchr(data, '\0', size)) return;
    char *url = strndup((const char *)data, size);
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    if (!url || !f) abort();
    log_setup(LOG_TEXT, LOG_DEBUG, f);
    struct aconn_url u;
    int rc = aconn_parse_url(url, &u);
    char *decoded = rc == 0 && u.info.password ? strdup(u.info.password) : NULL;
    if (rc == 0 && (!u.info.host || !*u.info.host)) abort();
    /* What a worker logs next about its broker: the URL, redacted as it prints it. */
    char red[512];
    log_info("broker %s", log_redact_url(url, red, sizeof red));
    aconn_url_free(&u);
    log_setup(LOG_TEXT, LOG_OFF, NULL);
    fclose(f);
    char *raw = raw_password(url);
    /* Secrets shorter than 3 bytes are not masked (they would garble every line), and one
     * made of the mask's own '*' shows up as the mask. */
    if (raw && strlen(raw) >= 3 && !strchr(raw, '*') && logged(buf, raw)) abort();
    if (decoded && strlen(decoded) >= 3 && !strchr(decoded, '*') && logged(buf, decoded)) abort();
    free(raw);
    free(decoded);
    free(buf);
    free(url);
    log_clear_secrets();
}

/* Read n bytes from the input (fewer at its end). */
static const uint8_t *take(const uint8_t **p, const uint8_t *end, size_t n, size_t *got)
{
    const uint8_t *at = *p;
    *got = (size_t)(end - at) < n ? (size_t)(end - at) : n;
    *p += *got;
    return at;
}

static const uint8_t kinds[] = {AMQP_FIELD_KIND_UTF8, AMQP_FIELD_KIND_BYTES,
    AMQP_FIELD_KIND_BOOLEAN, AMQP_FIELD_KIND_I8, AMQP_FIELD_KIND_U8, AMQP_FIELD_KIND_I16,
    AMQP_FIELD_KIND_U16, AMQP_FIELD_KIND_I32, AMQP_FIELD_KIND_U32, AMQP_FIELD_KIND_I64,
    AMQP_FIELD_KIND_U64, AMQP_FIELD_KIND_F32, AMQP_FIELD_KIND_F64, AMQP_FIELD_KIND_TIMESTAMP,
    AMQP_FIELD_KIND_VOID, AMQP_FIELD_KIND_DECIMAL, AMQP_FIELD_KIND_TABLE, AMQP_FIELD_KIND_ARRAY};

static void message_case(const uint8_t *p, const uint8_t *end)
{
    static amqp_table_entry_t e[300];
    amqp_envelope_t m;
    memset(&m, 0, sizeof m);
    amqp_basic_properties_t *pr = &m.message.properties;
    size_t got;
    const uint8_t *f = take(&p, end, 1, &got);
    uint8_t flags = got ? f[0] : 0;
    m.redelivered = flags & 1;
    pr->_flags = AMQP_BASIC_HEADERS_FLAG;
    if (flags & 2) {
        pr->_flags |= AMQP_BASIC_MESSAGE_ID_FLAG;
        const uint8_t *id = take(&p, end, flags >> 4, &got);
        pr->message_id = (amqp_bytes_t){got, (void *)id};
    }
    int n = 0;
    while (p < end && n < (int)(sizeof e / sizeof *e)) {
        const uint8_t *kl = take(&p, end, 1, &got);
        const uint8_t *key = take(&p, end, got ? kl[0] : 0, &got);
        e[n].key = (amqp_bytes_t){got, (void *)key};
        const uint8_t *k = take(&p, end, 1, &got);
        amqp_field_value_t *v = &e[n].value;
        memset(v, 0, sizeof *v);
        v->kind = kinds[(got ? k[0] : 0) % sizeof kinds];
        if (v->kind == AMQP_FIELD_KIND_UTF8 || v->kind == AMQP_FIELD_KIND_BYTES) {
            const uint8_t *l = take(&p, end, 2, &got);
            size_t len = got == 2 ? (size_t)l[0] << 8 | l[1] : 0;
            const uint8_t *b = take(&p, end, len, &got);
            v->value.bytes = (amqp_bytes_t){got, (void *)b};
        } else if (v->kind != AMQP_FIELD_KIND_TABLE && v->kind != AMQP_FIELD_KIND_ARRAY) {
            const uint8_t *b = take(&p, end, 8, &got);
            memcpy(&v->value.u64, b, got); /* every flat kind reads from this union */
        }
        n++;
    }
    pr->headers = (amqp_table_t){.num_entries = n, .entries = e};
    int64_t a = msg_attempt(pr);
    if (a < 1 || a > INT32_MAX) abort();
    (void)msg_redelivered(&m);
    char *inherited[] = {(char *)"PATH=/bin", NULL};
    struct task_env env;
    if (msg_task_env(&env, inherited, &m, a) == 0) {
        for (size_t i = 0; i < env.n; i++) {
            const char *var = env.vars[i], *eq = strchr(var, '=');
            if (!eq || eq == var) abort();
            for (const char *c = var; c < eq; c++)
                if (!((*c >= 'A' && *c <= 'Z') || (*c >= '0' && *c <= '9') || *c == '_')) abort();
        }
        if (env.vars[env.n]) abort();
    }
    task_env_free(&env);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (!size) return 0;
    log_setup(LOG_TEXT, LOG_OFF, NULL);
    if (data[0] & 1) message_case(data + 1, data + size);
    else url_case(data + 1, size - 1);
    return 0;
}
