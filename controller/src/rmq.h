/* rmq.h: queue depth from RabbitMQ's management HTTP API, optionally the ready count over AMQP. */
#ifndef JP_RMQ_H
#define JP_RMQ_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "config.h"

/* One queue matched by a regex pool. */
struct rmq_qdepth {
    char name[256];             /* AMQP queue names are at most 255 bytes */
    int64_t ready, unacked, consumers;
};

/* One reading. Counts are >= 0. Rates are -1 when the broker did not report them. */
struct rmq_depth {
    int64_t ready;              /* messages_ready (summed over matches for a regex) */
    int64_t unacked;            /* messages_unacknowledged */
    int64_t total;              /* messages */
    int64_t consumers;
    double publish_rate;        /* message_stats.publish_details.rate */
    double deliver_rate;        /* message_stats.deliver_get_details.rate */
    int64_t sampled_ms;         /* CLOCK_MONOTONIC ms when the sample was taken */
    int64_t age_ms;             /* how old the broker says its figures are, 0 when unknown */
    bool exact;                 /* ready (and consumers) came from a passive queue.declare
                                 * (depthSource amqp): the queue's own count at sampled_ms, not
                                 * a lagging statistic */
    size_t nqueues;             /* queues that matched (1 for a named queue) */
    const struct rmq_qdepth *queues; /* regex: the nqueues matches, sorted by name; owned by
                                      * the client, valid until its next listing of the vhost
                                      * (the next tick). NULL for a named queue. */
};

struct rmq_client;

/* Build a client from the rabbitmq section. Credentials are resolved here (cfg_secret_read) and
 * registered as log secrets. Returns 0, JP_ENOMEM, JP_EINVAL (bad URL) or the secret's error;
 * *out NULL on failure. The client owns one keep-alive HTTP connection (and, for
 * depthSource amqp, one long-lived AMQP connection opened lazily). */
int rmq_client_new(const struct cfg_rabbitmq *cfg, struct rmq_client **out);
/* As rmq_client_new, with the login given (copied; the password masked in the log while the
 * client lives) instead of read through cfg->username and cfg->password. */
int rmq_client_new_login(const struct cfg_rabbitmq *cfg, const char *user, const char *pass,
                         struct rmq_client **out);
void rmq_client_free(struct rmq_client *c);

/* Start a new tick: forget cached listings so nothing is fetched twice within a tick but
 * everything is fetched again next tick. */
void rmq_tick_begin(struct rmq_client *c);

/* Depth of one named queue. Returns 0 or a typed error: JP_ENOTFOUND (queue or vhost missing;
 * *out zeroed), JP_EUNAUTHORIZED/JP_EFORBIDDEN, JP_ESERVER, JP_ETIMEOUT, JP_ECONNREFUSED,
 * JP_EDNS, JP_ETLS, JP_ETOOBIG, JP_EPARSE (not JSON), JP_ESHAPE (wrong fields),
 * JP_ERANGE (negative or absurd numbers). On error *out must not be used as "empty". */
int rmq_queue_depth(struct rmq_client *c, const char *vhost, const char *queue,
                    struct rmq_depth *out);

/* Announce a named queue a pool reads (rmq_queue_depth registers unknown ones itself, a tick
 * later). When a vhost has enough registered queues for a listing to be cheaper than one GET
 * each (at least 8, and the vhost holds at most 4 queues per registered one; the rule is in
 * docs/performance.md), the first rmq_queue_depth of a tick on that vhost reads all of them
 * with one paged, column-trimmed listing of the vhost (2 requests at 1,000 queues) and, with
 * depthSource amqp, one pipelined run of passive declares on one channel; every other read in
 * that tick is served from the results. Returns 0 or JP_ENOMEM. */
int rmq_watch_queue(struct rmq_client *c, const char *vhost, const char *queue);

/* Sum over the queues of vhost whose name matches the POSIX extended regex. One filtered,
 * paged, column-trimmed listing per vhost per tick is shared by every regex pool. */
int rmq_regex_depth(struct rmq_client *c, const char *vhost, const char *regex,
                    struct rmq_depth *out);

/* Optional: announce a regex pool before the first tick, so that the first tick already fetches
 * one listing per vhost for all regex pools (rmq_regex_depth registers unknown regexes itself,
 * at the cost of one extra listing in the tick where it first sees them). Returns 0, JP_EINVAL
 * (not a POSIX extended regex), JP_ERANGE (too many regexes) or JP_ENOMEM. */
int rmq_watch_regex(struct rmq_client *c, const char *vhost, const char *regex);

/* Between ticks, with depthSource amqp: one pipelined run of passive declares over every
 * registered named queue (one per vhost), and *grew true when any queue holds more ready
 * messages than the fewest seen since the tick's own read of it, i.e. a message arrived that
 * the last tick could not have started a worker for. Regex pools and the management source are
 * not probed (*grew false, returns 0). Logs nothing: returns 0 (a missing queue is no error
 * here) or the first other error (the connection's), which the next tick reads and logs.
 * c may be NULL. */
int rmq_probe(struct rmq_client *c, bool *grew);

/* Failures are logged by rmq itself, once per change of a queue's error (a warning when a read
 * starts failing or the error changes, info when it recovers, debug while it stays the same),
 * so callers need not log them again every tick. With depthSource amqp, named queues take
 * ready from a passive queue.declare (real time) and unacked/consumers from the management API;
 * regex pools always use the management listing. */

/* Human-readable detail of the last error (status, URL without credentials, broker reason);
 * never contains a password. Valid until the next call. */
const char *rmq_last_error(const struct rmq_client *c);

#endif
