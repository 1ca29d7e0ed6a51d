# Two commands: `make demo` and `make test`. Both set everything up on a fresh machine first.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# Tools the processing code runs (OCR, PDF rendering, media), speech for test clips, and the
# deployment checks (promtool, node for the dashboard type check), pg_dump for backups on PostgreSQL.
APT_PACKAGES := tesseract-ocr tesseract-ocr-eng poppler-utils ffmpeg espeak-ng prometheus fonts-dejavu-core nodejs npm postgresql-client
SYSTEM_TOOLS := tesseract pdftoppm ffmpeg ffprobe espeak-ng promtool node npm pg_dump
POSTGRES_TEST_URL ?= postgresql+psycopg2://postgres@127.0.0.1:5432/test

.PHONY: setup system-packages demo test test-sqlite test-postgres lint format bench check-deploy worker scheduler clean

setup: system-packages $(VENV)/.installed

system-packages:
	@missing=""; for tool in $(SYSTEM_TOOLS); do command -v $$tool >/dev/null 2>&1 || missing="$$missing $$tool"; done; \
	if [ -n "$$missing" ]; then \
		if [ "$$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then \
			echo "installing system packages for:$$missing"; \
			apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $(APT_PACKAGES) >/dev/null; \
		else \
			echo "missing system tools:$$missing"; \
			echo "install them as root: apt-get install $(APT_PACKAGES)"; exit 1; \
		fi; \
	fi

$(VENV)/.installed: requirements.txt requirements-dev.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -r requirements-dev.txt
	touch $@

demo: setup
	$(BIN)/python -m cli demo

worker: setup
	$(BIN)/dramatiq actors -p $${WORKER_PROCESSES:-2} -t $${WORKER_THREADS:-8}

scheduler: setup
	$(BIN)/python scheduler.py

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

format: setup
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

test: lint test-sqlite test-postgres

test-sqlite: setup
	$(BIN)/pytest

# The same suite against PostgreSQL when one answers on 127.0.0.1:5432.
test-postgres: setup
	@if $(BIN)/python -c "import socket; socket.create_connection(('127.0.0.1', 5432), 1)" 2>/dev/null; then \
		TEST_DATABASE_URL=$(POSTGRES_TEST_URL) $(BIN)/pytest; \
	else \
		echo "no PostgreSQL on 127.0.0.1:5432: skipping the PostgreSQL run"; \
	fi

# Also run by the suite (tests/observability); handy on its own after editing docker/.
check-deploy: setup
	bash docker/check.sh

bench: setup
	$(BIN)/python -m bench.throughput
	$(BIN)/python -m bench.documents
	$(BIN)/python -m bench.media
	$(BIN)/python -m bench.market
	$(BIN)/python -m bench.scheduler

clean:
	rm -rf var .pytest_cache .mypy_cache .ruff_cache
