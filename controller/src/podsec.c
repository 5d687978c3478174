/* podsec.c: restricted Pod Security defaults for worker pods, and the template's escalations. */
#include "podsec.h"
#include "err.h"

#include <cjson/cJSON.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>

static const char *const ctr_lists[] = {"containers", "initContainers"};

static cJSON *get(const cJSON *o, const char *k)
{
    return cJSON_IsObject(o) ? cJSON_GetObjectItemCaseSensitive(o, k) : NULL;
}

/* o[k] as an object, created when missing; NULL when it holds something else (the API server
 * will refuse it; not ours to fix) or on ENOMEM (*nomem set). */
static cJSON *obj_at(cJSON *o, const char *k, bool *nomem)
{
    cJSON *m = get(o, k);
    if (m) return cJSON_IsObject(m) ? m : NULL;
    if (!(m = cJSON_AddObjectToObject(o, k))) *nomem = true;
    return m;
}

static void set_bool(cJSON *o, const char *k, bool v, bool *nomem)
{
    if (o && !get(o, k) && !cJSON_AddBoolToObject(o, k, v)) *nomem = true;
}

static bool is_true(const cJSON *o, const char *k) { return cJSON_IsTrue(get(o, k)); }
static bool is_false(const cJSON *o, const char *k) { return cJSON_IsFalse(get(o, k)); }

static bool adds_sys_admin(const cJSON *sc)
{
    const cJSON *c;
    cJSON_ArrayForEach(c, get(get(sc, "capabilities"), "add"))
        if (cJSON_IsString(c) && (!strcmp(c->valuestring, "SYS_ADMIN") ||
                                  !strcmp(c->valuestring, "CAP_SYS_ADMIN")))
            return true;
    return false;
}

static void fill_container(cJSON *ctr, bool *nomem)
{
    cJSON *sc = obj_at(ctr, "securityContext", nomem);
    if (!sc) return;
    if (!is_true(sc, "privileged") && !adds_sys_admin(sc))
        set_bool(sc, "allowPrivilegeEscalation", false, nomem);
    cJSON *caps = obj_at(sc, "capabilities", nomem);
    if (!caps || get(caps, "drop")) return;
    cJSON *drop = cJSON_AddArrayToObject(caps, "drop"), *all = cJSON_CreateString("ALL");
    if (!drop || !all) {
        cJSON_Delete(all);
        *nomem = true;
        return;
    }
    cJSON_AddItemToArray(drop, all);
}

int podsec_fill(cJSON *podspec)
{
    if (!cJSON_IsObject(podspec)) return JP_EINVAL;
    bool nomem = false;
    set_bool(podspec, "automountServiceAccountToken", false, &nomem);
    cJSON *sc = obj_at(podspec, "securityContext", &nomem);
    set_bool(sc, "runAsNonRoot", true, &nomem);
    if (sc && !get(sc, "seccompProfile")) {
        cJSON *sp = cJSON_AddObjectToObject(sc, "seccompProfile");
        if (!sp || !cJSON_AddStringToObject(sp, "type", "RuntimeDefault")) nomem = true;
    }
    for (size_t i = 0; i < 2; i++) {
        cJSON *ctr;
        cJSON_ArrayForEach(ctr, get(podspec, ctr_lists[i]))
            if (cJSON_IsObject(ctr)) fill_container(ctr, &nomem);
    }
    return nomem ? JP_ENOMEM : 0;
}

/* Findings are appended to out as "BASE.FIELD=VALUE; ". */
struct found {
    char *out;
    size_t len, used;
    int n;
};

static void note(struct found *f, const char *base, const char *field, const char *what)
{
    f->n++;
    if (!f->len || f->used + 1 >= f->len) return;
    int w = snprintf(f->out + f->used, f->len - f->used, "%s%s.%s%s", f->used ? "; " : "", base,
                     field, what);
    if (w > 0) f->used += (size_t)w < f->len - f->used ? (size_t)w : f->len - f->used - 1;
}

/* The securityContext checks shared by the pod and its containers. */
static void check_sc(struct found *f, const cJSON *sc, const char *base)
{
    if (is_false(sc, "runAsNonRoot")) note(f, base, "securityContext.runAsNonRoot", "=false");
    const cJSON *uid = get(sc, "runAsUser");
    if (cJSON_IsNumber(uid) && uid->valuedouble == 0)
        note(f, base, "securityContext.runAsUser", "=0");
    const cJSON *t = get(get(sc, "seccompProfile"), "type");
    if (cJSON_IsString(t) && !strcmp(t->valuestring, "Unconfined"))
        note(f, base, "securityContext.seccompProfile.type", "=Unconfined");
}

static void check_container(struct found *f, const cJSON *ctr, const char *base)
{
    const cJSON *sc = get(ctr, "securityContext"), *c;
    check_sc(f, sc, base);
    if (is_true(sc, "privileged")) note(f, base, "securityContext.privileged", "=true");
    if (is_true(sc, "allowPrivilegeEscalation"))
        note(f, base, "securityContext.allowPrivilegeEscalation", "=true");
    cJSON_ArrayForEach(c, get(get(sc, "capabilities"), "add"))
        if (cJSON_IsString(c) && strcmp(c->valuestring, "NET_BIND_SERVICE") != 0 &&
            strcmp(c->valuestring, "CAP_NET_BIND_SERVICE") != 0) {
            note(f, base, "securityContext.capabilities.add", " has more than NET_BIND_SERVICE");
            break;
        }
    cJSON_ArrayForEach(c, get(ctr, "ports")) {
        const cJSON *hp = get(c, "hostPort");
        if (cJSON_IsNumber(hp) && hp->valuedouble != 0) note(f, base, "ports[].hostPort", " is set");
    }
}

int podsec_escalations(const cJSON *job_template, char *out, size_t outlen)
{
    struct found f = {out, outlen, 0, 0};
    if (outlen) out[0] = '\0';
    const cJSON *ps = get(get(job_template, "template"), "spec"), *c;
    if (!cJSON_IsObject(ps)) return 0;
    static const char *const host[] = {"hostNetwork", "hostPID", "hostIPC"};
    static const char *const base = "template.spec";
    for (size_t i = 0; i < 3; i++)
        if (is_true(ps, host[i])) note(&f, base, host[i], "=true");
    if (is_true(ps, "automountServiceAccountToken"))
        note(&f, base, "automountServiceAccountToken", "=true");
    check_sc(&f, get(ps, "securityContext"), base);
    cJSON_ArrayForEach(c, get(ps, "volumes"))
        if (get(c, "hostPath")) note(&f, base, "volumes[].hostPath", " is set");
    for (size_t l = 0; l < 2; l++) {
        size_t i = 0;
        cJSON_ArrayForEach(c, get(ps, ctr_lists[l])) {
            char p[64];
            snprintf(p, sizeof p, "%s.%s[%zu]", base, ctr_lists[l], i++);
            check_container(&f, c, p);
        }
    }
    return f.n;
}
