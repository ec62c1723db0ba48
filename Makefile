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

# npm first: the wheel (even an editable one) force-includes Chart.js from web/node_modules.
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

bench: setup
	$(BIN)/python -m bench

lint: $(STAMP)
	$(BIN)/ruff check hyperdash_otel tests bench

typecheck: $(STAMP)
	$(BIN)/mypy

wheel: setup
	$(BIN)/python -m build --wheel --outdir dist .

clean:
	rm -rf $(VENV) web/node_modules tests/engines/firefox/node_modules dist artifacts .pytest_cache
