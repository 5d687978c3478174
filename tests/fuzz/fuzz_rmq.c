/* fuzz_rmq.c: libFuzzer target: management-API answers through rmq.c's decoders: one queue's
 * object (rmq_queue_depth) and the paged, regex-filtered listing (rmq_regex_depth), with any
 * HTTP status. Every request is answered from the input (fuzz_seam.h). Input: byte 0 picks the
 * call, byte 1 the status, the rest is the body. A reading that succeeds holds counts in range;
 * a failure says why without the password. */
#define _GNU_SOURCE
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "config.h"
#include "fuzz_seam.h"
#include "log.h"
#include "rmq.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerInitialize(int *argc, char ***argv);

static struct rmq_client *rc_;

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc, (void)argv;
    log_setup(LOG_TEXT, LOG_OFF, NULL);
    setenv("FUZZ_RMQ_USER", "fuzz-user", 1);
    setenv("FUZZ_RMQ_PASS", "fuzz-password-value", 1);
    struct cfg_rabbitmq cfg = {.management_url = (char *)"http://fuzz.invalid:15672",
                               .username = {.env = (char *)"FUZZ_RMQ_USER"},
                               .password = {.env = (char *)"FUZZ_RMQ_PASS"}};
    if (rmq_client_new(&cfg, &rc_) != 0) abort();
    if (rmq_watch_regex(rc_, "/", "^fuzz") != 0 || rmq_watch_regex(rc_, "/", "q[0-9]+$") != 0)
        abort();
    return 0;
}

static void check(const struct rmq_depth *d)
{
    if (d->ready < 0 || d->unacked < 0 || d->total < 0 || d->consumers < 0) abort();
    if (d->ready > 1e12 || d->unacked > 1e12 || d->total > 1e12 || d->consumers > 1e12) abort();
    if (!(d->publish_rate == -1 || (isfinite(d->publish_rate) && d->publish_rate >= 0))) abort();
    if (!(d->deliver_rate == -1 || (isfinite(d->deliver_rate) && d->deliver_rate >= 0))) abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 2) return 0;
    seam.status = seam_statuses[data[1] % (sizeof seam_statuses / sizeof *seam_statuses)];
    seam.body = (const char *)data + 2;
    seam.len = size - 2;
    seam.times = 3; /* a listing of many pages gets empty pages after three */
    seam.after = "{\"items\":[],\"page_count\":1}";
    seam.calls = 0;
    rmq_tick_begin(rc_);
    struct rmq_depth d;
    int rc = data[0] & 1 ? rmq_regex_depth(rc_, "/", "^fuzz", &d)
                         : rmq_queue_depth(rc_, "/", "fuzz", &d);
    if (rc == 0) check(&d);
    else if (!rmq_last_error(rc_)[0]) abort();
    if (strstr(rmq_last_error(rc_), "fuzz-password-value")) abort();
    return 0;
}
