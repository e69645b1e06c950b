# The front door. `make help` lists every target. Variables use ?= so you can override them:
#   make demo PYTHON=python3.12      make setup PIP_TORCH_INDEX=https://download.pytorch.org/whl/cpu
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP_TORCH_INDEX ?=
STAMP := $(VENV)/.installed-$(shell cksum requirements.txt | cut -d' ' -f1)
FROM ?=
TO ?=
N ?=
NAME ?=

.DEFAULT_GOAL := help
.PHONY: help setup demo test lint format stage diff clean

help: ## list every target with one line each
	@awk 'BEGIN {FS = ":.*## "} /^[a-zA-Z0-9_-]+:.*## / {printf "  make %-14s %s\n", $$1, $$2}' $(MAKEFILE_LIST)

setup: $(STAMP) ## create .venv and install requirements.txt (skipped when already done)

$(STAMP): requirements.txt
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet torch==2.13.0 $(if $(PIP_TORCH_INDEX),--index-url $(PIP_TORCH_INDEX))
	$(PY) -m pip install --quiet -r requirements.txt
	@rm -f $(VENV)/.installed-* && touch $@

demo: setup ## train a small Transformer on the reverse task and show it learn (about 10 s on a CPU)
	$(PY) transformer.py

test: setup ## run the whole test suite
	$(PY) -m pytest

lint: setup ## check formatting and lint with ruff
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .

format: setup ## reformat and fix what ruff can fix
	$(PY) -m ruff format .
	$(PY) -m ruff check --fix .

stage: setup ## run one stage's demo: make stage N=4
	@$(PY) tools/stages.py run $(N)

diff: setup ## show what a stage adds, coloured: make diff FROM=3 TO=4
	@$(PY) tools/stages.py diff $(FROM) $(TO)

clean: ## remove the virtual environment and everything the build wrote
	rm -rf $(VENV) .pytest_cache .ruff_cache talk/dist web
	find . -name __pycache__ -type d -prune -exec rm -rf {} +

# --- pitfalls (debug_pitfalls/) ---------------------------------------------
# NAME (declared at the top) picks one pitfall; without it, pitfall lists them and test-bugs runs them all.
.PHONY: pitfall test-bugs pitfall-readme

pitfall: setup ## show one deliberate bug as a coloured diff: make pitfall NAME=missing_scaling (no NAME: list)
	@$(PY) -m debug_pitfalls diff $(NAME)

test-bugs: setup ## run the property tests against every broken variant (or NAME=...) and show what catches each
	@$(PY) -m debug_pitfalls test $(NAME)

pitfall-readme: setup ## regenerate the README's pitfall section from debug_pitfalls/registry.py
	@$(PY) -m debug_pitfalls readme

# --- talk (talk/) ------------------------------------------------------------
# The slides need Node.js (reveal-md, pinned in talk/package.json); slides-pdf also needs Chromium.
CHROMIUM ?=
.PHONY: slides slides-static slides-pdf

slides: setup ## serve the slides live at http://localhost:1948/slides.md (needs Node.js)
	@$(PY) talk/build_slides.py update
	@$(PY) talk/build_slides.py serve

slides-static: setup figures ## write the slides as an offline site to talk/dist/ (open talk/dist/index.html)
	@$(PY) talk/build_slides.py update
	@$(PY) talk/build_slides.py static

slides-pdf: slides-static ## print the slides to talk/dist/slides.pdf with headless Chromium
	@CHROMIUM="$(CHROMIUM)" $(PY) talk/build_slides.py pdf

.PHONY: figures present

figures: setup ## draw the talk's figures into talk/figures/ (trains the demo model: a little longer than make demo)
	@$(PY) talk/figures.py

present: setup ## step through the stages in the terminal, diff then demo: make present N=5 starts at stage 5
	@$(PY) talk/present.py $(N)

# --- benchmarks (bench/) -----------------------------------------------------
BENCH_ARGS ?=

.PHONY: bench bench-quick

bench: setup ## measure ours vs nn.Transformer, fused attention, the KV cache (about a minute on 2 cores; bench/results/)
	@$(PY) bench/bench.py $(BENCH_ARGS)

bench-quick: setup ## the benchmark at tiny sizes, one repeat: a smoke test in seconds
	@$(PY) bench/bench.py --quick $(BENCH_ARGS)

# --- translation (translate.py) ---------------------------------------------
# RUN is the run directory `make translate` starts afresh; TRANSLATE_ARGS go to `translate.py train`.
RUN ?= runs/numbers
TRANSLATE_ARGS ?=
THREADS ?= 1

.PHONY: translate translate-ddp

# As §6.1 does, the model evaluated is the average of the last 5 checkpoints (here 25 steps apart): one end point
# of a small model's training can sit in a loss spike, the average of five did not on any seed tried.
KEEP_LAST := --save-every 25 --keep 5

translate: setup ## train the German->English numbers task on the CPU, average the last checkpoints, then BLEU (beam 4)
	@rm -rf $(RUN)
	@$(PY) translate.py train --out $(RUN) --threads $(THREADS) $(KEEP_LAST) $(TRANSLATE_ARGS)
	@$(PY) translate.py average $(RUN) --last 5 --out $(RUN)/averaged.pt
	@$(PY) translate.py evaluate $(RUN)/averaged.pt --beam 4 --threads $(THREADS)

# NPROC processes on one machine; the README's "When one machine is not enough" has the multi-GPU and multi-node forms
NPROC ?= 2
RUN_DDP ?= runs/numbers-ddp

translate-ddp: setup ## the same numbers task data-parallel: torchrun starts NPROC (2) CPU processes (gloo), then BLEU
	@rm -rf $(RUN_DDP)
	@OMP_NUM_THREADS=$(THREADS) $(PY) -m torch.distributed.run --standalone --nproc-per-node $(NPROC) \
		translate.py train --out $(RUN_DDP) --threads $(THREADS) $(KEEP_LAST) $(TRANSLATE_ARGS)
	@$(PY) translate.py average $(RUN_DDP) --last 5 --out $(RUN_DDP)/averaged.pt
	@$(PY) translate.py evaluate $(RUN_DDP)/averaged.pt --beam 4 --threads $(THREADS)

# --- a real language: Multi30k German -> English ---------------------------------------------------------
# M30K names a local copy (a folder with Multi30k's six .gz files, or a mirror URL); without it the files come from
# the Multi30k repository at a pinned commit. Either way each is checked against its SHA-256 (corpora.py).
M30K ?=
M30K_DATA ?= data/multi30k
RUN_M30K ?= runs/m30k
# The recipe is translate.py's RECIPES["m30k"] (README, "A real language", has the validation runs that chose it): a
# number of steps, not a time budget, so a slower laptop trains the same model, later.
M30K_SPLITS = --src $(M30K_DATA)/train.de --tgt $(M30K_DATA)/train.en --valid $(M30K_DATA)/val.de $(M30K_DATA)/val.en \
	--test $(M30K_DATA)/test2016.de $(M30K_DATA)/test2016.en

.PHONY: fetch-m30k translate-m30k

fetch-m30k: setup ## fetch Multi30k into data/multi30k, checked against pinned SHA-256 sums (M30K=DIR: a local copy)
	@$(PY) translate.py fetch multi30k --out $(M30K_DATA) $(if $(M30K),--from $(M30K))

translate-m30k: fetch-m30k ## train German->English on Multi30k on the CPU, average, BLEU on test2016 (beam 4)
	@if [ -n "$$(ls $(RUN_M30K)/checkpoints 2>/dev/null)" ] && ! echo "$(TRANSLATE_ARGS)" | grep -q -- --resume; then \
		echo "$(RUN_M30K) already holds a run: make translate-m30k RUN_M30K=runs/m30k-2 trains another," \
			"TRANSLATE_ARGS=--resume continues it, rm -r $(RUN_M30K) starts afresh" >&2; exit 2; fi
	@$(PY) translate.py train --out $(RUN_M30K) --recipe m30k $(M30K_SPLITS) $(TRANSLATE_ARGS)
	@$(PY) translate.py average $(RUN_M30K) --last 5 --out $(RUN_M30K)/averaged.pt
	@$(PY) translate.py evaluate $(RUN_M30K)/averaged.pt --beam 4 --examples 10 --json $(RUN_M30K)/test2016.json \
		--title "Multi30k test2016 de→en"

# --- write it yourself (tools/live.py, notebooks/) ---------------------------
# N (declared at the top) picks the stage; SOLUTION=1 writes the finished stage instead of the blanks.
SOLUTION ?=

.PHONY: live check notebooks

live: setup ## write live/NN_name.py, stage N with its new pieces blank: make live N=4 (SOLUTION=1: finished)
	@$(PY) tools/live.py live $(N) $(if $(SOLUTION),--solution)

check: setup ## check your live/NN_name.py against the tests of stages 1..N, one line each: make check N=4
	@$(PY) tools/live.py check $(N)

notebooks: setup ## write notebooks/*.ipynb from transformer.py, the stages and the tests, and run them (about 30 s)
	@$(PY) tools/notebooks.py write

# --- experiments (experiments/) ---------------------------------------------
# EXPERIMENT_ARGS go to experiments/ln_warmup.py, e.g. EXPERIMENT_ARGS="--seeds 3 --peaks 1,2,4"
EXPERIMENT_ARGS ?=

.PHONY: experiment-ln

experiment-ln: setup ## why warm-up: post-LN against pre-LN (stage 15) across warm-up and peak lr, then the figure
	@$(PY) experiments/ln_warmup.py $(EXPERIMENT_ARGS)

# --- the model in a browser (translation/web.py) -----------------------------
# RUN (declared above) is the run the page runs, its averaged.pt (else its latest checkpoint): runs/numbers, which
# `make translate` trains when there is no such run yet, or RUN=runs/m30k (`make translate-m30k` trains it).
# HALF=1 stores the weights as float16, half the size.
WEB ?= web
HALF ?=

.PHONY: web

web: setup ## the model as a page that translates offline in any browser: web/index.html (RUN=runs/m30k, HALF=1)
	@if [ ! -d $(RUN) ]; then \
		if [ "$(RUN)" = "runs/numbers" ]; then $(MAKE) --no-print-directory translate; \
		else echo "no run in $(RUN): train it first (make translate-m30k for runs/m30k)" >&2; exit 2; fi; \
	fi
	@$(PY) translate.py export-web $(RUN) --out $(WEB) $(if $(HALF),--half)
