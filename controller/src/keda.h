/* keda.h: `jobpool-controller convert`: KEDA ScaledJob manifests to JobPool manifests. */
#ifndef JP_KEDA_H
#define JP_KEDA_H

#include <stddef.h>

struct dbuf;

/* Convert the YAML stream yaml (one or many documents; name is the file name used in messages)
 * and append to out one JobPool (apiVersion jobpool.dev/v1alpha1) per ScaledJob that has a
 * rabbitmq trigger, "---" separated. Every ScaledJob field that maps differently, or is dropped,
 * gets a "#" comment in the output saying so. Documents that are not such ScaledJobs are listed
 * in notes, one line each ("FILE:LINE: skipped Deployment web: not a ScaledJob").
 *
 * Returns 0; or JP_ECONFIG when something cannot be mapped (a MessageRate trigger, a second
 * rabbitmq trigger, a value outside the JobPool's limits, ...), with every such problem as one
 * line "FILE:LINE:COL: ScaledJob NAME: FIELD.PATH: message" in errs, and out left without any
 * JobPool (the caller prints nothing rather than half a conversion); or JP_EPARSE with the YAML
 * syntax error in errs; or JP_ENOMEM. Credentials found in a host URL are never copied to out,
 * notes or errs. The caller owns all three buffers. */
int keda_convert(const char *yaml, size_t len, const char *name, struct dbuf *out,
                 struct dbuf *notes, struct dbuf *errs);

/* `jobpool-controller convert FILE`: read FILE ("-" for stdin), print the JobPools on stdout and
 * notes and errors on stderr. Returns the process exit code: 0 when converted, 1 when nothing
 * could be converted or something could not be mapped, 2 for a usage error. */
int keda_convert_main(int argc, char **argv);

#endif
