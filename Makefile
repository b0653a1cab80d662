# promgate — build, test, demo, bench.
#
#   make            build build/ngx_http_promgate_module.so against the
#                   installed nginx (Debian's nginx-dev tree), or against
#                   NGINX_SRC=/path/to/nginx-x.y.z
#   make test       install what is missing, build, run unit + integration
#   make servers    current Prometheus/VictoriaMetrics/vmagent from Debian
#                   unstable into build/servers (t/servers.sh; no install)
#   make demo       nginx + module in front of Prometheus and VictoriaMetrics
#   make bench      benchmarks (never part of make test; also installs the
#                   bench-only valgrind and gnuplot-nox: t/deps.sh bench)

SHELL       := /bin/bash
BUILD       ?= build
ABS_BUILD   := $(abspath $(BUILD))
NGINX_SRC   ?= /usr/share/nginx/src
NGINX_BIN   ?= /usr/sbin/nginx
PYTHON      ?= /usr/bin/python3
CC          ?= cc

MODULE      := $(BUILD)/ngx_http_promgate_module.so
NGX_TREE    := $(BUILD)/nginx
CORE_SRCS   := $(wildcard src/core/*.c)
CORE_HDRS   := $(wildcard src/core/*.h)
GLUE_SRCS   := $(wildcard src/ngx_http_promgate*.c) $(wildcard src/*.h)
PROTO_GEN   := $(BUILD)/proto/types.pb-c.c $(BUILD)/proto/remote.pb-c.c \
               $(BUILD)/proto/write_v2.pb-c.c
UNIT_SRCS   := $(wildcard t/unit/test_*.c)
UNIT_BINS   := $(patsubst t/unit/%.c,$(BUILD)/unit/%,$(UNIT_SRCS))

PKGS        := libprotobuf-c snappy rdkafka libpcre2-8 libxxhash
CORE_CFLAGS := -std=gnu99 -O2 -g -Wall -Wextra -Wno-unused-parameter \
               -Isrc/core -I$(BUILD)/proto \
               $(shell pkg-config --cflags $(PKGS) 2>/dev/null)
CORE_LIBS   := $(shell pkg-config --libs $(PKGS) 2>/dev/null) -lm

.PHONY: all module deps servers unit integration test demo demo-stop bench \
        bench-deps clean fuzz fuzz-smoke

all: module

# --------------------------------------------------------------- dependencies

deps:
	@bash t/deps.sh

# Prometheus 3.5.x, promtool, VictoriaMetrics and vmagent 1.145.x (Debian
# sid, trixie as fallback) unpacked into build/servers/root; the integration
# suite runs against them and against Debian 12's (t/integration/servers.py)
servers:
	@bash t/servers.sh

# --------------------------------------------------------------------- module

$(BUILD)/proto/%.pb-c.c: proto/%.proto proto/types.proto
	@mkdir -p $(BUILD)/proto
	protoc-c --c_out=$(BUILD)/proto -Iproto $<

$(NGX_TREE)/objs/Makefile: config $(CORE_SRCS) $(GLUE_SRCS) $(PROTO_GEN)
	rm -rf $(NGX_TREE)
	mkdir -p $(BUILD)
	cp -r $(NGINX_SRC) $(NGX_TREE)
	cd $(NGX_TREE) && \
	if [ -f conf_flags ]; then . ./conf_flags; \
	else NGX_CONF_FLAGS=(--with-compat --with-threads); fi; \
	PROMGATE_PROTO_DIR=$(ABS_BUILD)/proto ./configure "$${NGX_CONF_FLAGS[@]}" \
	    $(NGINX_CONFIGURE_FLAGS) --add-dynamic-module=$(CURDIR) >configure.log \
	    || { tail -30 configure.log; exit 1; }

$(MODULE): $(NGX_TREE)/objs/Makefile $(CORE_SRCS) $(CORE_HDRS) $(GLUE_SRCS)
	$(MAKE) -s -f objs/Makefile -C $(NGX_TREE) modules
	cp $(NGX_TREE)/objs/ngx_http_promgate_module.so $@.tmp && mv -f $@.tmp $@

module: $(MODULE)

# ---------------------------------------------------------------------- tests

# the test Kafka broker: librdkafka's mock cluster as a process (t/kafka_mock.c)
KAFKA_MOCK  := $(BUILD)/kafka_mock

$(KAFKA_MOCK): t/kafka_mock.c
	@mkdir -p $(BUILD)
	$(CC) -std=gnu99 -O2 -g -Wall -Wextra -Wno-unused-parameter -o $@ $< \
	    $(shell pkg-config --cflags --libs rdkafka 2>/dev/null)

$(BUILD)/unit/%: t/unit/%.c $(CORE_SRCS) $(CORE_HDRS) $(PROTO_GEN)
	@mkdir -p $(BUILD)/unit
	$(CC) $(CORE_CFLAGS) -o $@ $< $(CORE_SRCS) $(PROTO_GEN) \
	    $(CORE_LIBS) -lcmocka

unit: $(UNIT_BINS)
	@rc=0; for t in $(UNIT_BINS); do \
	    echo "== $$t"; $$t || rc=1; done; exit $$rc

integration: $(MODULE) $(KAFKA_MOCK) servers
	PROMGATE_REQUIRE_CURRENT=1 KAFKA_MOCK=$(abspath $(KAFKA_MOCK)) \
	    PROMGATE_MODULE=$(abspath $(MODULE)) NGINX_BIN=$(NGINX_BIN) \
	    $(PYTHON) -m pytest -q -p no:cacheprovider t/integration $(PYTEST_ARGS)

test: deps
	$(MAKE) module
	$(MAKE) unit
	$(MAKE) fuzz-smoke
	$(MAKE) integration

# ----------------------------------------------------------------------- demo

demo: deps module servers
	@bash t/demo.sh start

demo-stop:
	@bash t/demo.sh stop

# ---------------------------------------------------------------------- bench

# bench-only packages (valgrind, gnuplot-nox): t/deps.sh bench; make test
# does not need them
bench-deps:
	@bash t/deps.sh bench

bench: deps bench-deps module servers
	@bash bench/run.sh

clean:
	rm -rf $(BUILD)

# ----------------------------------------------------------------- robustness

FUZZ_SECONDS ?= 60

.PHONY: test-asan

# every libFuzzer target (fuzz/*.c) for FUZZ_SECONDS each
fuzz: $(PROTO_GEN)
	FUZZ_SECONDS=$(FUZZ_SECONDS) bash t/fuzz.sh run

# seed corpora plus a few seconds of fuzzing per target (part of make test)
fuzz-smoke: $(PROTO_GEN)
	bash t/fuzz.sh smoke

# nginx 1.22.1 and the module built with ASan+UBSan, integration suite on it
test-asan: deps servers
	bash t/asan.sh

# faults under load with the long durations (30 s outages, 20 reloads);
# make test runs the short ones (t/integration/test_fault_load.py)
.PHONY: fault-test
fault-test: module
	FAULT_LONG=1 PROMGATE_MODULE=$(abspath $(MODULE)) NGINX_BIN=$(NGINX_BIN) \
	    $(PYTHON) -m pytest -q -p no:cacheprovider -rs \
	    t/integration/test_fault_load.py $(PYTEST_ARGS)
