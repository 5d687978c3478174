/* jp-publish.c: publish each line of stdin as one persistent message (tests, demo, benches).
 *   jp-publish AMQP_URL QUEUE [--confirm] [--timestamp UNIX_SECONDS] < lines
 * --timestamp sets the AMQP timestamp property (whole seconds, as AMQP 0-9-1 defines it) on
 * every message; without it the messages carry none, as with most publishers.
 * The URL's vhost is percent-decoded by librabbitmq ("amqp://u:p@h:port/%2F" or no path: "/").
 * Prints the number published and the publish rate on stderr; exit 0 only if all went out. */
#define _GNU_SOURCE
#include <amqp.h>
#include <amqp_tcp_socket.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static int check(amqp_rpc_reply_t r, const char *what)
{
    if (r.reply_type == AMQP_RESPONSE_NORMAL) return 0;
    fprintf(stderr, "jp-publish: %s failed (reply type %d)\n", what, r.reply_type);
    return -1;
}

int main(int argc, char **argv)
{
    if (argc < 3) {
        fprintf(stderr, "usage: jp-publish AMQP_URL QUEUE [--confirm] [--timestamp UNIX_SECONDS] < lines\n");
        return 2;
    }
    int confirm = 0, stamp = 0;
    unsigned long long ts = 0;
    for (int i = 3; i < argc; i++) {
        char *end = NULL;
        if (strcmp(argv[i], "--confirm") == 0) {
            confirm = 1;
        } else if (strcmp(argv[i], "--timestamp") == 0 && i + 1 < argc &&
                   (ts = strtoull(argv[i + 1], &end, 10), end && *end == '\0' && end != argv[i + 1])) {
            stamp = 1;
            i++;
        } else {
            fprintf(stderr, "jp-publish: unknown or incomplete option '%s'\n", argv[i]);
            return 2;
        }
    }
    char *url = strdup(argv[1]);
    struct amqp_connection_info ci;
    amqp_default_connection_info(&ci);
    if (!url || amqp_parse_url(url, &ci) != AMQP_STATUS_OK) {
        fprintf(stderr, "jp-publish: bad AMQP URL\n");
        return 2;
    }
    if (!ci.vhost || !*ci.vhost) ci.vhost = "/";
    amqp_connection_state_t c = amqp_new_connection();
    amqp_socket_t *s = amqp_tcp_socket_new(c);
    if (!s || amqp_socket_open(s, ci.host, ci.port) != AMQP_STATUS_OK) {
        fprintf(stderr, "jp-publish: cannot connect to %s:%d\n", ci.host, ci.port);
        return 1;
    }
    if (check(amqp_login(c, ci.vhost, 0, 131072, 0, AMQP_SASL_METHOD_PLAIN, ci.user, ci.password),
              "login"))
        return 1;
    amqp_channel_open(c, 1);
    if (check(amqp_get_rpc_reply(c), "channel.open")) return 1;
    if (confirm) {
        amqp_confirm_select(c, 1);
        if (check(amqp_get_rpc_reply(c), "confirm.select")) return 1;
    }
    amqp_basic_properties_t props;
    memset(&props, 0, sizeof props);
    props._flags = AMQP_BASIC_DELIVERY_MODE_FLAG | AMQP_BASIC_MESSAGE_ID_FLAG;
    props.delivery_mode = 2;
    if (stamp) {
        props._flags |= AMQP_BASIC_TIMESTAMP_FLAG;
        props.timestamp = (uint64_t)ts;
    }
    char *line = NULL, id[32];
    size_t cap = 0;
    ssize_t n;
    unsigned long count = 0;
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    while ((n = getline(&line, &cap, stdin)) > 0) {
        if (line[n - 1] == '\n') line[--n] = '\0';
        snprintf(id, sizeof id, "m%lu", ++count);
        props.message_id = amqp_cstring_bytes(id);
        amqp_bytes_t body = {.len = (size_t)n, .bytes = line};
        if (amqp_basic_publish(c, 1, amqp_empty_bytes, amqp_cstring_bytes(argv[2]), 0, 0, &props,
                               body) != AMQP_STATUS_OK) {
            fprintf(stderr, "jp-publish: publish %lu failed\n", count);
            return 1;
        }
        if (confirm) {
            amqp_frame_t f;
            if (amqp_simple_wait_frame(c, &f) != AMQP_STATUS_OK ||
                f.payload.method.id != AMQP_BASIC_ACK_METHOD) {
                fprintf(stderr, "jp-publish: message %lu not confirmed\n", count);
                return 1;
            }
        }
    }
    clock_gettime(CLOCK_MONOTONIC, &t1);
    double secs = (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) / 1e9;
    fprintf(stderr, "jp-publish: %lu messages in %.3f s\n", count, secs);
    free(line);
    amqp_channel_close(c, 1, AMQP_REPLY_SUCCESS);
    amqp_connection_close(c, AMQP_REPLY_SUCCESS);
    amqp_destroy_connection(c);
    free(url);
    return 0;
}
