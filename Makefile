# The two commands of README.md: `make bench` sets up and runs a benchmark, `make test`
# runs the tests. Everything else here serves them.
VENV   ?= .venv
PYTHON ?= python3
N      ?= 1000000
BIN     = $(VENV)/bin

# The locks: requirements.lock holds every extra (what `make setup`, so CI, installs); the
# images' locks, the same versions, hold what each Dockerfile stage needs. `make lock
# LOCK_FLAGS=` re-resolves only what pyproject.toml's changes need, keeping the other pins.
LOCK_FLAGS ?= --upgrade
COMPILE     = $(BIN)/uv pip compile pyproject.toml --generate-hashes --python-version 3.11 --universal $(LOCK_FLAGS)

.PHONY: setup bench test lint lab lock clean

# The locked versions, checked against their hashes, then the harness itself (editable, its
# dependencies already there): what CI tested. Without the lock: README.md, "Installing".
$(BIN)/harness: pyproject.toml requirements.lock
	scripts/ensure-redis
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet --require-hashes -r requirements.lock
	$(BIN)/pip install --quiet --no-deps -e .
	$(BIN)/python -m compileall -q harness  # where PYTHONDONTWRITEBYTECODE is set (CI's machines) every command compiled ~50 modules: 55 ms
	$(BIN)/pip check
	$(BIN)/python scripts/check-lock  # every extra's requirements met, else: run `make lock`
	touch $@

setup: $(BIN)/harness  ## create .venv with the harness, every extra and the test tools, from requirements.lock
	scripts/git-filters $(BIN)/python  # notebooks' outputs never show as changes in git (README)

bench: setup  ## run a benchmark of N orders (default 1,000,000) and print its summary
	$(BIN)/harness run -n $(N)

test: setup lint  ## lint and type-check, then the test suite against real Redis and workers
	$(BIN)/pytest

lint: setup
	$(BIN)/ruff check .
	$(BIN)/mypy harness

# JupyterLab serves the checkout (so a sweep's link to its report opens), opened at the
# notebooks (harness/notebooks/, package data);
# runs and reports land in the checkout's data/ and reports/, as from the command line.
lab: setup  ## open the notebooks in JupyterLab, the project's .venv as the kernel
	$(BIN)/jupyter lab --ServerApp.root_dir=. --LabApp.default_url=/lab/tree/harness/notebooks \
		$(if $(filter 0,$(shell id -u)),--allow-root)

lock:  ## re-resolve requirements.lock and the images' locks to the newest versions pyproject.toml allows
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	test -x $(BIN)/uv || $(BIN)/pip install --quiet 'uv>=0.13'
	$(COMPILE) --all-extras -o requirements.lock
	$(COMPILE) --extra mongo --extra postgres -c requirements.lock -o requirements-worker.lock
	$(COMPILE) --extra mongo --extra postgres --extra notebooks --extra api -c requirements.lock -o requirements-harness.lock

clean:
	rm -rf $(VENV) data *.egg-info test-artifacts
