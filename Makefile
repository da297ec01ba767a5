# lws for Python: every target installs what it needs (Debian 12, run as root
# or with sudo available). See README.md.

SHELL := /bin/bash

PYTHON ?= python3
VENV := .venv
VENV435 := .venv-lws435
LWS435 := $(CURDIR)/vendor/prefix/lws-4.3.5
DEBS := libwebsockets-dev libwebsockets-evlib-uv libwebsockets-test-server pkg-config gcc make cmake \
        chromium chromium-driver \
        libssl-dev zlib1g-dev curl
PYTEST_ARGS ?=
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: all deps setup setup-435 build test test-416 test-435 demo lint typecheck \
        memcheck clean

all: setup

deps:
	@missing=""; for p in $(DEBS); do \
	  dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  echo "make: installing Debian packages:$$missing"; \
	  $(SUDO) apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq $$missing >/dev/null; \
	else echo "make: Debian packages present"; fi
	@$(PYTHON) -c 'import venv, ensurepip' 2>/dev/null || { \
	  echo "make: installing python3-venv"; \
	  DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq python3-venv >/dev/null; }

# The package, built against the system libwebsockets (Debian: 4.1.6).
$(VENV)/.installed: deps pyproject.toml setup.py build_lws.py $(wildcard lws/_cdef/*)
	@echo "make: creating $(VENV) and installing lws-cffi against the system libwebsockets"
	@[ -x $(VENV)/bin/python ] || $(PYTHON) -m venv $(VENV)
	@$(VENV)/bin/python -m pip install -q --upgrade pip
	@$(VENV)/bin/python -m pip install -q -e '.[test]'
	@touch $@

setup: $(VENV)/.installed

# The same package against upstream 4.3.5 built into vendor/prefix.
$(LWS435)/lib/pkgconfig/libwebsockets.pc: vendor/build-lws.sh
	@bash vendor/build-lws.sh

$(VENV435)/.installed: deps $(LWS435)/lib/pkgconfig/libwebsockets.pc pyproject.toml setup.py \
                       build_lws.py $(wildcard lws/_cdef/* lws/*.py lws/demo_site/*)
	@echo "make: creating $(VENV435) and installing lws-cffi against lws 4.3.5"
	@[ -x $(VENV435)/bin/python ] || $(PYTHON) -m venv $(VENV435)
	@$(VENV435)/bin/python -m pip install -q --upgrade pip
	@$(VENV435)/bin/python -m pip install -q '.[test]'
	@touch $@

setup-435: $(VENV435)/.installed

# Builds in place are shared by the editable install; the 4.3.5 venv gets its
# own copy (pip install .), so both can coexist.
$(VENV435)/.installed: export LWS_PREFIX = $(LWS435)

# Tests that compile C against the same lws find it through LWS_PREFIX.
test-435: export LWS_PREFIX = $(LWS435)
test-435: setup-435
	@echo "make: tests against libwebsockets 4.3.5"
	@cd tests && ../$(VENV435)/bin/python -m pytest -p no:cacheprovider -q \
	  --rootdir=.. -c ../pyproject.toml $(PYTEST_ARGS) .

test-416: setup
	@echo "make: tests against the system libwebsockets"
	@$(VENV)/bin/python -m pytest -q $(PYTEST_ARGS)

# Both lws versions; fails if either fails; ends with pytest's summary line.
test: setup setup-435
	@rc=0; \
	$(MAKE) --no-print-directory test-435 2>&1 | tee .test-435.log; rc435=$${PIPESTATUS[0]}; \
	$(MAKE) --no-print-directory test-416 2>&1 | tee .test-416.log; rc416=$${PIPESTATUS[0]}; \
	$(VENV)/bin/python tests/combine_summary.py .test-435.log .test-416.log; \
	[ $$rc435 = 0 ] && [ $$rc416 = 0 ]

demo: setup
	@$(VENV)/bin/python -m lws demo

lint: setup
	@$(VENV)/bin/python -m pip install -q ruff mypy
	@$(VENV)/bin/python -m ruff check lws tests examples
	@$(VENV)/bin/python -m mypy lws

# The lifetime tests under valgrind: any invalid read or write (a freed
# session buffer touched) fails the target. Uninitialised-value reports are
# off: CPython itself produces them and they are not what this hunts.
memcheck: setup
	@echo "make: valgrind over the lifetime tests (a few minutes)"
	@PYTHONMALLOC=malloc valgrind --error-exitcode=99 --undef-value-errors=no \
	  --errors-for-leak-kinds=none --suppressions=tests/valgrind.supp -q \
	  $(VENV)/bin/python -m pytest -q -p no:cacheprovider \
	  tests/test_lifetimes.py tests/test_lifecycle.py

clean:
	rm -rf $(VENV) $(VENV435) build dist *.egg-info lws/_lws.* .test-*.log

# The documentation: Sphinx + myst-parser over docs/*.md, the reference from
# the docstrings; warnings are errors. Output in build/docs/index.html. The
# docs extras are read from pyproject.toml, so the package is not rebuilt.
.PHONY: docs
docs: setup
	@$(VENV)/bin/python -c 'import tomllib; print("\n".join(tomllib.load(open("pyproject.toml", "rb"))["project"]["optional-dependencies"]["docs"]))' \
	  | xargs $(VENV)/bin/python -m pip install -q
	@echo "make: building the documentation (sphinx-build -W) into build/docs"
	@$(VENV)/bin/python -m sphinx -W --keep-going -b html docs build/docs

# -- benchmarks (bench/, see bench/README.md) ----------------------------------
# `make bench`: every server (C lws, the binding on 4.1.6 and 4.3.5, picows,
# websockets, aiohttp) against bench/loadclient.c; writes bench/results/.
# About 30 minutes; BENCH_ARGS=--quick for a few. `make bench-guard`: the
# short CI check (binding / C lws floor ratio), exit 1 below the floor.
BENCH_PKGS := picows websockets aiohttp uvloop matplotlib
BENCH_ARGS ?=

$(VENV)/.bench-installed: $(VENV)/.installed
	@echo "make: installing the benchmark peers into $(VENV): $(BENCH_PKGS)"
	@$(VENV)/bin/python -m pip install -q $(BENCH_PKGS)
	@touch $@

$(VENV435)/.bench-installed: $(VENV435)/.installed
	@$(VENV435)/bin/python -m pip install -q uvloop
	@touch $@

.PHONY: bench bench-guard
bench: $(VENV)/.bench-installed $(VENV435)/.bench-installed
	@$(VENV)/bin/python bench/run.py --python435 $(CURDIR)/$(VENV435)/bin/python \
	  --prefix435 $(LWS435) $(BENCH_ARGS)

bench-guard: $(VENV)/.bench-installed
	@$(VENV)/bin/python bench/guard.py

# -- the chat demo (python -m lws demo) in a real browser ---------------------
# `make test-browser`: the demo's protocol tests (websockets clients) and the
# headless Chromium test (two tabs chat; screenshots in artifacts/).
.PHONY: test-browser
test-browser: setup
	@echo "make: the chat demo under websockets clients and headless Chromium"
	@$(VENV)/bin/python -m pytest -q -p no:cacheprovider tests/test_demo.py tests/test_browser.py

# -- conformance and interop (conformance/, see docs/conformance.md) ----------
# `make conformance`: the whole Autobahn TestSuite (kosoku) against the
# binding and the C baseline (conformance/echo.c), server and client modes,
# compression sections with permessage-deflate, on lws 4.1.6 then 4.3.5;
# rewrites docs/conformance.md, HTML reports in artifacts/conformance/.
# Long (about an hour, mostly compression); CONFORMANCE_ARGS narrows it, e.g.
# CONFORMANCE_ARGS="--cases '1.*' --cases '9.*'".
CONFORMANCE_ARGS ?=

.PHONY: conformance memcheck-interop
conformance: setup setup-435
	@echo "make: Autobahn cases against the binding and C lws $$(pkg-config --modversion libwebsockets)"
	@$(VENV)/bin/python conformance/run.py $(CONFORMANCE_ARGS)
	@echo "make: Autobahn cases against the binding and C lws 4.3.5"
	@LWS_PREFIX=$(LWS435) $(VENV435)/bin/python conformance/run.py $(CONFORMANCE_ARGS)

# The interop tests (lws' C test apps, websockets) under valgrind, as
# `make memcheck` does for the lifetime tests: any invalid read or write
# fails the target.
memcheck-interop: setup
	@echo "make: valgrind over the interop tests (several minutes)"
	@PYTHONMALLOC=malloc valgrind --error-exitcode=99 --undef-value-errors=no \
	  --errors-for-leak-kinds=none --suppressions=tests/valgrind.supp -q \
	  $(VENV)/bin/python -m pytest -q -p no:cacheprovider -o timeout=900 \
	  tests/test_interop_c_apps.py tests/test_interop_websockets.py
