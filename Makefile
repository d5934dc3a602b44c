# Quick start: `make demo` and `make test`. Each sets up .venv by itself.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
TORCH := torch==2.13.0
LOCK := constraints.txt

# The lock pins the versions CI was green with, for the Python it was made with; on another Python the
# ranges in pyproject.toml decide (with a warning), since wheels of those exact versions may not exist there.
LOCK_PYTHON := $(shell sed -n 's/^# python: //p' $(LOCK))
PYTHON_VERSION := $(shell $(PYTHON) -c 'import sys; print("%d.%d" % sys.version_info[:2])')
CONSTRAINTS := $(if $(filter $(LOCK_PYTHON),$(PYTHON_VERSION)),-c $(LOCK),)

.PHONY: demo test venv lock clean

venv: $(STAMP)

# torch is installed first and pinned, so that the ranges in pyproject.toml
# never pull a multi-GB CUDA build from the registry.
$(STAMP): pyproject.toml $(LOCK)
	@[ -n "$(CONSTRAINTS)" ] || echo "warning: $(LOCK) is for Python $(LOCK_PYTHON), this is $(PYTHON_VERSION): installing from the ranges in pyproject.toml"
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --upgrade pip $(CONSTRAINTS)
	$(BIN)/python -m pip install "$(TORCH)" $(CONSTRAINTS)
	$(BIN)/python -m pip install -e ".[test]" "$(TORCH)" $(CONSTRAINTS)
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/semiseg demo --out demo-output --overwrite

test: $(STAMP)
	$(BIN)/python -m pytest

# Regenerate the lock from the ranges in pyproject.toml, in a throw-away venv; commit it once `make test` passes.
lock:
	rm -rf .lock-venv
	$(PYTHON) -m venv .lock-venv
	.lock-venv/bin/python -m pip install --upgrade pip
	.lock-venv/bin/python -m pip install "$(TORCH)"
	.lock-venv/bin/python -m pip install -e ".[test]" "$(TORCH)"
	{ echo "# Versions the test suite passed with (pip constraints; made by 'make lock', read by the Makefile)."; \
	  echo "# python: $(PYTHON_VERSION)"; \
	  .lock-venv/bin/python -m pip freeze --all --exclude-editable | sed 's/+[a-z0-9.]*$$//'; } > $(LOCK).new
	mv $(LOCK).new $(LOCK)
	rm -rf .lock-venv

clean:
	rm -rf $(VENV) demo-output
