# Everything a fresh clone needs is installed here: `make test` and `make train` work alone.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp
DATA   ?= data
ARGS   ?=

.PHONY: install data train test bench tensorboard lint clean

install: $(STAMP)

# Reinstalls only when pyproject.toml changes.
$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip setuptools wheel
	$(BIN)/python -m pip install -q -e '.[dev,sweeps,optuna]'
	touch $(STAMP)

# Idempotent: files already present are only verified (md5), not fetched again.
data: install
	$(BIN)/python -m mlplab.data.sources mnist fashion --root $(DATA)

train: data
	$(BIN)/python src/train.py $(ARGS)

test: data
	$(BIN)/python -m pytest -q $(ARGS)

bench: data
	$(BIN)/python -m mlplab.bench $(ARGS)

tensorboard: install
	$(BIN)/tensorboard --logdir outputs

lint: install
	$(BIN)/ruff check src tests

clean:
	rm -rf $(VENV) outputs/runs outputs/multirun
