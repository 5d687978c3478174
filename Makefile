# jobpool: build, test, demo, asan, valgrind, lint, bench.
# Everything is overridable: make CC=clang CFLAGS="-O0 -g".

VERSION  ?= 0.1.0
CC       ?= cc
CFLAGS   ?= -O2 -g
B        ?= build
DEPS_SH  ?= tests/env/deps.sh
PKGS      = librabbitmq libcurl libcjson yaml-0.1 openssl
PKG_CFLAGS = $(shell pkg-config --cflags $(PKGS) 2>/dev/null)
PKG_LIBS   = $(shell pkg-config --libs $(PKGS) 2>/dev/null)
CMOCKA_LIBS = $(shell pkg-config --libs cmocka 2>/dev/null)
WARN      = -std=c11 -Wall -Wextra -Werror -Wshadow -Wformat=2 -Wno-format-nonliteral
ALL_CFLAGS = $(WARN) $(CFLAGS) -DJP_VERSION='"$(VERSION)"' -Icontroller/src $(PKG_CFLAGS) -MMD -MP
# The controller and the worker do not link libm (util_floor, util_ceil): loading it costs
# 0.3-0.4 MiB of resident pages. The tests may use it.
LDLIBS    = $(PKG_LIBS) -lpthread
TEST_LIBS = $(LDLIBS) -lm

CTRL_SRC  := $(wildcard controller/src/*.c)
CTRL_OBJ   = $(patsubst controller/src/%.c,$(B)/ctrl/%.o,$(CTRL_SRC))
WORK_SRC  := $(wildcard worker-image/src/*.c)
WORK_OBJ   = $(patsubst worker-image/src/%.c,$(B)/worker/%.o,$(WORK_SRC))
# Modules the worker shares with the controller.
WORK_SHARED = err log util progress

CONTROLLER = $(B)/jobpool-controller
TOOLS      = $(B)/jp-publish
WORKER     = $(B)/jobpool-worker

# Each test names the controller modules it links (and nothing else), so a module that is being
# rewritten cannot break the build of an unrelated test.
DEPS_test_err       = err
DEPS_test_util      = util err
DEPS_test_progress  = progress
DEPS_test_status    = status http util log err
DEPS_test_log       = log err
DEPS_test_config    = config podsec yamljson util log err
DEPS_test_yamljson  = yamljson util err
DEPS_test_keda      = keda yamljson util err
DEPS_test_pools     = pools jobpools conns rmq watch store kube podsec progress kubeconfig http config yamljson intern util log err
DEPS_test_conns     = conns rmq kube podsec progress kubeconfig yamljson http config intern util log err
WRAP_test_conns = -Wl,--wrap=kube_request,--wrap=kube_last_error
DEPS_test_http      = http util log err
DEPS_test_rmq       = rmq http config yamljson util log err
DEPS_test_kube      = kube podsec progress kubeconfig yamljson http intern util log err
DEPS_test_kube_ns   = backend_kube backend kube_cache watch store pools jobpools conns rmq kube podsec progress kubeconfig metrics config yamljson http intern util log err
DEPS_test_podsec    = podsec err
DEPS_test_kubeconfig = kubeconfig yamljson util log err
DEPS_test_scale     = scale util err
DEPS_test_intern    = intern util log err
DEPS_test_store     = store util err
DEPS_test_scale_sim = scale util err
DEPS_test_backend_local = backend backend_local progress http intern util log err config yamljson
DEPS_test_metrics   = metrics util log err
DEPS_test_reconcile = reconcile pools podsec config yamljson backend scale metrics intern util log err
WRAP_test_backend_local = -Wl,--wrap=waitpid
# The kube test answers some requests itself (an API server that never stops paging).
WRAP_test_kube = -Wl,--wrap=http_request
# Link-time seams: the reconcile test plays the broker through these wrappers, and fails an
# allocation on request (realloc).
WRAP_test_reconcile = -Wl,--wrap=rmq_queue_depth,--wrap=rmq_regex_depth,--wrap=rmq_tick_begin,--wrap=rmq_watch_queue,--wrap=rmq_last_error,--wrap=rmq_probe,--wrap=calloc
# Integration tests (need the real broker / API server started by tests/env/*.sh).
DEPS_it_rmq         = rmq config yamljson http util log err
DEPS_it_kube        = kube podsec progress kubeconfig yamljson http intern util log err
# Tests against the real control plane started by tests/env/kube.sh (make kube-integration).
DEPS_kit_kube       = kube_cache watch store kube podsec progress kubeconfig yamljson http intern util log err
DEPS_kube_bench     = kube_cache watch store kube podsec progress kubeconfig yamljson http intern util log err

UNIT_SRC  := $(wildcard tests/unit/test_*.c)
UNIT_BIN   = $(patsubst tests/unit/%.c,$(B)/tests/%,$(UNIT_SRC))
IT_SRC    := $(wildcard tests/integration/it_*.c)
IT_BIN     = $(patsubst tests/integration/%.c,$(B)/tests/%,$(IT_SRC))
KIT_SRC   := $(wildcard tests/integration/kit_*.c)
KIT_BIN    = $(patsubst tests/integration/%.c,$(B)/tests/%,$(KIT_SRC))

.PHONY: all deps build-deps unit integration kube-integration test asan tsan valgrind lint demo bench clean fuzz e2e images manifests
all: $(CONTROLLER) $(WORKER) $(TOOLS)
	@mkdir -p controller worker-image
	@ln -sf ../$(CONTROLLER) controller/jobpool-controller
	@ln -sf ../$(WORKER) worker-image/jobpool-worker

deps:
	@$(DEPS_SH) test

# Every compile first installs what is missing (tests/env/deps.sh build prints nothing when all is
# there): an order-only prerequisite of each rule that runs the compiler, so no target, on a fresh
# machine, stops at a missing header. PKG_CFLAGS/PKG_LIBS are recursive (=) variables, expanded
# when a recipe runs, which is after this step. tests/integration/makefile.test.sh checks it.
build-deps:
	@$(DEPS_SH) build

$(B)/ctrl/%.o: controller/src/%.c | build-deps
	@mkdir -p $(@D)
	$(CC) $(ALL_CFLAGS) -c $< -o $@

$(B)/worker/%.o: worker-image/src/%.c | build-deps
	@mkdir -p $(@D)
	$(CC) $(ALL_CFLAGS) -Iworker-image/src -c $< -o $@

$(CONTROLLER): $(CTRL_OBJ)
	$(CC) $(CFLAGS) $(LDFLAGS) $^ -o $@ $(LDLIBS)

$(WORKER): $(WORK_OBJ) $(patsubst %,$(B)/ctrl/%.o,$(WORK_SHARED))
	$(CC) $(CFLAGS) $(LDFLAGS) $^ -o $@ $(LDLIBS)

.SECONDEXPANSION:
$(B)/tests/test_%: tests/unit/test_%.c $$(addprefix $(B)/ctrl/,$$(addsuffix .o,$$(DEPS_test_$$*))) | build-deps
	@mkdir -p $(@D)
	$(CC) $(ALL_CFLAGS) $(LDFLAGS) -Itests/unit $(filter %.c %.o,$^) -o $@ $(WRAP_test_$*) $(TEST_LIBS) $(CMOCKA_LIBS)

$(B)/tests/it_%: tests/integration/it_%.c $$(addprefix $(B)/ctrl/,$$(addsuffix .o,$$(DEPS_it_$$*))) | build-deps
	@mkdir -p $(@D)
	$(CC) $(ALL_CFLAGS) -Itests/unit $(filter %.c %.o,$^) -o $@ $(TEST_LIBS) $(CMOCKA_LIBS)

# Worker unit tests (tests/unit/test_worker_<module>.c) link that worker module, the worker
# modules it needs (WDEPS_), and the modules the worker shares with the controller. The shorter
# stem makes make prefer this rule.
WDEPS_test_worker_message = task
$(B)/tests/test_worker_%: tests/unit/test_worker_%.c $(B)/worker/%.o $$(addprefix $(B)/worker/,$$(addsuffix .o,$$(WDEPS_test_worker_$$*))) $(patsubst %,$(B)/ctrl/%.o,$(WORK_SHARED)) | build-deps
	@mkdir -p $(@D)
	$(CC) $(ALL_CFLAGS) $(LDFLAGS) -Iworker-image/src -Itests/unit $(filter %.c %.o,$^) -o $@ $(TEST_LIBS) $(CMOCKA_LIBS)

# A tiny server of known metrics for tests/integration/metrics.test.sh (promtool, Prometheus).
$(B)/tests/metrics_demo: tests/integration/metrics_demo.c $(addprefix $(B)/ctrl/,metrics.o util.o log.o err.o) | build-deps
	@mkdir -p $(@D)
	$(CC) $(ALL_CFLAGS) $(filter %.c %.o,$^) -o $@ $(LDLIBS)

$(B)/tests/kit_%: tests/integration/kit_%.c $$(addprefix $(B)/ctrl/,$$(addsuffix .o,$$(DEPS_kit_$$*))) | build-deps
	@mkdir -p $(@D)
	$(CC) $(ALL_CFLAGS) -Itests/unit $(filter %.c %.o,$^) -o $@ $(TEST_LIBS) $(CMOCKA_LIBS)

$(B)/bench/kube_bench: bench/kube_bench.c $$(addprefix $(B)/ctrl/,$$(addsuffix .o,$$(DEPS_kube_bench))) | build-deps
	@mkdir -p $(@D)
	$(CC) $(ALL_CFLAGS) $(filter %.c %.o,$^) -o $@ $(LDLIBS)

# RabbitMQ depth-read benchmark program, built and run by bench/rmq_depth.sh (make bench-rmq).
BENCH_RMQ_DEPS = rmq config yamljson http util log err
$(B)/bench/rmq_depth: bench/rmq_depth.c $(addprefix $(B)/ctrl/,$(addsuffix .o,$(BENCH_RMQ_DEPS))) | build-deps
	@mkdir -p $(@D)
	$(CC) $(ALL_CFLAGS) $(filter %.c %.o,$^) -o $@ $(LDLIBS)
.PHONY: bench-rmq
bench-rmq:
	@B=$(B) bench/rmq_depth.sh

# Small tools for tests, the demo and benches.
$(B)/jp-publish: tests/tools/jp-publish.c | build-deps
	@mkdir -p $(@D)
	$(CC) $(ALL_CFLAGS) $< -o $@ $(LDLIBS)

# Fast edit-compile loop: unit tests only, no services.
unit: $(UNIT_BIN)
	@tests/run-tests.sh unit $(UNIT_BIN)

# Tests against a real RabbitMQ (and, where built, a real kube-apiserver).
integration: $(IT_BIN) all $(B)/tests/metrics_demo
	@B=$(abspath $(B)) tests/integration/run.sh $(IT_BIN)

# Tests against a real control plane (etcd + kube-apiserver + kube-controller-manager) and broker.
kube-integration: $(KIT_BIN) all
	@B=$(abspath $(B)) tests/integration/kube-run.sh $(KIT_BIN)

# The full suite that CI runs. Installs what is missing first.
# Every stage runs even when an earlier one failed; the closing line sums them (suites, not
# single checks: each stage prints its own detail above).
test: export JOBPOOL_SUMMARY = $(abspath $(B))/test-summary.txt
test:
	@$(DEPS_SH) test
	@mkdir -p $(B) && : > $(JOBPOOL_SUMMARY)
	@$(MAKE) --no-print-directory all
	@st=0; \
	$(MAKE) --no-print-directory unit || st=1; \
	$(MAKE) --no-print-directory integration || st=1; \
	$(MAKE) --no-print-directory kube-integration || st=1; \
	if $(MAKE) --no-print-directory lint; then echo "lint 1 0" >> $(JOBPOOL_SUMMARY); \
	  else echo "lint 0 1" >> $(JOBPOOL_SUMMARY); st=1; fi; \
	if command -v podman >/dev/null 2>&1; then \
	  if $(MAKE) --no-print-directory images; then echo "images 1 0" >> $(JOBPOOL_SUMMARY); \
	  else echo "images 0 1" >> $(JOBPOOL_SUMMARY); st=1; fi; \
	else echo "test: podman is not installed, images not built (tests/env/deps.sh images)"; fi; \
	echo; awk '{printf "  %-18s %d of %d suites passed\n", $$1, $$2, $$2 + $$3; p += $$2; f += $$3} \
	  END {printf "test: %d passed, %d failed\n", p, f}' $(JOBPOOL_SUMMARY); \
	exit $$st

# Images, Helm chart and plain manifests. helm, kubectl and readme-generator are installed by
# tests/env/tools.sh into ~/.cache/jobpool (never into the repo). chart-test is also run by
# `make integration` (tests/integration/chart-offline.test.sh); chart.kube.sh needs a control plane.
.PHONY: chart-test chart-readme chart-limits
images:
	@tests/env/images.sh all
manifests:
	@deploy/generate.sh
# The chart's limits (values.schema.json, templates/_limits.tpl) from controller/src/config_limits.h.
chart-limits:
	@python3 charts/limits.py
chart-readme:
	@"$$(tests/env/tools.sh)/readme-generator" -v charts/jobpool/values.yaml -r charts/jobpool/README.md >/dev/null
chart-test: $(CONTROLLER)
	@JOBPOOL_BUILD=$(abspath $(B)) tests/integration/chart-offline.test.sh

asan:
	@$(MAKE) --no-print-directory B=build/asan CC=$(CC) \
	  CFLAGS="-O1 -g -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=all" \
	  LDFLAGS="-fsanitize=address,undefined" unit

valgrind:
	@$(DEPS_SH) test
	@$(MAKE) --no-print-directory B=build/vg CFLAGS="-O0 -g" $$(echo $(UNIT_BIN) | sed 's#$(B)/#build/vg/#g') all
	@VALGRIND="valgrind -q --error-exitcode=1 --leak-check=full --errors-for-leak-kinds=definite,indirect" \
	  tests/run-tests.sh unit $(patsubst $(B)/%,build/vg/%,$(UNIT_BIN))

# ThreadSanitizer over everything that runs threads: the unit tests (the log's secret list under
# token rotation, the metrics server), then against the real API server kit_kube (the watch
# cache's reflector threads) and a tsan build of the controller in leader.kube.sh (the Lease
# renewer thread), controller_kube.kube.sh and cache.kube.sh (the watch cache under faults).
# Every report fails the run (tests/tsan.sh). TSAN_KUBE=0 runs the unit tests only;
# TSAN_KUBE_SCRIPTS names other scripts.
TSAN_CC     ?= clang
TSAN_CFLAGS  = -O1 -g -fsanitize=thread -fno-omit-frame-pointer
tsan:
	@$(DEPS_SH) test
	@$(MAKE) --no-print-directory B=build/tsan CC=$(TSAN_CC) CFLAGS="$(TSAN_CFLAGS)" \
	  LDFLAGS="-fsanitize=thread" $(patsubst $(B)/%,build/tsan/%,$(UNIT_BIN) $(KIT_BIN) \
	  $(CONTROLLER) $(WORKER) $(TOOLS))
	@tests/tsan.sh build/tsan

BANNED = sprintf|strcpy|strcat|atoi|strtok|gets
lint:
	@$(DEPS_SH) test
	@echo "lint: banned functions"
	@! grep -nE '(^|[^_a-zA-Z0-9.>])($(BANNED))[[:space:]]*\(' controller/src/*.[ch] worker-image/src/*.[ch] \
	  || { echo "lint: banned function used (see above)"; exit 1; }
	@echo "lint: cppcheck"
	@cppcheck --quiet --error-exitcode=1 --enable=warning,portability --inline-suppr \
	  --suppress=missingIncludeSystem -Icontroller/src controller/src worker-image/src

# The README's first command: on a fresh machine it installs what the demo needs (the same
# step as `make test`) before anything is compiled.
demo:
	@$(DEPS_SH) test
	@$(MAKE) --no-print-directory all
	@tests/demo/demo.sh

bench:
	@$(DEPS_SH) test
	@$(MAKE) --no-print-directory all
	@for b in bench/*.sh; do [ -x "$$b" ] && "$$b"; done

# End to end on a real control plane: RabbitMQ, kube-apiserver + Job controller, the node
# simulator, controller and worker (tests/e2e/run.sh). E2E="burst trickle" picks scenarios.
e2e:
	@$(DEPS_SH) test
	@$(MAKE) --no-print-directory all
	@B=$(abspath $(B)) tests/e2e/run.sh $(E2E)

# libFuzzer targets, one per parser that reads another program's bytes (tests/fuzz/fuzz_<t>.c,
# seeds in tests/fuzz/corpus/<t>/, dictionary tests/fuzz/<t>.dict), each run for FUZZ_SECONDS
# under ASan and UBSan by tests/fuzz/run.sh. FUZZ="kube rmq" picks targets. The modules are
# built once with the fuzzer's coverage into build/fuzz/ctrl (the ordinary object rule, B=build/fuzz).
FUZZ_SECONDS ?= 30
FUZZ_CC      ?= clang
FUZZ_ALL      = config rfc3339 retry_after watch_lines kube watch rmq kubeconfig worker conns \
                metrics_http
FUZZ         ?= $(FUZZ_ALL)
# The modules each links: those of the module's unit test, so a new dependency is added once.
FUZZ_DEPS_config      = $(DEPS_test_config)
FUZZ_DEPS_rfc3339     = $(DEPS_test_util)
FUZZ_DEPS_retry_after = $(DEPS_test_http)
FUZZ_DEPS_watch_lines = $(DEPS_test_http)
FUZZ_DEPS_kube        = $(DEPS_test_kube)
FUZZ_DEPS_rmq         = $(DEPS_test_rmq)
FUZZ_DEPS_kubeconfig  = $(DEPS_test_kubeconfig)
FUZZ_DEPS_watch       = $(DEPS_kit_kube)
FUZZ_DEPS_worker      = util log err
FUZZ_DEPS_conns       = $(DEPS_test_conns)
FUZZ_DEPS_metrics_http = $(DEPS_test_metrics)
FUZZ_WDEPS_worker     = amqp_conn message task
# The client targets answer every request from the input (tests/fuzz/fuzz_seam.h).
FUZZ_WRAP_kube        = -Wl,--wrap=http_request
FUZZ_WRAP_rmq         = -Wl,--wrap=http_request
FUZZ_WRAP_watch       = -Wl,--wrap=http_request,--wrap=http_stream
FUZZ_CFLAGS = -O1 -g -fsanitize=address,undefined,fuzzer-no-link -fno-sanitize-recover=all \
              -fno-omit-frame-pointer
# Two steps: make expands a whole recipe (its pkg-config calls) before running its first line.
fuzz:
	@$(DEPS_SH) test
	@$(MAKE) --no-print-directory B=build/fuzz CC=$(FUZZ_CC) CFLAGS="$(FUZZ_CFLAGS)" \
	  $(patsubst %,build/fuzz/fuzz_%,$(FUZZ))
	@FUZZ_SECONDS=$(FUZZ_SECONDS) tests/fuzz/run.sh build/fuzz $(FUZZ)

$(B)/fuzz_%: tests/fuzz/fuzz_%.c tests/fuzz/fuzz_seam.h $$(addprefix $(B)/ctrl/,$$(addsuffix .o,$$(FUZZ_DEPS_$$*))) $$(addprefix $(B)/worker/,$$(addsuffix .o,$$(FUZZ_WDEPS_$$*))) | build-deps
	$(CC) $(ALL_CFLAGS) -fsanitize=fuzzer -Itests/fuzz -Iworker-image/src $(filter %.c %.o,$^) -o $@ \
	  $(FUZZ_WRAP_$*) $(LDLIBS)

clean:
	rm -rf build controller/jobpool-controller worker-image/jobpool-worker

-include $(shell find $(B) -name '*.d' 2>/dev/null)
