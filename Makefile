# Everything a fresh clone needs is installed here: `make test` and `make train` work alone.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp
DATA   ?= data
ARGS   ?=

.PHONY: install data train test bench tensorboard lint clean

install: $(STAMP)

# PyPI's torch wheel brings its CUDA libraries even to CPU-only machines: a new virtualenv
# takes ~6 GiB, and pip out of space fails minutes in, so say so before starting.
VENV_KIB := 6291456

# Reinstalls only when pyproject.toml changes.
$(STAMP): pyproject.toml
	@test -x $(BIN)/python || [ $$(df -Pk . | awk 'NR==2 {print $$4}') -ge $(VENV_KIB) ] || \
	  { echo "error: the virtualenv needs ~6 GiB (torch and its CUDA libraries); $$(df -Ph . | awk 'NR==2 {print $$4}') free here" >&2; exit 1; }
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip setuptools wheel
	$(BIN)/python -m pip install -q -e '.[dev,sweeps,optuna]'
	touch $(STAMP)

# Idempotent: files already present are only verified (md5), not fetched again.
data: install
	$(BIN)/python -m mlplab.data.sources mnist fashion --root "$(DATA)"

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

# The virtualenv only: runs, sweeps and checkpoints under outputs/ are results, never removed here.
clean:
	rm -rf $(VENV)
