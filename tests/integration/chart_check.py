#!/usr/bin/env python3
"""chart_check.py: assertions on rendered chart output, for the chart tests (python3-yaml).

  chart_check.py defaults FILE           the default render: objects, RBAC, Deployment, config
  chart_check.py three-pools FILE        the three-pool example render
  chart_check.py namespaces FILE NS...   RBAC for watchNamespaces NS...
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


WANT_RULES = {
    ("batch", "jobs"): ["create", "get", "list", "watch", "delete"],
    ("", "pods"): ["get", "list", "watch"],
    ("", "events"): ["create", "patch"],
    ("coordination.k8s.io", "leases"): ["get", "create", "update"],
}


def rules_of(role):
    got = {}
    for r in role.get("rules", []):
        for g in r["apiGroups"]:
            for res in r["resources"]:
                check((g, res) not in got, "rule for %s/%s given twice" % (g, res))
                got[(g, res)] = r["verbs"]
                check("resourceNames" not in r or res != "leases", "leases rule must not name a resource")
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
    for kind in ("ClusterRoleBinding",):
        check(not find(objs, kind), "no %s may be rendered" % kind)
    for r in find(objs, "Role") + find(objs, "ClusterRole"):
        for rule in r.get("rules", []):
            check("secrets" not in rule["resources"], "%s grants access to secrets" % r["kind"])
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
    check(c.get("resources", {}).get("requests") == {"cpu": "10m", "memory": "16Mi"},
          "requests are not cpu 10m / memory 16Mi: %r" % c.get("resources"))
    port = [p for p in c.get("ports", []) if p.get("name") == "metrics"]
    check(port and port[0]["containerPort"] == 9090, "no metrics port 9090")
    for probe, path in (("livenessProbe", "/healthz"), ("readinessProbe", "/readyz")):
        get = c.get(probe, {}).get("httpGet", {})
        check(get.get("path") == path and get.get("port") == "metrics",
              "%s is not GET %s on the metrics port: %r" % (probe, path, get))
    ann = dep["spec"]["template"]["metadata"].get("annotations", {})
    check(len(ann.get("checksum/config", "")) == 64, "no checksum/config annotation on the pod template")
    env = {e["name"]: e.get("valueFrom", {}).get("secretKeyRef", {}) for e in c.get("env", [])}
    for var, key in (("RABBITMQ_USERNAME", "username"), ("RABBITMQ_PASSWORD", "password")):
        check(env.get(var, {}).get("key") == key, "%s does not come from the Secret key %s" % (var, key))
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
    check(kinds == sorted(["ServiceAccount", "Secret", "ConfigMap", "Role", "RoleBinding", "Deployment", "Service"]),
          "default objects: %r" % kinds)
    dep, c, cfg = common(objs, "jobpool")
    check(dep["spec"]["replicas"] == 1, "default replicas is not 1")
    check(dep["spec"]["strategy"]["type"] == "Recreate", "one replica without leader election must use Recreate")
    check("leaderElection" not in cfg, "leader election is on with one replica")
    role = one(objs, "Role")
    check(rules_of(role) == WANT_RULES, "Role rules differ: %r" % rules_of(role))
    rb = one(objs, "RoleBinding")
    check(rb.get("roleRef", {}).get("kind") == "Role" and rb["roleRef"]["name"] == role["metadata"]["name"],
          "the RoleBinding does not bind the Role")
    sa = one(objs, "ServiceAccount")
    check(rb.get("subjects") == [{"kind": "ServiceAccount", "name": sa["metadata"]["name"],
                                  "namespace": sa["metadata"]["namespace"]}], "RoleBinding subjects: %r" % rb.get("subjects"))
    check(role["metadata"]["namespace"] == sa["metadata"]["namespace"], "the Role is not in the release namespace")
    check(cfg.get("kubernetes", {}).get("namespace") == sa["metadata"]["namespace"],
          "config kubernetes.namespace is not the release namespace")
    pools = cfg.get("pools", [])
    check(len(pools) == 1 and pools[0].get("maxActive") == 10, "default pools: %r" % pools)
    sec = one(objs, "Secret")
    check(set(sec.get("data", {})) == {"username", "password"}, "Secret keys: %r" % list(sec.get("data", {})))


def three_pools(path):
    objs = load(path)
    dep, c, cfg = common(objs, "jobpool")
    check(dep["spec"]["replicas"] == 2, "replicas is not 2")
    check(dep["spec"]["strategy"]["type"] == "RollingUpdate", "two replicas must roll")
    le = cfg.get("leaderElection", {})
    check(le.get("enabled") is True and le.get("leaseName"), "leader election is not on with two replicas: %r" % le)
    names = [p.get("name") for p in cfg.get("pools", [])]
    check(names == ["thumbnails", "reports", "webhooks"], "pools: %r" % names)
    by = {p["name"]: p for p in cfg.get("pools", [])}
    check(by.get("reports", {}).get("minActive") == 1 and by["reports"].get("vhost") == "/reports",
          "reports pool lost its keys: %r" % by.get("reports"))
    check(by.get("webhooks", {}).get("queueRegex") == "^webhooks\\.", "webhooks queueRegex: %r" % by.get("webhooks"))
    check(not find(objs, "Secret"), "a Secret is rendered although existingSecret is set")
    env = {e["name"]: e["valueFrom"]["secretKeyRef"]["name"] for e in c.get("env", []) if "valueFrom" in e}
    check(env.get("RABBITMQ_PASSWORD") == "jobpool-rabbitmq", "credentials do not come from existingSecret")


def namespaces(path, nss):
    objs = load(path)
    common(objs, "jobpool")
    rbs = find(objs, "RoleBinding")
    crs = find(objs, "ClusterRole")
    if len(nss) > 1:
        check(len(crs) == 1, "several namespaces need one ClusterRole, got %d" % len(crs))
        cr_rules = rules_of(crs[0]) if crs else {}
        want = {k: v for k, v in WANT_RULES.items() if k[1] != "leases"}
        check(cr_rules == want, "ClusterRole rules: %r" % cr_rules)
        bound = sorted(rb["metadata"]["namespace"] for rb in rbs if rb["roleRef"]["kind"] == "ClusterRole")
        check(bound == sorted(nss), "ClusterRole bound in %r, want %r" % (bound, nss))
        roles = find(objs, "Role")
        check(len(roles) == 1 and rules_of(roles[0]) == {("coordination.k8s.io", "leases"): WANT_RULES[("coordination.k8s.io", "leases")]}
              and roles[0]["metadata"]["namespace"] == nss[0], "the leases Role is not in %s" % nss[0])
    else:
        check(not crs, "one namespace must not render a ClusterRole")
        roles = find(objs, "Role")
        check(len(roles) == 1 and roles[0]["metadata"]["namespace"] == nss[0], "the Role is not in %s" % nss[0])
        check([rb["metadata"]["namespace"] for rb in rbs] == [nss[0]], "RoleBinding namespaces: %r" % rbs)
    check(config_of(objs).get("kubernetes", {}).get("namespace") == nss[0], "config namespace is not %s" % nss[0])


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
