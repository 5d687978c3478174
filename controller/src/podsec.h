/* podsec.h: the Pod Security "restricted" fields a worker pod gets where its template is silent,
 * and what in a template asks for more. Pure cJSON, no I/O. */
#ifndef JP_PODSEC_H
#define JP_PODSEC_H

#include <stddef.h>

struct cJSON;

/* Fill in, where podspec (a PodSpec object, modified in place) leaves them unset:
 *   automountServiceAccountToken: false
 *   securityContext.runAsNonRoot: true, securityContext.seccompProfile: {type: RuntimeDefault}
 *   each container and init container: securityContext.allowPrivilegeEscalation: false and
 *   securityContext.capabilities.drop: [ALL].
 * A value the template sets is never changed. allowPrivilegeEscalation is left unset in a
 * container that is privileged or adds CAP_SYS_ADMIN (the API server refuses false there).
 * Returns 0, JP_EINVAL (podspec not an object) or JP_ENOMEM. */
int podsec_fill(struct cJSON *podspec);

/* What the JobSpec job_template's pod asks for beyond the restricted profile: privileged,
 * allowPrivilegeEscalation true, added capabilities other than NET_BIND_SERVICE, runAsNonRoot
 * false, runAsUser 0, an Unconfined seccomp profile, hostNetwork/hostPID/hostIPC, hostPath
 * volumes, hostPorts, automountServiceAccountToken true. Returns how many were found and
 * writes them to out (always NUL-terminated; "" when none), e.g.
 * "template.spec.containers[0].securityContext.privileged=true; template.spec.hostNetwork=true". */
int podsec_escalations(const struct cJSON *job_template, char *out, size_t outlen);

#endif
