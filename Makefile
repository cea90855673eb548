# popvae: `make run` trains the demo population on Fashion-MNIST; `make test` runs the suite.
# Each target creates .venv and installs what it needs, so both work from a fresh clone.

PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
FMNIST := /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz
RUN_DIR ?= runs/demo

PRESET ?= cpu
DATASET ?= fashion-mnist

.PHONY: install run test lint bench reproduce system-deps clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	# torch/torchvision pinned to the releases this machine's pip serves from local disk
	$(PY) -m pip install -q "torch==2.14.1" "torchvision==0.29.1" || $(PY) -m pip install -q torch torchvision
	$(PY) -m pip install -q -e ".[dev,tensorboard]"  # tensorboard: what make run tells the user to open
	touch $(STAMP)

install: $(STAMP) system-deps

# System packages from Debian, installed when missing and apt is usable (as root):
# dataset-fashion-mnist, the embedded default dataset (no download at run time),
# docker-compose, which the tests use to validate docker/docker-compose.yml, and chromium with
# chromium-driver, the headless browser of the dashboard test (tests/test_dashboard.py).
system-deps:
	@missing=""; \
	[ -f $(FMNIST) ] || missing="$$missing dataset-fashion-mnist"; \
	command -v docker-compose >/dev/null 2>&1 || missing="$$missing docker-compose"; \
	[ -x /usr/bin/chromium ] || missing="$$missing chromium"; \
	[ -x /usr/bin/chromedriver ] || missing="$$missing chromium-driver"; \
	if [ -n "$$missing" ]; then \
	  if command -v apt-get >/dev/null 2>&1 && [ "$$(id -u)" = 0 ]; then \
	    (DEBIAN_FRONTEND=noninteractive apt-get install -y -q $$missing >/dev/null 2>&1 || \
	     (apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -q $$missing >/dev/null)) && \
	    echo "installed:$$missing"; \
	  else \
	    echo "missing Debian packages:$$missing (install them as root; without Fashion-MNIST pass --data-root to popvae)" >&2; \
	  fi; \
	fi

# The demo: 5 members on Fashion-MNIST with a reduced budget, then the annealed baseline on the same budget.
run: install
	rm -rf $(RUN_DIR) $(RUN_DIR)-baseline
	$(VENV)/bin/popvae train --dataset fashion-mnist --members 5 --epochs 6 --steps-per-epoch 40 \
	  --batch-size 64 --run-dir $(RUN_DIR) --compare-baseline

test: install
	$(PY) -m pytest

# The papers' protocol and the ablations (`popvae reproduce`); the runs go to $(REPRO_RUNS) (runs/ by default: give a
# folder outside the checkout for cpu-long, which spans sessions), the report to benchmarks/results/.
# Run it again to continue an interrupted one. PRESET=smoke|cpu|cpu-long|paper, DATASET=fashion-mnist|mnist.
REPRO_RUNS ?= runs
reproduce: install
	$(VENV)/bin/popvae reproduce --preset $(PRESET) --dataset $(DATASET) --out $(REPRO_RUNS)/reproduction-$(DATASET)-$(PRESET) \
	  --report-dir benchmarks/results/reproduction-$(DATASET)-$(PRESET)

lint: $(STAMP)
	$(VENV)/bin/ruff check .

bench: install
	$(PY) -m benchmarks.population

clean:
	rm -rf $(VENV) runs .pytest_cache .ruff_cache
