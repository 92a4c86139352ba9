# tcpkit: `make run` runs the gate pipeline, `make test` runs every check.
# Both bootstrap .venv themselves and re-install only when pyproject.toml changed.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
PROFILE ?= full
# pytest and nbval spread their tests over this many worker processes (pytest-xdist; 0: none)
TEST_WORKERS ?= 2

export PYDEVD_DISABLE_FILE_VALIDATION := 1
export MPLBACKEND := Agg

.PHONY: run test lint typecheck pytest nbval lab bench bench-loop clean venv

venv: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	$(BIN)/python -m ipykernel install --sys-prefix --name python3 --display-name "Python 3 (tcpkit)" >/dev/null
	touch $(STAMP)

# the gate pipeline, then the production detector on an event log no gate has seen (seed 424242)
DETECT_LOG := reports/events/simulated.parquet
run: $(STAMP)
	$(BIN)/tcpkit run --profile $(PROFILE)
	mkdir -p reports/events
	$(BIN)/tcpkit simulate --agents 5000 --seed 424242 --out $(DETECT_LOG) --labels reports/events/labels.csv
	$(BIN)/tcpkit detect $(DETECT_LOG) --window-events 50 --reference-windows 5 \
	  --json reports/alerts.json --csv reports/alerts.csv --html reports/alerts.html

test: $(STAMP) lint typecheck pytest nbval

lint: $(STAMP)
	$(BIN)/ruff check tcpkit tests

typecheck: $(STAMP)
	$(BIN)/mypy

pytest: $(STAMP)
	$(BIN)/pytest -q -n $(TEST_WORKERS)

# every notebook top to bottom with its quick defaults; errors fail, outputs are not compared
# (--dist loadscope keeps each notebook's cells in order on one process, in one kernel)
nbval: $(STAMP)
	$(BIN)/pytest -q -n $(TEST_WORKERS) --dist loadscope --nbval-lax -p no:cacheprovider notebooks/

# IPython reads <venv>/etc/ipython/ for every kernel of the venv; this file loads %tcpkit only in
# kernels that a Jupyter server starts for a notebook (gate runs by papermill are left alone)
IPYTHON_CONFIG := $(VENV)/etc/ipython/ipython_kernel_config.py

$(IPYTHON_CONFIG): tcpkit/templates/ipython_kernel_config.py $(STAMP)
	mkdir -p $(dir $@) && cp $< $@

lab: $(STAMP) $(IPYTHON_CONFIG)
	$(BIN)/jupyter lab --notebook-dir=notebooks $(if $(filter 0,$(shell id -u)),--allow-root,)

bench: $(STAMP)
	$(BIN)/tcpkit bench --json

# the researcher's loop: where a DEVELOPMENT run's time goes, then the three loop times of
# README.md ("Measured on the 2-core development machine") in a fresh copy of the project
LOOP_COMPONENT ?= performance
bench-loop: $(STAMP)
	PYTHONPATH=$(CURDIR) $(BIN)/python scripts/bench_loop.py phases $(LOOP_COMPONENT) --profile quick
	PYTHONPATH=$(CURDIR) $(BIN)/python scripts/bench_loop.py targets --component $(LOOP_COMPONENT)

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
