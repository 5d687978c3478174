#!/usr/bin/env python3
"""chart_limits.py HELM CHART CONTROLLER: the chart and the controller agree at every limit.

For each row of controller/src/config_limits.h that the chart exposes, and for each value just
below, at, and just above both ends of the range, the same value goes to both sides:
  - the chart: `helm template` with the value set (schema + templates/_limits.tpl + validate);
  - the controller: the chart's default rendered config with the same key set to the same
    value, through `jobpool-controller --check-config`.
A case fails when one side accepts what the other rejects. Then a list of named cases (the
ones seen to disagree before: long pool names, 50ms, no jobTemplate, leaseDuration below
renewDeadline, maxActiveTotal below the sum of minActive, 1m30s, ttlSecondsAfterFinished null,
...). Prints one line per case; exit 1 on any disagreement.
"""
import copy
import os
import re
import subprocess
import sys
import tempfile

import yaml

HELM, CHART, CTRL = sys.argv[1:4]
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(ROOT, "charts"))
import limits  # noqa: E402  (the generator's own reading of the table)

tmp = tempfile.mkdtemp()
fails = 0
cases = 0


def helm(values):
    p = os.path.join(tmp, "values.yaml")
    with open(p, "w") as f:
        yaml.safe_dump(values, f)
    r = subprocess.run([HELM, "template", "jobpool", CHART, "-n", "jobpool", "-f", p,
                        "--show-only", "templates/configmap.yaml"], capture_output=True, text=True)
    lines = r.stderr.strip().splitlines()
    m = [re.sub(r".*execution error at \([^)]*\): ", "", x) for x in lines if "execution error" in x]
    msg = (m or [x.strip() for x in lines if "- at '" in x] or lines or [""])[0]
    return r.returncode == 0, msg, r.stdout


def controller(config):
    p = os.path.join(tmp, "config.yaml")
    with open(p, "w") as f:
        yaml.safe_dump(config, f, sort_keys=False)
    r = subprocess.run([CTRL, "--check-config", p], capture_output=True, text=True)
    return r.returncode == 0, (r.stderr.strip().splitlines() or [""])[-1]


ok, msg, out = helm({})
if not ok:
    sys.exit("chart_limits: the default values do not render: " + msg)
BASE_CONFIG = yaml.safe_load(yaml.safe_load(out)["data"]["config.yaml"])
BASE_VALUES = yaml.safe_load(subprocess.run([HELM, "show", "values", CHART], capture_output=True,
                                            text=True, check=True).stdout)


def put(doc, key, value):
    """Set a key path; pools.X sets X in the first pool; value DELETE removes the key."""
    parts = key.split(".")
    if parts[0] == "pools" and len(parts) == 2:
        doc, parts = doc["pools"][0], parts[1:]
    for p in parts[:-1]:
        doc = doc.setdefault(p, {})
    if value == "DELETE":
        doc.pop(parts[-1], None)
    else:
        doc[parts[-1]] = value


def case(what, sets):
    """sets: [(key path, value)], applied alike to the values and to the rendered config."""
    global fails, cases
    cases += 1
    values, config = copy.deepcopy(BASE_VALUES), copy.deepcopy(BASE_CONFIG)
    for key, value in sets:
        if key == "pools" and isinstance(value, list):
            values["pools"] = value
            config["pools"] = copy.deepcopy(value)
        else:
            put(values, key, value)
            put(config, key, value)
    h_ok, h_msg, _ = helm(values)
    c_ok, c_msg = controller(config)
    verdict = lambda ok_: "accepts" if ok_ else "rejects"
    if h_ok == c_ok:
        print("ok   - %s: both %s%s" % (what, verdict(h_ok), "" if h_ok else " (chart: %s)" % h_msg[-110:]))
    else:
        fails += 1
        print("FAIL - %s: the chart %s, the controller %s\n    chart: %s\n    controller: %s"
              % (what, verdict(h_ok), verdict(c_ok), h_msg, c_msg))


def pools(n):
    p = BASE_VALUES["pools"][0]
    return [dict(p, name="p%d" % i, queue="q%d" % i) for i in range(n)]


def ms_text(ms):
    return "%dms" % ms


# Values a boundary needs around it so that only the limit under test can decide (a renewDeadline
# can only be tested against a longer leaseDuration, a minActive against a larger maxActive).
CONTEXT = {
    "leaderElection.leaseDuration": [("leaderElection.renewDeadline", "500ms"), ("leaderElection.retryPeriod", "100ms")],
    "leaderElection.renewDeadline": [("leaderElection.leaseDuration", "8760h"), ("leaderElection.retryPeriod", "100ms")],
    "leaderElection.retryPeriod": [("leaderElection.leaseDuration", "8760h"), ("leaderElection.renewDeadline", "8759h")],
    "pools.minActive": [("pools.maxActive", 100000)],
}

# -- every limit of the table, both sides of both ends ------------------------------------------
schema = __import__("json").load(open(os.path.join(CHART, "values.schema.json")))
for key, kind, lo, hi in limits.table():
    if limits.node(schema, key) is None:
        print("#    %s: not a chart value (the controller's own limit only)" % key)
        continue
    if kind == "INT":
        vals = [lo - 1, lo, hi, hi + 1]
    elif kind == "DURATION":
        vals = [ms_text(lo - 1), ms_text(lo), "8760h", "8760h1ms"]
    elif kind == "LENGTH":
        ch = "q" if key.endswith("queue") else "a"
        vals = [ch * n for n in (lo - 1, lo, hi, hi + 1)]
    else:  # ITEMS: the pools list
        for n in (lo - 1, lo, hi, hi + 1):
            case("pools: %d pools" % n, [("pools", pools(n))])
        continue
    for v in vals:
        case("%s = %s" % (key, v if len(str(v)) < 20 else "%d characters" % len(v)), CONTEXT.get(key, []) + [(key, v)])

# -- named cases ---------------------------------------------------------------------------------
case("a pool name of 53 characters", [("pools.name", "a" * 53)])
case("a pool name of 63 characters", [("pools.name", "a" * 63)])
case("pollInterval 50ms", [("pollInterval", "50ms")])
case("pollInterval 1m30s", [("pollInterval", "1m30s")])
case("pollInterval 0", [("pollInterval", "0")])
case("pendingTimeout 1m30s", [("pools.pendingTimeout", "1m30s")])
case("a pool without jobTemplate", [("pools.jobTemplate", "DELETE")])
case("leaseDuration shorter than renewDeadline", [("leaderElection.leaseDuration", "5s")])
case("renewDeadline equal to leaseDuration", [("leaderElection.renewDeadline", "15s")])
case("retryPeriod equal to renewDeadline", [("leaderElection.retryPeriod", "10s")])
case("leaseDuration 2m", [("leaderElection.leaseDuration", "2m")])
case("maxActiveTotal below the sum of minActive",
     [("pools", [dict(p, minActive=3) for p in pools(2)]), ("maxActiveTotal", 5)])
case("maxActiveTotal at the sum of minActive",
     [("pools", [dict(p, minActive=3) for p in pools(2)]), ("maxActiveTotal", 6)])
case("maxActiveTotal 0 (no cap) with minActive", [("pools.minActive", 3), ("maxActiveTotal", 0)])
case("minActive above maxActive", [("pools.minActive", 11)])
case("ttlSecondsAfterFinished null", [("pools.ttlSecondsAfterFinished", None)])
case("ttlSecondsAfterFinished 0", [("pools.ttlSecondsAfterFinished", 0)])
case("two pools on one queue", [("pools", [dict(p, queue="same") for p in pools(2)])])
case("two pools on one queue in two vhosts",
     [("pools", [dict(p, queue="same", vhost="/v%d" % i) for i, p in enumerate(pools(2))])])
case("a duration without a unit", [("pollInterval", "5")])
case("a pool name with a capital", [("pools.name", "Thumbs")])

print("chart-limits: %d cases, %d disagreements" % (cases, fails))
sys.exit(1 if fails else 0)
