# `make run` serves the API on http://127.0.0.1:5000; `make test` runs every test.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
FLASK := APP_ENV=development LOG_FORMAT=console $(BIN)/flask --app wsgi
HOST ?= 127.0.0.1
PORT ?= 5000

NODE_STAMP := tests/betterauth/node_modules/.installed
# The Better Auth tests need Node.js; without npm they skip (and fail in CI).
TEST_DEPS := $(STAMP) $(if $(shell command -v npm 2>/dev/null),$(NODE_STAMP))

.PHONY: install run test lint format openapi bench clean

install: $(STAMP)

$(NODE_STAMP): tests/betterauth/package.json tests/betterauth/package-lock.json
	npm ci --prefix tests/betterauth --no-audit --no-fund --loglevel=error
	touch $(NODE_STAMP)

$(STAMP): requirements.txt requirements-dev.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -r requirements-dev.txt
	touch $(STAMP)

run: install
	$(FLASK) db upgrade
	@TOKEN=$$($(FLASK) dev-token demo-user --minutes 1440 2>/dev/null) && \
	  printf '\nTry it:\n  curl -H "Authorization: Bearer %s" http://$(HOST):$(PORT)/api/demo-user/tasks\n\n' "$$TOKEN" || true
	$(FLASK) run --host $(HOST) --port $(PORT)

test: $(TEST_DEPS)
	$(BIN)/pytest $(PYTEST_ARGS)

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: install
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

openapi: install
	$(FLASK) openapi write openapi.json

bench: install
	$(BIN)/python -m bench.list_queries

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache tests/betterauth/node_modules
