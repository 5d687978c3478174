#!/usr/bin/env python3
"""nodesim.py: a stand-in kubelet for the e2e control plane: binds jobpool's Pods to one Node,
runs each Pod's first container as a local process, and writes the Pod's phase back.

Python 3 standard library only. Talks to the real kube-apiserver over TLS with a bearer token.

  nodesim.py --server https://127.0.0.1:PORT --token-file F --ca CA --worker build/x/jobpool-worker

What it does, in order, for every Pod labelled app.kubernetes.io/managed-by=jobpool in the
namespace (list, then watch from the list's resourceVersion; relist on 410 or a broken watch):
  1. an unscheduled Pod is bound to the Node (pods/binding) while fewer than --pods run;
  2. its first container's command+args run as a process group, with the Pod's env: literal
     values, valueFrom.secretKeyRef / configMapKeyRef / fieldRef, envFrom secretRef /
     configMapRef, $(VAR) expansion; an empty command maps the image through --image-map
     (default: every image -> --worker); JOBPOOL_RESULT_FILE names a temp file; secret
     volumes are written to a per-pod directory, and an env value under a secret volume's
     mountPath points into it (the process runs on this host, not in the image);
  3. pods/status becomes Running, then Succeeded/Failed with the exit code (128+signal when
     killed) and the result file's content as the termination message;
  4. a Pod marked for deletion gets SIGTERM (its first process), SIGKILL (all of its processes:
     its session) after its grace period, and is then removed with gracePeriodSeconds=0.
--start-delay S keeps each new pod Pending S seconds first (a slow node: pods start late).
Faults: --kill-fraction F SIGKILLs that share of tasks --kill-after seconds after start, and
SIGUSR1 SIGKILLs every running task at once. SIGTERM/SIGINT: kill the children, exit 0.
"""

import argparse
import base64
import collections
import http.client
import json
import os
import random
import re
import shutil
import signal
import ssl
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse

UA = "jobpool-nodesim/1"
MAX_MESSAGE = 4096          # the kubelet's cap on a termination message
DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

stop_event = threading.Event()


def now_rfc3339(t=None):
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t if t is not None else time.time()))


class Log:
    def __init__(self, level):
        self.debug_on = level == "debug"
        self.lock = threading.Lock()

    def _emit(self, lvl, msg):
        t = time.time()
        line = "%s.%03d nodesim %s: %s\n" % (time.strftime("%H:%M:%S", time.localtime(t)),
                                            int(t * 1000) % 1000, lvl, msg)
        with self.lock:
            sys.stderr.write(line)
            sys.stderr.flush()

    def info(self, msg):
        self._emit("info", msg)

    def warn(self, msg):
        self._emit("warn", msg)

    def debug(self, msg):
        if self.debug_on:
            self._emit("debug", msg)


class ApiError(Exception):
    def __init__(self, status, text):
        super().__init__("HTTP %s: %s" % (status, text[:300]))
        self.status = status


class Kube:
    """A tiny REST client: one keep-alive connection per thread, bearer token, CA-verified TLS."""

    def __init__(self, server, token, ca, timeout=15.0):
        u = urllib.parse.urlsplit(server)
        self.host = u.hostname
        self.port = u.port or 443
        self.token = token
        self.ctx = ssl.create_default_context(cafile=ca)
        self.timeout = timeout
        self.local = threading.local()
        self.count = 0
        self.count_lock = threading.Lock()

    def _conn(self, fresh=False, timeout=None):
        c = getattr(self.local, "conn", None)
        if c is None or fresh:
            if c is not None:
                c.close()
            c = http.client.HTTPSConnection(self.host, self.port, context=self.ctx,
                                            timeout=timeout or self.timeout)
            self.local.conn = c
        return c

    def _headers(self, ctype=None):
        h = {"Authorization": "Bearer " + self.token, "Accept": "application/json",
             "User-Agent": UA}
        if ctype:
            h["Content-Type"] = ctype
        return h

    def request(self, method, path, body=None, ctype="application/json"):
        """Returns the parsed body of a 2xx answer; raises ApiError or OSError."""
        data = json.dumps(body).encode() if body is not None else None
        with self.count_lock:
            self.count += 1
        for attempt in (0, 1):
            c = self._conn(fresh=attempt > 0)
            try:
                c.request(method, path, body=data, headers=self._headers(ctype if data else None))
                r = c.getresponse()
                raw = r.read()
            except (http.client.HTTPException, OSError):
                c.close()
                self.local.conn = None
                if attempt:
                    raise
                continue
            if 200 <= r.status < 300:
                return json.loads(raw) if raw else {}
            raise ApiError(r.status, raw.decode("utf-8", "replace"))
        raise OSError("unreachable")

    def stream(self, path, timeout):
        """Opens a watch on its own connection; returns (conn, response)."""
        c = http.client.HTTPSConnection(self.host, self.port, context=self.ctx, timeout=timeout)
        c.request("GET", path, headers=self._headers())
        r = c.getresponse()
        if r.status != 200:
            raw = r.read()
            c.close()
            raise ApiError(r.status, raw.decode("utf-8", "replace"))
        return c, r


class Task:
    """One Pod's process on this node."""

    def __init__(self, pod):
        self.uid = pod["metadata"]["uid"]
        self.name = pod["metadata"]["name"]
        self.pod = pod
        self.proc = None
        self.result_file = None
        self.started = 0.0
        self.deleting = False
        self.term_sent = 0.0
        self.grace = 30
        self.kill_at = 0.0
        self.log_fh = None


class NodeSim:
    def __init__(self, a, log):
        self.a = a
        self.log = log
        token = a.token
        if a.token_file:
            with open(a.token_file) as f:
                token = f.read().strip()
        if not token:
            raise SystemExit("nodesim: a token is required (--token-file or --token)")
        self.kube = Kube(a.server, token, a.ca)
        self.ns = a.namespace
        self.node = a.node_name
        self.lock = threading.Lock()
        self.tasks = {}                     # uid -> Task (bound here and not yet finalized)
        self.done = collections.OrderedDict()  # uid -> True, finished here (bounded)
        self.waiting = collections.OrderedDict()  # uid -> pod, unscheduled, awaiting capacity
        self.seen_at = {}  # uid -> when first seen unscheduled (--start-delay)
        self.binding = set()                # uids being bound/started right now
        self.work = collections.deque()
        self.work_cv = threading.Condition(self.lock)
        self.rng = random.Random(a.seed)
        self.image_map = {}
        for m in a.image_map or []:
            img, _, path = m.partition("=")
            if not path:
                raise SystemExit("nodesim: --image-map wants IMAGE=PATH, got %r" % m)
            self.image_map[img] = path
        self.worker = os.path.abspath(a.worker) if a.worker else None
        self.tmp = tempfile.mkdtemp(prefix="jobpool-nodesim.")
        self.stats = collections.Counter()
        if a.events:
            self.events_fh = open(a.events, "a", buffering=1)
        else:
            self.events_fh = None

    # ---- helpers -------------------------------------------------------------------------
    def pods_path(self, name=None, sub=None):
        p = "/api/v1/namespaces/%s/pods" % urllib.parse.quote(self.ns)
        if name:
            p += "/" + urllib.parse.quote(name)
        if sub:
            p += "/" + sub
        return p

    def event(self, kind, task, extra=""):
        if self.events_fh:
            job = task.pod["metadata"].get("labels", {}).get("job-name", "")
            self.events_fh.write("%.3f %s %s %s %s\n" % (time.time(), kind, task.name, job, extra))

    def retry(self, what, fn, deadline_s=180):
        """Calls fn until it succeeds, the object is gone (404), or the deadline passes. Survives
        an API server outage. Returns fn's result or None."""
        t_end = time.time() + deadline_s
        delay = 0.2
        while not stop_event.is_set():
            try:
                return fn()
            except ApiError as e:
                if e.status in (404, 409) and what.startswith(("bind", "delete")):
                    self.log.debug("%s: %s" % (what, e))
                    return None
                if e.status == 404:
                    self.log.info("%s: gone (404)" % what)
                    return None
                if e.status < 500 and e.status != 429:
                    self.log.warn("%s failed: %s" % (what, e))
                    return None
                err = e
            except (OSError, http.client.HTTPException) as e:
                err = e
            if time.time() > t_end:
                self.log.warn("%s: giving up after %d s: %s" % (what, deadline_s, err))
                return None
            self.log.debug("%s: %s; retrying" % (what, err))
            time.sleep(delay)
            delay = min(delay * 2, 2.0)
        return None

    # ---- node ----------------------------------------------------------------------------
    def register_node(self):
        t = now_rfc3339()
        cap = {"cpu": str(self.a.cpus), "memory": "%dGi" % self.a.memory_gib,
               "pods": str(self.a.pods)}
        status = {
            "capacity": cap, "allocatable": cap,
            "conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady",
                            "message": "nodesim is ready", "lastHeartbeatTime": t,
                            "lastTransitionTime": t}],
            "addresses": [{"type": "InternalIP", "address": "127.0.0.1"},
                          {"type": "Hostname", "address": self.node}],
            "nodeInfo": {"machineID": "", "systemUUID": "", "bootID": "", "kernelVersion": "",
                         "osImage": "nodesim", "containerRuntimeVersion": "nodesim://1",
                         "kubeletVersion": "v1.20.2", "kubeProxyVersion": "v1.20.2",
                         "operatingSystem": "linux", "architecture": "amd64"},
        }
        body = {"apiVersion": "v1", "kind": "Node",
                "metadata": {"name": self.node,
                             "labels": {"kubernetes.io/hostname": self.node,
                                        "kubernetes.io/os": "linux",
                                        "jobpool.dev/nodesim": "true"}},
                "status": status}
        try:
            self.kube.request("POST", "/api/v1/nodes", body)
            self.log.info("registered node %s (pods=%d)" % (self.node, self.a.pods))
        except ApiError as e:
            if e.status != 409:
                raise
            self.log.info("node %s exists; updating its status" % self.node)
        self.kube.request("PATCH", "/api/v1/nodes/%s/status" % self.node, {"status": status},
                          ctype="application/merge-patch+json")

    # ---- env -----------------------------------------------------------------------------
    def read_obj(self, kind, name, cache):
        key = (kind, name)
        if key not in cache:
            path = "/api/v1/namespaces/%s/%s/%s" % (self.ns, kind, urllib.parse.quote(name))
            try:
                cache[key] = self.kube.request("GET", path)
            except ApiError as e:
                if e.status != 404:
                    raise
                cache[key] = None
        return cache[key]

    def obj_value(self, obj, kind, key):
        if obj is None:
            return None
        if kind == "secrets":
            v = (obj.get("data") or {}).get(key)
            if v is not None:
                return base64.b64decode(v).decode("utf-8", "replace")
            return (obj.get("stringData") or {}).get(key)
        v = (obj.get("data") or {}).get(key)
        if v is None and key in (obj.get("binaryData") or {}):
            v = base64.b64decode(obj["binaryData"][key]).decode("utf-8", "replace")
        return v

    @staticmethod
    def expand(s, env):
        # $(VAR) -> value when VAR is defined; $$(VAR) -> literal $(VAR); as the kubelet does.
        def sub(m):
            if m.group(0).startswith("$$"):
                return m.group(0)[1:]
            return env.get(m.group(1), m.group(0))
        return re.sub(r"\$\$\([A-Za-z_][A-Za-z0-9_.-]*\)|\$\(([A-Za-z_][A-Za-z0-9_.-]*)\)",
                      sub, s)

    def field_value(self, pod, path):
        meta = pod["metadata"]
        simple = {"metadata.name": meta.get("name"), "metadata.namespace": meta.get("namespace"),
                  "metadata.uid": meta.get("uid"), "spec.nodeName": self.node,
                  "spec.serviceAccountName": pod["spec"].get("serviceAccountName", ""),
                  "status.hostIP": "127.0.0.1", "status.podIP": "127.0.0.1"}
        if path in simple:
            return simple[path]
        m = re.match(r"metadata\.(labels|annotations)\['(.*)'\]$", path)
        if m:
            return (meta.get(m.group(1)) or {}).get(m.group(2), "")
        return ""

    def build_env(self, pod, ctr):
        """The container's environment, as the kubelet would build it. Raises ValueError when a
        non-optional reference cannot be resolved (the kubelet's CreateContainerConfigError)."""
        cache = {}
        env = {"PATH": DEFAULT_PATH, "HOSTNAME": pod["metadata"]["name"], "HOME": "/root"}
        if self.worker:
            env["PATH"] = os.path.dirname(self.worker) + ":" + DEFAULT_PATH
        for ef in ctr.get("envFrom") or []:
            prefix = ef.get("prefix", "")
            for kind, ref in (("secrets", ef.get("secretRef")), ("configmaps", ef.get("configMapRef"))):
                if not ref:
                    continue
                obj = self.read_obj(kind, ref["name"], cache)
                if obj is None:
                    if ref.get("optional"):
                        continue
                    raise ValueError("%s %s not found" % (kind[:-1], ref["name"]))
                keys = set((obj.get("data") or {}).keys())
                for k in sorted(keys):
                    env[prefix + k] = self.obj_value(obj, kind, k)
        for e in ctr.get("env") or []:
            name = e["name"]
            if "value" in e or "valueFrom" not in e:
                env[name] = self.expand(e.get("value", ""), env)
                continue
            vf = e["valueFrom"]
            val = None
            for kind, ref in (("secrets", vf.get("secretKeyRef")),
                              ("configmaps", vf.get("configMapKeyRef"))):
                if not ref:
                    continue
                val = self.obj_value(self.read_obj(kind, ref["name"], cache), kind, ref["key"])
                if val is None:
                    if ref.get("optional"):
                        break
                    raise ValueError("%s %s key %s not found" % (kind[:-1], ref["name"], ref["key"]))
            if vf.get("fieldRef"):
                val = self.field_value(pod, vf["fieldRef"].get("fieldPath", ""))
            if vf.get("resourceFieldRef"):
                val = "0"
            if val is not None:
                env[name] = val
        return env

    def secret_mounts(self, pod, ctr):
        """{mountPath: host dir} for the container's secret volumes, each written out like the
        kubelet's (every key, or the volume's items, as files). Raises ValueError for a missing
        non-optional Secret or key (the kubelet's FailedMount)."""
        vols = {v.get("name"): v for v in pod["spec"].get("volumes") or []}
        out, cache = {}, {}
        for m in ctr.get("volumeMounts") or []:
            sv = (vols.get(m.get("name")) or {}).get("secret")
            if sv is None:
                continue
            obj = self.read_obj("secrets", sv.get("secretName", ""), cache)
            if obj is None:
                if sv.get("optional"):
                    continue
                raise ValueError("secret %s not found (volume %s)" % (sv.get("secretName"), m["name"]))
            items = sv.get("items") or [{"key": k, "path": k} for k in (obj.get("data") or {})]
            d = tempfile.mkdtemp(prefix="vol.", dir=self.tmp)
            for it in items:
                val = self.obj_value(obj, "secrets", it["key"])
                if val is None:
                    raise ValueError("secret %s has no key %s" % (sv.get("secretName"), it["key"]))
                path = os.path.join(d, it.get("path", it["key"]))
                os.makedirs(os.path.dirname(path), exist_ok=True)
                with open(path, "w") as f:
                    f.write(val)
            out[m["mountPath"].rstrip("/")] = d
        return out

    def argv_for(self, ctr, env):
        cmd = [self.expand(x, env) for x in ctr.get("command") or []]
        args = [self.expand(x, env) for x in ctr.get("args") or []]
        if cmd:
            return cmd + args
        image = ctr.get("image", "")
        repo = image.split("@")[0]
        if ":" in repo.rsplit("/", 1)[-1]:
            repo = repo.rsplit(":", 1)[0]
        entry = self.image_map.get(image) or self.image_map.get(repo) or self.image_map.get("*") \
            or self.worker
        if not entry:
            raise ValueError("no entrypoint for image %r (give --worker or --image-map)" % image)
        return [entry] + args

    # ---- pod lifecycle -------------------------------------------------------------------
    def patch_status(self, name, uid, status):
        body = {"metadata": {"uid": uid}, "status": status}
        return self.retry("status %s" % name, lambda: self.kube.request(
            "PATCH", self.pods_path(name, "status"), body, ctype="application/merge-patch+json"))

    def bind_and_start(self, pod):
        meta = pod["metadata"]
        name, uid = meta["name"], meta["uid"]
        task = Task(pod)
        body = {"apiVersion": "v1", "kind": "Binding",
                "metadata": {"name": name, "uid": uid},
                "target": {"apiVersion": "v1", "kind": "Node", "name": self.node}}
        ok = self.retry("bind %s" % name, lambda: self.kube.request(
            "POST", self.pods_path(name, "binding"), body))
        if ok is None:
            with self.lock:
                self.binding.discard(uid)
            return
        self.stats["bound"] += 1
        self.event("bound", task)
        ctrs = pod["spec"].get("containers") or [{}]
        ctr = ctrs[0]
        task.grace = pod["spec"].get("terminationGracePeriodSeconds", 30)
        try:
            env = self.build_env(pod, ctr)
            for mpath, d in self.secret_mounts(pod, ctr).items():
                for k, v in list(env.items()):
                    if v == mpath or v.startswith(mpath + "/"):
                        env[k] = d + v[len(mpath):]
            argv = self.argv_for(ctr, env)
        except (ValueError, ApiError, OSError) as e:
            self.log.warn("pod %s: cannot start: %s" % (name, e))
            self.finish_status(task, 128, "CreateContainerConfigError", str(e)[:MAX_MESSAGE])
            with self.lock:
                self.binding.discard(uid)
            return
        fd, task.result_file = tempfile.mkstemp(prefix="result.", dir=self.tmp)
        os.close(fd)
        # The container's terminationMessagePath (default /dev/termination-log) is this file, as
        # the kubelet mounts one per container; jobpool's kube backend points JOBPOOL_RESULT_FILE
        # at that path, so the worker's "waiting/task/no-task" lands in the termination message.
        tpath = ctr.get("terminationMessagePath") or "/dev/termination-log"
        for k, v in list(env.items()):
            if v == tpath:
                env[k] = task.result_file
        env["JOBPOOL_RESULT_FILE"] = task.result_file
        cwd = ctr.get("workingDir") if os.path.isdir(ctr.get("workingDir") or "") else self.tmp
        out = subprocess.DEVNULL
        if self.a.log_dir:
            task.log_fh = open(os.path.join(self.a.log_dir, name + ".log"), "ab")
            out = task.log_fh
        with self.lock:
            if stop_event.is_set():
                self.binding.discard(uid)
                return
            try:
                task.proc = subprocess.Popen(argv, env=env, cwd=cwd, stdin=subprocess.DEVNULL,
                                             stdout=out, stderr=out, start_new_session=True)
            except OSError as e:
                task.proc = None
                err = e
            else:
                err = None
                task.started = time.time()
                if self.a.kill_fraction > 0 and self.rng.random() < self.a.kill_fraction:
                    task.kill_at = task.started + self.a.kill_after
                self.tasks[uid] = task
            self.binding.discard(uid)
        if err is not None:
            self.log.warn("pod %s: exec %s failed: %s" % (name, argv[0], err))
            self.finish_status(task, 127, "StartError", str(err))
            return
        self.stats["started"] += 1
        self.event("started", task, str(task.proc.pid))
        self.log.info("pod %s: running pid %d: %s" % (name, task.proc.pid, " ".join(argv)[:200]))
        t = now_rfc3339(task.started)
        cname = ctr.get("name", "c")
        self.patch_status(name, uid, {
            "phase": "Running", "startTime": t, "hostIP": "127.0.0.1", "podIP": "127.0.0.1",
            "conditions": [{"type": c, "status": "True", "lastTransitionTime": t}
                           for c in ("Initialized", "Ready", "ContainersReady", "PodScheduled")],
            "containerStatuses": [{"name": cname, "image": ctr.get("image", ""), "imageID": "",
                                   "ready": True, "restartCount": 0, "started": True,
                                   "state": {"running": {"startedAt": t}}}]})

    def finish_status(self, task, code, reason, message):
        ctr = (task.pod["spec"].get("containers") or [{}])[0]
        t = now_rfc3339()
        started = now_rfc3339(task.started) if task.started else t
        phase = "Succeeded" if code == 0 else "Failed"
        term = {"exitCode": code, "reason": reason, "startedAt": started, "finishedAt": t}
        if message:
            term["message"] = message
        self.patch_status(task.name, task.uid, {
            "phase": phase,
            "conditions": [{"type": c, "status": "False", "reason": "PodCompleted",
                            "lastTransitionTime": t} for c in ("Ready", "ContainersReady")],
            "containerStatuses": [{"name": ctr.get("name", "c"), "image": ctr.get("image", ""),
                                   "imageID": "", "ready": False, "restartCount": 0,
                                   "started": False, "state": {"terminated": term}}]})
        self.stats[phase.lower()] += 1

    def finished(self, task, rc):
        code = rc if rc >= 0 else 128 - rc
        reason = "Completed" if code == 0 else ("OOMKilled" if False else "Error")
        message = ""
        if task.result_file:
            try:
                with open(task.result_file, "rb") as f:
                    message = f.read(MAX_MESSAGE).decode("utf-8", "replace")
                os.unlink(task.result_file)
            except OSError:
                pass
        if task.log_fh:
            task.log_fh.close()
        self.event("exited", task, str(code))
        self.log.info("pod %s: exited %d after %.1f s%s" % (
            task.name, code, time.time() - task.started, " (deleting)" if task.deleting else ""))
        if not task.deleting:
            self.finish_status(task, code, reason, message)
        else:
            self.delete_now(task.name, task.uid)
        with self.lock:
            self.tasks.pop(task.uid, None)
            self.done[task.uid] = True
            while len(self.done) > 20000:
                self.done.popitem(last=False)
            self.work_cv.notify_all()

    def delete_now(self, name, uid):
        body = {"kind": "DeleteOptions", "apiVersion": "v1", "gracePeriodSeconds": 0,
                "preconditions": {"uid": uid}}
        self.retry("delete %s" % name, lambda: self.kube.request(
            "DELETE", self.pods_path(name), body))

    # ---- the loops -----------------------------------------------------------------------
    def on_pod(self, etype, pod):
        meta = pod.get("metadata", {})
        uid = meta.get("uid")
        spec = pod.get("spec", {})
        phase = (pod.get("status") or {}).get("phase", "")
        node = spec.get("nodeName") or ""
        with self.lock:
            if etype == "DELETED":
                self.waiting.pop(uid, None)
                t = self.tasks.get(uid)
                if t and t.proc and not t.deleting:
                    t.deleting = True
                    t.deleted_obj = True
                return
            if meta.get("deletionTimestamp"):
                self.waiting.pop(uid, None)
                t = self.tasks.get(uid)
                if t:
                    if not t.deleting:
                        t.deleting = True
                        g = meta.get("deletionGracePeriodSeconds")
                        t.grace = g if g is not None else t.grace
                elif node == self.node and uid not in self.binding:
                    self.work.append(("delete", meta["name"], uid))
                    self.work_cv.notify()
                return
            if uid in self.tasks or uid in self.binding:
                return
            if not node:
                if phase in ("", "Pending") and uid not in self.waiting:
                    self.waiting[uid] = pod
                    self.seen_at.setdefault(uid, time.time())
                    self.work_cv.notify()
                return
            if node == self.node and phase in ("Pending", "Running") and uid not in self.done:
                # Bound here but we have no process for it: we restarted. Its process is lost.
                self.done[uid] = True
                self.work.append(("lost", pod))
                self.work_cv.notify()

    def schedule(self):
        """Moves waiting pods to the work queue while capacity allows. Caller holds the lock."""
        while self.waiting and len(self.tasks) + len(self.binding) < self.a.pods:
            uid = next(iter(self.waiting))
            if time.time() < self.seen_at.get(uid, 0) + self.a.start_delay:
                break  # --start-delay: pods wait in the order they came
            pod = self.waiting.pop(uid)
            self.seen_at.pop(uid, None)
            self.binding.add(uid)
            self.work.append(("bind", pod))
            self.work_cv.notify()

    def worker_loop(self):
        while True:
            with self.lock:
                while not self.work and not stop_event.is_set():
                    self.schedule()
                    if self.work:
                        break
                    self.work_cv.wait(0.5)
                if stop_event.is_set():
                    return
                item = self.work.popleft()
            try:
                if item[0] == "bind":
                    self.bind_and_start(item[1])
                elif item[0] == "finished":
                    self.finished(item[1], item[2])
                elif item[0] == "delete":
                    self.delete_now(item[1], item[2])
                elif item[0] == "lost":
                    t = Task(item[1])
                    self.log.warn("pod %s: bound here before a restart; marking it Failed" % t.name)
                    self.finish_status(t, 137, "NodeSimRestarted", "process lost")
            except Exception as e:  # a bug here must not stop the node
                self.log.warn("work item %s failed: %r" % (item[0], e))

    def reaper_loop(self):
        """Polls the children: exits, deletion grace periods, fault kills."""
        while not stop_event.is_set():
            now = time.time()
            with self.lock:
                tasks = list(self.tasks.values())
            for t in tasks:
                if t.proc is None or getattr(t, "reaped", False):
                    continue
                rc = t.proc.poll()
                if rc is not None:
                    t.reaped = True
                    # When a container's first process exits, the rest of it dies too.
                    self.killpg(t, signal.SIGKILL)
                    with self.lock:
                        self.work.append(("finished", t, rc))
                        self.work_cv.notify()
                    continue
                if t.deleting:
                    if not t.term_sent:
                        t.term_sent = now
                        self.log.info("pod %s: deleted; SIGTERM, grace %s s" % (t.name, t.grace))
                        self.killpg(t, signal.SIGTERM)
                    elif now - t.term_sent >= t.grace:
                        self.killpg(t, signal.SIGKILL)
                elif t.kill_at and now >= t.kill_at:
                    t.kill_at = 0
                    self.log.info("pod %s: fault injection: SIGKILL" % t.name)
                    self.stats["fault_killed"] += 1
                    self.killpg(t, signal.SIGKILL)
            time.sleep(0.05)

    @staticmethod
    def session_pids(sid):
        """Every process in session sid: the container's processes (each task starts its own
        session), even those its entrypoint moved to another process group."""
        pids = []
        for d in os.listdir("/proc"):
            if not d.isdigit():
                continue
            try:
                with open("/proc/%s/stat" % d) as f:
                    st = f.read().rsplit(")", 1)[1].split()
            except (OSError, IndexError):
                continue
            if int(st[3]) == sid:
                pids.append(int(d))
        return pids

    @classmethod
    def killpg(cls, t, sig):
        """SIGTERM goes to the entrypoint only, as the kubelet's does; SIGKILL to every process
        of the container, as a container runtime's does."""
        targets = [t.proc.pid] if sig != signal.SIGKILL else cls.session_pids(t.proc.pid)
        for pid in targets:
            try:
                os.kill(pid, sig)
            except (ProcessLookupError, PermissionError):
                pass

    def kill_all(self, sig, why):
        with self.lock:
            tasks = [t for t in self.tasks.values() if t.proc and t.proc.poll() is None]
        for t in tasks:
            self.killpg(t, sig)
        if tasks:
            self.log.info("%s: sent signal %d to %d tasks" % (why, sig, len(tasks)))
        return len(tasks)

    def watch_loop(self):
        sel = urllib.parse.quote(self.a.selector)
        rv = None
        backoff = 0.25
        while not stop_event.is_set():
            try:
                if rv is None:
                    lst = self.kube.request("GET", self.pods_path() + "?labelSelector=" + sel)
                    rv = lst["metadata"]["resourceVersion"]
                    live = set()
                    for p in lst.get("items", []):
                        live.add(p["metadata"]["uid"])
                        self.on_pod("ADDED", p)
                    with self.lock:   # pods deleted while we were not watching
                        for uid in list(self.waiting):
                            if uid not in live:
                                self.waiting.pop(uid)
                        for uid, t in self.tasks.items():
                            if uid not in live and not t.deleting:
                                t.deleting = True
                    self.log.info("listed %d pods at resourceVersion %s" % (len(live), rv))
                path = (self.pods_path() + "?watch=1&allowWatchBookmarks=true&timeoutSeconds=%d"
                        "&labelSelector=%s&resourceVersion=%s" % (self.a.watch_timeout, sel, rv))
                conn, resp = self.kube.stream(path, timeout=self.a.watch_timeout + 30)
                self.kube.count += 1
                backoff = 0.25
                try:
                    while not stop_event.is_set():
                        line = resp.readline()
                        if not line:
                            break
                        ev = json.loads(line)
                        et, obj = ev.get("type"), ev.get("object", {})
                        if et == "ERROR":
                            if obj.get("code") == 410:
                                self.log.info("watch expired (410); relisting")
                                rv = None
                            else:
                                self.log.warn("watch error: %s" % obj.get("message"))
                            break
                        rv = obj.get("metadata", {}).get("resourceVersion", rv)
                        if et == "BOOKMARK":
                            continue
                        self.on_pod(et, obj)
                finally:
                    conn.close()
            except ApiError as e:
                if e.status == 410:
                    rv = None
                    continue
                self.log.warn("watch: %s; retrying in %.1f s" % (e, backoff))
                stop_event.wait(backoff)
                backoff = min(backoff * 2, 2.0)
            except (OSError, http.client.HTTPException, ValueError) as e:
                self.log.warn("watch: %s; retrying in %.1f s" % (e or type(e).__name__, backoff))
                stop_event.wait(backoff)
                backoff = min(backoff * 2, 2.0)

    def run(self):
        self.register_node()
        threads = [threading.Thread(target=self.worker_loop, daemon=True, name="work%d" % i)
                   for i in range(self.a.threads)]
        threads.append(threading.Thread(target=self.reaper_loop, daemon=True, name="reaper"))
        threads.append(threading.Thread(target=self.watch_loop, daemon=True, name="watch"))
        for t in threads:
            t.start()
        last = time.time()
        while not stop_event.wait(0.5):
            if self.a.stats_interval and time.time() - last >= self.a.stats_interval:
                last = time.time()
                with self.lock:
                    n, w = len(self.tasks), len(self.waiting)
                self.log.info("running %d, waiting %d, %s, api requests %d" % (
                    n, w, dict(self.stats), self.kube.count))
        # Shutdown: our children go with us.
        if self.kill_all(signal.SIGTERM, "shutdown"):
            t_end = time.time() + 3
            while time.time() < t_end:
                with self.lock:
                    alive = [t for t in self.tasks.values() if t.proc and t.proc.poll() is None]
                if not alive:
                    break
                time.sleep(0.05)
            self.kill_all(signal.SIGKILL, "shutdown")
        with self.lock:
            for t in self.tasks.values():
                if t.proc:
                    t.proc.wait()
        self.log.info("stopped: %s" % dict(self.stats))
        shutil.rmtree(self.tmp, ignore_errors=True)


def main():
    p = argparse.ArgumentParser(description="A stand-in kubelet for the jobpool e2e tests.")
    p.add_argument("--server", default=os.environ.get("JOBPOOL_TEST_KUBE_SERVER"))
    p.add_argument("--token-file", help="file holding the bearer token")
    p.add_argument("--token", default=os.environ.get("JOBPOOL_TEST_KUBE_TOKEN"),
                   help="bearer token (default $JOBPOOL_TEST_KUBE_TOKEN)")
    p.add_argument("--ca", default=os.environ.get("JOBPOOL_TEST_KUBE_CA"))
    p.add_argument("--namespace", default="default")
    p.add_argument("--node-name", default="nodesim-0")
    p.add_argument("--selector", default="app.kubernetes.io/managed-by=jobpool")
    p.add_argument("--worker", help="jobpool-worker binary: the entrypoint of every image")
    p.add_argument("--image-map", action="append", metavar="IMAGE=PATH",
                   help="entrypoint of IMAGE (with or without tag; * for any); repeatable")
    p.add_argument("--pods", type=int, default=110, help="pods run at once (node capacity)")
    p.add_argument("--cpus", type=int, default=64)
    p.add_argument("--memory-gib", type=int, default=256)
    p.add_argument("--threads", type=int, default=4, help="API worker threads")
    p.add_argument("--kill-fraction", type=float, default=0.0,
                   help="SIGKILL this share of tasks --kill-after s after they start")
    p.add_argument("--kill-after", type=float, default=0.5)
    p.add_argument("--start-delay", type=float, default=0.0,
                   help="keep each new pod Pending this many seconds before binding it")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--log-dir", help="write each pod's stdout+stderr to DIR/POD.log")
    p.add_argument("--events", help="append 'time kind pod job extra' lines to this file")
    p.add_argument("--watch-timeout", type=int, default=300)
    p.add_argument("--stats-interval", type=float, default=0)
    p.add_argument("--log-level", default="info", choices=["debug", "info"])
    a = p.parse_args()
    if not a.server or not a.ca:
        p.error("--server and --ca are required (or JOBPOOL_TEST_KUBE_SERVER/_CA)")
    log = Log(a.log_level)
    sim = NodeSim(a, log)

    def on_term(sig, frame):
        stop_event.set()

    def on_usr1(sig, frame):
        # From a signal handler only set a flag-like action: the kill is async-safe enough here
        # (os.killpg), and the reaper reports the exits.
        threading.Thread(target=sim.kill_all, args=(signal.SIGKILL, "SIGUSR1"), daemon=True).start()

    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, on_term)
    signal.signal(signal.SIGUSR1, on_usr1)
    try:
        sim.run()
    except (ApiError, OSError) as e:
        log.warn("fatal: %s" % e)
        stop_event.set()
        sim.kill_all(signal.SIGKILL, "fatal")
        shutil.rmtree(sim.tmp, ignore_errors=True)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
