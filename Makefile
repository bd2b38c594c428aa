# Every target sets up .venv on first use: `make reproduce` and `make test` are all a fresh clone needs.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
PROFILE ?= default
NOTEBOOKS := $(sort $(wildcard notebooks/[0-9][0-9]_*.ipynb))

.PHONY: install reproduce test unit nbval reliability lab golden bench clean

install: $(STAMP)

# torch/torchvision pinned to the builds this project is tested with; visdom (a dependency of
# adv-lib) ships only an sdist whose setup.py needs pkg_resources, hence setuptools<81 and no
# build isolation for it.
$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip "setuptools<81" wheel
	$(BIN)/pip install --quiet torch==2.14.1 torchvision==0.29.1
	$(BIN)/pip install --quiet --no-build-isolation visdom==0.2.4
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

reproduce: $(STAMP)
	$(BIN)/advlib run all --profile $(PROFILE)

unit: $(STAMP)
	$(BIN)/python -m pytest tests -q

# Golden outputs are kept per CPU vendor: MKL takes different code paths on Intel and AMD, and the ci trainings
# amplify the last-bit differences into different tables. nbval checks notebooks/golden/<vendor>/ when this
# machine's vendor has one, else notebooks/ itself.
CPU_VENDOR := $(shell awk -F': *' '/^vendor_id/ {print $$2; exit}' /proc/cpuinfo 2>/dev/null)
GOLDEN_DIR := notebooks/golden/$(if $(CPU_VENDOR),$(CPU_VENDOR),unknown)
CHECKED := $(if $(wildcard $(GOLDEN_DIR)/*.ipynb),$(sort $(wildcard $(GOLDEN_DIR)/[0-9][0-9]_*.ipynb)),$(NOTEBOOKS))

nbval: $(STAMP)
	@echo "nbval: golden outputs from $(dir $(firstword $(CHECKED))) (CPU vendor: $(CPU_VENDOR))"
	$(BIN)/python -m pytest --nbval-lax --nbval-current-env -q $(CHECKED)

test: unit nbval

# The fault-injection and bad-input tests alone; rewrites README's "Reliability" figures from this run.
reliability: $(STAMP)
	ADVLIB_RELIABILITY_REPORT=1 $(BIN)/python -m pytest tests/reliability -q

lab: $(STAMP)
	$(BIN)/jupyter lab notebooks

# Re-execute the committed notebooks in place with the ci profile and keep a copy as this CPU vendor's golden
# outputs (what nbval checks on machines of that vendor).
golden: $(STAMP)
	@for nb in $(NOTEBOOKS); do \
	  echo "golden: $$nb"; \
	  (cd notebooks && ../$(BIN)/papermill --cwd . $$(basename $$nb) $$(basename $$nb) -p profile ci) || exit 1; \
	done
	mkdir -p $(GOLDEN_DIR) && cp $(NOTEBOOKS) $(GOLDEN_DIR)/

bench: $(STAMP)
	$(BIN)/advlib bench

clean:
	rm -rf runs .pytest_cache
