/* kubeconfig.h: where and how to reach the API server: a kubeconfig file or in-cluster settings. */
#ifndef JP_KUBECONFIG_H
#define JP_KUBECONFIG_H

#include <stdbool.h>
#include <stddef.h>

/* Resolved connection settings. Every string is owned by the struct (freed by kube_auth_free);
 * PEM fields hold the decoded PEM text (from -data fields or read from files, never temp files). */
struct kube_auth {
    char *server;        /* "https://host:port", no trailing slash */
    char *namespace_;    /* the context's namespace or the in-cluster one; NULL when unset */
    char *context;       /* the context used (kubeconfig only), NULL in-cluster */
    char *ca_pem;        /* certificate-authority(-data), PEM; NULL: system CAs */
    char *cert_pem;      /* client-certificate(-data), PEM; NULL when unused */
    char *key_pem;       /* client-key(-data), PEM; NULL when unused */
    char *token;         /* static bearer token, NULL when unused */
    char *token_file;    /* bearer token read from this file, re-read when its mtime changes */
    char *username;      /* basic auth (rare), NULL when unused */
    char *password;
    bool insecure;       /* insecure-skip-tls-verify: the caller logs a loud warning */
};

/* Parse a kubeconfig file. context NULL means current-context. Relative file paths are taken
 * relative to the kubeconfig's directory. Returns 0, JP_EIO (unreadable), JP_ECONFIG (malformed,
 * missing context/cluster/user; err says which) or JP_ENOMEM. *out is NULL on failure; the caller
 * frees it with kube_auth_free. err may be NULL. Tokens are registered with log_add_secret. */
int kubeconfig_load(const char *path, const char *context, struct kube_auth **out, char *err,
                    size_t errlen);
/* Same, from a string; dir resolves relative paths (NULL: the working directory). */
int kubeconfig_parse(const char *yaml, size_t len, const char *dir, const char *context,
                     struct kube_auth **out, char *err, size_t errlen);

/* In-cluster settings: KUBERNETES_SERVICE_HOST/PORT and sa_dir/{token,ca.crt,namespace}.
 * sa_dir NULL means /var/run/secrets/kubernetes.io/serviceaccount (tests pass their own).
 * Returns 0, JP_ECONFIG (not in a cluster: variables or files missing; err says which), JP_EIO
 * or JP_ENOMEM; *out NULL on failure. */
int kube_auth_in_cluster(const char *sa_dir, struct kube_auth **out, char *err, size_t errlen);

void kube_auth_free(struct kube_auth *a);

/* Decode standard base64 (padding optional, whitespace ignored) into a NUL-terminated malloc'd
 * string. Returns 0, JP_EPARSE or JP_ENOMEM; *out NULL on failure. */
int kube_base64_decode(const char *in, char **out, size_t *outlen);

#endif
