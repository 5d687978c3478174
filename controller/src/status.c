/* status.c: `jobpool-controller status`: reads /debug/pools and prints a table or the JSON. */
#define _GNU_SOURCE
#include "status.h"
#include "err.h"
#include "http.h"
#include "util.h"

#include <cjson/cJSON.h>
#include <getopt.h>
#include <math.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

static const char usage_[] =
    "usage: jobpool-controller status [--address HOST:PORT] [-o table|json]\n"
    "\n"
    "Print each pool's last decision and its numbers, read from a running controller's\n"
    "/debug/pools on its metrics listener (default 127.0.0.1:9090; \":PORT\" means this host).\n";

static double num(const cJSON *o, const char *k, double dflt)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, k);
    return cJSON_IsNumber(v) ? v->valuedouble : dflt;
}

static const char *str(const cJSON *o, const char *k, const char *dflt)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, k);
    return cJSON_IsString(v) ? v->valuestring : dflt;
}

/* "850ms", "12s", "3m10s", "2h5m": short, for a column. */
static void fmt_age(double s, char *out, size_t len)
{
    if (s < 0 || isnan(s)) snprintf(out, len, "-");
    else if (s < 1) snprintf(out, len, "%.0fms", s * 1000);
    else if (s < 60) snprintf(out, len, "%.1fs", s);
    else if (s < 3600) snprintf(out, len, "%dm%02ds", (int)s / 60, (int)s % 60);
    else snprintf(out, len, "%dh%02dm", (int)(s / 3600), (int)s % 3600 / 60);
}

static void fmt_count(const cJSON *p, const char *k, char *out, size_t len)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(p, k);
    if (cJSON_IsNumber(v)) snprintf(out, len, "%.0f", v->valuedouble);
    else snprintf(out, len, "-"); /* e.g. ready while the depth cannot be read */
}

int status_print_table(const char *body, double now_s, FILE *out)
{
    int rc = JP_EPARSE;
    cJSON *root = cJSON_Parse(body);
    if (!root) goto out;
    rc = JP_ESHAPE;
    const cJSON *pools = cJSON_GetObjectItemCaseSensitive(root, "pools");
    if (!cJSON_IsObject(root) || !cJSON_IsArray(pools)) goto out;
    const cJSON *leader = cJSON_GetObjectItemCaseSensitive(root, "leader");
    const cJSON *ready = cJSON_GetObjectItemCaseSensitive(root, "ready");
    char tick[32];
    fmt_age(now_s - num(root, "last_tick", -1e18), tick, sizeof tick);
    fprintf(out, "controller %s: leader %s, ready %s, last tick %s ago\n\n",
            str(root, "version", "?"), cJSON_IsTrue(leader) ? "yes" : "no",
            cJSON_IsTrue(ready) ? "yes" : "no", tick);
    static const char *const cols[] = {"ready", "active", "pending", "waiting", "running",
                                       "max_active", "start"};
    fprintf(out, "%-24s %8s %7s %7s %7s %7s %7s %6s %6s  %-13s %10s %10s  %s\n", "POOL", "READY",
            "ACTIVE", "PENDING", "WAITING", "RUNNING", "MAX", "START", "TASKS", "REASON",
            "SAMPLE AGE", "DECIDED", "LAST ERROR");
    const cJSON *p;
    cJSON_ArrayForEach(p, pools) {
        char c[7][24], age[24], decided[32], tasks[24];
        for (size_t i = 0; i < 7; i++) fmt_count(p, cols[i], c[i], sizeof c[i]);
        fmt_count(p, "tasks_total", tasks, sizeof tasks);
        fmt_age(num(p, "sample_age_seconds", -1), age, sizeof age);
        double at = num(p, "decided_at", 0);
        if (at > 0) {
            fmt_age(now_s - at, decided, sizeof decided);
            strncat(decided, " ago", sizeof decided - strlen(decided) - 1);
        } else {
            snprintf(decided, sizeof decided, "never");
        }
        bool depth_ok = cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(p, "depth_ok"));
        fprintf(out, "%-24s %8s %7s %7s %7s %7s %7s %6s %6s  %-13s %10s %10s  %s%s\n",
                str(p, "name", "?"), c[0], c[1], c[2], c[3], c[4], c[5], c[6], tasks,
                str(p, "reason", "-"), age, decided, str(p, "last_error", "-"),
                depth_ok ? "" : " (depth unreadable)");
    }
    if (!cJSON_GetArraySize(pools)) fprintf(out, "(no pool has been decided yet)\n");
    rc = 0;
out:
    cJSON_Delete(root);
    return rc;
}

/* "HOST:PORT" as a URL; ":PORT" (the chart's "all interfaces") means this host. */
static char *pools_url(const char *address)
{
    if (address[0] == ':') return util_strprintf("http://127.0.0.1%s/debug/pools", address);
    return util_strprintf("http://%s/debug/pools", address);
}

int status_main(int argc, char **argv, FILE *out)
{
    static const struct option opts[] = {
        {"address", required_argument, NULL, 'a'},
        {"output", required_argument, NULL, 'o'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    const char *address = "127.0.0.1:9090", *format = "table";
    int c, code = 1;
    optind = 1;
    while ((c = getopt_long(argc, argv, "a:o:h", opts, NULL)) != -1) {
        switch (c) {
        case 'a': address = optarg; break;
        case 'o': format = optarg; break;
        case 'h': fputs(usage_, out); return 0;
        default: fputs(usage_, stderr); return 2;
        }
    }
    if (optind < argc || (strcmp(format, "table") != 0 && strcmp(format, "json") != 0)) {
        fprintf(stderr, "jobpool-controller status: %s\n%s",
                optind < argc ? "unexpected argument" : "-o must be table or json", usage_);
        return 2;
    }
    struct http_client *hc = NULL;
    struct http_response resp = {0};
    char *url = pools_url(address);
    struct http_opts ho = {.timeout_ms = 5000, .connect_timeout_ms = 2000, .max_body = 8u << 20};
    int rc = url ? http_client_new(&ho, &hc) : JP_ENOMEM;
    if (!rc) rc = http_request(hc, "GET", url, NULL, 0, &resp);
    if (rc) {
        fprintf(stderr, "jobpool-controller status: cannot read %s: %s%s%s\n", url ? url : address,
                jp_strerror(rc), resp.error[0] ? ": " : "", resp.error);
        goto out;
    }
    if (resp.status != 200) {
        fprintf(stderr, "jobpool-controller status: %s answered HTTP %ld (is it a jobpool "
                        "controller of this version?)\n", url, resp.status);
        goto out;
    }
    if (strcmp(format, "json") == 0) {
        fputs(resp.body, out);
        code = 0;
    } else if ((rc = status_print_table(resp.body, (double)util_wall_ms() / 1000.0, out)) != 0) {
        fprintf(stderr, "jobpool-controller status: %s did not answer the expected JSON: %s\n",
                url, jp_strerror(rc));
    } else {
        code = 0;
    }
out:
    http_response_free(&resp);
    http_client_free(hc);
    free(url);
    return code;
}
