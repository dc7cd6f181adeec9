# facesmith developer entry points. Quick start: `make demo` (install + scan the sample faces)
# and `make test` (install + the whole test suite). Both work on a fresh machine that reaches PyPI.

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# onnxruntime and onnxruntime-gpu cannot share an environment: pick the GPU build where a driver is.
ORT_EXTRA := $(if $(shell command -v nvidia-smi 2>/dev/null),gpu,cpu)
# CI trains and tests on all three Keras backends (installs measured at 13-21 s each, README "Backends").
# torch is pinned to the CPU wheel here: an unpinned torch from PyPI is the multi-GB CUDA build.
TORCH_SPEC ?= $(if $(shell command -v nvidia-smi 2>/dev/null),torch,torch==2.13.0)
DEMO ?= demo
# On CI (CI=true) pip keeps no copy of what it downloads: the wheels (TensorFlow, JAX, Ray, ...) would
# take 1-2 GB more of a disk the test suite needs.
PIP_INSTALL := $(PY) -m pip install --quiet $(if $(CI),--no-cache-dir,)

.PHONY: install samples demo test bench browser clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PIP_INSTALL) --upgrade pip
	$(PIP_INSTALL) -e ".[$(ORT_EXTRA),test,ray,jax]"
	$(PIP_INSTALL) "$(TORCH_SPEC)"
	touch $@

samples: install
	$(PY) tools/fetch_samples.py --dest samples

demo: samples
	@[ -f $(DEMO)/clip.done ] || { $(PY) tools/footage.py --samples samples --out $(DEMO)/clip --fps 25 --scale 0.6 && touch $(DEMO)/clip.done; }
	$(VENV)/bin/facesmith curate scan $(DEMO)/clip --db $(DEMO)/faceset.duckdb --role src
	$(VENV)/bin/facesmith curate analyze --db $(DEMO)/faceset.duckdb --identity samples/face_recognition/obama3.jpg
	$(VENV)/bin/facesmith curate select --db $(DEMO)/faceset.duckdb --budget 24 --out $(DEMO)/selected
	$(VENV)/bin/facesmith curate report --db $(DEMO)/faceset.duckdb --html $(DEMO)/report.html
	$(VENV)/bin/facesmith curate scan samples/insightface --db $(DEMO)/dst.duckdb --role dst
	$(VENV)/bin/facesmith train run --model-dir $(DEMO)/model --src $(DEMO)/faceset.duckdb --dst $(DEMO)/dst.duckdb \
	  --resolution 64 --ae-dims 64 --e-dims 32 --d-dims 32 --d-mask-dims 16 --batch-size 4 \
	  --preview-every 100 --save-every 100 --iterations 200
	$(VENV)/bin/facesmith train status --model-dir $(DEMO)/model
	$(VENV)/bin/facesmith merge run --model-dir $(DEMO)/model --frames samples/insightface --out $(DEMO)/merged
	$(VENV)/bin/facesmith verify $(DEMO)/merged/t1.png
	@echo "Open $(DEMO)/report.html, $(DEMO)/model/previews/last.png and $(DEMO)/merged/, or query:"
	@echo "  $(VENV)/bin/facesmith sql --db $(DEMO)/faceset.duckdb \"SELECT * FROM summary\""
	@echo "  $(VENV)/bin/facesmith sql --db $(DEMO)/model/model.duckdb \"SELECT * FROM loss_by_phase\""

# The HTML report tests and the review app's end-to-end tests drive Debian's headless Chromium
# (the review app's and the training report's through its chromedriver); install both when
# missing (as root with apt-get, as on CI). Without them those tests are skipped, with the reason.
browser:
	@{ command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1; } && \
	  command -v chromedriver >/dev/null 2>&1 || \
	  { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1 && \
	    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null) ; } || \
	  echo "chromium or chromium-driver not installed: the browser tests will be skipped"

test: samples browser
	$(PY) -m pytest -q

bench: samples
	$(PY) tools/bench_scan.py
	$(PY) tools/bench_dedup.py
	$(PY) tools/bench_train.py
	$(PY) tools/bench_merge.py
	$(PY) tools/bench_ray.py
	$(PY) tools/bench_review.py

clean:
	rm -rf $(DEMO) .pytest_cache
