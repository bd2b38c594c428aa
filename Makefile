# Every target sets up .venv on first use: `make reproduce` and `make test` are all a fresh clone needs.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
PROFILE ?= default
NOTEBOOKS := $(sort $(wildcard notebooks/[0-9][0-9]_*.ipynb))

.PHONY: install reproduce test lint unit nbval reliability lab golden bench clean

install: $(STAMP)

# torch/torchvision pinned to the builds this project is tested with. The optional attack backends (pyproject.toml):
# visdom (a dependency of adv-lib) ships only an sdist whose setup.py needs pkg_resources, hence setuptools<81 and
# no build isolation for it; torchattacks without its unused requests~=2.25.1 pin, which would hold JupyterLab at 3.5.
$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip "setuptools<81" wheel
	$(BIN)/pip install --quiet torch==2.14.1 torchvision==0.29.1
	$(BIN)/pip install --quiet --no-build-isolation visdom==0.2.4
	$(BIN)/pip install --quiet --no-deps torchattacks==3.5.1
	$(BIN)/pip install --quiet -e '.[dev,trust-region]'
	touch $(STAMP)

reproduce: $(STAMP)
	$(BIN)/advlib run all --profile $(PROFILE) --publish

# style and types: ruff's lint and format check, mypy over advlib (configuration in pyproject.toml)
lint: $(STAMP)
	$(BIN)/ruff check advlib tests benchmarks
	$(BIN)/ruff format --check advlib tests benchmarks
	$(BIN)/mypy

unit: $(STAMP)
	$(BIN)/python -m pytest tests -q

# nbval compares the ci outputs with the committed ones digit for digit, and the ci trainings amplify last-bit float
# differences between CPUs (seen: Intel and AMD, and two AMD models, differ). Golden runs and checks therefore use
# portable kernels: oneDNN and NNPACK off (advlib.runtime; both block by the CPU's caches), MKL in its conditional
# numerical reproducibility mode that every x86-64 CPU runs alike (COMPATIBLE), ATen's kernels pinned to AVX2.
PINNED_KERNELS := ADVLIB_PORTABLE_KERNELS=1 ATEN_CPU_CAPABILITY=avx2 MKL_CBWR=COMPATIBLE

nbval: $(STAMP)
	$(PINNED_KERNELS) $(BIN)/python -m pytest --nbval-lax --nbval-current-env -q $(NOTEBOOKS)

test: lint unit nbval

# The fault-injection and bad-input tests alone; rewrites README's "Reliability" figures from this run.
reliability: $(STAMP)
	ADVLIB_RELIABILITY_REPORT=1 $(BIN)/python -m pytest tests/reliability -q

lab: $(STAMP)
	$(BIN)/jupyter lab notebooks

# Re-execute the committed notebooks in place with the ci profile and the pinned kernels: the outputs nbval checks.
# advlib.golden then drops papermill's injected-parameters cell (the parameters cell is what runs in JupyterLab),
# the cache notices and the frozen progress bars; nbval compares none of them.
golden: $(STAMP)
	@for nb in $(NOTEBOOKS); do \
	  echo "golden: $$nb"; \
	  (cd notebooks && $(PINNED_KERNELS) ADVLIB_PUBLISH=1 ../$(BIN)/papermill --cwd . $$(basename $$nb) $$(basename $$nb) -p profile ci) || exit 1; \
	  $(BIN)/python -m advlib.golden $$nb || exit 1; \
	done

bench: $(STAMP)
	$(BIN)/advlib bench

clean:
	rm -rf runs .pytest_cache
