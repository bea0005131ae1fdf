# Two commands on a fresh clone: `make demo` and `make test`. Both create .venv and install into it first.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
# torch and torchvision must be a matching pair; these install from the local package cache.
TORCH_PINS := torch==2.14.1 torchvision==0.29.1
STAMP := $(VENV)/.installed

.PHONY: setup demo test clean

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip

$(STAMP): pyproject.toml | $(PY)
	$(PY) -m pip install --quiet $(TORCH_PINS)
	$(PY) -m pip install --quiet -e ".[dev]" $(TORCH_PINS)
	touch $(STAMP)

setup: $(STAMP)  ## install into .venv (idempotent)

demo: setup  ## train LeNet-5 on the bundled digits, evaluate it, print the metrics
	$(VENV)/bin/zoo train recipes/classify_digits_lenet5.py --out runs/demo
	$(VENV)/bin/zoo eval runs/demo/best.ckpt --json runs/demo/eval.json

test: setup  ## the test suite
	$(PY) -m pytest -q

clean:
	rm -rf runs .pytest_cache
