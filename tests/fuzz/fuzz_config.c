/* fuzz_config.c: libFuzzer target: any bytes through cfg_load_string and yamljson_parse must give
 * a config or exactly one non-empty error line, never a crash, a leak or undefined behaviour. */
#include <cjson/cJSON.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "config.h"
#include "yamljson.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char err[512];
    struct cfg *c = NULL;
    int rc = cfg_load_string((const char *)data, size, "fuzz.yaml", &c, err, sizeof err);
    if (rc) {
        /* Failure: no config, and one line that names the input. */
        if (c || !err[0] || strchr(err, '\n') || strncmp(err, "fuzz.yaml", 9) != 0) abort();
    } else {
        if (!c || !c->npools) abort();
        for (size_t i = 0; i < c->npools; i++) {
            if (strlen(c->pools[i].hash) != 16 || c->pools[i].max_active < 1 ||
                c->pools[i].min_active > c->pools[i].max_active || !c->pools[i].vhost)
                abort();
            cfg_template_error(c, &c->pools[i], "template.spec.containers[0].image", "probe", err,
                               sizeof err);
        }
        cfg_free(c);
    }

    cJSON *j = NULL;
    struct yamljson_src *src = NULL;
    struct yamljson_error e;
    if (yamljson_parse((const char *)data, size, NULL, &j, &src, &e) == 0) {
        int line, col;
        (void)yamljson_src_find(src, "a.b[0]", &line, &col);
        char *s = cJSON_PrintUnformatted(j);
        free(s);
    }
    cJSON_Delete(j);
    yamljson_src_free(src);
    return 0;
}
