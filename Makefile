# Every target creates .venv if missing and installs what it needs.
# torch comes first, pinned, so no requirement can pull another (CUDA) build.
PY := .venv/bin/python
STAMP := .venv/.installed

.PHONY: demo test bench lint install clean

$(STAMP): pyproject.toml
	test -x $(PY) || python3 -m venv .venv
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e ".[test,hf,triton,ray]"
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

lint: $(STAMP)
	$(PY) -m ruff check src tests
	$(PY) -m ruff format --check src tests

clean:
	rm -rf .venv runs .pytest_cache
