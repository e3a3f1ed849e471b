# Daily verbs. Each target that runs code depends on `venv`, so it works alone on a fresh clone.
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-stamp
ARGS   ?=

.PHONY: venv train test test-fast coverage lint format typecheck bench eval study clean

venv: $(STAMP)                     ## make venv CPU=1: CPU-only torch wheels

# CPU=1: torch/torchvision as CPU-only wheels from PyTorch's CPU index (a few hundred MB instead
# of several GB of CUDA libraries on Linux); everything else still comes from PyPI.
CPU    ?=
TORCH_INDEX := $(if $(CPU),--index-url https://download.pytorch.org/whl/cpu --extra-index-url https://pypi.org/simple)

# Re-installs only when pyproject.toml changes. torch/torchvision come from the
# pinned pair in pyproject (on Linux pip resolves CUDA wheels unless CPU=1).
$(STAMP): pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q $(TORCH_INDEX) -e '.[dev]'
	touch $(STAMP)

train: venv                        ## default job on the embedded synthetic data (ARGS="objective=triplet ...")
	$(PY) -m vlr.train $(ARGS)

eval: venv                         ## make eval ARGS="ckpt_path=outputs/.../checkpoints/best.ckpt"
	$(PY) -m vlr.eval $(ARGS)

# one pytest worker per core, at most 4 (each holds torch and its runs in memory); a test file's
# tests stay in one worker (its module fixtures run once). PYTEST_WORKERS=0: in this process.
PYTEST_WORKERS ?= auto
XDIST := $(if $(filter 0,$(PYTEST_WORKERS)),-p no:xdist,-n $(PYTEST_WORKERS) --maxprocesses=4 --dist loadfile)

test: venv                         ## the whole suite, slow tests included (what CI runs)
	$(PY) -m pytest $(XDIST) $(ARGS)

test-fast: venv                    ## skip training runs and the few real processes (-m 'not slow')
	$(PY) -m pytest -m "not slow" $(XDIST) $(ARGS)

# every process the suite starts is measured too (pytest workers, CLI runs, DDP ranks, loader
# workers): [tool.coverage.run] in pyproject.toml
coverage: venv                     ## line coverage of vlr/ over the whole suite: a table, and htmlcov/
	rm -rf .coverage .coverage.* htmlcov
	$(PY) -m coverage run -m pytest $(XDIST) -q $(ARGS)
	$(PY) -m coverage combine -q
	$(PY) -m coverage report --skip-covered --sort=cover
	$(PY) -m coverage html -q

lint: venv                         ## ruff lint + format check + mypy on vlr/ (what CI runs before the tests)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

format: venv                       ## apply ruff's fixes and formatting
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

typecheck: venv                    ## mypy on vlr/ alone (make lint runs it too)
	$(VENV)/bin/mypy

bench: venv                        ## writes experiments/bench/latest.json and prints a table
	$(PY) -m experiments.bench.run $(ARGS)

study: venv                        ## imbalance study (issue 27; resumable): experiments/imbalance/{results.json,report.md,*.png}
	$(PY) -m experiments.imbalance.study $(ARGS)

clean:
	rm -rf outputs multirun .pytest_cache .coverage .coverage.* htmlcov
