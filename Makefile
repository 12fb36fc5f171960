# The README's two commands:
#   make demo   install into .venv, profile a real 2-rank gloo run, replay what-ifs, write HTML
#   make test   install into .venv (with the dev extra) and run ruff and the whole test suite
#
# torch is installed explicitly as torch==2.13.0 (never a bare "torch", which resolves the
# newest CUDA build: gigabytes). Elsewhere, point pip at a CPU wheel index, for example:
#   make demo TORCH_PIP_ARGS="--index-url https://download.pytorch.org/whl/cpu"

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
BIN := $(VENV)/bin
TORCH_PIP_ARGS ?=
RUN ?= runs/demo

.PHONY: install demo test lint bench clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check torch==2.13.0 $(TORCH_PIP_ARGS)
	$(PY) -m pip install -q --disable-pip-version-check -e '.[dev,fast]'
	touch $@

demo: install
	$(BIN)/tracekit summary samples/runs/mlp_gloo_2rank
	$(BIN)/tracekit timeline samples/runs/mlp_gloo_2rank --what-if dear -o out/timeline.html
	$(BIN)/tracekit report samples/runs/mlp_gloo_2rank --what-if dear --what-if "fusion=256KB..4MB" -o out/report.html

lint: install
	$(BIN)/ruff check .

test: install lint
	$(BIN)/pytest -q

bench: install
	$(PY) benchmarks/ingest.py samples/runs/mlp_gloo_2rank

clean:
	rm -rf $(VENV) runs out .pytest_cache .ruff_cache
