/* intern.h: one shared copy of each short string many records repeat (pool and queue names). */
#ifndef JP_INTERN_H
#define JP_INTERN_H

#include <stddef.h>

/* The interned copy of s: the same pointer for equal strings, so records hold 8 bytes instead of
 * a fixed buffer (a Job's queue annotation may be 255 bytes, and 20,000 Jobs repeat a few
 * hundred names). NULL and "" give "". Owned by the table and valid until the process ends;
 * never free it. Thread-safe.
 *
 * Nothing grows without bound: the names come from objects in the cluster, so the table stops at
 * INTERN_MAX_STRINGS strings or INTERN_MAX_BYTES bytes. A string that does not fit then reads as
 * NULL (the caller treats it as unknown), and one warning is logged. */
#define INTERN_MAX_STRINGS 65536
#define INTERN_MAX_BYTES (4u << 20)
const char *intern(const char *s);
/* Like intern, but with n bytes of s (no NUL needed). */
const char *intern_n(const char *s, size_t n);

/* Strings held and bytes they take (the table's own arrays not counted). */
void intern_stats(size_t *strings, size_t *bytes);

#endif
