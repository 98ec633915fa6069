# The two commands of the README: `make book` (executes every chapter, builds _build/html) and
# `make test` (everything that checks it). Both create .venv on first use.
SHELL  := /bin/bash
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp
# pip's output minus the "Location ... is ignored" noise of this machine's pip config; pip's own exit code counts.
PIP     = $(BIN)/python -m pip install -q
QUIET   = 2>&1 | { grep -v "is ignored" || true; }; test $${PIPESTATUS[0]} -eq 0
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export HF_DATASETS_OFFLINE := 1
export PYTHONHASHSEED := 0
export TOKENIZERS_PARALLELISM := false

.PHONY: book test lab notebooks data zoo bench clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(PIP) --upgrade pip $(QUIET)
	$(PIP) torch==2.13.0 $(if $(TORCH_INDEX),--index-url $(TORCH_INDEX)) $(QUIET)
	$(PIP) -e ".[all]" $(QUIET)
	$(BIN)/python -c "import torch, transformers, vlm_primer, nbval, jupytext; assert torch.__version__.startswith('2.13.0'), torch.__version__"
	$(BIN)/python -m ipykernel install --sys-prefix --name python3 --display-name "Python 3 (vlm-primer)" >/dev/null
	touch $(STAMP)

book: $(STAMP)
	$(BIN)/python -m vlm_primer.book build

# Two pytest workers on two cores, one torch thread each: two processes of two threads each on two cores
# oversubscribe the CPU and run many times slower (the book build splits the cores the same way). The longest chapter
# cell takes about 40 s at tiny: one past the book's cell timeout (cell_timeout(): 300 s at tiny) is a hung kernel,
# and fails then rather than after nbval's 2,000 s.
CELL_TIMEOUT = $$($(BIN)/python -c "from vlm_primer.book.execute import cell_timeout; print(cell_timeout())")
test: $(STAMP)
	$(BIN)/python -m vlm_primer.book check
	OMP_NUM_THREADS=1 $(BIN)/python -m pytest -n 2 --dist loadgroup tests
	OMP_NUM_THREADS=1 $(BIN)/python -m pytest -n 2 --dist loadscope --nbval-lax --nbval-cell-timeout=$(CELL_TIMEOUT) $$($(BIN)/python -m vlm_primer.book notebooks)

# JupyterLab offline and quiet: no news or update check (settings override), the paired .py files hidden; on a Mac
# the kernels run what MPS lacks on the CPU (with a warning) instead of failing.
LAB_SETTINGS := $(VENV)/share/jupyter/lab/settings
lab: $(STAMP)
	mkdir -p $(LAB_SETTINGS) && cp vlm_primer/book/assets/lab-overrides.json $(LAB_SETTINGS)/overrides.json
	PYTORCH_ENABLE_MPS_FALLBACK=$${PYTORCH_ENABLE_MPS_FALLBACK:-1} $(BIN)/jupyter lab --ServerApp.root_dir=notebooks \
	    --ContentsManager.hide_globs="['__pycache__', '*.pyc', '.ipynb_checkpoints', '*.py']"

# Re-execute every written chapter from its .py and save the .ipynb with outputs (for authors).
notebooks: $(STAMP)
	$(BIN)/python -m vlm_primer.book sync

data: $(STAMP)
	$(BIN)/python -m vlm_primer.text.build

# Retrain every zoo model from scratch (data/zoo/*.safetensors + cards); about two hours on 2 CPU cores
# (the cards' train_seconds add up to 124 minutes).
zoo: $(STAMP)
	$(BIN)/python -m vlm_primer.zoo build all --overwrite

bench: $(STAMP)
	for b in benchmarks/*.py; do $(BIN)/python $$b || exit 1; done

clean:
	rm -rf _build
