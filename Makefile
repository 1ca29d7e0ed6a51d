# Two commands: `make demo` and `make test`. Both set everything up on a fresh machine first.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# Tools the processing code runs (OCR, PDF rendering, media), speech for test clips, and the
# deployment checks (promtool, node for the dashboard type check), pg_dump for backups on PostgreSQL,
# Chromium for the console's browser tests (Playwright drives Debian's build; it downloads none).
# Each tool maps to the Debian package that provides it; only the packages of missing tools are
# installed, so a working node/npm from elsewhere (NodeSource bundles npm) is never replaced.
SYSTEM_TOOLS := tesseract:tesseract-ocr pdftoppm:poppler-utils ffmpeg:ffmpeg ffprobe:ffmpeg \
	espeak-ng:espeak-ng promtool:prometheus node:nodejs npm:npm pg_dump:postgresql-client \
	chromium:chromium file:file
# Packages the tools need but that provide no command of their own.
APT_EXTRAS := tesseract-ocr-eng fonts-dejavu-core libmagic1
# The password is planted: trust auth ignores it, and tests/core/test_security.py proves it leaks nowhere.
POSTGRES_TEST_URL ?= postgresql+psycopg2://postgres:planted-pg-password@127.0.0.1:5432/test
RABBITMQ_TEST_URL ?= amqp://guest:guest@127.0.0.1:5672/%2F
# The middleware suite (retries, time limits, callbacks, job status, cancel, rate limits, metrics,
# maintenance), run again with RabbitMQ as the broker.
MIDDLEWARE_TESTS := tests/core/test_job_lifecycle.py tests/core/test_cancel_and_rate_limit.py \
	tests/core/test_time_limits.py tests/core/test_metrics.py tests/core/test_maintenance.py \
	tests/core/test_cli.py tests/core/test_broker_recovery.py

.PHONY: setup system-packages demo serve test test-sqlite test-postgres test-rabbitmq lint format bench check-deploy worker scheduler clean

setup: system-packages $(VENV)/.installed

system-packages:
	@missing=""; packages=""; for pair in $(SYSTEM_TOOLS); do tool=$${pair%%:*}; package=$${pair#*:}; \
		if ! command -v $$tool >/dev/null 2>&1; then missing="$$missing $$tool"; \
			case " $$packages " in *" $$package "*) ;; *) packages="$$packages $$package";; esac; fi; \
	done; \
	if [ -n "$$missing" ]; then \
		if [ "$$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then \
			echo "installing system packages for:$$missing ->$$packages"; \
			apt-get update -qq || exit 1; \
			if ! apt-get install -s -qq --no-install-recommends $$packages $(APT_EXTRAS) >/dev/null; then \
				echo "apt cannot install$$packages $(APT_EXTRAS) without a conflict; nothing was changed"; exit 1; \
			fi; \
			DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$packages $(APT_EXTRAS) >/dev/null; \
		else \
			echo "missing system tools:$$missing"; \
			echo "install them as root: apt-get install$$packages $(APT_EXTRAS)"; exit 1; \
		fi; \
	fi

$(VENV)/.installed: requirements.txt requirements-dev.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -r requirements-dev.txt
	touch $@

demo: setup
	$(BIN)/python -m cli demo

serve: setup
	$(BIN)/python -m cli serve

worker: setup
	$(BIN)/python -m worker actors -p $${WORKER_PROCESSES:-2} -t $${WORKER_THREADS:-8}

scheduler: setup
	$(BIN)/python scheduler.py

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

format: setup
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

test: lint test-sqlite test-postgres test-rabbitmq

test-sqlite: setup
	$(BIN)/pytest

# The same suite against PostgreSQL when one answers on 127.0.0.1:5432.
test-postgres: setup
	@if $(BIN)/python -c "import socket; socket.create_connection(('127.0.0.1', 5432), 1)" 2>/dev/null; then \
		TEST_DATABASE_URL=$(POSTGRES_TEST_URL) $(BIN)/pytest; \
	else \
		echo "no PostgreSQL on 127.0.0.1:5432: skipping the PostgreSQL run"; \
	fi

# The middleware suite again on RabbitMQ when one answers on 127.0.0.1:5672 (Redis still holds cancels,
# rate limits, results and the worker registry).
test-rabbitmq: setup
	@if $(BIN)/python -c "import socket; socket.create_connection(('127.0.0.1', 5672), 1)" 2>/dev/null; then \
		TEST_BROKER_URL='$(RABBITMQ_TEST_URL)' $(BIN)/pytest $(MIDDLEWARE_TESTS); \
	else \
		echo "no RabbitMQ on 127.0.0.1:5672: skipping the RabbitMQ run"; \
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
	$(BIN)/python -m bench.http

clean:
	rm -rf var .pytest_cache .mypy_cache .ruff_cache
