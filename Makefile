# make demo: train briefly on embedded data in every domain, sample, evaluate (writes demo_out/).
# make test: the test suite (what CI runs). Both create .venv and install what they need, with a CPU build of
# torch where no NVIDIA GPU is present.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
TORCH_CPU ?= torch==2.13.0+cpu
TORCH_CPU_INDEX ?= https://download.pytorch.org/whl/cpu
PYTEST_WORKERS ?= 2

.PHONY: demo test install bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	@if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then \
		echo "NVIDIA GPU found: installing the default (CUDA) torch build"; \
		$(BIN)/python -m pip install -q torch; \
	else \
		echo "no GPU: installing the CPU build of torch"; \
		$(BIN)/python -m pip install -q --retries 1 --timeout 15 "$(TORCH_CPU)" --extra-index-url $(TORCH_CPU_INDEX); \
	fi
	$(BIN)/python -m pip install -q -e ".[test]"
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/gendiff demo images --out demo_out/images
	$(BIN)/gendiff demo timeseries --out demo_out/timeseries
	$(BIN)/gendiff demo weather --out demo_out/weather
	$(BIN)/gendiff demo molecules --out demo_out/molecules

test: $(STAMP)
	$(BIN)/python -m pytest -q -n $(PYTEST_WORKERS) --durations=15 tests

# make lint: ruff (lint and format) and mypy on the core, gendiff/ (configured in pyproject.toml)
.PHONY: lint
lint: $(STAMP)
	$(BIN)/ruff check gendiff && $(BIN)/ruff format --check gendiff && $(BIN)/mypy gendiff

bench: $(STAMP)
	$(BIN)/python benchmarks/samplers.py

clean:
	rm -rf $(VENV) demo_out .pytest_cache
