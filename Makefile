# Set-up is part of every target: a fresh clone needs nothing but Python >= 3.11.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: demo test test-fast lint docs docs-serve

demo: $(VENV)/.installed
	$(BIN)/mcdrop demo

# Two worker processes: most tests wait on child processes, servers and imports, so two share two cores well
# (tests/workers.py says what they share). PYTEST_WORKERS=0 runs the suite in this process.
PYTEST_WORKERS ?= 2
PYTEST_PARALLEL := $(if $(filter 0,$(PYTEST_WORKERS)),,-n $(PYTEST_WORKERS) --dist loadfile)

test: $(VENV)/.installed
	$(BIN)/python -m pytest $(PYTEST_PARALLEL)

test-fast: $(VENV)/.installed
	$(BIN)/python -m pytest $(PYTEST_PARALLEL) -m "not slow"

# The manual (docs/, mkdocs.yml): strict, so a broken link, anchor or an orphan page is an error.
docs: $(VENV)/.installed
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict --site-dir site

docs-serve: $(VENV)/.installed
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs serve --strict --dev-addr 127.0.0.1:8000

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
	PYTHONWARNINGS="ignore:Editable installation" $(BIN)/python -m pip install --quiet -e '.[train,ray,dev,docs]'
	mkdir -p .typecheck/mcdrop
	ln -sfn ../../pipeline .typecheck/mcdrop/pipeline
	ln -sfn ../../serving .typecheck/mcdrop/serving
	touch $@
