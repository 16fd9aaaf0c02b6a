# The Factory - build, test, bench.
#
#   make            build bin/factory-* (dynamic, for development)
#   make test       every test: unit (Criterion), integration (real binaries
#                   against the doubles), then all again under ASan+UBSan;
#                   ends with one "N passed, N failed" line
#   make demo       the main job on its embedded default (see README)
#   make static     fully static binaries in bin/ (see scripts/static-deps.sh)
#   make bench      benchmarks in bench/ (figures into bench/results/)
#   make lint       clang-tidy and cppcheck
#
# Layout is discovered: common/*.c -> libfactory.a, jobs/<name>/*.c ->
# bin/factory-<name>, tests/unit/*_test.c -> one Criterion binary each.

CC      ?= cc
PKGS    ?= libcurl libcjson libgit2 libpcre2-8 yaml-0.1 libmicrohttpd zlib
VERSION ?= $(shell cat VERSION 2>/dev/null || echo 0.1.0)

SAN ?= 0
ifeq ($(SAN),1)
  BUILD ?= build-san
  BIN   ?= build-san/bin
  SANFLAGS = -fsanitize=address,undefined -fno-sanitize-recover=undefined -fno-omit-frame-pointer
  OPT = -O1
else
  BUILD ?= build
  BIN   ?= bin
  SANFLAGS =
  OPT = -O2
endif

STATIC ?= 0
ifeq ($(STATIC),1)
  PKG_CFLAGS := $(shell pkg-config --static --cflags $(PKGS))
  PKG_LIBS   := $(shell pkg-config --static --libs $(PKGS))
  STATIC_LDFLAGS = -static
else
  PKG_CFLAGS := $(shell pkg-config --cflags $(PKGS) 2>/dev/null)
  PKG_LIBS   := $(shell pkg-config --libs $(PKGS) 2>/dev/null)
  STATIC_LDFLAGS =
endif

WARN    = -Wall -Wextra -Wno-missing-field-initializers -Wshadow -Wformat=2 -Wvla
CFLAGS  ?= $(OPT) -g
ALL_CFLAGS = -std=gnu11 $(WARN) $(CFLAGS) $(SANFLAGS) -Icommon $(PKG_CFLAGS) \
	-DFACTORY_VERSION=\"$(VERSION)\" -MMD -MP
LDFLAGS ?=
ALL_LDFLAGS = $(LDFLAGS) $(SANFLAGS) $(STATIC_LDFLAGS)
LIBS    = $(PKG_LIBS) -lm -lpthread

COMMON_SRC := $(wildcard common/*.c)
COMMON_OBJ := $(COMMON_SRC:%.c=$(BUILD)/%.o)
LIB        := $(BUILD)/libfactory.a

JOB_DIRS := $(patsubst jobs/%/main.c,%,$(wildcard jobs/*/main.c))
JOB_BINS := $(JOB_DIRS:%=$(BIN)/factory-%)

UNIT_SRC  := $(wildcard tests/unit/*_test.c)
UNIT_BINS := $(UNIT_SRC:tests/unit/%.c=$(BUILD)/tests/%)

FUZZ_SRC  := $(wildcard tests/fuzz/fuzz_*.c)

.PHONY: all test test-unit test-integration demo static bench lint clean unit-bins fuzz
.SECONDEXPANSION:

all: $(JOB_BINS)

$(BUILD)/%.o: %.c
	@mkdir -p $(dir $@)
	$(CC) $(ALL_CFLAGS) -c -o $@ $<

$(LIB): $(COMMON_OBJ)
	@mkdir -p $(dir $@)
	rm -f $@
	ar rcs $@ $^

PCT := %
$(BIN)/factory-%: $$(patsubst $$(PCT).c,$(BUILD)/$$(PCT).o,$$(wildcard jobs/$$*/*.c)) $(LIB)
	@mkdir -p $(dir $@)
	$(CC) $(ALL_LDFLAGS) -o $@ $(filter %.o,$^) $(LIB) $(LIBS)

$(BUILD)/tests/%_test: $(BUILD)/tests/unit/%_test.o $(LIB)
	@mkdir -p $(dir $@)
	$(CC) $(ALL_LDFLAGS) -o $@ $< $(LIB) $(LIBS) -lcriterion

unit-bins: $(UNIT_BINS)

test:
	./tests/run.sh

demo: all
	./scripts/demo.sh

static:
	./scripts/static-build.sh

bench: all
	./bench/run.sh

lint:
	clang-tidy --quiet $(COMMON_SRC) $(wildcard jobs/*/*.c) -- -std=gnu11 -Icommon $(PKG_CFLAGS)
	cppcheck --quiet --error-exitcode=1 --enable=warning,portability --inline-suppr \
		--suppress=missingIncludeSystem -Icommon common jobs

clean:
	rm -rf build build-san bin build-fuzz

-include $(COMMON_OBJ:.o=.d) $(wildcard $(BUILD)/jobs/*/*.d) $(wildcard $(BUILD)/tests/unit/*.d)
