# Two commands on a fresh machine: `make demo` and `make test`.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp
DEMO   ?= demo-out

.PHONY: install demo test lint bench clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[tf,airflow,dev]'
	touch $(STAMP)

install: $(STAMP)

demo: install
	DEMO=$(DEMO) BIN=$(BIN) bash scripts/demo.sh

lint: install
	$(BIN)/ruff check .
	$(BIN)/mypy

test: lint
	$(BIN)/python -m pytest -q -rs

bench: install
	$(BIN)/python benchmarks/prepare_throughput.py
	$(BIN)/python benchmarks/download_throughput.py
	$(BIN)/python benchmarks/store_throughput.py
	$(BIN)/python benchmarks/orchestration_overhead.py
	$(BIN)/python benchmarks/train_throughput.py
	$(BIN)/python benchmarks/metrics_throughput.py
	$(BIN)/python benchmarks/projection_throughput.py
	$(BIN)/python benchmarks/rerun_wall_time.py
	rm -rf $(DEMO) && DEMO=$(DEMO) BIN=$(BIN) bash scripts/demo.sh  # ends with demo_wall_time.py

clean:
	rm -rf $(VENV) $(DEMO) .pytest_cache .mypy_cache .ruff_cache
