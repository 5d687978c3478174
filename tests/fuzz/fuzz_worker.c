/* fuzz_worker.c: libFuzzer target: the worker's broker URL (JOBPOOL_AMQP_URL) through
 * aconn_parse_url, with the log captured: whatever the URL, its password (as written, and
 * percent-decoded when it parses) never appears in a log line, and a URL that parses names a
 * host. */
#define _GNU_SOURCE
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "amqp_conn.h"
#include "log.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* The password as written: between the first ':' and the last '@' of the authority, as
 * log_redact_url and the worker read it. */
static char *raw_password(const char *url)
{
    const char *auth = strstr(url, "://");
    auth = auth ? auth + 3 : url;
    size_t alen = strcspn(auth, "/?#");
    const char *at = NULL;
    for (const char *p = auth; p < auth + alen; p++)
        if (*p == '@') at = p;
    const char *colon = at ? memchr(auth, ':', (size_t)(at - auth)) : NULL;
    return colon ? strndup(colon + 1, (size_t)(at - colon - 1)) : NULL;
}

/* Whether s occurs in a line's message, after its timestamp and level (the digits and colons
 * of a time, or "info", could spell a short password by chance; they are not masked). */
static int logged(char *log, const char *s)
{
    for (char *line = log; line && *line;) {
        char *nl = strchr(line, '\n');
        if (nl) *nl = '\0';
        char *text = strchr(line, ' '); /* "TS LEVEL msg": the level is padded to 5 */
        int hit = text && strlen(text) > 7 && strstr(text + 7, s);
        if (nl) *nl = '\n';
        if (hit) return 1;
        line = nl ? nl + 1 : NULL;
    }
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size > 1024 || memchr(data, '\0', size)) return 0;
    char *url = strndup((const char *)data, size);
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    if (!url || !f) abort();
    log_setup(LOG_TEXT, LOG_DEBUG, f);
    struct aconn_url u;
    int rc = aconn_parse_url(url, &u);
    char *decoded = rc == 0 && u.info.password ? strdup(u.info.password) : NULL;
    if (rc == 0 && (!u.info.host || !*u.info.host)) abort();
    /* What a worker logs next about its broker: the URL, redacted as it prints it. */
    char red[512];
    log_info("broker %s", log_redact_url(url, red, sizeof red));
    aconn_url_free(&u);
    log_setup(LOG_TEXT, LOG_OFF, NULL);
    fclose(f);
    char *raw = raw_password(url);
    /* Secrets shorter than 3 bytes are not masked (they would garble every line), and one
     * made of the mask's own '*' shows up as the mask. */
    if (raw && strlen(raw) >= 3 && !strchr(raw, '*') && logged(buf, raw)) abort();
    if (decoded && strlen(decoded) >= 3 && !strchr(decoded, '*') && logged(buf, decoded)) abort();
    free(raw);
    free(decoded);
    free(buf);
    free(url);
    log_clear_secrets();
    return 0;
}
