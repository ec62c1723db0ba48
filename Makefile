# Each user-facing target sets itself up first: a fresh Debian machine needs only `make`.
PY      ?= python3
VENV    := .venv
BIN     := $(VENV)/bin
STAMP   := $(VENV)/.installed
NPMSTAMP := web/node_modules/.installed
HOST    ?= 127.0.0.1
PORT    ?= 8080
PYTEST_ARGS ?=

.PHONY: setup system-deps demo test bench lint typecheck wheel clean
.PHONY: sdist

# npm first: the wheel (even an editable one) force-includes Chart.js from web/node_modules.
$(STAMP): pyproject.toml $(NPMSTAMP)
	$(PY) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	touch $@

$(NPMSTAMP): web/package.json web/package-lock.json
	cd web && npm ci --no-audit --no-fund
	touch $@

# Debian's chromium (browser tests), prometheus/promtool (integration tests) and openssl
# (a TLS test makes its certificate with it).
system-deps:
	@missing=""; \
	command -v chromium >/dev/null 2>&1 || missing="$$missing chromium"; \
	command -v prometheus >/dev/null 2>&1 || missing="$$missing prometheus"; \
	command -v openssl >/dev/null 2>&1 || missing="$$missing openssl"; \
	if [ -n "$$missing" ]; then \
	  echo "installing from apt:$$missing"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing; \
	fi

setup: $(STAMP) $(NPMSTAMP)

demo: setup
	$(BIN)/hyperdash demo --host $(HOST) --port $(PORT)

test: setup system-deps lint typecheck
	$(BIN)/python -m pytest $(PYTEST_ARGS)

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
	rm -rf $(VENV) web/node_modules dist artifacts .pytest_cache
