# Every target creates .venv if missing and installs what it needs.
# torch comes first, pinned, so no requirement can pull another (CUDA) build.
PY := .venv/bin/python
STAMP := .venv/.installed

.PHONY: demo test bench lint install clean gpu-check gpu-wheels

$(STAMP): pyproject.toml
	test -x $(PY) || python3 -m venv .venv
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e ".[test,hf,triton,ray,eval]"
	@if $(PY) -m pip list 2>/dev/null | grep -qi '^nvidia-'; then \
		echo "error: a requirement pulled CUDA packages (nvidia-*); torch must stay 2.13.0 CPU" >&2; exit 1; fi
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(PY) -m kernelized mqar --preset demo

test: $(STAMP)
	$(PY) -m ruff check src tests
	$(PY) -m ruff format --check src tests
	$(PY) -m pytest

bench: $(STAMP)
	$(PY) -m kernelized bench --preset cpu

# On a lent GPU machine, with that machine's own CUDA PyTorch (python3 there), not this project's CPU .venv:
# the CUDA tests and the GPU benchmark, summarised in $$OUT/gpu_check.{md,json} (docs/benchmarks.md, "GPU").
gpu-check:
	python3 scripts/gpu_check.py --out $${OUT:-gpu-check}

# Here, where the package registries are reachable: fla's wheels for the GPU machine (carry .whl there).
gpu-wheels:
	python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
		--platform manylinux_2_28_x86_64 --platform manylinux2014_x86_64 -d .whl fla-core==0.6.0

lint: $(STAMP)
	$(PY) -m ruff check src tests
	$(PY) -m ruff format --check src tests

clean:
	rm -rf .venv runs .pytest_cache
