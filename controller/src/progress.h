/* progress.h: the one line a worker reports to the controller about its progress. */
#ifndef JP_PROGRESS_H
#define JP_PROGRESS_H

#include <stddef.h>

/*
 * The worker writes it to JOBPOOL_RESULT_FILE: a file of its own under the local backend, and
 * /dev/termination-log in a Job, so that its last line becomes the pod's termination message.
 * The words, in the order a worker writes them:
 *
 *   waiting                               the broker counts the worker as a consumer
 *   task wait=3.250                       a message arrived; it waited 3.25 s in the queue
 *   task wait=unknown                     ... and the publisher set no timestamp property
 *   task wait=3.250 duration=12.004       the task ended after running 12.004 s
 *   no-task                               no message came within idleTimeout (wasted)
 *
 * A bare "task" (workers before 0.2) parses as a task with both figures unknown, and readers
 * that compare the whole line with "no-task" keep working: the figures only follow "task".
 * Unknown key=value pairs after "task" are ignored, so later fields can be added.
 */

enum progress_word {
    PROGRESS_NONE = 0,          /* empty, or not a word we know */
    PROGRESS_WAITING,
    PROGRESS_TASK,
    PROGRESS_NO_TASK,
};

struct progress {
    enum progress_word word;
    double wait_s;              /* TASK: publish to delivery, seconds; < 0 unknown */
    double duration_s;          /* TASK: how long the task ran, seconds; < 0 not (yet) known */
};

/* Parse one report (trailing newlines and anything after the first line are ignored). Never
 * fails: what cannot be read is PROGRESS_NONE, or a figure left unknown (< 0). */
void progress_parse(const char *s, struct progress *out);

/* Format p into buf (NUL-terminated; about 64 bytes suffice). Returns the length, or -1 when
 * buf is too small. Figures < 0 are written as "unknown" (wait) or left out (duration). */
int progress_format(const struct progress *p, char *buf, size_t len);

#endif
