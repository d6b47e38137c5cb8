# Two commands for a fresh machine with Python 3.11: `make run` and `make test`.
PYTHON ?= python3.11
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-$(shell cat requirements.txt | cksum | cut -d' ' -f1)

.PHONY: run test lint format worker web migrate seed clean

$(STAMP): requirements.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --upgrade --quiet pip
	$(PY) -m pip install --quiet -r requirements.txt
	rm -f $(VENV)/.installed-*
	touch $(STAMP)

venv: $(STAMP)

## Set up, seed the demo and serve it with a worker at http://$HOST:$PORT (127.0.0.1:8000);
## the worker logs to var/worker.log; DEBUG=1 make run for Django's debug pages
run: $(STAMP)
	bash scripts/run.sh

## Set up and run the tests (SQLite + filesystem broker unless DATABASE_URL/CELERY_BROKER_URL are set)
test: $(STAMP)
	bash scripts/ensure_chromium.sh
	$(PY) -m pytest $(PYTEST_ARGS)

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: $(STAMP)
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

migrate: $(STAMP)
	$(PY) manage.py migrate --noinput

worker: $(STAMP)
	$(VENV)/bin/celery -A feedback_service worker -Q default,explain,cluster --loglevel=INFO

seed: $(STAMP)
	$(PY) manage.py seed_demo

clean:
	rm -rf var staticfiles .pytest_cache
