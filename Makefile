# rvbbit: LLM workflows from SQL, a PostgreSQL extension.
#
#   make demo    install what is missing, build, start a throwaway server
#                and run the examples (mock provider unless an API key is set)
#   make test    install what is missing, build, run every test suite
#                against the host's PostgreSQL 15
#   make test PG=17 (or 18, 15)  the same against that major version, in a
#                cached Debian chroot (.build/) that carries it
#   make test PG=all  15, 17 and 18, and the Debian package of each (what CI runs)
#   make deb PG=N  build .build/deb/postgresql-N-rvbbit_<version>_amd64.deb
#   make bench   the benchmark harness (prints figures, asserts nothing)
#   make profile instructions per MAP row in the backend and the worker (callgrind)
#   make test-repeat N=5   the TAP suites N times in a row under a CPU hog,
#                reporting every test that failed in any run
#
# The PGXS part is included only when pg_config and the server headers are
# there; demo and test install them first (tests/scripts/deps.sh).

EXTENSION = rvbbit
MODULE_big = rvbbit
OBJS = src/rvbbit.o src/guc.o src/shmem.o src/bgw.o src/pool.o src/channel.o src/worker.o src/worker_stmt.o src/worker_task.o src/worker_db.o src/http.o src/http1.o \
       src/map.o src/catalog.o src/options.o src/providers.o src/exec.o src/stmt.o src/registry.o src/progress.o src/mapscan.o src/rewrite.o src/jobs.o src/jobs_runner.o src/request.o src/estimate.o src/ratelimit.o src/budget.o src/rverror.o src/rvtext.o src/template.o \
       src/jsonschema.o src/rvyaml.o src/cascade.o src/llm.o src/syntax.o src/colbuf.o \
       src/gateway_sup.o
DATA = sql/rvbbit--0.1.sql sql/rvbbit--0.1--0.2.sql sql/rvbbit--0.2--0.3.sql sql/rvbbit--0.3--0.4.sql
PGFILEDESC = "rvbbit - LLM workflows from SQL"

# pg_regress suites, run against a temporary instance with the library
# preloaded (tests/scripts/regress.sh writes the configuration file).
REGRESS = init cascades run errors privileges map statements costs batch names providers security budgets stream
REGRESS_OPTS = --temp-instance=tmp_check --temp-config=$(RVBBIT_TEST_CONF) \
               --load-extension=rvbbit
RVBBIT_TEST_CONF ?= tests/rvbbit_test.conf

PKG_DEPS = libcurl json-c yaml-0.1
# The server code builds with -Wall -Wextra, as pg_cron does; make test adds
# -Werror (COPT).  -Wno-unused-parameter because PostgreSQL's own headers
# (lib/ilist.h, storage/bufpage.h) and its callback signatures (fmgr,
# hooks, signal handlers) have parameters a function need not use.
PG_CFLAGS = -Wall -Wextra -Wno-unused-parameter
PG_CPPFLAGS = -I$(srcdir)/src $(shell pkg-config --cflags $(PKG_DEPS) 2>/dev/null)
SHLIB_LINK = $(shell pkg-config --libs $(PKG_DEPS) 2>/dev/null) -lm
EXTRA_CLEAN = src/gateway/rvbbit-gateway tmp_check results regression.diffs regression.out log \
              tests/unit/*.log

PG_CONFIG ?= $(firstword $(wildcard /usr/lib/postgresql/15/bin/pg_config) pg_config)
PGXS := $(shell $(PG_CONFIG) --pgxs 2>/dev/null)

ifneq ($(wildcard $(PGXS)),)
include $(PGXS)

# out-of-tree (VPATH) builds, as Debian's pg_buildext makes them, need the
# object directory
ifdef VPATH
$(shell mkdir -p src/gateway)
endif

# PGXS does not track header dependencies: rebuild everything when one changes
$(OBJS): $(wildcard $(srcdir)/src/*.h)

# the example cascades go to $(sharedir)/extension/rvbbit_cascades; the
# RVBBIT examples' names ('traits/extract_brand.yaml', ...) are there too
RVBBIT_TRAITS = extract_brand classify_sentiment
# rvbbit-gateway: a separate program (no server headers), installed next to
# the server's binaries; the supervisor worker (src/gateway_sup.c) runs it
GW_SRCS = src/gateway/gw_main.c src/gateway/gw_buf.c src/gateway/gw_rewrite.c src/rvtext.c
src/gateway/rvbbit-gateway: $(GW_SRCS) src/gateway/gw.h src/rvtext.h
	$(CC) -std=gnu99 -O2 -g -Wall -Wextra $(COPT) -o $@ $(filter %.c,$^) -lssl -lcrypto
all: src/gateway/rvbbit-gateway
install: install-gateway
install-gateway: src/gateway/rvbbit-gateway
	$(MKDIR_P) '$(DESTDIR)$(bindir)'
	$(INSTALL_PROGRAM) src/gateway/rvbbit-gateway '$(DESTDIR)$(bindir)/rvbbit-gateway'
uninstall: uninstall-gateway
uninstall-gateway:
	rm -f '$(DESTDIR)$(bindir)/rvbbit-gateway'
.PHONY: install-gateway uninstall-gateway

# the example cascades go to $(sharedir)/extension/rvbbit_cascades
install: install-cascades
install-cascades:
	$(MKDIR_P) '$(DESTDIR)$(datadir)/extension/rvbbit_cascades/traits'
	$(INSTALL_DATA) $(srcdir)/cascades/*.yaml '$(DESTDIR)$(datadir)/extension/rvbbit_cascades/'
	$(INSTALL_DATA) $(addprefix $(srcdir)/cascades/,$(addsuffix .yaml,$(RVBBIT_TRAITS))) \
		'$(DESTDIR)$(datadir)/extension/rvbbit_cascades/traits/'
uninstall: uninstall-cascades
uninstall-cascades:
	rm -rf '$(DESTDIR)$(datadir)/extension/rvbbit_cascades'
.PHONY: install-cascades uninstall-cascades
else
all install installcheck:
	@echo "pg_config with the PostgreSQL server headers was not found."
	@echo "Run 'make demo' or 'make test' (they install what is missing),"
	@echo "or install postgresql-server-dev-15, libcurl4-openssl-dev, libjson-c-dev, libyaml-dev."
	@exit 1
endif

demo:
	bash tests/scripts/demo.sh

demo-stop:
	bash tests/scripts/demo.sh stop

# PG selects the PostgreSQL major version(s) of make test and make deb
PG ?=

test:
ifeq ($(PG),)
	bash tests/scripts/test.sh
else
	bash tests/scripts/test_all.sh $(PG)
endif

deb:
ifeq ($(PG),15)
	bash tests/scripts/deb.sh build 15 .build/deb
	@ls .build/deb/postgresql-15-rvbbit_*.deb
else ifneq ($(PG),)
	bash tests/scripts/chroot.sh $(PG) deb
else
	@echo "usage: make deb PG=N (15, 17 or 18)"; exit 2
endif

bench:
	bash tests/bench/bench.sh

profile:
	bash tests/bench/profile.sh

# the seed's MAP PARALLEL example against a real llama.cpp llama-server
# (builds it from npm's node-llama-cpp source under build/; needs a GGUF model)
test-real-server:
	bash tests/scripts/real_server.sh

# make test-repeat N=5: the TAP suites N times in a row under a CPU hog
N ?= 5
test-repeat:
	bash tests/scripts/test-repeat.sh $(N)

unit:
	$(MAKE) -C tests/unit check

.PHONY: demo demo-stop test test-repeat deb bench profile unit test-real-server
