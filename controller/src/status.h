/* status.h: `jobpool-controller status`: a running controller's pools, from its /debug/pools. */
#ifndef JP_STATUS_H
#define JP_STATUS_H

#include <stdio.h>

/* Run the subcommand: argv[0] is "status", then [--address HOST:PORT] [-o table|json].
 * Prints to out (errors to stderr). Returns the process exit code: 0, 1 when the controller
 * could not be read, 2 for bad flags. */
int status_main(int argc, char **argv, FILE *out);

/* Print the /debug/pools JSON in body as a table. Returns 0, or JP_EPARSE/JP_ESHAPE when it is
 * not the JSON expected. now_s is the current unix time (for "ago" columns). */
int status_print_table(const char *body, double now_s, FILE *out);

#endif
