# binmx: the two set-up commands of the README.
#   make demo   -- create/reuse .venv, install binmx, run the main job
#   make test   -- create/reuse .venv, install binmx, run the whole test suite
PYTHON ?= python3.11
VENV ?= .venv
PY := $(VENV)/bin/python
DEPS := $(VENV)/.binmx-deps-v1

.PHONY: demo test install bench clean

$(DEPS):
	@command -v $(PYTHON) >/dev/null || { echo "need $(PYTHON) (Python 3.11)"; exit 1; }
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q "mxnet==1.9.1" "numpy==1.23.5" "scikit-build-core>=0.10" \
	    "pybind11>=2.12" "cmake>=3.18" ninja pytest tqdm
	touch $@

# Builds in build/ (incremental); flock keeps parallel installs from colliding.
install: $(DEPS)
	mkdir -p build
	flock build/.install.lock $(PY) -m pip install -q --no-build-isolation --no-deps .

test: install
	$(PY) -m pytest -q

demo: install
	$(PY) benchmarks/bench_xnor_gemm.py --quick

bench: install
	$(PY) benchmarks/bench_xnor_gemm.py

clean:
	rm -rf build dist
