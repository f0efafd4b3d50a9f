# Set-up and the two everyday commands. `make run` and `make test` create the environment first.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
SUITE ?= suites/clm_vs_mlm.yaml
TORCH_VERSION ?= 2.13.0
# Where the CPU build of torch comes from when the registry's default (CUDA) build is not wanted.
TORCH_CPU_INDEX ?= https://download.pytorch.org/whl/cpu
PYTEST_ARGS ?=
# DeepSpeed JIT-builds its C++ ops into this cache: one per environment, so that two
# environments never rebuild or lock each other's op.
export TORCH_EXTENSIONS_DIR ?= $(abspath $(VENV))/torch_extensions

.PHONY: run test venv clean

run: $(STAMP)
	$(BIN)/harness run $(SUITE)

# The import contracts of pyproject.toml first (seconds), then the tests.
test: $(STAMP)
	$(BIN)/lint-imports --no-cache
	$(BIN)/pytest -q $(PYTEST_ARGS)

venv: $(STAMP)

# torch goes in first: the CUDA build where a GPU is present, else the CPU build (a local wheel
# when pip's configuration finds one, else the CPU index), so nothing later pulls CUDA packages.
$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	@if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then \
		$(BIN)/python -m pip install -q "torch==$(TORCH_VERSION)"; \
	else \
		$(BIN)/python -m pip install -q "torch==$(TORCH_VERSION)+cpu" 2>/dev/null || \
		$(BIN)/python -m pip install -q "torch==$(TORCH_VERSION)+cpu" --index-url $(TORCH_CPU_INDEX) \
			--extra-index-url https://pypi.org/simple; \
	fi
	$(BIN)/python -m pip install -q -e '.[test]'
	touch $(STAMP)

clean:
	rm -rf $(VENV) build *.egg-info
