# Each user-facing target sets itself up first: a fresh Debian machine needs only `make`.
PY      ?= python3
VENV    := .venv
BIN     := $(VENV)/bin
STAMP   := $(VENV)/.installed
NPMSTAMP := web/node_modules/.installed
FFSTAMP := tests/engines/firefox/node_modules/.installed
HOST    ?= 127.0.0.1
PORT    ?= 8080
PYTEST_ARGS ?=

.PHONY: setup system-deps demo test bench lint typecheck wheel clean
.PHONY: sdist test-pythons test-fallback

# npm first, tracked by a stamp: the checkout's server serves Chart.js from web/node_modules
# (hatch_build.py runs npm ci only when it is missing, and refuses a stale one).
$(STAMP): pyproject.toml $(NPMSTAMP)
	$(PY) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	touch $@

$(NPMSTAMP): web/package.json web/package-lock.json
	cd web && npm ci --no-audit --no-fund
	touch $@

# puppeteer-core for the Firefox checks (tests/engines); it never downloads a browser.
$(FFSTAMP): tests/engines/firefox/package.json tests/engines/firefox/package-lock.json
	cd tests/engines/firefox && npm ci --no-audit --no-fund
	touch $@

# Debian's chromium (browser tests), prometheus/promtool (integration tests) and openssl
# (a TLS test makes its certificate with it); firefox-esr, webkit2gtk-driver (WebKitWebDriver,
# and MiniBrowser through its libwebkit2gtk dependency) and xvfb for tests/engines.
system-deps:
	@missing=""; \
	command -v chromium >/dev/null 2>&1 || missing="$$missing chromium"; \
	command -v prometheus >/dev/null 2>&1 || missing="$$missing prometheus"; \
	command -v prometheus-alertmanager >/dev/null 2>&1 || missing="$$missing prometheus-alertmanager"; \
	command -v openssl >/dev/null 2>&1 || missing="$$missing openssl"; \
	command -v firefox-esr >/dev/null 2>&1 || missing="$$missing firefox-esr"; \
	command -v WebKitWebDriver >/dev/null 2>&1 || missing="$$missing webkit2gtk-driver"; \
	command -v Xvfb >/dev/null 2>&1 || missing="$$missing xvfb"; \
	if [ -n "$$missing" ]; then \
	  echo "installing from apt:$$missing"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing; \
	fi

setup: $(STAMP) $(NPMSTAMP) $(FFSTAMP)

demo: setup
	$(BIN)/hyperdash demo --host $(HOST) --port $(PORT)

test: setup system-deps lint typecheck
	$(BIN)/python -m pytest $(PYTEST_ARGS)
	$(MAKE) --no-print-directory test-fallback

# The suites again with the third-party internals switched off: the server suite without
# the fan-out's fast write path (hyperdash_otel/server/_tornado_fast.py), the OpenTelemetry
# suites without the SDK's private hooks (hyperdash_otel/_otel_internal.py). The fallbacks
# a release outside the tested range gets must serve just as well.
test-fallback: setup
	HYPERDASH_FAST_PATH=0 $(BIN)/python -m pytest tests/server -q -p no:cacheprovider $(PYTEST_ARGS)
	HYPERDASH_OTEL_INTERNALS=0 $(BIN)/python -m pytest tests/test_otel_otlp.py \
	  tests/test_otel_settings.py tests/test_otel_global.py tests/test_otel_http.py \
	  tests/test_otel_internal.py -q -p no:cacheprovider $(PYTEST_ARGS)

bench: setup
	$(BIN)/python -m bench

lint: $(STAMP)
	$(BIN)/ruff check hyperdash_otel tests bench hatch_build.py

typecheck: $(STAMP)
	$(BIN)/mypy
	$(BIN)/mypy --strict hatch_build.py

wheel: setup
	$(BIN)/python -m build --wheel --outdir dist .

# The sdist carries the pinned Chart.js build, so the wheel `build` makes from it (and any
# `pip install` of it) needs no npm.
sdist: setup
	$(BIN)/python -m build --sdist --outdir dist .

clean:
	rm -rf $(VENV) .venv-3.* web/node_modules tests/engines/firefox/node_modules dist artifacts \
	  .pytest_cache

# The Python suite (not the browser, integration and packaging suites, which `make test` runs
# once) on every minor version from requires-python's minimum to the newest classifier,
# each in its own .venv-3.X. `make test` covers $(PY)'s version; this target the others.
# An interpreter is python3.X on PATH, or pyenv's; override with PYTHON_3.X=/path/to/python.
PYTHONS       ?= 3.10 3.11 3.12 3.13
PY_VERSION    := $(shell $(PY) -c 'import sys; print("%d.%d" % sys.version_info[:2])')
OTHER_PYTHONS := $(filter-out $(PY_VERSION),$(PYTHONS))
PYENV_ROOT    ?= $(HOME)/.pyenv
SUITE_ARGS    := -q -p no:cacheprovider \
                 -m "not browser and not integration and not packaging and not firefox and not webkit" \
                 --ignore=tests/browser --ignore=tests/integration --ignore=tests/packaging \
                 --ignore=tests/engines --ignore=tests/soak

.venv-%/.installed: pyproject.toml $(NPMSTAMP)
	@py="$(PYTHON_$*)"; \
	if [ -z "$$py" ] && python$* -c '' 2>/dev/null; then py=$$(command -v python$*); fi; \
	[ -n "$$py" ] || py=$$(ls -d $(PYENV_ROOT)/versions/$*.*/bin/python$* 2>/dev/null | sort -V | tail -n 1); \
	if [ -z "$$py" ]; then \
	  echo "python$* not found: install it (pyenv install $*) or set PYTHON_$*=/path/to/python$*" >&2; \
	  exit 1; \
	fi; \
	echo "Python $*: $$py"; \
	rm -rf .venv-$* && $$py -m venv .venv-$*
	.venv-$*/bin/pip install --quiet --upgrade pip
	.venv-$*/bin/pip install --quiet -e '.[test]'
	touch $@

# Every version runs, even after one fails; the target fails if any did, naming them.
test-pythons: $(foreach v,$(OTHER_PYTHONS),.venv-$(v)/.installed)
	@failed=""; for v in $(OTHER_PYTHONS); do \
	  echo "== Python $$v"; \
	  .venv-$$v/bin/python -m pytest $(SUITE_ARGS) $(PYTEST_ARGS) || failed="$$failed $$v"; \
	done; \
	if [ -n "$$failed" ]; then echo "test-pythons: failed on Python$$failed" >&2; exit 1; fi
