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

nbval: $(STAMP)
	$(BIN)/python -m pytest --nbval-lax --nbval-current-env -q notebooks

test: unit nbval

# The fault-injection and bad-input tests alone; rewrites README's "Reliability" figures from this run.
reliability: $(STAMP)
	ADVLIB_RELIABILITY_REPORT=1 $(BIN)/python -m pytest tests/reliability -q

lab: $(STAMP)
	$(BIN)/jupyter lab notebooks

# Re-execute the committed notebooks in place with the ci profile (their outputs are what nbval checks).
golden: $(STAMP)
	@for nb in $(NOTEBOOKS); do \
	  echo "golden: $$nb"; \
	  (cd notebooks && ../$(BIN)/papermill --cwd . $$(basename $$nb) $$(basename $$nb) -p profile ci) || exit 1; \
	done

bench: $(STAMP)
	$(BIN)/advlib bench

clean:
	rm -rf runs .pytest_cache
