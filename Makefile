# soundmon — developer and user entry points. `make help` lists them.
SHELL := /bin/bash
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
APT_PACKAGES := libportaudio2 mosquitto pulseaudio pulseaudio-utils libasound2-plugins systemd flac
EXTRAS ?= train,dev

.PHONY: help venv system-deps test test-fast demo lint bench clean ha-venv docs urban10

help:
	@echo "make demo   - run the daemon on the bundled street recording with the shipped model"
	@echo "make test   - install what is missing (apt packages as root, .venv) and run the tests"
	@echo "make test-fast - the unit tests only (under a minute, no TensorFlow, no broker)"
	@echo "make venv   - create/update .venv with the runtime, train and dev extras"
	@echo "make lint   - ruff"
	@echo "make docs   - regenerate config.yaml's comments and docs/configuration.md from monitor/config.py"
	@echo "make bench  - speed and memory figures against the budgets (README, Current figures)"
	@echo "make ha-venv - the Home Assistant venv the HA tests use (.cache/ha-venv; they build it if missing)"
	@echo "make urban10 - retrain the shipped default models/urban10 and its start model from ../shared/data (~85 min on 2 cores)"

# System packages the tests need (PortAudio, a real broker, PulseAudio for the mic path,
# systemd-analyze for the unit check). Installed only when missing; needs root.
system-deps:
	@missing=""; for p in $(APT_PACKAGES); do \
	  dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q "install ok installed" || missing="$$missing $$p"; \
	done; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ]; then \
	    echo "installing:$$missing"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing >/dev/null; \
	  else \
	    echo "missing system packages:$$missing (run: sudo apt-get install$$missing)"; exit 1; \
	  fi; \
	fi

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e ".[$(EXTRAS)]"
	@touch $(STAMP)

venv: $(STAMP)

# Home Assistant core 2024.3.3 and what its integrations need, in its own venv (a stamp file
# marks it complete; tests/homeassistant.py says how). The HA tests in `make test` build it
# themselves when it is missing, and skip with the reason when it cannot be installed.
ha-venv: venv
	$(BIN)/python -m tests.homeassistant build

test: system-deps venv
	$(BIN)/python -m pytest -q

# The unit tests: no broker, PulseAudio, Home Assistant, daemon process, training or TensorFlow
# (tests/conftest.py says which tests are `integration`): under a minute, TensorFlow never imported.
test-fast: venv
	$(BIN)/python -m pytest -q -m "not integration"

lint: venv
	$(BIN)/ruff check monitor training tests tools

# config.yaml's comments and docs/configuration.md are written from the descriptions in
# monitor/config.py (tests/test_config_docs.py fails when they are stale).
docs: venv
	$(BIN)/python -m tools.config_docs --write

demo: venv
	$(BIN)/soundmon run --source demo/street_demo.flac --pace realtime --print --config demo/demo.yaml

# The README's figures loop the street recordings beside the checkout (../shared); without them,
# the bundled demo recording; `--live 60` adds a minute at real speed (the live CPU). Research
# harnesses: python -m tools.latency, python -m tools.soak, python -m tools.realtime_cpu (the mic path).
bench: venv
	$(BIN)/soundmon bench $(if $(wildcard ../shared/data/recordings),--recordings ../shared/data/recordings) \
	  $(if $(wildcard ../shared/models/yamnet.tflite),--compare-tflite ../shared/models/yamnet.tflite) --live 60

# The shipped default, retrained from ../shared/data by its recipe (models/urban10.md, "How it was
# trained"): the small streaming CNN distilled, from 8 augmented copies of each source, from the
# YAMNet-backbone head trained on all nine folds (runs/urban10/nine_folds/, each CV fold from the
# fold teacher that never heard it), with a `background` output, three CV folds and 7 windows of
# smoothing declared for the six steady sounds (metadata: the weights do not depend on it); then its 1 s start
# model, distilled alike from the same teacher on 1 s copies but without SpecAugment masks (two 0.4 s time masks
# hide most of a 1 s window: card step 63); the start model named in the 4 s bundle, with its share of each
# window's score (0.5) and the score that opens an event (0.75), both chosen on the held-out onset streams (step 64)
# (the first command rebuilds models/urban10_yamnet, the folds 1-4 model of the AudioSet issue and the
# CV reference, with its CV folds in runs/urban10/ for the detector comparison); the short sounds it may open alone measured on the held-out
# onset streams and written in; and the card re-rendered with the detector comparison (the file
# python -m tools.detector_comparison wrote; docs/measuring.md). About 85 min on 2 cores; CI never
# runs it.
URBAN10_DATA := ../shared/data
URBAN10_WORK := runs/urban10
URBAN10_COMMON := --arch cnn_spn_s23t1 --no-baseline --epochs 25 --seed 0 --extra-esc50 $(URBAN10_DATA)/ESC-50 \
  --extra-recordings $(URBAN10_DATA)/recordings --recordings $(URBAN10_DATA)/recordings --report-dir models
URBAN10_DISTILL := $(URBAN10_COMMON) --teacher $(URBAN10_WORK)/nine_folds/urban10_yamnet \
  --teacher-folds $(URBAN10_WORK)/nine_folds/urban10_yamnet_cv --distill-copies 8 \
  --class-smoothing air_conditioner,children_playing,drilling,engine_idling,jackhammer,street_music=7
URBAN10_START_DISTILL := $(URBAN10_COMMON) --teacher $(URBAN10_WORK)/nine_folds/urban10_yamnet \
  --teacher-folds $(URBAN10_WORK)/nine_folds/urban10_yamnet_cv --distill-copies 8 --student-masks 0,0
urban10: venv
	$(BIN)/soundmon train --dataset $(URBAN10_DATA)/UrbanSound8K --folds 1,2,3,4 --cv 1,2,3 --backbone yamnet \
	  --head-hidden 0 --out $(URBAN10_WORK)/urban10_yamnet --report-dir $(URBAN10_WORK)
	$(BIN)/soundmon train --dataset $(URBAN10_DATA)/UrbanSound8K --cv 1,2,3 --backbone yamnet \
	  --head-hidden 0 --out $(URBAN10_WORK)/nine_folds/urban10_yamnet --report-dir $(URBAN10_WORK)/nine_folds
	$(BIN)/soundmon train --dataset $(URBAN10_DATA)/UrbanSound8K --cv 1,2,3 $(URBAN10_DISTILL) \
	  --out models/urban10 --experiments models/urban10_experiments.md
	$(BIN)/soundmon train --dataset $(URBAN10_DATA)/UrbanSound8K --cv 1,2,3 --window-seconds 1 $(URBAN10_START_DISTILL) \
	  --out models/urban10_start --experiments models/urban10_start_experiments.md
	$(BIN)/python -m training.attach_start --model models/urban10 --start models/urban10_start --start-weight 0.5 \
	  --fast-start-threshold 0.75
	$(BIN)/python -m training.evaluation.fast_start_alone --model models/urban10 --dataset $(URBAN10_DATA)/UrbanSound8K --write
	$(BIN)/python -m training.card models/urban10_metrics.json --experiments models/urban10_experiments.md \
	  --detector-comparison models/urban10_detector_comparison.md

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache state runs .cache/ha-venv .cache/ha-venv-build.log .cache/ha-venv.lock
