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
	  "SELECT i.path, i.status, coalesce(i.reject_reason, '') AS rejected, i.face_count AS faces, round(max(f.sharpness)) AS sharpest, round(min(f.yaw)) AS min_yaw, round(max(f.yaw)) AS max_yaw FROM images i LEFT JOIN faces f USING (image_id) GROUP BY ALL ORDER BY i.path"
	@echo "Query it yourself: $(VENV)/bin/facesmith sql --db $(DEMO)/faceset.duckdb \"SELECT * FROM summary\""

test: samples
	$(PY) -m pytest -q

bench: samples
	$(PY) tools/bench_scan.py

clean:
	rm -rf $(DEMO) .pytest_cache
