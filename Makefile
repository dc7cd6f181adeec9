# facesmith developer entry points. Quick start: `make demo` (install + scan the sample faces)
# and `make test` (install + the whole test suite). Both work on a fresh machine that reaches PyPI.

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# onnxruntime and onnxruntime-gpu cannot share an environment: pick the GPU build where a driver is.
ORT_EXTRA := $(if $(shell command -v nvidia-smi 2>/dev/null),gpu,cpu)
DEMO ?= demo

.PHONY: install samples demo test bench clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[$(ORT_EXTRA),test]"
	touch $@

samples: install
	$(PY) tools/fetch_samples.py --dest samples

demo: samples
	$(VENV)/bin/facesmith curate scan samples --db $(DEMO)/faceset.duckdb
	$(VENV)/bin/facesmith sql --db $(DEMO)/faceset.duckdb \
	  "SELECT i.path, f.face_index, round(f.yaw) AS yaw, round(f.pitch) AS pitch, round(f.sharpness, 1) AS sharpness, f.aligned_path FROM faces f JOIN images i USING (image_id) ORDER BY i.path, f.face_index"

test: samples
	$(PY) -m pytest -q

bench: samples
	$(PY) tools/bench_scan.py

clean:
	rm -rf $(DEMO) .pytest_cache
