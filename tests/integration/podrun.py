#!/usr/bin/env python3
"""podrun.py: run the controller Deployment's pod as a local process, the way a kubelet would,
for tests on a control plane without a kubelet. Execs the controller (run it in the background
and stop it by pid).

  podrun.py --namespace NS --deployment NAME --binary build/jobpool-controller --workdir DIR
            [--pod-name P] [--metrics-address 127.0.0.1:PORT]

From the API server (admin KUBECONFIG), exactly as installed:
  - the container's command: the image's ENTRYPOINT (read from ./Dockerfile) with its binary
    mapped to --binary, followed by the container's args;
  - its env: literal values, secretKeyRef and configMapKeyRef (read from the namespace),
    fieldRef metadata.name / metadata.namespace (the downward API), envFrom;
  - its volumes: configMap and secret volumes written under DIR at their mountPath (subPath and
    items honoured); paths in the command are mapped the same way;
  - the pod's ServiceAccount token, its CA and namespace, at the in-cluster path
    /var/run/secrets/kubernetes.io/serviceaccount inside a private mount namespace (unshare -m,
    a tmpfs over /run), with KUBERNETES_SERVICE_HOST/PORT naming the API server.
The one deviation, --metrics-address: the pod's own network namespace is the host's loopback
here, so the metrics port is moved to a free loopback port.
"""
import argparse
import base64
import json
import os
import re
import shlex
import subprocess
import sys
import time
import urllib.parse

SA_DIR = "/var/run/secrets/kubernetes.io/serviceaccount"


def kubectl(*args):
    r = subprocess.run([os.environ.get("KUBECTL", "kubectl")] + list(args), capture_output=True,
                       text=True)
    if r.returncode:
        sys.exit("podrun: kubectl %s: %s" % (" ".join(args), r.stderr.strip()))
    return json.loads(r.stdout) if r.stdout.strip() else None


def get(ns, kind, name):
    return kubectl("-n", ns, "get", kind, name, "-o", "json")


def data_of(ns, kind, name):
    o = get(ns, kind, name)
    d = o.get("data") or {}
    if kind == "secret":
        return {k: base64.b64decode(v).decode() for k, v in d.items()}
    return dict(d)


def sa_token(ns, sa):
    """1.20 has no TokenRequest through kubectl: its token controller writes a Secret."""
    for _ in range(80):
        o = get(ns, "serviceaccount", sa)
        names = [s["name"] for s in o.get("secrets") or []]
        if names:
            return data_of(ns, "secret", names[0])
        time.sleep(0.25)
    sys.exit("podrun: ServiceAccount %s/%s has no token Secret" % (ns, sa))


def entrypoint(root):
    text = open(os.path.join(root, "Dockerfile")).read()
    m = re.findall(r"^ENTRYPOINT\s+(\[.*\])\s*$", text, re.M)
    if not m:
        sys.exit("podrun: no ENTRYPOINT in the Dockerfile")
    return json.loads(m[-1])


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--namespace", required=True)
    p.add_argument("--deployment", required=True)
    p.add_argument("--binary", required=True)
    p.add_argument("--workdir", required=True)
    p.add_argument("--pod-name")
    p.add_argument("--metrics-address")
    a = p.parse_args()
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    ns = a.namespace
    dep = get(ns, "deployment", a.deployment)
    spec = dep["spec"]["template"]["spec"]
    ctr = spec["containers"][0]
    pod = a.pod_name or "%s-podrun-%d" % (a.deployment, os.getpid())
    fs = os.path.join(os.path.abspath(a.workdir), "fs")

    def local(path):   # a path inside the pod, under the work dir
        return os.path.join(fs, path.lstrip("/"))

    # Volumes at their mount paths.
    vols = {v["name"]: v for v in spec.get("volumes") or []}
    for m in ctr.get("volumeMounts") or []:
        v = vols[m["name"]]
        if "configMap" in v:
            files = data_of(ns, "configmap", v["configMap"]["name"])
        elif "secret" in v:
            files = data_of(ns, "secret", v["secret"]["secretName"])
        else:
            sys.exit("podrun: volume %s: only configMap and secret volumes are supported" % m["name"])
        items = (v.get("configMap") or v.get("secret")).get("items")
        if items:
            files = {i["path"]: files[i["key"]] for i in items}
        if m.get("subPath"):
            targets = {m["mountPath"]: files[m["subPath"]]}
        else:
            targets = {os.path.join(m["mountPath"], k): val for k, val in files.items()}
        for path, val in targets.items():
            os.makedirs(os.path.dirname(local(path)), exist_ok=True)
            with open(local(path), "w") as f:
                f.write(val)

    # Environment.
    env = {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"}
    server = urllib.parse.urlsplit(os.environ["JOBPOOL_TEST_KUBE_SERVER"])
    env["KUBERNETES_SERVICE_HOST"] = server.hostname
    env["KUBERNETES_SERVICE_PORT"] = str(server.port)
    for ef in ctr.get("envFrom") or []:
        if "secretRef" in ef:
            env.update(data_of(ns, "secret", ef["secretRef"]["name"]))
        elif "configMapRef" in ef:
            env.update(data_of(ns, "configmap", ef["configMapRef"]["name"]))
    for e in ctr.get("env") or []:
        vf = e.get("valueFrom")
        if vf is None:
            env[e["name"]] = e.get("value", "")
        elif "secretKeyRef" in vf:
            env[e["name"]] = data_of(ns, "secret", vf["secretKeyRef"]["name"])[vf["secretKeyRef"]["key"]]
        elif "configMapKeyRef" in vf:
            env[e["name"]] = data_of(ns, "configmap", vf["configMapKeyRef"]["name"])[vf["configMapKeyRef"]["key"]]
        elif "fieldRef" in vf:
            env[e["name"]] = {"metadata.name": pod, "metadata.namespace": ns}[vf["fieldRef"]["fieldPath"]]
        else:
            sys.exit("podrun: env %s: unsupported valueFrom %r" % (e["name"], vf))

    # The ServiceAccount's token, as the kubelet mounts it.
    tok = sa_token(ns, spec.get("serviceAccountName") or "default")
    sadir = os.path.join(os.path.abspath(a.workdir), "sa")
    os.makedirs(sadir, exist_ok=True)
    for k, val in (("token", tok["token"]), ("ca.crt", tok["ca.crt"]), ("namespace", ns)):
        with open(os.path.join(sadir, k), "w") as f:
            f.write(val)

    # The command: the image's entrypoint and the container's args, paths mapped.
    argv = (ctr.get("command") or entrypoint(root)) + (ctr.get("args") or [])
    argv = [a.binary if x.endswith("/jobpool-controller") else
            local(x) if x.startswith("/etc/") else x for x in argv]
    if a.metrics_address is not None:
        argv += ["--metrics-address", a.metrics_address]
    script = ("mount -t tmpfs podrun /run && mkdir -p %s && cp %s/token %s/ca.crt %s/namespace %s/ && "
              "exec \"$@\"" % (SA_DIR, sadir, sadir, sadir, SA_DIR))
    full = ["unshare", "-m", "--propagation", "private", "sh", "-c", script, "podrun"] + argv
    with open(os.path.join(a.workdir, "podrun.cmd"), "w") as f:   # for the test's log: no secrets
        f.write(" ".join(shlex.quote(x) for x in argv) + "\n")
    # The pod's environment only (as a container gets), passed as the environment: never on a
    # command line, where ps would show the password.
    os.execvpe("unshare", full, env)


if __name__ == "__main__":
    main()
