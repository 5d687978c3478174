/* fuzz_kubeconfig.c: libFuzzer target: any bytes through kubeconfig_parse must give settings
 * with a server, or an error line, never a crash, a leak or undefined behaviour. Relative file
 * names resolve in a directory that does not exist; stdin is /dev/null, so a kubeconfig naming
 * /dev/stdin cannot block. */
#define _GNU_SOURCE
#include <fcntl.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "kubeconfig.h"
#include "log.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerInitialize(int *argc, char ***argv);

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc, (void)argv;
    log_setup(LOG_TEXT, LOG_OFF, NULL);
    int fd = open("/dev/null", O_RDONLY);
    if (fd >= 0) dup2(fd, 0);
    if (fd > 0) close(fd);
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char err[512] = "";
    struct kube_auth *a = NULL;
    const char *ctx = size && data[0] & 1 ? "ctx" : NULL;
    int rc = kubeconfig_parse((const char *)data, size, "/nonexistent-fuzz-dir", ctx, &a, err,
                              sizeof err);
    if (rc) {
        if (a || !err[0] || strchr(err, '\n')) abort();
    } else {
        if (!a || !a->server || !*a->server) abort();
        kube_auth_free(a);
    }
    log_clear_secrets(); /* tokens are registered: keep the list from growing over the run */
    return 0;
}
