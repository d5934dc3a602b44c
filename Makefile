# Quick start: `make demo` and `make test`. Each sets up .venv by itself.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
TORCH := torch==2.13.0

.PHONY: demo test venv clean

venv: $(STAMP)

# torch is installed first and pinned, so that the ranges in pyproject.toml
# never pull a multi-GB CUDA build from the registry.
$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --upgrade pip
	$(BIN)/python -m pip install "$(TORCH)"
	$(BIN)/python -m pip install -e ".[test]" "$(TORCH)"
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/semiseg demo --out demo-output --overwrite

test: $(STAMP)
	$(BIN)/python -m pytest

clean:
	rm -rf $(VENV) demo-output
