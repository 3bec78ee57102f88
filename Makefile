# `make run` serves the API on http://127.0.0.1:5000; `make test` runs every test.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
FLASK := APP_ENV=development LOG_FORMAT=console $(BIN)/flask --app wsgi
HOST ?= 127.0.0.1
PORT ?= 5000

HAVE_NPM := $(shell command -v npm 2>/dev/null)
NODE_STAMP := tests/betterauth/node_modules/.installed
CLIENT_DIR := clients/typescript
CLIENT_STAMP := $(CLIENT_DIR)/node_modules/.installed
# The Better Auth and TypeScript client tests need Node.js; without npm they skip (and
# fail in CI).
TEST_DEPS := $(STAMP) $(if $(HAVE_NPM),$(NODE_STAMP) $(CLIENT_STAMP))

# `make test COV_FAIL_UNDER=95` fails below that branch coverage (CI passes it; a laptop
# without PostgreSQL, Redis or Node.js skips tests and reaches less, so no floor by default).
COV_FAIL_UNDER ?=
# The locks are compiled from setup.cfg; no index, find-links or host lands in them.
PIP_COMPILE := CUSTOM_COMPILE_COMMAND="make lock" $(BIN)/pip-compile --quiet --generate-hashes \
  --allow-unsafe --strip-extras --no-emit-index-url --no-emit-find-links --no-emit-trusted-host

.PHONY: install run test lint format lock openapi client check-client bench clean

install: $(STAMP)

$(NODE_STAMP): tests/betterauth/package.json tests/betterauth/package-lock.json
	npm ci --prefix tests/betterauth --no-audit --no-fund --loglevel=error
	touch $(NODE_STAMP)

$(CLIENT_STAMP): $(CLIENT_DIR)/package.json $(CLIENT_DIR)/package-lock.json
	npm ci --prefix $(CLIENT_DIR) --no-audit --no-fund --loglevel=error
	touch $(CLIENT_STAMP)

# requirements-dev.txt is the whole lock (runtime + dev tools, pip itself included), hashed.
# --no-deps: the lock already lists every package, and the venv's first pip (the one
# Python bundles) would otherwise look up an extra a package asks for, such as
# pytest-cov's coverage[toml], on the index, take a newer release than the lock's and
# refuse it as unpinned. pip check then proves the locked set is complete and consistent.
$(STAMP): requirements.txt requirements-dev.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --no-deps --require-hashes -r requirements-dev.txt
	$(BIN)/python -m pip check
	touch $(STAMP)

run: install
	$(FLASK) db upgrade
	@TOKEN=$$($(FLASK) dev-token demo-user --minutes 1440 2>/dev/null) && \
	  printf '\nTry it:\n  curl -H "Authorization: Bearer %s" http://$(HOST):$(PORT)/api/demo-user/tasks\n\n' "$$TOKEN" || true
	$(FLASK) run --host $(HOST) --port $(PORT)

test: $(TEST_DEPS)
	$(BIN)/pytest --cov --cov-report=term-missing:skip-covered \
	  $(if $(COV_FAIL_UNDER),--cov-fail-under=$(COV_FAIL_UNDER)) $(PYTEST_ARGS)

lint: install check-client
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

# The TypeScript client's generated types must be what openapi.json makes now, and the
# client must compile against them. Without npm: a note on a laptop, a failure in CI.
check-client: $(if $(HAVE_NPM),$(CLIENT_STAMP))
ifeq ($(HAVE_NPM),)
	@if [ "$$CI" = true ]; then echo "CI must check the TypeScript client: npm is not installed" >&2; exit 1; fi
	@echo "check-client skipped: it needs Node.js 20+ and npm"
else
	npm run --prefix $(CLIENT_DIR) --silent check
endif

format: install
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

# Recompile requirements.txt, then requirements-dev.txt within its pins, from setup.cfg.
# Pins already in the files are kept while they fit; `make lock LOCK_ARGS=--upgrade`
# (or `LOCK_ARGS='-P flask'`) moves them.
lock: install
	$(PIP_COMPILE) $(LOCK_ARGS) --output-file requirements.txt setup.cfg
	$(PIP_COMPILE) $(LOCK_ARGS) --extra dev --constraint requirements.txt \
	  --output-file requirements-dev.txt setup.cfg

openapi: install
	$(FLASK) openapi write openapi.json
	@$(if $(HAVE_NPM),$(MAKE) --no-print-directory client,echo "make client (needs npm) regenerates the TypeScript client's types")

# The TypeScript client's types from openapi.json, then the client built to dist/.
client: $(CLIENT_STAMP)
	npm run --prefix $(CLIENT_DIR) --silent generate
	npm run --prefix $(CLIENT_DIR) --silent build

bench: install
	$(BIN)/python -m bench.list_queries

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .mypy_cache .coverage htmlcov build \
	  tests/betterauth/node_modules $(CLIENT_DIR)/node_modules $(CLIENT_DIR)/dist $(CLIENT_DIR)/build
