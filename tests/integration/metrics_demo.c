/* metrics_demo.c: serve a fixed, known set of jobpool metrics through the metrics module until
 * SIGTERM, so tests (promtool, a real Prometheus) can scrape them the way users will.
 *   metrics_demo ADDRESS [PORTFILE]   writes the bound port to PORTFILE (or stdout) when ready */
#define _POSIX_C_SOURCE 200809L
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include "err.h"
#include "log.h"
#include "metrics.h"

static volatile sig_atomic_t stop;

static void on_signal(int sig)
{
    (void)sig;
    stop = 1;
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        fprintf(stderr, "usage: %s ADDRESS [PORTFILE]\n", argv[0]);
        return 2;
    }
    struct sigaction sa = {.sa_handler = on_signal};
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);

    struct metrics_opts o = {.poll_interval_ms = 500};
    struct metrics *m = NULL;
    int rc = metrics_new_opts(argv[1], &o, &m);
    if (rc) {
        fprintf(stderr, "metrics_demo: %s\n", jp_strerror(rc));
        return 1;
    }
    struct metrics_pool_state thumbs = {.depth_ok = true, .messages_ready = 40,
                                        .messages_unacked = 17, .depth_age_seconds = 4.6,
                                        .workers_ok = true, .workers = {3, 17, 10, 2}};
    struct metrics_pool_state mail = {.depth_ok = true, .messages_ready = 0,
                                      .workers_ok = true, .workers = {0, 0, 5, 1}};
    metrics_pool_publish(m, "thumbs", &thumbs);
    metrics_pool_publish(m, "mail", &mail);
    metrics_count_started(m, "thumbs", 20);
    metrics_count_started(m, "mail", 6);
    metrics_count_deleted(m, "thumbs", METRICS_DEL_SUCCEEDED_HISTORY, 4);
    metrics_count_deleted(m, "thumbs", METRICS_DEL_PENDING_TIMEOUT, 1);
    metrics_count_wasted(m, "thumbs", 3);
    metrics_count_error(m, "thumbs", METRICS_SRC_RABBITMQ, JP_ETIMEOUT);
    metrics_count_error(m, "mail", METRICS_SRC_KUBERNETES, JP_EINVALID);
    metrics_count_error(m, NULL, METRICS_SRC_CONFIG, JP_ECONFIG);
    metrics_observe_reconcile(m, "thumbs", 0.012);
    metrics_observe_reconcile(m, "thumbs", 0.3);
    metrics_observe_reconcile(m, "mail", 0.002);
    metrics_set_leader(m, true);
    metrics_set_cache(m, "jobs", 1.5, false);
    metrics_set_cache(m, "pods", 42, true);
    metrics_set_ready(m, true);

    FILE *pf = argc > 2 ? fopen(argv[2], "w") : stdout;
    if (!pf) {
        fprintf(stderr, "metrics_demo: cannot write %s\n", argv[2]);
        metrics_free(m);
        return 1;
    }
    fprintf(pf, "%u\n", (unsigned)metrics_port(m));
    if (pf != stdout) fclose(pf);
    else fflush(stdout);

    while (!stop) {   /* the "loop": tick, and keep the started counter moving */
        metrics_tick(m);
        metrics_count_started(m, "mail", 1);
        struct timespec ts = {0, 200 * 1000000L};
        nanosleep(&ts, NULL);
    }
    metrics_free(m);
    return 0;
}
