/* test_config.c: loading, defaults and every way a config can be wrong, each asserted by its exact
 * one-line message with file:line:col and key path; credentials from env and file. */
#define _POSIX_C_SOURCE 200809L
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>
#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "config.h"
#include "err.h"
#include "log.h"
#include "podsec.h"
#include "util.h"

struct bad_case {
    const char *name;
    const char *yaml;
    const char *err;
};

/* Every case fails with exactly this message, loaded as if from a file named config.yaml. */
static const struct bad_case bad_cases[] = {
    {"syntax_flow",
         "pools: [\n"
         "  {name: a\n",
     "config.yaml:3:1: yaml: did not find expected ',' or '}' (while parsing a flow mapping at 2:3)"},
    {"syntax_tab",
         "pools:\n"
         "\t- name: a\n",
     "config.yaml:2:1: yaml: found character that cannot start any token (while scanning for the next token at 2:1)"},
    {"syntax_mapping_values",
         "backend: local\n"
         "pools: x: y\n",
     "config.yaml:2:9: yaml: mapping values are not allowed in this context"},
    {"empty",
         "",
     "config.yaml:1:1: (root): the file is empty; it needs at least 'pools'"},
    {"comment_only",
         "# nothing\n"
         "\n",
     "config.yaml:1:1: (root): the file is empty; it needs at least 'pools'"},
    {"root_not_map",
         "- a\n"
         "- b\n",
     "config.yaml:1:1: (root): expected a mapping, got a sequence"},
    {"root_scalar",
         "hello\n",
     "config.yaml:1:1: (root): expected a mapping, got 'hello'"},
    {"two_docs",
         "backend: local\n"
         "pools:\n"
         "  - name: a\n"
         "    queue: q\n"
         "    maxActive: 5\n"
         "    worker: {command: [t]}\n"
         "---\n"
         "backend: kube\n",
     "config.yaml:8:1: (root): more than one YAML document; the config is one document"},
    {"no_pools",
         "backend: local\n",
     "config.yaml:1:1: pools: at least one pool is required"},
    {"pools_empty",
         "backend: local\n"
         "pools: []\n",
     "config.yaml:2:8: pools: at least one pool is required"},
    {"pools_not_seq",
         "backend: local\n"
         "pools: {name: a}\n",
     "config.yaml:2:8: pools: expected a sequence of pools, got a mapping"},
    {"unknown_root",
         "backend: local\n"
         "polInterval: 2s\n"
         "pools:\n"
         "  - name: a\n"
         "    queue: q\n"
         "    maxActive: 5\n"
         "    worker: {command: [t]}\n",
     "config.yaml:2:1: polInterval: unknown key; did you mean 'pollInterval'?"},
    {"unknown_keda",
         "backend: local\n"
         "pollingInterval: 2s\n"
         "pools:\n"
         "  - name: a\n"
         "    queue: q\n"
         "    maxActive: 5\n"
         "    worker: {command: [t]}\n",
     "config.yaml:2:1: pollingInterval: unknown key; did you mean 'pollInterval'?"},
    {"unknown_pool",
         "backend: local\n"
         "pools:\n"
         "  - name: a\n"
         "    queue: q\n"
         "    maxActiv: 5\n"
         "    worker: {command: [t]}\n",
     "config.yaml:5:5: pools[0].maxActiv: unknown key; did you mean 'maxActive'?"},
    {"unknown_snake",
         "backend: local\n"
         "pools:\n"
         "  - name: a\n"
         "    queue: q\n"
         "    max_active: 5\n"
         "    worker: {command: [t]}\n",
     "config.yaml:5:5: pools[0].max_active: unknown key; did you mean 'maxActive'?"},
    {"unknown_far",
         "backend: local\n"
         "foo: 1\n"
         "pools:\n"
         "  - name: a\n"
         "    queue: q\n"
         "    maxActive: 5\n"
         "    worker: {command: [t]}\n",
     "config.yaml:2:1: foo: unknown key; expected one of: pollInterval, maxActiveTotal, backend, log, metrics, rabbitmq, kubernetes, leaderElection, pools"},
    {"unknown_rabbit",
         "backend: local\n"
         "rabbitmq:\n"
         "  pasword: {env: X}\n"
         "pools:\n"
         "  - name: a\n"
         "    queue: q\n"
         "    maxActive: 5\n"
         "    worker: {command: [t]}\n",
     "config.yaml:3:3: rabbitmq.pasword: unknown key; did you mean 'password'?"},
    {"dup_key",
         "backend: local\n"
         "pools:\n"
         "  - name: a\n"
         "    queue: q\n"
         "    maxActive: 5\n"
         "    maxActive: 6\n"
         "    worker: {command: [t]}\n",
     "config.yaml:6:5: pools[0].maxActive: duplicate key (first at line 5)"},
    {"int_string",
         "backend: local\n"
         "pools:\n"
         "  - name: a\n"
         "    queue: q\n"
         "    maxActive: ten\n"
         "    worker: {command: [t]}\n",
     "config.yaml:5:16: pools[0].maxActive: expected an integer, got 'ten'"},
    {"int_quoted",
         "backend: local\n"
         "pools:\n"
         "  - name: a\n"
         "    queue: q\n"
         "    maxActive: \"5\"\n"
         "    worker: {command: [t]}\n",
     "config.yaml:5:16: pools[0].maxActive: expected an integer, got the quoted string '5' (remove the quotes)"},
    {"int_map",
         "backend: local\n"
         "pools:\n"
         "  - name: a\n"
         "    queue: q\n"
         "    maxActive: {x: 1}\n"
         "    worker: {command: [t]}\n",
     "config.yaml:5:16: pools[0].maxActive: expected an integer, got a mapping"},
    {"int_float",
         "backend: local\n"
         "pools:\n"
         "  - name: a\n"
         "    queue: q\n"
         "    maxActive: 1.5\n"
         "    worker: {command: [t]}\n",
     "config.yaml:5:16: pools[0].maxActive: expected an integer, got '1.5'"},
    {"int_null",
         "backend: local\n"
         "pools:\n"
         "  - name: a\n"
         "    queue: q\n"
         "    maxActive:\n"
         "    worker: {command: [t]}\n",
     "config.yaml:5:15: pools[0].maxActive: expected an integer, got null"},
    {"int_huge",
         "backend: local\n"
         "pools:\n"
         "  - name: a\n"
         "    queue: q\n"
         "    maxActive: 99999999999999999999\n"
         "    worker: {command: [t]}\n",
     "config.yaml:5:16: pools[0].maxActive: integer out of range, got '99999999999999999999'"},
    {"str_map",
         "backend: local\n"
         "pools:\n"
         "  - name: {x: 1}\n"
         "    queue: q\n"
         "    maxActive: 5\n"
         "    worker: {command: [t]}\n",
     "config.yaml:3:11: pools[0].name: expected a string, got a mapping"},
    {"str_seq",
         "backend: local\n"
         "pools:\n"
         "  - name: a\n"
         "    queue: [q]\n"
         "    maxActive: 5\n"
         "    worker: {command: [t]}\n",
     "config.yaml:4:12: pools[0].queue: expected a string, got a sequence"},
    {"bool_bad",
         "backend: kube\n"
         "kubernetes:\n"
         "  inCluster: yes\n"
         "pools:\n"
         "  - name: a\n"
         "    queue: q\n"
         "    maxActive: 5\n",
     "config.yaml:3:14: kubernetes.inCluster: expected true or false, got 'yes'"},
    {"dur_bad",
         "backend: local\n"
         "pollInterval: 5 minutes\n"
         "pools:\n"
         "  - name: a\n"
         "    queue: q\n"
         "    maxActive: 5\n"
         "    worker: {command: [t]}\n",
     "config.yaml:2:15: pollInterval: expected a duration such as 500ms, 2s, 5m or 1h, got '5 minutes'"},
    {"dur_nounit",
         "backend: local\n"
         "pollInterval: 5\n"
         "pools:\n"
         "  - name: a\n"
         "    queue: q\n"
         "    maxActive: 5\n"
         "    worker: {command: [t]}\n",
     "config.yaml:2:15: pollInterval: a duration needs a unit, such as 5s or 5ms; got '5'"},
    {"dur_neg",
         "backend: local\n"
         "pools:\n"
         "  - name: a\n"
         "    queue: q\n"
         "    maxActive: 5\n"
         "    idleTimeout: -1s\n"
         "    worker: {command: [t]}\n",
     "config.yaml:6:18: pools[0].idleTimeout: expected a duration such as 500ms, 2s, 5m or 1h, got '-1s'"},
    {"dur_zero",
         "backend: local\n"
         "pools:\n"
         "  - name: a\n"
         "    queue: q\n"
         "    maxActive: 5\n"
         "    pendingTimeout: 0\n"
         "    worker: {command: [t]}\n",
     "config.yaml:6:21: pools[0].pendingTimeout: must be at least 1s, got 0"},
    {"dur_huge",
         "backend: local\n"
         "pollInterval: 99999999h\n"
         "pools:\n"
         "  - name: a\n"
         "    queue: q\n"
         "    maxActive: 5\n"
         "    worker: {command: [t]}\n",
     "config.yaml:2:15: pollInterval: duration out of range (at most 8760h), got '99999999h'"},
    {"max_neg",
         "backend: local\n"
         "pools:\n"
         "  - name: a\n"
         "    queue: q\n"
         "    maxActive: 5\n"
         "    worker: {command: [t]}\n"
         "  - name: b\n"
         "    queue: r\n"
         "    maxActive: -3\n"
         "    worker: {command: [t]}\n",
     "config.yaml:9:16: pools[1].maxActive: must be >= 1, got -3"},
    {"max_zero",
         "backend: local\n"
         "pools:\n"
         "  - name: a\n"
         "    queue: q\n"
         "    maxActive: 0\n"
         "    worker: {command: [t]}\n",
     "config.yaml:5:16: pools[0].maxActive: must be >= 1, got 0"},
    {"max_missing",
         "backend: local\n"
         "pools:\n"
         "  - name: a\n"
         "    queue: q\n"
         "    worker: {command: [t]}\n",
     "config.yaml:3:5: pools[0].maxActive: required key is missing"},
    {"min_gt_max",
         "backend: local\n"
         "pools:\n"
         "  - name: a\n"
         "    queue: q\n"
         "    maxActive: 5\n"
         "    minActive: 6\n"
         "    worker: {command: [t]}\n",
     "config.yaml:6:16: pools[0].minActive: must be <= maxActive (5), got 6"},
    {"min_neg",
         "backend: local\n"
         "pools:\n"
         "  - name: a\n"
         "    queue: q\n"
         "    maxActive: 5\n"
         "    minActive: -1\n"
         "    worker: {command: [t]}\n",
     "config.yaml:6:16: pools[0].minActive: must be >= 0, got -1"},
    {"start_zero",
         "backend: local\n"
         "pools:\n"
         "  - name: a\n"
         "    queue: q\n"
         "    maxActive: 5\n"
         "    maxStartPerTick: 0\n"
         "    worker: {command: [t]}\n",
     "config.yaml:6:22: pools[0].maxStartPerTick: must be >= 1, got 0"},
    {"mpw_zero",
         "backend: local\n"
         "pools:\n"
         "  - name: a\n"
         "    queue: q\n"
         "    maxActive: 5\n"
         "    messagesPerWorker: 0\n"
         "    worker: {command: [t]}\n",
     "config.yaml:6:24: pools[0].messagesPerWorker: must be >= 1, got 0"},
    {"hist_neg",
         "backend: local\n"
         "pools:\n"
         "  - name: a\n"
         "    queue: q\n"
         "    maxActive: 5\n"
         "    failedHistory: -1\n"
         "    worker: {command: [t]}\n",
     "config.yaml:6:20: pools[0].failedHistory: must be >= 0, got -1"},
    {"ttl_neg",
         "backend: local\n"
         "pools:\n"
         "  - name: a\n"
         "    queue: q\n"
         "    maxActive: 5\n"
         "    ttlSecondsAfterFinished: -5\n"
         "    worker: {command: [t]}\n",
     "config.yaml:6:30: pools[0].ttlSecondsAfterFinished: must be >= 0, got -5"},
    {"total_neg",
         "backend: local\n"
         "maxActiveTotal: -1\n"
         "pools:\n"
         "  - name: a\n"
         "    queue: q\n"
         "    maxActive: 5\n"
         "    worker: {command: [t]}\n",
     "config.yaml:2:17: maxActiveTotal: must be >= 0, got -1"},
    {"total_lt_min",
         "backend: local\n"
         "maxActiveTotal: 3\n"
         "pools:\n"
         "  - name: a\n"
         "    queue: q\n"
         "    maxActive: 5\n"
         "    minActive: 2\n"
         "    worker: {command: [t]}\n"
         "  - name: b\n"
         "    queue: r\n"
         "    maxActive: 5\n"
         "    minActive: 2\n"
         "    worker: {command: [t]}\n",
     "config.yaml:2:17: maxActiveTotal: must be >= the sum of minActive over all pools (4), got 3"},
    {"dup_name",
         "backend: local\n"
         "pools:\n"
         "  - name: a\n"
         "    queue: q\n"
         "    maxActive: 5\n"
         "    worker: {command: [t]}\n"
         "  - name: a\n"
         "    queue: r\n"
         "    maxActive: 5\n"
         "    worker: {command: [t]}\n",
     "config.yaml:7:11: pools[1].name: duplicate pool name 'a' (first at line 3)"},
    {"dup_queue",
         "backend: local\n"
         "pools:\n"
         "  - name: a\n"
         "    queue: q\n"
         "    maxActive: 5\n"
         "    worker: {command: [t]}\n"
         "  - name: b\n"
         "    queue: q\n"
         "    maxActive: 5\n"
         "    worker: {command: [t]}\n",
     "config.yaml:8:12: pools[1].queue: queue 'q' in vhost '/' is already used by pool 'a'"},
    {"no_queue",
         "backend: local\n"
         "pools:\n"
         "  - name: a\n"
         "    maxActive: 5\n"
         "    worker: {command: [t]}\n",
     "config.yaml:3:5: pools[0]: one of 'queue' or 'queueRegex' is required"},
    {"both_queue",
         "backend: local\n"
         "pools:\n"
         "  - name: a\n"
         "    queue: q\n"
         "    queueRegex: '^q'\n"
         "    maxActive: 5\n"
         "    worker: {command: [t]}\n",
     "config.yaml:5:5: pools[0].queueRegex: 'queue' and 'queueRegex' are mutually exclusive; set one"},
    {"bad_regex",
         "backend: local\n"
         "pools:\n"
         "  - name: a\n"
         "    queueRegex: '^(q'\n"
         "    maxActive: 5\n"
         "    worker: {command: [t]}\n",
     "config.yaml:4:17: pools[0].queueRegex: invalid regular expression: Unmatched ( or \\("},
    {"empty_queue",
         "backend: local\n"
         "pools:\n"
         "  - name: a\n"
         "    queue: ''\n"
         "    maxActive: 5\n"
         "    worker: {command: [t]}\n",
     "config.yaml:4:12: pools[0].queue: must not be empty"},
    {"name_missing",
         "backend: local\n"
         "pools:\n"
         "  - queue: q\n"
         "    maxActive: 5\n"
         "    worker: {command: [t]}\n",
     "config.yaml:3:5: pools[0].name: required key is missing"},
    {"name_upper",
         "backend: local\n"
         "pools:\n"
         "  - name: Thumbs_1\n"
         "    queue: q\n"
         "    maxActive: 5\n"
         "    worker: {command: [t]}\n",
     "config.yaml:3:11: pools[0].name: must be a DNS-1123 label (lowercase letters, digits and '-', starting and ending with a letter or digit), got 'Thumbs_1'"},
    {"name_dash",
         "backend: local\n"
         "pools:\n"
         "  - name: -a\n"
         "    queue: q\n"
         "    maxActive: 5\n"
         "    worker: {command: [t]}\n",
     "config.yaml:3:11: pools[0].name: must be a DNS-1123 label (lowercase letters, digits and '-', starting and ending with a letter or digit), got '-a'"},
    {"name_long",
         "backend: local\n"
         "pools:\n"
         "  - name: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\n"
         "    queue: q\n"
         "    maxActive: 5\n"
         "    worker: {command: [t]}\n",
     "config.yaml:3:11: pools[0].name: must be at most 52 characters (it prefixes generated Job names), got 53"},
    {"backend_bad",
         "backend: docker\n"
         "pools:\n"
         "  - name: a\n"
         "    queue: q\n"
         "    maxActive: 5\n",
     "config.yaml:1:10: backend: must be one of kube, local; got 'docker'"},
    {"format_bad",
         "backend: local\n"
         "log: {format: xml}\n"
         "pools:\n"
         "  - name: a\n"
         "    queue: q\n"
         "    maxActive: 5\n"
         "    worker: {command: [t]}\n",
     "config.yaml:2:15: log.format: must be one of text, json; got 'xml'"},
    {"level_bad",
         "backend: local\n"
         "log:\n"
         "  level: verbose\n"
         "pools:\n"
         "  - name: a\n"
         "    queue: q\n"
         "    maxActive: 5\n"
         "    worker: {command: [t]}\n",
     "config.yaml:3:10: log.level: must be one of debug, info, warn, error; got 'verbose'"},
    {"depth_bad",
         "backend: local\n"
         "rabbitmq:\n"
         "  depthSource: queue\n"
         "pools:\n"
         "  - name: a\n"
         "    queue: q\n"
         "    maxActive: 5\n"
         "    worker: {command: [t]}\n",
     "config.yaml:3:16: rabbitmq.depthSource: must be one of management, amqp; got 'queue'"},
    {"pass_inline",
         "backend: local\n"
         "rabbitmq:\n"
         "  username: {env: U}\n"
         "  password: hunter2\n"
         "pools:\n"
         "  - name: a\n"
         "    queue: q\n"
         "    maxActive: 5\n"
         "    worker: {command: [t]}\n",
     "config.yaml:4:13: rabbitmq.password: credentials must not be written inline; use {env: NAME} or {file: PATH}"},
    {"user_inline",
         "backend: local\n"
         "rabbitmq:\n"
         "  username: guest\n"
         "  password: {env: P}\n"
         "pools:\n"
         "  - name: a\n"
         "    queue: q\n"
         "    maxActive: 5\n"
         "    worker: {command: [t]}\n",
     "config.yaml:3:13: rabbitmq.username: credentials must not be written inline; use {env: NAME} or {file: PATH}"},
    {"pass_both",
         "backend: local\n"
         "rabbitmq:\n"
         "  username: {env: U}\n"
         "  password: {env: P, file: /x}\n"
         "pools:\n"
         "  - name: a\n"
         "    queue: q\n"
         "    maxActive: 5\n"
         "    worker: {command: [t]}\n",
     "config.yaml:4:22: rabbitmq.password.file: 'env' and 'file' are mutually exclusive; set one"},
    {"pass_none",
         "backend: local\n"
         "rabbitmq:\n"
         "  username: {env: U}\n"
         "  password: {}\n"
         "pools:\n"
         "  - name: a\n"
         "    queue: q\n"
         "    maxActive: 5\n"
         "    worker: {command: [t]}\n",
     "config.yaml:4:13: rabbitmq.password: one of 'env' or 'file' is required"},
    {"pass_only",
         "backend: local\n"
         "rabbitmq:\n"
         "  password: {env: P}\n"
         "pools:\n"
         "  - name: a\n"
         "    queue: q\n"
         "    maxActive: 5\n"
         "    worker: {command: [t]}\n",
     "config.yaml:3:3: rabbitmq.username: required when 'password' is set"},
    {"env_bad",
         "backend: local\n"
         "rabbitmq:\n"
         "  username: {env: U}\n"
         "  password: {env: 'A B'}\n"
         "pools:\n"
         "  - name: a\n"
         "    queue: q\n"
         "    maxActive: 5\n"
         "    worker: {command: [t]}\n",
     "config.yaml:4:19: rabbitmq.password.env: 'A B' is not a valid environment variable name"},
    {"url_creds",
         "backend: local\n"
         "rabbitmq:\n"
         "  amqpUrl: amqp://guest:s3cret@host:5672/\n"
         "pools:\n"
         "  - name: a\n"
         "    queue: q\n"
         "    maxActive: 5\n"
         "    worker: {command: [t]}\n",
     "config.yaml:3:12: rabbitmq.amqpUrl: must not contain credentials; use rabbitmq.username and rabbitmq.password"},
    {"url_scheme",
         "backend: local\n"
         "rabbitmq:\n"
         "  managementUrl: rabbitmq:15672\n"
         "pools:\n"
         "  - name: a\n"
         "    queue: q\n"
         "    maxActive: 5\n"
         "    worker: {command: [t]}\n",
     "config.yaml:3:18: rabbitmq.managementUrl: expected a URL starting with http:// or https://, got 'rabbitmq:15672'"},
    {"kube_no_template",
         "backend: kube\n"
         "pools:\n"
         "  - name: a\n"
         "    queue: q\n"
         "    maxActive: 5\n",
     "config.yaml:3:5: pools[0].jobTemplate: required with backend kube (a batch/v1 JobSpec)"},
    {"template_scalar",
         "backend: kube\n"
         "pools:\n"
         "  - name: a\n"
         "    queue: q\n"
         "    maxActive: 5\n"
         "    jobTemplate: job.yaml\n",
     "config.yaml:6:18: pools[0].jobTemplate: expected a mapping (a batch/v1 JobSpec), got 'job.yaml'"},
    {"template_job",
         "backend: kube\n"
         "pools:\n"
         "  - name: a\n"
         "    queue: q\n"
         "    maxActive: 5\n"
         "    jobTemplate:\n"
         "      apiVersion: batch/v1\n"
         "      kind: Job\n",
     "config.yaml:7:19: pools[0].jobTemplate.apiVersion: jobTemplate is a JobSpec (backoffLimit, template, ...), not a whole Job; use the content of the Job's 'spec'"},
    {"template_no_tpl",
         "backend: kube\n"
         "pools:\n"
         "  - name: a\n"
         "    queue: q\n"
         "    maxActive: 5\n"
         "    jobTemplate:\n"
         "      backoffLimit: 0\n",
     "config.yaml:7:7: pools[0].jobTemplate.template: required key is missing (the pod template)"},
    {"template_inf",
         "backend: kube\n"
         "pools:\n"
         "  - name: a\n"
         "    queue: q\n"
         "    maxActive: 5\n"
         "    jobTemplate:\n"
         "      template:\n"
         "        spec:\n"
         "          containers:\n"
         "            - name: w\n"
         "              x: .inf\n",
     "config.yaml:11:18: pools[0].jobTemplate.template.spec.containers[0].x: '.inf' cannot be represented in JSON; quote it to make a string"},
    {"template_dupkey",
         "backend: kube\n"
         "pools:\n"
         "  - name: a\n"
         "    queue: q\n"
         "    maxActive: 5\n"
         "    jobTemplate:\n"
         "      template: {}\n"
         "      template: {}\n",
     "config.yaml:8:7: pools[0].jobTemplate.template: duplicate key 'template'"},
    {"worker_cmd_str",
         "backend: local\n"
         "pools:\n"
         "  - name: a\n"
         "    queue: q\n"
         "    maxActive: 5\n"
         "    worker:\n"
         "      command: jobpool-worker -- ./x\n",
     "config.yaml:7:16: pools[0].worker.command: expected a sequence such as [jobpool-worker, --, ./task.sh], got 'jobpool-worker -- ./x'"},
    {"worker_cmd_empty",
         "backend: local\n"
         "pools:\n"
         "  - name: a\n"
         "    queue: q\n"
         "    maxActive: 5\n"
         "    worker: {command: []}\n",
     "config.yaml:6:23: pools[0].worker.command: must not be empty"},
    {"worker_cmd_map",
         "backend: local\n"
         "pools:\n"
         "  - name: a\n"
         "    queue: q\n"
         "    maxActive: 5\n"
         "    worker:\n"
         "      command: [a, {b: c}]\n",
     "config.yaml:7:20: pools[0].worker.command[1]: expected a string, got a mapping"},
    {"kubeconfig_incluster",
         "kubernetes:\n"
         "  inCluster: true\n"
         "  kubeconfig: /k\n"
         "pools:\n"
         "  - name: a\n"
         "    queue: q\n"
         "    maxActive: 5\n",
     "config.yaml:3:3: kubernetes.kubeconfig: 'kubeconfig' and 'inCluster: true' are mutually exclusive"},
    {"context_alone",
         "kubernetes:\n"
         "  context: c\n"
         "pools:\n"
         "  - name: a\n"
         "    queue: q\n"
         "    maxActive: 5\n",
     "config.yaml:2:3: kubernetes.context: needs 'kubeconfig'"},
    {"ns_bad",
         "kubernetes:\n"
         "  namespace: My_NS\n"
         "pools:\n"
         "  - name: a\n"
         "    queue: q\n"
         "    maxActive: 5\n",
     "config.yaml:2:14: kubernetes.namespace: must be a DNS-1123 label (lowercase letters, digits and '-', at most 63), got 'My_NS'"},
    {"qps_bad",
         "kubernetes:\n"
         "  qps: fast\n"
         "pools:\n"
         "  - name: a\n"
         "    queue: q\n"
         "    maxActive: 5\n",
     "config.yaml:2:8: kubernetes.qps: expected a number, got 'fast'"},
    {"qps_zero",
         "kubernetes:\n"
         "  qps: 0\n"
         "pools:\n"
         "  - name: a\n"
         "    queue: q\n"
         "    maxActive: 5\n",
     "config.yaml:2:8: kubernetes.qps: must be > 0 and <= 100000, got 0"},
    {"lease_order",
         "leaderElection:\n"
         "  enabled: true\n"
         "  leaseDuration: 10s\n"
         "  renewDeadline: 10s\n"
         "pools:\n"
         "  - name: a\n"
         "    queue: q\n"
         "    maxActive: 5\n",
     "config.yaml:4:18: leaderElection.renewDeadline: must be shorter than leaseDuration (10s), got 10s"},
    {"metrics_bad",
         "metrics:\n"
         "  address: localhost\n"
         "pools:\n"
         "  - name: a\n"
         "    queue: q\n"
         "    maxActive: 5\n",
     "config.yaml:2:12: metrics.address: expected HOST:PORT (or \"\" to disable), got 'localhost'"},
    {"merge_bad",
         "backend: local\n"
         "pools:\n"
         "  - <<: 5\n"
         "    name: a\n",
     "config.yaml:3:9: pools[0]: a merge key '<<' takes a mapping or a sequence of mappings"},
    {"key_not_scalar",
         "backend: local\n"
         "[a]: 1\n"
         "pools:\n"
         "  - name: a\n"
         "    queue: q\n"
         "    maxActive: 5\n"
         "    worker: {command: [t]}\n",
     "config.yaml:2:1: (root): keys must be strings, got a sequence"},
    {"nul_in_name",
         "backend: local\n"
         "pools:\n"
         "  - name: \"a\\0b\"\n"
         "    queue: q\n"
         "    maxActive: 5\n"
         "    worker: {command: [t]}\n",
     "config.yaml:3:11: pools[0].name: contains a NUL character"},
    {"newline_key",
         "backend: local\n"
         "\"a\\nb\": 1\n"
         "pools:\n"
         "  - name: a\n"
         "    queue: q\n"
         "    maxActive: 5\n"
         "    worker: {command: [t]}\n",
     "config.yaml:2:1: a?b: unknown key; expected one of: pollInterval, maxActiveTotal, backend, log, metrics, rabbitmq, kubernetes, leaderElection, pools"},
    {"worker_secret_no_name",
         "rabbitmq:\n"
         "  workerSecret: {usernameKey: u}\n"
         "pools: []\n",
     "config.yaml:2:17: rabbitmq.workerSecret.name: required key is missing"},
    {"worker_secret_bad_name",
         "rabbitmq:\n"
         "  workerSecret:\n"
         "    name: Jobpool_Worker\n"
         "pools: []\n",
     "config.yaml:3:11: rabbitmq.workerSecret.name: must be a Secret name (lowercase letters, digits, '-' and '.', at most 253), got 'Jobpool_Worker'"},
    {"worker_secret_bad_key",
         "rabbitmq:\n"
         "  workerSecret: {name: w, passwordKey: 'pass word'}\n"
         "pools: []\n",
     "config.yaml:2:40: rabbitmq.workerSecret.passwordKey: must be a Secret key (letters, digits, '-', '_' and '.', at most 253), got 'pass word'"},
    {"worker_secret_same_keys",
         "rabbitmq:\n"
         "  workerSecret: {name: w, usernameKey: k, passwordKey: k}\n"
         "pools: []\n",
     "config.yaml:2:56: rabbitmq.workerSecret.passwordKey: must differ from usernameKey ('k')"},
    {"worker_secret_typo",
         "rabbitmq:\n"
         "  workerSecret: {name: w, passwordkey: p}\n"
         "pools: []\n",
     "config.yaml:2:27: rabbitmq.workerSecret.passwordkey: unknown key; did you mean 'passwordKey'?"},
    {"worker_secret_misspelt",
         "rabbitmq:\n"
         "  workerSecrets: {name: w}\n"
         "pools: []\n",
     "config.yaml:2:3: rabbitmq.workerSecrets: unknown key; did you mean 'workerSecret'?"},
    {"ca_secret_scalar",
         "rabbitmq:\n"
         "  caSecret: rabbitmq-ca\n"
         "pools: []\n",
     "config.yaml:2:13: rabbitmq.caSecret: expected a mapping, got 'rabbitmq-ca'"},
    {"ca_secret_bad_key",
         "rabbitmq:\n"
         "  caSecret: {name: rabbitmq-ca, key: 'ca/crt'}\n"
         "pools: []\n",
     "config.yaml:2:38: rabbitmq.caSecret.key: must be a Secret key (letters, digits, '-', '_' and '.', at most 253), got 'ca/crt'"},
    {"cert_without_key",
         "rabbitmq:\n"
         "  amqpUrl: amqps://rabbitmq:5671\n"
         "  certFile: /etc/jobpool/cert/tls.crt\n"
         "pools: []\n",
     "config.yaml:2:3: rabbitmq.keyFile: required when 'certFile' is set"},
    {"key_without_cert",
         "rabbitmq:\n"
         "  amqpUrl: amqps://rabbitmq:5671\n"
         "  keyFile: /etc/jobpool/cert/tls.key\n"
         "pools: []\n",
     "config.yaml:2:3: rabbitmq.certFile: required when 'keyFile' is set"},
    {"cert_without_tls",
         "rabbitmq:\n"
         "  certFile: /c.pem\n"
         "  keyFile: /k.pem\n"
         "pools: []\n",
     "config.yaml:2:13: rabbitmq.certFile: a client certificate needs an amqps:// amqpUrl or an https:// managementUrl"},
    {"cert_secret_amqp",
         "rabbitmq:\n"
         "  managementUrl: https://rabbitmq:15671\n"
         "  workerSecret: {name: w}\n"
         "  certSecret: {name: client-tls}\n"
         "pools: []\n",
     "config.yaml:4:15: rabbitmq.certSecret: workers present it on amqpUrl, which must then be amqps://"},
    {"cert_secret_no_worker_secret",
         "rabbitmq:\n"
         "  amqpUrl: amqps://rabbitmq:5671\n"
         "  certSecret: {name: client-tls}\n"
         "pools: []\n",
     "config.yaml:3:15: rabbitmq.certSecret: needs rabbitmq.workerSecret: Jobs get their connection from the controller only then"},
    {"cert_secret_same_keys",
         "rabbitmq:\n"
         "  amqpUrl: amqps://rabbitmq:5671\n"
         "  workerSecret: {name: w}\n"
         "  certSecret: {name: client-tls, certKey: k, keyKey: k}\n"
         "pools: []\n",
     "config.yaml:4:54: rabbitmq.certSecret.keyKey: must differ from certKey ('k')"},
    {"cert_secret_no_name",
         "rabbitmq:\n"
         "  certSecret: {certKey: c}\n"
         "pools: []\n",
     "config.yaml:2:15: rabbitmq.certSecret.name: required key is missing"},
    {"cert_secret_typo",
         "rabbitmq:\n"
         "  certSecret: {name: c, keykey: k}\n"
         "pools: []\n",
     "config.yaml:2:25: rabbitmq.certSecret.keykey: unknown key; did you mean 'keyKey'?"},
    {"instance_upper",
         "kubernetes:\n"
         "  instance: Blue\n"
         "pools: []\n",
     "config.yaml:2:13: kubernetes.instance: must be a DNS-1123 label (lowercase letters, digits and '-', at most 56), got 'Blue'"},
    {"instance_too_long",
         "kubernetes:\n"
         "  instance: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\n"
         "pools: []\n",
     "config.yaml:2:13: kubernetes.instance: must be a DNS-1123 label (lowercase letters, digits and '-', at most 56), got 'aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa...'"},
    {"instance_typo",
         "kubernetes:\n"
         "  instanse: blue\n"
         "pools: []\n",
     "config.yaml:2:3: kubernetes.instanse: unknown key; did you mean 'instance'?"},
    {"local_no_worker",
         "backend: local\n"
         "pools:\n"
         "  - name: a\n"
         "    queue: q\n"
         "    maxActive: 5\n",
     "config.yaml:3:5: pools[0].worker.command: required with backend local (e.g. [jobpool-worker, --, ./task.sh])"},
    {"env_not_map",
         "backend: local\n"
         "pools:\n"
         "  - name: a\n"
         "    queue: q\n"
         "    maxActive: 5\n"
         "    worker:\n"
         "      command: [t]\n"
         "      env: [A]\n",
     "config.yaml:8:12: pools[0].worker.env: expected a mapping of NAME: value, got a sequence"},
    {"env_bad_name",
         "backend: local\n"
         "pools:\n"
         "  - name: a\n"
         "    queue: q\n"
         "    maxActive: 5\n"
         "    worker:\n"
         "      command: [t]\n"
         "      env: {9LIVES: x}\n",
     "config.yaml:8:13: pools[0].worker.env.9LIVES: '9LIVES' is not a valid environment variable name (letters, digits and '_', not starting with a digit)"},
    {"env_dash_name",
         "backend: local\n"
         "pools:\n"
         "  - name: a\n"
         "    queue: q\n"
         "    maxActive: 5\n"
         "    worker:\n"
         "      command: [t]\n"
         "      env: {MY-VAR: x}\n",
     "config.yaml:8:13: pools[0].worker.env.MY-VAR: 'MY-VAR' is not a valid environment variable name (letters, digits and '_', not starting with a digit)"},
    {"env_amqp",
         "backend: local\n"
         "pools:\n"
         "  - name: a\n"
         "    queue: q\n"
         "    maxActive: 5\n"
         "    worker:\n"
         "      command: [t]\n"
         "      env: {JOBPOOL_AMQP_PASSWORD: x}\n",
     "config.yaml:8:13: pools[0].worker.env.JOBPOOL_AMQP_PASSWORD: the broker connection is set by the controller from the rabbitmq section"},
    {"env_reserved",
         "backend: local\n"
         "pools:\n"
         "  - name: a\n"
         "    queue: q\n"
         "    maxActive: 5\n"
         "    worker:\n"
         "      command: [t]\n"
         "      env: {JOBPOOL_QUEUE: x}\n",
     "config.yaml:8:13: pools[0].worker.env.JOBPOOL_QUEUE: JOBPOOL_QUEUE is set by the controller"},
    {"env_dup",
         "backend: local\n"
         "pools:\n"
         "  - name: a\n"
         "    queue: q\n"
         "    maxActive: 5\n"
         "    worker:\n"
         "      command: [t]\n"
         "      env: {A: x, A: y}\n",
     "config.yaml:8:19: pools[0].worker.env.A: duplicate variable"},
    {"env_null",
         "backend: local\n"
         "pools:\n"
         "  - name: a\n"
         "    queue: q\n"
         "    maxActive: 5\n"
         "    worker:\n"
         "      command: [t]\n"
         "      env: {A: ~}\n",
     "config.yaml:8:16: pools[0].worker.env.A: expected a string, {env: NAME} or {file: PATH}, got null"},
    {"env_seq_value",
         "backend: local\n"
         "pools:\n"
         "  - name: a\n"
         "    queue: q\n"
         "    maxActive: 5\n"
         "    worker:\n"
         "      command: [t]\n"
         "      env: {A: [1]}\n",
     "config.yaml:8:16: pools[0].worker.env.A: expected a string, {env: NAME} or {file: PATH}, got a sequence"},
    {"env_bad_ref",
         "backend: local\n"
         "pools:\n"
         "  - name: a\n"
         "    queue: q\n"
         "    maxActive: 5\n"
         "    worker:\n"
         "      command: [t]\n"
         "      env: {A: {env: x y}}\n",
     "config.yaml:8:22: pools[0].worker.env.A.env: 'x y' is not a valid environment variable name"},
};

static void test_bad_inputs(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof bad_cases / sizeof bad_cases[0]; i++) {
        const struct bad_case *bc = &bad_cases[i];
        struct cfg *c = (struct cfg *)1;
        char err[512];
        int rc = cfg_load_string(bc->yaml, strlen(bc->yaml), "config.yaml", &c, err, sizeof err);
        if (rc != JP_ECONFIG) fail_msg("%s: rc %d, err %s", bc->name, rc, err);
        if (c) fail_msg("%s: *out not NULL on failure", bc->name);
        if (strcmp(err, bc->err) != 0) fail_msg("%s:\n got  %s\n want %s", bc->name, err, bc->err);
        assert_null(strchr(err, '\n'));
    }
}

/* Bytes that are not UTF-8 are placed by counting lines up to libyaml's byte offset. */
static void test_bad_encoding(void **state)
{
    (void)state;
    const char y[] = "backend: local\npools: \xff\xfe\n";
    struct cfg *c;
    char err[256];
    assert_int_equal(cfg_load_string(y, sizeof y - 1, "config.yaml", &c, err, sizeof err),
                     JP_ECONFIG);
    assert_string_equal(err, "config.yaml:2:8: yaml: invalid leading UTF-8 octet (byte 0xff)");
}

/* A tiny error buffer truncates, never overflows; no buffer at all is fine too. */
static void test_small_error_buffer(void **state)
{
    (void)state;
    struct cfg *c;
    char err[12];
    memset(err, 'x', sizeof err);
    assert_int_equal(cfg_load_string("backend: x\n", 11, "config.yaml", &c, err, sizeof err),
                     JP_ECONFIG);
    assert_string_equal(err, "config.yaml");
    assert_int_equal(cfg_load_string("backend: x\n", 11, "config.yaml", &c, NULL, 0), JP_ECONFIG);
    assert_null(c);
}

/* The password never appears in any message, whatever is wrong around it. */
static void test_password_not_echoed(void **state)
{
    (void)state;
    const char *cases[] = {
        "rabbitmq:\n  password: hunter2secret\n",
        "rabbitmq:\n  username: {env: U}\n  password: \"hunter2secret\"\n",
        "rabbitmq:\n  amqpUrl: amqp://u:hunter2secret@h/\n",
        "rabbitmq:\n  managementUrl: u:hunter2secret@h\n",
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        struct cfg *c;
        char err[512];
        assert_int_equal(cfg_load_string(cases[i], strlen(cases[i]), "x.yaml", &c, err, sizeof err),
                         JP_ECONFIG);
        assert_null(strstr(err, "hunter2"));
    }
}

static void test_missing_and_unreadable_file(void **state)
{
    (void)state;
    struct cfg *c = (struct cfg *)1;
    char err[256];
    assert_int_equal(cfg_load("tests/fixtures/config/does-not-exist.yaml", &c, err, sizeof err),
                     JP_EIO);
    assert_null(c);
    assert_string_equal(err, "tests/fixtures/config/does-not-exist.yaml: cannot read: "
                             "No such file or directory");
    assert_int_equal(cfg_load("tests/fixtures/config", &c, err, sizeof err), JP_EIO);
    assert_string_equal(err, "tests/fixtures/config: cannot read: Is a directory");
    /* Too big to be a config. */
    char path[] = "/tmp/jp-test-config-XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    assert_int_equal(ftruncate(fd, (off_t)2 << 20), 0);
    close(fd);
    assert_int_equal(cfg_load(path, &c, err, sizeof err), JP_EIO);
    char want[128];
    snprintf(want, sizeof want, "%s: the file is larger than 1048576 bytes", path);
    assert_string_equal(err, want);
    unlink(path);
}

static void test_fixture_files(void **state)
{
    (void)state;
    struct cfg *c;
    char err[256];
    assert_int_equal(cfg_load("tests/fixtures/config/bad-maxactive.yaml", &c, err, sizeof err),
                     JP_ECONFIG);
    assert_string_equal(err, "tests/fixtures/config/bad-maxactive.yaml:14:16: pools[1].maxActive: "
                             "must be >= 1, got -3");
    assert_int_equal(cfg_load("tests/fixtures/config/bad-syntax.yaml", &c, err, sizeof err),
                     JP_ECONFIG);
    assert_string_equal(err, "tests/fixtures/config/bad-syntax.yaml:5:13: yaml: mapping values "
                             "are not allowed in this context");
}

static void test_examples_load(void **state)
{
    (void)state;
    const char *files[] = {"docs/examples/local.yaml", "docs/examples/kube.yaml",
                           "docs/examples/multi-pool.yaml", "tests/fixtures/config/full.yaml"};
    for (size_t i = 0; i < sizeof files / sizeof files[0]; i++) {
        struct cfg *c = NULL;
        char err[512];
        int rc = cfg_load(files[i], &c, err, sizeof err);
        if (rc) fail_msg("%s: %s", files[i], err);
        assert_string_equal(c->path, files[i]);
        /* The shipped examples ask for nothing beyond Pod Security "restricted" (the
         * controller fills in the rest: test_kube's test_manifest_restricted). */
        for (size_t k = 0; i < 3 && k < c->npools; k++) {
            char why[256];
            if (c->pools[k].job_template &&
                podsec_escalations(c->pools[k].job_template, why, sizeof why) != 0)
                fail_msg("%s: pools[%zu]: %s", files[i], k, why);
        }
        cfg_free(c);
    }
    struct cfg *c;
    char err[512];
    assert_int_equal(cfg_load("docs/examples/local.yaml", &c, err, sizeof err), 0);
    assert_int_equal(c->backend, CFG_BACKEND_LOCAL);
    assert_int_equal(c->npools, 1);
    assert_string_equal(c->pools[0].name, "demo");
    assert_string_equal(c->pools[0].queue, "demo-tasks");
    assert_int_equal(c->pools[0].max_active, 20);
    assert_string_equal(c->pools[0].worker_command[0], "jobpool-worker");
    assert_null(c->pools[0].worker_command[c->pools[0].worker_argc]);
    cfg_free(c);
    assert_int_equal(cfg_load("docs/examples/multi-pool.yaml", &c, err, sizeof err), 0);
    assert_int_equal(c->npools, 3);
    assert_int_equal(c->max_active_total, 120);
    assert_string_equal(c->pools[1].vhost, "/reporting");
    assert_string_equal(c->pools[2].vhost, "/");
    assert_null(c->pools[2].queue);
    assert_string_equal(c->pools[2].queue_regex, "^import\\.[a-z0-9-]+$");
    /* The anchored template arrived whole in every pool, the merge added its own key. */
    assert_int_equal(cJSON_GetObjectItem(c->pools[1].job_template, "activeDeadlineSeconds")->valueint,
                     3600);
    assert_non_null(cJSON_GetObjectItem(c->pools[0].job_template, "template"));
    assert_string_equal(c->pools[0].hash[0] ? "set" : "", "set");
    /* Workers get their login by reference and the CA from a Secret, no envFrom by hand. */
    assert_string_equal(c->rabbitmq.worker_secret.name, "rabbitmq-worker");
    assert_string_equal(c->rabbitmq.ca_secret.name, "rabbitmq-ca");
    cfg_free(c);
    assert_int_equal(cfg_load("docs/examples/kube.yaml", &c, err, sizeof err), 0);
    assert_string_equal(c->rabbitmq.worker_secret.name, "rabbitmq-worker");
    assert_null(c->kubernetes.namespace_); /* the service account's */
    cfg_free(c);
}

/* Mutual TLS: the controller's own certificate and key, and the workers' Secret with the
 * kubernetes.io/tls key names by default. */
static void test_client_cert(void **state)
{
    (void)state;
    static const char y[] = "rabbitmq:\n"
                            "  managementUrl: https://rabbitmq:15671\n"
                            "  amqpUrl: amqps://rabbitmq:5671\n"
                            "  certFile: /etc/jobpool/cert/tls.crt\n"
                            "  keyFile: /etc/jobpool/cert/tls.key\n"
                            "  workerSecret: {name: rabbitmq-worker}\n"
                            "  certSecret: {name: rabbitmq-client}\n"
                            "pools: []\n";
    struct cfg *c;
    char err[512];
    assert_int_equal(cfg_load_string(y, sizeof y - 1, "config.yaml", &c, err, sizeof err), 0);
    assert_string_equal(c->rabbitmq.cert_file, "/etc/jobpool/cert/tls.crt");
    assert_string_equal(c->rabbitmq.key_file, "/etc/jobpool/cert/tls.key");
    assert_string_equal(c->rabbitmq.cert_secret.name, "rabbitmq-client");
    assert_string_equal(c->rabbitmq.cert_secret.cert_key, "tls.crt");
    assert_string_equal(c->rabbitmq.cert_secret.key_key, "tls.key");
    cfg_free(c);
    /* Own key names; an https:// management URL alone is TLS enough for the controller's. */
    static const char y2[] = "rabbitmq:\n"
                             "  managementUrl: https://rabbitmq:15671\n"
                             "  certFile: /c.pem\n"
                             "  keyFile: /k.pem\n"
                             "  amqpUrl: amqps://rabbitmq:5671\n"
                             "  workerSecret: {name: w}\n"
                             "  certSecret: {name: c, certKey: client.pem, keyKey: client.key}\n"
                             "pools: []\n";
    assert_int_equal(cfg_load_string(y2, sizeof y2 - 1, "config.yaml", &c, err, sizeof err), 0);
    assert_string_equal(c->rabbitmq.cert_secret.cert_key, "client.pem");
    assert_string_equal(c->rabbitmq.cert_secret.key_key, "client.key");
    cfg_free(c);
    static const char y3[] = "rabbitmq:\n"
                             "  managementUrl: https://rabbitmq:15671\n"
                             "  certFile: /c.pem\n"
                             "  keyFile: /k.pem\n"
                             "pools: []\n";
    assert_int_equal(cfg_load_string(y3, sizeof y3 - 1, "config.yaml", &c, err, sizeof err), 0);
    assert_null(c->rabbitmq.cert_secret.name);
    cfg_free(c);
}

static const char minimal[] =
    "backend: local\n"
    "pools:\n"
    "  - name: a\n"
    "    queue: q\n"
    "    maxActive: 5\n"
    "    worker: {command: [t]}\n";

static void test_defaults(void **state)
{
    (void)state;
    struct cfg *c;
    char err[256];
    assert_int_equal(cfg_load_string(minimal, strlen(minimal), NULL, &c, err, sizeof err), 0);
    assert_string_equal(c->path, "<string>");
    assert_int_equal(c->poll_interval_ms, 2000);
    assert_int_equal(c->max_active_total, 0);
    assert_int_equal(c->backend, CFG_BACKEND_LOCAL);
    assert_int_equal(c->log_format, LOG_TEXT);
    assert_int_equal(c->log_level, LOG_INFO);
    assert_string_equal(c->metrics_address, "127.0.0.1:9090");
    assert_string_equal(c->rabbitmq.management_url, "http://rabbitmq:15672");
    assert_string_equal(c->rabbitmq.amqp_url, "amqp://rabbitmq:5672");
    assert_string_equal(c->rabbitmq.vhost, "/");
    assert_null(c->rabbitmq.username.env);
    assert_null(c->rabbitmq.username.file);
    assert_null(c->rabbitmq.password.env);
    assert_null(c->rabbitmq.ca_file);
    assert_int_equal(c->rabbitmq.timeout_ms, 3000);
    assert_int_equal(c->rabbitmq.connect_timeout_ms, 1000);
    assert_int_equal(c->rabbitmq.max_body, 8 << 20);
    assert_int_equal(c->rabbitmq.depth_source, CFG_DEPTH_MANAGEMENT);
    assert_true(c->kubernetes.in_cluster);
    assert_null(c->kubernetes.kubeconfig);
    assert_null(c->kubernetes.context);
    assert_null(c->kubernetes.namespace_); /* POD_NAMESPACE, the service account's, ... */
    assert_string_equal(c->kubernetes.instance, "jobpool");
    assert_null(c->rabbitmq.worker_secret.name);
    assert_null(c->rabbitmq.ca_secret.name);
    assert_true(c->kubernetes.qps == 100.0);
    assert_int_equal(c->kubernetes.concurrency, 8);
    assert_false(c->leader.enabled);
    assert_string_equal(c->leader.lease_name, "jobpool-leader");
    assert_int_equal(c->leader.lease_duration_ms, 15000);
    assert_int_equal(c->leader.renew_deadline_ms, 10000);
    assert_int_equal(c->leader.retry_period_ms, 2000);
    assert_int_equal(c->npools, 1);
    struct cfg_pool *p = &c->pools[0];
    assert_string_equal(p->name, "a");
    assert_string_equal(p->queue, "q");
    assert_null(p->queue_regex);
    assert_string_equal(p->vhost, "/");
    assert_int_equal(p->max_active, 5);
    assert_int_equal(p->min_active, 0);
    assert_int_equal(p->spare_workers, 0);
    assert_int_equal(p->max_start_per_tick, 20);
    assert_int_equal(p->messages_per_worker, 1);
    assert_int_equal(p->max_attempts, 3);
    assert_int_equal(p->pending_timeout_ms, 300000);
    assert_int_equal(p->idle_timeout_ms, 30000);
    assert_int_equal(p->successful_history, 10);
    assert_int_equal(p->failed_history, 10);
    assert_int_equal(p->ttl_seconds_after_finished, 600);
    assert_string_equal(p->worker_command[0], "t");
    assert_null(p->worker_command[1]);
    assert_int_equal(p->worker_argc, 1);
    assert_null(p->job_template);
    assert_int_equal(p->line, 3);
    assert_int_equal(strlen(p->hash), 16);
    assert_int_equal(strspn(p->hash, "0123456789abcdef"), 16);
    cfg_free(c);
    cfg_free(NULL);
}

/* Every key set, to values that differ from the defaults. */
static void test_full(void **state)
{
    (void)state;
    struct cfg *c;
    char err[512];
    int rc = cfg_load("tests/fixtures/config/full.yaml", &c, err, sizeof err);
    if (rc) fail_msg("%s", err);
    assert_int_equal(c->poll_interval_ms, 500);
    assert_int_equal(c->max_active_total, 40);
    assert_int_equal(c->backend, CFG_BACKEND_KUBE);
    assert_int_equal(c->log_format, LOG_JSON);
    assert_int_equal(c->log_level, LOG_DEBUG);
    assert_string_equal(c->metrics_address, "");
    assert_string_equal(c->rabbitmq.management_url, "https://mq.example:15671/");
    assert_string_equal(c->rabbitmq.amqp_url, "amqps://mq.example:5671");
    assert_string_equal(c->rabbitmq.vhost, "jobs");
    assert_string_equal(c->rabbitmq.username.file, "/run/secrets/user");
    assert_string_equal(c->rabbitmq.password.env, "MQ_PASS");
    assert_string_equal(c->rabbitmq.ca_file, "/etc/ca.crt");
    assert_int_equal(c->rabbitmq.timeout_ms, 90000);
    assert_int_equal(c->rabbitmq.connect_timeout_ms, 250);
    assert_int_equal(c->rabbitmq.max_body, 65536);
    assert_int_equal(c->rabbitmq.depth_source, CFG_DEPTH_AMQP);
    assert_string_equal(c->rabbitmq.worker_secret.name, "mq-worker");
    assert_string_equal(c->rabbitmq.worker_secret.username_key, "user");
    assert_string_equal(c->rabbitmq.worker_secret.password_key, "pass");
    assert_string_equal(c->rabbitmq.ca_secret.name, "mq-ca");
    assert_string_equal(c->rabbitmq.ca_secret.key, "root.pem");
    assert_string_equal(c->kubernetes.instance, "blue");
    assert_false(c->kubernetes.in_cluster);
    assert_string_equal(c->kubernetes.kubeconfig, "/root/.kube/config");
    assert_string_equal(c->kubernetes.context, "dev");
    assert_string_equal(c->kubernetes.namespace_, "batch");
    assert_true(c->kubernetes.qps == 12.5);
    assert_int_equal(c->kubernetes.concurrency, 3);
    assert_true(c->leader.enabled);
    assert_string_equal(c->leader.lease_name, "jp");
    assert_int_equal(c->leader.lease_duration_ms, 30000);
    assert_int_equal(c->leader.renew_deadline_ms, 20000);
    assert_int_equal(c->leader.retry_period_ms, 5000);
    assert_int_equal(c->npools, 2);
    struct cfg_pool *p = &c->pools[0];
    assert_string_equal(p->name, "thumbs-1");
    assert_string_equal(p->queue, "thumbs");
    assert_string_equal(p->vhost, "jobs");   /* inherited from rabbitmq.vhost */
    assert_int_equal(p->max_active, 30);
    assert_int_equal(p->min_active, 2);
    assert_int_equal(p->spare_workers, 4);
    assert_int_equal(p->max_start_per_tick, 7);
    assert_int_equal(p->messages_per_worker, 2);
    assert_int_equal(p->max_attempts, 5);
    assert_int_equal(p->pending_timeout_ms, 90000);
    assert_int_equal(p->idle_timeout_ms, 1500);
    assert_int_equal(p->successful_history, 0);
    assert_int_equal(p->failed_history, 100);
    assert_int_equal(p->ttl_seconds_after_finished, -1);   /* null: unset */
    assert_int_equal(p->worker_argc, 4);
    assert_string_equal(p->worker_command[3], "echo 'hi there'");
    assert_null(p->worker_command[4]);
    /* Typing inside the template: quoted stays a string, plain becomes a number. */
    cJSON *ctr = cJSON_GetArrayItem(cJSON_GetObjectItem(cJSON_GetObjectItem(cJSON_GetObjectItem(
        p->job_template, "template"), "spec"), "containers"), 0);
    cJSON *env0 = cJSON_GetArrayItem(cJSON_GetObjectItem(ctr, "env"), 0);
    assert_true(cJSON_IsString(cJSON_GetObjectItem(env0, "value")));
    assert_string_equal(cJSON_GetObjectItem(env0, "value")->valuestring, "8080");
    cJSON *port = cJSON_GetArrayItem(cJSON_GetObjectItem(ctr, "ports"), 0);
    assert_true(cJSON_IsNumber(cJSON_GetObjectItem(port, "containerPort")));
    assert_int_equal(cJSON_GetObjectItem(port, "containerPort")->valueint, 8080);
    assert_true(cJSON_IsFalse(cJSON_GetObjectItem(ctr, "tty")));
    /* Error lines at template paths point into the file. */
    char line[256];
    cfg_template_error(c, p, "template.spec.containers[0].image", "Required value", line,
                       sizeof line);
    assert_string_equal(line, "tests/fixtures/config/full.yaml:57:22: "
                              "pools[0].jobTemplate.template.spec.containers[0].image: Required value");
    cfg_template_error(c, p, "template.spec.containers[0].resources", "bad", line, sizeof line);
    assert_string_equal(line, "tests/fixtures/config/full.yaml:56:26: "
                              "pools[0].jobTemplate.template.spec.containers[0].resources: bad");
    cfg_template_error(c, p, "", "whole spec", line, sizeof line);
    assert_string_equal(line, "tests/fixtures/config/full.yaml:52:7: pools[0].jobTemplate: whole spec");
    struct cfg_pool *q = &c->pools[1];
    assert_string_equal(q->queue, "thumbs");   /* same queue name, another vhost */
    assert_string_equal(q->vhost, "other");
    /* The second pool takes its settings from the first through a merge key. */
    assert_int_equal(q->max_active, 8);
    assert_int_equal(q->min_active, 2);
    assert_int_equal(q->spare_workers, 4);
    assert_int_equal(q->ttl_seconds_after_finished, 0);
    cfg_free(c);
}

static void test_vhost_and_kubeconfig(void **state)
{
    (void)state;
    const char *y =
        "backend: local\n"
        "rabbitmq: {vhost: /prod}\n"
        "kubernetes: {kubeconfig: /k}\n"
        "pools:\n"
        "  - {name: a, queue: q, maxActive: 1, worker: {command: [t]}}\n"
        "  - {name: b, queue: q, vhost: /, maxActive: 1, worker: {command: [t]}}\n";
    struct cfg *c;
    char err[256];
    assert_int_equal(cfg_load_string(y, strlen(y), "v.yaml", &c, err, sizeof err), 0);
    assert_string_equal(c->pools[0].vhost, "/prod");
    assert_string_equal(c->pools[1].vhost, "/");   /* same queue name, other vhost: fine */
    assert_false(c->kubernetes.in_cluster);
    assert_string_equal(c->kubernetes.kubeconfig, "/k");
    cfg_free(c);
}

static char *hash_of(const char *yaml)
{
    struct cfg *c;
    char err[256];
    if (cfg_load_string(yaml, strlen(yaml), "h.yaml", &c, err, sizeof err)) fail_msg("%s", err);
    char *h = strdup(c->pools[0].hash);
    cfg_free(c);
    return h;
}

static void test_hash(void **state)
{
    (void)state;
    const char *base = "pools: [{name: a, queue: q, maxActive: 5, jobTemplate: {template: {x: 1}}}]\n";
    const char *same = "# a comment and other spacing\n"
                       "pools:\n"
                       "  - name: a\n"
                       "    queue: q\n"
                       "    maxActive: 5\n"
                       "    jobTemplate:\n"
                       "      template: {x: 1}\n";
    const char *other_global = "pollInterval: 5s\n"
                               "pools: [{name: a, queue: q, maxActive: 5, jobTemplate: {template: {x: 1}}}]\n";
    const char *diffs[] = {
        "pools: [{name: b, queue: q, maxActive: 5, jobTemplate: {template: {x: 1}}}]\n",
        "pools: [{name: a, queue: r, maxActive: 5, jobTemplate: {template: {x: 1}}}]\n",
        "pools: [{name: a, queue: q, maxActive: 6, jobTemplate: {template: {x: 1}}}]\n",
        "pools: [{name: a, queue: q, maxActive: 5, jobTemplate: {template: {x: 2}}}]\n",
        "pools: [{name: a, queue: q, maxActive: 5, jobTemplate: {template: {x: '1'}}}]\n",
        "pools: [{name: a, queue: q, maxActive: 5, idleTimeout: 31s, jobTemplate: {template: {x: 1}}}]\n",
        "pools: [{name: a, queueRegex: q, maxActive: 5, jobTemplate: {template: {x: 1}}}]\n",
    };
    char *h0 = hash_of(base);
    char *h1 = hash_of(same);
    char *h2 = hash_of(other_global);
    assert_string_equal(h0, h1);
    assert_string_equal(h0, h2);   /* only the pool's own settings count */
    for (size_t i = 0; i < sizeof diffs / sizeof diffs[0]; i++) {
        char *h = hash_of(diffs[i]);
        if (!strcmp(h, h0)) fail_msg("same hash for %s", diffs[i]);
        free(h);
    }
    free(h0);
    free(h1);
    free(h2);
}

static void test_worker_env(void **state)
{
    (void)state;
    const char y[] = "backend: local\n"
                     "pools:\n"
                     "  - name: a\n"
                     "    queue: q\n"
                     "    maxActive: 5\n"
                     "    worker:\n"
                     "      command: [t]\n"
                     "      env:\n"
                     "        OUT_DIR: /srv/out\n"
                     "        RETRIES: 3\n"
                     "        EMPTY: ''\n"
                     "        TOKEN: {env: THUMBS_TOKEN}\n"
                     "        KEY: {file: /run/secrets/key}\n"
                     "        JOBPOOL_LOG_LEVEL: debug\n";
    struct cfg *c;
    char err[256];
    assert_int_equal(cfg_load_string(y, strlen(y), "config.yaml", &c, err, sizeof err), 0);
    const struct cfg_pool *p = &c->pools[0];
    assert_int_equal(p->worker_nenv, 6);
    assert_string_equal(p->worker_env[0].name, "OUT_DIR");
    assert_string_equal(p->worker_env[0].value, "/srv/out");
    assert_string_equal(p->worker_env[1].value, "3");
    assert_string_equal(p->worker_env[2].value, "");
    assert_null(p->worker_env[3].value);
    assert_string_equal(p->worker_env[3].ref.env, "THUMBS_TOKEN");
    assert_string_equal(p->worker_env[4].ref.file, "/run/secrets/key");
    assert_string_equal(p->worker_env[5].name, "JOBPOOL_LOG_LEVEL");
    assert_int_equal(p->task_timeout_ms, 0);
    assert_int_equal(c->rabbitmq.consumer_timeout_ms, 30 * 60 * 1000);
    assert_int_equal(c->rabbitmq.management_lag_ms, 10000);
    cfg_free(c);
    const char y2[] = "backend: local\n"
                      "rabbitmq: {consumerTimeout: 2h, managementLag: 2s}\n"
                      "pools:\n"
                      "  - {name: a, queue: q, maxActive: 5, taskTimeout: 90m, worker: {command: [t]}}\n";
    assert_int_equal(cfg_load_string(y2, strlen(y2), "config.yaml", &c, err, sizeof err), 0);
    assert_int_equal(c->pools[0].task_timeout_ms, 90 * 60 * 1000);
    assert_int_equal(c->rabbitmq.consumer_timeout_ms, 2 * 3600 * 1000);
    assert_int_equal(c->rabbitmq.management_lag_ms, 2000);
    cfg_free(c);
    /* Below 100 ms, or not a duration: an error naming the key, nothing loaded. */
    const char *bad[] = {"50ms", "0", "-1s", "fast", "[1s]"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        char y3[256];
        snprintf(y3, sizeof y3,
                 "backend: local\nrabbitmq: {managementLag: %s}\n"
                 "pools:\n  - {name: a, queue: q, maxActive: 5, worker: {command: [t]}}\n", bad[i]);
        c = NULL;
        assert_int_not_equal(cfg_load_string(y3, strlen(y3), "config.yaml", &c, err, sizeof err), 0);
        assert_null(c);
        if (!strstr(err, "rabbitmq.managementLag")) fail_msg("%s: %s", bad[i], err);
    }
}

static void test_secret_env(void **state)
{
    (void)state;
    struct cfg_secret s = {.env = "JP_TEST_SECRET_ENV", .file = NULL};
    char *v = (char *)1;
    unsetenv("JP_TEST_SECRET_ENV");
    assert_int_equal(cfg_secret_read(&s, &v), JP_ENOTFOUND);
    assert_null(v);
    setenv("JP_TEST_SECRET_ENV", "s3cret-from-env\n", 1);
    assert_int_equal(cfg_secret_read(&s, &v), 0);
    assert_string_equal(v, "s3cret-from-env");
    /* Registered as a log secret: a line that contains it shows *** instead. */
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    log_setup(LOG_TEXT, LOG_INFO, f);
    log_info("connecting with %s now", v);
    fflush(f);
    assert_null(strstr(buf, "s3cret-from-env"));
    assert_non_null(strstr(buf, "connecting with *** now"));
    log_setup(LOG_TEXT, LOG_INFO, stderr);
    fclose(f);
    free(buf);
    free(v);
    log_clear_secrets();
    unsetenv("JP_TEST_SECRET_ENV");
}

static void test_secret_file(void **state)
{
    (void)state;
    char path[] = "/tmp/jp-test-secret-XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, "pa ss\r\n", 7), 7);
    close(fd);
    struct cfg_secret s = {.env = NULL, .file = path};
    char *v = NULL;
    assert_int_equal(cfg_secret_read(&s, &v), 0);
    assert_string_equal(v, "pa ss");
    free(v);
    unlink(path);
    assert_int_equal(cfg_secret_read(&s, &v), JP_ENOTFOUND);
    assert_null(v);
    s.file = "/tmp";
    assert_int_equal(cfg_secret_read(&s, &v), JP_EIO);
    assert_null(v);
    struct cfg_secret none = {NULL, NULL};
    assert_int_equal(cfg_secret_read(&none, &v), JP_ENOTFOUND);
    log_clear_secrets();
}

/* The parsed config names the secret; reading it goes through the same path. */
static void test_secret_from_config(void **state)
{
    (void)state;
    const char *y = "backend: local\n"
                    "rabbitmq:\n"
                    "  username: {env: JP_TEST_USER}\n"
                    "  password: {file: /nonexistent/jp-pass}\n"
                    "pools: [{name: a, queue: q, maxActive: 1, worker: {command: [t]}}]\n";
    struct cfg *c;
    char err[256];
    assert_int_equal(cfg_load_string(y, strlen(y), "s.yaml", &c, err, sizeof err), 0);
    assert_string_equal(c->rabbitmq.username.env, "JP_TEST_USER");
    assert_null(c->rabbitmq.username.file);
    assert_string_equal(c->rabbitmq.password.file, "/nonexistent/jp-pass");
    setenv("JP_TEST_USER", "worker-user", 1);
    char *v = NULL;
    assert_int_equal(cfg_secret_read(&c->rabbitmq.username, &v), 0);
    assert_string_equal(v, "worker-user");
    free(v);
    assert_int_equal(cfg_secret_read(&c->rabbitmq.password, &v), JP_ENOTFOUND);
    unsetenv("JP_TEST_USER");
    cfg_free(c);
    log_clear_secrets();
}

/* Anchors, merge keys and x- keys in the config itself. */
static void test_anchors_in_config(void **state)
{
    (void)state;
    const char *y = "backend: local\n"
                    "x-defaults: &d {maxActive: 9, idleTimeout: 5s, worker: {command: [t]}}\n"
                    "pools:\n"
                    "  - <<: *d\n"
                    "    name: a\n"
                    "    queue: q\n"
                    "  - <<: *d\n"
                    "    name: b\n"
                    "    queue: r\n"
                    "    maxActive: 2\n";
    struct cfg *c;
    char err[256];
    int rc = cfg_load_string(y, strlen(y), "a.yaml", &c, err, sizeof err);
    if (rc) fail_msg("%s", err);
    assert_int_equal(c->pools[0].max_active, 9);
    assert_int_equal(c->pools[0].idle_timeout_ms, 5000);
    assert_int_equal(c->pools[1].max_active, 2);
    assert_int_equal(c->pools[1].idle_timeout_ms, 5000);
    cfg_free(c);
    /* An error in a merged value is reported where that value is written. */
    const char *bad = "backend: local\n"
                      "x-defaults: &d {maxActive: 0}\n"
                      "pools:\n"
                      "  - <<: *d\n"
                      "    name: a\n"
                      "    queue: q\n";
    assert_int_equal(cfg_load_string(bad, strlen(bad), "a.yaml", &c, err, sizeof err), JP_ECONFIG);
    assert_string_equal(err, "a.yaml:2:28: pools[0].maxActive: must be >= 1, got 0");
}

/* A "billion laughs" config of under 1 MiB: a 500 KiB string used through aliases. Each
 * template stays under the per-template limit and the node caps, so only the file-wide budget
 * of expanded text stops it; the same for strings the config itself copies (worker commands). */
static char *laughs(const char *rest)
{
    struct dbuf d;
    dbuf_init(&d, 1 << 20);
    assert_int_equal(dbuf_printf(&d, "x-big: &big \""), 0);
    for (int i = 0; i < 500 * 1024; i++) assert_int_equal(dbuf_append(&d, "x", 1), 0);
    assert_int_equal(dbuf_printf(&d, "\"\n%s", rest), 0);
    return dbuf_take(&d);
}

static void test_alias_expansion_capped(void **state)
{
    (void)state;
    struct dbuf pools;
    dbuf_init(&pools, 1 << 20);
    assert_int_equal(dbuf_printf(&pools, "backend: kube\n"
        "x-t: &t {template: {metadata: {annotations: {a: *big, b: *big}}, spec: {restartPolicy: "
        "Never, containers: [{name: w, image: i}]}}}\npools:\n"), 0);
    for (int i = 0; i < 40; i++)
        assert_int_equal(dbuf_printf(&pools, "  - {name: p%d, queue: q%d, maxActive: 1, "
                                     "jobTemplate: *t}\n", i, i), 0);
    char *y = laughs(pools.data);
    assert_true(strlen(y) < (1 << 20));
    struct cfg *c = NULL;
    char err[512];
    assert_int_equal(cfg_load_string(y, strlen(y), "laughs.yaml", &c, err, sizeof err),
                     JP_ECONFIG);
    assert_null(c);
    /* The position is the anchored string's; the path names the use that went over. */
    assert_string_equal(err, "laughs.yaml:1:8: pools[16].jobTemplate.template.metadata."
                             "annotations.a: the file expands to more than 16777216 bytes of "
                             "text in all (too many aliases?)");
    free(y);
    dbuf_free(&pools);

    y = laughs("backend: local\n"
               "x-cmd: &cmd [t, *big, *big, *big, *big, *big, *big, *big, *big, *big, *big, *big, "
               "*big, *big, *big, *big, *big, *big, *big, *big, *big, *big, *big, *big, *big, "
               "*big, *big, *big, *big, *big, *big, *big, *big, *big, *big, *big, *big, *big]\n"
               "pools:\n  - {name: a, queue: q, maxActive: 1, worker: {command: *cmd}}\n");
    assert_int_equal(cfg_load_string(y, strlen(y), "laughs.yaml", &c, err, sizeof err),
                     JP_ECONFIG);
    assert_null(c);
    assert_string_equal(err, "laughs.yaml:1:8: pools[0].worker.command[33]: the file expands to "
                             "more than 16777216 bytes of text in all (too many aliases?)");
    free(y);
}

/* A JobPool's spec is a pool with the file's rules: defaults filled in, the controller's vhost
 * by default, namespace and connection Secret kept, and each error naming the field as the
 * object has it (spec.X, metadata.name), including the checks the CRD's schema cannot make. */
static void test_pool_from_jobpool(void **state)
{
    (void)state;
    struct cfg *c = NULL;
    char err[256];
    const char *yaml = "rabbitmq: {vhost: media}\npools: []\n";
    assert_int_equal(cfg_load_string(yaml, strlen(yaml), "c.yaml", &c, err, sizeof err), 0);
    assert_int_equal(c->npools, 0);
    assert_true(c->kubernetes.jobpools);
    assert_null(c->kubernetes.watch_namespaces);
    struct cfg_pool p;
    cJSON *jp = cJSON_Parse("{\"metadata\":{\"name\":\"thumbs\",\"namespace\":\"team-a\"},"
                            "\"spec\":{\"queue\":\"t\",\"maxActive\":4,\"minActive\":1,"
                            "\"pendingTimeout\":\"1m30s\",\"ttlSecondsAfterFinished\":null,"
                            "\"connectionSecretRef\":{\"name\":\"conn\"},"
                            "\"jobTemplate\":{\"template\":{\"spec\":{}}}}}");
    assert_int_equal(cfg_pool_from_jobpool(c, jp, &p, err, sizeof err), 0);
    assert_string_equal(p.name, "thumbs");
    assert_string_equal(p.namespace_, "team-a");
    assert_string_equal(p.connection_secret, "conn");
    assert_string_equal(p.vhost, "media");
    assert_int_equal(p.max_active, 4);
    assert_int_equal(p.min_active, 1);
    assert_int_equal(p.max_start_per_tick, 20);
    assert_int_equal(p.pending_timeout_ms, 90000);
    assert_int_equal(p.ttl_seconds_after_finished, -1);
    assert_non_null(p.job_template);
    assert_int_equal(strlen(p.hash), 16);
    cfg_pool_free(&p);
    cJSON_Delete(jp);

    static const struct {
        const char *json, *want;
    } bad[] = {
        {"{\"metadata\":{\"name\":\"a\",\"namespace\":\"n\"},\"spec\":{\"queue\":\"q\","
         "\"maxActive\":2,\"minActive\":5,\"jobTemplate\":{\"template\":{}}}}",
         "spec.minActive: must be <= maxActive (2), got 5"},
        {"{\"metadata\":{\"name\":\"a\",\"namespace\":\"n\"},\"spec\":{\"queue\":\"q\","
         "\"maxActive\":2,\"pendingTimeout\":\"500ms\",\"jobTemplate\":{\"template\":{}}}}",
         "spec.pendingTimeout: must be at least 1s, got 500ms"},
        {"{\"metadata\":{\"name\":\"a\",\"namespace\":\"n\"},\"spec\":{\"queueRegex\":\"a(\","
         "\"maxActive\":2,\"jobTemplate\":{\"template\":{}}}}",
         "spec.queueRegex: invalid regular expression"},
        {"{\"metadata\":{\"name\":\"Bad_Name\",\"namespace\":\"n\"},\"spec\":{\"queue\":\"q\","
         "\"maxActive\":2,\"jobTemplate\":{\"template\":{}}}}", "metadata.name: must be a DNS"},
        {"{\"metadata\":{\"name\":\"a\",\"namespace\":\"n\"},\"spec\":{\"queue\":\"q\","
         "\"maxActive\":2}}", "spec.jobTemplate: required with backend kube"},
        {"{\"metadata\":{\"name\":\"a\",\"namespace\":\"n\"},\"spec\":{\"queue\":\"q\","
         "\"maxActive\":2,\"connectionSecretRef\":{},\"jobTemplate\":{\"template\":{}}}}",
         "spec.connectionSecretRef.name: required"},
        {"{\"metadata\":{\"name\":\"a\",\"namespace\":\"n\"}}", "spec: required"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        jp = cJSON_Parse(bad[i].json);
        assert_non_null(jp);
        assert_int_equal(cfg_pool_from_jobpool(c, jp, &p, err, sizeof err), JP_ECONFIG);
        if (strncmp(err, bad[i].want, strlen(bad[i].want)))
            fail_msg("case %zu: got '%s', want '%s...'", i, err, bad[i].want);
        assert_null(p.name);
        cJSON_Delete(jp);
    }
    cfg_free(c);

    /* watchNamespaces: listed, or refused with the entry's path. */
    yaml = "kubernetes: {watchNamespaces: [team-a, team-b]}\npools: []\n";
    assert_int_equal(cfg_load_string(yaml, strlen(yaml), "c.yaml", &c, err, sizeof err), 0);
    assert_int_equal(c->kubernetes.nwatch_namespaces, 2);
    assert_string_equal(c->kubernetes.watch_namespaces[1], "team-b");
    cfg_free(c);
    yaml = "kubernetes: {watchNamespaces: [team-a, team-a]}\npools: []\n";
    assert_int_equal(cfg_load_string(yaml, strlen(yaml), "c.yaml", &c, err, sizeof err),
                     JP_ECONFIG);
    assert_string_equal(err, "c.yaml:1:40: kubernetes.watchNamespaces[1]: 'team-a' is listed twice");
    yaml = "kubernetes: {jobPools: false}\npools: []\n";
    assert_int_equal(cfg_load_string(yaml, strlen(yaml), "c.yaml", &c, err, sizeof err),
                     JP_ECONFIG);
    assert_non_null(strstr(err, "pools: at least one pool is required"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_alias_expansion_capped),
        cmocka_unit_test(test_pool_from_jobpool),
        cmocka_unit_test(test_bad_inputs),
        cmocka_unit_test(test_bad_encoding),
        cmocka_unit_test(test_small_error_buffer),
        cmocka_unit_test(test_password_not_echoed),
        cmocka_unit_test(test_missing_and_unreadable_file),
        cmocka_unit_test(test_fixture_files),
        cmocka_unit_test(test_examples_load),
        cmocka_unit_test(test_defaults),
        cmocka_unit_test(test_client_cert),
        cmocka_unit_test(test_full),
        cmocka_unit_test(test_vhost_and_kubeconfig),
        cmocka_unit_test(test_hash),
        cmocka_unit_test(test_worker_env),
        cmocka_unit_test(test_secret_env),
        cmocka_unit_test(test_secret_file),
        cmocka_unit_test(test_secret_from_config),
        cmocka_unit_test(test_anchors_in_config),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
