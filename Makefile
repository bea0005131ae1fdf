# Two commands on a fresh clone: `make demo` and `make test`. Both create .venv and install into it first.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
# torch and torchvision must be a matching pair; these install from the local package cache.
TORCH_PINS := torch==2.14.1 torchvision==0.29.1
STAMP := $(VENV)/.installed
BROWSER := $(VENV)/.browser

.PHONY: setup browser demo test clean

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip

$(STAMP): pyproject.toml | $(PY)
	$(PY) -m pip install --quiet $(TORCH_PINS)
	$(PY) -m pip install --quiet -e ".[dev]" $(TORCH_PINS)
	touch $(STAMP)

setup: $(STAMP)  ## install into .venv (idempotent)

# The report test opens report.html in headless Chromium (Debian's package; Playwright from the dev extra drives it).
# Installed where this runs as root with apt-get; elsewhere the test is skipped and says why.
$(BROWSER): | $(PY)
	@command -v chromium >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    (apt-get install -y -q chromium >/dev/null 2>&1 || \
	     (apt-get update -q >/dev/null 2>&1 && apt-get install -y -q chromium >/dev/null 2>&1)) || \
	    echo "could not install chromium: the report's browser test will be skipped"; \
	  else echo "no chromium and no root apt-get here: the report's browser test will be skipped"; fi; }
	touch $@

browser: $(BROWSER)  ## Chromium for the report's browser test (Debian package)

demo: setup  ## train LeNet-5 on the bundled digits, evaluate it, print the metrics
	$(VENV)/bin/zoo train recipes/classify_digits_lenet5.py --out runs/demo
	$(VENV)/bin/zoo eval runs/demo/best.ckpt --json runs/demo/eval.json

test: setup browser  ## the test suite
	$(PY) -m pytest -q

clean:
	rm -rf runs .pytest_cache
