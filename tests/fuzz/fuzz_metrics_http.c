/* fuzz_metrics_http.c: libFuzzer target: any bytes a client can send to the metrics listener
 * (metrics.c), over a real loopback connection to a real listener started once. Each input is
 * one connection: the bytes are sent in two writes (split where the first byte says, so a
 * request cut anywhere is tried too), then the client half-closes and reads to the end. The
 * listener must close the connection after the client's end (no hang: a 5 s receive timeout
 * aborts), and everything it sends must be HTTP/1.1 answers with a status it knows. A crash or a
 * sanitizer report in the listener's thread fails the target as in the caller's. */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include "metrics.h"

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static struct metrics *srv;
static uint16_t port;

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    struct metrics_opts o = {.poll_interval_ms = 2000, .request_timeout_s = 2,
                             .memory_limit = 4096};
    if (metrics_new_opts("127.0.0.1:0", &o, &srv) != 0) abort();
    port = metrics_port(srv);
    struct metrics_pool_state st = {.depth_ok = true, .messages_ready = 3, .max_active = 5};
    metrics_pool_publish(srv, "fuzz", &st);
    metrics_count_started(srv, "fuzz", 2);
    return 0;
}

static void send_all(int fd, const uint8_t *p, size_t n)
{
    while (n > 0) {
        ssize_t w = send(fd, p, n, MSG_NOSIGNAL);
        if (w <= 0) return; /* the listener may close first (a refused request): fine */
        p += w;
        n -= (size_t)w;
    }
}

/* Every answer opens with "HTTP/1.1 NNN " and a status the listener sends. */
static void check_answers(const char *out, size_t n)
{
    static const char *const known[] = {"200", "400", "404", "405", "413", "431",
                                        "500", "503", "505"};
    if (n == 0) return;
    if (n < 13 || memcmp(out, "HTTP/1.1 ", 9) != 0 || out[12] != ' ') abort();
    for (size_t i = 0; i < sizeof known / sizeof known[0]; i++)
        if (memcmp(out + 9, known[i], 3) == 0) return;
    abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) abort();
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(port)};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    struct timeval tv = {5, 0};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    /* Closed with a reset, so that 100,000 connections leave no TIME_WAIT to run the ephemeral
     * ports out. */
    struct linger lg = {1, 0};
    setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof lg);
    /* A request the listener refuses is closed from its side, which leaves the connection in
     * TIME_WAIT there for a minute: at 10,000 runs a second, one source address would run out
     * of ephemeral ports (connect fails with EADDRNOTAVAIL). Each connection comes from the
     * next address of 127.0.0.0/8 instead. */
    static uint32_t next_src;
    uint32_t k = next_src++ % (1u << 22);
    struct sockaddr_in src = {.sin_family = AF_INET};
    src.sin_addr.s_addr = htonl(0x7f000000u | (1u << 22) | k);   /* 127.64.0.0 and up */
    if (bind(fd, (struct sockaddr *)&src, sizeof src) != 0) {
        perror("fuzz_metrics_http: bind");
        abort();
    }
    if (connect(fd, (struct sockaddr *)&a, sizeof a) != 0) {
        /* libFuzzer's once-a-second SIGALRM can land in a connect that waits: it then goes on
         * in the background, and is awaited here. */
        int e = errno, err = 0;
        socklen_t len = sizeof err;
        struct pollfd p = {.fd = fd, .events = POLLOUT};
        if (e != EINTR || poll(&p, 1, 10000) != 1 ||
            getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len) != 0 || err != 0) {
            fprintf(stderr, "fuzz_metrics_http: connect: %s\n", strerror(err ? err : e));
            abort();
        }
        fprintf(stderr, "fuzz_metrics_http: connect interrupted, then completed\n");
    }
    size_t cut = size ? data[0] % (size + 1) : 0;
    send_all(fd, data, cut);
    send_all(fd, data + cut, size - cut);
    shutdown(fd, SHUT_WR);
    char head[16], buf[65536];
    size_t n = 0;                  /* bytes received; the first 16 kept in head */
    for (;;) {
        ssize_t r = recv(fd, buf, sizeof buf, 0);
        if (r == 0) break;
        if (r < 0 && errno == EINTR) continue;
        if (r < 0 && errno == ECONNRESET) break;  /* closed with our bytes unread: allowed */
        if (r < 0) abort();        /* no close within 5 s of the client's end: a hang */
        for (ssize_t i = 0; i < r && n + (size_t)i < sizeof head; i++) head[n + (size_t)i] = buf[i];
        n += (size_t)r;
    }
    close(fd);
    check_answers(head, n < sizeof head ? n : sizeof head);
    return 0;
}
