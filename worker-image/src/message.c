/* message.c: a delivered message's attempt number, redelivery and the task's environment. */
#define _GNU_SOURCE
#include "message.h"
#include "err.h"
#include "log.h"
#include "util.h"

#include <inttypes.h>
#include <stdio.h>
#include <string.h>

static bool bytes_eq(amqp_bytes_t b, const char *s)
{
    return b.len == strlen(s) && memcmp(b.bytes, s, b.len) == 0;
}

/* Render a header value for the environment; false for kinds that have no flat form. */
static bool field_text(const amqp_field_value_t *v, char *num, size_t numlen, const char **p,
                       size_t *len)
{
    *p = num;
    switch (v->kind) {
    case AMQP_FIELD_KIND_UTF8:
    case AMQP_FIELD_KIND_BYTES:
        *p = v->value.bytes.bytes ? v->value.bytes.bytes : "";
        *len = v->value.bytes.len;
        return true;
    case AMQP_FIELD_KIND_BOOLEAN: snprintf(num, numlen, "%s", v->value.boolean ? "true" : "false"); break;
    case AMQP_FIELD_KIND_I8: snprintf(num, numlen, "%d", v->value.i8); break;
    case AMQP_FIELD_KIND_U8: snprintf(num, numlen, "%u", v->value.u8); break;
    case AMQP_FIELD_KIND_I16: snprintf(num, numlen, "%d", v->value.i16); break;
    case AMQP_FIELD_KIND_U16: snprintf(num, numlen, "%u", v->value.u16); break;
    case AMQP_FIELD_KIND_I32: snprintf(num, numlen, "%" PRId32, v->value.i32); break;
    case AMQP_FIELD_KIND_U32: snprintf(num, numlen, "%" PRIu32, v->value.u32); break;
    case AMQP_FIELD_KIND_I64: snprintf(num, numlen, "%" PRId64, v->value.i64); break;
    case AMQP_FIELD_KIND_U64:
    case AMQP_FIELD_KIND_TIMESTAMP: snprintf(num, numlen, "%" PRIu64, v->value.u64); break;
    case AMQP_FIELD_KIND_F32: snprintf(num, numlen, "%g", (double)v->value.f32); break;
    case AMQP_FIELD_KIND_F64: snprintf(num, numlen, "%g", v->value.f64); break;
    case AMQP_FIELD_KIND_VOID: num[0] = '\0'; break;
    default: return false;
    }
    *len = strlen(num);
    return true;
}

int64_t msg_attempt(const amqp_basic_properties_t *props)
{
    if (!(props->_flags & AMQP_BASIC_HEADERS_FLAG)) return 1;
    for (int i = 0; i < props->headers.num_entries; i++) {
        const amqp_table_entry_t *e = &props->headers.entries[i];
        if (!bytes_eq(e->key, MSG_ATTEMPT_HEADER)) continue;
        char num[64], text[64];
        const char *p;
        size_t len;
        int64_t v;
        if (!field_text(&e->value, num, sizeof num, &p, &len) || len >= sizeof text) return 1;
        memcpy(text, p, len);
        text[len] = '\0';
        return util_parse_int64(text, 1, INT32_MAX, &v) == 0 ? v : 1;
    }
    return 1;
}

bool msg_redelivered(const amqp_envelope_t *m)
{
    const amqp_basic_properties_t *props = &m->message.properties;
    if (m->redelivered) return true;
    if (!(props->_flags & AMQP_BASIC_HEADERS_FLAG)) return false;
    for (int i = 0; i < props->headers.num_entries; i++) {
        const amqp_table_entry_t *e = &props->headers.entries[i];
        if (bytes_eq(e->key, MSG_REDELIVERED_HEADER))
            return e->value.kind == AMQP_FIELD_KIND_BOOLEAN && e->value.value.boolean;
    }
    return false;
}

static int add_bytes_var(struct task_env *env, const char *name, amqp_bytes_t b, bool present)
{
    if (!present) return task_env_add(env, name, "", 0);
    int rc = task_env_add(env, name, b.bytes ? b.bytes : "", b.len);
    return rc == JP_EINVAL ? 0 : rc;
}

int msg_task_env(struct task_env *env, char *const *inherited, const amqp_envelope_t *m,
                 int64_t attempt)
{
    const amqp_basic_properties_t *pr = &m->message.properties;
    char num[64];
    int rc = task_env_init(env, inherited);
    if (!rc) rc = add_bytes_var(env, "JOBPOOL_MESSAGE_ID", pr->message_id,
                                pr->_flags & AMQP_BASIC_MESSAGE_ID_FLAG);
    if (!rc) rc = add_bytes_var(env, "JOBPOOL_CORRELATION_ID", pr->correlation_id,
                                pr->_flags & AMQP_BASIC_CORRELATION_ID_FLAG);
    snprintf(num, sizeof num, "%" PRId64, attempt);
    if (!rc) rc = task_env_add(env, "JOBPOOL_ATTEMPT", num, strlen(num));
    const char *re = msg_redelivered(m) ? "true" : "false";
    if (!rc) rc = task_env_add(env, "JOBPOOL_REDELIVERED", re, strlen(re));
    if (rc || !(pr->_flags & AMQP_BASIC_HEADERS_FLAG)) return rc;
    for (int i = 0; i < pr->headers.num_entries && i < MSG_MAX_HEADERS; i++) {
        const amqp_table_entry_t *e = &pr->headers.entries[i];
        char name[256];
        const char *p;
        size_t len;
        task_header_var(e->key.bytes, e->key.len, name, sizeof name);
        if (!field_text(&e->value, num, sizeof num, &p, &len) || len > MSG_MAX_HEADER_VALUE) {
            log_debug("header %s not passed to the task (nested or too long)", name);
            continue;
        }
        rc = task_env_add(env, name, p, len);
        if (rc == JP_EINVAL) {
            log_debug("header %s not passed to the task (contains a NUL byte)", name);
            rc = 0;
        }
        if (rc) return rc;
    }
    return 0;
}
