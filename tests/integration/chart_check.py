#!/usr/bin/env python3
"""chart_check.py: assertions on rendered chart output, for the chart tests (python3-yaml).

  chart_check.py defaults FILE           the default render: objects, RBAC, Deployment, config
  chart_check.py three-pools FILE        the three-pool example render
  chart_check.py namespaces FILE NS...   RBAC, Lease and config for watchNamespaces [NS...]
  chart_check.py restricted CONFIG...    every pool's jobTemplate passes Pod Security "restricted"
  chart_check.py workers FILE SECRET [CREATED]   the workers' login: rabbitmq.workerSecret names
                                         SECRET; CREATED=yes: the chart renders it, in the Jobs'
                                         namespace; no password appears in the ConfigMap
  chart_check.py annotation FILE KEY     print the Deployment's pod-template annotation KEY
  chart_check.py kinds FILE              print "Kind namespace/name" per object, sorted
  chart_check.py config FILE             print the rendered controller config file
  chart_check.py schema GENERATED OURS   the generator's schema agrees with values.schema.json

Each check prints nothing on success; failures go to stderr, one line each, exit status 1.
"""
import json
import sys

import yaml

failures = []


def check(cond, msg):
    if not cond:
        failures.append(msg)


def load(path):
    with open(path) as f:
        return [d for d in yaml.safe_load_all(f) if d]


def find(objs, kind, name=None):
    return [o for o in objs if o["kind"] == kind and (name is None or o["metadata"]["name"] == name)]


def one(objs, kind):
    found = find(objs, kind)
    check(len(found) == 1, "want exactly one %s, got %d" % (kind, len(found)))
    return found[0] if found else {}


# Exactly the calls controller/src/kube.c makes: Jobs created, listed, watched (the cache), read
# (a live check before a pending-timeout delete) and deleted; Pods listed and watched; Events
# created (where workers run); JobPools listed and watched, their status patched, and the Secrets
# they name read by name (where they are served); the one Lease read and renewed (in the release namespace only). The chart creates the
# Lease, so there is no create on leases (it could not be limited to one name).
WORKER_RULES = {
    ("batch", "jobs", None): ["create", "get", "list", "watch", "delete"],
    ("", "pods", None): ["list", "watch"],
    ("", "events", None): ["create"],
}
JOBPOOL_RULES = {
    ("jobpool.dev", "jobpools", None): ["list", "watch"],
    ("jobpool.dev", "jobpools/status", None): ["patch"],
    ("", "secrets", None): ["get"],     # connectionSecretRef: by name, never listed or watched
}
LEASE_RULES = {("coordination.k8s.io", "leases", "LEASE"): ["get", "update"]}


def rbac(objs, release_ns, watch, lease):
    """The RBAC for watchNamespaces=watch: no list, a ClusterRole with the worker and JobPool rules
    and a Role with the Lease's in the release namespace; a list, a Role in each listed namespace
    and in the release one, with the rules each needs, and nothing cluster-wide. Each bound to the
    chart's ServiceAccount."""
    sa = one(objs, "ServiceAccount")
    subj = [{"kind": "ServiceAccount", "name": sa["metadata"]["name"], "namespace": release_ns}]
    want = {}  # (kind, namespace) -> rules
    if not watch:
        want[("ClusterRole", None)] = {**WORKER_RULES, **JOBPOOL_RULES}
        want[("Role", release_ns)] = dict(LEASE_RULES)
    else:
        for ns in set(watch) | {release_ns}:
            r = dict(WORKER_RULES)
            if ns in watch:
                r.update(JOBPOOL_RULES)
            if ns == release_ns:
                r.update(LEASE_RULES)
            want[("Role", ns)] = r
    got = {(o["kind"], o["metadata"].get("namespace")): o for o in find(objs, "Role") + find(objs, "ClusterRole")}
    check(set(got) == set(want), "roles rendered: %r, want %r" % (sorted(got, key=str), sorted(want, key=str)))
    for k, r in want.items():
        if k in got:
            have = rules_of(got[k], lease)
            check(have == r, "%s in %s: rules %r, want %r" % (k[0], k[1], have, r))
    binds = {(o["kind"], o["metadata"].get("namespace")): o for o in find(objs, "RoleBinding") + find(objs, "ClusterRoleBinding")}
    check(set(binds) == {(k + "Binding", ns) for k, ns in want}, "bindings rendered: %r" % sorted(binds, key=str))
    for (kind, ns), b in binds.items():
        role = got.get((kind[:-len("Binding")], ns), {})
        check(b.get("roleRef", {}).get("kind") == kind[:-len("Binding")] and
              b["roleRef"].get("name") == role.get("metadata", {}).get("name"),
              "the %s in %s does not bind its role" % (kind, ns))
        check(b.get("subjects") == subj, "%s in %s subjects: %r" % (kind, ns, b.get("subjects")))


def rules_of(role, lease):
    got = {}
    for r in role.get("rules", []):
        names = r.get("resourceNames")
        check(names is None or len(names) == 1, "a rule names several resources: %r" % names)
        name = names[0] if names else None
        for g in r["apiGroups"]:
            for res in r["resources"]:
                key = (g, res, "LEASE" if name is not None and name == lease else name)
                check(key not in got, "rule for %s/%s given twice" % (g, res))
                got[key] = r["verbs"]
    return got


def config_of(objs):
    cm = one(objs, "ConfigMap")
    return yaml.safe_load(cm.get("data", {}).get("config.yaml", "")) or {}


def container(objs):
    dep = one(objs, "Deployment")
    cs = dep.get("spec", {}).get("template", {}).get("spec", {}).get("containers", [])
    check(len(cs) == 1, "want one container in the Deployment, got %d" % len(cs))
    return dep, (cs[0] if cs else {})


def common(objs, release):
    for o in objs:
        labels = o["metadata"].get("labels", {})
        for k in ("app.kubernetes.io/name", "app.kubernetes.io/instance", "app.kubernetes.io/version",
                  "app.kubernetes.io/managed-by", "app.kubernetes.io/component", "app.kubernetes.io/part-of"):
            check(k in labels, "%s/%s lacks label %s" % (o["kind"], o["metadata"]["name"], k))
        check(labels.get("app.kubernetes.io/instance") == release,
              "%s: app.kubernetes.io/instance is not %s" % (o["kind"], release))
    for r in find(objs, "Role") + find(objs, "ClusterRole"):
        for rule in r.get("rules", []):
            check("secrets" not in rule["resources"] or (rule["resources"] == ["secrets"] and rule["verbs"] == ["get"]
                                                         and not rule.get("resourceNames")),
                  "%s grants more on secrets than get" % r["kind"])
            check("*" not in rule["resources"] and "*" not in rule["verbs"], "%s uses a wildcard" % r["kind"])
    dep, c = container(objs)
    pod = dep["spec"]["template"]["spec"]
    psc, csc = pod.get("securityContext", {}), c.get("securityContext", {})
    check(psc.get("runAsNonRoot") is True, "pod securityContext.runAsNonRoot is not true")
    check(psc.get("runAsUser") == 65532, "pod securityContext.runAsUser is not 65532")
    check(psc.get("seccompProfile", {}).get("type") == "RuntimeDefault", "pod seccompProfile is not RuntimeDefault")
    check(csc.get("readOnlyRootFilesystem") is True, "container readOnlyRootFilesystem is not true")
    check(csc.get("allowPrivilegeEscalation") is False, "container allowPrivilegeEscalation is not false")
    check(csc.get("capabilities", {}).get("drop") == ["ALL"], "container does not drop ALL capabilities")
    check(csc.get("runAsNonRoot") is True, "container runAsNonRoot is not true")
    check(c.get("resources", {}).get("requests") == {"cpu": "10m", "memory": "32Mi"},
          "requests are not cpu 10m / memory 32Mi: %r" % c.get("resources"))
    check(c.get("resources", {}).get("limits") == {"memory": "96Mi"},
          "limits are not memory 96Mi: %r" % c.get("resources"))
    port = [p for p in c.get("ports", []) if p.get("name") == "metrics"]
    check(port and port[0]["containerPort"] == 9090, "no metrics port 9090")
    for probe, path in (("livenessProbe", "/healthz"), ("readinessProbe", "/readyz")):
        get = c.get(probe, {}).get("httpGet", {})
        check(get.get("path") == path and get.get("port") == "metrics",
              "%s is not GET %s on the metrics port: %r" % (probe, path, get))
    ann = dep["spec"]["template"]["metadata"].get("annotations", {})
    check(len(ann.get("checksum/config", "")) == 64, "no checksum/config annotation on the pod template")
    check(set(k for k in ann if k.startswith("checksum/")) == {"checksum/config"},
          "a checksum other than the config's (a hash of the Secret gives the password away): %r" % ann)
    env = {e["name"]: e.get("valueFrom", {}).get("secretKeyRef", {}) for e in c.get("env", [])}
    for var, key in (("RABBITMQ_USERNAME", "username"), ("RABBITMQ_PASSWORD", "password")):
        check(env.get(var, {}).get("key") == key, "%s does not come from the Secret key %s" % (var, key))
    field = {e["name"]: e.get("valueFrom", {}).get("fieldRef", {}).get("fieldPath") for e in c.get("env", [])}
    check(field.get("POD_NAME") == "metadata.name", "POD_NAME does not come from the downward API")
    check(field.get("POD_NAMESPACE") == "metadata.namespace", "POD_NAMESPACE does not come from the downward API")
    st = dep["spec"].get("strategy", {})
    check(st.get("type") == "RollingUpdate" and st.get("rollingUpdate", {}).get("maxUnavailable") == 0,
          "the rollout must keep the old pod until the new one is ready: %r" % st)
    cfg_le = config_of(objs).get("leaderElection", {})
    check(cfg_le.get("enabled") is True, "leader election is off, so a rolling update could run two controllers: %r" % cfg_le)
    lease = one(objs, "Lease")
    check(lease.get("metadata", {}).get("name") == cfg_le.get("leaseName"), "the chart's Lease is not the config's leaseName")
    check(lease.get("metadata", {}).get("namespace") == one(objs, "ServiceAccount")["metadata"]["namespace"],
          "the Lease is not in the release namespace")
    rbac(objs, one(objs, "ServiceAccount")["metadata"]["namespace"],
         config_of(objs).get("kubernetes", {}).get("watchNamespaces") or [], cfg_le.get("leaseName"))
    mounts = {m["mountPath"]: m for m in c.get("volumeMounts", [])}
    check("/etc/jobpool/config.yaml" in mounts, "the config is not mounted at /etc/jobpool/config.yaml")
    cfg = config_of(objs)
    check(cfg.get("backend") == "kube", "config backend is not kube")
    check(cfg.get("metrics", {}).get("address") == ":9090", "config metrics.address is not ':9090'")
    check(cfg.get("rabbitmq", {}).get("username") == {"env": "RABBITMQ_USERNAME"}, "config username is not {env: RABBITMQ_USERNAME}")
    check(cfg.get("rabbitmq", {}).get("password") == {"env": "RABBITMQ_PASSWORD"}, "config password is not {env: RABBITMQ_PASSWORD}")
    check(cfg.get("kubernetes", {}).get("inCluster") is True, "config kubernetes.inCluster is not true")
    sa = one(objs, "ServiceAccount")
    check(pod.get("serviceAccountName") == sa.get("metadata", {}).get("name"), "the pod does not use the chart's ServiceAccount")
    return dep, c, cfg


def defaults(path):
    objs = load(path)
    kinds = sorted(o["kind"] for o in objs)
    check(kinds == sorted(["ServiceAccount", "Secret", "ConfigMap", "ClusterRole", "ClusterRoleBinding", "Role",
                           "RoleBinding", "Deployment", "Service", "Lease"]), "default objects: %r" % kinds)
    dep, c, cfg = common(objs, "jobpool")
    check(dep["spec"]["replicas"] == 1, "default replicas is not 1")
    check(not find(objs, "PodDisruptionBudget"), "a PodDisruptionBudget with one replica would block every drain")
    check(c.get("image") == "localhost/jobpool-controller:0.1.0",
          "the default image is not what make images tags (tests/env/images.sh): %s" % c.get("image"))
    check("namespace" not in cfg.get("kubernetes", {}),
          "config names a namespace: a kustomize overlay that moves the objects would leave the Jobs behind")
    check("watchNamespaces" not in cfg.get("kubernetes", {}), "the defaults limit JobPools to some namespaces")
    pools = cfg.get("pools", [])
    check(len(pools) == 1 and pools[0].get("maxActive") == 10, "default pools: %r" % pools)
    # Watching every namespace, the instance label carries the release namespace: a release of the
    # same name elsewhere sees the same namespaces and must not count these Jobs as its own.
    check(cfg.get("kubernetes", {}).get("instance") == "jobpool-jobpool",
          "config kubernetes.instance is not <release namespace>-<release>: %r" % cfg.get("kubernetes", {}).get("instance"))
    check(cfg.get("leaderElection", {}).get("leaseName") == "jobpool-leader", "the Lease is not <release>-leader")
    sec = one(objs, "Secret")
    check(set(sec.get("data", {})) == {"username", "password"}, "Secret keys: %r" % list(sec.get("data", {})))


def three_pools(path):
    objs = load(path)
    dep, c, cfg = common(objs, "jobpool")
    check(dep["spec"]["replicas"] == 2, "replicas is not 2")
    pdb = one(objs, "PodDisruptionBudget")
    check(pdb.get("spec", {}).get("maxUnavailable") == 1 and
          pdb["spec"].get("selector", {}).get("matchLabels") == dep["spec"]["selector"]["matchLabels"],
          "the PodDisruptionBudget does not keep one of the controller pods: %r" % pdb.get("spec"))
    names = [p.get("name") for p in cfg.get("pools", [])]
    check(names == ["thumbnails", "reports", "webhooks"], "pools: %r" % names)
    by = {p["name"]: p for p in cfg.get("pools", [])}
    check(by.get("reports", {}).get("minActive") == 1 and by["reports"].get("vhost") == "/reports",
          "reports pool lost its keys: %r" % by.get("reports"))
    check(by.get("webhooks", {}).get("queueRegex") == "^webhooks\\.", "webhooks queueRegex: %r" % by.get("webhooks"))
    check(not find(objs, "Secret"), "a Secret is rendered although existingSecret is set")
    env = {e["name"]: e["valueFrom"]["secretKeyRef"]["name"] for e in c.get("env", [])
           if "secretKeyRef" in e.get("valueFrom", {})}
    check(env.get("RABBITMQ_PASSWORD") == "jobpool-rabbitmq", "credentials do not come from existingSecret")


def namespaces(path, nss):
    """watchNamespaces=[NS...]: a Role and its binding in each and in the release namespace, the
    Lease in the release namespace, the config listing NS...; no cluster-scoped object."""
    objs = load(path)
    common(objs, "jobpool")
    check(not find(objs, "ClusterRole") and not find(objs, "ClusterRoleBinding"), "a cluster-scoped role is rendered")
    k = config_of(objs).get("kubernetes", {})
    check(k.get("watchNamespaces") == nss, "config watchNamespaces is %r, want %r" % (k.get("watchNamespaces"), nss))
    check("namespace" not in k, "the config names a namespace: the controller's is the release's")


def workers(path, name, created):
    objs = load(path)
    cfg = config_of(objs)
    ws = cfg.get("rabbitmq", {}).get("workerSecret", {})
    check(ws.get("name") == name, "rabbitmq.workerSecret.name is %r, want %r" % (ws.get("name"), name))
    jobs_ns = one(objs, "ServiceAccount")["metadata"]["namespace"]
    secrets = [o for o in find(objs, "Secret", name)]
    if created == "yes":
        check(len(secrets) == 1 and secrets[0]["metadata"]["namespace"] == jobs_ns,
              "the workers' Secret %s is not rendered in the Jobs' namespace %s" % (name, jobs_ns))
        for sec in secrets:
            check(set(sec.get("data", {})) >= {ws.get("usernameKey"), ws.get("passwordKey")},
                  "the workers' Secret lacks the keys the config names")
    cm = yaml.safe_dump(one(objs, "ConfigMap"))
    import base64
    for sec in find(objs, "Secret"):
        for k, v in sec.get("data", {}).items():
            lit = base64.b64decode(v).decode()
            if "pass" in k and lit:
                check(lit not in cm, "a password of Secret %s is in the ConfigMap" % sec["metadata"]["name"])


def restricted(paths):
    """Pod Security "restricted" (the checks that apply to a Job's pod template) for every pool of
    each controller config given."""
    for path in paths:
        with open(path) as f:
            cfg = yaml.safe_load(f)
        for p in cfg.get("pools", []):
            jt = p.get("jobTemplate")
            if jt is None:
                continue
            where = "%s: pool %s" % (path, p.get("name"))
            spec = jt.get("template", {}).get("spec", {})
            psc = spec.get("securityContext") or {}
            check(spec.get("automountServiceAccountToken") is False,
                  "%s: automountServiceAccountToken is not false (workers need no API token)" % where)
            for k in ("hostNetwork", "hostPID", "hostIPC"):
                check(not spec.get(k), "%s: %s" % (where, k))
            check(not any("hostPath" in v for v in spec.get("volumes") or []), "%s: a hostPath volume" % where)
            for c in (spec.get("containers") or []) + (spec.get("initContainers") or []):
                sc = c.get("securityContext") or {}
                w = "%s, container %s" % (where, c.get("name"))
                check(sc.get("allowPrivilegeEscalation") is False, "%s: allowPrivilegeEscalation is not false" % w)
                caps = sc.get("capabilities") or {}
                check("ALL" in (caps.get("drop") or []), "%s: capabilities.drop lacks ALL" % w)
                check(set(caps.get("add") or []) <= {"NET_BIND_SERVICE"}, "%s: adds capabilities %r" % (w, caps.get("add")))
                check(not sc.get("privileged"), "%s: privileged" % w)
                check(sc.get("runAsNonRoot", psc.get("runAsNonRoot")) is True, "%s: runAsNonRoot is not true" % w)
                check(sc.get("runAsUser", psc.get("runAsUser")) != 0, "%s: runs as UID 0" % w)
                sp = (sc.get("seccompProfile") or psc.get("seccompProfile") or {}).get("type")
                check(sp in ("RuntimeDefault", "Localhost"), "%s: seccompProfile is %r, want RuntimeDefault" % (w, sp))


def schema(generated, ours):
    """Every parameter the generator found in values.yaml exists in values.schema.json with the
    same type, and values.schema.json has no top-level key that values.yaml does not document."""
    with open(generated) as f:
        gen = json.load(f)
    with open(ours) as f:
        our = json.load(f)

    def resolve(node):
        while "$ref" in node:
            ref = node["$ref"]
            check(ref.startswith("#/definitions/"), "unsupported $ref %s" % ref)
            node = our["definitions"][ref.split("/")[-1]]
        return node

    def walk(g, o, path):
        o = resolve(o)
        gt, ot = g.get("type"), o.get("type")
        # The generator calls every number "number"; "integer" (or a list holding the type) refines it.
        ok = gt == ot or (gt == "number" and ot == "integer") or (isinstance(ot, list) and gt in ot)
        check(ok, "%s: values.yaml says %s, values.schema.json says %s" % (path or "(root)", gt, ot))
        for k, gsub in g.get("properties", {}).items():
            osub = o.get("properties", {}).get(k)
            if osub is None:
                check(False, "%s.%s is documented in values.yaml but missing from values.schema.json" % (path, k))
                continue
            walk(gsub, osub, (path + "." + k).lstrip("."))

    walk(gen, our, "")
    for k in our.get("properties", {}):
        check(k == "global" or k in gen.get("properties", {}), "values.schema.json has %s, which values.yaml does not document" % k)


def main():
    cmd, args = sys.argv[1], sys.argv[2:]
    if cmd == "defaults":
        defaults(args[0])
    elif cmd == "three-pools":
        three_pools(args[0])
    elif cmd == "namespaces":
        namespaces(args[0], args[1:])
    elif cmd == "restricted":
        restricted(args)
    elif cmd == "workers":
        workers(args[0], args[1], args[2] if len(args) > 2 else "no")
    elif cmd == "annotation":
        print(container(load(args[0]))[0]["spec"]["template"]["metadata"]["annotations"][args[1]])
    elif cmd == "kinds":
        for o in sorted(load(args[0]), key=lambda o: (o["kind"], o["metadata"].get("namespace", ""), o["metadata"]["name"])):
            print("%s %s/%s" % (o["kind"], o["metadata"].get("namespace", ""), o["metadata"]["name"]))
    elif cmd == "config":
        sys.stdout.write(one(load(args[0]), "ConfigMap")["data"]["config.yaml"])
    elif cmd == "schema":
        schema(args[0], args[1])
    else:
        sys.exit("chart_check.py: unknown command " + cmd)
    for f in failures:
        print("chart_check: " + f, file=sys.stderr)
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
