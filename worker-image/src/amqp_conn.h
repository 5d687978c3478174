/* amqp_conn.h: the worker's one AMQP connection: connect, consume one message, settle it. */
#ifndef JP_AMQP_CONN_H
#define JP_AMQP_CONN_H

#include <amqp.h>
#include <stdbool.h>
#include <stdint.h>

/* Where and how to connect. All strings are borrowed from the caller for the call's duration. */
struct aconn_opts {
    const char *url;      /* amqp://user:pass@host:port/vhost or amqps://...; required */
    const char *vhost;    /* overrides the URL's vhost when non-NULL and non-empty */
    const char *username; /* override the URL's user info when non-NULL: taken as they are, */
    const char *password; /* no percent-decoding (JOBPOOL_AMQP_USERNAME/_PASSWORD) */
    const char *queue;    /* required; must already exist (passive declare) */
    const char *ca_file;  /* amqps: CA bundle (PEM); NULL uses the system bundle if present */
    const char *cert_file; /* amqps: client certificate (PEM, may hold its chain), or NULL; */
    const char *key_file;  /* its private key (unencrypted PEM); both or neither */
    int heartbeat_s;      /* AMQP heartbeat; 0 disables */
    int64_t timeout_ms;   /* connect and per-RPC timeout */
    /* Called once the broker has confirmed the consumer (basic.consume-ok), i.e. once the
     * broker counts this worker as a consumer. NULL: none. */
    void (*on_consuming)(void *arg);
    void *on_consuming_arg;
};

/* Outcome of a failed call, for the caller's exit code. */
enum aconn_fail {
    ACONN_FAIL_NONE = 0,
    ACONN_FAIL_INPUT,     /* bad URL, missing queue, access refused: the user must fix something */
    ACONN_FAIL_BROKER,    /* unreachable, timed out, connection lost: may work on a retry */
};

struct aconn;

/* The broker URL as aconn_open reads it. */
struct aconn_url {
    char *buf;                          /* owned: the parsed copy that info points into */
    struct amqp_connection_info info;   /* host, port, user, password, vhost, ssl */
};
/* Parse url (amqp:// or amqps://, with a host) as aconn_open does. The password, decoded and as
 * written, is registered with log_add_secret before anything is logged. Returns 0, JP_ECONFIG
 * (logged, with the URL's password hidden), JP_EINVAL (NULL) or JP_ENOMEM. Free out with
 * aconn_url_free, after a failure too. Exposed for the fuzzer. */
int aconn_parse_url(const char *url, struct aconn_url *out);
void aconn_url_free(struct aconn_url *u);

/* Parse opts->url (never logging its password; the password is registered with
 * log_add_secret), connect, log in, open channel 1, check the queue exists with a passive
 * declare and set basic.qos(prefetch_count=1). On failure logs one line, sets *fail and returns
 * a negative jp_err; *out is NULL then. Free with aconn_free. A broker certificate that does not
 * verify, and a TLS session the broker refuses (an alert, or with TLS 1.3 a session it drops
 * before its first AMQP frame: no client certificate, or one it does not trust) are JP_ETLS with
 * ACONN_FAIL_INPUT: a retry would meet the same refusal. */
int aconn_open(const struct aconn_opts *opts, struct aconn **out, enum aconn_fail *fail);

/* Close the connection politely when it is still up, then free everything. NULL is fine.
 * Returns 0, or JP_ENETWORK when the polite close failed (an earlier ack may then be lost). */
int aconn_close(struct aconn *c);
void aconn_free(struct aconn *c);

/* Start one consumer (basic.consume, manual ack) and wait up to timeout_ms for a message,
 * also returning early when stop_fd becomes readable (the caller's signal self-pipe; this
 * function does not read from it). On a message, cancels the consumer at once and stores the
 * envelope in *env (the caller must call amqp_destroy_envelope). Returns 0 with a message,
 * JP_ETIMEOUT when none came, JP_ECANCELED when stop_fd fired, or another negative code
 * (after logging) with *fail set. */
int aconn_wait_one(struct aconn *c, int64_t timeout_ms, int stop_fd, amqp_envelope_t *env,
                   enum aconn_fail *fail);

/* While the task runs: answer heartbeats and notice a closed connection without blocking.
 * Returns true while the connection is still usable. */
bool aconn_service(struct aconn *c);
/* The socket, for poll(); -1 once the connection is lost. */
int aconn_fd(const struct aconn *c);
bool aconn_alive(const struct aconn *c);
/* True once the broker closed the channel with 406 PRECONDITION_FAILED while the task ran: its
 * consumer_timeout took the delivery back and requeued the message (aconn_service then returned
 * false). Nothing can be settled any more; the broker redelivers it. */
bool aconn_revoked(const struct aconn *c);

/* Settle the delivery. Each returns 0 or a negative code (connection lost). */
int aconn_ack(struct aconn *c, uint64_t tag);
int aconn_nack_requeue(struct aconn *c, uint64_t tag);
int aconn_reject_dead_letter(struct aconn *c, uint64_t tag);

/* Publish a persistent copy of env's message to the default exchange with routing key
 * = the queue, with the same properties and header x-jobpool-attempt = attempt, plus header
 * x-jobpool-redelivered = true when redelivered (dropped otherwise), and wait for the broker's
 * publisher confirm. Returns 0 only when the broker confirmed it. */
int aconn_republish(struct aconn *c, const amqp_envelope_t *env, int64_t attempt,
                    bool redelivered);

#endif
