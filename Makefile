# Quick start: `make demo`, then `make test`. Both install into .venv when needed.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.ctadeface-installed
DEMO   ?= demo

.PHONY: install demo test lint bench clean-demo open-model

install: $(STAMP)

$(STAMP): requirements.txt requirements/app.txt requirements/verify.txt pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements.txt
	$(PY) -m pip install --quiet --no-deps -r requirements/verify.txt
	$(PY) -m pip install --quiet --no-deps --no-build-isolation -e .
	@touch $(STAMP)

demo: install
	$(PY) -m ctadeface.demo $(DEMO)

lint: install
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .
	$(PY) -m mypy

test: install lint
	$(PY) -m pytest -q

# The speed benchmark (minutes; a quiet machine): bench/README.md, results in bench/results/.
bench: install
	$(PY) -m bench.benchmark
	$(PY) -m bench.memory

clean-demo:
	rm -rf $(DEMO)

# Retrain the shipped open face model from its seed (CPU, about 1-2 h; see its MODEL_CARD.md).
open-model: install
	bench/train_open_model.sh build/open_model 0
