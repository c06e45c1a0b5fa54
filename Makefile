# Each target creates .venv when it is missing, so a fresh clone needs only Python 3.11.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test lint typecheck bench clean

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	@touch $(STAMP)

demo: $(STAMP)
	$(BIN)/voicecall demo

test: $(STAMP)
	$(BIN)/ruff check .
	$(MAKE) --no-print-directory typecheck
	$(BIN)/python -m pytest -q

lint: $(STAMP)
	$(BIN)/ruff check .

typecheck: $(STAMP)
	rm -rf .typecheck && $(BIN)/pip install --quiet --no-deps --target .typecheck .
	MYPYPATH=.typecheck $(BIN)/mypy -p voicecall

bench: $(STAMP)
	$(BIN)/python -m bench

clean:
	rm -rf $(VENV) .typecheck build *.egg-info
