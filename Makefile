# `make run` and `make test` set everything up on a fresh machine (a virtual environment in .venv).
VENV ?= .venv
PYTHON ?= python3
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# pip options for torch. Here the CPU build lies on disk; on a laptop without it, use
#   make TORCH_PIP_ARGS="--index-url https://download.pytorch.org/whl/cpu" run
TORCH_PIP_ARGS ?=
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export PIP_DISABLE_PIP_VERSION_CHECK := 1

.PHONY: run test lint typecheck unit bench clean

$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q $(TORCH_PIP_ARGS) -c constraints.txt torch==2.13.0
	$(BIN)/python -m pip install -q -c constraints.txt -e ".[dev]"
	# optimum-intel pulls torchvision from PyPI, a CUDA build that breaks `import transformers` next to
	# the CPU torch; nothing here uses it
	$(BIN)/python -m pip uninstall -y -q torchvision
	touch $(STAMP)

# The demo indexing (printed as it goes), then the service on 127.0.0.1:8000 with a fresh key for
# the demo tenant acme-shop and working curl / openai examples; Ctrl-C stops it cleanly.
run: $(STAMP)
	$(BIN)/pulse-ai demo
	$(BIN)/pulse-ai serve --demo-key acme-shop --host 127.0.0.1 --port 8000

test: $(STAMP) lint typecheck unit

lint: $(STAMP)
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench

typecheck: $(STAMP)
	$(BIN)/mypy

unit: $(STAMP)
	$(BIN)/pytest

bench: $(STAMP)
	$(BIN)/python bench/embedding_throughput.py

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache
