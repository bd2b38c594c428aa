# Every target sets up .venv on first use: `make reproduce` and `make test` are all a fresh clone needs.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
PROFILE ?= default
NOTEBOOKS := $(sort $(wildcard notebooks/[0-9][0-9]_*.ipynb))

.PHONY: install reproduce test lint browser unit nbval portability reliability lab golden bench profile clean

install: $(STAMP)

# torch/torchvision pinned to the builds this project is tested with. The optional attack backend (pyproject.toml):
# visdom (a dependency of adv-lib) ships only an sdist whose setup.py needs pkg_resources, hence setuptools<81 and
# no build isolation for it. torchattacks is the benchmarks' peer for PGD (benchmarks/run.py), installed without its
# unused requests~=2.25.1 pin, which would hold JupyterLab at 3.5.
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
	$(BIN)/ruff check advlib tests benchmarks investigations
	$(BIN)/ruff format --check advlib tests benchmarks investigations
	$(BIN)/mypy

# two pytest-xdist workers of one thread each: the tests are many small independent jobs
unit: $(STAMP)
	OMP_NUM_THREADS=$${OMP_NUM_THREADS:-1} $(BIN)/python -m pytest tests -q -n 2

# Every ci notebook executed once from an empty cache (a warm one would check the cache, not the code): nbval compares
# the checked cells with the committed notebooks, then tests/reliability/test_determinism.py the tables with
# figures/<stem>/ci/. The ci profiles run in float64, so that neither depends on the CPU's kernels or thread count
# (`make portability` checks it); the notebooks run NBVAL_WORKERS at a time (pytest-xdist, one notebook per worker),
# each with OMP_NUM_THREADS threads. NBVAL_SCRATCH keeps the cache and tables there (by default a temporary folder).
NBVAL_WORKERS ?= 2
nbval: $(STAMP)
	@scratch=$${NBVAL_SCRATCH:-$$(mktemp -d)}; \
	export ADVLIB_CACHE=$$scratch/cache ADVLIB_FIGURES=$$scratch/tables OMP_NUM_THREADS=$${OMP_NUM_THREADS:-1}; \
	$(BIN)/python -m pytest --nbval-lax --nbval-current-env -q -n $(NBVAL_WORKERS) --dist loadfile $(NOTEBOOKS) \
	  && $(BIN)/python -m pytest -q tests/reliability/test_determinism.py; \
	status=$$?; [ -n "$$NBVAL_SCRATCH" ] || rm -rf "$$scratch"; exit $$status

# `make nbval` under other CPU kernels (ATen scalar / AVX2 / AVX-512, MKL CBWR, oneDNN on / off, 1 / 2 threads): the
# goldens must pass it before they are committed. Writes the README's "Reproducibility" block.
portability: $(STAMP)
	$(BIN)/python -m advlib.portability

# The annotation page's browser test (tests/test_annotation_page.py) needs Debian's chromium: installed here when this
# is root with apt-get; otherwise the test is skipped, and this says why.
browser:
	@if command -v chromium >/dev/null || command -v chromium-browser >/dev/null; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	  echo "make: installing Debian's chromium for the browser test"; \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium \
	    >/dev/null) || echo "make: chromium could not be installed; the browser test will be skipped"; \
	else echo "make: no chromium, and not root with apt-get to install it: the browser test will be skipped"; fi

test: lint browser unit nbval

# The fault-injection and bad-input tests, after the ci notebooks that the determinism test reads (as in nbval);
# rewrites README's "Reliability" figures from this run.
reliability: $(STAMP)
	@scratch=$$(mktemp -d); \
	ADVLIB_RELIABILITY_REPORT=1 ADVLIB_CACHE=$$scratch/cache ADVLIB_FIGURES=$$scratch/tables \
	  $(BIN)/python -m pytest --nbval-lax --nbval-current-env -q $(NOTEBOOKS) tests/reliability; \
	status=$$?; rm -rf "$$scratch"; exit $$status

lab: $(STAMP)
	$(BIN)/jupyter lab notebooks

# Re-execute the committed notebooks in place with the ci profile, from an empty cache: the outputs nbval checks.
# advlib.golden then drops papermill's injected-parameters cell (the parameters cell is what runs in JupyterLab),
# the cache notices and the frozen progress bars; nbval compares none of them. Then run `make portability`.
golden: $(STAMP)
	@scratch=$$(mktemp -d); for nb in $(NOTEBOOKS); do \
	  echo "golden: $$nb"; \
	  (cd notebooks && ADVLIB_CACHE=$$scratch ADVLIB_PUBLISH=1 ../$(BIN)/papermill --cwd . $$(basename $$nb) $$(basename $$nb) -p profile ci) || exit 1; \
	  $(BIN)/python -m advlib.golden $$nb || exit 1; \
	done; rm -rf "$$scratch"

bench: $(STAMP)
	$(BIN)/advlib bench

# Where a cold run of each notebook ($(PROFILE) profile) spends its time: training per system, each attack family,
# the other cached evaluations, each table's own work, imports and start-up (from each run's stage timer), beside the
# suite's cold / warm rows. Writes benchmarks/PROFILE-$(PROFILE).md; NOTEBOOKS_ONLY=stem,... picks notebooks.
profile: $(STAMP)
	$(BIN)/advlib bench --only suite --suite $(PROFILE) --output benchmarks/PROFILE-$(PROFILE).md \
	  $(if $(NOTEBOOKS_ONLY),--notebooks $(NOTEBOOKS_ONLY))

clean:
	rm -rf runs .pytest_cache
