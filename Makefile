# Two commands do everything on a fresh clone:
#   make test   set up .venv, lint (ruff) and run every default test (unit tests + nbval on the notebooks)
#   make book   set up .venv, execute the book's chapters and build the HTML into _build/html
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-stamp

.PHONY: setup test test-slow book clean data gpu-check

setup: $(STAMP)

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[dev]"
	@touch $(STAMP)

test: $(STAMP)
	$(VENV)/bin/ruff check ndlib tests tools
	$(PY) -m pytest --nbval-lax tests notebooks book

test-slow: $(STAMP)
	$(PY) -m pytest -m slow tests

# MathJax is vendored into the book (so its formulas render offline) from the npm registry;
# without npm the page falls back to loading MathJax from its CDN when viewed.
MATHJAX := _mathjax/tex-svg.js
$(MATHJAX):
	@mkdir -p $(@D)
	@if command -v npm >/dev/null 2>&1 && (cd $(@D) && npm pack --silent mathjax@3.2.2 >/dev/null 2>&1); then \
	    tar -xzf $(@D)/mathjax-3.2.2.tgz -C $(@D) --strip-components=2 package/es5/tex-svg.js; \
	    rm -f $(@D)/mathjax-3.2.2.tgz; echo "MathJax 3.2.2 vendored into $(@D): formulas render offline"; \
	else \
	    cp book/assets/mathjax-cdn-loader.js $@; echo "npm unavailable: formulas will load MathJax from its CDN when viewed"; \
	fi

book: $(STAMP) $(MATHJAX)
	rm -rf _build
	$(VENV)/bin/jupyter-book build . --all --builder html -W -n --keep-going

# Unpack the offline CIFAR-10 and CIFAR-100 copies beside the project (../shared/data) into data/,
# each archive checked against its SHA-256.
data: $(STAMP)
	$(PY) ../shared/data/unpack.py --out data/

# Prove the GPU path in one command (under 8 minutes on one H100/H200): layers on CUDA vs float64
# on the CPU, every model in float32 / AMP / channels_last, the Table 1 bench, one epoch of VGG-16
# BN and ND on CIFAR-10 from DATA (skipped if absent). Uses the machine's own python3 and torch
# (>= 2.4), no venv: make gpu-check OUT=gpu-check-out [DATA=data] [QUICK=1]. See ndlib/checks/gpu.py.
DATA       ?= data
GPU_PYTHON ?= python3
gpu-check:
	@test -n "$(OUT)" || { echo "make gpu-check needs OUT=<folder for the results>"; exit 2; }
	PYTHONPATH=. $(GPU_PYTHON) -m ndlib.checks.gpu --out "$(OUT)" --data-dir "$(DATA)" $(if $(QUICK),--quick,)

clean:
	rm -rf _build .pytest_cache
