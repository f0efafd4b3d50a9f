# Set-up and the two everyday commands. `make run` and `make test` create the environment first.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
SUITE ?= suites/clm_vs_mlm.yaml
TORCH_VERSION ?= 2.13.0
# Where the CPU build of torch comes from when the registry's default (CUDA) build is not wanted.
TORCH_CPU_INDEX ?= https://download.pytorch.org/whl/cpu
# The 25 slowest tests are listed at the end of every run, so that a slow one is seen where it appears.
PYTEST_ARGS ?= --durations=25
# DeepSpeed JIT-builds its C++ ops into this cache: one per environment, so that two
# environments never rebuild or lock each other's op.
export TORCH_EXTENSIONS_DIR ?= $(abspath $(VENV))/torch_extensions
# ... with the venv's own ninja, the one Ray's workers find: a system ninja of another version
# keeps another build log, and each switch between the two rebuilt that op (40 s to 2 minutes).
export PATH := $(abspath $(BIN)):$(PATH)

.PHONY: run test venv browser clean

run: $(STAMP)
	$(BIN)/harness run $(SUITE)

# The import contracts of pyproject.toml first (seconds), then the tests. The report's browser
# test needs a headless browser: `browser` installs one where it is missing.
test: $(STAMP) browser
	$(BIN)/lint-imports --no-cache
	$(BIN)/pytest -q $(PYTEST_ARGS)

venv: $(STAMP) browser

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
	@# Without a GPU, DeepSpeed's engines talk through its shared-memory op: built here, once per
	@# environment (about 40 s on 2 idle cores), rather than by the first run that needs it.
	@if ! (command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1); then \
		echo "building DeepSpeed's CPU communication op into $(TORCH_EXTENSIONS_DIR)"; \
		DS_ACCELERATOR=cpu $(BIN)/python -c "from deepspeed.accelerator import get_accelerator; \
			get_accelerator().create_op_builder('ShareMemCommBuilder').load()" 2>&1 | grep -v WARNING || true; \
	fi
	touch $(STAMP)

# Debian's chromium and its driver for tests/test_report_html.py, installed with apt-get where
# missing (as root, or through sudo when it needs no password; nothing asks for input). Where
# that cannot be done it says why and the tests go on: that one test is then skipped, naming why.
browser:
	@if command -v chromium >/dev/null 2>&1 && command -v chromedriver >/dev/null 2>&1; then \
		echo "browser: $$(command -v chromium) and $$(command -v chromedriver) are installed"; \
	elif ! command -v apt-get >/dev/null 2>&1; then \
		echo "browser: chromium or chromedriver is missing and there is no apt-get to install them;" \
			"the browser test of report.html will be skipped"; \
	else \
		if [ "$$(id -u)" = 0 ]; then SUDO=; \
		elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then SUDO="sudo -n"; \
		else echo "browser: chromium is missing; installing it needs root (or sudo without a password):" \
			"run 'sudo apt-get install chromium chromium-driver'; the browser test will be skipped"; exit 0; fi; \
		echo "browser: installing chromium and chromium-driver with apt-get"; \
		$$SUDO env DEBIAN_FRONTEND=noninteractive apt-get update -q </dev/null && \
		$$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
			chromium chromium-driver </dev/null || \
		echo "browser: apt-get could not install chromium and chromium-driver (see above);" \
			"the browser test of report.html will be skipped"; \
	fi

clean:
	rm -rf $(VENV) build *.egg-info
