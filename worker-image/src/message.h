/* message.h: what a delivered message tells the worker and its task: the attempt number, an
 * earlier attempt that ended unsettled, and the task's environment from the properties. */
#ifndef JP_MESSAGE_H
#define JP_MESSAGE_H

#include <amqp.h>
#include <stdbool.h>
#include <stdint.h>

#include "task.h"

#define MSG_ATTEMPT_HEADER "x-jobpool-attempt"
#define MSG_REDELIVERED_HEADER "x-jobpool-redelivered"
#define MSG_MAX_HEADER_VALUE (128 * 1024) /* longer header values are not passed to the task */
#define MSG_MAX_HEADERS 256               /* headers past this many are not passed either */

/* The attempt number the message carries in header x-jobpool-attempt (any integer or text
 * kind), 1 when absent or not a number in [1, INT32_MAX]. */
int64_t msg_attempt(const amqp_basic_properties_t *props);

/* Did an earlier attempt of this message end unsettled? The broker says so for the delivery
 * itself; a copy the worker requeued says so in header x-jobpool-redelivered (a boolean). */
bool msg_redelivered(const amqp_envelope_t *m);

/* Fill env (task_env_init from inherited, then added to) with what the task gets:
 * JOBPOOL_MESSAGE_ID, JOBPOOL_CORRELATION_ID, JOBPOOL_ATTEMPT = attempt, JOBPOOL_REDELIVERED
 * and JOBPOOL_HEADER_<NAME> for each header with a flat value (task_header_var names it); a
 * nested, over-long or NUL-holding value is left out (logged at debug). Returns 0 or
 * JP_ENOMEM; env is the caller's to free (task_env_free) either way. */
int msg_task_env(struct task_env *env, char *const *inherited, const amqp_envelope_t *m,
                 int64_t attempt);

#endif
