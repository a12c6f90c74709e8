# Two commands do everything on a fresh clone:
#   make test   set up .venv and run every default test (unit tests + nbval on the notebooks)
#   make book   set up .venv, execute the book's chapters and build the HTML into _build/html
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-stamp

.PHONY: setup test test-slow book clean data

setup: $(STAMP)

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[dev]"
	@touch $(STAMP)

test: $(STAMP)
	$(PY) -m pytest --nbval-lax tests notebooks book

test-slow: $(STAMP)
	$(PY) -m pytest -m slow tests

book: $(STAMP)
	rm -rf _build
	$(VENV)/bin/jupyter-book build . --all --builder html -W -n --keep-going

# Unpack the offline CIFAR-10 copy that sits beside the project (../shared/data).
data: $(STAMP)
	$(PY) ../shared/data/unpack.py --out data/

clean:
	rm -rf _build .pytest_cache
