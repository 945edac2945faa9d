# The two commands of the README: `make demo` and `make test` (what CI runs: .ci/run).
# Both create (or reuse) .venv and install what they need into it.
PYTHON ?= python3
VENV ?= .venv
# Installed first and on its own: a bare `torch` requirement would pull a multi-GB CUDA build.
TORCH ?= torch==2.13.0
EXTRAS ?= dev,docs,plots,postgres,tensorboard,wandb
BIN := $(VENV)/bin

.PHONY: demo test docs lint bench clean-venv

$(BIN)/hamgraph: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet "$(TORCH)"
	$(BIN)/python -m pip install --quiet -e ".[$(EXTRAS)]"
	touch $@

demo: $(BIN)/hamgraph
	$(BIN)/hamgraph run configs/quickstart.yaml

# The docs build comes last: the site is part of what a change must keep working.
test: $(BIN)/hamgraph
	$(BIN)/ruff check .
	$(BIN)/python -m pytest -n 2 --dist loadfile -q
	$(MAKE) --no-print-directory docs

# The documentation site (mkdocs.yml) into site/; warnings (broken links, missing pages or
# API references) are errors.
docs: $(BIN)/hamgraph
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict --quiet

lint: $(BIN)/hamgraph
	$(BIN)/ruff check .

bench: $(BIN)/hamgraph
	$(BIN)/python benchmarks/ham_step.py

clean-venv:
	rm -rf $(VENV)
