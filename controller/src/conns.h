/* conns.h: JobPools' own broker connections (spec.connectionSecretRef): the Secrets they name,
 * read by name only, and one depth client per distinct connection, shared by the pools that use
 * it and freed when none does. */
#ifndef JP_CONNS_H
#define JP_CONNS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "config.h"
#include "kube.h"

struct cJSON;
struct rmq_client;

/* The Secret's keys (docs/config.md, "The broker connection"). */
#define CONN_KEY_MANAGEMENT "managementUrl"
#define CONN_KEY_AMQP "amqpUrl"
#define CONN_KEY_HOST "host"          /* KEDA's: an amqp[s]:// or http[s]:// URL */
#define CONN_KEY_USERNAME "username"
#define CONN_KEY_PASSWORD "password"
#define CONN_KEY_CA "ca.crt"
#define CONN_KEY_CERT "tls.crt"        /* a client certificate (mutual TLS), with tls.key */
#define CONN_KEY_KEY "tls.key"

/* How often a Secret that was read is read again (less up to a fifth, fixed per Secret, so that
 * Secrets read together at start spread out); one that could not be read (or was invalid) is
 * tried again sooner. A Secret name not seen before is read at once. */
#define CONNS_REREAD_MS 30000
#define CONNS_RETRY_MS 5000

/* A connection as a Secret's data gives it. Every string is owned; the key pointers are static. */
struct conn_spec {
    char *management_url;       /* without user info; required */
    char *amqp_url;             /* without user info; NULL: the Secret gives none */
    char *vhost;                /* the AMQP URL's path, decoded; NULL: none given */
    char *username, *password;  /* the login; password may be "" */
    char *ca_pem;               /* ca.crt; NULL: none (system CAs) */
    char *cert_pem, *key_pem;   /* tls.crt and tls.key, both or neither; NULL: none */
    const char *amqp_key;       /* the key the AMQP URL came from, or NULL */
    bool login_in_url;          /* no username key: the login came from the AMQP URL's user info
                                 * (or the management URL's, when there is no AMQP URL) */
};

/* Read a Secret object (as the API server returns it; data values base64) into *out (zeroed
 * first; free with conn_spec_free). The keys: managementUrl, or host holding an http[s]:// URL,
 * is required; amqpUrl, or host holding an amqp[s]:// URL, is optional; username and password,
 * or user info in the URL; ca.crt optional, PEM; tls.crt and tls.key optional together, PEM,
 * and only with an amqps:// or https:// URL. Returns 0, JP_ENOMEM, or JP_ECONFIG with err
 * one line naming the key ("key managementUrl: not an http:// or https:// URL"); err never
 * holds a value of the Secret. */
int conn_parse_secret(const struct cJSON *secret, struct conn_spec *out, char *err,
                      size_t errlen);
void conn_spec_free(struct conn_spec *s);

/* What a pool gets from a usable Secret. Borrowed from conns; valid until conns_end frees it. */
struct conn_use {
    struct rmq_client *rmq;     /* depth reads */
    const struct kube_worker_conn *worker; /* what its Jobs get; NULL: no AMQP URL */
    const char *vhost;          /* the connection's vhost, or NULL */
};

struct conns;

/* base: the controller's rabbitmq settings (timeouts, depth source, size cap) that every
 * connection shares; kc for the GETs. Both borrowed. 0 or JP_ENOMEM. */
int conns_new(struct kube_client *kc, const struct cfg_rabbitmq *base, struct conns **out);
void conns_free(struct conns *c);

/* A pass: conns_begin, one conns_get per pool that names a Secret, conns_end. */
void conns_begin(struct conns *c);
/* The connection of Secret ns/name at monotonic time now_ms: read (GET by name) when not read
 * yet or due again. Returns 0 with *use set, or an error with reason ("ConnectionSecretNotFound",
 * "ConnectionSecretForbidden", "ConnectionSecretInvalid", "ConnectionSecretUnavailable") and a
 * message naming the Secret and key. A failed read that is not the Secret's answer (timeout,
 * server error) keeps the last good connection. */
int conns_get(struct conns *c, const char *ns, const char *name, int64_t now_ms,
              struct conn_use *use, char *reason, size_t reasonlen, char *msg, size_t msglen);
/* Forget the Secrets no conns_get asked for in this pass, free the clients no Secret uses any
 * more, and start a tick on the others (rmq_tick_begin). */
void conns_end(struct conns *c);

struct conns_stats {
    unsigned long reads, read_errors;
    size_t secrets, clients;    /* held now */
};
void conns_get_stats(const struct conns *c, struct conns_stats *out);

#endif
