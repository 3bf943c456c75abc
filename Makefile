# The two commands of README.md: `make bench` sets up and runs a benchmark, `make test`
# runs the tests. Everything else here serves them.
VENV   ?= .venv
PYTHON ?= python3
N      ?= 1000000
BIN     = $(VENV)/bin

.PHONY: setup bench test lint lab clean

$(BIN)/harness: pyproject.toml
	scripts/ensure-redis
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[mongo,notebooks,api,test]'
	touch $@

setup: $(BIN)/harness  ## create .venv with the harness, every extra and the test tools

bench: setup  ## run a benchmark of N orders (default 1,000,000) and print its summary
	$(BIN)/harness run -n $(N)

test: setup lint  ## lint and type-check, then the test suite against real Redis and workers
	$(BIN)/pytest

lint: setup
	$(BIN)/ruff check .
	$(BIN)/mypy harness

# JupyterLab serves the checkout (so a sweep's link to its report opens), opened at notebooks/;
# runs and reports land in the checkout's data/ and reports/, as from the command line.
lab: setup  ## open the notebooks in JupyterLab, the project's .venv as the kernel
	$(BIN)/jupyter lab --ServerApp.root_dir=. --LabApp.default_url=/lab/tree/notebooks \
		$(if $(filter 0,$(shell id -u)),--allow-root)

clean:
	rm -rf $(VENV) data *.egg-info test-artifacts
