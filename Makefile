# `make demo` and `make test` work on a fresh machine: each creates .venv when missing and installs into it.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# torch 2.14.1 / torchvision 0.29.1 are the releases these machines hold locally; any version in range works.
TORCH_PINS := "torch>=2.3,<2.15" "torchvision>=0.18,<0.30"
DEMO_STORAGE ?= $(CURDIR)/demo-runs

.PHONY: demo test test-all install install-test clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

$(VENV)/.installed: $(BIN)/python pyproject.toml
	$(BIN)/pip install --quiet $(TORCH_PINS)
	$(BIN)/pip install --quiet -e .
	touch $@

$(VENV)/.installed-test: $(VENV)/.installed
	$(BIN)/pip install --quiet -e ".[test]"
	touch $@

install: $(VENV)/.installed
install-test: $(VENV)/.installed-test

demo: install
	$(BIN)/tune-eskd sweep --space quick --storage $(DEMO_STORAGE) --name quick --scheduler asha --overwrite
	$(BIN)/tune-eskd report $(DEMO_STORAGE)/quick

# `make test` is the quick default: it skips the tests marked slow, end-to-end runs that start their own Ray (the
# fault runs: driver SIGKILL at each stage, a killed worker, a lost node, a stopped sweep; the SIGKILL-then-resume,
# Ctrl-C and two-node runs; the token-auth cluster; the Optuna and ASHA resumes, Optuna with ASHA). `make test-all` runs every test, slow ones included; CI (.ci/run) runs it.
# Timeouts (pytest-timeout): 10 minutes a test, 30 a slow one (pyproject.toml, tests/conftest.py).
test: install-test
	$(BIN)/python -m pytest -q -m "not slow" tests

test-all: install-test
	$(BIN)/python -m pytest -q tests

clean:
	rm -rf $(DEMO_STORAGE) .pytest_cache
