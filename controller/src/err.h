/* err.h: the one error type of jobpool: negative codes generated from a single X-macro list. */
#ifndef JP_ERR_H
#define JP_ERR_H

/* X(name, message). Functions return 0 on success or one of these negative codes; results go
 * out through parameters, and *out is NULL on failure. Append new codes at the end. */
#define JP_ERRNO_MAP(X)                                                   \
    X(NOMEM, "out of memory")                                             \
    X(INVAL, "invalid argument")                                          \
    X(IO, "i/o error")                                                    \
    X(CONFIG, "invalid configuration")                                    \
    X(PARSE, "malformed input")                                           \
    X(TOOBIG, "response larger than the size cap")                        \
    X(TIMEOUT, "timed out")                                               \
    X(CONNREFUSED, "connection refused")                                  \
    X(DNS, "host name could not be resolved")                             \
    X(TLS, "tls handshake or certificate verification failed")           \
    X(NETWORK, "network error")                                           \
    X(UNAUTHORIZED, "unauthorized (401)")                                 \
    X(FORBIDDEN, "forbidden (403)")                                       \
    X(NOTFOUND, "not found (404)")                                        \
    X(CONFLICT, "conflict (409)")                                         \
    X(GONE, "gone (410)")                                                 \
    X(INVALID, "rejected as invalid (422)")                               \
    X(THROTTLED, "too many requests (429)")                               \
    X(SERVER, "server error (5xx)")                                       \
    X(HTTP, "unexpected http status")                                     \
    X(SHAPE, "response has an unexpected shape")                          \
    X(RANGE, "value out of range")                                        \
    X(AMQP, "amqp protocol error")                                        \
    X(ACCESS, "access refused")                                           \
    X(SPAWN, "could not start process")                                   \
    X(STALE, "data is stale")                                             \
    X(CANCELED, "canceled")                                               \
    X(EXISTS, "already exists")                                           \
    X(UNSUPPORTED, "not supported")

enum jp_err {
    JP_OK = 0,
#define JP_ERR_ENUM_(name, msg) JP_E##name,
    JP_EFIRST_ = -1000,
    JP_ERRNO_MAP(JP_ERR_ENUM_)
#undef JP_ERR_ENUM_
    JP_ELAST_
};

/* Static description of code; never NULL. Unknown codes give "unknown error". */
const char *jp_strerror(int code);
/* Short symbolic name ("NOTFOUND"), for metrics labels; never NULL. */
const char *jp_errname(int code);
/* True for errors worth retrying later (network, timeouts, 429, 5xx, stale, conflicts). */
int jp_err_transient(int code);

#endif
