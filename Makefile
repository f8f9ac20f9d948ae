# Set-up is part of every target: a fresh clone needs nothing but Python >= 3.11.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: demo test lint

demo: $(VENV)/.installed
	$(BIN)/mcdrop demo

test: $(VENV)/.installed
	$(BIN)/python -m pytest

lint: $(VENV)/.installed
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/lint-imports

# The folders keep their names at the root (pipeline/, serving/) and install as mcdrop.pipeline and
# mcdrop.serving, which an editable install provides through an import hook. setuptools prints a notice
# about that hook ("be careful with folders ... with the same name as your package"); it does not apply
# here (no folder is named mcdrop), so it is filtered by its text. Static tools cannot run the hook:
# .typecheck/mcdrop/ gets two links that give the folders their installed names for mypy (made here, not
# committed; see README "Architecture").
$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	PYTHONWARNINGS="ignore:Editable installation" $(BIN)/python -m pip install --quiet -e '.[train,ray,dev]'
	mkdir -p .typecheck/mcdrop
	ln -sfn ../../pipeline .typecheck/mcdrop/pipeline
	ln -sfn ../../serving .typecheck/mcdrop/serving
	touch $@
