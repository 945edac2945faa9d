# The two commands of the README: `make demo` and `make test`.
# Both create (or reuse) .venv and install what they need into it.
PYTHON ?= python3
VENV ?= .venv
# Installed first and on its own: a bare `torch` requirement would pull a multi-GB CUDA build.
TORCH ?= torch==2.13.0
EXTRAS ?= dev,plots,postgres,tensorboard,wandb
BIN := $(VENV)/bin

.PHONY: demo test lint bench clean-venv

$(BIN)/hamgraph: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet "$(TORCH)"
	$(BIN)/python -m pip install --quiet -e ".[$(EXTRAS)]"
	touch $@

demo: $(BIN)/hamgraph
	$(BIN)/hamgraph run configs/quickstart.yaml

test: $(BIN)/hamgraph
	$(BIN)/ruff check .
	$(BIN)/python -m pytest -n 2 --dist loadfile -q

lint: $(BIN)/hamgraph
	$(BIN)/ruff check .

bench: $(BIN)/hamgraph
	$(BIN)/python benchmarks/ham_step.py

clean-venv:
	rm -rf $(VENV)
