# The README's two commands:
#   make demo   install into .venv, profile a real 2-rank gloo run, replay what-ifs, write HTML
#   make test   install into .venv (with the dev extra) and run ruff and the whole test suite
#
# torch is installed explicitly as torch==2.13.0 (never a bare "torch", which resolves the
# newest CUDA build: gigabytes). Elsewhere, point pip at a CPU wheel index, for example:
#   make demo TORCH_PIP_ARGS="--index-url <PyTorch CPU wheel index>"

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

# the main job: profile a real 2-rank CPU/gloo DDP run, summarize it, replay what-ifs
# (each printed with the baseline's error), and write the timeline and report pages
demo: install
	$(BIN)/tracekit profile --overwrite --out $(RUN) -- $(BIN)/torchrun --nproc_per_node 2 samples/train_ddp.py --model mlp
	$(BIN)/tracekit summary $(RUN)
	$(BIN)/tracekit replay $(RUN) --what-if fusion=4MB --what-if fusion=100MB --what-if overlap=off --what-if dear --what-if "fusion=1MB..64MB"
	$(BIN)/tracekit timeline $(RUN) --what-if dear -o out/timeline.html
	$(BIN)/tracekit report $(RUN) --what-if dear --what-if overlap=off --what-if "fusion=1MB..64MB" -o out/report.html
	@echo "open out/timeline.html and out/report.html in a browser"

lint: install
	$(BIN)/ruff check .

test: install lint
	$(BIN)/pytest -q

# speed and accuracy figures (printed, not asserted); the large GPU trace is an argument
bench: install
	$(PY) benchmarks/ingest.py samples/runs/mlp_gloo_2rank/*.json.gz
	$(PY) benchmarks/replay_speed.py
	$(PY) benchmarks/replay_accuracy.py

clean:
	rm -rf $(VENV) runs out .pytest_cache .ruff_cache
