/* task.h: run the task command with posix_spawnp: body on stdin, signals forwarded, grace. */
#ifndef JP_TASK_H
#define JP_TASK_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* The environment handed to the task: every inherited entry except the broker credentials
 * (JOBPOOL_AMQP_URL, JOBPOOL_AMQP_URL_FILE) and stale per-message variables (JOBPOOL_MESSAGE_ID,
 * JOBPOOL_CORRELATION_ID, JOBPOOL_ATTEMPT, JOBPOOL_REDELIVERED, JOBPOOL_HEADER_*), followed by
 * the "NAME=value" strings added with task_env_add. Owns copies of everything it holds. */
struct task_env {
    char **vars;   /* NULL-terminated; valid until task_env_free */
    size_t n;
    size_t alloc;
};

/* Start from inherited (usually environ; may be NULL). Returns 0 or JP_ENOMEM. */
int task_env_init(struct task_env *e, char *const *inherited);
/* Add NAME=value (copied). A NAME already added after init is kept and the new one dropped, so
 * two headers that sanitize to the same name do not give the task a duplicate. Returns 0,
 * JP_EINVAL (name empty or value with a NUL byte: dropped) or JP_ENOMEM. */
int task_env_add(struct task_env *e, const char *name, const char *value, size_t value_len);
void task_env_free(struct task_env *e);

/* Write "JOBPOOL_HEADER_" + name uppercased with every byte that is not [A-Z0-9] replaced by
 * '_' into out (truncated to outlen - 1). */
void task_header_var(const void *name, size_t len, char *out, size_t outlen);

/* How the run loop talks to the rest of the worker. */
struct task_io {
    /* Read end of the signal self-pipe: each byte is the number of a caught signal (SIGTERM,
     * SIGINT, SIGCHLD). SIGTERM and SIGINT are forwarded to the task's process group. */
    int sig_fd;
    int64_t grace_ms;              /* after a forwarded signal, SIGKILL once this has passed */
    int (*service_fd)(void *ctx);  /* optional: an fd to poll for input (the broker socket) */
    /* Called when service_fd is readable and once a second. Returns false when the task must
     * stop now because its message is no longer ours (the broker took the delivery back): the
     * task's group then gets SIGTERM, and SIGKILL once grace_ms has passed. */
    bool (*service)(void *ctx);
    void *ctx;
    int64_t timeout_ms;            /* > 0: stop the task the same way once it has run this long */
};

struct task_result {
    int exit_code;        /* exit status, or 128 + signal number when the task was killed */
    int term_signal;      /* the signal that ended the task, 0 when it exited */
    int forwarded;        /* the first SIGTERM/SIGINT passed on to the task, 0 if none */
    bool grace_expired;   /* the task outlived --grace (or a second signal) and was SIGKILLed */
    bool timed_out;       /* stopped because it ran past io->timeout_ms */
    bool revoked;         /* stopped because io->service said the delivery was taken back */
    int spawn_errno;      /* when task_run returned JP_ESPAWN: why posix_spawnp failed */
};

/* Run argv (argv[0] looked up in PATH) with envp, feeding body to its stdin (SIGPIPE must be
 * ignored by the caller; a task that does not read its stdin is fine), in its own process
 * group, with stdout and stderr inherited. Returns when the task has ended: 0 with *res
 * filled, or JP_ESPAWN (res->spawn_errno set) when it could not be started. */
int task_run(char *const *argv, char *const *envp, const void *body, size_t body_len,
             const struct task_io *io, struct task_result *res);

/* Check that argv[0] names an executable file (directly, or through PATH when it has no '/').
 * Returns 0 or the errno value that spawning it would fail with (ENOENT, EACCES). */
int task_check_command(const char *cmd);

#endif
