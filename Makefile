# Two commands: `make dev` runs the whole stack, `make test` runs every test.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: dev test bench soak lint install clean

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; assert sys.version_info >= (3, 11), "Python 3.11+ is required"'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e ".[test]"
	@touch $(STAMP)

install: $(STAMP)

dev: $(STAMP)
	$(BIN)/python -m scripts.dev

# pytest exits 5 when it ran no test: that is a failure here, not a success.
test: $(STAMP)
	@$(BIN)/ruff check .
	@$(BIN)/mypy
	@$(BIN)/lint-imports --no-cache
	@$(BIN)/pytest $(PYTEST_ARGS); rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "pytest ran no test: failing" >&2; exit 1; fi; exit $$rc

# Benchmarks (not tests): `make bench` is the quick run; BENCH_ARGS= for full sizes.
BENCH_ARGS ?= --quick
bench: $(STAMP)
	$(BIN)/python -m bench.run $(BENCH_ARGS)

# Soak (not in CI): SOAK_KILLS SIGKILLs of the worker during charges with each PSP (simulator, Stripe).
SOAK_KILLS ?= 200
soak: $(STAMP)
	SOAK_KILLS=$(SOAK_KILLS) $(BIN)/pytest -m soak tests/reliability/test_soak.py -p no:randomly -q

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/lint-imports --no-cache

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
