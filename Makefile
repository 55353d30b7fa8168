# Quick start:  make run   (set up, then search the default space)
#               make test  (set up, then run the test suite)
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
SPACE ?= lora.yaml

.PHONY: setup test-setup system-packages run test test-fast bench lint clean

# torch first, pinned to the CPU wheel this setup is tested with; on a GPU machine install the
# CUDA build of torch into .venv before `make setup` and it is kept.
$(BIN)/ftsearch-ready: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/python -c "import torch" 2>/dev/null || $(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet -e ".[test]"
	touch $@

setup: $(BIN)/ftsearch-ready

# The tests also run the export through llama.cpp: llama-cpp-python (the [llama] extra) builds
# from source, about 8 minutes on 2 cores, once; its wheel is kept in $(WHEELS) and reused.
WHEELS ?= .wheels
$(BIN)/ftsearch-test-ready: $(BIN)/ftsearch-ready
	ls $(WHEELS)/llama_cpp_python-*.whl >/dev/null 2>&1 || \
	  CMAKE_ARGS="-DGGML_NATIVE=OFF" $(BIN)/pip wheel --quiet --no-deps -w $(WHEELS) \
	    "llama-cpp-python>=0.3"
	$(BIN)/pip install --quiet --prefer-binary --find-links $(WHEELS) -e ".[test,llama]"
	touch $@

test-setup: $(BIN)/ftsearch-test-ready

# The browser for the report test and PostgreSQL for the cluster test, from Debian's packages.
# Without root or apt-get, those tests skip and say why.
system-packages:
	@missing=""; \
	command -v chromium >/dev/null 2>&1 || missing="$$missing chromium"; \
	ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || missing="$$missing postgresql"; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing; \
	  else echo "not installed:$$missing (tests that need them will skip)"; fi; \
	fi

run: setup
	$(BIN)/python launcher.py --space $(SPACE)

# Each benchmark prints a table and writes benchmarks/results/NAME.json; QUICK=1 for short runs.
bench: setup
	$(BIN)/pip install --quiet -e ".[bench]"
	$(BIN)/python benchmarks/run_all.py $(if $(QUICK),--quick)

# pytest exits 5 when it collected no test: a failure, never a silent pass.
test: test-setup system-packages
	$(BIN)/ruff check .
	$(BIN)/python -m pytest -q; status=$$?; \
	if [ $$status -eq 5 ]; then echo "no test ran" >&2; exit 1; fi; exit $$status

# The unit tests alone (no end-to-end search, no server): about a minute on 2 cores.
test-fast: setup
	$(BIN)/ruff check .
	$(BIN)/python -m pytest -q -m "not slow"; status=$$?; \
	if [ $$status -eq 5 ]; then echo "no test ran" >&2; exit 1; fi; exit $$status

lint: setup
	$(BIN)/ruff check .

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
